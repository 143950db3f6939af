//! The connection tables' LRU: one list shared by every CPU, or one per CPU.
//!
//! A kernel LRU hash map keeps, beside its hash table, the lists that say which entries
//! to evict. By default all CPUs share one set of lists behind one lock, which every
//! insert takes (and every lookup that finds an entry not yet marked as used).
//! `BPF_F_NO_COMMON_LRU` (Cilium's choice for its connection tracking) gives each CPU
//! lists of its own: inserts on different CPUs no longer contend.
//!
//! What that means for a flow whose packets arrive on several CPUs (a reply is handled
//! on the CPU that received it, e.g. the backend's): the hash table is still one table,
//! so a lookup from any CPU finds an entry whatever CPU inserted it, and marks it used.
//! Only eviction is per CPU: an entry lives on the lists of the CPU that inserted it and
//! is evicted only when that CPU needs room, and each CPU's lists hold
//! `max_entries / CPUs` entries, so a CPU that takes more new flows than the others
//! evicts its own oldest entries while the other CPUs' still have room. The kernel
//! rounds the size up to a multiple of the possible CPUs; the loader does it first, so
//! the pinned-map check compares like with like.
//!
//! aya (0.14) sets no map flags at load time, so the loader writes the flag into the
//! object's map definitions (`bpf_map_def::map_flags`) before loading it.

use std::borrow::Cow;

use object::{Object as _, ObjectSection as _, ObjectSymbol as _};

use lb_common::{MAP_FLOWS4, MAP_FLOWS6};

/// The kernel's `BPF_F_NO_COMMON_LRU` (stable UAPI since 4.10).
pub const BPF_F_NO_COMMON_LRU: u32 = 1 << 1;
/// `BPF_MAP_TYPE_LRU_HASH`.
const LRU_HASH: u32 = 9;
/// Offsets in a `bpf_map_def` (type, key size, value size, max entries, flags, ...).
const DEF_TYPE: usize = 0;
const DEF_FLAGS: usize = 16;

/// Which LRU the connection tables use (`xlbd --flow-lru`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum FlowLru {
    /// One LRU for all CPUs (one lock every insert takes).
    Common,
    /// An LRU per CPU (`BPF_F_NO_COMMON_LRU`); sizes rounded up to a multiple of the CPUs.
    #[default]
    PerCpu,
}

impl FlowLru {
    /// The map flags of the connection tables.
    pub fn flags(self) -> u32 {
        match self {
            FlowLru::Common => 0,
            FlowLru::PerCpu => BPF_F_NO_COMMON_LRU,
        }
    }

    /// The entries each connection table gets for `requested`: with per-CPU lists,
    /// rounded up to a multiple of `cpus` (as the kernel would), at most `u32::MAX`
    /// rounded down.
    pub fn entries(self, requested: u32, cpus: u32) -> u32 {
        if self == FlowLru::Common || cpus <= 1 {
            return requested;
        }
        let cpus = u64::from(cpus);
        let up = u64::from(requested).div_ceil(cpus) * cpus;
        u32::try_from(up).unwrap_or(u32::MAX / cpus as u32 * cpus as u32)
    }

    /// The connection-table entries on this machine (its possible CPUs).
    ///
    /// # Errors
    /// When the possible CPUs cannot be read.
    pub fn entries_here(self, requested: u32) -> Result<u32, String> {
        let cpus = aya::util::nr_cpus()
            .map_err(|(what, e)| format!("reading the possible CPUs ({what}): {e}"))?;
        Ok(self.entries(requested, cpus as u32))
    }

    /// `object` with the connection tables' flags set for this LRU (borrowed when they
    /// already are).
    ///
    /// # Errors
    /// When the object is not an ELF file with both connection tables as LRU hash map
    /// definitions.
    pub fn object(self, object: &[u8]) -> Result<Cow<'_, [u8]>, String> {
        let file =
            object::File::parse(object).map_err(|e| format!("parsing the XDP object: {e}"))?;
        let mut at = Vec::new();
        for name in [MAP_FLOWS4, MAP_FLOWS6] {
            let sym = file
                .symbol_by_name(name)
                .ok_or_else(|| format!("the XDP object has no map {name}"))?;
            let section = sym
                .section_index()
                .and_then(|i| file.section_by_index(i).ok())
                .ok_or_else(|| format!("map {name}: no section"))?;
            let (start, size) = section
                .file_range()
                .ok_or_else(|| format!("map {name}: section without data"))?;
            let def = usize::try_from(start + sym.address())
                .map_err(|_| format!("map {name}: bad offset"))?;
            if sym.address() + DEF_FLAGS as u64 + 4 > size
                || word(object, def + DEF_TYPE) != Some(LRU_HASH)
            {
                return Err(format!("map {name} is not an LRU hash map definition"));
            }
            at.push(def + DEF_FLAGS);
        }
        let flags = self.flags();
        let mut out = Cow::Borrowed(object);
        for off in at {
            let have = word(object, off).unwrap_or(0);
            let want = (have & !BPF_F_NO_COMMON_LRU) | flags;
            if have != want {
                out.to_mut()[off..off + 4].copy_from_slice(&want.to_le_bytes());
            }
        }
        Ok(out)
    }
}

/// The little-endian word at `off` (BPF objects built here are little-endian).
fn word(data: &[u8], off: usize) -> Option<u32> {
    let b = data.get(off..off + 4)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_cpu_sizes_round_up_to_a_multiple_of_the_cpus() {
        assert_eq!(FlowLru::PerCpu.entries(1000, 3), 1002);
        assert_eq!(FlowLru::PerCpu.entries(1024, 2), 1024);
        assert_eq!(FlowLru::PerCpu.entries(2, 8), 8);
        assert_eq!(FlowLru::PerCpu.entries(7, 1), 7);
        assert_eq!(FlowLru::Common.entries(1000, 3), 1000);
        assert_eq!(FlowLru::PerCpu.entries(u32::MAX, 2), u32::MAX - 1);
    }

    #[test]
    fn the_object_gets_the_flag_on_both_tables_and_loses_it_again() {
        let obj = crate::bpf::xdp_object();
        let per_cpu = FlowLru::PerCpu.object(obj).unwrap();
        let common = FlowLru::Common.object(&per_cpu).unwrap();
        assert_eq!(&common[..], obj, "the built object has no flag set");
        let parsed = aya_obj::Object::parse(&per_cpu).unwrap();
        for name in [MAP_FLOWS4, MAP_FLOWS6] {
            assert_eq!(parsed.maps[name].map_flags(), BPF_F_NO_COMMON_LRU, "{name}");
        }
        // Nothing else changed: every other map keeps its flags.
        let original = aya_obj::Object::parse(obj).unwrap();
        for (name, m) in &original.maps {
            if name != MAP_FLOWS4 && name != MAP_FLOWS6 {
                assert_eq!(parsed.maps[name].map_flags(), m.map_flags(), "{name}");
            }
        }
        assert!(FlowLru::PerCpu.object(b"not an object").is_err());
    }
}

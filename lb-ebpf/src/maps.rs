//! The maps. Keys and values come from `lb-common`, the one definition both sides use.
//! Sizes marked resizable are set by the loader at load time.

use aya_ebpf::{
    macros::map,
    maps::{Array, DevMapHash, HashMap, LruHashMap, LruPerCpuHashMap, PerCpuArray},
};
use lb_common::{
    AFFINITY_ENTRIES, AffinityKey, AffinityValue, Backend, DEFAULT_FLOW_ENTRIES,
    DEFAULT_TABLE_AREA, DataplaneConfig, FRAG_ENTRIES, FibCacheEntry, FibKey, FlowKey, FlowKey4,
    FlowValue, FragKey, FragValue, MAX_BACKENDS, MAX_EGRESS, MAX_SERVICES, REPLY_FIB_ENTRIES,
    ServiceKey, ServiceValue, TABLES_MAP_FLAGS,
    conntrack::InsertBudget,
    stats::{Counter, STAT_COUNT},
};

/// Virtual services: `VIP:port/proto` to the service's live table.
#[map]
pub static SERVICES: HashMap<ServiceKey, ServiceValue> = HashMap::with_max_entries(MAX_SERVICES, 0);

/// Backends by index; table slots hold these indexes.
#[map]
pub static BACKENDS: Array<Backend> = Array::with_max_entries(MAX_BACKENDS, 0);

/// Every service's backend table, both halves of the double buffer (resizable).
/// Mmap-able, so userspace writes it with plain stores (see `TABLES_MAP_FLAGS`).
#[map]
pub static TABLES: Array<u32> = Array::with_max_entries(DEFAULT_TABLE_AREA, TABLES_MAP_FLAGS);

/// The connection table: both directions of every balanced flow, one map per family
/// (resizable), so an IPv4 flow is hashed and compared as 16 bytes, not 40.
#[map]
pub static FLOWS4: LruHashMap<FlowKey4, FlowValue> =
    LruHashMap::with_max_entries(DEFAULT_FLOW_ENTRIES, 0);
#[map]
pub static FLOWS6: LruHashMap<FlowKey, FlowValue> =
    LruHashMap::with_max_entries(DEFAULT_FLOW_ENTRIES, 0);

/// Writes the `FLOWS4` key of the IPv4 flow `k` into this CPU's scratch area (field by
/// field: a struct literal would be built on the stack and copied), and returns it.
#[inline(always)]
fn key4(k: &FlowKey) -> Option<&'static FlowKey4> {
    let sc = scratch()?;
    let k4 = &mut sc.key4;
    k4.src = k.src.words[0];
    k4.dst = k.dst.words[0];
    k4.src_port_be = k.src_port_be;
    k4.dst_port_be = k.dst_port_be;
    // The protocol and the padding as one aligned word: `_pad = [0; 3]` at an odd offset
    // became a call to a `memset` subprogram (on every IPv4 packet, and one more frame).
    // SAFETY: bytes 12..16 of the key, 4-aligned (asserted below).
    unsafe { *(&raw mut k4.proto as *mut u32) = u32::from_ne_bytes([k.proto, 0, 0, 0]) };
    Some(&sc.key4)
}

/// The connection-table entry of flow direction `key`, in its family's map.
#[inline(always)]
pub fn flow_ptr<const V6: bool>(key: &FlowKey) -> Option<*mut FlowValue> {
    if V6 {
        FLOWS6.get_ptr_mut(key)
    } else {
        FLOWS4.get_ptr_mut(key4(key)?)
    }
}

/// Enters (or replaces) the entry of flow direction `key` in its family's map.
#[inline(always)]
pub fn flow_insert<const V6: bool>(key: &FlowKey, value: &FlowValue) -> Result<(), ()> {
    let r = if V6 {
        FLOWS6.insert(key, value, 0)
    } else {
        let Some(k) = key4(key) else { return Err(()) };
        FLOWS4.insert(k, value, 0)
    };
    r.map_err(|_| ())
}

/// Client affinity: the backend a client address's last new flow to a `client-ip`
/// service went to, and when.
#[map]
pub static AFFINITY: LruHashMap<AffinityKey, AffinityValue> =
    LruHashMap::with_max_entries(AFFINITY_ENTRIES, 0);

/// The data path's settings (one value), written by userspace.
#[map]
pub static CONFIG: Array<DataplaneConfig> = Array::with_max_entries(1, 0);

/// This CPU's FIB answer per backend index (see `fib_cache`). Kernel-side only.
#[map]
pub static FIB_CACHE: PerCpuArray<FibCacheEntry> = PerCpuArray::with_max_entries(MAX_BACKENDS, 0);

/// This CPU's FIB answer per client address replies go to (see `fib_cache`).
/// Kernel-side only.
#[map]
pub static REPLY_FIB: LruPerCpuHashMap<FibKey, FibCacheEntry> =
    LruPerCpuHashMap::with_max_entries(REPLY_FIB_ENTRIES, 0);

/// Global counters, indexed by `STAT_*`.
#[map]
pub static STATS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(STAT_COUNT, 0);

/// Packets and bytes forwarded to each backend, by backend index, and each backend's new
/// flows at `NEW_FLOWS_BASE + index`.
#[map]
pub static BACKEND_STATS: PerCpuArray<Counter> =
    PerCpuArray::with_max_entries(lb_common::BACKEND_STATS_SLOTS, 0);

/// Fragmented datagrams whose first fragment was balanced: the rewrite the later
/// fragments get.
#[map]
pub static FRAGS: LruHashMap<FragKey, FragValue> = LruHashMap::with_max_entries(FRAG_ENTRIES, 0);

/// Egress devices that can take an XDP redirect, by ifindex. The daemon fills it (a
/// bridge, or a veth whose peer has neither XDP nor GRO, stays out); a FIB answer outside
/// it is passed to the kernel, which forwards the packet itself.
#[map]
pub static EGRESS: DevMapHash = DevMapHash::with_max_entries(MAX_EGRESS, 0);

/// FIB egress devices outside `EGRESS` that packets were passed to, by ifindex, with the
/// packets so passed: how the daemon learns which paths go through the kernel.
#[map]
pub static EGRESS_MISS: HashMap<u32, u64> = HashMap::with_max_entries(MAX_EGRESS, 0);

/// Room for the large temporaries of one packet (the FIB parameter block, entries being
/// built), so they stay off the 512-byte BPF stack. One slot per CPU; a program run
/// never yields, so nothing else uses it meanwhile. Kernel-side only.
#[repr(C)]
pub struct Scratch {
    pub fib: aya_ebpf::bindings::bpf_fib_lookup,
    /// The `FLOWS4` key of the IPv4 flow direction being looked up or entered.
    pub key4: FlowKey4,
    pub reply_key: FlowKey,
    pub request: FlowValue,
    pub reply: FlowValue,
    pub frag_key: FragKey,
    pub frag: FragValue,
    /// The connection-table key an ICMP error's quote belongs to.
    pub icmp_key: FlowKey,
    /// The services-map key of a packet.
    pub service_key: ServiceKey,
    /// The affinity entry of a new flow, and its key.
    pub affinity_key: AffinityKey,
    pub affinity: AffinityValue,
    /// `clock::now`'s cache: the jiffy of the last ns time read on this CPU, and that time.
    pub clock_jiffies: u64,
    pub clock_ns: u64,
    /// This CPU's connection-table inserts in the current second (`DataplaneConfig`).
    pub insert_budget: InsertBudget,
    /// A reply's `REPLY_FIB` key, and an entry being made for it.
    pub fib_key: FibKey,
    pub fib_entry: FibCacheEntry,
}

// `key4` writes the key's protocol and padding as one word.
const _: () = assert!(core::mem::offset_of!(FlowKey4, proto) % 4 == 0);
const _: () = assert!(core::mem::offset_of!(Scratch, key4) % 4 == 0);

// `Scratch::fib_zeroed` clears the FIB block 8 bytes at a time.
const _: () = assert!(core::mem::offset_of!(Scratch, fib) % 8 == 0);
const _: () = assert!(core::mem::align_of::<Scratch>() >= 8);
const _: () = assert!(core::mem::size_of::<aya_ebpf::bindings::bpf_fib_lookup>() % 8 == 0);

impl Scratch {
    /// The FIB parameter block, all zero (a lookup writes results into input fields, such
    /// as the route metric over `tos`, so a block reused from the last packet must be
    /// cleared). Word by word with volatile stores: `write_bytes` becomes a call to a
    /// `memset` subprogram, one more BPF-to-BPF call per forwarded packet and one more
    /// frame (32 bytes as Linux 6.1 counts it) in the deepest call chain.
    #[inline(always)]
    pub fn fib_zeroed(&mut self) -> &mut aya_ebpf::bindings::bpf_fib_lookup {
        let words = &raw mut self.fib as *mut u64;
        let n = core::mem::size_of::<aya_ebpf::bindings::bpf_fib_lookup>() / 8;
        let mut i = 0;
        while i < n {
            // SAFETY: word `i` of the block, 8-aligned (asserted above), plain data.
            unsafe { core::ptr::write_volatile(words.add(i), 0) };
            i += 1;
        }
        &mut self.fib
    }
}

#[map]
pub static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

/// This CPU's scratch area.
#[inline(always)]
pub fn scratch() -> Option<&'static mut Scratch> {
    // SAFETY: per-CPU memory that only this program run uses until it returns.
    SCRATCH.get_ptr_mut(0).map(|p| unsafe { &mut *p })
}

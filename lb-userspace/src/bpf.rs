//! Loads the XDP object, attaches it to interfaces, pins its maps and implements
//! [`Dataplane`] over them. Dropping a [`BpfDataplane`] detaches XDP and removes the pins.

use std::{
    ffi::CString,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, IterableMap as _, Map, MapData, MapError, PerCpuArray},
    programs::{ProgramError, Xdp, XdpMode},
};
use lb_common::{
    Backend, FlowKey, FlowValue, MAP_BACKEND_STATS, MAP_BACKENDS, MAP_FLOWS, MAP_SERVICES,
    MAP_STATS, MAP_TABLES, ServiceKey, ServiceValue,
    stats::{Counter, STAT_COUNT},
};

use crate::dataplane::{Dataplane, DataplaneError, GraceTicket};
use crate::grace::GracePeriods;
use crate::table_mem::TableMem;

/// The XDP object built by build.rs from `lb-ebpf`.
static XDP_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/xlb-xdp"));
/// The XDP entry point's name in the object.
const PROGRAM: &str = "xlb";
/// The object's yardstick program: swaps MACs and returns XDP_TX (for benchmarks).
pub const LIMIT_PROGRAM: &str = "xdp_tx_limit";

/// The XDP object's bytes, for tools that load its programs themselves (benchmarks).
pub fn xdp_object() -> &'static [u8] {
    XDP_OBJECT
}
/// `statfs` magic number of bpffs.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// Attach mode: `native` (driver XDP) or `skb` (generic XDP, works on any interface).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum AttachMode {
    Native,
    Skb,
}

impl AttachMode {
    fn flags(self) -> XdpMode {
        match self {
            AttachMode::Native => XdpMode::Driver,
            AttachMode::Skb => XdpMode::Skb,
        }
    }
}

/// What `xlbd` asks of the loader.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    pub ifaces: Vec<String>,
    pub mode: AttachMode,
    /// Where maps are pinned (`/sys/fs/bpf/xlb`); its parent must be a bpffs mount.
    pub pin_dir: PathBuf,
    /// Connection-table entries (each flow takes two: request and reply direction).
    pub flow_entries: u32,
    /// Slots of the backend-table area, both halves of the double buffer together.
    pub table_area: u32,
}

/// Why the loader could not start; each one is one line an operator can act on.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("xlbd must run as root (or with CAP_BPF and CAP_NET_ADMIN)")]
    NotRoot,
    #[error("no such interface: {0}")]
    NoSuchInterface(String),
    #[error("bpffs is not mounted at {0} (mount it: mount -t bpf bpf {0})")]
    BpffsMissing(PathBuf),
    #[error("the kernel rejected the XDP program: {0}")]
    Rejected(String),
    #[error("cannot attach XDP to {iface} in {mode:?} mode: {reason}")]
    Attach {
        iface: String,
        mode: AttachMode,
        reason: String,
    },
    #[error("cannot pin maps under {path}: {reason}")]
    Pin { path: PathBuf, reason: String },
    #[error("invalid size: {0}")]
    Size(String),
}

/// The loaded, attached XDP program and its maps.
pub struct BpfDataplane {
    /// Owns the program and its XDP links: dropping it detaches.
    ebpf: Ebpf,
    maps: Maps,
    /// `TABLES`, mapped: table writes are stores, not syscalls.
    table_mem: TableMem,
    grace: GracePeriods,
    pin_dir: Option<PathBuf>,
    pins: Vec<PathBuf>,
}

impl BpfDataplane {
    /// Checks the preconditions, loads the object, attaches it to every interface and pins
    /// the maps. Nothing stays attached or pinned when this fails.
    pub fn load(opts: &LoadOptions) -> Result<BpfDataplane, LoadError> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err(LoadError::NotRoot);
        }
        for iface in &opts.ifaces {
            if_index(iface)?;
        }
        let bpffs = opts.pin_dir.parent().unwrap_or(Path::new("/"));
        if !is_bpffs(bpffs) {
            return Err(LoadError::BpffsMissing(bpffs.to_path_buf()));
        }
        let mut dp = Self::load_detached(opts.flow_entries, opts.table_area)?;
        clear_pin_dir(&opts.pin_dir)?;
        dp.pin_dir = Some(opts.pin_dir.clone());
        let program = dp.program();
        for iface in &opts.ifaces {
            program
                .attach(iface, opts.mode.flags())
                .map_err(|e| LoadError::Attach {
                    iface: iface.clone(),
                    mode: opts.mode,
                    reason: one_line(&error_chain(&e)),
                })?;
        }
        for (map, name) in dp.maps.all() {
            let path = opts.pin_dir.join(name.to_lowercase());
            map.pin(&path).map_err(|e| LoadError::Pin {
                path: path.clone(),
                reason: e.to_string(),
            })?;
            dp.pins.push(path);
        }
        Ok(dp)
    }

    /// Loads the object and its maps without attaching or pinning anything: for running
    /// the program on crafted packets with BPF_PROG_TEST_RUN (see [`BpfDataplane::program`]).
    pub fn load_detached(flow_entries: u32, table_area: u32) -> Result<BpfDataplane, LoadError> {
        if flow_entries < 2 || table_area < 2 {
            return Err(LoadError::Size(
                "--flow-entries and --table-area must be at least 2".into(),
            ));
        }
        let mut ebpf = EbpfLoader::new()
            .map_max_entries(MAP_FLOWS, flow_entries)
            .map_max_entries(MAP_TABLES, table_area)
            .load(XDP_OBJECT)
            .map_err(|e| LoadError::Rejected(one_line(&error_chain(&e))))?;
        let program: &mut Xdp = ebpf
            .program_mut(PROGRAM)
            .ok_or_else(|| LoadError::Rejected(format!("no program {PROGRAM} in the object")))?
            .try_into()
            .map_err(|e: ProgramError| LoadError::Rejected(e.to_string()))?;
        program.load().map_err(|e| {
            if let ProgramError::LoadError { verifier_log, .. } = &e {
                tracing::debug!("verifier log:\n{verifier_log}");
            }
            LoadError::Rejected(one_line(&e.to_string()))
        })?;
        let maps = Maps::take(&mut ebpf)?;
        let table_mem = {
            use std::os::fd::AsFd as _;
            TableMem::new(maps.tables.map().fd().as_fd(), maps.tables.len())
                .map_err(|e| LoadError::Rejected(format!("cannot map {MAP_TABLES}: {e}")))?
        };
        let grace = GracePeriods::new().map_err(|e| {
            LoadError::Rejected(format!(
                "cannot make the map-in-map that waits for running programs: {e}"
            ))
        })?;
        Ok(BpfDataplane {
            ebpf,
            maps,
            table_mem,
            grace,
            pin_dir: None,
            pins: Vec::new(),
        })
    }

    /// The XDP program, e.g. for `test_run`.
    pub fn program(&mut self) -> &mut Xdp {
        self.ebpf
            .program_mut(PROGRAM)
            .and_then(|p| p.try_into().ok())
            .expect("the program was found at load")
    }

    /// The connection-table entry of one flow direction, if present.
    pub fn flow(&self, key: &FlowKey) -> Option<FlowValue> {
        self.maps.flows.get(key, 0).ok()
    }
}

/// The maps, taken out of the object so they can be held typed.
struct Maps {
    services: HashMap<MapData, ServiceKey, ServiceValue>,
    backends: Array<MapData, Backend>,
    tables: Array<MapData, u32>,
    flows: HashMap<MapData, FlowKey, FlowValue>,
    stats: PerCpuArray<MapData, Counter>,
    backend_stats: PerCpuArray<MapData, Counter>,
}

impl Maps {
    fn take(ebpf: &mut Ebpf) -> Result<Maps, LoadError> {
        fn typed<T: TryFrom<Map, Error = MapError>>(
            ebpf: &mut Ebpf,
            name: &str,
        ) -> Result<T, LoadError> {
            let map = ebpf
                .take_map(name)
                .ok_or_else(|| LoadError::Rejected(format!("no map {name} in the object")))?;
            T::try_from(map).map_err(|e| LoadError::Rejected(format!("map {name}: {e}")))
        }
        Ok(Maps {
            services: typed(ebpf, MAP_SERVICES)?,
            backends: typed(ebpf, MAP_BACKENDS)?,
            tables: typed(ebpf, MAP_TABLES)?,
            flows: typed(ebpf, MAP_FLOWS)?,
            stats: typed(ebpf, MAP_STATS)?,
            backend_stats: typed(ebpf, MAP_BACKEND_STATS)?,
        })
    }

    fn all(&self) -> [(&MapData, &'static str); 6] {
        [
            (self.services.map(), MAP_SERVICES),
            (self.backends.map(), MAP_BACKENDS),
            (self.tables.map(), MAP_TABLES),
            (self.flows.map(), MAP_FLOWS),
            (self.stats.map(), MAP_STATS),
            (self.backend_stats.map(), MAP_BACKEND_STATS),
        ]
    }
}

impl Drop for BpfDataplane {
    fn drop(&mut self) {
        for pin in &self.pins {
            let _ = std::fs::remove_file(pin);
        }
        if let Some(dir) = &self.pin_dir {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

fn if_index(iface: &str) -> Result<u32, LoadError> {
    let name = CString::new(iface).map_err(|_| LoadError::NoSuchInterface(iface.into()))?;
    // SAFETY: `name` is a valid NUL-terminated string.
    match unsafe { libc::if_nametoindex(name.as_ptr()) } {
        0 => Err(LoadError::NoSuchInterface(iface.into())),
        i => Ok(i),
    }
}

fn is_bpffs(path: &Path) -> bool {
    let Ok(c) = CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: `st` is written by statfs; `c` is NUL-terminated.
    unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        libc::statfs(c.as_ptr(), &mut st) == 0 && st.f_type as i64 == BPF_FS_MAGIC
    }
}

/// Makes `dir` and removes pins a previous daemon left there (the caller has made sure no
/// other daemon is running).
fn clear_pin_dir(dir: &Path) -> Result<(), LoadError> {
    let err = |e: std::io::Error| LoadError::Pin {
        path: dir.to_path_buf(),
        reason: e.to_string(),
    };
    std::fs::create_dir_all(dir).map_err(err)?;
    for entry in std::fs::read_dir(dir).map_err(err)? {
        std::fs::remove_file(entry.map_err(err)?.path()).map_err(err)?;
    }
    Ok(())
}

/// An error and its sources, as one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(cause) = src {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        src = cause.source();
    }
    s
}

/// Folds a multi-line message (a verifier log) into one line: its first line and the
/// verifier's reason, the last line that is neither an instruction trace nor one of the
/// closing statistics.
fn one_line(msg: &str) -> String {
    let lines: Vec<&str> = msg
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let is_trace = |l: &&str| {
        let digits = l.chars().take_while(char::is_ascii_digit).count();
        (digits > 0 && l[digits..].starts_with(':'))
            || l.starts_with(';')
            || [
                "processed ",
                "stack depth",
                "verification time",
                "max_states",
            ]
            .iter()
            .any(|p| l.starts_with(p))
    };
    match lines.as_slice() {
        [] => String::new(),
        [one] => (*one).to_string(),
        [first, rest @ ..] => match rest.iter().rev().find(|l| !is_trace(l)) {
            Some(reason) => format!("{first} ... {reason}"),
            None => (*first).to_string(),
        },
    }
}

fn map_err(map: &'static str) -> impl Fn(MapError) -> DataplaneError {
    move |source| DataplaneError::Map { map, source }
}

fn sum(values: &[Counter]) -> Counter {
    values.iter().fold(Counter::default(), |a, c| Counter {
        packets: a.packets + c.packets,
        bytes: a.bytes + c.bytes,
    })
}

impl Dataplane for BpfDataplane {
    fn put_service(
        &mut self,
        key: &ServiceKey,
        value: &ServiceValue,
    ) -> Result<(), DataplaneError> {
        self.maps
            .services
            .insert(key, value, 0)
            .map_err(map_err(MAP_SERVICES))
    }

    fn remove_service(&mut self, key: &ServiceKey) -> Result<(), DataplaneError> {
        match self.maps.services.remove(key) {
            Err(MapError::KeyNotFound) | Ok(()) => Ok(()),
            Err(e) => Err(map_err(MAP_SERVICES)(e)),
        }
    }

    fn put_backend(&mut self, index: u32, backend: &Backend) -> Result<(), DataplaneError> {
        self.maps
            .backends
            .set(index, backend, 0)
            .map_err(map_err(MAP_BACKENDS))
    }

    fn read_table(&self, offset: u32, len: u32) -> Result<Vec<u32>, DataplaneError> {
        let size = self.table_mem.slots();
        if offset as u64 + len as u64 > size as u64 {
            return Err(DataplaneError::OutOfRange {
                map: MAP_TABLES,
                index: offset.saturating_add(len).saturating_sub(1),
                size,
            });
        }
        Ok(self.table_mem.read(offset, len))
    }

    fn write_slots(&mut self, slots: &[(u32, u32)]) -> Result<(), DataplaneError> {
        let size = self.table_mem.slots();
        if let Some(&(index, _)) = slots.iter().find(|(i, _)| *i >= size) {
            return Err(DataplaneError::OutOfRange {
                map: MAP_TABLES,
                index,
                size,
            });
        }
        self.table_mem.write(slots);
        Ok(())
    }

    fn start_grace_period(&mut self) -> GraceTicket {
        self.grace.start()
    }

    fn wait_grace_period(&mut self, ticket: GraceTicket) -> Result<(), DataplaneError> {
        self.grace.wait(ticket).map_err(DataplaneError::GracePeriod)
    }

    fn table_area(&self) -> u32 {
        self.maps.tables.len()
    }

    fn stats(&self) -> Result<Vec<Counter>, DataplaneError> {
        (0..STAT_COUNT)
            .map(|i| {
                let v = self.maps.stats.get(&i, 0).map_err(map_err(MAP_STATS))?;
                Ok(sum(&v))
            })
            .collect()
    }

    fn backend_stats(&self, index: u32) -> Result<Counter, DataplaneError> {
        let v = self
            .maps
            .backend_stats
            .get(&index, 0)
            .map_err(map_err(MAP_BACKEND_STATS))?;
        Ok(sum(&v))
    }

    fn flows(&self) -> Result<Vec<(FlowKey, FlowValue)>, DataplaneError> {
        let mut out = Vec::new();
        for entry in self.maps.flows.iter() {
            match entry {
                Ok(kv) => out.push(kv),
                // An entry evicted while we walk the table: skip it.
                Err(MapError::KeyNotFound) => continue,
                Err(e) => return Err(map_err(MAP_FLOWS)(e)),
            }
        }
        Ok(out)
    }

    fn remove_flows(&mut self, keys: &[FlowKey]) -> Result<usize, DataplaneError> {
        let mut removed = 0;
        for key in keys {
            match self.maps.flows.remove(key) {
                Ok(()) => removed += 1,
                Err(MapError::KeyNotFound) => {}
                Err(e) => return Err(map_err(MAP_FLOWS)(e)),
            }
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifier_logs_fold_into_one_line() {
        assert_eq!(one_line("a"), "a");
        assert_eq!(one_line("a\n\nb"), "a ... b");
        let log = "load failed\n0: (b7) r1 = 0\n; x @ a.rs:1\ninvalid access to packet, off=39\n\
                   verification time 20 usec\nstack depth 32+8\nprocessed 3 insns (limit 1000000)";
        assert_eq!(
            one_line(log),
            "load failed ... invalid access to packet, off=39"
        );
    }

    #[test]
    fn missing_interface_and_non_bpffs_are_detected() {
        assert!(matches!(
            if_index("xlb-no-such-if0"),
            Err(LoadError::NoSuchInterface(_))
        ));
        assert!(if_index("lo").is_ok());
        assert!(!is_bpffs(Path::new("/tmp")));
    }
}

/// Loading needs root; these run in a private network namespace (a thread's own), so the
/// program attaches to that namespace's loopback and nothing else.
#[cfg(test)]
mod root_tests {
    use super::*;

    fn in_private_netns<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        std::thread::spawn(move || {
            // SAFETY: unshare affects only this thread's network namespace.
            assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0, "unshare");
            f()
        })
        .join()
        .unwrap()
    }

    fn opts(pin_dir: &str) -> LoadOptions {
        LoadOptions {
            ifaces: vec!["lo".into()],
            mode: AttachMode::Skb,
            pin_dir: PathBuf::from(pin_dir),
            flow_entries: 1024,
            table_area: 4096,
        }
    }

    #[test]
    fn loads_attaches_pins_and_cleans_up() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("SKIPPED (needs root): loads_attaches_pins_and_cleans_up");
            return;
        }
        if !is_bpffs(Path::new("/sys/fs/bpf")) {
            panic!("bpffs is not mounted at /sys/fs/bpf: run `cargo xtask setup`");
        }
        let dir = format!("/sys/fs/bpf/xlb-unit-{}", std::process::id());
        let d = dir.clone();
        in_private_netns(move || {
            let mut dp = BpfDataplane::load(&opts(&d)).expect("load");
            assert!(Path::new(&d).join("flows").exists());
            assert_eq!(dp.table_area(), 4096);
            let key = ServiceKey::default();
            dp.put_service(&key, &ServiceValue::default()).unwrap();
            dp.write_table(4090, &[1, 2, 3, 4, 5, 6]).unwrap();
            assert!(dp.write_table(4095, &[1, 2]).is_err());
            assert!(dp.write_slots(&[(7, 9), (4096, 9)]).is_err());
            dp.write_slots(&[(4091, 20), (4093, 40)]).unwrap();
            assert_eq!(dp.read_table(4090, 6).unwrap(), [1, 20, 3, 40, 5, 6]);
            assert_eq!(
                dp.read_table(0, 8).unwrap(),
                [0; 8],
                "a refused batch wrote"
            );
            assert!(dp.read_table(4095, 2).is_err());
            // What the mapping wrote is what the map holds for the data path.
            assert_eq!(dp.maps.tables.get(&4093, 0).unwrap(), 40);
            let t = dp.start_grace_period();
            dp.wait_grace_period(t).unwrap();
            assert_eq!(dp.stats().unwrap().len(), STAT_COUNT as usize);
            assert!(dp.flows().unwrap().is_empty());
            dp.remove_service(&key).unwrap();
        });
        assert!(!Path::new(&dir).exists(), "pins left behind");
    }

    #[test]
    fn refuses_a_missing_interface_and_a_non_bpffs_pin_dir() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("SKIPPED (needs root): refuses_a_missing_interface");
            return;
        }
        let mut o = opts("/sys/fs/bpf/xlb-unused");
        o.ifaces = vec!["nosuchif0".into()];
        let e = BpfDataplane::load(&o).err().unwrap();
        assert_eq!(e.to_string(), "no such interface: nosuchif0");
        let e = BpfDataplane::load(&opts("/tmp/xlb-pins")).err().unwrap();
        assert!(matches!(e, LoadError::BpffsMissing(_)), "{e}");
    }
}

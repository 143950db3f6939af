//! Loads the XDP object, attaches it to interfaces, pins its maps and XDP links and
//! implements [`Dataplane`] over them.
//!
//! The data path outlives the daemon: the links and the maps are pinned under the pin
//! directory, so packets keep being balanced while no `xlbd` runs. A starting `xlbd` adopts
//! what is pinned: the new object is loaded over the pinned maps (refused, one line, when a
//! pinned map's layout differs from the new object's, unless `reset`) and replaces the old
//! program through each pinned link in one `bpf_link_update` (an upgrade). Dropping a
//! [`BpfDataplane`] leaves all of it in place; [`BpfDataplane::detach`] removes it. An
//! exclusive `flock` on the pin directory keeps a second daemon off it.

use std::{
    ffi::CString,
    os::fd::{AsRawFd as _, OwnedFd},
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfLoader, Pod,
    maps::MapInfo,
    maps::{Array, DevMapHash, HashMap, IterableMap as _, Map, MapData, MapError, PerCpuArray},
    programs::links::{FdLink, PinnedLink},
    programs::xdp::XdpLink,
    programs::{ProgramError, Xdp, XdpMode},
};
use lb_common::{
    AffinityKey, AffinityValue, Backend, DataplaneConfig, FlowKey, FlowKey4, FlowMapKey, FlowValue,
    MAP_AFFINITY, MAP_BACKEND_STATS, MAP_BACKENDS, MAP_CONFIG, MAP_EGRESS, MAP_EGRESS_MISS,
    MAP_FLOWS4, MAP_FLOWS6, MAP_FRAGS, MAP_SERVICES, MAP_STATS, MAP_TABLES, ServiceKey,
    ServiceValue,
    stats::{Counter, STAT_COUNT},
};

use crate::dataplane::{Dataplane, DataplaneError, GraceTicket};
use crate::flow_lru::FlowLru;
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

/// The mode as the `--mode` flag spells it (`native`, `skb`).
impl std::fmt::Display for AttachMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use clap::ValueEnum as _;
        match self.to_possible_value() {
            Some(v) => f.write_str(v.get_name()),
            None => write!(f, "{self:?}"),
        }
    }
}

impl AttachMode {
    /// aya's flag for this mode.
    pub fn xdp_mode(self) -> XdpMode {
        self.flags()
    }

    fn flags(self) -> XdpMode {
        match self {
            AttachMode::Native => XdpMode::Driver,
            AttachMode::Skb => XdpMode::Skb,
        }
    }
}

/// The maps that hold state, pinned as `<pin dir>/<lower-case name>` and adopted by the
/// next daemon. (The per-CPU scratch map holds nothing between packets.)
const PINNED_MAPS: [&str; 11] = [
    MAP_SERVICES,
    MAP_BACKENDS,
    MAP_TABLES,
    MAP_FLOWS4,
    MAP_FLOWS6,
    MAP_STATS,
    MAP_BACKEND_STATS,
    MAP_FRAGS,
    MAP_EGRESS,
    MAP_EGRESS_MISS,
    MAP_AFFINITY,
];

/// `BPF_F_RDONLY_PROG`, which the kernel adds to every devmap.
const BPF_F_RDONLY_PROG: u32 = 1 << 7;

/// Pins of XDP links are `<pin dir>/link_<interface>`.
const LINK_PREFIX: &str = "link_";

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
    /// Remove whatever is pinned (links, maps: every flow) and start empty.
    pub reset: bool,
    /// Load the XDP object from this file instead of the one built into xlbd (a data-path
    /// build made from the same lb-common, rolled out without a new xlbd).
    pub object: Option<PathBuf>,
    /// The data path's settings (`CONFIG`), written once the object is loaded.
    pub config: DataplaneConfig,
    /// The connection tables' LRU: shared by all CPUs or per CPU (see `flow_lru`).
    pub flow_lru: FlowLru,
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
    #[error("cannot attach XDP to {iface} in {mode} mode: {reason}")]
    Attach {
        iface: String,
        mode: AttachMode,
        reason: String,
    },
    #[error("cannot pin under {path}: {reason}")]
    Pin { path: PathBuf, reason: String },
    #[error("another xlbd holds {} (a lock on the pin directory); stop it first", .0.display())]
    Locked(PathBuf),
    #[error(
        "pinned map {map} at {} does not fit this xlbd: {what}; start xlbd with the settings it ran with, or with --reset to start empty (every connection is lost)",
        path.display()
    )]
    Incompatible {
        map: &'static str,
        path: PathBuf,
        what: String,
    },
    #[error("invalid size: {0}")]
    Size(String),
}

/// The loaded, attached XDP program and its maps.
pub struct BpfDataplane {
    /// Owns the program. Its XDP links are pinned, so dropping it detaches nothing.
    ebpf: Ebpf,
    maps: Maps,
    /// `TABLES`, mapped: table writes are stores, not syscalls.
    table_mem: TableMem,
    /// What `CONFIG` holds.
    config: DataplaneConfig,
    grace: GracePeriods,
    pin_dir: Option<PathBuf>,
    /// The state pinned by an earlier daemon was adopted (rather than made anew).
    adopted: bool,
    /// The exclusive lock on the pin directory, held while this lives.
    _lock: Option<OwnedFd>,
}

impl BpfDataplane {
    /// Checks the preconditions, takes the pin directory's lock, loads the object over the
    /// pinned maps (or new ones, pinned), and attaches it to every interface through its
    /// pinned link (replacing the program it held) or a new one, pinned. Links pinned for
    /// interfaces no longer asked for are removed (which detaches them).
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
        let dir = &opts.pin_dir;
        let pin_err = |e: &dyn std::fmt::Display| LoadError::Pin {
            path: dir.clone(),
            reason: e.to_string(),
        };
        std::fs::create_dir_all(dir).map_err(|e| pin_err(&e))?;
        let lock = lock_dir(dir)?;
        if opts.reset {
            clear_pin_dir(dir)?;
        }
        let adopted = map_pin(dir, MAP_SERVICES).exists();
        let pins: Vec<(&'static str, PathBuf)> =
            PINNED_MAPS.iter().map(|m| (*m, map_pin(dir, m))).collect();
        let file;
        let object = match &opts.object {
            None => XDP_OBJECT,
            Some(path) => {
                file = std::fs::read(path).map_err(|e| {
                    LoadError::Rejected(format!("cannot read {}: {e}", path.display()))
                })?;
                &file[..]
            }
        };
        let object = opts.flow_lru.object(object).map_err(LoadError::Rejected)?;
        let flow_entries = opts
            .flow_lru
            .entries_here(opts.flow_entries)
            .map_err(LoadError::Rejected)?;
        if !opts.reset {
            check_pinned_maps(dir, &object, flow_entries, opts.table_area)?;
        }
        let mut dp = Self::load_with(&object, flow_entries, opts.table_area, &pins)?;
        dp.set_config(&opts.config)
            .map_err(|e| LoadError::Rejected(e.to_string()))?;
        dp.pin_dir = Some(dir.clone());
        dp.adopted = adopted;
        dp._lock = Some(lock);
        let mode = opts.mode;
        let program = dp.program();
        for iface in &opts.ifaces {
            attach_pinned(program, iface, mode, &link_pin(dir, iface))?;
        }
        for stale in pinned_links(dir).map_err(|e| pin_err(&e))? {
            if !opts.ifaces.iter().any(|i| link_pin(dir, i) == stale) {
                tracing::info!("xlbd: detaching from {} (not asked for)", stale.display());
                std::fs::remove_file(&stale).map_err(|e| pin_err(&e))?;
            }
        }
        Ok(dp)
    }

    /// Loads the object and its maps without attaching or pinning anything: for running
    /// the program on crafted packets with BPF_PROG_TEST_RUN (see [`BpfDataplane::program`]).
    /// The connection tables use the default LRU ([`FlowLru::default`]).
    pub fn load_detached(flow_entries: u32, table_area: u32) -> Result<BpfDataplane, LoadError> {
        Self::load_detached_with(flow_entries, table_area, FlowLru::default())
    }

    /// [`BpfDataplane::load_detached`] with the connection tables' LRU `lru`.
    pub fn load_detached_with(
        flow_entries: u32,
        table_area: u32,
        lru: FlowLru,
    ) -> Result<BpfDataplane, LoadError> {
        let object = lru.object(XDP_OBJECT).map_err(LoadError::Rejected)?;
        let entries = lru
            .entries_here(flow_entries)
            .map_err(LoadError::Rejected)?;
        Self::load_with(&object, entries, table_area, &[])
    }

    /// Loads the object and its program; the maps named in `pins` are taken from (or made
    /// and pinned at) their paths, the others are made anew.
    fn load_with(
        object: &[u8],
        flow_entries: u32,
        table_area: u32,
        pins: &[(&'static str, PathBuf)],
    ) -> Result<BpfDataplane, LoadError> {
        if flow_entries < 2 || table_area < 2 {
            return Err(LoadError::Size(
                "--flow-entries and --table-area must be at least 2".into(),
            ));
        }
        let mut loader = EbpfLoader::new();
        loader
            .map_max_entries(MAP_FLOWS4, flow_entries)
            .map_max_entries(MAP_FLOWS6, flow_entries)
            .map_max_entries(MAP_TABLES, table_area);
        for (map, path) in pins {
            loader.map_pin_path(map, path.as_path());
        }
        let mut ebpf = loader
            .load(object)
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
            config: DataplaneConfig::default(),
            grace,
            pin_dir: None,
            adopted: false,
            _lock: None,
        })
    }

    /// Writes how `dsr-ipip` picks outer source addresses (the `ENCAP` map, not pinned:
    /// every xlbd writes it after loading).
    ///
    /// # Errors
    /// The object has no such map, or the kernel refused the write.
    pub fn set_encap(&mut self, cfg: &lb_common::EncapConfig) -> Result<(), LoadError> {
        let map = self.ebpf.map_mut(lb_common::MAP_ENCAP).ok_or_else(|| {
            LoadError::Rejected(format!("no map {} in the object", lb_common::MAP_ENCAP))
        })?;
        let mut array: Array<&mut MapData, lb_common::EncapConfig> = Array::try_from(map)
            .map_err(|e| LoadError::Rejected(format!("map {}: {e}", lb_common::MAP_ENCAP)))?;
        array
            .set(0, cfg, 0)
            .map_err(|e| LoadError::Rejected(format!("map {}: {e}", lb_common::MAP_ENCAP)))
    }

    /// Another XDP program of the object (e.g. `xlb_decap`), loaded on first use, for
    /// `test_run`.
    ///
    /// # Errors
    /// No such XDP program, or the kernel refused it.
    pub fn load_program(&mut self, name: &str) -> Result<&mut Xdp, LoadError> {
        let program: &mut Xdp = self
            .ebpf
            .program_mut(name)
            .ok_or_else(|| LoadError::Rejected(format!("no program {name} in the object")))?
            .try_into()
            .map_err(|e: ProgramError| LoadError::Rejected(e.to_string()))?;
        if program.fd().is_err() {
            program.load().map_err(|e| {
                if let ProgramError::LoadError { verifier_log, .. } = &e {
                    tracing::debug!("verifier log:\n{verifier_log}");
                }
                LoadError::Rejected(one_line(&e.to_string()))
            })?;
        }
        Ok(program)
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
        get_flow(&self.maps.flows4, key).or_else(|| get_flow(&self.maps.flows6, key))
    }

    /// Writes the data path's settings (the one value of `CONFIG`).
    ///
    /// # Errors
    /// When the map refuses the value.
    pub fn set_config(&mut self, config: &DataplaneConfig) -> Result<(), DataplaneError> {
        self.maps
            .config
            .set(0, config, 0)
            .map_err(map_err(MAP_CONFIG))?;
        self.config = *config;
        Ok(())
    }

    /// Makes every CPU's cached FIB answers unusable (a new generation): the next packet
    /// to each backend asks the FIB again.
    ///
    /// # Errors
    /// When the map refuses the value.
    pub fn invalidate_fib_cache(&mut self) -> Result<(), DataplaneError> {
        let mut c = self.config;
        c.fib_generation = c.fib_generation.wrapping_add(1);
        self.set_config(&c)
    }

    /// The affinity entry of one client of one service, if present.
    pub fn affinity(&self, key: &AffinityKey) -> Option<AffinityValue> {
        self.maps.affinity.get(key, 0).ok()
    }

    /// Writes an affinity entry (tests and fixtures set up clients' past with it).
    ///
    /// # Errors
    /// When the map refuses the entry.
    pub fn put_affinity(
        &mut self,
        key: &AffinityKey,
        value: &AffinityValue,
    ) -> Result<(), DataplaneError> {
        self.maps
            .affinity
            .insert(key, value, 0)
            .map_err(map_err(MAP_AFFINITY))
    }
}

/// The maps, taken out of the object so they can be held typed.
struct Maps {
    services: HashMap<MapData, ServiceKey, ServiceValue>,
    backends: Array<MapData, Backend>,
    tables: Array<MapData, u32>,
    flows4: HashMap<MapData, FlowKey4, FlowValue>,
    flows6: HashMap<MapData, FlowKey, FlowValue>,
    stats: PerCpuArray<MapData, Counter>,
    backend_stats: PerCpuArray<MapData, Counter>,
    egress: DevMapHash<MapData>,
    egress_miss: HashMap<MapData, u32, u64>,
    affinity: HashMap<MapData, AffinityKey, AffinityValue>,
    config: Array<MapData, DataplaneConfig>,
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
            flows4: typed(ebpf, MAP_FLOWS4)?,
            flows6: typed(ebpf, MAP_FLOWS6)?,
            stats: typed(ebpf, MAP_STATS)?,
            backend_stats: typed(ebpf, MAP_BACKEND_STATS)?,
            egress: typed(ebpf, MAP_EGRESS)?,
            egress_miss: typed(ebpf, MAP_EGRESS_MISS)?,
            affinity: typed(ebpf, MAP_AFFINITY)?,
            config: typed(ebpf, MAP_CONFIG)?,
        })
    }
}

/// The index of interface `iface`.
///
/// # Errors
/// No such interface.
pub fn if_index_of(iface: &str) -> Result<u32, LoadError> {
    if_index(iface)
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

/// `<dir>/<map name in lower case>`.
fn map_pin(dir: &Path, map: &str) -> PathBuf {
    dir.join(map.to_lowercase())
}

/// `<dir>/link_<iface>`.
fn link_pin(dir: &Path, iface: &str) -> PathBuf {
    dir.join(format!("{LINK_PREFIX}{iface}"))
}

/// The link pins in `dir`.
fn pinned_links(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_name().to_string_lossy().starts_with(LINK_PREFIX) {
            out.push(entry.path());
        }
    }
    Ok(out)
}

/// Takes an exclusive lock on `dir` (flock works on a bpffs directory), held as long as
/// the returned descriptor is open; refused at once if another daemon holds it.
fn lock_dir(dir: &Path) -> Result<OwnedFd, LoadError> {
    let file = std::fs::File::open(dir).map_err(|e| LoadError::Pin {
        path: dir.to_path_buf(),
        reason: e.to_string(),
    })?;
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(LoadError::Locked(dir.to_path_buf()));
    }
    Ok(file.into())
}

/// Attaches `program` to `iface` through the link pinned at `pin`: the link's program is
/// replaced atomically (packets see the old program or the new one). Without a usable
/// pinned link (none, or its interface is gone), attaches anew and pins the link.
fn attach_pinned(
    program: &mut Xdp,
    iface: &str,
    mode: AttachMode,
    pin: &Path,
) -> Result<(), LoadError> {
    let attach_err = |reason: String| LoadError::Attach {
        iface: iface.to_string(),
        mode,
        reason,
    };
    if pin.exists() {
        let adopted = PinnedLink::from_pin(pin)
            .map_err(|e| error_chain(&e))
            .and_then(|p| XdpLink::try_from(FdLink::from(p)).map_err(|e| error_chain(&e)))
            .and_then(|link| program.attach_to_link(link).map_err(|e| error_chain(&e)));
        match adopted {
            Ok(id) => {
                // The pin holds the link; the program need not.
                drop(program.take_link(id));
                tracing::info!("xlbd: {iface}: program replaced through the pinned link");
                return Ok(());
            }
            Err(e) => {
                tracing::warn!("xlbd: {iface}: pinned link unusable ({e}); attaching anew");
                std::fs::remove_file(pin).map_err(|e| attach_err(e.to_string()))?;
            }
        }
    }
    let id = program
        .attach(iface, mode.flags())
        .map_err(|e| attach_err(attach_reason(iface, mode, &e)))?;
    let link = program
        .take_link(id)
        .map_err(|e| attach_err(error_chain(&e)))?;
    let fd_link = FdLink::try_from(link).map_err(|e| attach_err(error_chain(&e)))?;
    fd_link.pin(pin).map_err(|e| LoadError::Pin {
        path: pin.to_path_buf(),
        reason: error_chain(&e),
    })?;
    Ok(())
}

/// Refuses pinned maps whose layout differs from what this object (with these sizes)
/// would make: adopting them would misread every entry.
fn check_pinned_maps(
    dir: &Path,
    object: &[u8],
    flow_entries: u32,
    table_area: u32,
) -> Result<(), LoadError> {
    let obj = aya_obj::Object::parse(object)
        .map_err(|e| LoadError::Rejected(format!("parsing the XDP object: {e}")))?;
    for map in PINNED_MAPS {
        let path = map_pin(dir, map);
        if !path.exists() {
            continue;
        }
        let incompatible = |what: String| LoadError::Incompatible {
            map,
            path: path.clone(),
            what,
        };
        let have = MapInfo::from_pin(&path).map_err(|e| incompatible(error_chain(&e)))?;
        let Some(want) = obj.maps.get(map) else {
            return Err(incompatible("this object has no such map".into()));
        };
        let (max, flag) = match map {
            MAP_FLOWS4 | MAP_FLOWS6 => (flow_entries, " (--flow-entries)"),
            MAP_TABLES => (table_area, " (--table-area)"),
            _ => (want.max_entries(), ""),
        };
        let devmap =
            want.map_type() == aya_obj::generated::bpf_map_type::BPF_MAP_TYPE_DEVMAP_HASH as u32;
        let have_type = have.map_type().map(|t| t as u32).unwrap_or(u32::MAX);
        // A devmap's value size is set by aya for the kernel (bpf_devmap_val), and the
        // kernel marks it read-only for programs itself.
        let (value, flags) = if devmap {
            (have.value_size(), have.map_flags() & !BPF_F_RDONLY_PROG)
        } else {
            (want.value_size(), have.map_flags())
        };
        let checks = [
            ("type", have_type, want.map_type(), ""),
            ("key size", have.key_size(), want.key_size(), ""),
            ("value size", have.value_size(), value, ""),
            ("entries", have.max_entries(), max, flag),
            ("flags", flags, want.map_flags(), ""),
        ];
        for (what, h, w, flag) in checks {
            if h != w {
                return Err(incompatible(format!(
                    "{what} {h}, this xlbd wants {w}{flag}"
                )));
            }
        }
    }
    Ok(())
}

/// Removes everything pinned in `dir` (maps and links; removing a link's pin detaches it
/// once nothing else holds it).
fn clear_pin_dir(dir: &Path) -> Result<(), LoadError> {
    let err = |e: std::io::Error| LoadError::Pin {
        path: dir.to_path_buf(),
        reason: e.to_string(),
    };
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

/// Why an attach failed, for the operator. Native XDP refuses an MTU larger than the
/// driver's XDP buffer with `ERANGE`, which alone does not say so.
fn attach_reason(iface: &str, mode: AttachMode, e: &ProgramError) -> String {
    let kernel = one_line(&error_chain(e));
    let mut src: Option<&dyn std::error::Error> = Some(e);
    let mut erange = false;
    while let Some(cause) = src {
        erange |= cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.raw_os_error() == Some(libc::ERANGE));
        src = cause.source();
    }
    if mode == AttachMode::Native && erange {
        format!("{} (kernel: {kernel})", crate::link::mtu_too_large(iface))
    } else {
        kernel
    }
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

/// The entry of `key` in the connection table of key type `K`, if `key` is of its family
/// and present.
fn get_flow<K: FlowMapKey + Pod>(
    map: &HashMap<MapData, K, FlowValue>,
    key: &FlowKey,
) -> Option<FlowValue> {
    if key.family != K::FAMILY {
        return None;
    }
    map.get(&K::from_flow(key), 0).ok()
}

/// Appends every entry of the connection table of key type `K` to `out`.
fn list_flows<K: FlowMapKey + Pod>(
    map: &HashMap<MapData, K, FlowValue>,
    out: &mut Vec<(FlowKey, FlowValue)>,
) -> Result<(), DataplaneError> {
    for entry in map.iter() {
        match entry {
            Ok((k, v)) => out.push((k.to_flow(), v)),
            // An entry evicted while we walk the table: skip it.
            Err(MapError::KeyNotFound) => continue,
            Err(e) => return Err(map_err(K::MAP)(e)),
        }
    }
    Ok(())
}

/// Deletes the entries of `keys` of `K`'s family from its table; returns how many there were.
fn remove_flows_of<K: FlowMapKey + Pod>(
    map: &mut HashMap<MapData, K, FlowValue>,
    keys: &[FlowKey],
) -> Result<usize, DataplaneError> {
    let mut removed = 0;
    for key in keys.iter().filter(|k| k.family == K::FAMILY) {
        match map.remove(&K::from_flow(key)) {
            Ok(()) => removed += 1,
            Err(MapError::KeyNotFound) => {}
            Err(e) => return Err(map_err(K::MAP)(e)),
        }
    }
    Ok(removed)
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

    fn adopted(&self) -> bool {
        self.adopted
    }

    /// Removes the pinned links (which detaches the program from every interface) and the
    /// pinned maps (freed with the program).
    fn detach(self) -> Result<(), DataplaneError> {
        if let Some(dir) = &self.pin_dir {
            clear_pin_dir(dir).map_err(|e| DataplaneError::Detach(e.to_string()))?;
            let _ = std::fs::remove_dir(dir);
        }
        Ok(())
    }

    fn service_entries(&self) -> Result<Vec<(ServiceKey, ServiceValue)>, DataplaneError> {
        self.maps
            .services
            .iter()
            .collect::<Result<_, _>>()
            .map_err(map_err(MAP_SERVICES))
    }

    fn put_backend(&mut self, index: u32, backend: &Backend) -> Result<(), DataplaneError> {
        self.maps
            .backends
            .set(index, backend, 0)
            .map_err(map_err(MAP_BACKENDS))?;
        // The index may have held another address: no CPU may use its cached FIB answer.
        self.invalidate_fib_cache()
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
        let mut counters = (0..STAT_COUNT)
            .map(|i| {
                let v = self.maps.stats.get(&i, 0).map_err(map_err(MAP_STATS))?;
                Ok(sum(&v))
            })
            .collect::<Result<Vec<_>, DataplaneError>>()?;
        // The data path does not count `rx`: every packet ends in one outcome counter.
        lb_common::stats::fill_rx(&mut counters);
        Ok(counters)
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
        list_flows(&self.maps.flows4, &mut out)?;
        list_flows(&self.maps.flows6, &mut out)?;
        Ok(out)
    }

    fn remove_flows(&mut self, keys: &[FlowKey]) -> Result<usize, DataplaneError> {
        Ok(remove_flows_of(&mut self.maps.flows4, keys)?
            + remove_flows_of(&mut self.maps.flows6, keys)?)
    }

    fn allow_egress(&mut self, ifindex: u32) -> Result<(), DataplaneError> {
        use aya::maps::xdp::XdpMapError;
        match self.maps.egress.insert(ifindex, ifindex, None, 0) {
            Ok(()) => Ok(()),
            Err(XdpMapError::MapError(e)) => Err(map_err(MAP_EGRESS)(e)),
            Err(XdpMapError::ChainedProgramNotSupported) => {
                unreachable!("no program is chained to egress devices")
            }
        }
    }

    fn deny_egress(&mut self, ifindex: u32) -> Result<(), DataplaneError> {
        match self.maps.egress.remove(ifindex) {
            Ok(()) => Ok(()),
            // A missing key is ENOENT from the delete syscall.
            Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => {
                Ok(())
            }
            Err(e) => Err(map_err(MAP_EGRESS)(e)),
        }
    }

    fn egress(&self) -> Result<Vec<u32>, DataplaneError> {
        let mut out: Vec<u32> = self
            .maps
            .egress
            .keys()
            .collect::<Result<_, _>>()
            .map_err(map_err(MAP_EGRESS))?;
        out.sort_unstable();
        Ok(out)
    }

    fn egress_misses(&self) -> Result<Vec<(u32, u64)>, DataplaneError> {
        self.maps
            .egress_miss
            .iter()
            .collect::<Result<_, _>>()
            .map_err(map_err(MAP_EGRESS_MISS))
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
            reset: false,
            object: None,
            config: DataplaneConfig::default(),
            flow_lru: FlowLru::default(),
        }
    }

    /// The XDP program attached to `lo` in this thread's namespace, as `ip link` says.
    fn lo_xdp() -> bool {
        let out = std::process::Command::new("ip")
            .args(["link", "show", "lo"])
            .output()
            .expect("ip link");
        String::from_utf8_lossy(&out.stdout).contains("xdpgeneric")
    }

    #[test]
    fn pins_outlive_the_daemon_and_are_adopted_locked_checked_reset_and_detached() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("SKIPPED (needs root): pins_outlive_the_daemon_...");
            return;
        }
        if !is_bpffs(Path::new("/sys/fs/bpf")) {
            panic!("bpffs is not mounted at /sys/fs/bpf: run `cargo xtask setup`");
        }
        let dir = format!("/sys/fs/bpf/xlb-unit-{}", std::process::id());
        let d = dir.clone();
        in_private_netns(move || {
            let key = ServiceKey::default();
            let value = ServiceValue {
                id: 3,
                generation: 1,
                ..Default::default()
            };
            let mut dp = BpfDataplane::load(&opts(&d)).expect("load");
            assert!(!dp.adopted());
            assert!(Path::new(&d).join("flows4").exists());
            assert!(Path::new(&d).join("link_lo").exists());
            assert_eq!(dp.table_area(), 4096);
            dp.put_service(&key, &value).unwrap();
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
            // A second daemon on the same pin dir is refused; the first is untouched.
            let e = BpfDataplane::load(&opts(&d)).err().unwrap();
            assert!(matches!(e, LoadError::Locked(_)), "{e}");
            assert_eq!(dp.service_entries().unwrap(), vec![(key, value)]);
            drop(dp);
            // The daemon is gone: the program stays attached, the maps stay pinned.
            assert!(lo_xdp(), "detached with the daemon");

            let mut bigger = opts(&d);
            bigger.flow_entries = 2048;
            let e = BpfDataplane::load(&bigger).err().unwrap();
            assert!(
                e.to_string()
                    .contains("entries 1024, this xlbd wants 2048 (--flow-entries)"),
                "{e}"
            );
            assert!(lo_xdp());

            let dp = BpfDataplane::load(&opts(&d)).expect("adopt");
            assert!(dp.adopted());
            assert_eq!(dp.service_entries().unwrap(), vec![(key, value)]);
            drop(dp);

            let mut reset = opts(&d);
            reset.reset = true;
            let dp = BpfDataplane::load(&reset).expect("reset");
            assert!(!dp.adopted());
            assert!(dp.service_entries().unwrap().is_empty());
            assert!(lo_xdp());
            dp.detach().unwrap();
            // The kernel lets go of an unpinned link after an RCU grace period and from a
            // work queue: wait for it, bounded.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
            while lo_xdp() && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            assert!(!lo_xdp(), "still attached 3 s after detach");
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

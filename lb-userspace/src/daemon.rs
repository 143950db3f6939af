//! `xlbd`, the daemon: arguments, start-up (control socket, loading the data path) and the
//! life until SIGINT/SIGTERM. Generic over the loader so the start-up is host-testable; the
//! binary passes `BpfDataplane::load`.

use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use clap::Parser;
use tokio::net::UnixListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::Mutex;
use tracing::{info, warn};

use lb_common::conntrack::Timeouts;

use crate::announce::{self, Node};
use crate::bpf::{AttachMode, LoadError, LoadOptions};
use crate::client::DEFAULT_SOCKET;
use crate::control::{self, ControlService, DaemonInfo};
use crate::dataplane::Dataplane;
use crate::egress::Egress;
use crate::flow_lru::FlowLru;
use crate::limits;
use crate::link;
use crate::metrics::{self, MetricsAddrError};
use crate::state::{ControlState, DaemonSettings, PersistError, StateError, Store};

#[derive(Debug, Clone, Parser)]
#[command(
    name = "xlbd",
    version,
    about = "xlb's daemon: attaches the XDP load balancer to interfaces and serves the control API"
)]
pub struct Args {
    /// Interface to attach to (repeatable, or comma-separated) [default: the --config
    /// file's].
    #[arg(long = "iface", value_name = "IF", required_unless_present = "config", value_delimiter = ',',
          value_parser = limits::parse_iface)]
    pub ifaces: Vec<String>,
    /// XDP attach mode: native (driver) or skb (generic, any interface) [default: the
    /// --config file's, else native].
    #[arg(long, value_enum)]
    pub mode: Option<AttachMode>,
    /// Configuration file (TOML): its interfaces and mode unless given as flags; its
    /// services applied once the data path is loaded, as `xlb apply -f FILE` would.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Control socket (mode 0600).
    #[arg(long, env = "XLB_SOCKET", default_value = DEFAULT_SOCKET, value_name = "PATH")]
    pub socket: PathBuf,
    /// Where the BPF maps and XDP links are pinned; its parent must be a bpffs mount.
    #[arg(long, default_value = "/sys/fs/bpf/xlb", value_name = "DIR")]
    pub pin_dir: PathBuf,
    /// Where the control state (services, backends, weights) is saved after every change
    /// and restored from at start.
    #[arg(long, default_value = "/var/lib/xlb", value_name = "DIR")]
    pub state_dir: PathBuf,
    /// Start empty: detach and remove whatever an earlier xlbd pinned (every connection
    /// is lost) and forget its saved state.
    #[arg(long)]
    pub reset: bool,
    /// Load the XDP object from FILE instead of the one built into xlbd (a data-path build
    /// from the same sources; it replaces the running program through the pinned links).
    #[arg(long, value_name = "FILE")]
    pub object: Option<PathBuf>,
    /// On SIGTERM/SIGINT, detach the program and remove the pins (by default the data path
    /// stays and keeps balancing until the next xlbd adopts it).
    #[arg(long)]
    pub detach_on_exit: bool,
    /// Connection-table entries of each family's table (IPv4 and IPv6 flows are kept in
    /// maps of their own; each flow takes two entries).
    #[arg(long, default_value_t = lb_common::DEFAULT_FLOW_ENTRIES, value_name = "N",
          value_parser = limits::parse_flow_entries, allow_negative_numbers = true)]
    pub flow_entries: u32,
    /// Slots of the backend-table area (two halves; each service's table takes its size in
    /// both), at least 202: two of the smallest table.
    #[arg(long, default_value_t = lb_common::DEFAULT_TABLE_AREA, value_name = "N",
          value_parser = limits::parse_table_area, allow_negative_numbers = true)]
    pub table_area: u32,
    /// The connection tables' LRU: per-cpu (BPF_F_NO_COMMON_LRU: inserts on different
    /// CPUs do not contend; each CPU evicts only entries it inserted, from its share of
    /// --flow-entries, which is rounded up to a multiple of the CPUs) or common (one LRU
    /// and one lock for all CPUs). Lookups find an entry from any CPU either way.
    #[arg(long, value_enum, default_value_t = FlowLru::default(), value_name = "LRU")]
    pub flow_lru: FlowLru,
    /// New flows each CPU may enter in the connection table per second (0: no limit).
    /// Over it, a new flow is still forwarded by its service's table, without an entry
    /// (counted as new_flow_capped), so a SYN flood cannot flush the table.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub new_flow_cap: u32,
    /// Seconds an established TCP flow may idle before its entries expire.
    #[arg(long, default_value_t = 3600, value_name = "SECS")]
    pub tcp_timeout: u64,
    /// Seconds the entries of a closed (FIN/RST) TCP connection are kept.
    #[arg(long, default_value_t = 10, value_name = "SECS")]
    pub tcp_closed_timeout: u64,
    /// Seconds a UDP flow may idle before its entries expire.
    #[arg(long, default_value_t = 30, value_name = "SECS")]
    pub udp_timeout: u64,
    /// Seconds between sweeps that delete expired connection-table entries.
    #[arg(long, default_value_t = 2, value_name = "SECS",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub gc_interval: u64,
    /// Serve Prometheus metrics at http://ADDR:PORT/metrics (off by default). A loopback
    /// address only, unless --metrics-public.
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics_addr: Option<SocketAddr>,
    /// Let --metrics-addr be an address other hosts reach (the metrics name every service
    /// and backend, and the endpoint has no authentication).
    #[arg(long, requires = "metrics_addr")]
    pub metrics_public: bool,
    /// Announce the VIPs this node can serve to a BGP speaker: each one is a blackhole
    /// host route (proto 120) in routing table N while a backend of it is up and the node
    /// is not drained (`xlb node drain`); BIRD's `kernel table N; learn;` exports them.
    /// Off by default.
    #[arg(long, value_name = "N", value_parser = announce::parse_table)]
    pub announce_table: Option<announce::KernelTable>,
    /// dsr-ipip: outer IPv4 source addresses are taken from this prefix, the bits after
    /// its length from each flow's hash (so ECMP and RSS spread the tunnelled flows).
    #[arg(long, value_name = "ADDR/LEN", default_value = crate::forwarding::DEFAULT_ENCAP_SOURCE_V4)]
    pub encap_source_v4: String,
    /// dsr-ipip: as --encap-source-v4, for IPv6 (the flow hash fills up to 32 host bits,
    /// and the flow label).
    #[arg(long, value_name = "ADDR/LEN", default_value = crate::forwarding::DEFAULT_ENCAP_SOURCE_V6)]
    pub encap_source_v6: String,
    /// Run as a dsr-ipip backend instead: attach only the decapsulation program to the
    /// --iface interfaces (it strips the outer header of IPv4-in-IPv4 and IPv6-in-IPv6
    /// packets), print its counters on SIGTERM/SIGINT, and detach. No control socket, no
    /// pins, no state.
    #[arg(long)]
    pub decap: bool,
    /// With --decap: attach a program that passes every packet instead, for a veth whose
    /// peer sends it frames with XDP_TX (an xlb node's port on a bridge).
    #[arg(long, requires = "decap")]
    pub pass_only: bool,
    /// Log filter, e.g. info or lb_userspace=debug [default: $RUST_LOG, else info].
    #[arg(long, value_name = "FILTER")]
    pub log_level: Option<String>,
}

impl Args {
    /// The attach mode: `--mode`, else the config file's, else native.
    pub fn mode(&self) -> AttachMode {
        self.mode.unwrap_or(AttachMode::Native)
    }

    /// Connection-table timeouts, in the data path's nanoseconds.
    pub fn timeouts(&self) -> Timeouts {
        let ns = |secs: u64| secs.saturating_mul(1_000_000_000);
        Timeouts {
            tcp_idle_ns: ns(self.tcp_timeout),
            tcp_closed_ns: ns(self.tcp_closed_timeout),
            udp_idle_ns: ns(self.udp_timeout),
        }
    }

    pub fn load_options(&self) -> LoadOptions {
        LoadOptions {
            ifaces: self.ifaces.clone(),
            mode: self.mode(),
            pin_dir: self.pin_dir.clone(),
            flow_entries: self.flow_entries,
            table_area: self.table_area,
            reset: self.reset,
            object: self.object.clone(),
            flow_lru: self.flow_lru,
            config: lb_common::DataplaneConfig {
                new_flow_cap: self.new_flow_cap,
                fib_generation: 0,
            },
        }
    }

    /// What the state file records of the daemon.
    pub fn settings(&self) -> DaemonSettings {
        DaemonSettings {
            interfaces: self.ifaces.clone(),
            mode: control::mode_name(self.mode()),
        }
    }
}

/// Why the daemon could not start or stopped with an error; one line each.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("another xlbd is running on {}", limits::shown_path(.0))]
    AlreadyRunning(PathBuf),
    #[error("{} exists and is not a socket; not removing it", limits::shown_path(.0))]
    NotASocket(PathBuf),
    #[error("control socket {}: {source}", limits::shown_path(path))]
    Socket {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot handle signals: {0}")]
    Signals(io::Error),
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Persist(#[from] PersistError),
    #[error("{0}")]
    Restore(#[from] StateError),
    #[error(
        "{} was saved by an xlbd in {saved} mode, this one is in {asked} mode: start it with --mode {saved}, or with --reset to start empty (every connection is lost)",
        path.display()
    )]
    ModeChanged {
        path: PathBuf,
        saved: String,
        asked: String,
    },
    #[error(
        "the pinned data path under {} holds services but there is no saved state at {}: start xlbd with the --state-dir it ran with, or with --reset",
        pins.display(), state.display()
    )]
    NoSavedState { pins: PathBuf, state: PathBuf },
    #[error("control API: {0}")]
    Serve(#[from] tonic::transport::Error),
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    MetricsAddr(#[from] MetricsAddrError),
    #[error("metrics endpoint {addr}: {source}")]
    MetricsBind {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
}

/// Runs the daemon: prepares the socket, opens the state dir, loads (or adopts) the data
/// path with `load`, restores the saved control state over it, serves the control API
/// until SIGINT or SIGTERM, then removes the socket and leaves the data path attached
/// (or detaches it, with `--detach-on-exit`).
pub async fn run<D, L>(mut args: Args, load: L) -> Result<(), DaemonError>
where
    D: Dataplane,
    L: FnOnce(&LoadOptions) -> Result<D, LoadError>,
{
    let config = startup::read_config(&mut args)?;
    let metrics_addr = args
        .metrics_addr
        .map(|a| metrics::check_addr(a, args.metrics_public))
        .transpose()?;
    prepare_socket(&args.socket).await?;
    let metrics_listener = match metrics_addr {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| DaemonError::MetricsBind { addr, source })?,
        ),
        None => None,
    };
    let store = Store::open(&args.state_dir, args.settings())?;
    let saved = if args.reset { None } else { store.load()? };
    if let Some(saved) = &saved {
        let asked = control::mode_name(args.mode());
        if saved.daemon.mode != asked && args.pin_dir.exists() {
            return Err(DaemonError::ModeChanged {
                path: store.path(),
                saved: saved.daemon.mode.clone(),
                asked,
            });
        }
    }
    let dp = load(&args.load_options())?;
    for iface in &args.ifaces {
        if let Some(w) = link::down_warning(iface) {
            warn!("xlbd: {w}");
        }
    }
    let adopted = dp.adopted();
    let control = match saved {
        Some(saved) => ControlState::restore(dp, saved.control)?,
        None if !dp.service_entries().map_err(StateError::from)?.is_empty() => {
            return Err(DaemonError::NoSavedState {
                pins: args.pin_dir.clone(),
                state: store.path(),
            });
        }
        None => ControlState::new(dp),
    };
    let control = control.with_store(store)?.with_timeouts(args.timeouts());
    let listener = bind(&args.socket)?;
    let mut sigterm = signal(SignalKind::terminate()).map_err(DaemonError::Signals)?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(DaemonError::Signals)?;
    let (services, backends) = control.counts();
    info!(
        "xlbd: {} the data path on {} in {} mode ({services} services, {backends} backends), control socket {}",
        if adopted { "adopted" } else { "attached" },
        args.ifaces.join(", "),
        control::mode_name(args.mode()),
        args.socket.display()
    );

    let state = Arc::new(Mutex::new(control));
    if let Err(e) = startup::apply_config(&state, config.as_ref()).await {
        remove_socket(&args.socket);
        return Err(e);
    }
    let egress = Arc::new(Mutex::new(Egress::new(args.mode(), args.ifaces.clone())));
    // The first sync before the API answers: every device's path is in the log at start.
    sync_egress(&state, &egress).await;
    let sweeper = tokio::spawn(sweep(state.clone(), args.gc_interval));
    let watcher = tokio::spawn(watch_egress(state.clone(), egress.clone()));
    let neighbours = tokio::spawn(keep_neighbours(state.clone()));
    let metrics = metrics_listener.map(|listener| {
        if let Ok(addr) = listener.local_addr() {
            info!("xlbd: metrics at http://{addr}/metrics");
        }
        let capacity = u64::from(
            args.flow_lru
                .entries_here(args.flow_entries)
                .unwrap_or(args.flow_entries),
        );
        tokio::spawn(metrics::serve(listener, state.clone(), capacity))
    });
    let checker = tokio::spawn(crate::health::run(state.clone()));
    let node = Arc::new(Node::new(args.announce_table, Some(args.state_dir.clone())));
    if node.draining() {
        info!("xlbd: the node is draining (since before this start): no VIP is announced");
    }
    let (stop_announcing, stop_rx) = tokio::sync::watch::channel(false);
    let announcer = tokio::spawn(announce::run(state.clone(), node.clone(), stop_rx));
    let info = DaemonInfo {
        interfaces: args.ifaces.clone(),
        mode: args.mode(),
        started: Instant::now(),
        egress,
        node,
    };
    let shutdown = async move {
        tokio::select! {
            _ = sigterm.recv() => info!("xlbd: SIGTERM, shutting down"),
            _ = sigint.recv() => info!("xlbd: SIGINT, shutting down"),
        }
    };
    let served = control::serve(listener, ControlService::new(state.clone(), info), shutdown).await;
    // Withdraw first: the routers stop sending this node flows while the rest stops.
    let _ = stop_announcing.send(true);
    let _ = announcer.await;
    for task in [sweeper, watcher, neighbours, checker]
        .into_iter()
        .chain(metrics)
    {
        task.abort();
        let _ = task.await;
    }
    remove_socket(&args.socket);
    let dp = match Arc::try_unwrap(state) {
        Ok(state) => state.into_inner().into_dataplane(),
        Err(_) => {
            warn!("xlbd: a request still holds the state; exiting without detaching");
            return Ok(served?);
        }
    };
    if args.detach_on_exit {
        match dp.detach() {
            Ok(()) => info!("xlbd: detached, exiting"),
            Err(e) => warn!("xlbd: {e}"),
        }
    } else {
        drop(dp);
        info!("xlbd: exiting; the data path stays attached and keeps balancing");
    }
    Ok(served?)
}

/// Deletes expired connection-table entries every `interval` seconds, for ever.
async fn sweep<D: Dataplane>(state: Arc<Mutex<ControlState<D>>>, interval: u64) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(interval));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match state.lock().await.sweep() {
            Ok(0) => {}
            Ok(n) => tracing::debug!("xlbd: swept {n} expired connection-table entries"),
            Err(e) => warn!("xlbd: connection-table sweep: {e}"),
        }
    }
}

/// How often the devices are looked at again (hot-plugged devices, a bridge port added, a
/// veth peer that gained XDP or GRO).
const EGRESS_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// How often the `dsr-l2` backends' neighbour entries are looked at again (new backends,
/// changed routes).
const NEIGH_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// Re-syncs the egress devmap with the namespace's devices every [`EGRESS_INTERVAL`].
async fn watch_egress<D: Dataplane>(
    state: Arc<Mutex<ControlState<D>>>,
    egress: Arc<Mutex<Egress>>,
) {
    let mut tick = tokio::time::interval(EGRESS_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await; // the first tick is immediate; start-up has just synced
    loop {
        tick.tick().await;
        sync_egress(&state, &egress).await;
    }
}

/// Keeps managed neighbour entries for the `dsr-l2` backends' next hops (see `neigh`),
/// every [`NEIGH_INTERVAL`], from the start.
async fn keep_neighbours<D: Dataplane>(state: Arc<Mutex<ControlState<D>>>) {
    let mut keeper = crate::neigh::Keeper::adopting();
    let mut tick = tokio::time::interval(NEIGH_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let backends = state.lock().await.dsr_l2_backends();
        keeper.round(&backends);
    }
}

async fn sync_egress<D: Dataplane>(state: &Mutex<ControlState<D>>, egress: &Mutex<Egress>) {
    let devices = match crate::netdev::devices() {
        Ok(d) => d,
        Err(e) => {
            warn!("xlbd: cannot list network devices: {e}");
            return;
        }
    };
    let mut egress = egress.lock().await;
    let mut state = state.lock().await;
    if let Err(e) = egress.sync(state.dataplane_mut(), &devices) {
        warn!("xlbd: egress devices: {e}");
    }
}

/// Refuses to start over a live daemon; removes a stale socket; creates the directory.
async fn prepare_socket(path: &Path) -> Result<(), DaemonError> {
    let err = |source| DaemonError::Socket {
        path: path.to_path_buf(),
        source,
    };
    match std::fs::symlink_metadata(path) {
        Ok(meta) if !meta.file_type().is_socket() => {
            return Err(DaemonError::NotASocket(path.to_path_buf()));
        }
        Ok(_) => {
            if tokio::net::UnixStream::connect(path).await.is_ok() {
                return Err(DaemonError::AlreadyRunning(path.to_path_buf()));
            }
            info!("xlbd: removing stale socket {}", path.display());
            std::fs::remove_file(path).map_err(err)?;
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    Ok(())
}

/// Binds the control socket, readable and writable by its owner only (xlbd runs as root,
/// so root): the socket is the only way to change the data path. It is made with mode
/// 0600 from the start (umask 0177 around bind(2)), so no other user can connect in a
/// window before the chmod, which stays as the explicit statement of the mode.
fn bind(path: &Path) -> Result<UnixListener, DaemonError> {
    let err = |source| DaemonError::Socket {
        path: path.to_path_buf(),
        source,
    };
    let listener = with_umask(0o177, || UnixListener::bind(path)).map_err(err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
    Ok(listener)
}

/// Runs `f` with the process's umask set to `mask`, then puts the old one back. The umask
/// is process-wide: used at start-up only, while nothing else creates files.
fn with_umask<T>(mask: libc::mode_t, f: impl FnOnce() -> T) -> T {
    // SAFETY: umask(2) cannot fail and touches no memory.
    let old = unsafe { libc::umask(mask) };
    let out = f();
    // SAFETY: as above.
    unsafe { libc::umask(old) };
    out
}

fn remove_socket(path: &Path) {
    if let Err(e) = std::fs::remove_file(path) {
        warn!("xlbd: cannot remove {}: {e}", path.display());
    }
}

mod startup;

#[cfg(test)]
mod tests;

//! Which VIPs this node announces to the routers, and how the BGP speaker is told.
//!
//! Several xlb nodes behind an ECMP router each announce the VIPs they can serve; the router
//! spreads the flows over the nodes that announce. A node announces a VIP while it is not
//! draining (`xlb node drain`) and at least one backend of a service on that VIP is `up`
//! and not drained; otherwise it withdraws it, so that the router stops sending it flows.
//! [`decide`] is that rule as a pure function.
//!
//! The mechanism (`xlbd --announce-table N`): an announced VIP is a blackhole host route
//! (`/32` or `/128`, protocol [`RTPROT_XLB`]) in kernel routing table N, a table no
//! `ip rule` points at, so forwarding on the node is unchanged. The BGP speaker (BIRD's
//! `kernel` protocol with `kernel table N; learn;`) picks up additions and removals from
//! netlink at once and announces or withdraws them. The routes are written with rtnetlink
//! directly ([`KernelTable`]). On a clean stop xlbd deletes its routes; after `kill -9`
//! they stay, and with them the announcement, until the next xlbd (which re-decides every
//! VIP at start) or until the BGP speaker is stopped too.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::Mutex;
use tracing::{info, warn};

use crate::dataplane::Dataplane;
use crate::health::HealthState;
use crate::netdev;
use crate::state::ControlState;

/// The routing protocol number xlbd's routes carry (`ip route ... proto 120`), so they are
/// told apart from anyone else's in the table.
pub const RTPROT_XLB: u8 = 120;

/// How often the rule is evaluated again (health changes, drains, services).
pub const INTERVAL: Duration = Duration::from_millis(100);

/// Why a VIP is announced or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Announced: this many backends are up and not drained.
    Up(u32),
    /// Withdrawn: the node is draining.
    Draining,
    /// Withdrawn: no backend of any service on the VIP is up and not drained.
    NoBackendUp,
}

impl Reason {
    pub fn announced(self) -> bool {
        matches!(self, Reason::Up(_))
    }

    /// One line for `xlb node status`.
    pub fn describe(self) -> String {
        match self {
            Reason::Up(n) => format!("{n} backend{} up", if n == 1 { "" } else { "s" }),
            Reason::Draining => "the node is draining".into(),
            Reason::NoBackendUp => "no backend is up".into(),
        }
    }
}

/// The rule: for each VIP of `backends` (one `(vip, weight, health)` per backend of every
/// service; a service without backends as `(vip, 0, Down)`), whether it is announced.
pub fn decide(
    draining: bool,
    backends: impl IntoIterator<Item = (IpAddr, u32, HealthState)>,
) -> BTreeMap<IpAddr, Reason> {
    let mut up: BTreeMap<IpAddr, u32> = BTreeMap::new();
    for (vip, weight, health) in backends {
        let n = up.entry(vip).or_insert(0);
        if weight > 0 && health == HealthState::Up {
            *n += 1;
        }
    }
    up.into_iter()
        .map(|(vip, n)| {
            let reason = match (draining, n) {
                (true, _) => Reason::Draining,
                (false, 0) => Reason::NoBackendUp,
                (false, n) => Reason::Up(n),
            };
            (vip, reason)
        })
        .collect()
}

/// What to change to go from `announced` to `wanted`: (routes to add, routes to delete).
pub fn changes(
    announced: &BTreeSet<IpAddr>,
    wanted: &BTreeSet<IpAddr>,
) -> (Vec<IpAddr>, Vec<IpAddr>) {
    (
        wanted.difference(announced).copied().collect(),
        announced.difference(wanted).copied().collect(),
    )
}

/// Where announcements go.
pub trait Routes: Send {
    fn add(&mut self, vip: IpAddr) -> io::Result<()>;
    /// Deleting a route that is not there is not an error.
    fn delete(&mut self, vip: IpAddr) -> io::Result<()>;
}

/// A kernel routing table that the BGP speaker exports (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelTable(pub u32);

/// Why `--announce-table` was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TableError {
    #[error("--announce-table {0}: not a table number (1-4294967295, other than 253, 254 and 255)")]
    NotANumber(String),
    #[error(
        "--announce-table {0}: table {0} is the kernel's {1} table, which forwards packets; choose a table of its own (e.g. 100) that the BGP speaker reads"
    )]
    Reserved(u32, &'static str),
}

/// Parses `--announce-table`: a table number that is not `unspec`, `default`, `main` or
/// `local`.
pub fn parse_table(s: &str) -> Result<KernelTable, TableError> {
    let n: u32 = s
        .trim()
        .parse()
        .map_err(|_| TableError::NotANumber(crate::limits::cut(s)))?;
    match n {
        0 => Err(TableError::NotANumber(s.into())),
        253 => Err(TableError::Reserved(n, "default")),
        254 => Err(TableError::Reserved(n, "main")),
        255 => Err(TableError::Reserved(n, "local")),
        n => Ok(KernelTable(n)),
    }
}

const RTM_NEWROUTE: u16 = 24;
const RTM_DELROUTE: u16 = 25;
const RTN_BLACKHOLE: u8 = 6;
const RTA_DST: u16 = 1;
const RTA_TABLE: u16 = 15;

impl KernelTable {
    /// One route request: netlink header, `rtmsg`, `RTA_DST` and `RTA_TABLE`.
    fn message(&self, kind: u16, flags: u16, vip: IpAddr) -> Vec<u8> {
        let (family, addr) = netdev::family_and_bytes(vip);
        let table = if self.0 < 256 { self.0 as u8 } else { 0 };
        let rtmsg = [
            family,
            (addr.len() * 8) as u8, // dst_len: a host route
            0,                      // src_len
            0,                      // tos
            table,
            RTPROT_XLB,
            0, // RT_SCOPE_UNIVERSE
            RTN_BLACKHOLE,
            0, // rtm_flags (4 bytes)
            0,
            0,
            0,
        ];
        netdev::message(kind, flags | libc::NLM_F_ACK as u16, &rtmsg, |m| {
            netdev::attr(m, RTA_DST, &addr);
            netdev::attr(m, RTA_TABLE, &self.0.to_ne_bytes());
        })
    }
}

impl Routes for KernelTable {
    fn add(&mut self, vip: IpAddr) -> io::Result<()> {
        let flags = (libc::NLM_F_CREATE | libc::NLM_F_REPLACE) as u16;
        netdev::route_call(&self.message(RTM_NEWROUTE, flags, vip)).map(drop)
    }

    fn delete(&mut self, vip: IpAddr) -> io::Result<()> {
        match netdev::route_call(&self.message(RTM_DELROUTE, 0, vip)) {
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(()),
            r => r.map(drop),
        }
    }
}

/// The node's announcement state, shared by the control API and the announcer task.
#[derive(Debug)]
pub struct Node {
    draining: AtomicBool,
    /// Present while the node drains, so that a restarted xlbd stays drained.
    drain_file: Option<PathBuf>,
    /// The table announced into; `None` without `--announce-table` (nothing is announced,
    /// the decision is still shown).
    pub table: Option<KernelTable>,
    /// The last decision, VIP by VIP, and whether the route is in place.
    last: std::sync::Mutex<BTreeMap<IpAddr, (Reason, bool)>>,
    /// Rounds done, and a wake-up for the announcer (a drain acts at once).
    rounds: tokio::sync::watch::Sender<u64>,
    wake: tokio::sync::Notify,
}

impl Node {
    /// A node whose drain flag lives in `state_dir` (as the file `draining`).
    pub fn new(table: Option<KernelTable>, state_dir: Option<PathBuf>) -> Node {
        let drain_file = state_dir.map(|d| d.join("draining"));
        let draining = drain_file.as_ref().is_some_and(|f| f.exists());
        Node {
            draining: AtomicBool::new(draining),
            drain_file,
            table,
            last: std::sync::Mutex::new(BTreeMap::new()),
            rounds: tokio::sync::watch::Sender::new(0),
            wake: tokio::sync::Notify::new(),
        }
    }

    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Drains the node (every VIP withdrawn) or ends the drain; kept across restarts.
    pub fn set_draining(&self, on: bool) -> io::Result<()> {
        if let Some(f) = &self.drain_file {
            if on {
                std::fs::write(f, b"the node drains: xlb node undrain ends it\n")?;
            } else if let Err(e) = std::fs::remove_file(f)
                && e.kind() != io::ErrorKind::NotFound
            {
                return Err(e);
            }
        }
        self.draining.store(on, Ordering::Relaxed);
        Ok(())
    }

    /// Wakes the announcer and waits (at most `limit`) until a round that started after
    /// this call has finished, so that a reply shows the routes after a drain.
    pub async fn settle(&self, limit: Duration) {
        let mut rounds = self.rounds.subscribe();
        let start = *rounds.borrow_and_update();
        self.wake.notify_one();
        // The round running now may have read the state before the change: wait for two.
        let _ = tokio::time::timeout(limit, rounds.wait_for(|n| *n >= start + 2)).await;
    }

    /// The last decision: VIP, why, and whether its route is in place.
    pub fn status(&self) -> Vec<(IpAddr, Reason, bool)> {
        let last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        last.iter().map(|(v, (r, a))| (*v, *r, *a)).collect()
    }
}

/// The announcer: every [`INTERVAL`], decides every VIP and writes the routes that changed
/// through `routes`. A VIP whose write failed is tried again at the next round.
pub struct Announcer<R> {
    routes: R,
    /// Routes in place.
    announced: BTreeSet<IpAddr>,
    /// VIPs seen since start: each is written once (added or deleted) even when unchanged,
    /// so a route left by a killed xlbd is corrected.
    seen: BTreeSet<IpAddr>,
}

impl<R: Routes> Announcer<R> {
    pub fn new(routes: R) -> Self {
        Announcer {
            routes,
            announced: BTreeSet::new(),
            seen: BTreeSet::new(),
        }
    }

    /// Applies one decision; returns the VIPs now announced.
    pub fn apply(&mut self, decision: &BTreeMap<IpAddr, Reason>) -> &BTreeSet<IpAddr> {
        let wanted: BTreeSet<IpAddr> = decision
            .iter()
            .filter(|(_, r)| r.announced())
            .map(|(v, _)| *v)
            .collect();
        let (add, mut delete) = changes(&self.announced, &wanted);
        // First sight of a withdrawn VIP: delete whatever an earlier xlbd left.
        delete.extend(
            decision
                .keys()
                .filter(|v| !wanted.contains(v) && !self.seen.contains(v)),
        );
        for vip in add {
            match self.routes.add(vip) {
                Ok(()) => {
                    info!("xlbd: announcing {vip} ({})", decision[&vip].describe());
                    self.announced.insert(vip);
                }
                Err(e) => warn!("xlbd: cannot announce {vip}: {e}"),
            }
        }
        for vip in delete {
            match self.routes.delete(vip) {
                Ok(()) => {
                    if self.announced.remove(&vip) {
                        let why = decision
                            .get(&vip)
                            .map_or("no service uses it".into(), |r| r.describe());
                        info!("xlbd: withdrawing {vip} ({why})");
                    }
                }
                Err(e) => warn!("xlbd: cannot withdraw {vip}: {e}"),
            }
        }
        self.seen.extend(decision.keys());
        &self.announced
    }

    /// Withdraws everything (a clean stop).
    pub fn withdraw_all(&mut self) {
        for vip in std::mem::take(&mut self.announced) {
            match self.routes.delete(vip) {
                Ok(()) => info!("xlbd: withdrew {vip}"),
                Err(e) => warn!("xlbd: cannot withdraw {vip}: {e}"),
            }
        }
    }
}

/// One round: the decision from the state, applied, and recorded in `node`.
pub async fn round<D: Dataplane, R: Routes>(
    state: &Mutex<ControlState<D>>,
    node: &Node,
    announcer: Option<&mut Announcer<R>>,
) {
    let views = state.lock().await.announce_view();
    let decision = decide(node.draining(), views);
    let announced = match announcer {
        Some(a) => a.apply(&decision).clone(),
        None => BTreeSet::new(),
    };
    let mut last = node.last.lock().unwrap_or_else(|e| e.into_inner());
    *last = decision
        .into_iter()
        .map(|(v, r)| (v, (r, announced.contains(&v))))
        .collect();
    drop(last);
    node.rounds.send_modify(|n| *n += 1);
}

/// Runs rounds every [`INTERVAL`] until `stop` is set, then withdraws every VIP.
pub async fn run<D: Dataplane>(
    state: Arc<Mutex<ControlState<D>>>,
    node: Arc<Node>,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut stop = stop;
    let mut announcer = node.table.map(Announcer::new);
    let mut tick = tokio::time::interval(INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = node.wake.notified() => {}
            _ = stop.changed() => break,
        }
        round(&state, &node, announcer.as_mut()).await;
        if *stop.borrow() {
            break;
        }
    }
    if let Some(a) = announcer.as_mut() {
        a.withdraw_all();
    }
}

#[cfg(test)]
mod tests;

//! Flows that survive change (issue 3): 100 long-lived TCP connections keep their backend
//! while 100 table changes run in a loop (backends added, drained, removed, re-added and
//! re-weighted), and every new connection opened between two changes lands on a backend
//! that has weight > 0 at that moment.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use xlb_testbed::{TcpConn, Testbed, VIP, ask_all, backend_id, report, require_root, tcp_flow};

const SERVICE: &str = "198.18.0.10:80/tcp";
const BACKEND_PORT: u16 = 8080;
const CLIENTS: usize = 3;
const BACKENDS: usize = 5;
/// Backends 0..ORIGINAL are in the service from the start and hold the long-lived connections.
const ORIGINAL: usize = 3;
const LONG_LIVED: usize = 100;
const CHANGES: usize = 100;
/// The long-lived connections are asked again after this many changes (the last time
/// after the last change).
const CHECK_EVERY: usize = 10;
const _: () = assert!(CHANGES.is_multiple_of(CHECK_EVERY) && CHANGES.is_multiple_of(10));
/// How long a drained backend's flow count may take to fall to 0 (its connections are all
/// closed by then).
const DRAIN_WAIT: Duration = Duration::from_secs(5);

/// One change of the service's backend table.
#[derive(Debug, Clone, Copy)]
enum Change {
    Add(usize, u32),
    SetWeight(usize, u32),
    /// `xlb backend drain`: weight 0.
    Drain(usize),
    /// Without `--force`, once the backend's live flows are 0.
    Remove(usize),
}

impl Change {
    /// The backend this change is about.
    fn backend(self) -> usize {
        match self {
            Change::Add(j, _) | Change::SetWeight(j, _) | Change::Drain(j) | Change::Remove(j) => j,
        }
    }
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::Add(j, w) => write!(f, "add backend-{j} weight {w}"),
            Change::SetWeight(j, w) => write!(f, "set-weight backend-{j} {w}"),
            Change::Drain(j) => write!(f, "drain backend-{j}"),
            Change::Remove(j) => write!(f, "remove backend-{j}"),
        }
    }
}

/// The ten changes of cycle `c`, with weights from `rng`: the two extra backends are
/// added, drained and removed (in turn which goes first), the original three re-weighted,
/// and one of them drained until the next cycle gives it a weight again. At every point
/// at least one backend has weight > 0.
fn cycle(c: usize, rng: &mut Rng) -> [Change; 10] {
    let (x, y) = if c.is_multiple_of(2) { (3, 4) } else { (4, 3) };
    [
        Change::Add(x, rng.weight()),
        Change::SetWeight(0, rng.weight()),
        Change::Add(y, rng.weight()),
        Change::SetWeight(1, rng.weight()),
        Change::Drain(x),
        Change::SetWeight(2, rng.weight()),
        Change::Remove(x),
        Change::Drain(y),
        Change::Drain(c % ORIGINAL),
        Change::Remove(y),
    ]
}

/// A fixed-seed xorshift, so a failing run can be repeated exactly.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// 1..=200.
    fn weight(&mut self) -> u32 {
        1 + (self.next() % 200) as u32
    }
}

/// The test's model of the service next to the testbed: which backends are in it with
/// which weight, and what went wrong so far.
struct Churn<'a> {
    tb: &'a Testbed,
    weights: BTreeMap<usize, u32>,
    rng: Rng,
    changes: usize,
    new_connections: usize,
    new_per_backend: BTreeMap<String, usize>,
    /// New connections that failed or landed outside the allowed set.
    wrong: Vec<String>,
    next_client: usize,
}

impl Churn<'_> {
    fn addr(&self, j: usize) -> String {
        self.tb.backend_addr(j, BACKEND_PORT)
    }

    /// Makes `change` with the CLI and records it in the model.
    fn apply(&mut self, change: Change) {
        let tb = self.tb;
        let (service, addr) = (SERVICE, self.addr(change.backend()));
        let result = match change {
            Change::Add(j, w) => {
                self.weights.insert(j, w);
                tb.xlb_ok(&["backend", "add", service, &addr, "--weight", &w.to_string()])
            }
            Change::SetWeight(j, w) => {
                self.weights.insert(j, w);
                tb.xlb_ok(&["backend", "set-weight", service, &addr, &w.to_string()])
            }
            Change::Drain(j) => {
                self.weights.insert(j, 0);
                tb.xlb_ok(&["backend", "drain", service, &addr])
            }
            Change::Remove(j) => {
                let flows = tb
                    .wait_flows(service, Some(&addr), DRAIN_WAIT, |f| f == 0)
                    .expect("backend list");
                assert_eq!(
                    flows,
                    0,
                    "change {}: backend-{j} drained, all its connections closed, yet {flows} \
                     live flows after {DRAIN_WAIT:?}",
                    self.changes + 1
                );
                self.weights.remove(&j);
                tb.xlb_ok(&["backend", "remove", service, &addr])
            }
        };
        if let Err(e) = result {
            panic!("change {} ({change}): {e:#}", self.changes + 1);
        }
        self.changes += 1;
    }

    /// The ids of the backends a new connection may land on now.
    fn allowed(&self) -> BTreeSet<String> {
        let live = self.weights.iter().filter(|&(_, &w)| w > 0);
        live.map(|(&j, _)| backend_id(j)).collect()
    }

    /// 1 to 3 short connections, one after another (each sends a line, reads the id and
    /// closes), from the clients in turn; each must land on an allowed backend.
    fn probe(&mut self, after: Change) {
        let allowed = self.allowed();
        let vip = SocketAddr::new(VIP.into(), 80);
        for _ in 0..1 + self.rng.next() % 3 {
            let k = self.next_client;
            self.next_client = (k + 1) % CLIENTS;
            self.new_connections += 1;
            match tcp_flow(&self.tb.client(k).ns, vip, 1) {
                Ok(flow) if allowed.contains(&flow.ids[0]) => {
                    *self.new_per_backend.entry(flow.ids[0].clone()).or_default() += 1;
                }
                Ok(flow) => self.wrong.push(format!(
                    "after change {} ({after}): {} landed on {}, allowed {allowed:?}",
                    self.changes, flow.local, flow.ids[0]
                )),
                Err(e) => self.wrong.push(format!(
                    "after change {} ({after}): new connection from client {k}: {e:#}",
                    self.changes
                )),
            }
        }
    }
}

/// The long-lived connections, the backend each started on, and the first failure of each.
struct LongLived {
    conns: Vec<TcpConn>,
    backends: Vec<String>,
    broken: Vec<Option<String>>,
}

impl LongLived {
    /// `LONG_LIVED` connections from the clients in turn, each asked once.
    fn open(tb: &Testbed) -> LongLived {
        let vip = SocketAddr::new(VIP.into(), 80);
        let (mut conns, mut backends) = (Vec::new(), Vec::new());
        for i in 0..LONG_LIVED {
            let mut conn = tb.tcp_conn(i % CLIENTS, vip).expect("connect to the VIP");
            let id = conn
                .ask()
                .unwrap_or_else(|e| panic!("long-lived connection {i}: {e:#}"));
            conns.push(conn);
            backends.push(id);
        }
        LongLived {
            broken: vec![None; conns.len()],
            conns,
            backends,
        }
    }

    /// Every connection sends a line again; one that fails or answers from another backend
    /// is broken (and stays counted as broken).
    fn check(&mut self, after_changes: usize) {
        let answers = ask_all(&mut self.conns);
        for (i, answer) in answers.into_iter().enumerate() {
            if self.broken[i].is_some() {
                continue;
            }
            let (conn, started_on) = (&self.conns[i], &self.backends[i]);
            self.broken[i] = match answer {
                Ok(id) if id == *started_on => None,
                Ok(id) => Some(format!(
                    "{} moved from {started_on} to {id} by change {after_changes}",
                    conn.local()
                )),
                Err(e) => Some(format!(
                    "{} on {started_on} broke by change {after_changes}: {e:#}",
                    conn.local()
                )),
            };
        }
    }

    fn broken(&self) -> Vec<&str> {
        self.broken.iter().flatten().map(String::as_str).collect()
    }
}

#[test]
fn connections_survive_table_churn() {
    if !require_root("connections_survive_table_churn") {
        return;
    }
    let started = Instant::now();
    let mut tb = Testbed::new(CLIENTS, BACKENDS).expect("testbed");
    for j in 0..BACKENDS {
        tb.spawn_id_server(j, BACKEND_PORT).expect("id server");
    }
    tb.start_xlbd(&[]).expect("start xlbd");
    tb.xlb_ok(&["service", "add", SERVICE])
        .expect("service add");
    let mut churn = Churn {
        tb: &tb,
        weights: BTreeMap::new(),
        rng: Rng(0x5eed_cafe_f00d_0003),
        changes: 0,
        new_connections: 0,
        new_per_backend: BTreeMap::new(),
        wrong: Vec::new(),
        next_client: 0,
    };
    for j in 0..ORIGINAL {
        churn.apply(Change::Add(j, 100));
    }
    churn.changes = 0; // the set-up is not churn

    let mut long = LongLived::open(&tb);
    let mut per_backend: BTreeMap<&str, usize> = BTreeMap::new();
    for b in &long.backends {
        *per_backend.entry(b).or_default() += 1;
    }
    eprintln!("long-lived connections per backend: {per_backend:?}");

    let mut checks = 0;
    for c in 0..CHANGES / 10 {
        for change in cycle(c, &mut churn.rng) {
            churn.apply(change);
            churn.probe(change);
            if churn.changes.is_multiple_of(CHECK_EVERY) {
                long.check(churn.changes);
                checks += 1;
            }
        }
    }

    let broken = long.broken();
    report(&format!(
        "churn: changes={} new_connections={} new_wrong={} long_lived_kept={} \
         long_lived_broken={} checks={checks} elapsed={:.1}s",
        churn.changes,
        churn.new_connections,
        churn.wrong.len(),
        LONG_LIVED - broken.len(),
        broken.len(),
        started.elapsed().as_secs_f64()
    ));
    report(&format!(
        "churn: new connections per backend: {:?}",
        churn.new_per_backend
    ));
    assert!(
        broken.is_empty(),
        "{} of {LONG_LIVED} long-lived connections broken, e.g. {:?}",
        broken.len(),
        &broken[..broken.len().min(5)]
    );
    assert!(
        churn.wrong.is_empty(),
        "{} of {} new connections failed or landed outside the set, e.g. {:?}",
        churn.wrong.len(),
        churn.new_connections,
        &churn.wrong[..churn.wrong.len().min(5)]
    );
}

//! Direct server return through xlbd (the testbed's `Layout::Dsr`: a router, one L2
//! segment with the xlb node and the backends, the backends holding the VIP on `lo`):
//! 30 TCP connections from 3 clients are balanced over 3 backends and stay on one, the
//! backends' replies go straight to the router, and the xlb node's program sees only the
//! requests. `dsr-l2` rewrites the destination MAC; `dsr-ipip` encapsulates to backends
//! that run `xlbd --decap`. Both over IPv4 and over IPv6 (IPv6-in-IPv6 for `dsr-ipip`).

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use xlb_testbed::{
    Flow, Layout, Proto, Testbed, VIP, VIP6, assert_sticky, backend_id, decap_counter,
    flows_per_backend, require_root,
};

const SERVICE: &str = "198.18.0.10:80/tcp";
const SERVICE6: &str = "[2001:2::10]:80/tcp";
/// DSR keeps the destination port: the backends listen on the VIP's port.
const PORT: u16 = 80;
const BACKENDS: usize = 3;

/// The address family of a test's service, VIP and backends.
#[derive(Clone, Copy)]
enum Family {
    V4,
    V6,
}

impl Family {
    fn service(self) -> &'static str {
        match self {
            Family::V4 => SERVICE,
            Family::V6 => SERVICE6,
        }
    }

    fn vip(self) -> SocketAddr {
        let ip: IpAddr = match self {
            Family::V4 => VIP.into(),
            Family::V6 => VIP6.into(),
        };
        SocketAddr::new(ip, PORT)
    }

    /// Backend `j` of the service, `ADDR:PORT`.
    fn backend(self, tb: &Testbed, j: usize) -> String {
        match self {
            Family::V4 => tb.backend_addr(j, PORT),
            Family::V6 => SocketAddr::new(tb.backend(j).addr6(), PORT).to_string(),
        }
    }
}

/// The DSR testbed with `forwarding`'s service (of `family`) over 3 backends. A tcp health
/// check runs until all are up, then it is turned off so that nothing but requests
/// reaches the node while the connections run (the node's neighbour entries for the
/// backends are xlbd's managed ones; see the test without checks below).
fn dsr_testbed(forwarding: &str, family: Family) -> Testbed {
    let service = family.service();
    let mut tb = Testbed::with_layout(3, BACKENDS, Layout::Dsr).expect("testbed");
    for j in 0..BACKENDS {
        tb.spawn_id_server(j, PORT).expect("id server");
        if forwarding == "dsr-ipip" {
            tb.start_decap(j, "native").expect("xlbd --decap");
        }
    }
    // Native XDP on the node: its XDP_TX frames reach the router's port (a veth) through
    // that veth's XDP path, which needs a program there (see `start_node_port_pass`).
    tb.start_node_port_pass()
        .expect("pass program on the node's bridge port");
    tb.start_xlbd(&["--mode", "native"]).expect("start xlbd");
    tb.xlb_ok(&[
        "service",
        "add",
        service,
        "--forwarding",
        forwarding,
        "--check",
        "tcp",
        "--interval",
        "200ms",
        "--timeout",
        "100ms",
        "--rise",
        "1",
        "--fall",
        "2",
    ])
    .expect("service add");
    for j in 0..BACKENDS {
        tb.xlb_ok(&["backend", "add", service, &family.backend(&tb, j)])
            .expect("backend add");
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let rows = tb.backend_rows(service).expect("backend list");
        if rows.iter().filter(|r| r.state == "up").count() == BACKENDS {
            break;
        }
        assert!(Instant::now() < deadline, "backends not all up: {rows:?}");
        thread::sleep(Duration::from_millis(50));
    }
    tb.xlb_ok(&["service", "set-check", service, "--check", "none"])
        .expect("check off");
    tb
}

/// The xlb node's global counters (packets).
fn counters(tb: &Testbed) -> Value {
    let out = tb.xlb_ok(&["stats", "--json"]).expect("stats");
    let v: Value = serde_json::from_str(&out).expect("stats json");
    v["counters"].clone()
}

fn packets(c: &Value, name: &str) -> u64 {
    c[name]["packets"]
        .as_u64()
        .unwrap_or_else(|| panic!("no counter {name}"))
}

/// 10 connections from each client, 4 lines each: all succeed and stay on one backend,
/// every backend serves some; the node's program forwarded every packet it saw (bar
/// neighbour resolution) and rewrote no reply.
fn balance_past_the_lb(tb: &Testbed, family: Family) -> (Vec<Flow>, u64) {
    let before = counters(tb);
    let flows: Vec<Flow> = tb
        .flows(Proto::Tcp, family.vip(), 10, 4)
        .into_iter()
        .map(|(k, r)| {
            r.unwrap_or_else(|e| {
                panic!(
                    "connection from client {k}: {e:#}\ncounters before {before}\nafter {}",
                    counters(tb)
                )
            })
        })
        .collect();
    assert_eq!(flows.len(), 30);
    assert_sticky(&flows);
    let used: BTreeSet<String> = flows_per_backend(&flows).into_keys().collect();
    let all: BTreeSet<String> = (0..BACKENDS).map(backend_id).collect();
    assert_eq!(used, all, "per backend: {:?}", flows_per_backend(&flows));
    let after = counters(tb);
    let delta = |name: &str| packets(&after, name) - packets(&before, name);
    let (rx, forward, reply, new) = (
        delta("rx"),
        delta("forward"),
        delta("reply"),
        delta("new_flow"),
    );
    xlb_testbed::report(&format!(
        "node saw rx={rx} forward={forward} reply={reply} new_flow={new} for 30 connections"
    ));
    // Each connection sends at least its SYN, its handshake ACK, 4 lines and a FIN.
    assert!(forward >= 30 * 7, "only {forward} requests forwarded");
    assert_eq!(reply, 0, "replies crossed the node");
    // Replies (as many segments as the requests, at least 6 per connection) would have
    // doubled rx. What else the node passes to its kernel is neighbour resolution: a few
    // ARP exchanges, or with IPv6 neighbour discovery and MLD reports, which are IPv6
    // packets the program sees (11-17 in the runs that set this bound).
    assert!(
        rx - forward <= 30,
        "the node saw {rx} packets and forwarded {forward}: replies passed it"
    );
    assert!(new >= 30, "{new} new flows for 30 connections");
    (flows, forward)
}

/// `dsr-l2`: only the MACs change; the service list says so.
fn dsr_l2(name: &str, family: Family) {
    if !require_root(name) {
        return;
    }
    let tb = dsr_testbed("dsr-l2", family);
    let out = tb
        .xlb_ok(&["service", "list", "--json"])
        .expect("service list");
    assert!(out.contains("\"forwarding\": \"dsr-l2\""), "{out}");
    balance_past_the_lb(&tb, family);
}

/// `dsr-ipip`: every request reaches a backend encapsulated and is stripped there.
fn dsr_ipip(name: &str, family: Family) {
    if !require_root(name) {
        return;
    }
    let tb = dsr_testbed("dsr-ipip", family);
    let (_, forward) = balance_past_the_lb(&tb, family);
    let mut stripped = 0;
    for j in 0..BACKENDS {
        let line = tb.stop_decap(j).expect("decap counters");
        xlb_testbed::report(&format!("backend {j}: {line}"));
        assert_eq!(decap_counter(&line, "drop_malformed"), Some(0), "{line}");
        stripped += decap_counter(&line, "stripped").expect("stripped counter");
    }
    // Every encapsulated request reached a backend and was decapsulated there.
    assert!(
        stripped >= forward,
        "{stripped} decapsulated of {forward} sent"
    );
}

#[test]
fn dsr_l2_balances_with_replies_past_the_lb() {
    dsr_l2("dsr_l2_balances_with_replies_past_the_lb", Family::V4);
}

#[test]
fn dsr_l2_balances_with_replies_past_the_lb_v6() {
    dsr_l2("dsr_l2_balances_with_replies_past_the_lb_v6", Family::V6);
}

#[test]
fn dsr_ipip_balances_with_replies_past_the_lb() {
    dsr_ipip("dsr_ipip_balances_with_replies_past_the_lb", Family::V4);
}

#[test]
fn dsr_ipip_balances_with_replies_past_the_lb_v6() {
    dsr_ipip("dsr_ipip_balances_with_replies_past_the_lb_v6", Family::V6);
}

/// The xlb node's neighbour entry for `addr` as `ip neigh show` prints it ("" for none).
fn neigh_line(tb: &Testbed, addr: IpAddr) -> String {
    let node = tb.node().expect("the DSR node");
    let out = node
        .ns
        .exec("ip", &["neigh", "show", "to", &addr.to_string()]);
    out.expect("ip neigh show").trim().to_owned()
}

/// Waits up to 5 s for `addr`'s entry on the node to satisfy `ok`; the last line seen.
fn wait_neigh(tb: &Testbed, addr: IpAddr, ok: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let line = neigh_line(tb, addr);
        if ok(&line) || Instant::now() > deadline {
            return line;
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// A resolved entry that xlbd manages.
fn managed_and_resolved(line: &str) -> bool {
    line.contains("managed") && line.contains("lladdr")
}

/// `dsr-l2` without health checks: nothing on the node talks to the backends (their
/// replies go straight to the router), so their MACs come only from the managed
/// neighbour entries xlbd keeps for them. A static entry an operator made is left as it
/// is, a removed backend's managed entry goes, and so does one an earlier xlbd left for a
/// next hop no backend has. Both families.
#[test]
fn dsr_l2_without_health_checks_resolves_its_backends() {
    if !require_root("dsr_l2_without_health_checks_resolves_its_backends") {
        return;
    }
    let mut tb = Testbed::with_layout(3, BACKENDS, Layout::Dsr).expect("testbed");
    for j in 0..BACKENDS {
        tb.spawn_id_server(j, PORT).expect("id server");
    }
    tb.start_node_port_pass()
        .expect("pass program on the node's bridge port");
    // An entry an earlier xlbd left (its protocol, managed) for a next hop no backend has:
    // the new xlbd adopts and deletes it.
    let leftover: IpAddr = "198.19.200.99".parse().expect("an address");
    {
        let node = tb.node().expect("the DSR node");
        let (addr, dev) = (leftover.to_string(), node.link.peer_if.clone());
        node.ns
            .ip(&[
                "neigh", "replace", &addr, "dev", &dev, "managed", "protocol", "120",
            ])
            .expect("a leftover managed entry");
    }
    assert!(neigh_line(&tb, leftover).contains("managed"));
    tb.start_xlbd(&["--mode", "native"]).expect("start xlbd");
    // Backend 2's IPv4 entry is static, with its real MAC, made before xlbd sees it.
    let b2 = &tb.backend(2);
    let mac = b2
        .ns
        .exec(
            "cat",
            &[&format!("/sys/class/net/{}/address", b2.link.peer_if)],
        )
        .expect("backend 2's MAC");
    let node = tb.node().expect("the DSR node");
    node.ns
        .ip(&[
            "neigh",
            "replace",
            &b2.addr().to_string(),
            "lladdr",
            mac.trim(),
            "dev",
            &node.link.peer_if,
            "nud",
            "permanent",
        ])
        .expect("a static neighbour entry");
    for family in [Family::V4, Family::V6] {
        let service = family.service();
        tb.xlb_ok(&["service", "add", service, "--forwarding", "dsr-l2"])
            .expect("service add");
        for j in 0..BACKENDS {
            tb.xlb_ok(&["backend", "add", service, &family.backend(&tb, j)])
                .expect("backend add");
        }
    }
    for j in 0..BACKENDS {
        let (v4, v6) = (IpAddr::from(tb.backend(j).addr()), tb.backend(j).addr6());
        let line = wait_neigh(&tb, v6, managed_and_resolved);
        assert!(managed_and_resolved(&line), "backend {j} IPv6: {line:?}");
        if j == 2 {
            let line = neigh_line(&tb, v4);
            assert!(
                line.contains("PERMANENT") && !line.contains("managed"),
                "the static entry changed: {line:?}"
            );
        } else {
            let line = wait_neigh(&tb, v4, managed_and_resolved);
            assert!(managed_and_resolved(&line), "backend {j} IPv4: {line:?}");
        }
    }
    let line = wait_neigh(&tb, leftover, str::is_empty);
    assert_eq!(line, "", "the leftover entry of an earlier xlbd");
    let node = tb.node().expect("the DSR node");
    let ours = node
        .ns
        .exec("ip", &["neigh", "show", "proto", "120"])
        .expect("ip neigh show proto 120");
    assert_eq!(
        ours.lines().count(),
        5,
        "xlbd's entries (proto 120):\n{ours}"
    );
    balance_past_the_lb(&tb, Family::V4);
    balance_past_the_lb(&tb, Family::V6);

    // A removed backend's managed entry goes (the other service still needs its IPv6 one).
    let gone = tb.backend(1).addr();
    tb.xlb_ok(&[
        "backend",
        "remove",
        SERVICE,
        &Family::V4.backend(&tb, 1),
        "--force",
    ])
    .expect("backend remove");
    let line = wait_neigh(&tb, gone.into(), str::is_empty);
    assert_eq!(line, "", "the removed backend's entry");
    let line = neigh_line(&tb, tb.backend(1).addr6());
    assert!(
        managed_and_resolved(&line),
        "backend 1 IPv6 still served: {line:?}"
    );
    xlb_testbed::report(
        "dsr-l2 without checks: 5 managed entries resolved, 1 static kept, 1 leftover \
         adopted and deleted, 1 deleted on removal",
    );
}

#[test]
fn bad_forwarding_mode_is_refused_and_changes_nothing() {
    if !require_root("bad_forwarding_mode_is_refused_and_changes_nothing") {
        return;
    }
    let mut tb = Testbed::with_layout(1, 1, Layout::Dsr).expect("testbed");
    tb.start_xlbd(&["--mode", "native"]).expect("start xlbd");
    let out = tb
        .xlb(&["service", "add", SERVICE, "--forwarding", "dsr"])
        .expect("xlb runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(err.contains("not one of nat, dsr-l2, dsr-ipip"), "{err}");
    let list = tb
        .xlb_ok(&["service", "list", "--json"])
        .expect("service list");
    assert!(!list.contains(SERVICE), "{list}");
}

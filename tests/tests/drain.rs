//! Draining and removing backends while flows are open (issue 3, "Flows that survive
//! change"): a drained backend keeps its connections and gets no new ones, `backend list`
//! counts its live flows down to 0 as they close, and only then does `backend remove`
//! (without `--force`) accept it. Idle UDP flows expire. A removed service's flows go
//! with it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use aya::maps::{HashMap as AyaHashMap, Map, MapData};
use lb_common::{FlowKey4, FlowValue, PROTO_TCP};
use xlb_testbed::{
    TcpConn, Testbed, UdpConn, VIP, ask_all, backend_id, report, require_root, tcp_flow,
};

const TCP_SERVICE: &str = "198.18.0.10:80/tcp";
const UDP_SERVICE: &str = "198.18.0.10:53/udp";
const BACKEND_PORT: u16 = 8080;
const BACKENDS: usize = 3;
/// How long a flow count may take to show what the connection table holds.
const COUNT_WAIT: Duration = Duration::from_secs(3);
/// How long a drained backend's flow count may take to fall to 0 once its flows closed.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// 1 client, 3 backends with id servers, xlbd (with `xlbd_args`) and `service` over all
/// three backends.
fn testbed(service: &str, xlbd_args: &[&str]) -> Testbed {
    let mut tb = Testbed::new(1, BACKENDS).expect("testbed");
    for j in 0..BACKENDS {
        tb.spawn_id_server(j, BACKEND_PORT).expect("id server");
    }
    tb.start_xlbd(xlbd_args).expect("start xlbd");
    tb.add_service_with_backends(service, BACKEND_PORT)
        .expect("configure service");
    tb
}

fn vip(port: u16) -> SocketAddr {
    SocketAddr::new(VIP.into(), port)
}

/// Which backend answered with `id`.
fn backend_of(id: &str) -> usize {
    (0..BACKENDS)
        .find(|&j| backend_id(j) == id)
        .unwrap_or_else(|| panic!("answer {id:?} is no backend's id"))
}

/// `n` TCP connections to the VIP from client 0, each asked once, by the backend that
/// answered.
fn open_by_backend(tb: &Testbed, n: usize) -> BTreeMap<usize, Vec<TcpConn>> {
    let mut by_backend: BTreeMap<usize, Vec<TcpConn>> = BTreeMap::new();
    for i in 0..n {
        let mut conn = tb.tcp_conn(0, vip(80)).expect("connect to the VIP");
        let id = conn
            .ask()
            .unwrap_or_else(|e| panic!("connection {i}: {e:#}"));
        by_backend.entry(backend_of(&id)).or_default().push(conn);
    }
    by_backend
}

/// The backend holding the most connections.
fn busiest(by_backend: &BTreeMap<usize, Vec<TcpConn>>) -> usize {
    let (&j, _) = by_backend
        .iter()
        .max_by_key(|(_, conns)| conns.len())
        .expect("some connections");
    j
}

/// Every connection of `by_backend` answers once more, from the same backend.
fn assert_still_served(by_backend: &mut BTreeMap<usize, Vec<TcpConn>>, when: &str) {
    for (&j, conns) in by_backend.iter_mut() {
        let answers = ask_all(conns);
        for (conn, answer) in conns.iter().zip(answers) {
            match answer {
                Ok(id) => assert_eq!(
                    id,
                    backend_id(j),
                    "{when}: connection {} moved from backend-{j}",
                    conn.local()
                ),
                Err(e) => panic!(
                    "{when}: connection {} on backend-{j} broke: {e:#}",
                    conn.local()
                ),
            }
        }
    }
}

/// `n` short connections to the VIP (one line each, then closed); the backend of each.
fn short_connections(tb: &Testbed, n: usize) -> Vec<usize> {
    (0..n)
        .map(|i| {
            let flow = tcp_flow(&tb.client(0).ns, vip(80), 1)
                .unwrap_or_else(|e| panic!("short connection {i}: {e:#}"));
            backend_of(&flow.ids[0])
        })
        .collect()
}

/// What an operator sees of the configuration (no counters): the services, and each
/// backend's address, index and weight.
fn config(tb: &Testbed) -> (String, Vec<(String, u64, u64)>) {
    let services = tb
        .xlb_ok(&["service", "list", "--json"])
        .expect("service list");
    let backends = tb.backend_rows(TCP_SERVICE).expect("backend list");
    let backends = backends
        .into_iter()
        .map(|r| (r.backend, r.index, r.weight))
        .collect();
    (services, backends)
}

#[test]
fn drained_backend_keeps_its_connections_until_they_close() {
    if !require_root("drained_backend_keeps_its_connections_until_they_close") {
        return;
    }
    let started = Instant::now();
    let tb = testbed(TCP_SERVICE, &[]);
    let mut by_backend = open_by_backend(&tb, 30);
    let counts: BTreeMap<usize, usize> = by_backend.iter().map(|(&j, c)| (j, c.len())).collect();
    eprintln!("long-lived connections per backend: {counts:?}");
    for (&j, &n) in &counts {
        let b = tb.backend_addr(j, BACKEND_PORT);
        let flows = tb
            .wait_flows(TCP_SERVICE, Some(&b), COUNT_WAIT, |f| f == n as u64)
            .expect("backend list");
        assert_eq!(flows, n as u64, "live flows of backend-{j} ({b})");
    }

    let drained = busiest(&by_backend);
    let b = tb.backend_addr(drained, BACKEND_PORT);
    let open_on_b = counts[&drained] as u64;
    tb.xlb_ok(&["backend", "drain", TCP_SERVICE, &b])
        .expect("backend drain");
    let row = tb.backend_row(TCP_SERVICE, &b).expect("backend list");
    let row = row.unwrap_or_else(|| panic!("drained backend {b} is not listed"));
    assert_eq!(row.weight, 0, "weight of drained backend {b}");
    let flows = tb
        .wait_flows(TCP_SERVICE, Some(&b), COUNT_WAIT, |f| f == open_on_b)
        .expect("backend list");
    assert_eq!(flows, open_on_b, "live flows of drained backend {b}");

    let landed = short_connections(&tb, 30);
    assert!(
        !landed.contains(&drained),
        "a new connection landed on drained backend-{drained}: {landed:?}"
    );
    assert_still_served(&mut by_backend, "after the drain");

    let before = config(&tb);
    let out = tb
        .xlb(&["backend", "remove", TCP_SERVICE, &b])
        .expect("run xlb");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "`backend remove` of {b} with {open_on_b} live flows succeeded"
    );
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "refusal is not one line: {stderr:?}"
    );
    assert!(
        stderr.contains("flows") && stderr.contains("--force"),
        "refusal names neither live flows nor --force: {stderr:?}"
    );
    assert_eq!(
        config(&tb),
        before,
        "the refused remove changed the configuration"
    );
    assert_still_served(&mut by_backend, "after the refused remove");

    for conn in by_backend.remove(&drained).unwrap_or_default() {
        conn.close();
    }
    let flows = tb
        .wait_flows(TCP_SERVICE, Some(&b), CLOSE_WAIT, |f| f == 0)
        .expect("backend list");
    assert_eq!(
        flows, 0,
        "live flows of drained backend {b} {CLOSE_WAIT:?} after its connections closed"
    );
    tb.xlb_ok(&["backend", "remove", TCP_SERVICE, &b])
        .expect("remove of the drained backend once its flows are 0");
    let row = tb.backend_row(TCP_SERVICE, &b).expect("backend list");
    assert_eq!(row, None, "backend {b} still listed after remove");
    assert_still_served(&mut by_backend, "after removing the drained backend");
    report(&format!(
        "drain: long_lived=30 on_drained={open_on_b} new_on_drained=0 refused_remove=yes \
         flows_after_close=0 elapsed={:.1}s",
        started.elapsed().as_secs_f64()
    ));
}

#[test]
fn forced_remove_moves_new_connections_elsewhere() {
    if !require_root("forced_remove_moves_new_connections_elsewhere") {
        return;
    }
    let tb = testbed(TCP_SERVICE, &[]);
    let mut by_backend = open_by_backend(&tb, 12);
    let removed = busiest(&by_backend);
    let b = tb.backend_addr(removed, BACKEND_PORT);
    let mut on_removed = by_backend.remove(&removed).unwrap_or_default();
    let flows = tb
        .wait_flows(TCP_SERVICE, Some(&b), COUNT_WAIT, |f| f > 0)
        .expect("backend list");
    assert!(
        flows > 0,
        "backend {b} holds connections but lists no live flows"
    );

    tb.xlb_ok(&["backend", "remove", TCP_SERVICE, &b, "--force"])
        .expect("backend remove --force with live flows");
    let row = tb.backend_row(TCP_SERVICE, &b).expect("backend list");
    assert_eq!(row, None, "backend {b} still listed after remove --force");
    let landed = short_connections(&tb, 20);
    assert!(
        !landed.contains(&removed),
        "a new connection landed on removed backend-{removed}: {landed:?}"
    );
    assert_still_served(&mut by_backend, "after remove --force of another backend");
    // Their flows are re-hashed to the remaining backends, which know no such connection.
    let answers = ask_all(&mut on_removed);
    for (conn, answer) in on_removed.iter().zip(&answers) {
        assert!(
            !answer.as_ref().is_ok_and(|id| *id == backend_id(removed)),
            "connection {} still served by force-removed backend-{removed}",
            conn.local()
        );
    }
    let broken = answers.iter().filter(|a| a.is_err()).count();
    report(&format!(
        "forced remove: on_removed={} broken={broken} new_connections=20 new_on_removed=0",
        on_removed.len()
    ));
}

#[test]
fn idle_udp_flows_expire() {
    if !require_root("idle_udp_flows_expire") {
        return;
    }
    let tb = testbed(UDP_SERVICE, &["--udp-timeout", "2", "--gc-interval", "1"]);
    let mut flows: Vec<(UdpConn, String)> = (0..5)
        .map(|i| {
            let mut conn = tb.udp_conn(0, vip(53)).expect("UDP socket");
            let id = conn.ask().unwrap_or_else(|e| panic!("UDP flow {i}: {e:#}"));
            (conn, id)
        })
        .collect();
    let live = tb
        .wait_flows(UDP_SERVICE, None, COUNT_WAIT, |f| f >= 5)
        .expect("backend list");
    assert!(
        (1..=5).contains(&live),
        "live UDP flows right after 5 flows: {live}"
    );
    let started = Instant::now();
    let left = tb
        .wait_flows(UDP_SERVICE, None, Duration::from_secs(8), |f| f == 0)
        .expect("backend list");
    assert_eq!(
        left, 0,
        "live UDP flows 8 s after they went idle (timeout 2 s)"
    );
    let expired_after = started.elapsed();
    // The table did not change, so an expired flow hashes to the same backend again.
    for (conn, id) in &mut flows {
        let again = conn.ask().expect("UDP flow after expiry");
        assert_eq!(
            again,
            *id,
            "UDP flow {} moved after it expired",
            conn.local()
        );
    }
    report(&format!(
        "udp expiry: flows=5 live_after={live} expired_after={:.1}s same_backend_after=5/5",
        expired_after.as_secs_f64()
    ));
}

/// The IPv4 connection table's entries, from its pinned map: (key, value).
fn flow_entries(tb: &Testbed) -> Vec<(FlowKey4, FlowValue)> {
    let map = MapData::from_pin(tb.pin_dir().join("flows4")).expect("pinned flows4");
    let table: AyaHashMap<_, FlowKey4, FlowValue> =
        AyaHashMap::try_from(Map::LruHashMap(map)).expect("an LRU hash map");
    table.iter().map(|e| e.expect("an entry")).collect()
}

/// Removing a service ends the balancing of its open connections (the connection table is
/// looked up before the services map, so its entries would go on forwarding until they
/// expire): its entries go with it, those of other services stay.
#[test]
fn service_remove_deletes_its_flows() {
    if !require_root("service_remove_deletes_its_flows") {
        return;
    }
    let tb = testbed(TCP_SERVICE, &[]);
    tb.add_service_with_backends(UDP_SERVICE, BACKEND_PORT)
        .expect("the UDP service");
    let mut conns: Vec<TcpConn> = open_by_backend(&tb, 6).into_values().flatten().collect();
    let mut udp = tb.udp_conn(0, vip(53)).expect("UDP socket");
    let udp_id = udp.ask().expect("the UDP flow's first answer");
    let tcp_entries = |entries: &[(FlowKey4, FlowValue)]| {
        entries.iter().filter(|(k, _)| k.proto == PROTO_TCP).count()
    };
    let before = flow_entries(&tb);
    assert!(
        tcp_entries(&before) >= 12,
        "6 connections, 2 entries each: {} TCP entries",
        tcp_entries(&before)
    );

    tb.xlb_ok(&["service", "remove", TCP_SERVICE])
        .expect("service remove");
    let after = flow_entries(&tb);
    assert_eq!(tcp_entries(&after), 0, "TCP entries left after the removal");
    assert_eq!(
        after.len(),
        before.len() - tcp_entries(&before),
        "the UDP service's entries must stay"
    );
    // The connections' next packets pass to the LB's kernel, which does not own the VIP:
    // no backend answers them any more.
    let answers = ask_all(&mut conns);
    let answered = answers.iter().filter(|a| a.is_ok()).count();
    assert_eq!(
        answered, 0,
        "connections of the removed service still answered"
    );
    assert_eq!(
        udp.ask().expect("the UDP flow after the TCP service went"),
        udp_id,
        "the UDP flow moved"
    );
    report(&format!(
        "service remove: tcp_entries_before={} tcp_entries_after=0 answered_after=0/{} \
         udp_entries_kept={}",
        tcp_entries(&before),
        conns.len(),
        after.len()
    ));
}

//! Health checks (issue 10): 3 backends checked every 200 ms with rise 2 and fall 2. When
//! one backend's server stops (tcp, http) or its gRPC health service says NOT_SERVING
//! (grpc), then after interval x fall plus one interval 100 new connections all succeed
//! and none reaches it; when it comes back, after rise checks it gets new connections
//! again. A backend whose check fails while its server still answers keeps its established
//! connections; when every backend is down, the service fails open.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

use grpc_demo::{ClientConfig, Mode, ServerHandle};
use xlb_testbed::{
    BackendRow, IdServer, TcpConn, Testbed, VIP, VIP6, ask_all, backend_id, report, require_root,
    tcp_flow,
};

const BACKENDS: usize = 3;
const INTERVAL: Duration = Duration::from_millis(200);
const RISE: u32 = 2;
const FALL: u32 = 2;
/// The backend taken away.
const VICTIM: usize = 1;
/// New connections counted after each change.
const NEW: usize = 100;
/// How long the first verdicts may take to come (a few checks, the daemon's start).
const SETTLE: Duration = Duration::from_secs(5);

/// `--check <kind>` with this file's interval, timeout, rise and fall, then `extra`.
fn check_args<'a>(kind: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "--check",
        kind,
        "--interval",
        "200ms",
        "--timeout",
        "100ms",
        "--rise",
        "2",
        "--fall",
        "2",
    ];
    args.extend_from_slice(extra);
    args
}

/// `xlb service add <service> <check args>` and every backend of the testbed on `port`.
fn add_checked_service(tb: &Testbed, service: &str, port: u16, check: &[&str]) {
    let mut args = vec!["service", "add", service];
    args.extend_from_slice(check);
    tb.xlb_ok(&args).expect("service add with a check");
    for j in 0..BACKENDS {
        tb.xlb_ok(&[
            "backend",
            "add",
            service,
            &backend_addr(tb, service, j, port),
        ])
        .expect("backend add");
    }
}

/// `ADDR:PORT` of backend `j` in the address family of `service`.
fn backend_addr(tb: &Testbed, service: &str, j: usize, port: u16) -> String {
    if service.starts_with('[') {
        format!("[{}]:{port}", tb.backend(j).addr6())
    } else {
        tb.backend_addr(j, port)
    }
}

/// Reads `backend list` until `done` holds of its rows or `timeout` passed; the last rows.
fn wait_rows(
    tb: &Testbed,
    service: &str,
    timeout: Duration,
    done: impl Fn(&[BackendRow]) -> bool,
) -> Vec<BackendRow> {
    let deadline = Instant::now() + timeout;
    loop {
        let rows = tb.backend_rows(service).expect("backend list");
        if done(&rows) || Instant::now() >= deadline {
            return rows;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

fn states(rows: &[BackendRow]) -> Vec<&str> {
    rows.iter().map(|r| r.state.as_str()).collect()
}

/// Waits until every backend of `service` is up.
fn wait_all_up(tb: &Testbed, service: &str) {
    let rows = wait_rows(tb, service, SETTLE, |rows| {
        rows.iter().all(|r| r.state == "up")
    });
    assert_eq!(
        states(&rows),
        ["up"; BACKENDS],
        "backends not all up {SETTLE:?} after the check was set"
    );
}

/// The state `backend list` shows for backend `j` of `service` on `port`.
fn state_of(tb: &Testbed, service: &str, j: usize, port: u16) -> String {
    let b = backend_addr(tb, service, j, port);
    let row = tb.backend_row(service, &b).expect("backend list");
    row.unwrap_or_else(|| panic!("backend {b} not listed"))
        .state
}

fn backend_of(id: &str) -> usize {
    (0..BACKENDS)
        .find(|&j| backend_id(j) == id)
        .unwrap_or_else(|| panic!("answer {id:?} is no backend's id"))
}

/// `n` new TCP connections to `vip` from client 0, one line each: how many reached each
/// backend, and how many failed.
fn tcp_connections(tb: &Testbed, vip: SocketAddr, n: usize) -> (BTreeMap<usize, usize>, usize) {
    let mut by_backend = BTreeMap::new();
    let mut failed = 0;
    for _ in 0..n {
        match tcp_flow(&tb.client(0).ns, vip, 1) {
            Ok(flow) => *by_backend.entry(backend_of(&flow.ids[0])).or_insert(0) += 1,
            Err(_) => failed += 1,
        }
    }
    (by_backend, failed)
}

/// `n` new gRPC connections (one unary call each) to `vip` from client 0.
fn grpc_connections(tb: &Testbed, vip: SocketAddr, n: usize) -> (BTreeMap<usize, usize>, usize) {
    let mut by_backend = BTreeMap::new();
    let mut failed = 0;
    let cfg = ClientConfig {
        addr: vip,
        mode: Mode::Unary,
        calls: 1,
        source_port: None,
    };
    for _ in 0..n {
        match tb.grpc_client(0, &cfg) {
            Ok(r) if r.errors == 0 && r.replies() == 1 => {
                for id in r.per_backend.keys() {
                    *by_backend.entry(backend_of(id)).or_insert(0) += 1;
                }
            }
            _ => failed += 1,
        }
    }
    (by_backend, failed)
}

/// The scenario of every check kind: all up; `take_away` the victim; after interval x fall
/// plus one interval, `NEW` new connections (made by `connect`) all succeed and none reaches
/// it; `bring_back`; after rise checks (plus one interval) it is up and gets new connections.
fn away_and_back(
    kind: &str,
    tb: &Testbed,
    service: &str,
    port: u16,
    connect: impl Fn(&Testbed) -> (BTreeMap<usize, usize>, usize),
    take_away: impl FnOnce(),
    bring_back: impl FnOnce(),
) {
    wait_all_up(tb, service);
    let (before, failed) = connect(tb);
    assert_eq!(
        failed, 0,
        "{kind}: connections failed with every backend up"
    );
    assert!(
        before.get(&VICTIM).is_some_and(|&n| n > 0),
        "{kind}: backend-{VICTIM} got none of {NEW} connections while up: {before:?}"
    );

    take_away();
    let stopped = Instant::now();
    let bound = INTERVAL * FALL + INTERVAL;
    let down_after = wait_state(tb, service, port, "down", bound);
    thread::sleep(bound.saturating_sub(stopped.elapsed()));
    let (during, failed) = connect(tb);
    let noticed = state_of(tb, service, VICTIM, port);
    assert_eq!(
        (failed, during.get(&VICTIM).copied().unwrap_or(0)),
        (0, 0),
        "{kind}: {NEW} new connections {:?} after backend-{VICTIM} was taken away: \
         (failed, reached it); by backend: {during:?}",
        INTERVAL * FALL + INTERVAL
    );
    assert_eq!(noticed, "down", "{kind}: state of backend-{VICTIM}");

    bring_back();
    let back = Instant::now();
    let bound = INTERVAL * RISE + INTERVAL;
    let up_after = wait_state(tb, service, port, "up", bound);
    thread::sleep(bound.saturating_sub(back.elapsed()));
    let state = state_of(tb, service, VICTIM, port);
    let (after, failed) = connect(tb);
    assert_eq!(state, "up", "{kind}: backend-{VICTIM} after rise checks");
    assert_eq!(
        failed, 0,
        "{kind}: connections failed after backend-{VICTIM} came back"
    );
    assert!(
        after.get(&VICTIM).is_some_and(|&n| n > 0),
        "{kind}: backend-{VICTIM} got none of {NEW} new connections {:?} after it came back: {after:?}",
        back.elapsed()
    );
    report(&format!(
        "health {kind}: before={before:?} while_down={during:?} failed=0 after_back={after:?} \
         down_after={down_after} up_after={up_after}"
    ));
}

/// Polls the victim's state until it is `want` or `bound` passed since now; how long it
/// took, as text (`>bound` when it did not come).
fn wait_state(tb: &Testbed, service: &str, port: u16, want: &str, bound: Duration) -> String {
    let start = Instant::now();
    while start.elapsed() < bound {
        if state_of(tb, service, VICTIM, port) == want {
            return format!("{}ms", start.elapsed().as_millis());
        }
        thread::sleep(Duration::from_millis(20));
    }
    format!(">{}ms", bound.as_millis())
}

/// Id servers on every backend, xlbd, `service` checked with `check` (then `settled`, the
/// caller's own look at the starting state); then the victim's server is stopped and started
/// again, as [`away_and_back`] checks. Returns the servers (dropped first) and the testbed,
/// for the caller's checks after.
fn id_server_away_and_back(
    kind: &str,
    service: &str,
    vip: SocketAddr,
    check: &[&str],
    settled: impl FnOnce(&Testbed),
) -> (Vec<IdServer>, Testbed) {
    let mut tb = Testbed::new(1, BACKENDS).expect("testbed");
    let mut servers: Vec<Option<IdServer>> = (0..BACKENDS)
        .map(|j| Some(tb.start_id_server(j, 8080).expect("id server")))
        .collect();
    tb.start_xlbd(&[]).expect("start xlbd");
    add_checked_service(&tb, service, 8080, check);
    settled(&tb);
    let victim = servers[VICTIM].take().expect("victim's server");
    let tb_ref = &tb;
    let mut restarted = None;
    away_and_back(
        kind,
        tb_ref,
        service,
        8080,
        |tb| tcp_connections(tb, vip, NEW),
        || victim.stop(),
        || restarted = Some(tb_ref.start_id_server(VICTIM, 8080).expect("restart")),
    );
    let servers = servers.into_iter().flatten().chain(restarted).collect();
    (servers, tb)
}

#[test]
fn tcp_check_takes_a_dead_backend_out_and_back() {
    if !require_root("tcp_check_takes_a_dead_backend_out_and_back") {
        return;
    }
    const SERVICE: &str = "198.18.0.10:80/tcp";
    let vip = SocketAddr::new(VIP.into(), 80);
    let check = check_args("tcp", &[]);
    let (servers, tb) = id_server_away_and_back("tcp", SERVICE, vip, &check, |_| {});
    // The log has one line for each change of the victim's verdict.
    let log = std::fs::read_to_string(tb.xlbd_log()).unwrap_or_default();
    let b = tb.backend_addr(VICTIM, 8080);
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(&format!("backend {b} of {SERVICE} is ")))
        .collect();
    eprintln!("{}", lines.join("\n"));
    assert_eq!(lines.len(), 3, "verdict lines of {b}: {lines:#?}");
    assert!(lines[1].contains("is down (was up)"), "{}", lines[1]);
    assert!(lines[2].contains("is up (was down)"), "{}", lines[2]);
    let text = tb
        .xlb_ok(&["backend", "list", SERVICE])
        .expect("backend list");
    assert!(
        text.lines().next().unwrap_or("").contains("STATE"),
        "{text}"
    );
    eprintln!(
        "{text}{}",
        tb.xlb_ok(&["service", "list"]).expect("service list")
    );
    drop(servers);
}

#[test]
fn http_check_takes_a_dead_backend_out_and_back() {
    if !require_root("http_check_takes_a_dead_backend_out_and_back") {
        return;
    }
    const SERVICE: &str = "198.18.0.10:80/tcp";
    let check = check_args(
        "http",
        &["--http-path", "/healthz", "--http-status", "200-299"],
    );
    let vip = SocketAddr::new(VIP.into(), 80);
    id_server_away_and_back("http", SERVICE, vip, &check, |tb| {
        let rows = wait_rows(tb, SERVICE, SETTLE, |rows| {
            rows.iter().all(|r| r.state == "up")
        });
        assert_eq!(states(&rows), ["up"; BACKENDS]);
    });
}

/// The gRPC servers stop (field order) before the testbed goes.
struct Grpc {
    servers: Vec<ServerHandle>,
    tb: Testbed,
}

#[test]
fn grpc_check_takes_a_not_serving_backend_out_and_back() {
    if !require_root("grpc_check_takes_a_not_serving_backend_out_and_back") {
        return;
    }
    const SERVICE: &str = "198.18.0.10:50051/tcp";
    const PORT: u16 = 50051;
    let mut tb = Testbed::new(1, BACKENDS).expect("testbed");
    let servers = tb.spawn_grpc_servers(PORT).expect("gRPC servers");
    tb.start_xlbd(&[]).expect("start xlbd");
    let g = Grpc { servers, tb };
    let check = check_args("grpc", &["--grpc-service", grpc_demo::SERVICE]);
    add_checked_service(&g.tb, SERVICE, PORT, &check);
    let vip = SocketAddr::new(VIP.into(), PORT);
    let victim = &g.servers[VICTIM];
    away_and_back(
        "grpc",
        &g.tb,
        SERVICE,
        PORT,
        |tb| grpc_connections(tb, vip, NEW),
        || victim.set_serving(false).expect("set NOT_SERVING"),
        || victim.set_serving(true).expect("set SERVING"),
    );
    let rows = g.tb.backend_rows(SERVICE).expect("backend list");
    assert!(rows.iter().all(|r| r.state == "up"), "{rows:?}");
}

/// Established connections to a backend whose check fails (its check port closes) while
/// its server still answers keep working; new ones avoid it. Then every check fails: the
/// service fails open, and new connections reach every backend.
#[test]
fn a_backend_that_fails_its_check_keeps_its_connections() {
    if !require_root("a_backend_that_fails_its_check_keeps_its_connections") {
        return;
    }
    const SERVICE: &str = "198.18.0.10:80/tcp";
    const CHECK_PORT: u16 = 9090;
    let mut tb = Testbed::new(1, BACKENDS).expect("testbed");
    for j in 0..BACKENDS {
        tb.spawn_id_server(j, 8080).expect("data server");
    }
    let mut checks: Vec<Option<IdServer>> = (0..BACKENDS)
        .map(|j| Some(tb.start_id_server(j, CHECK_PORT).expect("check server")))
        .collect();
    tb.start_xlbd(&[]).expect("start xlbd");
    add_checked_service(
        &tb,
        SERVICE,
        8080,
        &check_args("tcp", &["--check-port", "9090"]),
    );
    wait_all_up(&tb, SERVICE);
    let vip = SocketAddr::new(VIP.into(), 80);
    let mut by_backend: BTreeMap<usize, Vec<TcpConn>> = BTreeMap::new();
    for i in 0..30 {
        let mut conn = tb.tcp_conn(0, vip).expect("connect to the VIP");
        let id = conn
            .ask()
            .unwrap_or_else(|e| panic!("connection {i}: {e:#}"));
        by_backend.entry(backend_of(&id)).or_default().push(conn);
    }
    let (&sick, _) = by_backend
        .iter()
        .max_by_key(|(_, c)| c.len())
        .expect("connections");
    let on_sick = by_backend[&sick].len();
    checks[sick].take().expect("check server").stop();
    let b = tb.backend_addr(sick, 8080);
    let rows = wait_rows(&tb, SERVICE, SETTLE, |rows| {
        rows.iter().any(|r| r.backend == b && r.state == "down")
    });
    let row = rows
        .iter()
        .find(|r| r.backend == b)
        .expect("sick backend listed");
    assert_eq!(row.state, "down", "backend {b} after its check port closed");
    assert!(
        row.flows > 0,
        "down backend {b} lists no live flows: {row:?}"
    );
    let json = tb
        .xlb_ok(&["backend", "list", SERVICE, "--json"])
        .expect("backend list --json");
    let v: serde_json::Value = serde_json::from_str(&json).expect("JSON");
    let sick_json = v["backends"]
        .as_array()
        .and_then(|a| a.iter().find(|r| r["backend"] == b.as_str()))
        .expect("sick backend in JSON");
    assert_eq!(sick_json["last_check"]["ok"], false, "{sick_json}");
    assert!(
        sick_json["last_check"]["detail"]
            .as_str()
            .is_some_and(|d| d.starts_with("connect: ")),
        "{sick_json}"
    );

    for (&j, conns) in by_backend.iter_mut() {
        let answers = ask_all(conns);
        for (conn, answer) in conns.iter().zip(answers) {
            match answer {
                Ok(id) => assert_eq!(id, backend_id(j), "connection {} moved", conn.local()),
                Err(e) => panic!(
                    "connection {} on backend-{j} (down: {}) broke: {e:#}",
                    conn.local(),
                    j == sick
                ),
            }
        }
    }
    let (new, failed) = tcp_connections(&tb, vip, 30);
    assert_eq!(failed, 0, "new connections failed: {new:?}");
    assert!(
        !new.contains_key(&sick),
        "a new connection reached down backend-{sick}: {new:?}"
    );

    // Every check fails: fail-open (the default) keeps every backend in the table.
    for c in checks.iter_mut() {
        if let Some(c) = c.take() {
            c.stop();
        }
    }
    let rows = wait_rows(&tb, SERVICE, SETTLE, |rows| {
        rows.iter().all(|r| r.state == "down")
    });
    assert_eq!(states(&rows), ["down"; BACKENDS]);
    let (open, failed) = tcp_connections(&tb, vip, 60);
    assert_eq!(
        failed, 0,
        "connections failed with every backend down (fail-open): {open:?}"
    );
    assert_eq!(
        open.len(),
        BACKENDS,
        "fail-open did not reach every backend: {open:?}"
    );
    let log = std::fs::read_to_string(tb.xlbd_log()).unwrap_or_default();
    assert!(log.contains("failing open"), "no fail-open line in the log");

    // --all-down drop: the table empties, so a new connection is dropped (and counted),
    // while the established ones (in the connection table) still answer.
    let drops = |tb: &Testbed| -> u64 {
        let out = tb.xlb_ok(&["stats", "--json"]).expect("stats");
        let v: serde_json::Value = serde_json::from_str(&out).expect("stats JSON");
        v["counters"]["drop_no_backend"]["packets"]
            .as_u64()
            .expect("drop_no_backend counter")
    };
    let dropped_before = drops(&tb);
    let mut args = vec!["service", "set-check", SERVICE];
    args.extend(check_args(
        "tcp",
        &["--check-port", "9090", "--all-down", "drop"],
    ));
    tb.xlb_ok(&args).expect("set-check --all-down drop");
    assert_eq!(
        states(&tb.backend_rows(SERVICE).expect("backend list")),
        ["down"; BACKENDS],
        "verdicts after a set-check of the same kind"
    );
    let refused = tb.tcp_conn(0, vip);
    assert!(
        refused.is_err(),
        "a new connection got through with every backend down and --all-down drop"
    );
    let dropped = drops(&tb) - dropped_before;
    assert!(
        dropped > 0,
        "drop_no_backend did not count the dropped SYNs"
    );
    for (&j, conns) in by_backend.iter_mut() {
        for answer in ask_all(conns) {
            let id = answer.unwrap_or_else(|e| panic!("established connection broke: {e:#}"));
            assert_eq!(id, backend_id(j));
        }
    }
    report(&format!(
        "health established: on_down_backend={on_sick} still_served=all new_on_down=0 \
         all_down_fail_open={open:?} all_down_drop_dropped_syns={dropped}"
    ));
}

/// A down verdict is saved: an xlbd killed and started again keeps the dead backend out of
/// the table from its first moment, and takes it back after rise checks pass.
#[test]
fn a_down_verdict_survives_an_xlbd_restart() {
    if !require_root("a_down_verdict_survives_an_xlbd_restart") {
        return;
    }
    const SERVICE: &str = "198.18.0.10:80/tcp";
    let mut tb = Testbed::new(1, BACKENDS).expect("testbed");
    let mut servers: Vec<Option<IdServer>> = (0..BACKENDS)
        .map(|j| Some(tb.start_id_server(j, 8080).expect("id server")))
        .collect();
    tb.start_xlbd(&[]).expect("start xlbd");
    // Three failures 1 s apart: a new xlbd needs 2 s to find the victim down by itself.
    let check = [
        "--check",
        "tcp",
        "--interval",
        "1s",
        "--timeout",
        "500ms",
        "--rise",
        "1",
        "--fall",
        "3",
    ];
    add_checked_service(&tb, SERVICE, 8080, &check);
    wait_all_up(&tb, SERVICE);
    servers[VICTIM].take().expect("victim's server").stop();
    let b = tb.backend_addr(VICTIM, 8080);
    let rows = wait_rows(&tb, SERVICE, SETTLE, |rows| {
        rows.iter().any(|r| r.backend == b && r.state == "down")
    });
    assert_eq!(rows[VICTIM].state, "down");

    tb.kill_xlbd(libc::SIGKILL).expect("kill -9 xlbd");
    let restarted = Instant::now();
    tb.start_xlbd(&[]).expect("restart xlbd");
    assert_eq!(
        state_of(&tb, SERVICE, VICTIM, 8080),
        "down",
        "backend {b} right after the restart"
    );
    let log = std::fs::read_to_string(tb.xlbd_log()).unwrap_or_default();
    assert!(
        restarted.elapsed() < Duration::from_secs(2) && !log.contains("is down (was"),
        "the new xlbd found the victim down by itself ({:?} after the restart), \
         not from the saved state",
        restarted.elapsed()
    );
    let vip = SocketAddr::new(VIP.into(), 80);
    let (new, failed) = tcp_connections(&tb, vip, 30);
    assert_eq!(
        (failed, new.get(&VICTIM).copied().unwrap_or(0)),
        (0, 0),
        "new connections after the restart (failed, on the down backend): {new:?}"
    );
    servers[VICTIM] = Some(
        tb.start_id_server(VICTIM, 8080)
            .expect("restart the server"),
    );
    wait_all_up(&tb, SERVICE);
    let (after, failed) = tcp_connections(&tb, vip, NEW);
    assert_eq!(failed, 0);
    assert!(
        after.get(&VICTIM).is_some_and(|&n| n > 0),
        "backend-{VICTIM} got no new connection once up again: {after:?}"
    );
    report(&format!(
        "health restart: down_after_restart=yes new_on_down=0/30 after_up={after:?}"
    ));
}

/// The same over IPv6, with an http check: the probe goes to `[ADDR]:PORT` and its Host
/// header is that.
#[test]
fn http_check_over_ipv6_takes_a_dead_backend_out_and_back() {
    if !require_root("http_check_over_ipv6_takes_a_dead_backend_out_and_back") {
        return;
    }
    const SERVICE: &str = "[2001:2::10]:80/tcp";
    let vip = SocketAddr::new(VIP6.into(), 80);
    let check = check_args("http", &[]);
    id_server_away_and_back("http-ipv6", SERVICE, vip, &check, |_| {});
}

//! Issue 9: the data path outlives the daemon. 50 TCP connections exchange a line every
//! 100 ms while xlbd is killed with SIGKILL, stays away for 3 s, and a new xlbd adopts the
//! pinned maps and links and the saved state; the same across an upgrade to a different
//! build of the program; and a second xlbd on the same pin dir is refused.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use xlb_testbed::{Proto, TcpConn, Testbed, VIP, ask_all, flows_per_backend, report, require_root};

const SERVICE: &str = "198.18.0.10:80/tcp";
const PORT: u16 = 8080;
const CONNS: usize = 50;
/// How long no daemon runs.
const OUTAGE: Duration = Duration::from_secs(3);

fn vip() -> SocketAddr {
    SocketAddr::new(VIP.into(), 80)
}

fn testbed() -> Testbed {
    let mut tb = Testbed::new(3, 3).expect("testbed");
    for j in 0..3 {
        tb.spawn_id_server(j, PORT).expect("id server");
    }
    tb.start_xlbd(&[]).expect("start xlbd");
    tb.add_service_with_backends(SERVICE, PORT)
        .expect("configure service");
    tb
}

/// `service list` and `backend list` as JSON, without the data-path counters (they move
/// with the traffic): what must be the same before and after a restart.
fn control_state(tb: &Testbed) -> (Value, Value) {
    let json = |args: &[&str]| -> Value {
        serde_json::from_str(&tb.xlb_ok(args).expect("xlb list")).expect("JSON")
    };
    let services = json(&["service", "list", "--json"]);
    let mut backends = json(&["backend", "list", SERVICE, "--json"]);
    for b in backends["backends"].as_array_mut().expect("backends") {
        let b = b.as_object_mut().expect("a backend is an object");
        for counter in ["packets", "bytes", "flows", "new_flows"] {
            b.remove(counter);
        }
    }
    (services, backends)
}

/// What the talkers saw: exchanges, and every failure or backend change.
#[derive(Default)]
struct Tally {
    exchanges: usize,
    problems: Vec<String>,
}

/// Every connection asks its backend for its id every 100 ms until `stop`; each answer
/// must come, and name the backend the connection started on.
fn talk(mut conns: Vec<TcpConn>, first: Vec<String>, stop: Arc<AtomicBool>) -> Tally {
    let mut tally = Tally::default();
    // Bounded: at most 60 s of rounds even if `stop` never comes.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        for (i, answer) in ask_all(&mut conns).into_iter().enumerate() {
            match answer {
                Ok(id) if id == first[i] => tally.exchanges += 1,
                Ok(id) => tally
                    .problems
                    .push(format!("connection {i} moved from {} to {id}", first[i])),
                Err(e) => tally.problems.push(format!("connection {i}: {e:#}")),
            }
        }
        thread::sleep(Duration::from_millis(100));
    }
    tally
}

/// New connections from every client, all of which must be served by one backend each.
fn new_connections(tb: &Testbed, when: &str) -> usize {
    let flows: Vec<_> = tb
        .flows(Proto::Tcp, vip(), 4, 2)
        .into_iter()
        .map(|(k, r)| r.unwrap_or_else(|e| panic!("new connection {when} from client {k}: {e:#}")))
        .collect();
    assert!(
        flows.iter().all(|f| f.backend().is_some()),
        "{when}: a new connection switched backends"
    );
    let spread = flows_per_backend(&flows);
    report(&format!("new connections {when}: {spread:?}"));
    flows.len()
}

/// Opens the connections, kills xlbd with SIGKILL while they talk, waits [`OUTAGE`],
/// starts a new xlbd with `restart_args`, and checks that nothing broke or moved.
fn survive_a_dead_daemon(restart_args: &[&str]) -> Testbed {
    let mut tb = testbed();
    let mut conns = Vec::new();
    for i in 0..CONNS {
        conns.push(tb.tcp_conn(i % 3, vip()).expect("connection"));
    }
    let first: Vec<String> = ask_all(&mut conns)
        .into_iter()
        .map(|r| r.expect("first answer"))
        .collect();
    let used: std::collections::BTreeSet<&String> = first.iter().collect();
    assert_eq!(used.len(), 3, "50 connections should reach all 3 backends");
    let before = control_state(&tb);

    let stop = Arc::new(AtomicBool::new(false));
    let talker = {
        let stop = stop.clone();
        thread::spawn(move || talk(conns, first, stop))
    };
    thread::sleep(Duration::from_millis(500));
    tb.kill_xlbd(libc::SIGKILL).expect("kill -9 xlbd");
    let killed = Instant::now();
    // No daemon: the pinned program and maps balance new connections as before.
    let during = new_connections(&tb, "while no xlbd runs");
    thread::sleep(OUTAGE.saturating_sub(killed.elapsed()));
    tb.start_xlbd(restart_args).expect("restart xlbd");
    let away = killed.elapsed();
    let after_state = control_state(&tb);
    let after = new_connections(&tb, "after the restart");
    thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let tally = talker.join().expect("talker");

    report(&format!(
        "restart ({restart_args:?}): no xlbd for {:.1} s; {} exchanges on {CONNS} connections, {} problems; {during} new connections during, {after} after",
        away.as_secs_f64(),
        tally.exchanges,
        tally.problems.len()
    ));
    assert!(tally.problems.is_empty(), "{}", tally.problems.join("\n"));
    assert!(
        tally.exchanges >= CONNS * 20,
        "only {} exchanges",
        tally.exchanges
    );
    assert_eq!(
        after_state, before,
        "the control state changed across the restart"
    );
    let log = std::fs::read_to_string(tb.xlbd_log()).unwrap_or_default();
    assert!(
        log.contains("adopted the data path"),
        "{}",
        tb.xlbd_log_tail(20)
    );
    tb
}

#[test]
fn kill_9_of_xlbd_breaks_no_connection() {
    if !require_root("kill_9_of_xlbd_breaks_no_connection") {
        return;
    }
    survive_a_dead_daemon(&[]);
}

/// The program attached to `iface` in the LB namespace: `(id, tag)` from `ip -d link`.
fn attached_program(tb: &Testbed, iface: &str) -> (String, String) {
    let out = tb
        .lb()
        .exec("ip", &["-d", "link", "show", "dev", iface])
        .expect("ip link");
    let word_after = |w: &str| {
        let mut it = out.split_whitespace().skip_while(|x| *x != w);
        it.nth(1).map(str::to_string)
    };
    let id = word_after("id").unwrap_or_else(|| panic!("no XDP program on {iface}: {out}"));
    let tag = word_after("tag").unwrap_or_else(|| panic!("no program tag on {iface}: {out}"));
    (id, tag)
}

#[test]
fn an_upgrade_to_another_build_breaks_no_connection() {
    if !require_root("an_upgrade_to_another_build_breaks_no_connection") {
        return;
    }
    let Some(object) = std::env::var_os("XLB_UPGRADE_OBJECT") else {
        report(
            "SKIPPED: an_upgrade_to_another_build_breaks_no_connection needs \
             XLB_UPGRADE_OBJECT (the variant build `cargo xtask test` makes)",
        );
        return;
    };
    let object = object.to_string_lossy().into_owned();
    // The build in xlbd, then the variant through `--object`: same maps, other code.
    let iface_of = |tb: &Testbed| tb.lb_ifaces()[0].clone();
    let mut tb = testbed();
    let old = attached_program(&tb, &iface_of(&tb));
    tb.kill_xlbd(libc::SIGTERM).expect("stop xlbd");
    // Stopped with SIGTERM: the data path stays; start the upgrade over it.
    assert_eq!(attached_program(&tb, &iface_of(&tb)), old);
    tb.start_xlbd(&["--object", &object])
        .expect("start the upgrade");
    let new = attached_program(&tb, &iface_of(&tb));
    report(&format!("upgrade: program id/tag {old:?} -> {new:?}"));
    assert_ne!(new.0, old.0, "the program was not replaced");
    assert_ne!(new.1, old.1, "the variant build has the same instructions");
    // And the real thing: connections talking while the daemon dies and the variant
    // build takes over through the pinned links.
    drop(tb);
    let tb = survive_a_dead_daemon(&["--object", &object]);
    let upgraded = attached_program(&tb, &iface_of(&tb));
    assert_eq!(upgraded.1, new.1, "not the variant build after the restart");
}

#[test]
fn a_second_xlbd_on_the_pin_dir_is_refused_and_the_first_keeps_working() {
    if !require_root("a_second_xlbd_on_the_pin_dir_is_refused_and_the_first_keeps_working") {
        return;
    }
    let tb = testbed();
    let mut conn = tb.tcp_conn(0, vip()).expect("connection");
    let id = conn.ask().expect("answer");
    let before = control_state(&tb);
    // Another socket and state dir, the same pin dir: the lock refuses it.
    let xlbd = xlb_testbed::bin_path("xlbd").unwrap();
    let second = tb
        .lb()
        .cmd(&xlbd.to_string_lossy())
        .args([
            "--iface",
            &tb.lb_ifaces()[0],
            "--socket",
            "/tmp/xlb-second.sock",
        ])
        .arg("--state-dir")
        .arg(tb.state_dir().with_extension("second"))
        .arg("--pin-dir")
        .arg(tb.pin_dir())
        .output();
    let out = second.expect("run a second xlbd");
    let stderr = String::from_utf8_lossy(&out.stderr);
    report(&format!("second xlbd: {}", stderr.trim()));
    assert!(!out.status.success());
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("another xlbd holds"), "{stderr}");
    let _ = std::fs::remove_dir_all(tb.state_dir().with_extension("second"));
    assert_eq!(conn.ask().expect("answer after"), id);
    assert_eq!(control_state(&tb), before);
}

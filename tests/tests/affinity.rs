//! Session affinity through xlbd (issue 10): with `client-ip`, every connection of one
//! client address lands on one backend; after the timeout passes without a connection the
//! next may move (it is only required to work); a backend that leaves the table releases
//! its clients; `none` spreads one client's connections again.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use xlb_testbed::{Proto, Testbed, VIP, backend_id, require_root};

const BACKEND_PORT: u16 = 8080;
const SERVICE: &str = "198.18.0.10:80/tcp";
/// The same backends without affinity, as a control.
const PLAIN: &str = "198.18.0.10:81/tcp";
const TIMEOUT_S: u64 = 2;
const CONNECTIONS: usize = 20;

/// 2 clients, 3 backends with id servers; `SERVICE` with `client-ip` affinity of
/// `TIMEOUT_S`, `PLAIN` without, both over all backends.
fn affinity_testbed() -> Testbed {
    let mut tb = Testbed::new(2, 3).expect("testbed");
    for j in 0..3 {
        tb.spawn_id_server(j, BACKEND_PORT).expect("id server");
    }
    tb.start_xlbd(&[]).expect("start xlbd");
    let timeout = TIMEOUT_S.to_string();
    tb.xlb_ok(&[
        "service",
        "add",
        SERVICE,
        "--affinity",
        "client-ip",
        "--affinity-timeout",
        &timeout,
    ])
    .expect("service add with affinity");
    tb.xlb_ok(&["service", "add", PLAIN]).expect("service add");
    for j in 0..3 {
        let backend = format!("{}:{BACKEND_PORT}", tb.backend(j).addr());
        for s in [SERVICE, PLAIN] {
            tb.xlb_ok(&["backend", "add", s, &backend])
                .expect("backend add");
        }
    }
    tb
}

/// `CONNECTIONS` connections from client `k` to `port`, one after another (each a new
/// source port): the backend id of each. Every one must succeed.
fn connections(tb: &Testbed, k: usize, port: u16) -> Vec<String> {
    let addr = SocketAddr::new(VIP.into(), port);
    (0..CONNECTIONS)
        .map(|i| {
            let flow = tb
                .flow(Proto::Tcp, k, addr, 1)
                .unwrap_or_else(|e| panic!("connection {i} from client {k} to {addr}: {e:#}"));
            flow.ids[0].clone()
        })
        .collect()
}

fn distinct(ids: &[String]) -> BTreeSet<String> {
    ids.iter().cloned().collect()
}

/// The one backend all of `ids` went to; fails when they went to several.
fn one_backend(ids: &[String], what: &str) -> String {
    let set = distinct(ids);
    assert_eq!(
        set.len(),
        1,
        "{what}: {CONNECTIONS} connections went to {set:?}"
    );
    set.into_iter().next().unwrap()
}

#[test]
fn client_ip_affinity_keeps_a_client_on_one_backend_until_the_timeout() {
    if !require_root("client_ip_affinity_keeps_a_client_on_one_backend_until_the_timeout") {
        return;
    }
    let tb = affinity_testbed();
    let list: Value = serde_json::from_str(
        &tb.xlb_ok(&["service", "list", "--json"])
            .expect("service list"),
    )
    .expect("service list JSON");
    let shown: Vec<(String, String, u64)> = list["services"]
        .as_array()
        .expect("services")
        .iter()
        .map(|s| {
            (
                s["service"].as_str().unwrap().to_string(),
                s["affinity"].as_str().unwrap().to_string(),
                s["affinity_timeout_s"].as_u64().unwrap(),
            )
        })
        .collect();
    assert!(
        shown.contains(&(SERVICE.into(), "client-ip".into(), TIMEOUT_S)),
        "{shown:?}"
    );
    assert!(
        shown.contains(&(PLAIN.into(), "none".into(), 0)),
        "{shown:?}"
    );
    let text = tb.xlb_ok(&["service", "list"]).expect("service list");
    assert!(text.contains(&format!("client-ip/{TIMEOUT_S}s")), "{text}");

    // The control: without affinity, 20 connections of one client spread (all on one
    // of 3 backends by chance: 3 * 3^-20).
    let plain = connections(&tb, 0, 81);
    eprintln!("without affinity, client 0 reached {:?}", distinct(&plain));
    assert!(distinct(&plain).len() > 1, "{plain:?}");

    let first: Vec<String> = (0..2)
        .map(|k| one_backend(&connections(&tb, k, 80), &format!("client {k}")))
        .collect();
    eprintln!(
        "with client-ip affinity: client 0 on {}, client 1 on {}",
        first[0], first[1]
    );

    // No connection for longer than the timeout: the entries expire; new connections
    // work, and the first of them makes a new entry that the others follow.
    thread::sleep(Duration::from_millis(TIMEOUT_S * 1000 + 1500));
    let after = one_backend(&connections(&tb, 0, 80), "client 0 after the timeout");
    eprintln!(
        "client 0 after {TIMEOUT_S} s without a connection: {} (before: {})",
        after, first[0]
    );

    // A backend that leaves the table (drained) releases its clients at once.
    let j = (0..3)
        .find(|&j| backend_id(j) == after)
        .expect("a testbed backend");
    let drained = format!("{}:{BACKEND_PORT}", tb.backend(j).addr());
    tb.xlb_ok(&["backend", "drain", SERVICE, &drained])
        .expect("backend drain");
    let t = Instant::now();
    let moved = one_backend(
        &connections(&tb, 0, 80),
        "client 0 after its backend drained",
    );
    assert_ne!(moved, after, "a new connection went to the drained backend");
    eprintln!(
        "after draining {after}: client 0 on {moved} ({:?})",
        t.elapsed()
    );

    // set-affinity none: the client's connections spread again.
    tb.xlb_ok(&["service", "set-affinity", SERVICE, "--affinity", "none"])
        .expect("set-affinity none");
    let spread = connections(&tb, 0, 80);
    assert!(distinct(&spread).len() > 1, "with none: {spread:?}");
    assert!(
        !distinct(&spread).contains(&after),
        "the drained backend got {spread:?}"
    );

    // The configuration file sets it back: `xlb apply` shows the one change, `xlb config
    // dump` writes it, and the client sticks again.
    let mut file = format!(
        "[[service]]\naddress = \"{SERVICE}\"\naffinity = \"client-ip\"\naffinity_timeout = {TIMEOUT_S}\n"
    );
    for j in 0..3 {
        let weight = if j == (0..3).find(|&j| backend_id(j) == after).unwrap() {
            0
        } else {
            100
        };
        file.push_str(&format!(
            "[[service.backend]]\naddress = \"{}:{BACKEND_PORT}\"\nweight = {weight}\n",
            tb.backend(j).addr()
        ));
    }
    let path = tb.run_file("affinity.toml");
    std::fs::write(&path, file).expect("write the config file");
    let applied = tb
        .xlb_ok(&["apply", "-f", path.to_str().unwrap()])
        .expect("xlb apply");
    assert_eq!(
        applied.trim(),
        format!("~ service {SERVICE} affinity=none->client-ip/{TIMEOUT_S}s")
    );
    let dump = tb.xlb_ok(&["config", "dump"]).expect("config dump");
    assert!(
        dump.contains(&format!(
            "affinity = \"client-ip\"\naffinity_timeout = {TIMEOUT_S}\n"
        )),
        "{dump}"
    );
    let again = one_backend(&connections(&tb, 0, 80), "client 0 after xlb apply");
    assert_ne!(again, after, "a new connection went to the drained backend");
}

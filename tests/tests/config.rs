//! The declarative configuration (issue 9, item 3) against a running xlbd: `xlb apply`
//! changes only what the file changes (a service's `generation`, its change counter, moves
//! only when its table is rewritten), `--dry-run` changes nothing, a malformed file is
//! refused with its file:line and changes nothing, `xlb config dump` then `xlb apply` is a
//! no-op, absent backends are drained and only `--prune --force` cuts live flows, and
//! `xlbd --config` starts with the file's interfaces, mode and services.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use xlb_testbed::{Testbed, VIP, backend_id, require_root};

const WEB: &str = "198.18.0.10:80/tcp";
const API: &str = "198.18.0.10:81/tcp";
const PORT: u16 = 8080;

/// A file of `WEB` (table 251) and `API` (default table) over backends 0 and 1, with
/// these weights (`None`: the backend is left out).
fn two_services(tb: &Testbed, web: [Option<u32>; 2], api: [Option<u32>; 2]) -> String {
    let mut text = String::from("# written by tests/tests/config.rs\n");
    for (service, weights, size) in [(WEB, web, Some(251)), (API, api, None)] {
        text += &format!("\n[[service]]\naddress = \"{service}\"\n");
        if let Some(size) = size {
            text += &format!("table_size = {size}\n");
        }
        for (j, w) in weights.iter().enumerate() {
            let Some(w) = w else { continue };
            let b = tb.backend_addr(j, PORT);
            text += &format!("\n[[service.backend]]\naddress = \"{b}\"\nweight = {w}\n");
        }
    }
    text
}

fn write(tb: &Testbed, name: &str, text: &str) -> PathBuf {
    let path = tb.run_file(name);
    std::fs::write(&path, text).expect("writing the config file");
    path
}

fn apply(tb: &Testbed, path: &Path, flags: &[&str]) -> String {
    let mut args = vec!["apply", "-f", path.to_str().unwrap()];
    args.extend_from_slice(flags);
    tb.xlb_ok(&args).expect("xlb apply")
}

/// `xlb service list --json` and `xlb backend list --json` without the traffic counters
/// (packets, bytes): everything an apply may change.
fn state(tb: &Testbed) -> (Value, Value) {
    let json = |args: &[&str]| -> Value {
        let out = tb.xlb_ok(args).expect("list");
        serde_json::from_str(&out).expect("--json output is JSON")
    };
    let mut backends = json(&["backend", "list", "--json"]);
    for row in backends["backends"].as_array_mut().expect("backends array") {
        let row = row.as_object_mut().expect("a backend row");
        row.remove("packets");
        row.remove("bytes");
        row.remove("new_flows");
    }
    (json(&["service", "list", "--json"]), backends)
}

/// The row of `service` in `xlb service list --json`.
fn service_row(tb: &Testbed, service: &str) -> Value {
    let (services, _) = state(tb);
    services["services"]
        .as_array()
        .expect("services array")
        .iter()
        .find(|s| s["service"] == service)
        .unwrap_or_else(|| panic!("{service} not listed: {services}"))
        .clone()
}

fn testbed(xlbd_args: &[&str]) -> Testbed {
    let mut tb = Testbed::new(1, 2).expect("testbed");
    tb.start_xlbd(xlbd_args).expect("start xlbd");
    tb
}

#[test]
fn apply_rewrites_only_the_changed_service() {
    if !require_root("apply_rewrites_only_the_changed_service") {
        return;
    }
    let tb = testbed(&[]);
    let first = write(
        &tb,
        "a.toml",
        &two_services(&tb, [Some(100); 2], [Some(100); 2]),
    );
    let out = apply(&tb, &first, &[]);
    assert_eq!(
        out.lines().count(),
        6,
        "2 services and 4 backends added:\n{out}"
    );
    let web = service_row(&tb, WEB);
    let api = service_row(&tb, API);
    assert_eq!(
        (web["generation"].as_u64(), api["generation"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(web["table_size"], 251);

    // One weight of one service.
    let second = write(
        &tb,
        "b.toml",
        &two_services(&tb, [Some(100); 2], [Some(100), Some(50)]),
    );
    let out = apply(&tb, &second, &[]);
    assert_eq!(
        out,
        format!(
            "~ backend {API} {} weight=100->50\n",
            tb.backend_addr(1, PORT)
        )
    );
    assert_eq!(
        service_row(&tb, WEB),
        web,
        "the unchanged service's table was rewritten"
    );
    let api2 = service_row(&tb, API);
    assert_eq!(api2["generation"], 2);
    assert_ne!(
        api2["table_offset"], api["table_offset"],
        "no flip to the other half"
    );
    let row = tb
        .backend_row(API, &tb.backend_addr(1, PORT))
        .unwrap()
        .unwrap();
    assert_eq!(row.weight, 50);

    // The same file again: nothing at all.
    let before = state(&tb);
    assert_eq!(apply(&tb, &second, &[]), "no changes\n");
    assert_eq!(state(&tb), before);
}

#[test]
fn dry_run_prints_the_diff_and_changes_nothing() {
    if !require_root("dry_run_prints_the_diff_and_changes_nothing") {
        return;
    }
    let tb = testbed(&[]);
    let first = write(
        &tb,
        "a.toml",
        &two_services(&tb, [Some(100); 2], [Some(100); 2]),
    );
    apply(&tb, &first, &[]);
    let before = state(&tb);
    let (b0, b1) = (tb.backend_addr(0, PORT), tb.backend_addr(1, PORT));
    // WEB: backend 1 re-weighted; API: backend 0 left out; a new service.
    let mut text = two_services(&tb, [Some(100), Some(7)], [None, Some(100)]);
    text += "\n[[service]]\naddress = \"198.18.0.10:53/udp\"\ntable_size = 131\n";
    let next = write(&tb, "b.toml", &text);

    let out = apply(&tb, &next, &["--dry-run"]);
    assert_eq!(
        out,
        format!(
            "~ backend {WEB} {b1} weight=100->7\n\
             ~ backend {API} {b0} weight=100->0 (drain)\n\
             + service 198.18.0.10:53/udp table_size=131\n"
        )
    );
    let pruned = apply(&tb, &next, &["--dry-run", "--prune", "--json"]);
    let changes: Value = serde_json::from_str(&pruned).expect("--json is JSON");
    let ops: Vec<&str> = changes
        .as_array()
        .expect("a JSON array")
        .iter()
        .map(|c| c["op"].as_str().unwrap())
        .collect();
    assert_eq!(ops, ["set_weight", "remove_backend", "add_service"]);
    assert_eq!(changes[1]["backend"], b0.as_str());
    assert_eq!(state(&tb), before, "--dry-run changed the running state");

    // And without --dry-run, what it said is what happens.
    assert_eq!(apply(&tb, &next, &[]), out);
    assert_ne!(state(&tb), before);
}

#[test]
fn malformed_files_exit_non_zero_with_file_line_and_change_nothing() {
    if !require_root("malformed_files_exit_non_zero_with_file_line_and_change_nothing") {
        return;
    }
    // A small table area: half of it is 500 slots, so a table of 521 is refused by the
    // daemon (only it knows the area), after a first service that would fit.
    let tb = testbed(&["--table-area", "1000"]);
    let good = two_services(&tb, [Some(100); 2], [Some(100); 2]).replace(
        &format!("address = \"{API}\"\n"),
        &format!("address = \"{API}\"\ntable_size = 211\n"),
    );
    apply(&tb, &write(&tb, "good.toml", &good), &[]);
    let before = state(&tb);

    let svc = format!("[[service]]\naddress = \"{WEB}\"\ntable_size = 251\n");
    let be = format!(
        "[[service.backend]]\naddress = \"{}\"\n",
        tb.backend_addr(0, PORT)
    );
    // (what, file, line the error must name, a word of the message)
    let cases: Vec<(&str, String, usize, &str)> = vec![
        (
            "bad TOML",
            format!("{svc}{be}weight = = 3\n"),
            6,
            "expected",
        ),
        (
            "unknown field",
            format!("{svc}{be}wieght = 3\n"),
            6,
            "unknown field `wieght`",
        ),
        (
            "bad address",
            format!("{svc}[[service.backend]]\naddress = \"198.19.0.300:8080\"\n"),
            5,
            "is not an IP address",
        ),
        (
            "duplicate backend",
            format!("{svc}{be}{be}"),
            7,
            "duplicate backend",
        ),
        (
            "weight out of range",
            format!("{svc}{be}weight = 70000\n"),
            6,
            "weight 70000 out of range",
        ),
        (
            "table size not prime",
            svc.replace("251", "250"),
            3,
            "not a prime",
        ),
        (
            "table larger than the daemon's area",
            format!("{svc}\n[[service]]\naddress = \"198.18.0.10:82/tcp\"\ntable_size = 521\n"),
            6,
            "does not fit in half the table area",
        ),
    ];
    for (what, text, line, word) in cases {
        let path = write(&tb, "bad.toml", &text);
        let file = path.to_str().unwrap();
        let out = tb.xlb(&["apply", "-f", file]).expect("run xlb");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{what}: accepted:\n{text}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{what}: {stderr:?}");
        let want = format!("xlb: error: {file}:{line}: ");
        assert!(
            stderr.starts_with(&want),
            "{what}: {stderr:?} does not start with {want:?}"
        );
        assert!(stderr.contains(word), "{what}: {stderr:?} lacks {word:?}");
        assert_eq!(state(&tb), before, "{what}: the running state changed");
    }
}

#[test]
fn dump_then_apply_is_a_no_op() {
    if !require_root("dump_then_apply_is_a_no_op") {
        return;
    }
    let tb = testbed(&[]);
    apply(
        &tb,
        &write(
            &tb,
            "a.toml",
            &two_services(&tb, [Some(3), Some(0)], [Some(100); 2]),
        ),
        &[],
    );
    // Changes made by the CLI are in the dump too.
    tb.xlb_ok(&[
        "service",
        "add",
        "[2001:2::10]:53/udp",
        "--table-size",
        "107",
    ])
    .unwrap();
    let b6 = format!("[{}]:53", tb.backend(0).addr6());
    tb.xlb_ok(&[
        "backend",
        "add",
        "[2001:2::10]:53/udp",
        &b6,
        "--weight",
        "9",
    ])
    .unwrap();
    let before = state(&tb);
    let dump = tb.xlb_ok(&["config", "dump"]).expect("config dump");
    assert!(
        dump.contains("[daemon]") && dump.contains("mode = \"native\""),
        "{dump}"
    );
    assert!(
        dump.contains(&format!("address = \"{b6}\"\nweight = 9")),
        "{dump}"
    );
    let path = write(&tb, "dump.toml", &dump);
    assert_eq!(apply(&tb, &path, &[]), "no changes\n");
    assert_eq!(apply(&tb, &path, &["--prune", "--force"]), "no changes\n");
    assert_eq!(state(&tb), before);
}

#[test]
fn absent_backends_are_drained_and_only_prune_force_cuts_live_flows() {
    if !require_root("absent_backends_are_drained_and_only_prune_force_cuts_live_flows") {
        return;
    }
    let tb = testbed(&[]);
    for j in 0..2 {
        tb.spawn_id_server(j, PORT).expect("id server");
    }
    apply(
        &tb,
        &write(
            &tb,
            "a.toml",
            &two_services(&tb, [Some(100); 2], [Some(100); 2]),
        ),
        &[],
    );
    // A connection on backend 1 (the hash picks; at most 40 tries).
    let vip = SocketAddr::new(VIP.into(), 80);
    let mut conn = (0..40)
        .find_map(|_| {
            let mut c = tb.tcp_conn(0, vip).expect("connect");
            (c.ask().expect("answer") == backend_id(1)).then_some(c)
        })
        .expect("no connection landed on backend 1 in 40 tries");
    let b1 = tb.backend_addr(1, PORT);

    let without = write(
        &tb,
        "b.toml",
        &two_services(&tb, [Some(100), None], [Some(100); 2]),
    );
    assert_eq!(
        apply(&tb, &without, &[]),
        format!("~ backend {WEB} {b1} weight=100->0 (drain)\n")
    );
    assert_eq!(conn.ask().expect("drained, still served"), backend_id(1));
    assert_eq!(tb.backend_row(WEB, &b1).unwrap().unwrap().weight, 0);

    // --prune alone refuses a backend with live flows, at the service's line.
    let before = state(&tb);
    let out = tb
        .xlb(&["apply", "-f", without.to_str().unwrap(), "--prune"])
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.starts_with(&format!("xlb: error: {}:4: ", without.display()))
            && stderr.contains("live flows"),
        "{stderr}"
    );
    assert_eq!(state(&tb), before);
    assert_eq!(conn.ask().expect("still served"), backend_id(1));

    // --prune --force removes it and deletes its flows.
    assert_eq!(
        apply(&tb, &without, &["--prune", "--force"]),
        format!("- backend {WEB} {b1}\n")
    );
    assert!(tb.backend_row(WEB, &b1).unwrap().is_none());
    let flows = tb
        .wait_flows(WEB, None, Duration::from_secs(3), |n| n == 0)
        .unwrap();
    assert_eq!(flows, 0, "the removed backend's flow was not deleted");
}

#[test]
fn xlbd_config_starts_with_the_files_interfaces_mode_and_services() {
    if !require_root("xlbd_config_starts_with_the_files_interfaces_mode_and_services") {
        return;
    }
    let mut tb = Testbed::new(1, 2).expect("testbed");
    for j in 0..2 {
        tb.spawn_id_server(j, PORT).expect("id server");
    }
    let ifaces: Vec<String> = tb.lb_ifaces().iter().map(|i| format!("{i:?}")).collect();
    let text = format!(
        "[daemon]\ninterfaces = [{}]\nmode = \"skb\"\n\n{}",
        ifaces.join(", "),
        two_services(&tb, [Some(100); 2], [Some(100), Some(0)])
    );
    let path = write(&tb, "xlb.toml", &text);
    tb.start_xlbd(&["--config", path.to_str().unwrap()])
        .expect("xlbd --config");
    let status: Value = serde_json::from_str(&tb.xlb_ok(&["status", "--json"]).unwrap()).unwrap();
    assert_eq!(status["mode"], "skb");
    assert_eq!(status["interfaces"], serde_json::json!(tb.lb_ifaces()));
    assert_eq!(service_row(&tb, WEB)["table_size"], 251);
    assert_eq!(service_row(&tb, API)["backends"], 2);
    // Applying the same file changes nothing: the daemon runs exactly the file.
    assert_eq!(apply(&tb, &path, &["--prune"]), "no changes\n");
    // And the data path balances with it: API's backend 1 has weight 0.
    let vip = SocketAddr::new(VIP.into(), 81);
    for _ in 0..5 {
        let mut c = tb.tcp_conn(0, vip).expect("connect to the VIP");
        assert_eq!(c.ask().expect("an answer"), backend_id(0));
    }
}

/// Issue 10: a `[service.check]` table is applied as `xlb service set-check` would: the
/// backends start `checking`, the one with a server turns `up` and the one without turns
/// `down`; dump then apply changes nothing, and a changed check is one diff line.
#[test]
fn a_check_in_the_file_checks_the_backends() {
    if !require_root("a_check_in_the_file_checks_the_backends") {
        return;
    }
    let tb = testbed(&[]);
    // Backend 0 answers; backend 1 has no server, so its checks are refused.
    tb.spawn_id_server(0, PORT).expect("id server");
    let (b0, b1) = (tb.backend_addr(0, PORT), tb.backend_addr(1, PORT));
    // Checks 1 s apart with rise 2: "checking" lasts at least 1 s after the apply.
    let file = |check: &str| {
        format!(
            "[[service]]\naddress = \"{WEB}\"\ntable_size = 251\n\n{check}\n\
             \n[[service.backend]]\naddress = \"{b0}\"\n\n[[service.backend]]\naddress = \"{b1}\"\n"
        )
    };
    let tcp = write(
        &tb,
        "check.toml",
        &file(
            "[service.check]\nkind = \"tcp\"\ninterval = \"1s\"\ntimeout = \"200ms\"\nrise = 2\nfall = 2",
        ),
    );
    let out = apply(&tb, &tcp, &[]);
    assert_eq!(
        out.lines().last(),
        Some(
            format!(
                "~ service {WEB} check none -> tcp/1s timeout=200ms rise=2 fall=2 all_down=fail-open"
            )
            .as_str()
        ),
        "{out}"
    );
    let states = |tb: &Testbed| -> Vec<String> {
        let (_, backends) = state(tb);
        let rows = backends["backends"].as_array().expect("backends").clone();
        [&b0, &b1]
            .iter()
            .map(|b| {
                let row = rows.iter().find(|r| r["backend"] == b.as_str());
                let row = row.unwrap_or_else(|| panic!("{b} not listed: {backends}"));
                row["state"].as_str().expect("a state").to_owned()
            })
            .collect()
    };
    assert_eq!(states(&tb), ["checking", "checking"]);
    let start = std::time::Instant::now();
    let mut now = states(&tb);
    while now != ["up", "down"] && start.elapsed() < Duration::from_secs(8) {
        std::thread::sleep(Duration::from_millis(100));
        now = states(&tb);
    }
    assert_eq!(now, ["up", "down"], "{:?} after the apply", start.elapsed());
    let service = service_row(&tb, WEB);
    assert_eq!(service["check"]["kind"], "tcp", "{service}");

    // The same file again, and the dump, change nothing (the verdicts stay).
    assert_eq!(apply(&tb, &tcp, &[]), "no changes\n");
    let dump = tb.xlb_ok(&["config", "dump"]).expect("config dump");
    assert!(
        dump.contains("[service.check]\nkind = \"tcp\"\ninterval = \"1s\""),
        "{dump}"
    );
    let dumped = write(&tb, "dump.toml", &dump);
    assert_eq!(apply(&tb, &dumped, &["--prune"]), "no changes\n");
    assert_eq!(states(&tb), ["up", "down"]);

    // A bad check is refused at its line and changes nothing.
    let bad = write(
        &tb,
        "bad.toml",
        &file("[service.check]\nkind = \"tcp\"\nfall = 0"),
    );
    let out = tb
        .xlb(&["apply", "-f", bad.to_str().unwrap()])
        .expect("xlb apply");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(
        err.trim(),
        format!(
            "xlb: error: {}:7: service \"{WEB}\": check: fall 0 out of range (1-100)",
            bad.display()
        )
    );
    // Without the table the service stops checking: every backend is up again.
    let none = write(&tb, "none.toml", &file(""));
    let out = apply(&tb, &none, &[]);
    assert!(
        out.starts_with(&format!("~ service {WEB} check tcp/1s")) && out.ends_with("-> none\n"),
        "{out}"
    );
    assert_eq!(states(&tb), ["up", "up"]);
}

//! Bad CLI input: a non-zero exit, a one-line error naming the rule, and no change to the
//! running state (`xlb service list --json`, `xlb backend list --json`).

use xlb_testbed::{Testbed, require_root};

/// The service the testbed fills with its backend (port 8080).
const WEB: &str = "198.18.0.10:80/tcp";
/// A service with the smallest table: room for one backend.
const SMALL: &str = "198.18.0.12:80/tcp";

#[test]
fn bad_cli_input_changes_nothing() {
    if !require_root("bad_cli_input_changes_nothing") {
        return;
    }
    let mut tb = Testbed::new(1, 1).expect("testbed");
    tb.start_xlbd(&[]).expect("start xlbd");
    tb.add_service_with_backends(WEB, 8080)
        .expect("configure service");
    tb.xlb_ok(&["service", "add", SMALL, "--table-size", "101"])
        .expect("add a service with the smallest table");
    let backend = format!("{}:8080", tb.backend(0).addr());
    tb.xlb_ok(&["backend", "add", SMALL, &backend])
        .expect("the smallest table takes one backend");
    let state = |tb: &Testbed| -> (serde_json::Value, serde_json::Value) {
        let json = |args: &[&str]| {
            let out = tb.xlb_ok(args).expect("list");
            serde_json::from_str::<serde_json::Value>(&out).expect("--json is JSON")
        };
        (
            json(&["service", "list", "--json"]),
            json(&["backend", "list", "--json"]),
        )
    };
    let before = state(&tb);
    assert_eq!(before.0["services"].as_array().map(Vec::len), Some(2));
    assert_eq!(before.1["backends"].as_array().map(Vec::len), Some(2));

    let long = "7".repeat(10_000);
    let long_service = format!("198.18.0.{long}:80/tcp");
    let backend_vip = format!("{}:80/tcp", tb.backend(0).addr());
    const UNICAST: &str = "a VIP or backend must be a unicast address";
    const IS_VIP: &str = "a backend cannot be a VIP";
    // (arguments, what the one line must contain)
    let bad: Vec<(Vec<&str>, String)> = vec![
        (vec!["service", "add", "1.2.3.4:99999/tcp"], "port 99999 out of range (1-65535)".into()),
        (vec!["service", "add", "198.18.0.11:80/sctp"], "protocol \"sctp\" is not tcp or udp".into()),
        (vec!["backend", "add", "198.18.0.99:80/tcp", "198.19.0.2:8080"], "no such service: 198.18.0.99:80/tcp".into()),
        (vec!["service", "add", "0.0.0.0:80/tcp"], format!("0.0.0.0 is the unspecified address; {UNICAST}")),
        (vec!["service", "add", "[::]:80/tcp"], format!(":: is the unspecified address; {UNICAST}")),
        (vec!["service", "add", "255.255.255.255:80/tcp"], format!("255.255.255.255 is the broadcast address; {UNICAST}")),
        (vec!["service", "add", "224.0.0.1:80/udp"], format!("224.0.0.1 is a multicast address (224.0.0.0/4, ff00::/8); {UNICAST}")),
        (vec!["service", "add", "[ff02::1]:80/udp"], format!("ff02::1 is a multicast address (224.0.0.0/4, ff00::/8); {UNICAST}")),
        (vec!["service", "add", "[::ffff:198.18.0.20]:80/tcp"], "::ffff:198.18.0.20 is an IPv4-mapped IPv6 address (::ffff:0:0/96); write the IPv4 address 198.18.0.20".into()),
        (vec!["backend", "add", WEB, "0.0.0.0:8080"], format!("invalid backend \"0.0.0.0:8080\": 0.0.0.0 is the unspecified address; {UNICAST}")),
        (vec!["backend", "add", WEB, "255.255.255.255:8080"], format!("255.255.255.255 is the broadcast address; {UNICAST}")),
        (vec!["backend", "add", WEB, "224.0.0.1:8080"], format!("224.0.0.1 is a multicast address (224.0.0.0/4, ff00::/8); {UNICAST}")),
        // The service's own VIP (the CLI sees it), another service's (only the daemon does),
        // and a new VIP on a backend's address (the daemon).
        (vec!["backend", "add", WEB, "198.18.0.10:8080"], format!("backend 198.18.0.10:8080 has the address of service {WEB}: {IS_VIP}")),
        (vec!["backend", "add", WEB, "198.18.0.12:80"], format!("backend 198.18.0.12:80 has the address of service {SMALL}: {IS_VIP}")),
        (vec!["service", "add", &backend_vip], format!("backend {backend} has the address of service {backend_vip}: {IS_VIP}")),
        (vec!["service", "add", "198.18.0.13:80/tcp", "--table-size", "3"], "table size 3 out of range (101-4294967295)".into()),
        (vec!["service", "add", "198.18.0.13:80/tcp", "--table-size", "65536"], "table size 65536 is not a prime number (Maglev needs a prime)".into()),
        (vec!["backend", "add", SMALL, "198.19.0.250:8080"], format!("service {SMALL} has no room for a backend more: its table of 101 slots takes 1 at 100 slots per backend, as Maglev needs (re-create it with --table-size 211 or more)")),
        (vec!["backend", "add", WEB, "198.19.0.250:8080", "--weight", "4294967296"], "weight 4294967296 out of range (0-65535)".into()),
        (vec!["backend", "add", WEB, "198.19.0.250:8080", "--weight", "-1"], "weight -1 out of range (0-65535)".into()),
        (vec!["backend", "add", WEB, "198.19.0.250:8080", "--weight", "x"], "weight \"x\" is not a whole number".into()),
        (vec!["backend", "set-weight", WEB, &backend, "70000"], "weight 70000 out of range (0-65535)".into()),
        (vec!["backend", "set-weight", WEB, &backend, "-1"], "weight -1 out of range (0-65535)".into()),
        (vec!["service", "add", "198.18.0.20:80/tcp\n"], "invalid service \"198.18.0.20:80/tcp\\n\": protocol \"tcp\\n\" is not tcp or udp".into()),
        (vec!["service", "add", &long_service], format!("invalid service \"198.18.0.{}…\"", "7".repeat(55))),
        (vec!["service", "remove", &long], format!("invalid service \"{}…\"", "7".repeat(64))),
        (vec![&long], format!("unrecognized subcommand '{}…'", "7".repeat(64))),
    ];
    for (args, names) in &bad {
        let shown = args.join(" ").escape_debug().take(100).collect::<String>();
        let out = tb.xlb(args).expect("run xlb");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "`xlb {shown}` succeeded");
        assert_eq!(
            stderr.trim_end().lines().count(),
            1,
            "`xlb {shown}`: error is not one line: {stderr:?}"
        );
        assert!(
            stderr.starts_with("xlb: error: ") && stderr.contains(names.as_str()),
            "`xlb {shown}`: {stderr:?} does not say {names:?}"
        );
        assert!(
            stderr.chars().count() < 400,
            "`xlb {shown}`: {stderr:?} is too long"
        );
        assert_eq!(state(&tb), before, "`xlb {shown}` changed the state");
    }
}

//! Bad CLI input: a non-zero exit, a one-line error, and no change to the running state.

use xlb_testbed::{Testbed, require_root};

#[test]
fn bad_cli_input_changes_nothing() {
    if !require_root("bad_cli_input_changes_nothing") {
        return;
    }
    let mut tb = Testbed::new(1, 1).expect("testbed");
    tb.start_xlbd(&[]).expect("start xlbd");
    tb.add_service_with_backends("198.18.0.10:80/tcp", 8080)
        .expect("configure service");
    let list = |tb: &Testbed| -> serde_json::Value {
        let out = tb
            .xlb_ok(&["service", "list", "--json"])
            .expect("service list");
        serde_json::from_str(&out).expect("service list --json is JSON")
    };
    let before = list(&tb);
    let bad: [&[&str]; 4] = [
        &["service", "add", "1.2.3.4:99999/tcp"],
        &["service", "add", "198.18.0.11:80/sctp"],
        &["backend", "add", "198.18.0.99:80/tcp", "198.19.0.2:8080"],
        &[
            "backend",
            "add",
            "198.18.0.10:80/tcp",
            "198.19.0.2:8080",
            "--weight",
            "x",
        ],
    ];
    for args in bad {
        let out = tb.xlb(args).expect("run xlb");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "`xlb {}` succeeded", args.join(" "));
        assert_eq!(
            stderr.trim_end().lines().count(),
            1,
            "`xlb {}`: error is not one line: {stderr:?}",
            args.join(" ")
        );
        assert_eq!(
            list(&tb),
            before,
            "`xlb {}` changed the services",
            args.join(" ")
        );
    }
}

use super::*;

fn svc(s: &str) -> ServiceAddr {
    s.parse().unwrap()
}

fn be(s: &str) -> BackendAddr {
    s.parse().unwrap()
}

fn spec(table_size: u32, backends: &[(&str, u32)]) -> ServiceSpec {
    ServiceSpec {
        table_size,
        backends: backends.iter().map(|(b, w)| (be(b), *w)).collect(),
        affinity: Affinity::None,
        forwarding: Default::default(),
        check: CheckSettings::default(),
    }
}

const EXAMPLE: &str = r#"# two services
[daemon]
interfaces = ["veth0", "veth1"]
mode = "skb"

[[service]]
address = "198.18.0.10:80/tcp"

[[service.backend]]
address = "198.19.0.2:8080"
weight = 50

[[service.backend]]
address = "198.19.1.2:8080"

[[service]]
address = "[2001:2::10]:53/udp"
table_size = 251
backend = [{ address = "[2001:2::2]:53", weight = 0 }]
"#;

#[test]
fn parses_the_example_with_defaults() {
    let c = parse("xlb.toml", EXAMPLE).unwrap();
    assert_eq!(
        c.daemon,
        DaemonSettings {
            interfaces: Some(vec!["veth0".into(), "veth1".into()]),
            mode: Some(AttachMode::Skb),
        }
    );
    let want: Services = [
        (
            svc("198.18.0.10:80/tcp"),
            spec(
                DEFAULT_TABLE_SIZE,
                &[("198.19.0.2:8080", 50), ("198.19.1.2:8080", DEFAULT_WEIGHT)],
            ),
        ),
        (
            svc("[2001:2::10]:53/udp"),
            spec(251, &[("[2001:2::2]:53", 0)]),
        ),
    ]
    .into();
    assert_eq!(c.services, want);
    assert_eq!(c.line_of(&svc("198.18.0.10:80/tcp"), None), Some(7));
    let web = svc("198.18.0.10:80/tcp");
    assert_eq!(c.line_of(&web, Some(&be("198.19.1.2:8080"))), Some(14));
    // A backend not in the file points at its service.
    assert_eq!(c.line_of(&web, Some(&be("198.19.9.9:1"))), Some(7));
    assert_eq!(parse("x", "").unwrap().services, Services::new());
}

/// Each bad file and the one line it gets.
#[test]
fn errors_name_the_file_the_line_and_the_field() {
    let svc_hdr = "[[service]]\naddress = \"198.18.0.10:80/tcp\"\n";
    let be_hdr = "[[service.backend]]\naddress = \"198.19.0.2:8080\"\n";
    let cases: Vec<(String, &str)> = vec![
        // Bad TOML.
        (
            "[[service]\naddress = \"x\"\n".into(),
            "xlb.toml:1: unclosed array table, expected `]`",
        ),
        (
            format!("{svc_hdr}table_size = \n"),
            "xlb.toml:3: string values must be quoted, expected literal string",
        ),
        // Unknown fields, at every level.
        (
            "colour = \"red\"\n".into(),
            "xlb.toml:1: unknown field `colour`, expected `daemon` or `service`",
        ),
        (
            "[daemon]\ninterface = [\"eth0\"]\n".into(),
            "xlb.toml:2: daemon: unknown field `interface`, expected `interfaces` or `mode`",
        ),
        (
            format!("{svc_hdr}tablesize = 251\n"),
            "xlb.toml:3: service \"198.18.0.10:80/tcp\": unknown field `tablesize`, expected one of `address`, `table_size`, `check`, `backend`, `affinity`, `affinity_timeout`, `forwarding`",
        ),
        (
            format!("{svc_hdr}{be_hdr}weigth = 5\n"),
            "xlb.toml:5: service \"198.18.0.10:80/tcp\": backend \"198.19.0.2:8080\": unknown field `weigth`, expected `address` or `weight`",
        ),
        // Wrong types and missing fields.
        (
            format!("{svc_hdr}{be_hdr}weight = -1\n"),
            "xlb.toml:5: service \"198.18.0.10:80/tcp\": backend \"198.19.0.2:8080\": weight: invalid value: integer `-1`, expected u32",
        ),
        (
            format!("{svc_hdr}table_size = \"big\"\n"),
            "xlb.toml:3: service \"198.18.0.10:80/tcp\": table_size: invalid type: string \"big\", expected u32",
        ),
        (
            "[[service]]\ntable_size = 251\n".into(),
            "xlb.toml:1: service #1: missing field `address`",
        ),
        // Bad addresses.
        (
            "[[service]]\naddress = \"198.18.0.300:80/tcp\"\n".into(),
            "xlb.toml:2: service \"198.18.0.300:80/tcp\": address: \"198.18.0.300\" is not an IP address",
        ),
        (
            format!("{svc_hdr}[[service.backend]]\naddress = \"198.19.0.2\"\n"),
            "xlb.toml:4: service \"198.18.0.10:80/tcp\": backend \"198.19.0.2\": address: expected ADDR:PORT, e.g. 198.19.0.2:8080 or [2001:2::2]:8080",
        ),
        (
            format!("{svc_hdr}[[service.backend]]\naddress = \"[2001:2::2]:80\"\n"),
            "xlb.toml:4: service \"198.18.0.10:80/tcp\": backend \"[2001:2::2]:80\": backend [2001:2::2]:80 is IPv6 but service 198.18.0.10:80/tcp is IPv4 (no NAT between IPv4 and IPv6)",
        ),
        // Duplicates (compared as addresses, not as text).
        (
            format!("{svc_hdr}{be_hdr}\n{be_hdr}"),
            "xlb.toml:7: service \"198.18.0.10:80/tcp\": backend \"198.19.0.2:8080\": duplicate backend",
        ),
        (
            format!("{svc_hdr}\n[[service]]\naddress = \"198.18.0.10:80/TCP\"\n"),
            "xlb.toml:5: service \"198.18.0.10:80/TCP\": duplicate service (also service #1)",
        ),
        // Out of range.
        (
            format!("{svc_hdr}{be_hdr}weight = 70000\n"),
            "xlb.toml:5: service \"198.18.0.10:80/tcp\": backend \"198.19.0.2:8080\": weight 70000 out of range (0-65535)",
        ),
        (
            format!("{svc_hdr}table_size = 1000\n"),
            "xlb.toml:3: service \"198.18.0.10:80/tcp\": table size 1000 is not a prime number (Maglev needs a prime)",
        ),
        // The daemon table.
        (
            "[daemon]\nmode = \"offload\"\n".into(),
            "xlb.toml:2: daemon: mode: \"offload\" is not \"native\" or \"skb\"",
        ),
        (
            "[daemon]\ninterfaces = []\n".into(),
            "xlb.toml:2: daemon: interfaces: the list is empty",
        ),
        (
            "[daemon]\ninterfaces = [\"eth0\", \"\"]\n".into(),
            "xlb.toml:2: daemon: interfaces: \"\" is not an interface name",
        ),
    ];
    let mut failed = Vec::new();
    for (text, want) in &cases {
        match parse("xlb.toml", text) {
            Ok(_) => failed.push(format!("accepted:\n{text}")),
            Err(e) if e.to_string() != *want => {
                failed.push(format!("{text}\n  got:  {e}\n  want: {want}"))
            }
            Err(e) => assert!(!e.to_string().contains('\n')),
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n\n"));
}

fn running() -> Services {
    [
        (
            svc("198.18.0.10:80/tcp"),
            spec(65537, &[("198.19.0.2:8080", 100), ("198.19.1.2:8080", 100)]),
        ),
        (
            svc("198.18.0.10:53/udp"),
            spec(251, &[("198.19.0.2:53", 100)]),
        ),
    ]
    .into()
}

#[test]
fn the_same_services_make_an_empty_plan() {
    let opts = ApplyOptions::default();
    assert!(plan(&running(), &running(), opts).is_empty());
    let prune = ApplyOptions {
        prune: true,
        ..opts
    };
    assert!(plan(&running(), &running(), prune).is_empty());
    assert_eq!(render_changes(&[]), "no changes\n");
}

#[test]
fn one_weight_changes_one_service() {
    let mut want = running();
    let web = svc("198.18.0.10:80/tcp");
    want.get_mut(&web)
        .unwrap()
        .backends
        .insert(be("198.19.0.2:8080"), 50);
    let p = plan(&running(), &want, ApplyOptions::default());
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].service, web);
    assert_eq!(
        changes(&p),
        [Change::SetWeight {
            service: web,
            backend: be("198.19.0.2:8080"),
            from: 100,
            to: 50
        }]
    );
    assert_eq!(
        render_changes(&changes(&p)),
        "~ backend 198.18.0.10:80/tcp 198.19.0.2:8080 weight=100->50\n"
    );
}

#[test]
fn absent_backends_drain_absent_services_stay_unless_pruned() {
    let web = svc("198.18.0.10:80/tcp");
    let dns = svc("198.18.0.10:53/udp");
    // The file: web without 198.19.1.2, a new backend, a new table size; no dns; a new service.
    let want: Services = [
        (
            web,
            spec(251, &[("198.19.0.2:8080", 100), ("198.19.2.2:8080", 7)]),
        ),
        (
            svc("198.18.0.11:80/tcp"),
            spec(65537, &[("198.19.0.2:80", 1)]),
        ),
    ]
    .into();

    let kept = plan(&running(), &want, ApplyOptions::default());
    let lines = render_changes(&changes(&kept));
    assert_eq!(
        lines,
        "~ service 198.18.0.10:80/tcp table_size=65537->251\n\
         ~ backend 198.18.0.10:80/tcp 198.19.1.2:8080 weight=100->0 (drain)\n\
         + backend 198.18.0.10:80/tcp 198.19.2.2:8080 weight=7\n\
         + service 198.18.0.11:80/tcp table_size=65537\n\
         + backend 198.18.0.11:80/tcp 198.19.0.2:80 weight=1\n"
    );
    assert!(kept.iter().all(|p| p.service != dns));
    // A drained backend stays drained: applying the same file again changes nothing.
    let after: Services = kept
        .iter()
        .filter_map(|p| Some((p.service, p.after.clone()?)))
        .chain([(dns, running()[&dns].clone())])
        .collect();
    assert!(plan(&after, &want, ApplyOptions::default()).is_empty());

    let prune = ApplyOptions {
        prune: true,
        ..Default::default()
    };
    let pruned = plan(&running(), &want, prune);
    // Removals first: they free what the additions take.
    assert_eq!(
        pruned.iter().map(|p| p.service).collect::<Vec<_>>(),
        [dns, web, svc("198.18.0.11:80/tcp")]
    );
    let c = changes(&pruned);
    assert_eq!(c[0], Change::RemoveService { service: dns });
    assert!(c.contains(&Change::RemoveBackend {
        service: web,
        backend: be("198.19.1.2:8080")
    }));
    let json = serde_json::to_value(&c).unwrap();
    assert_eq!(
        json[0],
        serde_json::json!({"op": "remove_service", "service": "198.18.0.10:53/udp"})
    );
    assert_eq!(
        json[1],
        serde_json::json!({"op": "set_table_size", "service": "198.18.0.10:80/tcp", "from": 65537, "to": 251})
    );
}

#[test]
fn changes_survive_the_api_round_trip() {
    let want: Services = [(svc("198.18.0.12:80/tcp"), spec(7, &[("198.19.0.2:80", 3)]))].into();
    let prune = ApplyOptions {
        prune: true,
        ..Default::default()
    };
    let mut all = changes(&plan(&running(), &want, prune));
    let mut web = running()[&svc("198.18.0.10:80/tcp")].clone();
    web.table_size = 7;
    web.backends.insert(be("198.19.0.2:8080"), 0);
    web.backends.remove(&be("198.19.1.2:8080"));
    web.backends.insert(be("198.19.3.2:8080"), 1);
    web.affinity = Affinity::ClientIp { timeout_s: 30 };
    web.forwarding = crate::forwarding::Forwarding::DsrIpip;
    let one: Services = [(svc("198.18.0.10:80/tcp"), web)].into();
    all.extend(changes(&plan(&running(), &one, prune)));
    let ops: std::collections::BTreeSet<&str> = all
        .iter()
        .map(|c| match c {
            Change::AddService { .. } => "add_service",
            Change::RemoveService { .. } => "remove_service",
            Change::SetTableSize { .. } => "set_table_size",
            Change::AddBackend { .. } => "add_backend",
            Change::RemoveBackend { .. } => "remove_backend",
            Change::SetWeight { .. } => "set_weight",
            Change::SetAffinity { .. } => "set_affinity",
            Change::SetForwarding { .. } => "set_forwarding",
            Change::SetCheck { .. } => "set_check",
        })
        .collect();
    assert_eq!(ops.len(), 8, "every kind of change is covered: {ops:?}");
    for c in &all {
        assert_eq!(Change::from_proto(&c.to_proto()).as_ref(), Some(c));
    }
    let unknown = proto::Change {
        op: "teleport".into(),
        ..all[0].to_proto()
    };
    assert_eq!(Change::from_proto(&unknown), None);
}

#[test]
fn dump_parses_back_to_the_same_config() {
    let mut services = running();
    services.insert(
        svc("[2001:2::10]:443/tcp"),
        spec(211, &[("[2001:2::2]:8443", 0), ("[2001:2::3]:8443", 65535)]),
    );
    services.insert(svc("198.18.0.12:80/udp"), spec(65537, &[]));
    let mut sticky = spec(101, &[("198.19.0.2:80", 1)]);
    sticky.affinity = Affinity::ClientIp { timeout_s: 30 };
    services.insert(svc("198.18.0.13:80/tcp"), sticky);
    for daemon in [
        DaemonSettings::default(),
        DaemonSettings {
            interfaces: Some(vec!["veth0".into(), "we\"ird\\name".into()]),
            mode: Some(AttachMode::Native),
        },
    ] {
        let config = Config::new(daemon, services.clone());
        let text = render(&config);
        let back = parse("dump.toml", &text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(back.daemon, config.daemon);
        assert_eq!(back.services, config.services);
        // And applying it over what it was dumped from changes nothing.
        let p = plan(
            &services,
            &back.services,
            ApplyOptions {
                prune: true,
                ..Default::default()
            },
        );
        assert!(p.is_empty(), "{p:?}");
    }
}

#[test]
fn api_services_are_checked_like_a_file() {
    let ok = services_to_proto(&running());
    assert_eq!(services_from_proto(&ok).unwrap(), running());
    let mut bad = ok.clone();
    bad[0].backends[0].weight = Some(70000);
    assert_eq!(
        services_from_proto(&bad).unwrap_err(),
        "service \"198.18.0.10:53/udp\": backend \"198.19.0.2:53\": weight 70000 out of range (0-65535)"
    );
    let mut dup = ok.clone();
    dup.push(ok[1].clone());
    assert!(
        services_from_proto(&dup)
            .unwrap_err()
            .ends_with("duplicate service (also service #2)")
    );
    let mut defaults = ok;
    defaults[1].table_size = None;
    defaults[1].backends[0].weight = None;
    let web = &services_from_proto(&defaults).unwrap()[&svc("198.18.0.10:80/tcp")];
    assert_eq!(web.table_size, DEFAULT_TABLE_SIZE);
    assert_eq!(web.backends[&be("198.19.0.2:8080")], DEFAULT_WEIGHT);
}

#[test]
fn the_readme_example_parses() {
    let readme = include_str!("../../../README.md");
    let start = readme
        .find("# /etc/xlb/xlb.toml")
        .expect("the README's example file");
    let end = start + readme[start..].find("```").expect("the end of the example");
    let c = parse("README.md", &readme[start..end]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.services.len(), 2);
    assert_eq!(c.daemon.mode, Some(AttachMode::Native));
}

#[test]
fn forwarding_is_a_service_option_diffed_by_apply() {
    use crate::forwarding::Forwarding;
    let text = "[[service]]\naddress = \"198.18.0.10:80/tcp\"\nforwarding = \"dsr-l2\"\n\n[[service]]\naddress = \"198.18.0.11:80/tcp\"\nforwarding = \"dsr-ipip\"\n";
    let c = parse("f.toml", text).unwrap();
    let f = |s: &str| c.services[&svc(s)].forwarding;
    assert_eq!(f("198.18.0.10:80/tcp"), Forwarding::DsrL2);
    assert_eq!(f("198.18.0.11:80/tcp"), Forwarding::DsrIpip);
    let lines = diff_from_one_plain_service(&c);
    assert_eq!(
        lines,
        "~ service 198.18.0.10:80/tcp forwarding=nat->dsr-l2\n\
         + service 198.18.0.11:80/tcp table_size=65537\n\
         ~ service 198.18.0.11:80/tcp forwarding=nat->dsr-ipip\n"
    );
    // Rendered back (config dump) and read again: the same.
    let again = parse("g.toml", &render(&c)).unwrap();
    assert_eq!(again.services, c.services);
    let err = parse(
        "f.toml",
        "[[service]]\naddress = \"198.18.0.10:80/tcp\"\nforwarding = \"dsr\"\n",
    )
    .unwrap_err()
    .to_string();
    assert_eq!(
        err,
        "f.toml:3: service \"198.18.0.10:80/tcp\": forwarding \"dsr\" is not one of nat, dsr-l2, dsr-ipip"
    );
}

/// The change lines from a running state of one service (198.18.0.10:80/tcp, default
/// options, no backends) to `c`'s services.
fn diff_from_one_plain_service(c: &Config) -> String {
    let mut running = Services::new();
    running.insert(svc("198.18.0.10:80/tcp"), spec(65537, &[]));
    render_changes(&changes(&plan(
        &running,
        &c.services,
        ApplyOptions::default(),
    )))
}

#[test]
fn affinity_is_a_service_option_diffed_by_apply() {
    let text = "[[service]]\naddress = \"198.18.0.10:80/tcp\"\naffinity = \"client-ip\"\naffinity_timeout = 30\n\n[[service]]\naddress = \"198.18.0.11:80/tcp\"\naffinity = \"client-ip\"\n";
    let c = parse("a.toml", text).unwrap();
    let a = |s: &str| c.services[&svc(s)].affinity;
    assert_eq!(
        a("198.18.0.10:80/tcp"),
        Affinity::ClientIp { timeout_s: 30 }
    );
    assert_eq!(
        a("198.18.0.11:80/tcp"),
        Affinity::ClientIp { timeout_s: 10800 }
    );
    // Running without affinity: the diff sets it; a new service gets a line for it too.
    let lines = diff_from_one_plain_service(&c);
    assert_eq!(
        lines,
        "~ service 198.18.0.10:80/tcp affinity=none->client-ip/30s\n\
         + service 198.18.0.11:80/tcp table_size=65537\n\
         ~ service 198.18.0.11:80/tcp affinity=none->client-ip/10800s\n"
    );
    let bad = [
        (
            "affinity = \"sticky\"",
            "a.toml:3: service \"198.18.0.10:80/tcp\": affinity \"sticky\" is not one of none, client-ip",
        ),
        (
            "affinity_timeout = 30",
            "a.toml:3: service \"198.18.0.10:80/tcp\": an affinity timeout needs affinity client-ip",
        ),
        (
            "affinity = \"client-ip\"\naffinity_timeout = 0",
            "a.toml:4: service \"198.18.0.10:80/tcp\": affinity timeout 0 out of range (1-86400)",
        ),
    ];
    for (keys, want) in bad {
        let text = format!("[[service]]\naddress = \"198.18.0.10:80/tcp\"\n{keys}\n");
        assert_eq!(parse("a.toml", &text).unwrap_err().to_string(), want);
    }
}

// ---- [service.check] ------------------------------------------------------------------

const CHECKED: &str = r#"[[service]]
address = "198.18.0.10:80/tcp"

[service.check]
kind = "http"
interval = "200ms"
fall = 2
http_path = "/healthz"
http_status = "200"
port = 9090

[[service.backend]]
address = "198.19.0.2:8080"
"#;

fn tcp_check(interval_ms: u32) -> CheckSettings {
    CheckSettings {
        kind: check::CheckKind::Tcp,
        interval_ms,
        timeout_ms: interval_ms.min(check::DEFAULT_TIMEOUT_MS),
        ..CheckSettings::default()
    }
}

#[test]
fn a_check_table_takes_the_cli_defaults() {
    let c = parse("xlb.toml", CHECKED).unwrap_or_else(|e| panic!("{e}"));
    let check = &c.services[&svc("198.18.0.10:80/tcp")].check;
    assert_eq!(
        check.to_string(),
        "http GET /healthz 200-200 port 9090, every 200ms, timeout 200ms, rise 2, fall 2, all down: fail-open"
    );
    // The same settings through the CLI's path (the API's message) come out the same.
    let m = proto::HealthCheck {
        kind: "http".into(),
        interval_ms: 200,
        fall: 2,
        port: Some(9090),
        http_path: "/healthz".into(),
        http_status: "200".into(),
        ..Default::default()
    };
    let svc = svc("198.18.0.10:80/tcp");
    assert_eq!(&CheckSettings::from_proto(&m, &svc).unwrap(), check);
    // No table: no check.
    let plain = parse("xlb.toml", EXAMPLE).unwrap();
    assert!(plain.services.values().all(|s| s.check.is_none()));
}

#[test]
fn check_errors_name_the_line_and_the_key() {
    let head = "[[service]]\naddress = \"198.18.0.10:80/tcp\"\n\n[service.check]\n";
    let cases: Vec<(&str, &str)> = vec![
        (
            "interval = \"1s\"\n",
            "xlb.toml:4: service \"198.18.0.10:80/tcp\": check: missing field `kind`",
        ),
        (
            "kind = \"icmp\"\n",
            "xlb.toml:5: service \"198.18.0.10:80/tcp\": check: check kind \"icmp\" is not one of none, tcp, http, grpc",
        ),
        (
            "kind = \"\"\n",
            "xlb.toml:5: service \"198.18.0.10:80/tcp\": check: check kind \"\" is not one of none, tcp, http, grpc",
        ),
        (
            "kind = \"tcp\"\ninterval = \"200\"\n",
            "xlb.toml:6: service \"198.18.0.10:80/tcp\": check: interval \"200\" is not a duration (e.g. 200ms, 2s, 1m)",
        ),
        (
            "kind = \"tcp\"\ninterval = 200\n",
            "xlb.toml:6: service \"198.18.0.10:80/tcp\": check: interval: invalid type: integer `200`, expected a string",
        ),
        (
            "kind = \"tcp\"\n\ninterval = \"5ms\"\n",
            "xlb.toml:7: service \"198.18.0.10:80/tcp\": check: interval 5ms out of range (10ms-1h)",
        ),
        (
            "kind = \"tcp\"\ninterval = \"100ms\"\ntimeout = \"200ms\"\n",
            "xlb.toml:7: service \"198.18.0.10:80/tcp\": check: timeout 200ms is longer than the interval 100ms",
        ),
        (
            "kind = \"tcp\"\nrise = 0\n",
            "xlb.toml:6: service \"198.18.0.10:80/tcp\": check: rise 0 out of range (1-100)",
        ),
        (
            "kind = \"tcp\"\nfall = 101\n",
            "xlb.toml:6: service \"198.18.0.10:80/tcp\": check: fall 101 out of range (1-100)",
        ),
        (
            "kind = \"tcp\"\nport = 70000\n",
            "xlb.toml:6: service \"198.18.0.10:80/tcp\": check: check port 70000 out of range (1-65535)",
        ),
        (
            "kind = \"tcp\"\nport = 0\n",
            "xlb.toml:6: service \"198.18.0.10:80/tcp\": check: check port 0 out of range (1-65535)",
        ),
        (
            "kind = \"tcp\"\naddr = \"2001:2::5\"\n",
            "xlb.toml:6: service \"198.18.0.10:80/tcp\": check: check address \"2001:2::5\": not of the address family of service 198.18.0.10:80/tcp",
        ),
        (
            "kind = \"tcp\"\naddr = \"backend-1\"\n",
            "xlb.toml:6: service \"198.18.0.10:80/tcp\": check: check address \"backend-1\": not an IP address",
        ),
        (
            "kind = \"none\"\nport = 9090\n",
            "xlb.toml:6: service \"198.18.0.10:80/tcp\": check: port needs kind tcp, http or grpc",
        ),
        (
            "kind = \"tcp\"\nhttp_path = \"/x\"\n",
            "xlb.toml:6: service \"198.18.0.10:80/tcp\": check: http_path needs kind http",
        ),
        (
            "kind = \"http\"\ngrpc_service = \"x\"\n",
            "xlb.toml:6: service \"198.18.0.10:80/tcp\": check: grpc_service needs kind grpc",
        ),
        (
            "kind = \"http\"\nhttp_path = \"healthz\"\n",
            "xlb.toml:6: service \"198.18.0.10:80/tcp\": check: HTTP path \"healthz\" does not start with /",
        ),
        (
            "kind = \"http\"\nhttp_method = \"get\"\n",
            "xlb.toml:6: service \"198.18.0.10:80/tcp\": check: HTTP method \"get\" is not a method name (letters, e.g. GET or HEAD)",
        ),
        (
            "kind = \"http\"\nhttp_status = \"399-200\"\n",
            "xlb.toml:6: service \"198.18.0.10:80/tcp\": check: HTTP status range \"399-200\" is not N or N-M with 100 <= N <= M <= 599",
        ),
        (
            "kind = \"tcp\"\nall_down = \"panic\"\n",
            "xlb.toml:6: service \"198.18.0.10:80/tcp\": check: all-down \"panic\" is not one of fail-open, drop",
        ),
        (
            "kind = \"tcp\"\nfal = 2\n",
            "xlb.toml:6: service \"198.18.0.10:80/tcp\": check: unknown field `fal`, expected one of `kind`, `interval`, `timeout`, `rise`, `fall`, `port`, `addr`, `http_path`, `http_method`, `http_status`, `http_host`, `grpc_service`, `all_down`",
        ),
    ];
    let mut failed = Vec::new();
    for (body, want) in &cases {
        let text = format!("{head}{body}");
        match parse("xlb.toml", &text) {
            Ok(_) => failed.push(format!("accepted:\n{text}")),
            Err(e) if e.to_string() != *want => {
                failed.push(format!("{text}\n  got:  {e}\n  want: {want}"))
            }
            Err(_) => {}
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n\n"));
}

#[test]
fn a_changed_check_is_one_change_line() {
    let web = svc("198.18.0.10:80/tcp");
    let mut before = running();
    before.get_mut(&web).unwrap().check = tcp_check(200);
    let mut want = before.clone();
    let c = parse("xlb.toml", CHECKED).unwrap();
    want.get_mut(&web).unwrap().check = c.services[&web].check.clone();
    let p = plan(&before, &want, ApplyOptions::default());
    assert_eq!(p.len(), 1);
    assert_eq!(
        render_changes(&changes(&p)),
        "~ service 198.18.0.10:80/tcp check tcp/200ms timeout=200ms rise=2 fall=3 all_down=fail-open -> http GET /healthz 200-200 port 9090/200ms timeout=200ms rise=2 fall=2 all_down=fail-open\n"
    );
    // A new service that checks: its check is set after its backends.
    let new = svc("198.18.0.11:80/tcp");
    let mut spec = spec(251, &[("198.19.0.2:80", 100)]);
    spec.check = tcp_check(200);
    let added: Services = [(new, spec)].into();
    let lines = render_changes(&changes(&plan(
        &Services::new(),
        &added,
        ApplyOptions::default(),
    )));
    assert_eq!(
        lines,
        "+ service 198.18.0.11:80/tcp table_size=251\n\
         + backend 198.18.0.11:80/tcp 198.19.0.2:80 weight=100\n\
         ~ service 198.18.0.11:80/tcp check none -> tcp/200ms timeout=200ms rise=2 fall=3 all_down=fail-open\n"
    );
    // Removing the table stops checking; only the rise count differing is a change too.
    let p = plan(&before, &running(), ApplyOptions::default());
    assert_eq!(
        render_changes(&changes(&p)),
        "~ service 198.18.0.10:80/tcp check tcp/200ms timeout=200ms rise=2 fall=3 all_down=fail-open -> none\n"
    );
    let mut rise = before.clone();
    rise.get_mut(&web).unwrap().check.rise = 3;
    assert_eq!(
        changes(&plan(&before, &rise, ApplyOptions::default())).len(),
        1
    );
    // As JSON, the settings are the API's, as `xlb service list --json` shows them.
    let json = serde_json::to_value(&changes(&p)[0]).unwrap();
    assert_eq!(json["op"], "set_check");
    assert_eq!(json["from"]["kind"], "tcp");
    assert_eq!(json["from"]["interval_ms"], 200);
    assert_eq!(json["to"]["kind"], "none");
    // And the change crosses the API.
    for c in changes(&p) {
        assert_eq!(Change::from_proto(&c.to_proto()), Some(c));
    }
}

#[test]
fn checks_survive_dump_and_the_api() {
    let mut services = running();
    let web = svc("198.18.0.10:80/tcp");
    let dns = svc("198.18.0.10:53/udp");
    services.get_mut(&web).unwrap().check = parse("xlb.toml", CHECKED).unwrap().services[&web]
        .check
        .clone();
    services.get_mut(&dns).unwrap().check = CheckSettings {
        kind: check::CheckKind::Grpc {
            service: "dns.v1".into(),
        },
        addr: Some("198.19.0.9".parse().unwrap()),
        all_down: check::AllDown::Drop,
        rise: 5,
        ..tcp_check(1000)
    };
    let v6 = svc("[2001:2::10]:50051/tcp");
    let mut grpc = spec(211, &[("[2001:2::2]:50051", 100)]);
    grpc.check = CheckSettings {
        kind: check::CheckKind::Grpc {
            service: String::new(),
        },
        ..tcp_check(60_000)
    };
    services.insert(v6, grpc);
    let config = Config::new(DaemonSettings::default(), services.clone());
    let text = render(&config);
    assert!(
        text.contains("[service.check]\nkind = \"http\"\ninterval = \"200ms\""),
        "{text}"
    );
    let back = parse("dump.toml", &text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(back.services, services, "{text}");
    let prune = ApplyOptions {
        prune: true,
        ..Default::default()
    };
    assert!(plan(&services, &back.services, prune).is_empty());
    // Through an Apply request and back.
    assert_eq!(
        services_from_proto(&services_to_proto(&services)).unwrap(),
        services
    );
    let mut bad = services_to_proto(&services);
    bad[0].check.as_mut().unwrap().interval_ms = 5;
    assert_eq!(
        services_from_proto(&bad).unwrap_err(),
        "service \"198.18.0.10:53/udp\": check: interval 5ms out of range (10ms-1h)"
    );
}

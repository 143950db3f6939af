//! The server and the client together, over a Unix socket in a temp dir.

use tonic::Code;

use super::proto::*;
use super::*;
use crate::client;
use crate::testing::{Recorder, TempDir};

struct Harness {
    _dir: TempDir,
    state: SharedState<Recorder>,
    client: control_client::ControlClient<tonic::transport::Channel>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
}

async fn start() -> Harness {
    let dir = TempDir::new();
    let sock = dir.0.join("xlbd.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    let state = Arc::new(Mutex::new(
        ControlState::new(Recorder::new(1 << 10)).with_slots_per_backend(0),
    ));
    let info = DaemonInfo {
        interfaces: vec!["veth0".into(), "veth1".into()],
        mode: AttachMode::Skb,
        started: Instant::now(),
        egress: Arc::new(Mutex::new(crate::egress::Egress::new(
            AttachMode::Skb,
            vec![],
        ))),
        node: Arc::new(crate::announce::Node::new(None, None)),
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let service = ControlService::new(state.clone(), info);
    let server = tokio::spawn(serve(listener, service, async {
        let _ = stopped.await;
    }));
    let client = client::connect(&sock).await.unwrap();
    Harness {
        _dir: dir,
        state,
        client,
        stop: Some(stop),
        server,
    }
}

impl Harness {
    async fn stop(mut self) {
        drop(self.client);
        self.stop.take().unwrap().send(()).unwrap();
        self.server.await.unwrap().unwrap();
    }
}

fn add_service(service: &str, table_size: Option<u32>) -> AddServiceRequest {
    AddServiceRequest {
        service: service.into(),
        table_size,
        check: None,
        affinity: None,
        forwarding: String::new(),
    }
}

fn add_backend(backend: &str, weight: Option<u32>) -> AddBackendRequest {
    AddBackendRequest {
        service: "198.18.0.10:80/tcp".into(),
        backend: backend.into(),
        weight,
    }
}

#[tokio::test]
async fn services_and_backends_round_trip() {
    let mut h = start().await;
    let c = &mut h.client;
    let s = c
        .add_service(add_service("198.18.0.10:80/TCP", Some(7)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        s,
        Service {
            service: "198.18.0.10:80/tcp".into(),
            id: 0,
            table_size: 7,
            table_offset: 0,
            generation: 1,
            backends: 0,
            check: Some(crate::check::CheckSettings::default().to_proto()),
            affinity: Some(super::proto::Affinity {
                mode: "none".into(),
                timeout_s: None,
            }),
            forwarding: "nat".into(),
        }
    );
    let b = c
        .add_backend(add_backend("198.19.0.2:8080", None))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (b.index, b.weight, b.backend.as_str()),
        (0, 100, "198.19.0.2:8080")
    );
    c.add_backend(add_backend("198.19.0.3:8080", Some(0)))
        .await
        .unwrap();
    let req = SetWeightRequest {
        service: "198.18.0.10:80/tcp".into(),
        backend: "198.19.0.3:8080".into(),
        weight: 50,
    };
    assert_eq!(c.set_weight(req).await.unwrap().into_inner().weight, 50);

    h.state
        .lock()
        .await
        .dataplane_mut()
        .fake
        .add_live_flows(1, 4);
    let all = c
        .list_backends(ListBackendsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let rows: Vec<(&str, u32, u64)> = all
        .backends
        .iter()
        .map(|b| (b.backend.as_str(), b.weight, b.flows))
        .collect();
    assert_eq!(
        rows,
        [("198.19.0.2:8080", 100, 0), ("198.19.0.3:8080", 50, 4)]
    );

    let list = c
        .list_services(ListServicesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.services.len(), 1);
    assert_eq!(
        (list.services[0].backends, list.services[0].generation),
        (2, 4)
    );

    let req = RemoveBackendRequest {
        service: "198.18.0.10:80/tcp".into(),
        backend: "198.19.0.2:8080".into(),
        force: false,
    };
    c.remove_backend(req).await.unwrap();
    let req = RemoveServiceRequest {
        service: "198.18.0.10:80/tcp".into(),
    };
    c.remove_service(req).await.unwrap();
    let list = c
        .list_services(ListServicesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(list.services.is_empty());
    assert!(h.state.lock().await.dataplane().fake.services.is_empty());
    h.stop().await;
}

#[tokio::test]
async fn errors_carry_codes_and_one_line_messages() {
    let mut h = start().await;
    let c = &mut h.client;
    c.add_service(add_service("198.18.0.10:80/tcp", Some(7)))
        .await
        .unwrap();
    c.add_backend(add_backend("198.19.0.2:8080", None))
        .await
        .unwrap();
    let cases = [
        (
            c.add_service(add_service("198.18.0.10:99999/tcp", None))
                .await,
            Code::InvalidArgument,
            "invalid service \"198.18.0.10:99999/tcp\": port 99999 out of range (1-65535)",
        ),
        (
            c.add_service(add_service("198.18.0.10:80/tcp", Some(7)))
                .await,
            Code::AlreadyExists,
            "service 198.18.0.10:80/tcp already exists",
        ),
        (
            c.add_service(add_service("198.18.0.11:80/tcp", Some(509)))
                .await,
            Code::ResourceExhausted,
            "no room for a table of 509 slots (largest free region: 505 slots; remove a service or raise xlbd --table-area)",
        ),
        (
            c.add_service(add_service("198.18.0.11:80/tcp", Some(9)))
                .await,
            Code::InvalidArgument,
            "table size 9 is not a prime number (Maglev needs a prime)",
        ),
    ];
    for (result, code, message) in cases {
        let e = result.unwrap_err();
        assert_eq!((e.code(), e.message()), (code, message));
    }
    let cases = [
        (
            c.add_backend(add_backend("198.19.0.2:8080", None)).await,
            Code::AlreadyExists,
            "backend 198.19.0.2:8080 is already in service 198.18.0.10:80/tcp",
        ),
        (
            c.add_backend(add_backend("[2001:2::2]:8080", None)).await,
            Code::InvalidArgument,
            "backend [2001:2::2]:8080 is IPv6 but service 198.18.0.10:80/tcp is IPv4 (no NAT between IPv4 and IPv6)",
        ),
        (
            c.add_backend(add_backend("198.19.0.9", None)).await,
            Code::InvalidArgument,
            "invalid backend \"198.19.0.9\": expected ADDR:PORT, e.g. 198.19.0.2:8080 or [2001:2::2]:8080",
        ),
        (
            c.add_backend(AddBackendRequest {
                service: "198.18.0.12:80/udp".into(),
                backend: "198.19.0.2:8080".into(),
                weight: None,
            })
            .await,
            Code::NotFound,
            "no such service: 198.18.0.12:80/udp",
        ),
    ];
    for (result, code, message) in cases {
        let e = result.unwrap_err();
        assert_eq!((e.code(), e.message()), (code, message));
    }
    let e = c
        .list_backends(ListBackendsRequest {
            service: "198.18.0.12:80/udp".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let e = c
        .remove_backend(RemoveBackendRequest {
            service: "198.18.0.10:80/tcp".into(),
            backend: "198.19.0.3:8080".into(),
            force: false,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    // Nothing of the refused requests reached the data path.
    let list = c
        .list_services(ListServicesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.services.len(), 1);
    assert_eq!(list.services[0].generation, 2);
    assert_eq!(h.state.lock().await.dataplane().fake.backends.len(), 1);
    h.stop().await;
}

#[tokio::test]
async fn a_drained_node_wants_no_vip_announced() {
    use super::proto::{NodeStatusRequest, SetNodeDrainRequest};
    let mut h = start().await;
    let c = &mut h.client;
    c.add_service(add_service("198.18.0.10:80/tcp", Some(7)))
        .await
        .unwrap();
    c.add_service(add_service("198.18.0.11:80/tcp", Some(7)))
        .await
        .unwrap();
    c.add_backend(add_backend("198.19.0.2:8080", None))
        .await
        .unwrap();
    let s = c
        .get_node_status(NodeStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    let shown: Vec<(&str, bool, &str)> = s
        .announcements
        .iter()
        .map(|a| (a.vip.as_str(), a.wanted, a.reason.as_str()))
        .collect();
    assert_eq!(
        shown,
        [
            ("198.18.0.10", true, "1 backend up"),
            ("198.18.0.11", false, "no backend is up")
        ]
    );
    assert!(!s.draining && s.announce_table == 0);
    // No announcer runs here: the reply comes after the 1 s wait for a round.
    let s = c
        .set_node_drain(SetNodeDrainRequest { drain: true })
        .await
        .unwrap()
        .into_inner();
    assert!(s.draining);
    assert!(s.announcements.iter().all(|a| !a.wanted && !a.announced));
    assert_eq!(s.announcements[0].reason, "the node is draining");
    let s = c
        .set_node_drain(SetNodeDrainRequest { drain: false })
        .await
        .unwrap()
        .into_inner();
    assert!(!s.draining && s.announcements[0].wanted);
    h.stop().await;
}

#[tokio::test]
async fn status_reports_the_daemon_and_counters() {
    let mut h = start().await;
    h.state.lock().await.dataplane_mut().counters[0].packets = 42;
    h.client
        .add_service(add_service("[2001:2::10]:53/udp", Some(7)))
        .await
        .unwrap();
    let s = h
        .client
        .status(StatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(s.version, env!("CARGO_PKG_VERSION"));
    assert_eq!(s.interfaces, ["veth0", "veth1"]);
    assert_eq!(s.mode, "skb");
    assert_eq!((s.services, s.backends, s.table_area), (1, 0, 1024));
    let names: Vec<&str> = s.counters.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, lb_common::stats::STAT_NAMES);
    assert_eq!(s.counters[0].packets, 42);
    h.stop().await;
}

#[tokio::test]
async fn connecting_to_nothing_says_why() {
    let dir = TempDir::new();
    let sock = dir.0.join("absent.sock");
    let e = client::connect(&sock).await.unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "cannot reach xlbd at {}: No such file or directory (os error 2)",
            sock.display()
        )
    );
}

/// A client that skips the CLI's checks gets the same one-line refusals from the daemon.
#[tokio::test]
async fn the_daemon_refuses_nonsense_from_any_client() {
    let mut h = start().await;
    let c = &mut h.client;
    c.add_service(add_service("198.18.0.10:80/tcp", Some(7)))
        .await
        .unwrap();
    let long = format!("198.18.0.10:80/tcp\n{}", "x".repeat(10_000));
    let cases: [(Result<(), Status>, &str); 5] = [
        (
            c.add_service(add_service("0.0.0.0:80/tcp", None))
                .await
                .map(drop),
            "invalid service \"0.0.0.0:80/tcp\": 0.0.0.0 is the unspecified address; a VIP or backend must be a unicast address",
        ),
        (
            c.add_service(add_service(&long, None)).await.map(drop),
            // 64 characters of each, the newline shown as \n.
            &format!(
                "invalid service \"198.18.0.10:80/tcp\\n{}…\": protocol \"tcp\\n{}…\" is not tcp or udp",
                "x".repeat(64 - 19),
                "x".repeat(64 - 4)
            ),
        ),
        (
            c.add_backend(add_backend("198.19.0.2:8080", Some(70000)))
                .await
                .map(drop),
            "weight 70000 out of range (0-65535)",
        ),
        (
            c.add_backend(add_backend("198.18.0.10:8080", None))
                .await
                .map(drop),
            "backend 198.18.0.10:8080 has the address of service 198.18.0.10:80/tcp: a backend cannot be a VIP (its packets would come back to the load balancer)",
        ),
        (
            c.set_weight(SetWeightRequest {
                service: "198.18.0.10:80/tcp".into(),
                backend: "198.19.0.2:8080".into(),
                weight: u32::MAX,
            })
            .await
            .map(drop),
            "weight 4294967295 out of range (0-65535)",
        ),
    ];
    for (result, message) in cases {
        let e = result.unwrap_err();
        assert_eq!((e.code(), e.message()), (Code::InvalidArgument, message));
    }
    let list = c
        .list_backends(ListBackendsRequest::default())
        .await
        .unwrap();
    assert!(list.into_inner().backends.is_empty());
    h.stop().await;
}

#[tokio::test]
async fn apply_reports_changes_and_names_the_culprit_in_metadata() {
    let mut h = start().await;
    let text = "[[service]]\naddress = \"198.18.0.10:80/tcp\"\ntable_size = 107\n\
                [[service.backend]]\naddress = \"198.19.0.2:8080\"\n";
    let cfg = crate::config::parse("x.toml", text).unwrap();
    let req = |dry_run: bool| ApplyRequest {
        services: crate::config::services_to_proto(&cfg.services),
        prune: false,
        force: false,
        dry_run,
    };
    let dry = h.client.apply(req(true)).await.unwrap().into_inner();
    let ops: Vec<&str> = dry.changes.iter().map(|c| c.op.as_str()).collect();
    assert_eq!(ops, ["add_service", "add_backend"]);
    assert!(h.state.lock().await.services().is_empty());
    let done = h.client.apply(req(false)).await.unwrap().into_inner();
    assert_eq!(done.changes, dry.changes);
    assert_eq!(h.state.lock().await.services().len(), 1);
    let again = h.client.apply(req(false)).await.unwrap().into_inner();
    assert!(again.changes.is_empty());

    // A table larger than half the area (512 slots here): refused with the service named.
    let mut big = req(false);
    big.services[0].table_size = Some(521);
    let e = h.client.apply(big).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message()
            .starts_with("service \"198.18.0.10:80/tcp\": table size 521 does not fit"),
        "{}",
        e.message()
    );
    let service = e.metadata().get(META_SERVICE).unwrap().to_str().unwrap();
    assert_eq!(service, "198.18.0.10:80/tcp");
    assert!(e.metadata().get(META_BACKEND).is_none());

    // Bad input is checked by the daemon too.
    let mut bad = req(false);
    bad.services[0].backends[0].weight = Some(70000);
    let e = h.client.apply(bad).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().ends_with("weight 70000 out of range (0-65535)"));
    assert_eq!(h.state.lock().await.running(), cfg.services);
    h.stop().await;
}

#[tokio::test]
async fn check_settings_round_trip_and_bad_ones_change_nothing() {
    let mut h = start().await;
    let c = &mut h.client;
    let tcp = HealthCheck {
        kind: "tcp".into(),
        interval_ms: 200,
        timeout_ms: 100,
        rise: 2,
        fall: 2,
        port: Some(9090),
        ..Default::default()
    };
    let s = c
        .add_service(AddServiceRequest {
            check: Some(tcp.clone()),
            ..add_service("198.18.0.10:80/tcp", Some(7))
        })
        .await
        .unwrap()
        .into_inner();
    let check = s.check.unwrap();
    assert_eq!(
        (check.kind.as_str(), check.port, check.all_down.as_str()),
        ("tcp", Some(9090), "fail-open")
    );
    let b = c
        .add_backend(add_backend("198.19.0.2:8080", None))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (b.state.as_str(), b.health.as_str()),
        ("checking", "checking")
    );
    assert!(b.since_unix_ms > 0 && b.last_check.is_none(), "{b:?}");
    // A refused add creates no service; a refused set-check keeps the old settings.
    let bad = HealthCheck {
        timeout_ms: 300,
        ..tcp.clone()
    };
    let e = c
        .add_service(AddServiceRequest {
            check: Some(bad.clone()),
            ..add_service("198.18.0.11:80/tcp", Some(7))
        })
        .await
        .unwrap_err();
    assert_eq!(
        (e.code(), e.message()),
        (
            Code::InvalidArgument,
            "timeout 300ms is longer than the interval 200ms"
        )
    );
    let e = c
        .set_check(SetCheckRequest {
            service: "198.18.0.10:80/tcp".into(),
            check: Some(bad),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let list = c
        .list_services(ListServicesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.services.len(), 1);
    assert_eq!(list.services[0].check.as_ref().unwrap().port, Some(9090));
    // none stops checking: the backend is up at once.
    let s = c
        .set_check(SetCheckRequest {
            service: "198.18.0.10:80/tcp".into(),
            check: Some(HealthCheck {
                kind: "none".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(s.check.unwrap().kind, "none");
    let rows = c
        .list_backends(ListBackendsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rows.backends[0].state, "up");
    assert!(h.state.lock().await.check_targets().is_empty());
    h.stop().await;
}

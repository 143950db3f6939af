use std::collections::BTreeMap;

use lb_common::stats::{Counter as Stat, STAT_NAMES, STAT_NEW_FLOW_CAPPED};
use openmetrics_parser::{MetricsExposition, OpenMetricsType, OpenMetricsValue};

use super::*;
use crate::dataplane::FakeDataplane;
use crate::state::{BackendInfo, ControlState, ServiceInfo};

type Exposition = MetricsExposition<OpenMetricsType, OpenMetricsValue>;

fn usage() -> Usage {
    let service = "198.18.0.10:80/tcp".parse().unwrap();
    let backend = |addr: &str, index, packets, flows| BackendInfo {
        service,
        backend: addr.parse().unwrap(),
        index,
        weight: 100,
        packets,
        bytes: packets * 60,
        flows,
        new_flows: flows + 1,
        state: "up",
        since: std::time::SystemTime::UNIX_EPOCH,
        health: crate::health::Health {
            last: Some(crate::health::CheckResult {
                ok: true,
                detail: "ok".into(),
                latency: std::time::Duration::from_millis(3),
                at: std::time::SystemTime::UNIX_EPOCH,
            }),
            ..crate::health::Health::new(true)
        },
    };
    Usage {
        services: vec![ServiceInfo {
            service,
            id: 0,
            table_size: 65537,
            table_offset: 0,
            generation: 4,
            backends: 2,
            check: Default::default(),
            affinity: Default::default(),
            forwarding: crate::forwarding::Forwarding::DsrL2,
        }],
        backends: vec![
            backend("198.19.0.2:8080", 0, 10, 2),
            backend("[2001:2::2]:8080", 1, 7, 1),
        ],
        counters: STAT_NAMES
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let i = i as u64;
                (
                    *n,
                    Stat {
                        packets: 100 + i,
                        bytes: 1000 + i,
                    },
                )
            })
            .collect(),
        flow_entries: 6,
    }
}

/// The value of `family`'s sample whose labels are exactly `labels`.
fn value(exp: &Exposition, family: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let want: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let f = exp.families.get(family)?;
    f.iter_samples().find_map(|s| {
        let got: BTreeMap<String, String> = s
            .get_labelset()
            .ok()?
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        (got == want).then(|| match &s.value {
            OpenMetricsValue::Counter(c) => c.value.as_f64(),
            OpenMetricsValue::Gauge(n) => n.as_f64(),
            other => panic!("{family}: unexpected {other:?}"),
        })
    })
}

#[test]
fn every_family_parses_with_its_type_and_values() {
    let text = encode(&usage(), 1024);
    let exp = openmetrics_parser::openmetrics::parse_openmetrics(&text)
        .unwrap_or_else(|e| panic!("{e}\n{text}"));
    let ty = |f: &str| exp.families[f].family_type;
    for counter in [
        "xlb_backend_packets",
        "xlb_backend_bytes",
        "xlb_service_table_changes",
        "xlb_packets",
        "xlb_bytes",
        "xlb_received_packets",
        "xlb_received_bytes",
        "xlb_new_flows",
        "xlb_new_flows_capped",
    ] {
        assert_eq!(ty(counter), OpenMetricsType::Counter, "{counter}");
        assert!(text.contains(&format!("\n{counter}_total")), "{counter}");
    }
    for gauge in [
        "xlb_backend_live_flows",
        "xlb_backend_weight",
        "xlb_service_backends",
        "xlb_service_live_flows",
        "xlb_service_table_slots",
        "xlb_service_forwarding",
        "xlb_flow_table_entries",
        "xlb_flow_table_capacity",
    ] {
        assert_eq!(ty(gauge), OpenMetricsType::Gauge, "{gauge}");
    }
    assert!(
        text.contains(
            "xlb_service_forwarding{service=\"198.18.0.10:80/tcp\",forwarding=\"dsr-l2\"} 1"
        ),
        "the service's forwarding mode is a label"
    );
    assert_eq!(
        exp.families.len(),
        22,
        "families: {:?}",
        exp.families.keys()
    );

    let svc = ("service", "198.18.0.10:80/tcp");
    let b6 = [svc, ("backend", "[2001:2::2]:8080")];
    assert_eq!(value(&exp, "xlb_backend_packets", &b6), Some(7.0));
    assert_eq!(value(&exp, "xlb_backend_bytes", &b6), Some(420.0));
    assert_eq!(value(&exp, "xlb_backend_live_flows", &b6), Some(1.0));
    assert_eq!(value(&exp, "xlb_service_live_flows", &[svc]), Some(3.0));
    assert_eq!(value(&exp, "xlb_service_backends", &[svc]), Some(2.0));
    assert_eq!(value(&exp, "xlb_service_table_changes", &[svc]), Some(4.0));
    assert_eq!(value(&exp, "xlb_flow_table_entries", &[]), Some(6.0));
    assert_eq!(value(&exp, "xlb_flow_table_capacity", &[]), Some(1024.0));
    // rx is counter 0, new_flow 4, drop_no_backend 5, pass_ttl 7, forward 2.
    assert_eq!(value(&exp, "xlb_received_packets", &[]), Some(100.0));
    assert_eq!(value(&exp, "xlb_new_flows", &[]), Some(104.0));
    let vr = |v, r| [("verdict", v), ("reason", r)];
    assert_eq!(
        value(&exp, "xlb_packets", &vr("drop", "no_backend")),
        Some(105.0)
    );
    assert_eq!(value(&exp, "xlb_packets", &vr("pass", "ttl")), Some(107.0));
    assert_eq!(
        value(&exp, "xlb_bytes", &vr("forward", "forward")),
        Some(1002.0)
    );
    // Every global counter but rx, new_flow and new_flow_capped (second counts of
    // forwarded packets) is one verdict/reason series.
    assert_eq!(
        exp.families["xlb_packets"].iter_samples().count(),
        STAT_NAMES.len() - 3
    );
    assert_eq!(
        value(&exp, "xlb_new_flows_capped", &[]),
        Some(100.0 + f64::from(STAT_NEW_FLOW_CAPPED))
    );
}

#[test]
fn no_services_still_gives_the_global_families() {
    let u = Usage {
        services: vec![],
        backends: vec![],
        ..usage()
    };
    let text = encode(&u, 8);
    let exp = openmetrics_parser::openmetrics::parse_openmetrics(&text).unwrap();
    assert_eq!(value(&exp, "xlb_flow_table_capacity", &[]), Some(8.0));
    assert!(!text.contains("xlb_backend_packets_total"), "{text}");
}

#[test]
fn verdicts_follow_the_counter_names() {
    assert_eq!(verdict("drop_flow_table"), ("drop", "flow_table"));
    assert_eq!(verdict("pass_egress"), ("pass", "egress"));
    assert_eq!(verdict("icmp_error"), ("forward", "icmp_error"));
}

#[test]
fn only_loopback_unless_public() {
    let lo: SocketAddr = "127.0.0.1:9100".parse().unwrap();
    let lo6: SocketAddr = "[::1]:9100".parse().unwrap();
    let any: SocketAddr = "0.0.0.0:9100".parse().unwrap();
    assert!(check_addr(lo, false).is_ok());
    assert!(check_addr(lo6, false).is_ok());
    assert_eq!(
        check_addr(any, false).unwrap_err().to_string(),
        "--metrics-addr 0.0.0.0:9100 is not a loopback address: the metrics name every service and backend; add --metrics-public to serve them beyond this host"
    );
    assert!(check_addr(any, true).is_ok());
}

/// `usage` reads the connection table once: live flows per backend and its entries.
#[test]
fn usage_counts_live_flows_and_entries() {
    let mut st = ControlState::new(FakeDataplane::new(2 * 65537));
    let web = "198.18.0.10:80/tcp".parse().unwrap();
    st.add_service(web, None).unwrap();
    let b = st
        .add_backend(&web, "198.19.0.2:8080".parse().unwrap(), None)
        .unwrap();
    st.dataplane_mut().add_live_flows(b.index, 3);
    let u = st.usage().unwrap();
    assert_eq!(u.flow_entries, 6);
    assert_eq!(u.backends.len(), 1);
    assert_eq!(u.backends[0].flows, 3);
    assert_eq!(u.services[0].generation, 2);
    assert_eq!(u.counters.len(), STAT_NAMES.len());
}

/// The HTTP side: GET /metrics answers the exposition, anything else a 404 or 405.
#[tokio::test]
async fn serves_get_metrics_over_http() {
    let st = ControlState::new(FakeDataplane::new(2 * 65537));
    let state = std::sync::Arc::new(tokio::sync::Mutex::new(st));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(serve(listener, state.clone(), 64));
    let get = |req: &'static str| async move {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    };
    let ok = get("GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
    assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
    assert!(ok.contains(CONTENT_TYPE), "{ok}");
    assert!(ok.contains("\nxlb_flow_table_capacity 64\n"), "{ok}");
    assert!(ok.ends_with("# EOF\n"), "{ok}");
    let missing = get("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
    assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
    let post =
        get("POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .await;
    assert!(post.starts_with("HTTP/1.1 405"), "{post}");

    // A scraper's keep-alive connection, idle after one scrape, when the daemon stops:
    // the state is the daemon's alone again once the server task is gone.
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut idle = tokio::net::TcpStream::connect(addr).await.unwrap();
    idle.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 256];
    assert!(idle.read(&mut buf).await.unwrap() > 0);
    // Neither the idle connection nor the server holds the state between scrapes.
    assert_eq!(std::sync::Arc::strong_count(&state), 1);
    server.abort();
    let _ = server.await;
    assert!(std::sync::Arc::try_unwrap(state).is_ok());
    drop(idle);
}

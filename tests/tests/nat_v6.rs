//! NAT load balancing of IPv6 through xlbd (issue 4): connections and UDP flows to an IPv6
//! VIP spread over the backends and stay on one, as `nat.rs` checks for IPv4.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use xlb_testbed::{Proto, Testbed, VIP6, backend_id, flows_per_backend, require_root};

const BACKEND_PORT: u16 = 8080;

/// 3 clients, 3 backends with id servers, xlbd with `service` over the backends' IPv6
/// addresses ([2001:2:0:10j::2]:8080).
fn lb_testbed(service: &str) -> Testbed {
    let mut tb = Testbed::new(3, 3).expect("testbed");
    for j in 0..3 {
        tb.spawn_id_server(j, BACKEND_PORT).expect("id server");
    }
    tb.start_xlbd(&[]).expect("start xlbd");
    tb.add_service_with_backends(service, BACKEND_PORT)
        .expect("configure service");
    tb
}

/// 10 flows from each client to `[VIP6]:port`, 4 messages each: all succeed, each flow's
/// answers come from one backend, and every backend serves some.
fn spread_and_stick(tb: &Testbed, proto: Proto, port: u16) {
    let vip = SocketAddr::new(VIP6.into(), port);
    let flows: Vec<_> = tb
        .flows(proto, vip, 10, 4)
        .into_iter()
        .map(|(k, r)| r.unwrap_or_else(|e| panic!("{proto:?} flow from client {k}: {e:#}")))
        .collect();
    assert_eq!(flows.len(), 30);
    for f in &flows {
        assert!(f.local.is_ipv6(), "flow from {}", f.local);
        assert!(
            f.backend().is_some(),
            "flow {} switched backends: {:?}",
            f.local,
            f.ids
        );
    }
    let per_backend = flows_per_backend(&flows);
    eprintln!("per backend: {per_backend:?}");
    let used: BTreeSet<String> = per_backend.into_keys().collect();
    assert_eq!(used, (0..3).map(backend_id).collect());
}

#[test]
fn tcp_connections_spread_and_stick_v6() {
    if !require_root("tcp_connections_spread_and_stick_v6") {
        return;
    }
    let tb = lb_testbed("[2001:2::10]:80/tcp");
    spread_and_stick(&tb, Proto::Tcp, 80);
}

#[test]
fn udp_flows_spread_and_stick_v6() {
    if !require_root("udp_flows_spread_and_stick_v6") {
        return;
    }
    let tb = lb_testbed("[2001:2::10]:53/udp");
    spread_and_stick(&tb, Proto::Udp, 53);
}

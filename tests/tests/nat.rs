//! NAT load balancing through xlbd: connections and UDP flows to a VIP (IPv4 and IPv6)
//! spread over the backends and stay on one, with the backends on point-to-point links or
//! behind a bridge (native and skb mode); traffic not for a VIP is left alone; removed
//! backends get no new connections.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use std::time::{Duration, Instant};

use serde_json::Value;
use xlb_testbed::{
    Flow, Layout, Proto, Testbed, VIP, VIP6, assert_sticky, backend_id, flows_per_backend, ping,
    require_root,
};

const BACKEND_PORT: u16 = 8080;

/// 3 clients, 3 backends with id servers, xlbd running with `service` over all backends.
fn lb_testbed(service: &str) -> Testbed {
    lb_testbed_with(Layout::PointToPoint, "native", service)
}

/// [`lb_testbed`] with the backends joined as `layout` says, xlbd in `mode`.
fn lb_testbed_with(layout: Layout, mode: &str, service: &str) -> Testbed {
    let mut tb = Testbed::with_layout(3, 3, layout).expect("testbed");
    for j in 0..3 {
        tb.spawn_id_server(j, BACKEND_PORT).expect("id server");
    }
    tb.start_xlbd(&["--mode", mode]).expect("start xlbd");
    tb.add_service_with_backends(service, BACKEND_PORT)
        .expect("configure service");
    tb
}

/// 10 flows from each client, 4 messages each; all must succeed and be sticky.
fn spread(tb: &Testbed, proto: Proto, vip: SocketAddr) -> Vec<Flow> {
    let flows: Vec<Flow> = tb
        .flows(proto, vip, 10, 4)
        .into_iter()
        .map(|(k, r)| r.unwrap_or_else(|e| panic!("{proto:?} flow from client {k}: {e:#}")))
        .collect();
    assert_eq!(flows.len(), 30);
    assert_sticky(&flows);
    flows
}

fn backends_used(flows: &[Flow]) -> BTreeSet<String> {
    flows_per_backend(flows).into_keys().collect()
}

fn ids(js: &[usize]) -> BTreeSet<String> {
    js.iter().map(|&j| backend_id(j)).collect()
}

#[test]
fn tcp_connections_spread_and_stick() {
    if !require_root("tcp_connections_spread_and_stick") {
        return;
    }
    let tb = lb_testbed("198.18.0.10:80/tcp");
    let flows = spread(&tb, Proto::Tcp, SocketAddr::new(VIP.into(), 80));
    eprintln!("per backend: {:?}", flows_per_backend(&flows));
    assert_eq!(backends_used(&flows), ids(&[0, 1, 2]));
}

#[test]
fn udp_flows_spread_and_stick() {
    if !require_root("udp_flows_spread_and_stick") {
        return;
    }
    let tb = lb_testbed("198.18.0.10:53/udp");
    let flows = spread(&tb, Proto::Udp, SocketAddr::new(VIP.into(), 53));
    eprintln!("per backend: {:?}", flows_per_backend(&flows));
    assert_eq!(backends_used(&flows), ids(&[0, 1, 2]));
}

#[test]
fn non_vip_traffic_untouched() {
    if !require_root("non_vip_traffic_untouched") {
        return;
    }
    let tb = lb_testbed("198.18.0.10:80/tcp");
    let lb_addr = tb.client(0).lb_addr();
    tb.spawn_id_server_in(tb.lb(), "lb", 7000)
        .expect("server in the LB ns");
    let flow = tb
        .flow(Proto::Tcp, 0, SocketAddr::new(lb_addr.into(), 7000), 3)
        .expect("TCP to the LB's own address");
    assert_eq!(flow.ids, vec!["lb"; 3]);
    let direct = SocketAddr::new(tb.backend(1).addr().into(), BACKEND_PORT);
    let flow = tb
        .flow(Proto::Tcp, 2, direct, 3)
        .expect("TCP straight to a backend");
    assert_eq!(flow.ids, vec![backend_id(1); 3]);
    let client = &tb.client(0).ns;
    assert!(ping(client, lb_addr.into()).unwrap(), "ping {lb_addr}");
    let backend = tb.backend(2).addr();
    assert!(ping(client, backend.into()).unwrap(), "ping {backend}");
}

#[test]
fn backend_remove_moves_new_connections() {
    if !require_root("backend_remove_moves_new_connections") {
        return;
    }
    let service = "198.18.0.10:80/tcp";
    let tb = lb_testbed(service);
    let vip = SocketAddr::new(VIP.into(), 80);
    let removed = format!("{}:{BACKEND_PORT}", tb.backend(2).addr());
    tb.xlb_ok(&["backend", "remove", service, &removed])
        .expect("backend remove");
    let flows = spread(&tb, Proto::Tcp, vip);
    eprintln!(
        "per backend after removing {removed}: {:?}",
        flows_per_backend(&flows)
    );
    assert_eq!(backends_used(&flows), ids(&[0, 1]));
}

/// The IPv6 versions (issue 4): the service over the backends' IPv6 addresses
/// ([2001:2:0:10j::2]:8080), flows from the clients' IPv6 addresses.
fn spread_and_stick_v6(service: &str, proto: Proto, port: u16) {
    let tb = lb_testbed(service);
    let flows = spread(&tb, proto, SocketAddr::new(VIP6.into(), port));
    assert!(flows.iter().all(|f| f.local.is_ipv6()));
    eprintln!("per backend: {:?}", flows_per_backend(&flows));
    assert_eq!(backends_used(&flows), ids(&[0, 1, 2]));
}

#[test]
fn tcp_connections_spread_and_stick_v6() {
    if !require_root("tcp_connections_spread_and_stick_v6") {
        return;
    }
    spread_and_stick_v6("[2001:2::10]:80/tcp", Proto::Tcp, 80);
}

#[test]
fn udp_flows_spread_and_stick_v6() {
    if !require_root("udp_flows_spread_and_stick_v6") {
        return;
    }
    spread_and_stick_v6("[2001:2::10]:53/udp", Proto::Udp, 53);
}

/// Issue 14: the backends behind a Linux bridge in the LB namespace (as docker0/cni0),
/// XDP on the client links and the bridge ports. The FIB's egress toward a backend is the
/// bridge, which cannot take a native XDP redirect: requests go through the kernel
/// (`pass_egress`), replies are redirected to the client links in XDP. In skb mode a
/// generic redirect to the bridge works, so both directions stay in XDP.
fn bridged(mode: &str, service: &str, proto: Proto, port: u16) {
    let tb = lb_testbed_with(Layout::Bridge, mode, service);
    let flows = spread(&tb, proto, SocketAddr::new(VIP.into(), port));
    eprintln!(
        "{mode}, bridged, per backend: {:?}",
        flows_per_backend(&flows)
    );
    assert_eq!(backends_used(&flows), ids(&[0, 1, 2]));

    let status = |tb: &Testbed| -> Value {
        serde_json::from_str(&tb.xlb_ok(&["status", "--json"]).expect("status")).unwrap()
    };
    let device = |s: &Value, prefix: &str| -> Value {
        let all = s["egress"].as_array().expect("egress list").clone();
        all.into_iter()
            .find(|d| d["name"].as_str().unwrap().starts_with(prefix))
            .unwrap_or_else(|| panic!("no device {prefix}* in {s}"))
    };
    let s = status(&tb);
    let counter = |name: &str| s["counters"][name]["packets"].as_u64().unwrap();
    let (passed, replies) = (counter("pass_egress"), counter("reply"));
    eprintln!("{mode}: pass_egress={passed} reply={replies}");
    let client_link = device(&s, "c0-");
    assert_eq!(
        (
            client_link["path"].as_str(),
            client_link["attached"].as_bool()
        ),
        (Some("xdp"), Some(true))
    );
    assert!(replies >= 30, "replies in XDP: {replies}");
    let bridge = device(&s, "br-");
    if mode == "skb" {
        assert_eq!(bridge["path"], "xdp", "{bridge}");
        assert_eq!(passed, 0);
        return;
    }
    assert_eq!(bridge["path"], "kernel", "{bridge}");
    assert!(passed >= 30, "requests through the kernel: {passed}");
    // The daemon learns the egress in use at its next sync (every second).
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let seen = device(&status(&tb), "br-")["kernel_packets"]
            .as_u64()
            .unwrap();
        if seen > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the bridge's kernel packets never showed"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let log = std::fs::read_to_string(tb.xlbd_log()).unwrap();
    assert!(log.contains("kernel path"), "{log}");
}

#[test]
fn bridged_backends_tcp_native() {
    if !require_root("bridged_backends_tcp_native") {
        return;
    }
    bridged("native", "198.18.0.10:80/tcp", Proto::Tcp, 80);
}

#[test]
fn bridged_backends_udp_native() {
    if !require_root("bridged_backends_udp_native") {
        return;
    }
    bridged("native", "198.18.0.10:53/udp", Proto::Udp, 53);
}

#[test]
fn bridged_backends_tcp_skb() {
    if !require_root("bridged_backends_tcp_skb") {
        return;
    }
    bridged("skb", "198.18.0.10:80/tcp", Proto::Tcp, 80);
}

#[test]
fn bridged_backends_udp_skb() {
    if !require_root("bridged_backends_udp_skb") {
        return;
    }
    bridged("skb", "198.18.0.10:53/udp", Proto::Udp, 53);
}

//! The testbed itself, without xlbd: the LB namespace forwards between clients and
//! backends with plain kernel routing, and everything is removed on drop.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use xlb_testbed::{Proto, Testbed, backend_id, ping, require_root};

#[test]
fn testbed_routes_without_xlbd() {
    if !require_root("testbed_routes_without_xlbd") {
        return;
    }
    let tb = Testbed::new(2, 2).expect("testbed");
    let names: Vec<String> = std::iter::once(tb.lb())
        .chain(tb.clients().iter().chain(tb.backends()).map(|n| &n.ns))
        .map(|ns| ns.name().to_owned())
        .collect();
    for j in 0..2 {
        tb.spawn_id_server(j, 8080).expect("id server");
    }
    for k in 0..2 {
        for j in 0..2 {
            let to = SocketAddr::new(tb.backend(j).addr().into(), 8080);
            for proto in [Proto::Tcp, Proto::Udp] {
                let flow = tb.flow(proto, k, to, 3).expect("flow through the LB ns");
                assert_eq!(
                    flow.ids,
                    vec![backend_id(j); 3],
                    "{proto:?} client {k} -> {to}"
                );
                assert_eq!(flow.local.ip(), IpAddr::from(tb.client(k).addr()));
            }
        }
        let client = &tb.client(k).ns;
        assert!(
            ping(client, tb.client(k).lb_addr().into()).unwrap(),
            "ping LB"
        );
        assert!(
            ping(client, tb.backend(1).addr().into()).unwrap(),
            "ping backend"
        );
    }
    // Nothing answers outside the plan: no route leaves the testbed.
    assert!(!ping(&tb.client(0).ns, "198.18.99.2".parse().unwrap()).unwrap());
    drop(tb);
    for name in names {
        let path = format!("/var/run/netns/{name}");
        assert!(!Path::new(&path).exists(), "{path} left behind");
    }
}

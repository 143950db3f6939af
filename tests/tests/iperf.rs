//! Bulk TCP through the VIP with iperf3, both directions. Figures are printed, not asserted
//! (tests never time things); the test asserts that data moved each way.

use std::net::IpAddr;

use xlb_testbed::{Testbed, VIP, report, require_root};

const PORT: u16 = 5201;
const SECS: u32 = 3;

#[test]
fn iperf_through_vip_both_ways() {
    if !require_root("iperf_through_vip_both_ways") {
        return;
    }
    // One backend: iperf3's control and data connections must reach the same server.
    let mut tb = Testbed::new(1, 1).expect("testbed");
    tb.iperf_server(0, PORT).expect("iperf3 server");
    tb.start_xlbd(&[]).expect("start xlbd");
    tb.add_service_with_backends(&format!("{VIP}:{PORT}/tcp"), PORT)
        .expect("configure service");
    let backend: IpAddr = tb.backend(0).addr().into();
    for (label, addr) in [("via VIP", IpAddr::from(VIP)), ("direct", backend)] {
        for reverse in [false, true] {
            let r = tb
                .iperf_client(0, addr, PORT, SECS, reverse)
                .unwrap_or_else(|e| panic!("iperf3 {label} reverse={reverse}: {e:#}"));
            let dir = if reverse {
                "backend->client"
            } else {
                "client->backend"
            };
            report(&format!(
                "iperf3 {label:8} {dir}: {:.2} Gbit/s",
                r.received_gbps()
            ));
            assert!(
                r.sent_bps > 0.0 && r.received_bps > 0.0,
                "{label} {dir}: {r:?}"
            );
        }
    }
}

//! xlb on a real NIC driver: a qemu guest with two virtio-net NICs, xlbd in it in native
//! (driver) XDP mode, a service with 3 backends added with the CLI in the guest, and 30 TCP
//! connections from a client namespace on the host through the VIP.

use std::net::SocketAddr;
use std::time::Instant;

use xlb_testbed::vm::{self, Vm};
use xlb_testbed::{VIP, flows_per_backend, report};

const BACKENDS: usize = 3;
const CONNECTIONS: usize = 30;
const LINES: usize = 5;
const BACKEND_PORT: u16 = 8080;

#[test]
fn native_xdp_on_virtio_net_balances_sticky_connections() {
    let name = "vm::native_xdp_on_virtio_net_balances_sticky_connections";
    if !xlb_testbed::require_root(name) {
        return;
    }
    if let Some(why) = vm::unavailable() {
        report(&format!("SKIPPED ({why}): {name}"));
        return;
    }
    let start = Instant::now();
    let vm = Vm::boot(BACKENDS).expect("booting the guest");
    let kernel = vm.guest_ok("uname -r").expect("uname in the guest");
    report(&format!(
        "vm: booted kernel {} in {:.1} s ({})",
        kernel.trim(),
        vm.boot_time().as_secs_f64(),
        vm.accel().name()
    ));
    for j in 0..BACKENDS {
        vm.spawn_id_server(j, BACKEND_PORT).expect("id server");
    }
    let xlb = vm::guest_bin("xlb").expect("xlb built");
    let service = format!("{VIP}:80/tcp");
    let mut cli = format!("{xlb} service add {service}\n");
    for j in 0..BACKENDS {
        let backend = vm::backend_addr(j);
        cli += &format!("{xlb} backend add {service} {backend}:{BACKEND_PORT}\n");
    }
    let out = vm
        .start_xlbd("native", &cli)
        .expect("xlbd and the CLI in the guest");
    assert_eq!(out.matches("added backend").count(), BACKENDS, "{out}");
    for iface in ["eth0", "eth1"] {
        let mode = vm.xdp_mode(iface).expect("ip link in the guest");
        assert_eq!(mode, "xdp", "{iface} must show driver mode, not {mode}");
    }

    let vip = SocketAddr::new(VIP.into(), 80);
    let flows: Vec<_> = vm
        .tcp_flows(vip, CONNECTIONS, LINES)
        .into_iter()
        .map(|f| f.expect("a TCP connection through the VIP"))
        .collect();
    let sticky = flows.iter().filter(|f| f.backend().is_some()).count();
    assert!(flows.iter().all(|f| f.ids.len() == LINES));
    assert_eq!(sticky, CONNECTIONS, "every connection stays on one backend");
    let per_backend = flows_per_backend(&flows);
    assert_eq!(
        per_backend.len(),
        BACKENDS,
        "all backends used: {per_backend:?}"
    );

    // The data path's own counters: the XDP program forwarded these packets.
    let stats = vm.guest_ok(&format!("{xlb} stats")).expect("xlb stats");
    let forwarded = stats
        .lines()
        .find_map(|l| l.strip_prefix("forward"))
        .and_then(|r| r.split_whitespace().next()?.parse::<u64>().ok())
        .expect("a forward counter");
    assert!(
        forwarded >= (CONNECTIONS * LINES) as u64,
        "forward counter {forwarded}:\n{stats}"
    );
    report(&format!(
        "vm: connections={CONNECTIONS} backends_used={} sticky={sticky}/{CONNECTIONS} \
         forwarded={forwarded} per_backend={per_backend:?} in {:.1} s",
        per_backend.len(),
        start.elapsed().as_secs_f64()
    ));
}

//! `cargo xtask demo vm`: the main demo's story on a real NIC driver. A qemu guest with two
//! virtio-net NICs (the VM testbed, tests/src/vm.rs), xlbd in it in native XDP mode, a VIP
//! with 3 backends configured with the CLI in the guest, and 30 TCP connections from a
//! client namespace on the host through it.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use anyhow::Result;
use xlb_testbed::vm::{self, Vm};
use xlb_testbed::{Flow, VIP, backend_id, flows_per_backend};

const BACKENDS: usize = 3;
const CONNECTIONS: usize = 30;
const LINES: usize = 5;
const VIP_PORT: u16 = 80;
const BACKEND_PORT: u16 = 8080;

#[derive(Default)]
struct Summary {
    connections: usize,
    backends_used: usize,
    sticky: usize,
    failed: usize,
    /// `ip link`'s attach mode on both NICs (`xdp` is driver mode), and eth0's driver.
    modes: Vec<String>,
    driver: String,
}

impl Summary {
    fn native_on_virtio(&self) -> bool {
        self.modes.len() == 2
            && self.modes.iter().all(|m| m == "xdp")
            && self.driver == "virtio_net"
    }

    fn mode(&self) -> String {
        if self.native_on_virtio() {
            "native (xdpdrv on virtio-net)".into()
        } else {
            format!("{} on {}", self.modes.join(","), self.driver)
        }
    }
}

pub fn demo() -> Result<()> {
    crate::demo::frame(
        "demo",
        run,
        |s: &Summary| {
            format!(
                "demo: connections={} backends_used={} sticky={}/{} mode={}",
                s.connections,
                s.backends_used,
                s.sticky,
                s.connections,
                s.mode()
            )
        },
        |s| {
            s.failed == 0
                && s.sticky == s.connections
                && s.backends_used == BACKENDS
                && s.native_on_virtio()
        },
    )
}

/// A guest shell snippet that echoes each `xlb` call as `$ xlb ...` before running it.
fn echoed(xlb: &str, calls: &[String]) -> String {
    calls
        .iter()
        .map(|c| format!("echo '$ xlb {c}'\n{xlb} {c}\n"))
        .collect()
}

fn run(summary: &mut Summary) -> Result<()> {
    if let Some(why) = vm::unavailable() {
        anyhow::bail!("the VM demo cannot run here: {why}");
    }
    let vm = Vm::boot(BACKENDS)?;
    println!(
        "guest: booted in {:.1} s ({}), 2 virtio-net NICs: eth0 {} (client side), eth1 {} \
         (backend side)",
        vm.boot_time().as_secs_f64(),
        vm.accel().name(),
        vm::guest_eth0(),
        vm::guest_eth1()
    );
    if vm.accel() == vm::Accel::Tcg {
        println!("guest: the CPU is emulated (TCG): the driver path is real, its speed is not");
    }
    println!(
        "client ns {} at {}",
        vm.client_ns().name(),
        vm::client_addr()
    );
    for j in 0..BACKENDS {
        vm.spawn_id_server(j, BACKEND_PORT)?;
        println!(
            "backend {} at {}:{BACKEND_PORT} (ns {})",
            backend_id(j),
            vm::backend_addr(j),
            vm.backend_ns(j).name()
        );
    }
    let xlb = vm::guest_bin("xlb")?;
    let service = format!("{VIP}:{VIP_PORT}/tcp");
    let mut calls = vec![format!("service add {service}")];
    calls.extend((0..BACKENDS).map(|j| {
        format!(
            "backend add {service} {}:{BACKEND_PORT}",
            vm::backend_addr(j)
        )
    }));
    calls.push(format!("backend list {service}"));
    println!("guest: xlbd --iface eth0 --iface eth1 --mode native");
    print!("{}", vm.start_xlbd("native", &echoed(&xlb, &calls))?);
    print!(
        "{}",
        vm.guest_ok(
            "echo '$ ip link show dev eth0'; ip link show dev eth0\n\
                     echo '$ ethtool -i eth0 | head -1'; ethtool -i eth0 | head -1"
        )?
    );
    for iface in ["eth0", "eth1"] {
        summary.modes.push(vm.xdp_mode(iface)?);
    }
    let driver = vm.guest_ok("ethtool -i eth0")?;
    summary.driver = driver
        .lines()
        .find_map(|l| l.strip_prefix("driver: "))
        .unwrap_or("unknown")
        .trim()
        .to_owned();
    println!(
        "guest: XDP on eth0, eth1: {} (`xdp` is driver mode, xdpdrv; skb mode shows \
         `xdpgeneric`), driver {}",
        summary.modes.join(", "),
        summary.driver
    );

    let vip = SocketAddr::new(VIP.into(), VIP_PORT);
    println!("{CONNECTIONS} TCP connections to {vip}, {LINES} lines each:");
    let mut flows: Vec<Flow> = Vec::new();
    for result in vm.tcp_flows(vip, CONNECTIONS, LINES) {
        summary.connections += 1;
        match result {
            Ok(f) => {
                let served = f.backend().unwrap_or("SEVERAL BACKENDS");
                println!("  {} -> {served}  replies={}", f.local, f.ids.len());
                summary.sticky += usize::from(f.backend().is_some());
                flows.push(f);
            }
            Err(e) => {
                println!("  FAILED: {e:#}");
                summary.failed += 1;
            }
        }
    }
    // The data path's own counters.
    print!(
        "{}",
        vm.guest_ok(&echoed(&xlb, &[format!("backend list {service}")]))?
    );
    let per_backend: BTreeMap<String, usize> = flows_per_backend(&flows);
    summary.backends_used = per_backend.len();
    println!("per backend:");
    for j in 0..BACKENDS {
        let id = backend_id(j);
        let n = per_backend.get(&id).copied().unwrap_or(0);
        println!(
            "  {id} ({}:{BACKEND_PORT}): {n} connections",
            vm::backend_addr(j)
        );
    }
    drop(vm);
    println!("guest stopped, namespaces removed");
    Ok(())
}

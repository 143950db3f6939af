//! A private network namespace for one thread, holding the two links of [`crate::plan`]:
//! `xc0` (LB, client side) / `xc1` (client) and `xb0` (LB, backend side) / `xb1` (backend),
//! and a bridge `xbr0` with the port `xr0` (peer `xr1`), with fixed MACs, IPv4 and IPv6
//! addresses, and permanent neighbours for the client, one backend and the bridged
//! backend, so that `bpf_fib_lookup` answers the same on every run.

use std::process::Command;

use anyhow::{Context as _, Result, bail, ensure};

use crate::plan::{
    BACKEND_IF_MAC, BACKEND_MAC, BRIDGE_MAC, BRIDGED_MAC, CLIENT_IF_MAC, CLIENT_MAC, V4, V6,
};

/// The LB's interfaces.
pub const CLIENT_IF: &str = "xc0";
pub const BACKEND_IF: &str = "xb0";
/// A bridge (with one veth port, `xr0`, so it has a carrier): a FIB egress that cannot
/// take XDP redirects.
pub const BRIDGE_IF: &str = "xbr0";

/// Runs `f` on a new thread that has its own network namespace (the `ip` commands it
/// starts inherit it), and returns its result. Nothing is left behind: the namespace
/// goes with the thread.
pub fn in_private_netns<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(move || {
        // SAFETY: unshare(CLONE_NEWNET) affects only the calling thread.
        let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(
            rc,
            0,
            "unshare(CLONE_NEWNET): {}",
            std::io::Error::last_os_error()
        );
        f()
    })
    .join()
    .unwrap_or_else(|e| std::panic::resume_unwind(e))
}

fn sh(script: &str) -> Result<()> {
    let out = Command::new("sh")
        .args(["-ec", script])
        .output()
        .context("running sh")?;
    if !out.status.success() {
        bail!(
            "setup failed: {}\n{script}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn mac(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn sysctl(key: &str, value: &str) -> Result<()> {
    std::fs::write(format!("/proc/sys/{key}"), value).with_context(|| format!("sysctl {key}"))
}

/// Makes the links in the calling thread's namespace (call inside [`in_private_netns`]).
pub fn make_links() -> Result<()> {
    let (c, b) = (mac(CLIENT_MAC), mac(BACKEND_MAC));
    let addr = |ip: crate::Ip, len: u8| format!("{ip}/{len}");
    sh(&format!(
        "ip link set lo up
         ip link add {CLIENT_IF} address {cif} type veth peer name xc1 address {c}
         ip link add {BACKEND_IF} address {bif} type veth peer name xb1 address {b}
         ip addr add {c4} dev {CLIENT_IF}
         ip addr add {b4} dev {BACKEND_IF}
         ip -6 addr add {c6} dev {CLIENT_IF} nodad
         ip -6 addr add {b6} dev {BACKEND_IF} nodad
         for d in {CLIENT_IF} xc1 {BACKEND_IF} xb1; do ip link set $d up; done
         ip neigh replace {v4c} lladdr {c} dev {CLIENT_IF} nud permanent
         ip neigh replace {v4b} lladdr {b} dev {BACKEND_IF} nud permanent
         ip -6 neigh replace {v6c} lladdr {c} dev {CLIENT_IF} nud permanent
         ip -6 neigh replace {v6b} lladdr {b} dev {BACKEND_IF} nud permanent
         ip link add {BRIDGE_IF} address {brm} type bridge
         ip link add xr0 type veth peer name xr1
         ip link set xr0 master {BRIDGE_IF}
         ip addr add {r4} dev {BRIDGE_IF}
         ip -6 addr add {r6} dev {BRIDGE_IF} nodad
         for d in {BRIDGE_IF} xr0 xr1; do ip link set $d up; done
         ip neigh replace {v4r} lladdr {r} dev {BRIDGE_IF} nud permanent
         ip -6 neigh replace {v6r} lladdr {r} dev {BRIDGE_IF} nud permanent",
        cif = mac(CLIENT_IF_MAC),
        bif = mac(BACKEND_IF_MAC),
        c4 = addr(V4.client_lb, V4.client_prefix),
        b4 = addr(V4.backend_lb, V4.backend_prefix),
        c6 = addr(V6.client_lb, V6.client_prefix),
        b6 = addr(V6.backend_lb, V6.backend_prefix),
        v4c = V4.client,
        v4b = V4.backend,
        v6c = V6.client,
        v6b = V6.backend,
        brm = mac(BRIDGE_MAC),
        r = mac(BRIDGED_MAC),
        r4 = addr(V4.bridge_lb, V4.bridge_prefix),
        r6 = addr(V6.bridge_lb, V6.bridge_prefix),
        v4r = V4.backend_bridged,
        v6r = V6.backend_bridged,
    ))?;
    sysctl("net/ipv4/ip_forward", "1")?;
    // After the links exist: `all` sets every existing interface.
    sysctl("net/ipv6/conf/all/forwarding", "1")?;
    Ok(())
}

/// Points the neighbour entry of `ip` (a client's or a backend's address) at `lladdr`
/// (a host that moved to another MAC), on the link it is on, in the calling thread's
/// namespace.
pub fn replace_neighbour(ip: crate::Ip, lladdr: [u8; 6], client: bool) -> Result<()> {
    let dev = if client { CLIENT_IF } else { BACKEND_IF };
    sh(&format!(
        "ip neigh replace {ip} lladdr {} dev {dev} nud permanent",
        mac(lladdr)
    ))
}

/// The interface index of `name` in the calling thread's namespace.
pub fn ifindex(name: &str) -> Result<u32> {
    let c = std::ffi::CString::new(name)?;
    // SAFETY: `c` is NUL-terminated.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    ensure!(index != 0, "no interface {name}");
    Ok(index)
}

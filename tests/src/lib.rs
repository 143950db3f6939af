//! xlb's netns testbed (DESIGN.md section 5): namespaces, veths and addresses; xlbd and the
//! CLI; id servers, TCP/UDP clients, ping and iperf3. Used by the integration tests in
//! `tests/tests/` and by `cargo xtask demo`. Everything it makes is removed when the
//! [`Testbed`] drops, also when a test panics.

mod backends;
mod clients;
pub mod cluster;
mod conn;
mod daemon;
mod dsr;
mod grpc;
mod iperf;
mod netns;
mod proc;
mod servers;
mod topology;
pub mod vm;
mod vm_image;

pub use backends::BackendRow;
pub use clients::{Flow, Proto, assert_sticky, flows_per_backend, tcp_flow, udp_flow};
pub use conn::{TcpConn, UdpConn, ask_all};
pub use daemon::{bin_dir, bin_path};
pub use dsr::decap_counter;
pub use iperf::{IperfResult, ping};
pub use netns::Netns;
pub use proc::{Tracked, die_with_parent};
pub use servers::{IdServer, backend_id};
pub use topology::{
    AddrPair, Layout, Link, Node, Role, Testbed, VIP, VIP6, bridge_addrs, link_addrs,
};
pub use vm_image::{Image as VmImage, cache_dir as vm_cache_dir, prepare as prepare_vm_image};

/// Whether the test may run: true as root. Otherwise prints a loud skip line and returns
/// false, so a test starts with `if !xlb_testbed::require_root("name") { return; }`.
pub fn require_root(test_name: &str) -> bool {
    // SAFETY: geteuid(2) cannot fail and touches no memory.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    report(&format!("SKIPPED (needs root): {test_name}"));
    false
}

/// Writes a line straight to stderr, past the test harness's output capture, so that it
/// shows in a normal `cargo test` run (skips, measured figures).
pub fn report(line: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

//! Katran-style packet testing of xlb's XDP program, in Rust: crafted packets run through
//! the real program with BPF_PROG_TEST_RUN (`Xdp::test_run`), without a NIC.
//!
//! - [`netns`]: a private network namespace with two veth links (client side, backend
//!   side) whose fixed MACs and permanent neighbours make `bpf_fib_lookup` deterministic;
//! - [`plan`]: the addresses, MACs and services of that setup, for IPv4 and IPv6;
//! - [`harness`]: loads the program, fills its maps, runs one packet;
//! - [`pkt`] and [`icmp`]: packets described as values and built with etherparse;
//! - [`validate`]: parses an output frame and checks every checksum with etherparse;
//! - [`fixture`]: a table of (description, input, expected verdict and output) and its runner;
//! - [`fuzz`]: seeded random and mutated packets and the checks each one must pass.
//!
//! Loading the program needs root.

pub mod fixture;
pub mod fuzz;
pub mod harness;
pub mod icmp;
pub mod netns;
pub mod pkt;
pub mod plan;
pub mod validate;

pub use fixture::{Expect, Fixture, Side};
pub use harness::Harness;
pub use icmp::{IcmpErr, IcmpKind};
pub use pkt::{Ext, Ip, L4, Pkt};
pub use plan::{Plan, V4, V6};

/// XDP verdicts (`enum xdp_action`).
pub const XDP_ABORTED: u32 = 0;
pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;
pub const XDP_REDIRECT: u32 = 4;

/// A verdict's name, for messages.
pub fn verdict_name(v: u32) -> &'static str {
    match v {
        XDP_ABORTED => "XDP_ABORTED",
        XDP_DROP => "XDP_DROP",
        XDP_PASS => "XDP_PASS",
        XDP_TX => "XDP_TX",
        XDP_REDIRECT => "XDP_REDIRECT",
        _ => "unknown verdict",
    }
}

/// Whether the test may run: true as root; otherwise prints the loud skip line the
/// testbed's tests print (`SKIPPED (needs root): <name>`) and returns false.
pub fn require_root(test_name: &str) -> bool {
    // SAFETY: geteuid(2) cannot fail and touches no memory.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    use std::io::Write as _;
    let _ = writeln!(
        std::io::stderr().lock(),
        "SKIPPED (needs root): {test_name}"
    );
    false
}

/// `aa bb cc ...`, for failure messages.
pub fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join("")
}

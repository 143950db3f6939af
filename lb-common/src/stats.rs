//! Counters: a per-CPU array of [`Counter`]s indexed by the `STAT_*` constants, and one
//! per backend index. Userspace sums the CPUs.

/// Packets and bytes; one slot of a per-CPU counter array.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}

/// Every packet the program saw.
pub const STAT_RX: u32 = 0;
/// Passed to the kernel: not addressed to a service nor a reply of a balanced flow.
pub const STAT_PASS_OTHER: u32 = 1;
/// Request-direction packets forwarded to a backend.
pub const STAT_FORWARD: u32 = 2;
/// Reply-direction packets rewritten back to the VIP and forwarded.
pub const STAT_REPLY: u32 = 3;
/// New flows given a backend (first packet of a flow not yet in the table).
pub const STAT_NEW_FLOW: u32 = 4;
/// Dropped: addressed to a service that has no backend.
pub const STAT_DROP_NO_BACKEND: u32 = 5;
/// Rewritten, then passed to the kernel to route (no neighbour entry yet, or no route).
pub const STAT_PASS_FIB: u32 = 6;
/// Passed to the kernel: TTL/hop limit would expire here (it answers as a router does).
pub const STAT_PASS_TTL: u32 = 7;
/// Passed: malformed or unsupported (truncated header, fragment, bad length).
pub const STAT_PASS_MALFORMED: u32 = 8;
/// Dropped: the connection table could not take a new flow.
pub const STAT_DROP_FLOW_TABLE: u32 = 9;
/// Later fragments of a balanced datagram, forwarded like its first fragment.
pub const STAT_FRAGMENT: u32 = 10;
/// Passed untouched: a later fragment of a datagram whose first fragment was not seen.
pub const STAT_PASS_FRAGMENT: u32 = 11;
/// ICMP/ICMPv6 errors about a balanced flow, translated and forwarded.
pub const STAT_ICMP_ERROR: u32 = 12;
/// Passed untouched: IPv6 with an extension header other than a fragment header.
pub const STAT_PASS_EXTHDR: u32 = 13;
/// Rewritten, then passed to the kernel: the FIB's egress device cannot take an XDP
/// redirect (not in the `EGRESS` devmap, e.g. a bridge), so the kernel forwards it.
pub const STAT_PASS_EGRESS: u32 = 14;

/// New flows forwarded by their service's table without a connection-table entry: this
/// CPU's cap on inserts per second (`DataplaneConfig::new_flow_cap`) was reached.
pub const STAT_NEW_FLOW_CAPPED: u32 = 15;

pub const STAT_COUNT: u32 = 16;

/// Names of the counters, by index, as userspace prints them.
pub const STAT_NAMES: [&str; STAT_COUNT as usize] = [
    "rx",
    "pass_other",
    "forward",
    "reply",
    "new_flow",
    "drop_no_backend",
    "pass_fib",
    "pass_ttl",
    "pass_malformed",
    "drop_flow_table",
    "fragment",
    "pass_fragment",
    "icmp_error",
    "pass_exthdr",
    "pass_egress",
    "new_flow_capped",
];

//! Counters: a per-CPU array of [`Counter`]s indexed by the `STAT_*` constants, and one
//! per backend index. Userspace sums the CPUs.

/// Packets and bytes; one slot of a per-CPU counter array.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}

/// Every packet the program saw. Not counted by the data path (one counter write less
/// per packet): every packet ends in exactly one of [`OUTCOMES`], and userspace fills
/// this slot with their sum ([`fill_rx`]).
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

/// `dsr-ipip`: ICMP "fragmentation needed" / "packet too big" sent back to the client,
/// because the encapsulated packet would not fit the egress MTU.
pub const STAT_ICMP_TOO_BIG: u32 = 15;
/// Dropped in a DSR mode: too big once encapsulated and may not be answered (IPv4
/// without DF, or an IPv4 header with options), or no FIB answer (route or neighbour)
/// for the backend's address.
pub const STAT_DROP_DSR: u32 = 16;

/// New flows forwarded by their service's table without a connection-table entry: this
/// CPU's cap on inserts per second (`DataplaneConfig::new_flow_cap`) was reached.
pub const STAT_NEW_FLOW_CAPPED: u32 = 17;

pub const STAT_COUNT: u32 = 18;

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
    "icmp_too_big",
    "drop_dsr",
    "new_flow_capped",
];

/// The counters of which every packet the program sees ends in exactly one. The others
/// count some packets a second time: `new_flow` and `new_flow_capped` (forwarded too),
/// `pass_fib` and `pass_egress` (rewritten, counted as forwarded or replied, then passed).
pub const OUTCOMES: [u32; 13] = [
    STAT_PASS_OTHER,
    STAT_FORWARD,
    STAT_REPLY,
    STAT_DROP_NO_BACKEND,
    STAT_PASS_TTL,
    STAT_PASS_MALFORMED,
    STAT_DROP_FLOW_TABLE,
    STAT_FRAGMENT,
    STAT_PASS_FRAGMENT,
    STAT_ICMP_ERROR,
    STAT_PASS_EXTHDR,
    STAT_ICMP_TOO_BIG,
    STAT_DROP_DSR,
];

/// Sets `counters[STAT_RX]` (indexed by `STAT_*`) to the sum of the [`OUTCOMES`].
pub fn fill_rx(counters: &mut [Counter]) {
    let mut rx = Counter::default();
    for &i in &OUTCOMES {
        if let Some(c) = counters.get(i as usize) {
            rx.packets += c.packets;
            rx.bytes += c.bytes;
        }
    }
    if let Some(slot) = counters.get_mut(STAT_RX as usize) {
        *slot = rx;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_counter_is_an_outcome_or_named_as_a_second_count() {
        // A new counter must be placed: an outcome (rx adds it) or not.
        let extra = [
            STAT_RX,
            STAT_NEW_FLOW,
            STAT_NEW_FLOW_CAPPED,
            STAT_PASS_FIB,
            STAT_PASS_EGRESS,
        ];
        for i in 0..STAT_COUNT {
            assert!(
                OUTCOMES.contains(&i) != extra.contains(&i),
                "{} is neither or both",
                STAT_NAMES[i as usize]
            );
        }
    }

    #[test]
    fn rx_is_the_sum_of_the_outcomes() {
        let mut c = [Counter::default(); STAT_COUNT as usize];
        c[STAT_FORWARD as usize] = Counter {
            packets: 5,
            bytes: 500,
        };
        c[STAT_REPLY as usize] = Counter {
            packets: 4,
            bytes: 400,
        };
        c[STAT_PASS_OTHER as usize] = Counter {
            packets: 1,
            bytes: 60,
        };
        c[STAT_NEW_FLOW as usize] = Counter {
            packets: 2,
            bytes: 120,
        };
        c[STAT_PASS_FIB as usize] = Counter {
            packets: 1,
            bytes: 100,
        };
        fill_rx(&mut c);
        assert_eq!(
            c[STAT_RX as usize],
            Counter {
                packets: 10,
                bytes: 960
            }
        );
    }
}

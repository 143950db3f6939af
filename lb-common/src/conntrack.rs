//! Connection-table semantics, one pure function each side agrees on.
//!
//! - A TCP flow is *live* until a FIN or RST passes in either direction; then it is
//!   *closed*, and its entries are deleted `tcp_closed` after their last packet (so late
//!   segments of the close still find them). A SYN on a closed flow starts a new flow.
//! - An established TCP flow idle for `tcp_idle` expires; a UDP flow idle for `udp_idle`
//!   expires. An expired flow re-hashes to the same backend as long as the table did not
//!   change.
//! - When the table is full, the LRU evicts the least recently used entries; the same
//!   re-hashing rule applies to their flows.
//! - Misses that make no entry (Katran's rules): a TCP RST of no known flow, and a new
//!   flow over the per-CPU cap on inserts per second ([`InsertBudget`]), are forwarded by
//!   the service's table alone, so an RST or a SYN flood cannot flush the table.

use crate::{FLOW_FIN, FLOW_RST, FlowValue, PROTO_TCP};

/// How long entries live, in nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    pub tcp_idle_ns: u64,
    pub tcp_closed_ns: u64,
    pub udp_idle_ns: u64,
}

/// What an entry is, at a given time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlowState {
    /// Counts as a live flow of its backend.
    Live,
    /// A TCP connection that has seen FIN or RST, not yet expired.
    Closed,
    /// To be deleted.
    Expired,
}

/// Whether TCP `flags` (the header's flags byte) end a connection: FIN or RST.
pub const fn close_flags(tcp_flags: u8) -> u8 {
    (if tcp_flags & 0x01 != 0 { FLOW_FIN } else { 0 })
        | (if tcp_flags & 0x04 != 0 { FLOW_RST } else { 0 })
}

/// Whether TCP `flags` open a connection: SYN without ACK.
pub const fn is_syn(tcp_flags: u8) -> bool {
    tcp_flags & 0x12 == 0x02
}

/// Whether TCP `flags` carry RST: such a packet of no known flow never makes an entry.
pub const fn is_rst(tcp_flags: u8) -> bool {
    tcp_flags & 0x04 != 0
}

/// One CPU's allowance of connection-table inserts: at most `cap` per one-second window
/// (`cap` 0: no limit). Kept per CPU by the data path, so no CPU waits for another.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InsertBudget {
    /// Start of the current window (`CLOCK_MONOTONIC` ns).
    pub window_ns: u64,
    /// Inserts taken in the window.
    pub used: u32,
    pub _pad: u32,
}

/// The window of [`InsertBudget`], in ns.
pub const INSERT_WINDOW_NS: u64 = 1_000_000_000;

impl InsertBudget {
    /// Takes one insert at `now_ns` under a cap of `cap` per second; `false` when the
    /// window's allowance is spent (the flow is then forwarded without an entry).
    #[inline(always)]
    pub fn take(&mut self, now_ns: u64, cap: u32) -> bool {
        if cap == 0 {
            return true;
        }
        if now_ns.wrapping_sub(self.window_ns) >= INSERT_WINDOW_NS {
            self.window_ns = now_ns;
            self.used = 0;
        }
        if self.used >= cap {
            return false;
        }
        self.used += 1;
        true
    }
}

/// The state of one entry of protocol `proto` at time `now_ns`.
pub fn classify(proto: u8, v: &FlowValue, now_ns: u64, t: &Timeouts) -> FlowState {
    let idle = now_ns.saturating_sub(v.last_seen_ns);
    if proto != PROTO_TCP {
        return if idle > t.udp_idle_ns {
            FlowState::Expired
        } else {
            FlowState::Live
        };
    }
    if v.flags & (FLOW_FIN | FLOW_RST) != 0 {
        return if idle > t.tcp_closed_ns {
            FlowState::Expired
        } else {
            FlowState::Closed
        };
    }
    if idle > t.tcp_idle_ns {
        FlowState::Expired
    } else {
        FlowState::Live
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PROTO_UDP;

    const S: u64 = 1_000_000_000;
    const T: Timeouts = Timeouts {
        tcp_idle_ns: 3600 * S,
        tcp_closed_ns: 10 * S,
        udp_idle_ns: 30 * S,
    };

    fn seen(at: u64, flags: u8) -> FlowValue {
        FlowValue {
            last_seen_ns: at,
            flags,
            ..Default::default()
        }
    }

    #[test]
    fn tcp_is_live_until_fin_or_rst_then_expires_after_the_closed_timeout() {
        assert_eq!(
            classify(PROTO_TCP, &seen(100 * S, 0), 200 * S, &T),
            FlowState::Live
        );
        for f in [FLOW_FIN, FLOW_RST, FLOW_FIN | FLOW_RST] {
            assert_eq!(
                classify(PROTO_TCP, &seen(100 * S, f), 105 * S, &T),
                FlowState::Closed
            );
            assert_eq!(
                classify(PROTO_TCP, &seen(100 * S, f), 111 * S, &T),
                FlowState::Expired
            );
        }
        assert_eq!(
            classify(PROTO_TCP, &seen(0, 0), 3601 * S, &T),
            FlowState::Expired
        );
    }

    #[test]
    fn udp_expires_when_idle() {
        assert_eq!(
            classify(PROTO_UDP, &seen(100 * S, 0), 129 * S, &T),
            FlowState::Live
        );
        assert_eq!(
            classify(PROTO_UDP, &seen(100 * S, 0), 131 * S, &T),
            FlowState::Expired
        );
        // A clock read before the entry's last packet is not idle time.
        assert_eq!(
            classify(PROTO_UDP, &seen(100 * S, 0), 50 * S, &T),
            FlowState::Live
        );
    }

    #[test]
    fn insert_budget_caps_each_window() {
        let mut b = InsertBudget::default();
        // No cap: always.
        assert!((0..1000).all(|_| b.take(5 * S, 0)));
        let mut b = InsertBudget::default();
        assert!(b.take(10 * S, 2));
        assert!(b.take(10 * S + 1, 2));
        assert!(!b.take(10 * S + 2, 2));
        assert!(!b.take(11 * S - 1, 2));
        // A new window a second after the first insert of the last.
        assert!(b.take(11 * S, 2));
        assert!(b.take(11 * S, 2));
        assert!(!b.take(11 * S + 5, 2));
        // A long pause starts a new window too.
        assert!(b.take(500 * S, 2));
        assert_eq!(b.used, 1);
    }

    #[test]
    fn tcp_flag_bits() {
        assert!(is_rst(0x04));
        assert!(is_rst(0x14));
        assert!(!is_rst(0x11));
        assert_eq!(close_flags(0x11), FLOW_FIN); // FIN+ACK
        assert_eq!(close_flags(0x14), FLOW_RST); // RST+ACK
        assert_eq!(close_flags(0x10), 0); // ACK
        assert!(is_syn(0x02));
        assert!(!is_syn(0x12)); // SYN+ACK
        assert!(!is_syn(0x10));
    }
}

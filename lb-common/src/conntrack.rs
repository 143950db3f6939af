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
    fn tcp_flag_bits() {
        assert_eq!(close_flags(0x11), FLOW_FIN); // FIN+ACK
        assert_eq!(close_flags(0x14), FLOW_RST); // RST+ACK
        assert_eq!(close_flags(0x10), 0); // ACK
        assert!(is_syn(0x02));
        assert!(!is_syn(0x12)); // SYN+ACK
        assert!(!is_syn(0x10));
    }
}

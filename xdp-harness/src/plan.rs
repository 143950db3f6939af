//! The fixed setup every packet test runs against: two links, their MACs, and the
//! addresses and services, once for IPv4 (198.18.0.0/15) and once for IPv6 (2001:2::/48).
//!
//! ```text
//!  client ──[xc1 | xc0]── LB ──[xb0 | xb1]── backend
//!   198.18.10.2   .1          198.19.0.1   198.19.0.2
//!   2001:2:0:10::2 ::1        2001:2:0:100::1 2001:2:0:100::2
//! ```
//!
//! Services, per family: `vip:80/tcp -> backend:8080`, `vip:53/udp -> backend:5353`,
//! `vip_empty:80/tcp` (a table of empty slots), `vip_no_neigh:80/tcp -> backend_no_neigh:8080`
//! (on the backend link, but without a neighbour entry), and
//! `vip_bridged:80/tcp -> backend_bridged:8080`, behind the bridge `xbr0` (198.19.5.0/24,
//! 2001:2:0:105::/64), a FIB egress that is not in the `EGRESS` devmap.

use crate::pkt::Ip;

pub const CLIENT_IF_MAC: [u8; 6] = [2, 0, 0, 0, 0x0c, 1];
pub const CLIENT_MAC: [u8; 6] = [2, 0, 0, 0, 0x0c, 2];
pub const BACKEND_IF_MAC: [u8; 6] = [2, 0, 0, 0, 0x0b, 1];
pub const BACKEND_MAC: [u8; 6] = [2, 0, 0, 0, 0x0b, 2];
pub const BRIDGE_MAC: [u8; 6] = [2, 0, 0, 0, 0x0d, 1];
pub const BRIDGED_MAC: [u8; 6] = [2, 0, 0, 0, 0x0d, 2];

/// The TCP service's port and its backends' port.
pub const TCP_PORT: u16 = 80;
pub const TCP_BACKEND_PORT: u16 = 8080;
/// The UDP service's port and its backends' port.
pub const UDP_PORT: u16 = 53;
pub const UDP_BACKEND_PORT: u16 = 5353;

/// Services on the TCP VIP for session affinity, each with two backends: the backend's
/// address on `TCP_BACKEND_PORT` and on `SECOND_BACKEND_PORT`, whose table slots alternate
/// (see [`affinity_slot_port`]). `AFFINITY_PORT`: `client-ip`, an hour's timeout.
/// `AFFINITY_EXPIRED_PORT`: `client-ip`, 1 s, and the client starts with an expired entry
/// naming the second backend. `NO_AFFINITY_PORT`: no affinity, and the client starts with
/// a fresh entry naming the second backend. `AFFINITY_STALE_PORT`: `client-ip`, an hour,
/// and the client starts with a fresh entry naming the second backend at slot 0, which
/// holds the first (as after a table change gave the slot away).
pub const AFFINITY_PORT: u16 = 7001;
pub const AFFINITY_EXPIRED_PORT: u16 = 7002;
pub const NO_AFFINITY_PORT: u16 = 7003;
pub const AFFINITY_STALE_PORT: u16 = 7004;
pub const SECOND_BACKEND_PORT: u16 = 8081;

/// Direct-server-return services on the TCP VIP, every slot holding the TCP backend
/// (`backend`): `dsr-l2` and `dsr-ipip`.
pub const DSR_L2_PORT: u16 = 7101;
pub const DSR_IPIP_PORT: u16 = 7102;

/// The backend port slot `slot` of an affinity service's table holds.
pub const fn affinity_slot_port(slot: u32) -> u16 {
    if slot.is_multiple_of(2) {
        TCP_BACKEND_PORT
    } else {
        SECOND_BACKEND_PORT
    }
}

/// The addresses of one family.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// "IPv4" or "IPv6", for fixture descriptions.
    pub name: &'static str,
    pub client: Ip,
    /// The LB's address on the client link.
    pub client_lb: Ip,
    /// The client link's prefix length.
    pub client_prefix: u8,
    pub vip: Ip,
    pub vip_empty: Ip,
    pub vip_no_neigh: Ip,
    pub backend: Ip,
    pub backend_no_neigh: Ip,
    /// A VIP whose backend is reached through a bridge (no XDP redirect possible).
    pub vip_bridged: Ip,
    pub backend_bridged: Ip,
    /// The LB's address on the bridge, and the bridge's prefix length.
    pub bridge_lb: Ip,
    pub bridge_prefix: u8,
    /// The LB's address on the backend link.
    pub backend_lb: Ip,
    pub backend_prefix: u8,
    /// A router on the client side (source of ICMP errors about replies).
    pub client_router: Ip,
    /// A router between the LB and the backend (source of ICMP errors about requests).
    pub backend_router: Ip,
}

impl Plan {
    pub fn is_v6(&self) -> bool {
        matches!(self.client, Ip::V6(_))
    }

    /// Every address that is a VIP.
    pub fn vips(&self) -> [Ip; 4] {
        [
            self.vip,
            self.vip_empty,
            self.vip_no_neigh,
            self.vip_bridged,
        ]
    }
}

const fn v6(last_groups: [u16; 3]) -> Ip {
    let [a, b, c] = last_groups;
    // 2001:2:0:a::... with group 3 = a, group 7 = c; b is the 6th group.
    let mut o = [0u8; 16];
    o[0] = 0x20;
    o[1] = 0x01;
    o[3] = 0x02;
    o[6] = (a >> 8) as u8;
    o[7] = a as u8;
    o[12] = (b >> 8) as u8;
    o[13] = b as u8;
    o[14] = (c >> 8) as u8;
    o[15] = c as u8;
    Ip::V6(o)
}

pub const V4: Plan = Plan {
    name: "IPv4",
    client: Ip::V4([198, 18, 10, 2]),
    client_lb: Ip::V4([198, 18, 10, 1]),
    client_prefix: 24,
    vip: Ip::V4([198, 18, 0, 10]),
    vip_empty: Ip::V4([198, 18, 0, 11]),
    vip_no_neigh: Ip::V4([198, 18, 0, 12]),
    backend: Ip::V4([198, 19, 0, 2]),
    backend_no_neigh: Ip::V4([198, 19, 0, 3]),
    vip_bridged: Ip::V4([198, 18, 0, 13]),
    backend_bridged: Ip::V4([198, 19, 5, 2]),
    bridge_lb: Ip::V4([198, 19, 5, 1]),
    bridge_prefix: 24,
    backend_lb: Ip::V4([198, 19, 0, 1]),
    backend_prefix: 24,
    client_router: Ip::V4([198, 18, 10, 3]),
    backend_router: Ip::V4([198, 19, 0, 9]),
};

/// 2001:2:0:10::/64 is the client link, 2001:2:0:100::/64 the backend link,
/// 2001:2:0:105::/64 the bridge, VIPs are 2001:2::10-13.
pub const V6: Plan = Plan {
    name: "IPv6",
    client: v6([0x10, 0, 2]),
    client_lb: v6([0x10, 0, 1]),
    client_prefix: 64,
    vip: v6([0, 0, 0x10]),
    vip_empty: v6([0, 0, 0x11]),
    vip_no_neigh: v6([0, 0, 0x12]),
    backend: v6([0x100, 0, 2]),
    backend_no_neigh: v6([0x100, 0, 3]),
    vip_bridged: v6([0, 0, 0x13]),
    backend_bridged: v6([0x105, 0, 2]),
    bridge_lb: v6([0x105, 0, 1]),
    bridge_prefix: 64,
    backend_lb: v6([0x100, 0, 1]),
    backend_prefix: 64,
    client_router: v6([0x10, 0, 3]),
    backend_router: v6([0x100, 0, 9]),
};

/// Both families, for fixtures written once and run for each.
pub const PLANS: [&Plan; 2] = [&V4, &V6];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v6_addresses_are_in_the_plan() {
        assert_eq!(V6.vip.to_string(), "2001:2::10");
        assert_eq!(V6.client.to_string(), "2001:2:0:10::2");
        assert_eq!(V6.backend.to_string(), "2001:2:0:100::2");
        assert_eq!(V4.backend.to_string(), "198.19.0.2");
    }
}

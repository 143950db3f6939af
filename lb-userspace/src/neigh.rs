//! Neighbour entries for `dsr-l2` backends.
//!
//! A `dsr-l2` request leaves with its backend's MAC, which the program takes from the
//! kernel's neighbour table through `bpf_fib_lookup`; without an entry it drops the frame
//! (passed to the kernel, a frame for the VIP would not reach the backend either). But
//! nothing on the node talks to a DSR backend (its replies go straight to the router), so
//! without health checks no entry would ever appear. So xlbd keeps a *managed* entry
//! (`NTF_EXT_MANAGED`, Linux 5.16, made for BPF balancers that resolve next hops with
//! `bpf_fib_lookup`; `ip neigh replace ADDR dev DEV managed` makes one) for the next hop of
//! every `dsr-l2` backend: the kernel resolves it at once and keeps it resolved.
//!
//! An entry someone else made permanent (or `noarp`) is left as it is. xlbd's entries carry
//! its protocol number (`proto 120`, as its routes: `ip neigh show proto 120`); one that no
//! `dsr-l2` backend needs any more is deleted, also when the need went while xlbd was not
//! running (a start adopts the entries it finds with that protocol).

use std::collections::BTreeSet;
use std::io;
use std::net::IpAddr;

use tracing::{info, warn};

use crate::announce::RTPROT_XLB;
use crate::netdev::{self, attr, family_and_bytes, find, u16_of, u32_of};

const RTM_NEWROUTE: u16 = 24;
const RTM_GETROUTE: u16 = 26;
const RTM_NEWNEIGH: u16 = 28;
const RTM_DELNEIGH: u16 = 29;
const RTM_GETNEIGH: u16 = 30;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RTN_UNICAST: u8 = 1;
const NDA_DST: u16 = 1;
const NDA_PROTOCOL: u16 = 12;
const NDA_FLAGS_EXT: u16 = 15;
const NTF_EXT_MANAGED: u32 = 1;
const NUD_NOARP: u16 = 0x40;
const NUD_PERMANENT: u16 = 0x80;
/// `struct rtmsg` and `struct ndmsg`, both 12 bytes.
const RTMSG_LEN: usize = 12;
const NDMSG_LEN: usize = 12;

/// Where packets to an address go: out of `ifindex`, to the neighbour `addr` (the address
/// itself on a link, else the route's gateway).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct NextHop {
    pub ifindex: u32,
    pub addr: IpAddr,
}

fn addr_of(family_v6: bool, b: &[u8]) -> Option<IpAddr> {
    if family_v6 {
        <[u8; 16]>::try_from(b).ok().map(IpAddr::from)
    } else {
        <[u8; 4]>::try_from(b).ok().map(IpAddr::from)
    }
}

/// The `RTM_GETROUTE` request for `dst`.
fn route_query(dst: IpAddr) -> Vec<u8> {
    let (family, bytes) = family_and_bytes(dst);
    let mut rtmsg = [0u8; RTMSG_LEN];
    rtmsg[0] = family;
    rtmsg[1] = (bytes.len() * 8) as u8;
    netdev::message(RTM_GETROUTE, 0, &rtmsg, |m| attr(m, RTA_DST, &bytes))
}

/// The next hop in a route answer to a query for `dst`; `None` when the route is not a
/// unicast one (local, blackhole, unreachable).
fn next_hop_of(dst: IpAddr, kind: u16, body: &[u8]) -> Option<NextHop> {
    if kind != RTM_NEWROUTE || body.len() < RTMSG_LEN || body[7] != RTN_UNICAST {
        return None;
    }
    let attrs = &body[RTMSG_LEN..];
    let ifindex = find(attrs, RTA_OIF).and_then(u32_of)?;
    let addr = match find(attrs, RTA_GATEWAY) {
        Some(g) => addr_of(dst.is_ipv6(), g)?,
        None => dst,
    };
    Some(NextHop { ifindex, addr })
}

/// The next hop of `dst` by the kernel's routes; `None` when it has no unicast route.
pub fn next_hop(dst: IpAddr) -> io::Result<Option<NextHop>> {
    match netdev::route_call(&route_query(dst)) {
        Ok(Some((kind, body))) => Ok(next_hop_of(dst, kind, &body)),
        Ok(None) => Ok(None),
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::ENETUNREACH | libc::EHOSTUNREACH)
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// A neighbour request of type `kind` for `hop`: `ndmsg` (no state: the kernel resolves a
/// managed entry itself), `NDA_DST`, and for a managed entry (`ext_flags` not 0)
/// `NDA_FLAGS_EXT` and xlbd's `NDA_PROTOCOL`.
fn neigh_message(kind: u16, flags: u16, hop: &NextHop, ext_flags: u32) -> Vec<u8> {
    let (family, bytes) = family_and_bytes(hop.addr);
    let mut ndmsg = [0u8; NDMSG_LEN];
    ndmsg[0] = family;
    ndmsg[4..8].copy_from_slice(&hop.ifindex.to_ne_bytes());
    netdev::message(kind, flags, &ndmsg, |m| {
        attr(m, NDA_DST, &bytes);
        if ext_flags != 0 {
            attr(m, NDA_FLAGS_EXT, &ext_flags.to_ne_bytes());
            attr(m, NDA_PROTOCOL, &[RTPROT_XLB]);
        }
    })
}

/// The entry in one message of a neighbour dump, if xlbd made it (its protocol).
fn ours_in(kind: u16, body: &[u8]) -> Option<NextHop> {
    if kind != RTM_NEWNEIGH || body.len() < NDMSG_LEN {
        return None;
    }
    let attrs = &body[NDMSG_LEN..];
    if find(attrs, NDA_PROTOCOL)?.first() != Some(&RTPROT_XLB) {
        return None;
    }
    let v6 = body[0] == libc::AF_INET6 as u8;
    Some(NextHop {
        ifindex: u32_of(&body[4..])?,
        addr: addr_of(v6, find(attrs, NDA_DST)?)?,
    })
}

/// Every neighbour entry xlbd made (by its protocol), in this namespace.
fn ours() -> io::Result<Vec<NextHop>> {
    let ndmsg = [0u8; NDMSG_LEN]; // AF_UNSPEC: both families
    let msg = netdev::message(RTM_GETNEIGH, libc::NLM_F_DUMP as u16, &ndmsg, |_| {});
    let mut out = Vec::new();
    netdev::route_each(&msg, |kind, body| out.extend(ours_in(kind, body)))?;
    Ok(out)
}

/// Whether the kernel holds a static (`permanent` or `noarp`) entry for `hop`.
fn is_static(hop: &NextHop) -> io::Result<bool> {
    match netdev::route_call(&neigh_message(RTM_GETNEIGH, 0, hop, 0)) {
        Ok(Some((RTM_NEWNEIGH, body))) if body.len() >= NDMSG_LEN => {
            let state = u16_of(&body[8..]).unwrap_or(0);
            Ok(state & (NUD_PERMANENT | NUD_NOARP) != 0)
        }
        Ok(_) => Ok(false),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Makes `hop`'s entry a managed one (created, or replacing a learned one).
fn manage(hop: &NextHop) -> io::Result<()> {
    let flags = (libc::NLM_F_ACK | libc::NLM_F_CREATE | libc::NLM_F_REPLACE) as u16;
    netdev::route_call(&neigh_message(RTM_NEWNEIGH, flags, hop, NTF_EXT_MANAGED)).map(drop)
}

/// Deletes `hop`'s entry.
fn forget(hop: &NextHop) -> io::Result<()> {
    let msg = neigh_message(RTM_DELNEIGH, libc::NLM_F_ACK as u16, hop, 0);
    match netdev::route_call(&msg) {
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        r => r.map(drop),
    }
}

/// The managed entries xlbd keeps, round by round.
#[derive(Debug, Default)]
pub struct Keeper {
    /// Entries xlbd made managed (and deletes when no longer needed).
    managed: BTreeSet<NextHop>,
    /// Next hops left alone (a static entry), logged once.
    static_seen: BTreeSet<NextHop>,
}

impl Keeper {
    /// A keeper that owns the entries an earlier xlbd left (by their protocol), so that
    /// its first round deletes those no backend needs any more.
    pub fn adopting() -> Keeper {
        let managed = match ours() {
            Ok(hops) => hops.into_iter().collect(),
            Err(e) => {
                warn!("xlbd: cannot list neighbour entries: {e}");
                BTreeSet::new()
            }
        };
        Keeper {
            managed,
            ..Keeper::default()
        }
    }

    /// One round for the addresses of every `dsr-l2` backend: each one's next hop gets a
    /// managed entry unless it has a static one; managed entries no backend needs any more
    /// are deleted. Failures are logged and retried next round.
    pub fn round(&mut self, backends: &BTreeSet<IpAddr>) {
        let mut wanted = BTreeSet::new();
        for &b in backends {
            match next_hop(b) {
                Ok(Some(hop)) => {
                    wanted.insert(hop);
                }
                Ok(None) => {}
                Err(e) => warn!("xlbd: no route lookup for dsr-l2 backend {b}: {e}"),
            }
        }
        for hop in &wanted {
            if self.managed.contains(hop) {
                continue;
            }
            match is_static(hop) {
                Ok(true) => {
                    if self.static_seen.insert(*hop) {
                        info!(
                            "xlbd: dsr-l2 next hop {} (ifindex {}) has a static neighbour entry; left as it is",
                            hop.addr, hop.ifindex
                        );
                    }
                }
                Ok(false) => match manage(hop) {
                    Ok(()) => {
                        info!(
                            "xlbd: managed neighbour entry for dsr-l2 next hop {} (ifindex {})",
                            hop.addr, hop.ifindex
                        );
                        self.managed.insert(*hop);
                    }
                    Err(e) => warn!("xlbd: cannot manage neighbour {}: {e}", hop.addr),
                },
                Err(e) => warn!("xlbd: cannot read neighbour {}: {e}", hop.addr),
            }
        }
        let gone: Vec<NextHop> = self.managed.difference(&wanted).copied().collect();
        for hop in gone {
            match forget(&hop) {
                Ok(()) => {
                    info!("xlbd: deleted the managed neighbour entry of {}", hop.addr);
                    self.managed.remove(&hop);
                }
                Err(e) => warn!("xlbd: cannot delete neighbour {}: {e}", hop.addr),
            }
        }
        self.static_seen.retain(|h| wanted.contains(h));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// A route answer: `rtmsg` of `rtype` with `RTA_OIF` and, if given, `RTA_GATEWAY`.
    fn route_answer(rtype: u8, oif: u32, gateway: Option<IpAddr>) -> Vec<u8> {
        let mut b = vec![0u8; RTMSG_LEN];
        b[7] = rtype;
        attr(&mut b, RTA_OIF, &oif.to_ne_bytes());
        if let Some(g) = gateway {
            attr(&mut b, RTA_GATEWAY, &family_and_bytes(g).1);
        }
        b
    }

    #[test]
    fn next_hop_is_the_address_on_a_link_or_the_gateway() {
        let b = ip("198.19.200.10");
        let on_link = route_answer(RTN_UNICAST, 7, None);
        assert_eq!(
            next_hop_of(b, RTM_NEWROUTE, &on_link),
            Some(NextHop {
                ifindex: 7,
                addr: b
            })
        );
        let via = route_answer(RTN_UNICAST, 3, Some(ip("198.19.0.1")));
        assert_eq!(
            next_hop_of(b, RTM_NEWROUTE, &via).map(|h| h.addr),
            Some(ip("198.19.0.1"))
        );
        let b6 = ip("2001:2:0:200::10");
        let via6 = route_answer(RTN_UNICAST, 3, Some(ip("fe80::1")));
        assert_eq!(
            next_hop_of(b6, RTM_NEWROUTE, &via6).map(|h| h.addr),
            Some(ip("fe80::1"))
        );
        // Local (2), blackhole (6): no neighbour to resolve.
        assert_eq!(
            next_hop_of(b, RTM_NEWROUTE, &route_answer(2, 1, None)),
            None
        );
        assert_eq!(
            next_hop_of(b, RTM_NEWROUTE, &route_answer(6, 0, None)),
            None
        );
        assert_eq!(next_hop_of(b, RTM_NEWROUTE, &on_link[..8]), None);
    }

    #[test]
    fn requests_carry_the_address_interface_and_managed_flag() {
        let hop = NextHop {
            ifindex: 9,
            addr: ip("2001:2:0:200::10"),
        };
        let m = neigh_message(RTM_NEWNEIGH, 0, &hop, NTF_EXT_MANAGED);
        assert_eq!(u32_of(&m).unwrap() as usize, m.len());
        assert_eq!(u16_of(&m[4..]), Some(RTM_NEWNEIGH));
        let ndmsg = &m[16..16 + NDMSG_LEN];
        assert_eq!(ndmsg[0], libc::AF_INET6 as u8);
        assert_eq!(u32_of(&ndmsg[4..]), Some(9));
        let attrs = &m[16 + NDMSG_LEN..];
        assert_eq!(
            find(attrs, NDA_DST),
            Some(&family_and_bytes(hop.addr).1[..])
        );
        assert_eq!(find(attrs, NDA_FLAGS_EXT).and_then(u32_of), Some(1));
        let get = neigh_message(RTM_GETNEIGH, 0, &hop, 0);
        assert_eq!(find(&get[16 + NDMSG_LEN..], NDA_FLAGS_EXT), None);
        let q = route_query(ip("198.19.200.10"));
        assert_eq!(q[16], libc::AF_INET as u8);
        assert_eq!(q[17], 32, "a host route query");
        assert_eq!(
            find(&q[16 + RTMSG_LEN..], RTA_DST),
            Some(&[198, 19, 200, 10][..])
        );
    }

    #[test]
    fn a_dump_entry_is_ours_by_its_protocol() {
        let hop = NextHop {
            ifindex: 4,
            addr: ip("198.19.200.10"),
        };
        // What the kernel echoes: the ndmsg and attributes of the managed request.
        let m = neigh_message(RTM_NEWNEIGH, 0, &hop, NTF_EXT_MANAGED);
        assert_eq!(ours_in(RTM_NEWNEIGH, &m[16..]), Some(hop));
        let plain = neigh_message(RTM_NEWNEIGH, 0, &hop, 0);
        assert_eq!(ours_in(RTM_NEWNEIGH, &plain[16..]), None, "no protocol");
        let mut other = m[16..].to_vec();
        let at = other.len() - 4; // the last attribute: NDA_PROTOCOL, 1 byte padded
        assert_eq!(other[at - 2..at], NDA_PROTOCOL.to_ne_bytes());
        other[at] = 4; // RTPROT_STATIC
        assert_eq!(ours_in(RTM_NEWNEIGH, &other), None, "someone else's");
        assert_eq!(ours_in(RTM_DELNEIGH, &m[16..]), None);
    }

    #[test]
    fn loopback_has_no_neighbour_to_manage() {
        // The kernel's answer for a local address is a local route: nothing to resolve.
        assert_eq!(next_hop(ip("127.0.0.1")).unwrap(), None);
    }
}

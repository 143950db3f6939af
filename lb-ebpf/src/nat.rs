//! Address and port rewriting with incremental checksum updates (RFC 1624), for IPv4 and
//! IPv6 headers alike.

use lb_common::{Addr, PROTO_UDP, csum::Delta};

use crate::parse::{self, Frag, Packet, byte, ne16};

/// Which end of a packet to rewrite.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Request direction: the VIP becomes the backend.
    Destination,
    /// Reply direction: the backend becomes the VIP.
    Source,
}

/// Writes a native-endian 16-bit value at `offset` of a checked header (aligned, see
/// `parse::ne16`).
#[inline(always)]
fn put16(p: *mut u8, offset: usize, v: u16) {
    // SAFETY: callers pass even offsets inside a header checked by the parser.
    unsafe { *(p.add(offset) as *mut u16) = v }
}

/// Replaces the address at `end` of the IP header at `ip` (IPv4: and updates the header
/// checksum). Returns the change, for the checksums that cover the address.
#[inline(always)]
pub fn set_addr<const V6: bool>(ip: *mut u8, end: End, new: &Addr) -> Delta {
    let (s, d) = parse::addr_offsets::<V6>();
    let at = if end == End::Destination { d } else { s };
    let halves = new.words.as_ptr() as *const u16;
    let n = if V6 { 8 } else { 2 };
    let mut delta = Delta::new();
    let mut i = 0;
    while i < n {
        // 16 bits at a time (aligned, see `parse::ne16`): the old address is never held
        // whole.
        // SAFETY: `new` has 8 halves.
        let h = unsafe { *halves.add(i) };
        delta = delta.u16(ne16(ip, at + 2 * i), h);
        put16(ip, at + 2 * i, h);
        i += 1;
    }
    if !V6 {
        put16(ip, 10, delta.apply(ne16(ip, 10)));
    }
    delta
}

/// Replaces the port at `end` of the L4 header at `l4`; returns (old, new).
#[inline(always)]
pub fn set_port(l4: *mut u8, end: End, new_be: u16) -> (u16, u16) {
    let at = if end == End::Destination { 2 } else { 0 };
    let old = ne16(l4, at);
    put16(l4, at, new_be);
    (old, new_be)
}

/// Applies `d` to the L4 checksum at `check` (UDP's zero rule when `udp`); returns it.
#[inline(always)]
pub fn fix_l4_check(check: *mut [u8; 2], d: Delta, udp: bool) -> u16 {
    // SAFETY: checked by the parser.
    unsafe {
        let old = u16::from_ne_bytes(*check);
        let new = if udp { d.apply_udp(old) } else { d.apply(old) };
        *check = new.to_ne_bytes();
        new
    }
}

/// Rewrites one end's address and port, and the checksums that cover them. A later
/// fragment has only its address rewritten (its datagram's L4 checksum is in the first).
#[inline(always)]
pub fn rewrite<const V6: bool>(p: &Packet, end: End, addr: &Addr, port_be: u16) {
    let d = set_addr::<V6>(p.ip, end, addr);
    if p.frag == Frag::Later {
        return;
    }
    let (old, new) = set_port(p.l4, end, port_be);
    fix_l4_check(p.l4_check, d.u16(old, new), p.key.proto == PROTO_UDP);
}

/// The packet's TTL or hop limit.
#[inline(always)]
pub fn ttl<const V6: bool>(p: &Packet) -> u8 {
    byte(p.ip, if V6 { 7 } else { 8 })
}

/// Decrements the TTL (updating the IPv4 header checksum) or the hop limit, as a router
/// does. The caller has checked that it is above 1.
#[inline(always)]
pub fn decrement_ttl<const V6: bool>(p: &Packet) {
    let ip = p.ip;
    if !V6 {
        let (ttl, proto) = (byte(ip, 8), byte(ip, 9));
        // TTL and protocol share one 16-bit word of the header.
        let d = Delta::new().u16(
            u16::from_ne_bytes([ttl, proto]),
            u16::from_ne_bytes([ttl - 1, proto]),
        );
        put16(ip, 8, u16::from_ne_bytes([ttl - 1, proto]));
        put16(ip, 10, d.apply(ne16(ip, 10)));
    } else {
        // SAFETY: offset 7 is inside the checked IPv6 header.
        unsafe { *ip.add(7) = byte(ip, 7) - 1 };
    }
}

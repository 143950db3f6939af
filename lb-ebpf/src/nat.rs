//! Address and port rewriting with incremental checksum updates (RFC 1624).

use core::ptr::{read_unaligned, write_unaligned};

use lb_common::{Addr, PROTO_UDP, csum::Delta};

use crate::parse::Packet;

/// Which end of the packet to rewrite.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Request direction: the VIP becomes the backend.
    Destination,
    /// Reply direction: the backend becomes the VIP.
    Source,
}

/// Rewrites one end's address and port, and the IP and L4 checksums with them.
#[inline(always)]
pub fn rewrite(p: &Packet, end: End, addr: &Addr, port_be: u16) {
    // SAFETY: every pointer in `p` was bounds-checked by the parser.
    unsafe {
        let ip = p.ip;
        let field: *mut [u8; 4] = match end {
            End::Destination => &raw mut (*ip).dst_addr,
            End::Source => &raw mut (*ip).src_addr,
        };
        let old = u32::from_ne_bytes(*field);
        let new = addr.words[0];
        *field = new.to_ne_bytes();
        let d = Delta::new().u32(old, new);
        (*ip).check = d.apply(u16::from_ne_bytes((*ip).check)).to_ne_bytes();

        let port = p.l4.add(if end == End::Destination { 2 } else { 0 }) as *mut u16;
        let old_port = read_unaligned(port);
        write_unaligned(port, port_be);
        // The L4 checksum covers the pseudo-header's addresses and the ports.
        let d = d.u16(old_port, port_be);
        let check = u16::from_ne_bytes(*p.l4_check);
        let check = if p.key.proto == PROTO_UDP {
            d.apply_udp(check)
        } else {
            d.apply(check)
        };
        *p.l4_check = check.to_ne_bytes();
    }
}

/// The packet's TTL.
#[inline(always)]
pub fn ttl(p: &Packet) -> u8 {
    // SAFETY: the IP header was bounds-checked by the parser.
    unsafe { (*p.ip).ttl }
}

/// Decrements the TTL as a router does, updating the IP checksum. The caller has checked
/// that the TTL is above 1.
#[inline(always)]
pub fn decrement_ttl(p: &Packet) {
    // SAFETY: the IP header was bounds-checked by the parser.
    unsafe {
        let ip = p.ip;
        let ttl = (*ip).ttl;
        let proto = (*ip).proto;
        (*ip).ttl = ttl - 1;
        // TTL and protocol share one 16-bit word of the header.
        let d = Delta::new().u16(
            u16::from_ne_bytes([ttl, proto]),
            u16::from_ne_bytes([ttl - 1, proto]),
        );
        (*ip).check = d.apply(u16::from_ne_bytes((*ip).check)).to_ne_bytes();
    }
}

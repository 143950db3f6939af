//! ICMP and ICMPv6 errors about balanced flows.
//!
//! An error quotes the packet that caused it. The quoted packet, reversed, is a key of the
//! connection table when it belongs to a balanced flow:
//!
//! - a reply as the client saw it (quoted src VIP:vport, dst client:cport; the error is
//!   addressed to the VIP, e.g. "fragmentation needed" from a router toward the client):
//!   its reverse is the flow's request entry, naming the backend. The outer destination
//!   and the quoted source become the backend's, so the backend's kernel finds its socket
//!   and path-MTU discovery works through xlb;
//! - a request as the backend saw it (quoted src client:cport, dst backend:bport; the
//!   error comes from a router between xlb and the backend, addressed to the client): its
//!   reverse is the flow's reply entry, naming the VIP. The quoted destination becomes
//!   VIP:vport again, so the client's kernel finds its socket.
//!
//! Every checksum that covers a rewritten field is updated: the outer IPv4 header, the
//! quoted IPv4 header, the quoted L4 checksum when the quote contains it, and the ICMP
//! checksum (for ICMPv6 including its pseudo-header).

use aya_ebpf::programs::XdpContext;
use lb_common::{DIR_REQUEST, FlowValue, PROTO_TCP, PROTO_UDP};

use crate::{
    maps::scratch,
    nat::{self, End},
    parse::{
        self, Base, IPV4_HLEN, IPV6_HLEN, PROTO_ICMP, PROTO_ICMPV6, Packet, Skip, byte, ne16,
        ptr_at,
    },
};

const ICMP_HLEN: usize = 8;

/// The quoted packet of an ICMP error.
pub struct IcmpError {
    /// The ICMP checksum field.
    pub check: *mut [u8; 2],
    /// The quoted IP header.
    pub ip: *mut u8,
    /// The quoted L4 header's first 8 bytes (ports at +0 and +2).
    pub l4: *mut u8,
    /// The quoted L4 checksum, when the quote contains it (`has_check`).
    pub l4_check: *mut [u8; 2],
    pub has_check: bool,
    /// The quoted packet's L4 protocol.
    pub proto: u8,
}

impl IcmpError {
    /// A blank to fill in place (null pointers, never dereferenced before being set).
    const EMPTY: IcmpError = IcmpError {
        check: core::ptr::null_mut(),
        ip: core::ptr::null_mut(),
        l4: core::ptr::null_mut(),
        l4_check: core::ptr::null_mut(),
        has_check: false,
        proto: 0,
    };
}

/// Whether ICMP `kind` of `family` is an error that quotes a packet: IPv4 destination
/// unreachable (3, all codes, fragmentation needed among them) and time exceeded (11);
/// ICMPv6 destination unreachable (1), packet too big (2) and time exceeded (3).
#[inline(always)]
fn is_error<const V6: bool>(kind: u8) -> bool {
    if !V6 {
        kind == 3 || kind == 11
    } else {
        kind == 1 || kind == 2 || kind == 3
    }
}

/// Parses the ICMP message at `off` of an unfragmented IP packet of `ip_len` bytes.
/// A BPF function of its own: the packet and quote it builds live in its frame only.
#[inline(never)]
pub fn parse<const V6: bool>(
    ctx: &XdpContext,
    b: &Base,
    ip: *mut u8,
    off: usize,
    ip_len: usize,
) -> u32 {
    // Built in place and lent out (see `parse::parse_l4`).
    let mut p = Packet::EMPTY;
    let mut e = IcmpError::EMPTY;
    match quote::<V6>(ctx, b, ip, (off, ip_len), &mut p, &mut e) {
        Ok(()) => crate::icmp_error::<V6>(ctx, &p, &e),
        Err(skip) => crate::skipped(ctx, skip),
    }
}

/// Fills in the error's packet (`Packet::l4` is the ICMP header) and its quote.
#[inline(always)]
fn quote<const V6: bool>(
    ctx: &XdpContext,
    b: &Base,
    ip: *mut u8,
    (off, ip_len): (usize, usize),
    p: &mut Packet,
    e: &mut IcmpError,
) -> Result<(), Skip> {
    // The message ends where the IP packet does, not where the frame does: every quoted
    // byte read or rewritten must lie before `end`.
    let end = b.l3 + ip_len;
    if off + ICMP_HLEN > end {
        return Err(Skip::Malformed);
    }
    let icmp: *mut [u8; ICMP_HLEN] = ptr_at(ctx, off)?;
    let icmp = icmp as *mut u8;
    if !is_error::<V6>(byte(icmp, 0)) {
        return Err(Skip::Other);
    }
    let quoted = off + ICMP_HLEN;
    let (qip, ql4, proto) = if !V6 {
        let q: *mut [u8; IPV4_HLEN] = ptr_at(ctx, quoted)?;
        let q = q as *mut u8;
        let vihl = byte(q, 0);
        let ihl = ((vihl & 0x0f) as usize) << 2;
        if vihl >> 4 != 4 || ihl < IPV4_HLEN {
            return Err(Skip::Malformed);
        }
        (q, quoted + ihl, byte(q, 9))
    } else {
        let q: *mut [u8; IPV6_HLEN] = ptr_at(ctx, quoted)?;
        let q = q as *mut u8;
        if byte(q, 0) >> 4 != 6 {
            return Err(Skip::Malformed);
        }
        (q, quoted + IPV6_HLEN, byte(q, 6))
    };
    if proto != PROTO_TCP && proto != PROTO_UDP {
        return Err(Skip::Other);
    }
    if ql4 + 8 > end {
        return Err(Skip::Malformed);
    }
    let l4: *mut [u8; 8] = ptr_at(ctx, ql4)?;
    let l4 = l4 as *mut u8;
    let check_at = if proto == PROTO_TCP { 16 } else { 6 };
    let (l4_check, has_check) = match ptr_at::<[u8; 2]>(ctx, ql4 + check_at) {
        Ok(c) if ql4 + check_at + 2 <= end => (c, true),
        _ => (l4 as *mut [u8; 2], false),
    };
    // The connection-table key of the flow the quote belongs to: the quote reversed,
    // written where `crate::icmp_error` looks it up (off the stack).
    let Some(sc) = scratch() else {
        return Err(Skip::Other);
    };
    let (so, d) = parse::addr_offsets::<V6>();
    let k = &mut sc.icmp_key;
    parse::read_addr::<V6>(qip, d, &mut k.src);
    parse::read_addr::<V6>(qip, so, &mut k.dst);
    k.src_port_be = ne16(l4, 2);
    k.dst_port_be = ne16(l4, 0);
    k.proto = proto;
    k.family = parse::family::<V6>();
    // SAFETY: offset 2 is inside the checked 8-byte ICMP header.
    let check = unsafe { icmp.add(2) } as *mut [u8; 2];
    // Field by field: a struct literal would be built on the stack and then copied.
    p.eth = b.eth;
    p.ip = ip;
    p.l4 = icmp;
    p.l4_check = check;
    // Only the protocol and family of the outer packet are used (by the FIB lookup).
    p.key.proto = if V6 { PROTO_ICMPV6 } else { PROTO_ICMP };
    p.key.family = parse::family::<V6>();
    p.ip_len = ip_len as u16;
    p.len = b.len as u64;
    p.tagged = b.tagged;
    e.check = check;
    e.ip = qip;
    e.l4 = l4;
    e.l4_check = l4_check;
    e.has_check = has_check;
    e.proto = proto;
    Ok(())
}

/// Rewrites the error for `flow` (the entry of the reversed quote), as the module
/// documentation says.
#[inline(always)]
pub fn translate<const V6: bool>(p: &Packet, e: &IcmpError, flow: &FlowValue) {
    let toward_backend = flow.direction == DIR_REQUEST;
    let end = if toward_backend {
        End::Source
    } else {
        End::Destination
    };
    let old_hc = ne16(e.ip, 10);
    let d_addr = nat::set_addr::<V6>(e.ip, end, &flow.nat_addr);
    let (old_port, new_port) = nat::set_port(e.l4, end, flow.nat_port_be);
    let d_l4 = d_addr.u16(old_port, new_port);
    // The ICMP checksum covers every quoted byte that changed.
    let mut d_icmp = d_l4;
    if !V6 {
        d_icmp = d_icmp.u16(old_hc, ne16(e.ip, 10));
    }
    if e.has_check {
        // SAFETY: checked by the parser.
        let old = u16::from_ne_bytes(unsafe { *e.l4_check });
        let new = nat::fix_l4_check(e.l4_check, d_l4, e.proto == PROTO_UDP);
        d_icmp = d_icmp.u16(old, new);
    }
    if toward_backend {
        let d_outer = nat::set_addr::<V6>(p.ip, End::Destination, &flow.nat_addr);
        if V6 {
            // ICMPv6's checksum covers a pseudo-header with the outer addresses.
            d_icmp = d_icmp.add(d_outer);
        }
    }
    // SAFETY: checked by the parser.
    unsafe {
        *e.check = d_icmp.apply(u16::from_ne_bytes(*e.check)).to_ne_bytes();
    }
}

//! Header parsing: Ethernet (with at most one 802.1Q/802.1ad tag), IPv4 or IPv6 (with at
//! most a fragment header), then TCP, UDP, or an ICMP/ICMPv6 error quoting a TCP/UDP
//! packet (see `icmp`).
//!
//! Rules: a header cut short, or lengths that disagree with the frame, is
//! `Skip::Malformed`; an IPv6 extension header other than a fragment header is
//! `Skip::ExtHdr`; anything else that is not balanced is `Skip::Other`. All three are
//! passed untouched and counted, never rewritten.

use core::mem::{MaybeUninit, size_of};

use aya_ebpf::programs::XdpContext;
use lb_common::{Addr, FAMILY_V4, FAMILY_V6, FlowKey, PROTO_TCP, PROTO_UDP};
use network_types::eth::EthHdr;

use crate::icmp;

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
const ETH_HLEN: usize = 14;
const VLAN_HLEN: usize = 4;
pub const IPV4_HLEN: usize = 20;
pub const IPV6_HLEN: usize = 40;
const FRAG_HLEN: usize = 8;
const TCP_HLEN: usize = 20;
const UDP_HLEN: usize = 8;
pub const PROTO_ICMP: u8 = 1;
pub const PROTO_ICMPV6: u8 = 58;
const NEXTHDR_HOP: u8 = 0;
const NEXTHDR_ROUTING: u8 = 43;
const NEXTHDR_FRAGMENT: u8 = 44;
const NEXTHDR_DEST: u8 = 60;

/// Why a packet is not balanced.
pub enum Skip {
    Other,
    Malformed,
    ExtHdr,
}

/// Where a packet stands in a fragmented datagram. Payload-free on purpose: an enum
/// variant without the identification leaves that slot undefined, and LLVM filled it from
/// a pointer register, which the verifier refuses to see stored in 32 bits. The
/// identification (IPv4's 16 bits or IPv6's 32, as on the wire) is `frag_id`, always set.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Frag {
    Whole,
    /// Offset 0, more fragments follow: carries the L4 header.
    First,
    /// Offset > 0: carries no L4 header.
    Later,
}

/// A parsed packet. The pointers are bounds-checked against the frame; `l4` and
/// `l4_check` are meaningful unless `frag` is `Later`.
pub struct Packet {
    pub eth: *mut EthHdr,
    /// The IP header.
    pub ip: *mut u8,
    /// Start of the L4 header: source port at +0, destination port at +2.
    pub l4: *mut u8,
    /// The L4 checksum field.
    pub l4_check: *mut [u8; 2],
    pub key: FlowKey,
    /// The TCP header's flags byte (0 for UDP and later fragments).
    pub tcp_flags: u8,
    pub frag: Frag,
    pub frag_id: u32,
    /// The IP packet's length (header included), for the FIB's MTU check.
    pub ip_len: u16,
    /// Frame length in bytes.
    pub len: u64,
    /// The frame carries a VLAN tag.
    pub tagged: bool,
}

impl Packet {
    /// A blank to fill in place (null pointers, never dereferenced before being set).
    pub const EMPTY: Packet = Packet {
        eth: core::ptr::null_mut(),
        ip: core::ptr::null_mut(),
        l4: core::ptr::null_mut(),
        l4_check: core::ptr::null_mut(),
        key: FlowKey {
            src: Addr { words: [0; 4] },
            dst: Addr { words: [0; 4] },
            src_port_be: 0,
            dst_port_be: 0,
            proto: 0,
            family: 0,
            _pad: [0; 2],
        },
        tcp_flags: 0,
        frag: Frag::Whole,
        frag_id: 0,
        ip_len: 0,
        len: 0,
        tagged: false,
    };
}

#[inline(always)]
pub fn ptr_at<T>(ctx: &XdpContext, offset: usize) -> Result<*mut T, Skip> {
    let start = ctx.data();
    if start + offset + size_of::<T>() > ctx.data_end() {
        return Err(Skip::Malformed);
    }
    Ok((start + offset) as *mut T)
}

/// Reads the byte at `offset` of a checked header.
#[inline(always)]
pub fn byte(p: *const u8, offset: usize) -> u8 {
    // SAFETY: callers pass offsets inside a header checked by ptr_at.
    unsafe { *p.add(offset) }
}

/// A 16-bit field as a native-endian load of its wire bytes (ports, checksums, address
/// halves). Every 16-bit field xlb reads sits at an even offset of a header that starts
/// at an even offset of the frame, so the load is aligned: one instruction, where an
/// unaligned read would be two byte loads, a shift and an or (register pressure the
/// 512-byte BPF stack pays for in spills).
#[inline(always)]
pub fn ne16(p: *const u8, offset: usize) -> u16 {
    // SAFETY: inside a checked header, 2-byte aligned (see above).
    unsafe { *(p.add(offset) as *const u16) }
}

#[inline(always)]
pub fn be16(p: *const u8, offset: usize) -> u16 {
    u16::from_be(ne16(p, offset))
}

#[inline(always)]
pub fn ne32(p: *const u8, offset: usize) -> u32 {
    let (a, b) = (ne16(p, offset), ne16(p, offset + 2));
    u32::from_ne_bytes({
        let (a, b) = (a.to_ne_bytes(), b.to_ne_bytes());
        [a[0], a[1], b[0], b[1]]
    })
}

/// Copies the IPv4 (`V6` false) or IPv6 address at `offset` of a checked header into
/// `to`, 16 bits at a time (an IPv4 address leaves the rest of `to` zero). The family is
/// a compile-time parameter everywhere: the verifier cannot follow a family byte read
/// back from the stack, and would check IPv6 offsets against an IPv4 header's range.
#[inline(always)]
pub fn read_addr<const V6: bool>(ip: *const u8, offset: usize, to: *mut Addr) {
    // SAFETY: `to` is valid for writes (possibly uninitialised: only written here).
    let halves = unsafe { &raw mut (*to).words } as *mut u16;
    let n = if V6 { 8 } else { 2 };
    let mut i = 0;
    while i < n {
        // SAFETY: `to` has 8 halves; the address lies inside the checked header.
        unsafe { *halves.add(i) = ne16(ip, offset + 2 * i) };
        i += 1;
    }
    if !V6 {
        // The rest of an IPv4 address is zero, whatever `to` held before (scratch space
        // is reused from packet to packet).
        let words = halves as *mut u32;
        // SAFETY: words 1 to 3 of `to`.
        unsafe {
            *words.add(1) = 0;
            *words.add(2) = 0;
            *words.add(3) = 0;
        }
    }
}

/// The address at `offset` (see [`read_addr`]).
#[inline(always)]
pub fn addr<const V6: bool>(ip: *const u8, offset: usize) -> Addr {
    let mut a = Addr { words: [0; 4] };
    read_addr::<V6>(ip, offset, &mut a);
    a
}

/// Offsets of the source and destination addresses in an IP header.
#[inline(always)]
pub const fn addr_offsets<const V6: bool>() -> (usize, usize) {
    if V6 { (8, 24) } else { (12, 16) }
}

/// The family byte of flow keys.
#[inline(always)]
pub const fn family<const V6: bool>() -> u8 {
    if V6 { FAMILY_V6 } else { FAMILY_V4 }
}

/// The EtherType of IPv4 and IPv6 frames.
pub const ETH_IPV4: u16 = ETH_P_IP;
pub const ETH_IPV6: u16 = ETH_P_IPV6;

/// Parses the link layer of the frame in `ctx`: its EtherType (after at most one VLAN
/// tag) and where the network header starts.
#[inline(always)]
pub fn link(ctx: &XdpContext) -> Result<(u16, Base), Skip> {
    let len = ctx.data_end() - ctx.data();
    let eth: *mut EthHdr = ptr_at(ctx, 0)?;
    // SAFETY: `eth` is within the frame (checked by ptr_at).
    let mut ether_type = u16::from_be(unsafe { (*eth).ether_type });
    let mut l3 = ETH_HLEN;
    if ether_type == ETH_P_8021Q || ether_type == ETH_P_8021AD {
        // The tag's inner EtherType is its last two bytes.
        let tag: *mut [u8; 4] = ptr_at(ctx, ETH_HLEN)?;
        ether_type = be16(tag as *const u8, 2);
        l3 += VLAN_HLEN;
    }
    let base = Base {
        eth,
        l3,
        len,
        tagged: l3 != ETH_HLEN,
    };
    Ok((ether_type, base))
}

/// Parses the IPv4 (`V6` false) or IPv6 packet after the link layer and hands it to its
/// handler (`crate::flow` or `crate::icmp_error`), whose verdict it returns. The packet
/// is built once, in this frame, and lent to the handler (continuation style keeps it
/// off the stack of every other frame).
#[inline(always)]
pub fn ip<const V6: bool>(ctx: &XdpContext, b: &Base) -> u32 {
    // Verdicts travel as plain u32s and every stage settles its own errors: a small
    // Result<u32, _> is packed into one register, and LLVM may fill the Err case's unused
    // payload from a pointer register and shift it, which the verifier refuses.
    let header = if V6 {
        header_v6(ctx, b)
    } else {
        header_v4(ctx, b)
    };
    match header {
        // ICMP of the packet's own family only: ICMPv6 over IPv4 (or ICMP over IPv6) is
        // not an error message of this packet's path; it passes as `Other`.
        Ok(h) if h.proto == if V6 { PROTO_ICMPV6 } else { PROTO_ICMP } => {
            icmp::parse::<V6>(ctx, b, h.ip, h.l4, h.ip_len)
        }
        Ok(h) => parse_l4::<V6>(ctx, b, &h),
        Err(skip) => crate::skipped(ctx, skip),
    }
}

/// What every packet has once the link layer is parsed.
pub struct Base {
    pub eth: *mut EthHdr,
    pub l3: usize,
    pub len: usize,
    pub tagged: bool,
}

/// An IP header's parse, before the L4 header.
struct Ip {
    ip: *mut u8,
    proto: u8,
    /// Offset of the L4 header (after any fragment header).
    l4: usize,
    /// Bytes of IP payload from `l4` on.
    avail: usize,
    ip_len: usize,
    frag: Frag,
    frag_id: u32,
}

/// The IPv4 header. ICMP is reported only for unfragmented packets (a fragmented ICMP
/// message is `Other`).
#[inline(always)]
fn header_v4(ctx: &XdpContext, b: &Base) -> Result<Ip, Skip> {
    let ip: *mut [u8; IPV4_HLEN] = ptr_at(ctx, b.l3)?;
    let ip = ip as *mut u8;
    let vihl = byte(ip, 0);
    let ihl = ((vihl & 0x0f) as usize) << 2;
    let tot_len = be16(ip, 2) as usize;
    if vihl >> 4 != 4 || ihl < IPV4_HLEN || tot_len < ihl || b.l3 + tot_len > b.len {
        return Err(Skip::Malformed);
    }
    let frag_field = be16(ip, 6);
    let id = be16(ip, 4) as u32;
    let frag = if frag_field & 0x1fff != 0 {
        Frag::Later
    } else if frag_field & 0x2000 != 0 {
        Frag::First
    } else {
        Frag::Whole
    };
    let h = Ip {
        ip,
        proto: byte(ip, 9),
        l4: b.l3 + ihl,
        avail: tot_len - ihl,
        ip_len: tot_len,
        frag,
        frag_id: id,
    };
    if h.proto == PROTO_ICMP && frag != Frag::Whole {
        return Err(Skip::Other);
    }
    Ok(h)
}

/// The IPv6 header and at most a fragment header. ICMPv6 is reported only unfragmented.
#[inline(always)]
fn header_v6(ctx: &XdpContext, b: &Base) -> Result<Ip, Skip> {
    let ip: *mut [u8; IPV6_HLEN] = ptr_at(ctx, b.l3)?;
    let ip = ip as *mut u8;
    let payload = be16(ip, 4) as usize;
    if byte(ip, 0) >> 4 != 6 || b.l3 + IPV6_HLEN + payload > b.len {
        return Err(Skip::Malformed);
    }
    let mut next = byte(ip, 6);
    let mut l4 = b.l3 + IPV6_HLEN;
    let mut avail = payload;
    let mut frag = Frag::Whole;
    let mut frag_id = 0;
    if next == NEXTHDR_FRAGMENT {
        if avail < FRAG_HLEN {
            return Err(Skip::Malformed);
        }
        let fh: *mut [u8; FRAG_HLEN] = ptr_at(ctx, l4)?;
        let fh = fh as *const u8;
        next = byte(fh, 0);
        let id = ne32(fh, 4);
        let offset_flags = be16(fh, 2);
        frag_id = id;
        frag = if offset_flags >> 3 != 0 {
            Frag::Later
        } else if offset_flags & 1 != 0 {
            Frag::First
        } else {
            // An atomic fragment (offset 0, no more fragments) is a whole datagram.
            Frag::Whole
        };
        l4 += FRAG_HLEN;
        avail -= FRAG_HLEN;
    }
    match next {
        PROTO_ICMPV6 if frag != Frag::Whole => return Err(Skip::Other),
        NEXTHDR_HOP | NEXTHDR_ROUTING | NEXTHDR_DEST | NEXTHDR_FRAGMENT => {
            return Err(Skip::ExtHdr);
        }
        _ => {}
    }
    let h = Ip {
        ip,
        proto: next,
        l4,
        avail,
        ip_len: IPV6_HLEN + payload,
        frag,
        frag_id,
    };
    Ok(h)
}

/// The TCP or UDP header after an IP header (none for a later fragment). A BPF function
/// of its own: the packet it builds lives in its frame only.
#[inline(never)]
fn parse_l4<const V6: bool>(ctx: &XdpContext, b: &Base, h: &Ip) -> u32 {
    // Built in place and lent out: moving a packet by value costs a stack copy each time,
    // and the BPF stack is 512 bytes for the whole call chain. Not zeroed first: zeroing
    // its ~100 bytes took a memset subroutine call, about 45% of a packet's cost.
    let mut p = MaybeUninit::<Packet>::uninit();
    match l4_packet::<V6>(ctx, b, h, p.as_mut_ptr()) {
        // SAFETY: l4_packet writes every field before it returns Ok.
        Ok(()) => crate::flow::<V6>(ctx, unsafe { p.assume_init_ref() }),
        Err(skip) => crate::skipped(ctx, skip),
    }
}

/// Fills `p` from a TCP or UDP header (or a later fragment, which has none).
#[inline(always)]
fn l4_packet<const V6: bool>(
    ctx: &XdpContext,
    b: &Base,
    h: &Ip,
    p: *mut Packet,
) -> Result<(), Skip> {
    if h.proto != PROTO_TCP && h.proto != PROTO_UDP {
        return Err(Skip::Other);
    }
    let (so, d) = addr_offsets::<V6>();
    // SAFETY (every write below): `p` points to the caller's uninitialised packet; its
    // fields are written through the raw pointer, never read, until all are set.
    unsafe {
        (*p).eth = b.eth;
        (*p).ip = h.ip;
        (*p).l4 = h.ip;
        (*p).l4_check = h.ip as *mut [u8; 2];
        (*p).key.proto = h.proto;
        (*p).key.family = family::<V6>();
        (*p).key.src_port_be = 0;
        (*p).key.dst_port_be = 0;
        (*p).key._pad = [0; 2];
        (*p).tcp_flags = 0;
        (*p).frag = h.frag;
        (*p).frag_id = h.frag_id;
        (*p).ip_len = h.ip_len as u16;
        (*p).len = b.len as u64;
        (*p).tagged = b.tagged;
        read_addr::<V6>(h.ip, so, &raw mut (*p).key.src);
        read_addr::<V6>(h.ip, d, &raw mut (*p).key.dst);
    }
    if h.frag == Frag::Later {
        return Ok(());
    }
    let (l4, check, tcp_flags): (*mut u8, *mut [u8; 2], u8) = if h.proto == PROTO_TCP {
        if h.avail < TCP_HLEN {
            return Err(Skip::Malformed);
        }
        let t: *mut [u8; TCP_HLEN] = ptr_at(ctx, h.l4)?;
        let t = t as *mut u8;
        // Data offset: at least the 20-byte header, and within the segment.
        let doff = ((byte(t, 12) >> 4) as usize) << 2;
        if doff < TCP_HLEN || doff > h.avail {
            return Err(Skip::Malformed);
        }
        // SAFETY: offset 16 is inside the checked 20-byte header.
        (t, unsafe { t.add(16) } as *mut [u8; 2], byte(t, 13))
    } else {
        if h.avail < UDP_HLEN {
            return Err(Skip::Malformed);
        }
        let u: *mut [u8; UDP_HLEN] = ptr_at(ctx, h.l4)?;
        let u = u as *mut u8;
        // The UDP length covers the header and lies within the IP payload (a first
        // fragment's covers the whole datagram, so only its lower bound holds).
        let ulen = be16(u, 4) as usize;
        if ulen < UDP_HLEN || (h.frag == Frag::Whole && ulen > h.avail) {
            return Err(Skip::Malformed);
        }
        if V6 && ne16(u, 6) == 0 {
            // A zero UDP checksum is not allowed over IPv6 (RFC 8200 8.1).
            return Err(Skip::Malformed);
        }
        // SAFETY: offset 6 is inside the checked 8-byte header.
        (u, unsafe { u.add(6) } as *mut [u8; 2], 0)
    };
    // SAFETY: as above.
    unsafe {
        (*p).l4 = l4;
        (*p).l4_check = check;
        (*p).tcp_flags = tcp_flags;
        (*p).key.src_port_be = ne16(l4, 0);
        (*p).key.dst_port_be = ne16(l4, 2);
    }
    Ok(())
}

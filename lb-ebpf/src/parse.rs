//! Header parsing: Ethernet (with at most one 802.1Q/802.1ad tag), IPv4, TCP and UDP.
//!
//! Rules: anything that is not IPv4 TCP/UDP is `Skip::Other` (passed untouched); a
//! header that is cut short or whose lengths disagree with the frame is
//! `Skip::Malformed` (passed untouched, counted, never rewritten).

use core::mem::size_of;

use aya_ebpf::programs::XdpContext;
use lb_common::{Addr, FAMILY_V4, FlowKey, PROTO_TCP, PROTO_UDP};
use network_types::{eth::EthHdr, ip::Ipv4Hdr};

const ETH_P_IP: u16 = 0x0800;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
const ETH_HLEN: usize = 14;
const VLAN_HLEN: usize = 4;
const TCP_HLEN: usize = 20;
const UDP_HLEN: usize = 8;
/// IPv4 "more fragments" flag and fragment offset bits of the frag_off field.
const IP_MF_OFFSET_MASK: u16 = 0x3fff;

/// Why a packet is not balanced.
pub enum Skip {
    Other,
    Malformed,
}

/// A parsed IPv4 TCP/UDP packet. The pointers are bounds-checked against the frame.
pub struct Packet {
    pub eth: *mut EthHdr,
    pub ip: *mut Ipv4Hdr,
    /// Start of the L4 header: source port at +0, destination port at +2.
    pub l4: *mut u8,
    /// The L4 checksum field.
    pub l4_check: *mut [u8; 2],
    pub key: FlowKey,
    /// The TCP header's flags byte (0 for UDP).
    pub tcp_flags: u8,
    /// Frame length in bytes.
    pub len: u64,
    /// The frame carries a VLAN tag.
    pub tagged: bool,
}

#[inline(always)]
fn ptr_at<T>(ctx: &XdpContext, offset: usize) -> Result<*mut T, Skip> {
    let start = ctx.data();
    if start + offset + size_of::<T>() > ctx.data_end() {
        return Err(Skip::Malformed);
    }
    Ok((start + offset) as *mut T)
}

/// Parses the frame in `ctx`.
#[inline(always)]
pub fn parse(ctx: &XdpContext) -> Result<Packet, Skip> {
    let len = ctx.data_end() - ctx.data();
    let eth: *mut EthHdr = ptr_at(ctx, 0)?;
    // SAFETY: `eth` is within the frame (checked by ptr_at).
    let mut ether_type = u16::from_be(unsafe { (*eth).ether_type });
    let mut l3 = ETH_HLEN;
    if ether_type == ETH_P_8021Q || ether_type == ETH_P_8021AD {
        // The tag's inner EtherType is its last two bytes.
        let inner: *mut [u8; 2] = ptr_at(ctx, ETH_HLEN + 2)?;
        ether_type = u16::from_be_bytes(unsafe { *inner });
        l3 += VLAN_HLEN;
    }
    if ether_type != ETH_P_IP {
        return Err(Skip::Other);
    }
    let ip: *mut Ipv4Hdr = ptr_at(ctx, l3)?;
    // SAFETY: `ip` is within the frame.
    let (vihl, proto, tot_len, frag) = unsafe {
        (
            (*ip).vihl,
            (*ip).proto,
            u16::from_be_bytes((*ip).tot_len) as usize,
            u16::from_be_bytes((*ip).frags),
        )
    };
    let ihl = ((vihl & 0x0f) as usize) << 2;
    if vihl >> 4 != 4 || ihl < size_of::<Ipv4Hdr>() || tot_len < ihl || l3 + tot_len > len {
        return Err(Skip::Malformed);
    }
    if proto != PROTO_TCP && proto != PROTO_UDP {
        return Err(Skip::Other);
    }
    if frag & IP_MF_OFFSET_MASK != 0 {
        // Fragments carry no (or only the first) L4 header: not balanced yet.
        return Err(Skip::Other);
    }
    let l4 = l3 + ihl;
    let (l4_len, check_at) = if proto == PROTO_TCP {
        (TCP_HLEN, 16)
    } else {
        (UDP_HLEN, 6)
    };
    if tot_len < ihl + l4_len {
        return Err(Skip::Malformed);
    }
    let l4_hdr: *mut [u8; TCP_HLEN] = if proto == PROTO_TCP {
        ptr_at(ctx, l4)?
    } else {
        // UDP: only 8 bytes are guaranteed.
        ptr_at::<[u8; UDP_HLEN]>(ctx, l4)? as *mut [u8; TCP_HLEN]
    };
    let l4_ptr = l4_hdr as *mut u8;
    // SAFETY: the first `l4_len` bytes of the L4 header are within the frame.
    let (sport, dport, tcp_flags) = unsafe {
        let tcp_flags = if proto == PROTO_TCP {
            if ((*l4_ptr.add(12)) >> 4) < 5 {
                return Err(Skip::Malformed);
            }
            *l4_ptr.add(13)
        } else {
            0
        };
        (
            u16::from_ne_bytes([*l4_ptr, *l4_ptr.add(1)]),
            u16::from_ne_bytes([*l4_ptr.add(2), *l4_ptr.add(3)]),
            tcp_flags,
        )
    };
    let (src, dst) = unsafe { ((*ip).src_addr, (*ip).dst_addr) };
    Ok(Packet {
        eth,
        ip,
        l4: l4_ptr,
        // SAFETY: check_at + 2 <= l4_len, within the checked header.
        l4_check: unsafe { l4_ptr.add(check_at) } as *mut [u8; 2],
        key: FlowKey {
            src: Addr::from_v4_octets(src),
            dst: Addr::from_v4_octets(dst),
            src_port_be: sport,
            dst_port_be: dport,
            proto,
            family: FAMILY_V4,
            _pad: [0; 2],
        },
        tcp_flags,
        len: len as u64,
        tagged: l3 != ETH_HLEN,
    })
}

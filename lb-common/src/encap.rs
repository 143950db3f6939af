//! Direct server return arithmetic: the outer header of `dsr-ipip` (IPv4-in-IPv4,
//! IPv6-in-IPv6), the outer source address that spreads flows over ECMP paths and the
//! backends' receive queues, the MTU rule and the ICMP "too big" answer, and the
//! decapsulation rule of the backends' program. Pure functions, so the host tests check
//! them; the XDP programs call them.
//!
//! Header words are native-endian loads of wire bytes (see `csum`): `[u16; N]` written
//! to the packet 16 bits at a time, in order.

use crate::{Addr, csum::fold};

/// IP protocol number of IPv4 in IP (RFC 2003).
pub const PROTO_IPIP: u8 = 4;
/// IP protocol number (IPv6 next header) of IPv6 in IPv6 (RFC 2473).
pub const PROTO_IPV6: u8 = 41;
pub const PROTO_ICMP: u8 = 1;
pub const PROTO_ICMPV6: u8 = 58;
/// Bytes the outer header adds: IPv4 (no options) and IPv6 (no extension headers).
pub const OUTER_V4: u16 = 20;
pub const OUTER_V6: u16 = 40;
/// TTL / hop limit of the outer header.
pub const OUTER_TTL: u8 = 64;
/// The smallest link MTU IPv6 allows (RFC 8200 5).
pub const IPV6_MIN_MTU: u32 = 1280;
/// The smallest MTU an IPv4 host must accept (RFC 791).
pub const IPV4_MIN_MTU: u32 = 68;
/// Bytes of the offending packet quoted in the ICMP answer: its IP header and the first
/// 8 bytes of its payload (ports and, for TCP, the sequence number), as RFC 792 asks and
/// as the client's stack needs to find the socket.
pub const QUOTE_V4: u16 = 20 + 8;
pub const QUOTE_V6: u16 = 40 + 8;
/// ICMP "destination unreachable", code "fragmentation needed and DF set" (RFC 1191).
pub const ICMP_DEST_UNREACH: u8 = 3;
pub const ICMP_FRAG_NEEDED: u8 = 4;
/// ICMPv6 "packet too big" (RFC 4443 3.2).
pub const ICMPV6_PACKET_TOO_BIG: u8 = 2;

/// The outer source address of a flow with hash `hash`: the bits of `prefix` where
/// `host_mask` is 0, the flow hash's where it is 1 (each 32-bit word takes the hash
/// rotated by its position, so a mask wider than 32 bits still varies). Flows of one
/// client then leave with different outer sources, so routers hashing the outer header
/// (ECMP) and NICs hashing it (RSS) spread them, while one flow always keeps one.
#[inline(always)]
pub const fn outer_source(prefix: &Addr, host_mask: &Addr, hash: u32) -> Addr {
    let mut words = [0u32; 4];
    let mut i = 0;
    while i < 4 {
        let m = host_mask.words[i];
        words[i] = (prefix.words[i] & !m) | (hash.rotate_left(8 * i as u32) & m);
        i += 1;
    }
    Addr { words }
}

/// The host mask (wire bytes) of a prefix of `len` bits in an address of `bits` (32 or
/// 128) bits: ones after the prefix.
pub const fn host_mask(len: u32, bits: u32) -> Addr {
    let mut o = [0u8; 16];
    let mut i = 0;
    while i < bits {
        if i >= len {
            o[(i / 8) as usize] |= 0x80 >> (i % 8);
        }
        i += 1;
    }
    Addr::from_v6_octets(o)
}

/// The outer IPv4 header around an inner IPv4 packet of `inner_len` bytes with type of
/// service `tos`, from `src` to `dst` (wire words): no options, no identification, DF set
/// (path MTU discovery, never fragmentation), TTL 64, protocol IPIP, checksum filled.
#[inline(always)]
pub const fn ipv4_outer(inner_len: u16, tos: u8, src: u32, dst: u32) -> [u16; 10] {
    ipv4_header(inner_len + OUTER_V4, tos, true, PROTO_IPIP, src, dst)
}

/// An IPv4 header without options of `total_len` bytes (header included), checksum
/// filled: identification 0, TTL 64, DF as `df`.
#[inline(always)]
pub const fn ipv4_header(
    total_len: u16,
    tos: u8,
    df: bool,
    proto: u8,
    src: u32,
    dst: u32,
) -> [u16; 10] {
    let (s, d) = (src.to_ne_bytes(), dst.to_ne_bytes());
    let mut h = [
        u16::from_ne_bytes([0x45, tos]),
        total_len.to_be(),
        0,
        u16::from_ne_bytes([if df { 0x40 } else { 0 }, 0]),
        u16::from_ne_bytes([OUTER_TTL, proto]),
        0,
        u16::from_ne_bytes([s[0], s[1]]),
        u16::from_ne_bytes([s[2], s[3]]),
        u16::from_ne_bytes([d[0], d[1]]),
        u16::from_ne_bytes([d[2], d[3]]),
    ];
    let mut sum = 0u32;
    let mut i = 0;
    while i < 10 {
        sum += h[i] as u32;
        i += 1;
    }
    h[5] = !fold(sum);
    h
}

/// The first 8 bytes of an IPv6 header: version, traffic class `tc`, the low 20 bits of
/// `flow_label`, `payload_len`, `next` header, hop limit 64. The addresses follow.
#[inline(always)]
pub const fn ipv6_head(payload_len: u16, tc: u8, flow_label: u32, next: u8) -> [u16; 4] {
    let fl = flow_label & 0x000f_ffff;
    [
        u16::from_ne_bytes([0x60 | (tc >> 4), (tc << 4) | (fl >> 16) as u8]),
        (fl as u16).to_be(),
        payload_len.to_be(),
        u16::from_ne_bytes([next, OUTER_TTL]),
    ]
}

/// The first 8 bytes of the outer IPv6 header around an inner IPv6 packet of `inner_len`
/// bytes (its header included) with traffic class `tc`: the inner traffic class,
/// `flow_label` (20 bits of the flow hash, so routers hashing the flow label spread
/// flows), next header IPv6, hop limit 64. The addresses follow.
#[inline(always)]
pub const fn ipv6_outer_head(inner_len: u16, tc: u8, flow_label: u32) -> [u16; 4] {
    ipv6_head(inner_len, tc, flow_label, PROTO_IPV6)
}

/// The MTU an ICMP "too big" answer reports, given the egress MTU `link_mtu` the
/// encapsulated packet did not fit: the room left for the inner packet, never below the
/// family's minimum (an IPv6 client cannot go below 1280; such a tunnel cannot carry it).
#[inline(always)]
pub const fn reported_mtu(link_mtu: u32, v6: bool) -> u32 {
    let (outer, min) = if v6 {
        (OUTER_V6 as u32, IPV6_MIN_MTU)
    } else {
        (OUTER_V4 as u32, IPV4_MIN_MTU)
    };
    let room = link_mtu.saturating_sub(outer);
    if room < min { min } else { room }
}

/// Whether an inner packet of `ip_len` bytes, encapsulated, exceeds `link_mtu`.
#[inline(always)]
pub const fn too_big(ip_len: u32, link_mtu: u32, v6: bool) -> bool {
    ip_len + if v6 { OUTER_V6 as u32 } else { OUTER_V4 as u32 } > link_mtu
}

/// The ICMP header (type, code, checksum 0, then the rest-of-header) of a "too big"
/// answer reporting `mtu`: IPv4 "fragmentation needed" (16-bit next-hop MTU in the second
/// half of the rest) or ICMPv6 "packet too big" (32-bit MTU).
#[inline(always)]
pub const fn icmp_too_big_head(mtu: u32, v6: bool) -> [u16; 4] {
    if v6 {
        [
            u16::from_ne_bytes([ICMPV6_PACKET_TOO_BIG, 0]),
            0,
            ((mtu >> 16) as u16).to_be(),
            (mtu as u16).to_be(),
        ]
    } else {
        [
            u16::from_ne_bytes([ICMP_DEST_UNREACH, ICMP_FRAG_NEEDED]),
            0,
            0,
            (mtu as u16).to_be(),
        ]
    }
}

/// The decapsulation rule, on the outer and inner headers' fields: what to do with a
/// packet whose outer protocol is IPIP (IPv4) or IPv6-in-IPv6 (IPv6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Decap {
    /// Strip the outer header: the inner packet is whole and exactly fills the outer payload.
    Strip = 0,
    /// Not ours to judge (a fragment of a tunnelled packet): the kernel gets it as it is.
    Pass = 1,
    /// Claims to carry a packet but does not (lengths disagree, wrong inner version, an
    /// inner header cut short): dropped, never handed on corrupted.
    Malformed = 2,
}

/// Decides on an outer IPv4 header of `ihl` bytes, total length `tot_len`, fragment
/// field `frag` (host order), in a frame leaving `avail` bytes from the outer header on,
/// whose payload starts with the byte `inner_vihl` and carries an inner total length of
/// `inner_len` (host order; 0 when the inner header is cut short).
#[inline(always)]
pub const fn decap_v4(
    ihl: u32,
    tot_len: u32,
    frag: u16,
    avail: u32,
    inner_vihl: u8,
    inner_len: u32,
) -> Decap {
    if frag & 0x3fff != 0 {
        // More fragments, or an offset: the inner packet is not whole here.
        return Decap::Pass;
    }
    if ihl < 20 || tot_len > avail || tot_len < ihl + 20 {
        return Decap::Malformed;
    }
    if inner_vihl >> 4 != 4 || ((inner_vihl & 0x0f) as u32) < 5 {
        return Decap::Malformed;
    }
    if inner_len != tot_len - ihl {
        return Decap::Malformed;
    }
    Decap::Strip
}

/// Decides on an outer IPv6 header with payload length `payload` (host order), in a
/// frame leaving `avail` bytes from the outer header on, whose payload starts with the
/// byte `inner_v` and carries an inner payload length of `inner_payload`.
#[inline(always)]
pub const fn decap_v6(payload: u32, avail: u32, inner_v: u8, inner_payload: u32) -> Decap {
    if 40 + payload > avail || payload < 40 {
        return Decap::Malformed;
    }
    if inner_v >> 4 != 6 || inner_payload + 40 != payload {
        return Decap::Malformed;
    }
    Decap::Strip
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::csum::checksum;

    fn bytes(h: &[u16]) -> Vec<u8> {
        h.iter().flat_map(|w| w.to_ne_bytes()).collect()
    }

    #[test]
    fn ipv4_outer_header_is_valid_and_checksummed() {
        let src = u32::from_ne_bytes([198, 19, 0, 7]);
        let dst = u32::from_ne_bytes([198, 18, 1, 2]);
        let b = bytes(&ipv4_outer(60, 0x10, src, dst));
        assert_eq!(b.len(), 20);
        assert_eq!(b[0], 0x45);
        assert_eq!(b[1], 0x10);
        assert_eq!(u16::from_be_bytes([b[2], b[3]]), 80);
        assert_eq!(b[6], 0x40, "DF set");
        assert_eq!(b[8], 64);
        assert_eq!(b[9], PROTO_IPIP);
        assert_eq!(&b[12..16], &[198, 19, 0, 7]);
        assert_eq!(&b[16..20], &[198, 18, 1, 2]);
        // A header with its checksum in place sums to all ones.
        assert_eq!(checksum(&b), 0);
        // Recomputed with the field zeroed, the checksum is the field.
        let mut z = b.clone();
        z[10] = 0;
        z[11] = 0;
        assert_eq!(checksum(&z).to_ne_bytes(), [b[10], b[11]]);
    }

    #[test]
    fn ipv6_outer_head_fields() {
        let b = bytes(&ipv6_outer_head(1040, 0xb8, 0xabcde_u32 | 0xfff0_0000));
        assert_eq!(b[0], 0x6b);
        assert_eq!(b[1], 0x8a);
        assert_eq!(&b[2..4], &[0xbc, 0xde]);
        assert_eq!(u16::from_be_bytes([b[4], b[5]]), 1040);
        assert_eq!(b[6], PROTO_IPV6);
        assert_eq!(b[7], 64);
    }

    #[test]
    fn outer_source_keeps_the_prefix_and_varies_the_host_bits() {
        let prefix = Addr::from_v4_octets([198, 19, 0, 0]);
        let mask = host_mask(16, 32);
        assert_eq!(mask.v4_octets(), [0, 0, 255, 255]);
        let mut seen = std::collections::BTreeSet::new();
        for h in 0..64u32 {
            let a = outer_source(&prefix, &mask, h.wrapping_mul(0x9e37_79b9));
            assert_eq!(&a.v4_octets()[..2], &[198, 19]);
            assert_eq!(a.words[1..], [0, 0, 0]);
            seen.insert(a);
        }
        assert!(seen.len() > 60, "host bits follow the hash: {}", seen.len());
        // One hash, one source.
        assert_eq!(
            outer_source(&prefix, &mask, 7),
            outer_source(&prefix, &mask, 7)
        );
        let p6 = Addr::from_v6_octets([0x20, 1, 0, 2, 0, 0, 0, 0xff, 0, 0, 0, 0, 0, 0, 0, 0]);
        let m6 = host_mask(64, 128);
        let a = outer_source(&p6, &m6, 0x1234_5678);
        assert_eq!(&a.v6_octets()[..8], &p6.v6_octets()[..8]);
        assert_ne!(&a.v6_octets()[8..], &[0u8; 8]);
        assert_eq!(host_mask(128, 128), Addr::default());
    }

    #[test]
    fn mtu_rule() {
        assert!(!too_big(1480, 1500, false));
        assert!(too_big(1481, 1500, false));
        assert!(!too_big(1460, 1500, true));
        assert!(too_big(1461, 1500, true));
        assert_eq!(reported_mtu(1500, false), 1480);
        assert_eq!(reported_mtu(1500, true), 1460);
        assert_eq!(reported_mtu(1300, true), 1280, "never below IPv6's minimum");
        assert_eq!(reported_mtu(40, false), 68);
    }

    #[test]
    fn icmp_heads() {
        let b = bytes(&icmp_too_big_head(1480, false));
        assert_eq!(b, [3, 4, 0, 0, 0, 0, 0x05, 0xc8]);
        let b = bytes(&icmp_too_big_head(1460, true));
        assert_eq!(b, [2, 0, 0, 0, 0, 0, 0x05, 0xb4]);
    }

    #[test]
    fn decap_rules() {
        // 20-byte outer, 60-byte inner.
        assert_eq!(decap_v4(20, 80, 0x4000, 80, 0x45, 60), Decap::Strip);
        assert_eq!(
            decap_v4(20, 80, 0x4000, 100, 0x45, 60),
            Decap::Strip,
            "padding"
        );
        assert_eq!(decap_v4(20, 80, 0x2000, 80, 0x45, 60), Decap::Pass);
        assert_eq!(decap_v4(20, 80, 0x0010, 80, 0x45, 60), Decap::Pass);
        assert_eq!(decap_v4(20, 80, 0, 79, 0x45, 60), Decap::Malformed);
        assert_eq!(decap_v4(20, 80, 0, 80, 0x65, 60), Decap::Malformed);
        assert_eq!(decap_v4(20, 80, 0, 80, 0x44, 60), Decap::Malformed);
        assert_eq!(decap_v4(20, 80, 0, 80, 0x45, 61), Decap::Malformed);
        assert_eq!(decap_v4(20, 39, 0, 80, 0x45, 19), Decap::Malformed);
        assert_eq!(decap_v4(16, 80, 0, 80, 0x45, 64), Decap::Malformed);
        assert_eq!(decap_v6(100, 140, 0x60, 60), Decap::Strip);
        assert_eq!(decap_v6(100, 139, 0x60, 60), Decap::Malformed);
        assert_eq!(decap_v6(100, 140, 0x45, 60), Decap::Malformed);
        assert_eq!(decap_v6(100, 140, 0x60, 61), Decap::Malformed);
        assert_eq!(decap_v6(30, 140, 0x60, 0), Decap::Malformed);
    }
}

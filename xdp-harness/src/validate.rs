//! Checks a frame the way a receiver would: etherparse parses it (Ethernet, at most one
//! VLAN tag, IPv4 or IPv6, TCP/UDP/ICMP/ICMPv6), and every checksum in it is recomputed by
//! etherparse and compared: the IPv4 header checksum, the TCP/UDP checksum over the
//! pseudo-header (not for fragments: their L4 checksum covers the whole datagram), the
//! ICMP checksum (ICMPv6: with its pseudo-header), and in an ICMP error the quoted IPv4
//! header's checksum and, when the quote holds the whole packet, its L4 checksum.

use etherparse::{Ipv4HeaderSlice, NetSlice, SlicedPacket, TransportSlice};

/// Why a frame is not valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalid {
    /// etherparse cannot parse it (or a length does not fit).
    Parse(String),
    /// It parses, but a checksum is wrong.
    Checksum(String),
}

impl Invalid {
    pub fn is_checksum(&self) -> bool {
        matches!(self, Invalid::Checksum(_))
    }

    fn quoted(self) -> Invalid {
        match self {
            Invalid::Parse(e) => Invalid::Parse(format!("quoted packet: {e}")),
            Invalid::Checksum(e) => Invalid::Checksum(format!("quoted packet: {e}")),
        }
    }
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Invalid::Parse(e) | Invalid::Checksum(e) => f.write_str(e),
        }
    }
}

/// Parses `frame` and checks every checksum in it.
pub fn validate(frame: &[u8]) -> Result<(), Invalid> {
    let p = SlicedPacket::from_ethernet(frame)
        .map_err(|e| Invalid::Parse(format!("does not parse: {e}")))?;
    check(&p)
}

fn check(p: &SlicedPacket) -> Result<(), Invalid> {
    match &p.net {
        Some(NetSlice::Arp(_)) => return Ok(()),
        None => return Err(Invalid::Parse("no IP header".into())),
        _ => {}
    }
    for sum in sums(p, 0) {
        let want = sum.want?;
        if sum.got != want && !(sum.zero_ok && sum.got == 0) {
            return Err(Invalid::Checksum(format!(
                "{} checksum {:#06x}, should be {want:#06x}",
                sum.what, sum.got
            )));
        }
    }
    match &p.transport {
        Some(TransportSlice::Icmpv4(icmp)) if matches!(icmp.type_u8(), 3 | 4 | 5 | 11 | 12) => {
            check_quoted(icmp.payload())
        }
        Some(TransportSlice::Icmpv6(icmp)) if icmp.type_u8() < 128 => check_quoted(icmp.payload()),
        _ => Ok(()),
    }
}

/// One checksum field of a frame: where it is, what it holds, what it should hold.
pub struct Sum {
    pub what: &'static str,
    /// The field's address minus the `base` given to [`sums`]: its offset in the frame.
    pub at: usize,
    pub got: u16,
    /// The right value; an error when it cannot be computed (a length that does not fit,
    /// IPv6 transport over IPv4).
    pub want: Result<u16, Invalid>,
    /// IPv4 UDP: 0 means "no checksum" and is valid too.
    pub zero_ok: bool,
}

/// Every checksum of a parsed frame (or quoted packet) that [`validate`] checks and the
/// fuzzer's repair rewrites: the IPv4 header's, and the TCP/UDP/ICMP/ICMPv6 one (not a
/// fragment's: it covers the whole datagram). `base` is the frame's start address.
pub fn sums(p: &SlicedPacket, base: usize) -> Vec<Sum> {
    let at = |field: &[u8], offset: usize| (field.as_ptr() as usize).wrapping_sub(base) + offset;
    let mut out = Vec::new();
    let (src, dst, fragmented) = match &p.net {
        Some(NetSlice::Ipv4(ip)) => {
            let h = ip.header();
            out.push(Sum {
                what: "IPv4 header",
                at: at(h.slice(), 10),
                got: h.header_checksum(),
                want: Ok(h.to_header().calc_header_checksum()),
                zero_ok: false,
            });
            (
                h.source().to_vec(),
                h.destination().to_vec(),
                ip.is_payload_fragmented(),
            )
        }
        Some(NetSlice::Ipv6(ip)) => {
            let h = ip.header();
            (
                h.source().to_vec(),
                h.destination().to_vec(),
                ip.is_payload_fragmented(),
            )
        }
        _ => return out,
    };
    if fragmented {
        return out;
    }
    let parse = |e: etherparse::err::ValueTooBigError<usize>| Invalid::Parse(e.to_string());
    let v4 = (v4(&src), v4(&dst));
    let sum = match &p.transport {
        Some(TransportSlice::Tcp(tcp)) => Sum {
            what: "TCP",
            at: at(tcp.slice(), 16),
            got: tcp.checksum(),
            want: match v4 {
                (Some(s), Some(d)) => tcp.calc_checksum_ipv4(s, d).map_err(parse),
                _ => v6(&src).and_then(|s| {
                    v6(&dst).and_then(|d| tcp.calc_checksum_ipv6(s, d).map_err(parse))
                }),
            },
            zero_ok: false,
        },
        Some(TransportSlice::Udp(udp)) => {
            let h = udp.to_header();
            Sum {
                what: "UDP",
                at: at(udp.slice(), 6),
                got: h.checksum,
                want: match v4 {
                    (Some(s), Some(d)) => {
                        h.calc_checksum_ipv4_raw(s, d, udp.payload()).map_err(parse)
                    }
                    _ => v6(&src).and_then(|s| {
                        v6(&dst).and_then(|d| {
                            h.calc_checksum_ipv6_raw(s, d, udp.payload()).map_err(parse)
                        })
                    }),
                },
                zero_ok: v4.0.is_some(),
            }
        }
        Some(TransportSlice::Icmpv4(icmp)) => Sum {
            what: "ICMP",
            at: at(icmp.slice(), 2),
            got: icmp.checksum(),
            want: Ok(icmp.icmp_type().calc_checksum(icmp.payload())),
            zero_ok: false,
        },
        Some(TransportSlice::Icmpv6(icmp)) => Sum {
            what: "ICMPv6",
            at: at(icmp.slice(), 2),
            got: icmp.checksum(),
            want: v6(&src).and_then(|s| {
                v6(&dst).and_then(|d| {
                    icmp.icmp_type()
                        .calc_checksum(s, d, icmp.payload())
                        .map_err(parse)
                })
            }),
            zero_ok: false,
        },
        _ => return out,
    };
    out.push(sum);
    out
}

fn check_ipv4_header(h: &Ipv4HeaderSlice) -> Result<(), Invalid> {
    let want = h.to_header().calc_header_checksum();
    if h.header_checksum() != want {
        return Err(Invalid::Checksum(format!(
            "IPv4 header checksum {:#06x}, should be {want:#06x}",
            h.header_checksum()
        )));
    }
    Ok(())
}

/// The packet an ICMP error quotes: its IPv4 header checksum when the header is whole,
/// and everything [`check`] checks when the quote holds the whole packet.
fn check_quoted(quoted: &[u8]) -> Result<(), Invalid> {
    if let Ok(h) = Ipv4HeaderSlice::from_slice(quoted) {
        check_ipv4_header(&h).map_err(Invalid::quoted)?;
    }
    match SlicedPacket::from_ip(quoted) {
        Ok(inner) if whole(&inner, quoted.len()) => check(&inner).map_err(Invalid::quoted),
        _ => Ok(()),
    }
}

/// Whether the IP packet's own length covers exactly the quoted bytes.
fn whole(p: &SlicedPacket, len: usize) -> bool {
    match &p.net {
        Some(NetSlice::Ipv4(ip)) => usize::from(ip.header().total_len()) == len,
        Some(NetSlice::Ipv6(ip)) => usize::from(ip.header().payload_length()) + 40 == len,
        _ => false,
    }
}

fn v4(a: &[u8]) -> Option<[u8; 4]> {
    a.try_into().ok()
}

/// An IPv6 address, or the parse error of a packet that mixes families (ICMPv6 or an
/// IPv6 pseudo-header over IPv4).
fn v6(a: &[u8]) -> Result<[u8; 16], Invalid> {
    a.try_into()
        .map_err(|_| Invalid::Parse("IPv6 transport over an IPv4 header".into()))
}

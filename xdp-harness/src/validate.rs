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
    let (src, dst, fragmented) = match &p.net {
        Some(NetSlice::Ipv4(ip)) => {
            let h = ip.header();
            check_ipv4_header(&h)?;
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
        Some(NetSlice::Arp(_)) => return Ok(()),
        None => return Err(Invalid::Parse("no IP header".into())),
    };
    if fragmented {
        return Ok(());
    }
    let bad = |what: &str, got: u16, want: u16| -> Result<(), Invalid> {
        if got == want {
            Ok(())
        } else {
            Err(Invalid::Checksum(format!(
                "{what} checksum {got:#06x}, should be {want:#06x}"
            )))
        }
    };
    match &p.transport {
        Some(TransportSlice::Tcp(tcp)) => {
            let want = match (v4(&src), v4(&dst)) {
                (Some(s), Some(d)) => tcp.calc_checksum_ipv4(s, d),
                _ => tcp.calc_checksum_ipv6(v6(&src)?, v6(&dst)?),
            }
            .map_err(|e| Invalid::Parse(e.to_string()))?;
            bad("TCP", tcp.checksum(), want)
        }
        Some(TransportSlice::Udp(udp)) => {
            let h = udp.to_header();
            let want = match (v4(&src), v4(&dst)) {
                // IPv4 UDP may go without a checksum.
                (Some(_), Some(_)) if h.checksum == 0 => return Ok(()),
                (Some(s), Some(d)) => h.calc_checksum_ipv4_raw(s, d, udp.payload()),
                _ => h.calc_checksum_ipv6_raw(v6(&src)?, v6(&dst)?, udp.payload()),
            }
            .map_err(|e| Invalid::Parse(e.to_string()))?;
            bad("UDP", h.checksum, want)
        }
        Some(TransportSlice::Icmpv4(icmp)) => {
            let want = icmp.icmp_type().calc_checksum(icmp.payload());
            bad("ICMP", icmp.checksum(), want)?;
            if matches!(icmp.type_u8(), 3 | 4 | 5 | 11 | 12) {
                check_quoted(icmp.payload())?;
            }
            Ok(())
        }
        Some(TransportSlice::Icmpv6(icmp)) => {
            if !icmp.is_checksum_valid(v6(&src)?, v6(&dst)?) {
                return Err(Invalid::Checksum(format!(
                    "ICMPv6 checksum {:#06x} is wrong",
                    icmp.checksum()
                )));
            }
            if icmp.type_u8() < 128 {
                check_quoted(icmp.payload())?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
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

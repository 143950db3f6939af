//! Packets described as values ([`Pkt`]) and built with etherparse, so that every length
//! and checksum in them is computed from scratch by the library, never typed by hand.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use etherparse::{
    IpFragOffset, IpHeaders, IpNumber, Ipv4Header, Ipv4Options, Ipv6Extensions, Ipv6FlowLabel,
    Ipv6FragmentHeader, Ipv6Header, Ipv6RawExtHeader, Ipv6RoutingExtensions, PacketBuilder,
    PacketBuilderStep, VlanId,
};
use lb_common::{Addr, FAMILY_V4, FAMILY_V6, PROTO_TCP, PROTO_UDP};

use crate::plan::{self, BACKEND_IF_MAC, BACKEND_MAC, CLIENT_IF_MAC, CLIENT_MAC, Plan};

/// An IPv4 or IPv6 address as wire bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Ip {
    V4([u8; 4]),
    V6([u8; 16]),
}

impl Ip {
    pub fn family(self) -> u8 {
        match self {
            Ip::V4(_) => FAMILY_V4,
            Ip::V6(_) => FAMILY_V6,
        }
    }

    /// As the maps store it.
    pub fn addr(self) -> Addr {
        match self {
            Ip::V4(o) => Addr::from_v4_octets(o),
            Ip::V6(o) => Addr::from_v6_octets(o),
        }
    }

    pub fn octets(&self) -> &[u8] {
        match self {
            Ip::V4(o) => o,
            Ip::V6(o) => o,
        }
    }

    pub fn std(self) -> IpAddr {
        match self {
            Ip::V4(o) => Ipv4Addr::from(o).into(),
            Ip::V6(o) => Ipv6Addr::from(o).into(),
        }
    }
}

impl fmt::Display for Ip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.std().fmt(f)
    }
}

/// The transport of a [`Pkt`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum L4 {
    /// A SYN, or else an ACK (with `fin`/`rst` added when set).
    Tcp {
        syn: bool,
    },
    Udp,
}

impl L4 {
    pub fn proto(self) -> u8 {
        match self {
            L4::Tcp { .. } => PROTO_TCP,
            L4::Udp => PROTO_UDP,
        }
    }

    /// Bytes of the L4 header as built here (TCP without options).
    pub fn header_len(self) -> usize {
        match self {
            L4::Tcp { .. } => 20,
            L4::Udp => 8,
        }
    }
}

/// An IPv6 extension header placed before the transport header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ext {
    HopByHop,
    Routing,
    DestOpts,
}

/// A TCP or UDP packet in an Ethernet frame (optionally one 802.1Q tag), IPv4 or IPv6.
#[derive(Clone, Debug)]
pub struct Pkt {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub vlan: Option<u16>,
    pub src: Ip,
    pub dst: Ip,
    pub sport: u16,
    pub dport: u16,
    pub l4: L4,
    /// TTL or hop limit.
    pub ttl: u8,
    /// IPv4 options (a multiple of 4 bytes).
    pub options: Vec<u8>,
    /// An IPv6 extension header before the transport header.
    pub ext: Option<Ext>,
    /// The datagram's identification, used when it is fragmented (IPv4: the low 16 bits).
    pub frag_id: u32,
    /// TCP only: FIN or RST set as well (on the ACK, or on the SYN).
    pub fin: bool,
    pub rst: bool,
    pub payload: Vec<u8>,
}

impl Pkt {
    /// A client's packet to `dst:dport`, as it arrives at the LB's client-facing link.
    pub fn request(plan: &Plan, dst: Ip, dport: u16, l4: L4) -> Pkt {
        Pkt {
            src_mac: CLIENT_MAC,
            dst_mac: CLIENT_IF_MAC,
            vlan: None,
            src: plan.client,
            dst,
            sport: 40000,
            dport,
            l4,
            ttl: 64,
            options: Vec::new(),
            ext: None,
            frag_id: 0x1234,
            fin: false,
            rst: false,
            payload: b"hello xlb".to_vec(),
        }
    }

    /// The backend's answer to this request (`backend:bport -> client:sport`), as it
    /// arrives at the LB's backend-facing link.
    pub fn reply_from(&self, backend: Ip, bport: u16) -> Pkt {
        Pkt {
            src_mac: BACKEND_MAC,
            dst_mac: BACKEND_IF_MAC,
            src: backend,
            dst: self.src,
            sport: bport,
            dport: self.sport,
            payload: b"hello client".to_vec(),
            ..self.clone()
        }
    }

    /// This request after DNAT to `backend:bport`, forwarded out the backend link.
    pub fn forwarded_to(&self, backend: Ip, bport: u16) -> Pkt {
        Pkt {
            src_mac: BACKEND_IF_MAC,
            dst_mac: BACKEND_MAC,
            dst: backend,
            dport: bport,
            ttl: self.ttl.saturating_sub(1),
            ..self.clone()
        }
    }

    /// This reply after SNAT back to `vip:vport`, forwarded out the client link.
    pub fn returned_as(&self, vip: Ip, vport: u16) -> Pkt {
        Pkt {
            src_mac: CLIENT_IF_MAC,
            dst_mac: CLIENT_MAC,
            src: vip,
            sport: vport,
            ttl: self.ttl.saturating_sub(1),
            ..self.clone()
        }
    }

    /// The packet as the client sees it leave the LB (same as [`Pkt::returned_as`] without
    /// the hop), e.g. to quote in an ICMP error.
    pub fn with_ports(&self, sport: u16, dport: u16) -> Pkt {
        Pkt {
            sport,
            dport,
            ..self.clone()
        }
    }

    /// The whole frame.
    pub fn bytes(&self) -> Vec<u8> {
        let step = self.net_step(self.net(None));
        let mut out = Vec::new();
        match self.l4 {
            L4::Tcp { syn } => {
                let tcp = step.tcp(self.sport, self.dport, 1000, 64240);
                let tcp = if syn { tcp.syn() } else { tcp.ack(1) };
                let tcp = if self.fin { tcp.fin() } else { tcp };
                let tcp = if self.rst { tcp.rst() } else { tcp };
                tcp.write(&mut out, &self.payload)
            }
            L4::Udp => step
                .udp(self.sport, self.dport)
                .write(&mut out, &self.payload),
        }
        .expect("etherparse builds the packet");
        out
    }

    /// The IP packet alone (no Ethernet header), e.g. to quote in an ICMP error.
    pub fn ip_bytes(&self) -> Vec<u8> {
        self.bytes()[self.eth_len()..].to_vec()
    }

    /// The datagram cut into fragments carrying `piece` bytes of the L4 segment each (a
    /// multiple of 8; the last one carries the rest). The first fragment holds the L4
    /// header, whose checksum covers the whole datagram.
    pub fn fragments(&self, piece: usize) -> Vec<Vec<u8>> {
        assert!(
            piece > 0 && piece.is_multiple_of(8),
            "fragment size {piece}"
        );
        let whole = self.bytes();
        let segment = &whole[self.eth_len() + self.net(None).header_len()..];
        let pieces: Vec<&[u8]> = segment.chunks(piece).collect();
        pieces
            .iter()
            .enumerate()
            .map(|(i, chunk)| {
                let more = i + 1 < pieces.len();
                let net = self.net(Some(((i * piece / 8) as u16, more)));
                let mut out = Vec::new();
                self.net_step(net)
                    .write(&mut out, IpNumber(self.l4.proto()), chunk)
                    .expect("etherparse builds the fragment");
                out
            })
            .collect()
    }

    /// Ethernet (+ VLAN tag) header length.
    pub fn eth_len(&self) -> usize {
        14 + if self.vlan.is_some() { 4 } else { 0 }
    }

    /// Ethernet, VLAN tag and IP headers, ready for the transport.
    fn net_step(&self, net: IpHeaders) -> PacketBuilderStep<IpHeaders> {
        let eth = PacketBuilder::ethernet2(self.src_mac, self.dst_mac);
        match self.vlan {
            Some(id) => eth
                .single_vlan(VlanId::try_new(id).expect("VLAN id"))
                .ip(net),
            None => eth.ip(net),
        }
    }

    /// The IP header (and extensions); `frag` = (offset in 8-byte units, more fragments).
    fn net(&self, frag: Option<(u16, bool)>) -> IpHeaders {
        let proto = IpNumber(self.l4.proto());
        let offset = |units: u16| IpFragOffset::try_new(units).expect("fragment offset");
        match (self.src, self.dst) {
            (Ip::V4(src), Ip::V4(dst)) => {
                let mut ip = Ipv4Header::new(0, self.ttl, proto, src, dst).expect("IPv4 header");
                ip.options = Ipv4Options::try_from(&self.options[..]).expect("IPv4 options");
                ip.identification = self.frag_id as u16;
                if let Some((units, more)) = frag {
                    ip.fragment_offset = offset(units);
                    ip.more_fragments = more;
                }
                IpHeaders::Ipv4(ip, Default::default())
            }
            (Ip::V6(src), Ip::V6(dst)) => {
                let ip = Ipv6Header {
                    next_header: proto,
                    hop_limit: self.ttl,
                    source: src,
                    destination: dst,
                    ..Default::default()
                };
                let mut exts = Ipv6Extensions::default();
                // Pad1 options / an empty type-0 routing header: 6 bytes of payload.
                let raw = || Ipv6RawExtHeader::new_raw(proto, &[1, 4, 0, 0, 0, 0]).unwrap();
                match self.ext {
                    Some(Ext::HopByHop) => exts.hop_by_hop_options = Some(raw()),
                    Some(Ext::DestOpts) => exts.destination_options = Some(raw()),
                    Some(Ext::Routing) => {
                        exts.routing = Some(Ipv6RoutingExtensions {
                            routing: Ipv6RawExtHeader::new_raw(proto, &[0, 0, 0, 0, 0, 0]).unwrap(),
                            final_destination_options: None,
                        })
                    }
                    None => {}
                }
                if let Some((units, more)) = frag {
                    exts.fragment = Some(Ipv6FragmentHeader::new(
                        proto,
                        offset(units),
                        more,
                        self.frag_id,
                    ));
                }
                IpHeaders::Ipv6(ip, exts)
            }
            _ => panic!("source and destination of different families"),
        }
    }
}

/// `inner` (an IP packet) in an outer header from `src` to `dst` as `dsr-ipip` writes it
/// (IPv4, IPIP: DF, TTL 64, id 0; IPv6, IPv6-in-IPv6: the flow label `label`, hop limit
/// 64), in a frame from the LB's backend link to the backend: what a `dsr-ipip` backend's
/// decapsulation program receives. `more_fragments` marks the outer IPv4 header.
pub fn encapsulated(src: Ip, dst: Ip, label: u32, inner: &[u8], more_fragments: bool) -> Vec<u8> {
    use lb_common::encap::{PROTO_IPIP, PROTO_IPV6};
    let eth = PacketBuilder::ethernet2(BACKEND_IF_MAC, BACKEND_MAC);
    let mut out = Vec::new();
    match (src, dst) {
        (Ip::V4(s), Ip::V4(d)) => {
            // `new` gives DF and id 0, as dsr-ipip writes them.
            let mut ip = Ipv4Header::new(0, 64, IpNumber(PROTO_IPIP), s, d).expect("IPv4 header");
            ip.more_fragments = more_fragments;
            eth.ip(IpHeaders::Ipv4(ip, Default::default())).write(
                &mut out,
                IpNumber(PROTO_IPIP),
                inner,
            )
        }
        (Ip::V6(s), Ip::V6(d)) => {
            let ip = Ipv6Header {
                flow_label: Ipv6FlowLabel::try_new(label & 0xf_ffff).expect("flow label"),
                next_header: IpNumber(PROTO_IPV6),
                hop_limit: 64,
                source: s,
                destination: d,
                ..Default::default()
            };
            eth.ip(IpHeaders::Ipv6(ip, Default::default())).write(
                &mut out,
                IpNumber(PROTO_IPV6),
                inner,
            )
        }
        _ => panic!("source and destination of different families"),
    }
    .expect("etherparse builds the outer header");
    out
}

/// An ARP request from the client for `target` (IPv4 only).
pub fn arp_request(target: [u8; 4]) -> Vec<u8> {
    let Ip::V4(client) = plan::V4.client else {
        unreachable!()
    };
    let mut out = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, [0xff; 6])
        .arp(
            etherparse::ArpPacket::new(
                etherparse::ArpHardwareId::ETHERNET,
                etherparse::EtherType::IPV4,
                etherparse::ArpOperation::REQUEST,
                &CLIENT_MAC,
                &client,
                &[0; 6],
                &target,
            )
            .expect("ARP packet"),
        )
        .write(&mut out)
        .expect("etherparse builds ARP");
    out
}

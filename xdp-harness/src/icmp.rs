//! ICMP and ICMPv6 messages built with etherparse: errors quoting a packet (the quoted
//! bytes are another etherparse-built packet, cut to the quote's length) and echo requests.

use etherparse::{
    IcmpEchoHeader, Icmpv4Type, Icmpv6Type, PacketBuilder,
    icmpv4::{DestUnreachableHeader, TimeExceededCode},
    icmpv6::{DestUnreachableCode, TimeExceededCode as TimeExceededCode6},
};

use crate::pkt::Ip;

/// What an ICMP message says, mapped onto ICMPv4 or ICMPv6 by the address family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IcmpKind {
    /// Port unreachable: ICMPv4 type 3 code 3, ICMPv6 type 1 code 4.
    PortUnreachable,
    /// Host unreachable: ICMPv4 type 3 code 1, ICMPv6 type 1 code 3 (address unreachable).
    HostUnreachable,
    /// The path MTU is smaller: ICMPv4 type 3 code 4 "fragmentation needed", ICMPv6 type 2
    /// "packet too big".
    TooBig { mtu: u16 },
    /// TTL or hop limit exceeded in transit: ICMPv4 type 11, ICMPv6 type 3.
    TimeExceeded,
    /// Echo request (not an error).
    Echo,
}

/// An ICMP/ICMPv6 message in an Ethernet frame.
#[derive(Clone, Debug)]
pub struct IcmpErr {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub src: Ip,
    pub dst: Ip,
    pub ttl: u8,
    pub kind: IcmpKind,
    /// The ICMP payload: the quoted packet (or the echo data).
    pub quoted: Vec<u8>,
}

impl IcmpErr {
    pub fn bytes(&self) -> Vec<u8> {
        let eth = PacketBuilder::ethernet2(self.src_mac, self.dst_mac);
        let mut out = Vec::new();
        match (self.src, self.dst) {
            (Ip::V4(src), Ip::V4(dst)) => {
                let ty = match self.kind {
                    IcmpKind::PortUnreachable => {
                        Icmpv4Type::DestinationUnreachable(DestUnreachableHeader::Port)
                    }
                    IcmpKind::HostUnreachable => {
                        Icmpv4Type::DestinationUnreachable(DestUnreachableHeader::Host)
                    }
                    IcmpKind::TooBig { mtu } => Icmpv4Type::DestinationUnreachable(
                        DestUnreachableHeader::FragmentationNeeded { next_hop_mtu: mtu },
                    ),
                    IcmpKind::TimeExceeded => {
                        Icmpv4Type::TimeExceeded(TimeExceededCode::TtlExceededInTransit)
                    }
                    IcmpKind::Echo => Icmpv4Type::EchoRequest(IcmpEchoHeader { id: 7, seq: 1 }),
                };
                eth.ipv4(src, dst, self.ttl)
                    .icmpv4(ty)
                    .write(&mut out, &self.quoted)
            }
            (Ip::V6(src), Ip::V6(dst)) => {
                let ty = match self.kind {
                    IcmpKind::PortUnreachable => {
                        Icmpv6Type::DestinationUnreachable(DestUnreachableCode::Port)
                    }
                    IcmpKind::HostUnreachable => {
                        Icmpv6Type::DestinationUnreachable(DestUnreachableCode::Address)
                    }
                    IcmpKind::TooBig { mtu } => Icmpv6Type::PacketTooBig { mtu: mtu.into() },
                    IcmpKind::TimeExceeded => {
                        Icmpv6Type::TimeExceeded(TimeExceededCode6::HopLimitExceeded)
                    }
                    IcmpKind::Echo => Icmpv6Type::EchoRequest(IcmpEchoHeader { id: 7, seq: 1 }),
                };
                eth.ipv6(src, dst, self.ttl)
                    .icmpv6(ty)
                    .write(&mut out, &self.quoted)
            }
            _ => panic!("ICMP source and destination of different families"),
        }
        .expect("etherparse builds the ICMP message");
        out
    }
}

//! Valid packets for the fuzzer: requests to VIPs (services, other ports, an empty
//! service, an unresolved backend), traffic to other hosts, backends' replies, fragments,
//! ICMP errors about flows (both directions), echo, ARP and random garbage. Client ports
//! and fragment ids come from small ranges, so replies, later fragments and ICMP errors
//! often match what earlier packets recorded.

use crate::icmp::{IcmpErr, IcmpKind};
use crate::pkt::{Ext, Ip, L4, Pkt, arp_request};
use crate::plan::{
    BACKEND_IF_MAC, BACKEND_MAC, CLIENT_IF_MAC, CLIENT_MAC, DSR_IPIP_PORT, DSR_L2_PORT, PLANS,
    Plan, TCP_BACKEND_PORT, TCP_PORT, UDP_BACKEND_PORT, UDP_PORT,
};

use super::rng::Rng;

/// Client ports the generator uses.
const CLIENT_PORTS: std::ops::Range<u16> = 40000..40032;

/// A generated packet and what it is, for failure reports.
pub struct Generated {
    pub kind: &'static str,
    pub frame: Vec<u8>,
}

/// One valid packet; `vip_free`: only kinds that carry no VIP address.
pub fn packet(r: &mut Rng, vip_free: bool) -> Generated {
    let plan = *r.pick(&PLANS);
    let kinds: &[&'static str] = if vip_free {
        &[
            "other-host",
            "reply",
            "reply-fragment",
            "icmp-to-client",
            "arp",
            "garbage",
        ]
    } else {
        &[
            "request",
            "request",
            "request",
            "dsr-request",
            "dsr-request",
            "encapsulated",
            "encapsulated",
            "odd-vip",
            "other-host",
            "reply",
            "fragment",
            "reply-fragment",
            "icmp-to-vip",
            "icmp-to-client",
            "echo",
            "arp",
            "garbage",
        ]
    };
    let kind = *r.pick(kinds);
    let frame = match kind {
        "request" => request(r, plan, plan.vip).bytes(),
        "dsr-request" => dsr_request(r, plan).bytes(),
        "encapsulated" => {
            // What a dsr-ipip backend receives (the decapsulation program's input).
            let p = dsr_request(r, plan);
            let src = plan.client_router;
            crate::pkt::encapsulated(src, plan.backend, 0, &p.ip_bytes(), false)
        }
        "odd-vip" => {
            let dst = *r.pick(&plan.vips());
            let mut p = request(r, plan, dst);
            if r.chance(1, 2) {
                p.dport = r.next_u64() as u16;
            }
            p.bytes()
        }
        "other-host" => {
            let dst = *r.pick(&[plan.client_lb, plan.backend]);
            request(r, plan, dst).bytes()
        }
        "reply" => reply(r, plan).bytes(),
        "fragment" => {
            let p = request(r, plan, plan.vip);
            one_fragment(r, &p)
        }
        "reply-fragment" => {
            let p = reply(r, plan);
            one_fragment(r, &p)
        }
        "icmp-to-vip" => icmp_to_vip(r, plan).bytes(),
        "icmp-to-client" => icmp_to_client(r, plan).bytes(),
        "echo" => IcmpErr {
            src_mac: CLIENT_MAC,
            dst_mac: CLIENT_IF_MAC,
            src: plan.client,
            dst: plan.vip,
            ttl: 64,
            kind: IcmpKind::Echo,
            quoted: b"ping".to_vec(),
        }
        .bytes(),
        "arp" => arp_request([198, 18, 10, 1]),
        _ => garbage(r),
    };
    Generated { kind, frame }
}

fn l4(r: &mut Rng) -> L4 {
    if r.chance(1, 2) {
        L4::Udp
    } else {
        L4::Tcp {
            syn: r.chance(1, 2),
        }
    }
}

fn service_port(l4: L4) -> (u16, u16) {
    match l4 {
        L4::Tcp { .. } => (TCP_PORT, TCP_BACKEND_PORT),
        L4::Udp => (UDP_PORT, UDP_BACKEND_PORT),
    }
}

/// A request to `dst` on the service port of a random protocol, sometimes tagged, with
/// IPv4 options or an IPv6 extension header, or a low TTL.
fn request(r: &mut Rng, plan: &Plan, dst: Ip) -> Pkt {
    let l4 = l4(r);
    let mut p = Pkt::request(plan, dst, service_port(l4).0, l4);
    p.sport = CLIENT_PORTS.start + r.below(CLIENT_PORTS.len()) as u16;
    p.frag_id = r.below(16) as u32;
    p.payload = r.some_bytes(64);
    decorate(r, &mut p);
    p
}

fn decorate(r: &mut Rng, p: &mut Pkt) {
    if r.chance(1, 10) {
        p.vlan = Some(1 + r.below(4094) as u16);
    }
    if r.chance(1, 10) {
        match p.src {
            Ip::V4(_) => p.options = vec![7, 7, 4, 0, 0, 0, 0, 0],
            Ip::V6(_) => p.ext = Some(*r.pick(&[Ext::HopByHop, Ext::Routing, Ext::DestOpts])),
        }
    }
    if r.chance(1, 10) {
        p.ttl = r.below(3) as u8;
    }
}

/// A TCP request to one of the DSR services, sometimes large (up to 1500 bytes of
/// payload: too big to encapsulate under a 1500 MTU), and decorated as `request`.
fn dsr_request(r: &mut Rng, plan: &Plan) -> Pkt {
    let port = *r.pick(&[DSR_L2_PORT, DSR_IPIP_PORT]);
    let mut p = Pkt::request(
        plan,
        plan.vip,
        port,
        L4::Tcp {
            syn: r.chance(1, 2),
        },
    );
    p.sport = CLIENT_PORTS.start + r.below(CLIENT_PORTS.len()) as u16;
    p.payload = if r.chance(1, 4) {
        let n = 1380 + r.below(120);
        r.bytes(n)
    } else {
        r.some_bytes(64)
    };
    decorate(r, &mut p);
    p
}

/// A backend's reply to a request of the generator's (so often of a known flow).
fn reply(r: &mut Rng, plan: &Plan) -> Pkt {
    let req = request(r, plan, plan.vip);
    let bport = service_port(req.l4).1;
    let mut p = req.reply_from(plan.backend, bport);
    p.payload = r.some_bytes(64);
    p
}

/// One fragment (any) of `p`, with enough payload for at least two.
fn one_fragment(r: &mut Rng, p: &Pkt) -> Vec<u8> {
    let mut p = p.clone();
    p.payload = [r.bytes(24), r.some_bytes(64)].concat();
    let mut frags = p.fragments(8 * (3 + r.below(4)));
    let i = r.below(frags.len());
    frags.swap_remove(i)
}

fn icmp_kind(r: &mut Rng) -> IcmpKind {
    *r.pick(&[
        IcmpKind::PortUnreachable,
        IcmpKind::HostUnreachable,
        IcmpKind::TooBig { mtu: 1280 },
        IcmpKind::TimeExceeded,
    ])
}

/// The quoted packet: whole, or cut to the IP header plus 8 bytes.
fn quote(r: &mut Rng, p: &Pkt) -> Vec<u8> {
    let mut q = p.ip_bytes();
    if r.chance(1, 2) {
        let ip_len = if p.src.family() == lb_common::FAMILY_V4 {
            20
        } else {
            40
        };
        q.truncate(ip_len + 8);
    }
    q
}

/// An error from a client-side router about a reply the client saw (VIP -> client).
fn icmp_to_vip(r: &mut Rng, plan: &Plan) -> IcmpErr {
    let req = request(r, plan, plan.vip);
    let seen = Pkt {
        src: req.dst,
        dst: req.src,
        sport: req.dport,
        dport: req.sport,
        vlan: None,
        ..req.clone()
    };
    IcmpErr {
        src_mac: CLIENT_MAC,
        dst_mac: CLIENT_IF_MAC,
        src: plan.client_router,
        dst: plan.vip,
        ttl: 64,
        kind: icmp_kind(r),
        quoted: quote(r, &seen),
    }
}

/// An error from a router behind the LB about a request the backend was sent.
fn icmp_to_client(r: &mut Rng, plan: &Plan) -> IcmpErr {
    let req = request(r, plan, plan.vip);
    let sent = Pkt {
        vlan: None,
        ..req.forwarded_to(plan.backend, service_port(req.l4).1)
    };
    IcmpErr {
        src_mac: BACKEND_MAC,
        dst_mac: BACKEND_IF_MAC,
        src: plan.backend_router,
        dst: plan.client,
        ttl: 64,
        kind: icmp_kind(r),
        quoted: quote(r, &sent),
    }
}

/// Random bytes after an Ethernet header with an IP, VLAN or random EtherType.
fn garbage(r: &mut Rng) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&CLIENT_IF_MAC);
    f.extend_from_slice(&CLIENT_MAC);
    let random = [r.byte(), r.byte()];
    let ether_type: [u8; 2] = *r.pick(&[[8, 0], [0x86, 0xdd], [0x81, 0], random]);
    f.extend_from_slice(&ether_type);
    f.extend(r.some_bytes(120));
    f
}

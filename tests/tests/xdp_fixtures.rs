//! Packet fixtures, Katran-style: crafted packets run through the real XDP program with
//! BPF_PROG_TEST_RUN, each compared with its expected verdict and its expected output
//! packet (built with etherparse, so its checksums are computed from scratch: byte
//! equality proves the program's incremental updates right).
//!
//! Runs in a private network namespace (this test's thread only) holding two veth pairs
//! with fixed MACs and permanent neighbours, so `bpf_fib_lookup` answers deterministically.

use std::{process::Command, thread};

use aya::programs::{TestRun as _, TestRunOptions};
use etherparse::{IpHeaders, IpNumber, Ipv4Header, Ipv4Options, PacketBuilder, SingleVlanHeader};
use lb_common::{
    Addr, Backend, DIR_REPLY, DIR_REQUEST, FAMILY_V4, FlowKey, NO_BACKEND, PROTO_TCP, PROTO_UDP,
    ServiceKey, ServiceValue,
};
use lb_userspace::{bpf::BpfDataplane, dataplane::Dataplane};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_REDIRECT: u32 = 4;

const CLIENT_IF_MAC: [u8; 6] = [2, 0, 0, 0, 0x0c, 1];
const CLIENT_MAC: [u8; 6] = [2, 0, 0, 0, 0x0c, 2];
const BACKEND_IF_MAC: [u8; 6] = [2, 0, 0, 0, 0x0b, 1];
const BACKEND_MAC: [u8; 6] = [2, 0, 0, 0, 0x0b, 2];
const CLIENT: [u8; 4] = [198, 18, 10, 2];
const VIP: [u8; 4] = [198, 18, 0, 10];
const VIP_EMPTY: [u8; 4] = [198, 18, 0, 11];
const VIP_NO_NEIGH: [u8; 4] = [198, 18, 0, 12];
const BACKEND: [u8; 4] = [198, 19, 0, 2];
const BACKEND_NO_NEIGH: [u8; 4] = [198, 19, 0, 3];

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum L4 {
    Tcp { syn: bool },
    Udp,
}

/// A packet as a fixture describes it; [`Pkt::bytes`] builds it with etherparse.
#[derive(Clone, Debug)]
struct Pkt {
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    vlan: Option<u16>,
    src: [u8; 4],
    dst: [u8; 4],
    sport: u16,
    dport: u16,
    l4: L4,
    ttl: u8,
    options: Vec<u8>,
    more_fragments: bool,
    payload: Vec<u8>,
}

impl Pkt {
    /// A client's packet to a VIP, as it arrives at the LB's client-facing interface.
    fn request(dst: [u8; 4], dport: u16, l4: L4) -> Pkt {
        Pkt {
            src_mac: CLIENT_MAC,
            dst_mac: CLIENT_IF_MAC,
            vlan: None,
            src: CLIENT,
            dst,
            sport: 40000,
            dport,
            l4,
            ttl: 64,
            options: Vec::new(),
            more_fragments: false,
            payload: b"hello xlb".to_vec(),
        }
    }

    /// The same packet after DNAT to `backend:bport` and forwarding out the backend link.
    fn forwarded_to(&self, backend: [u8; 4], bport: u16) -> Pkt {
        Pkt {
            src_mac: BACKEND_IF_MAC,
            dst_mac: BACKEND_MAC,
            dst: backend,
            dport: bport,
            ttl: self.ttl - 1,
            ..self.clone()
        }
    }

    fn bytes(&self) -> Vec<u8> {
        let mut ip = Ipv4Header::new(0, self.ttl, IpNumber::TCP, self.src, self.dst).unwrap();
        ip.options = Ipv4Options::try_from(&self.options[..]).unwrap();
        ip.more_fragments = self.more_fragments;
        ip.protocol = match self.l4 {
            L4::Tcp { .. } => IpNumber::TCP,
            L4::Udp => IpNumber::UDP,
        };
        let eth = PacketBuilder::ethernet2(self.src_mac, self.dst_mac);
        let ip = IpHeaders::Ipv4(ip, Default::default());
        let step = match self.vlan {
            Some(id) => eth
                .vlan(etherparse::VlanHeader::Single(SingleVlanHeader {
                    vlan_id: id.try_into().unwrap(),
                    ..Default::default()
                }))
                .ip(ip),
            None => eth.ip(ip),
        };
        let mut out = Vec::new();
        match self.l4 {
            L4::Tcp { syn } => {
                let tcp = step.tcp(self.sport, self.dport, 1000, 64240);
                let tcp = if syn { tcp.syn() } else { tcp.ack(1) };
                tcp.write(&mut out, &self.payload).unwrap();
            }
            L4::Udp => step
                .udp(self.sport, self.dport)
                .write(&mut out, &self.payload)
                .unwrap(),
        }
        out
    }
}

/// What a fixture expects of the program.
enum Expect {
    /// This verdict, and the packet leaves exactly as given.
    Out(u32, Vec<u8>),
    /// This verdict, and the packet is untouched.
    Unchanged(u32),
}

struct Fixture {
    desc: &'static str,
    input: Vec<u8>,
    expect: Expect,
}

fn fixture(desc: &'static str, input: Vec<u8>, expect: Expect) -> Fixture {
    Fixture {
        desc,
        input,
        expect,
    }
}

fn fixtures() -> Vec<Fixture> {
    let syn = Pkt::request(VIP, 80, L4::Tcp { syn: true });
    let ack = Pkt {
        payload: b"more data on the same flow".to_vec(),
        ..Pkt::request(VIP, 80, L4::Tcp { syn: false })
    };
    let udp = Pkt::request(VIP, 53, L4::Udp);
    let reply = Pkt {
        src_mac: BACKEND_MAC,
        dst_mac: BACKEND_IF_MAC,
        src: BACKEND,
        dst: CLIENT,
        sport: 8080,
        dport: 40000,
        ..Pkt::request(VIP, 80, L4::Tcp { syn: false })
    };
    let reply_out = Pkt {
        src_mac: CLIENT_IF_MAC,
        dst_mac: CLIENT_MAC,
        src: VIP,
        sport: 80,
        ttl: 63,
        ..reply.clone()
    };
    let with_options = Pkt {
        sport: 40001,
        // Record Route (7) with room for one address, then End of options.
        options: vec![7, 7, 4, 0, 0, 0, 0, 0],
        ..syn.clone()
    };
    let tagged = Pkt {
        vlan: Some(42),
        sport: 40002,
        ..syn.clone()
    };
    let tagged_out = Pkt {
        dst: BACKEND,
        dport: 8080,
        ..tagged.clone()
    };
    let no_neigh = Pkt::request(VIP_NO_NEIGH, 80, L4::Tcp { syn: true });
    let no_neigh_out = Pkt {
        dst: BACKEND_NO_NEIGH,
        dport: 8080,
        ..no_neigh.clone()
    };
    let mut truncated_ip = syn.bytes();
    truncated_ip.truncate(14 + 12);
    let mut udp_no_csum = Pkt {
        sport: 40003,
        ..udp.clone()
    }
    .bytes();
    udp_no_csum[14 + 20 + 6..14 + 20 + 8].copy_from_slice(&[0, 0]);
    let mut udp_no_csum_out = Pkt {
        sport: 40003,
        ..udp.forwarded_to(BACKEND, 5353)
    }
    .bytes();
    udp_no_csum_out[14 + 20 + 6..14 + 20 + 8].copy_from_slice(&[0, 0]);
    let arp = {
        let mut out = Vec::new();
        PacketBuilder::ethernet2(CLIENT_MAC, [0xff; 6])
            .arp(
                etherparse::ArpPacket::new(
                    etherparse::ArpHardwareId::ETHERNET,
                    etherparse::EtherType::IPV4,
                    etherparse::ArpOperation::REQUEST,
                    &CLIENT_MAC,
                    &CLIENT,
                    &[0; 6],
                    &[198, 18, 10, 1],
                )
                .unwrap(),
            )
            .write(&mut out)
            .unwrap();
        out
    };
    let ping = {
        let mut out = Vec::new();
        PacketBuilder::ethernet2(CLIENT_MAC, CLIENT_IF_MAC)
            .ipv4(CLIENT, VIP, 64)
            .icmpv4_echo_request(1, 1)
            .write(&mut out, b"ping")
            .unwrap();
        out
    };

    vec![
        fixture(
            "TCP SYN to a VIP: DNAT to the backend, redirected out the backend link",
            syn.bytes(),
            Expect::Out(XDP_REDIRECT, syn.forwarded_to(BACKEND, 8080).bytes()),
        ),
        fixture(
            "a later packet of the same flow goes to the same backend",
            ack.bytes(),
            Expect::Out(XDP_REDIRECT, ack.forwarded_to(BACKEND, 8080).bytes()),
        ),
        fixture(
            "the backend's reply is SNATed back to VIP:port, redirected to the client",
            reply.bytes(),
            Expect::Out(XDP_REDIRECT, reply_out.bytes()),
        ),
        fixture(
            "UDP to a VIP: DNAT with the UDP checksum updated",
            udp.bytes(),
            Expect::Out(XDP_REDIRECT, udp.forwarded_to(BACKEND, 5353).bytes()),
        ),
        fixture(
            "UDP without a checksum (0) keeps 0 after DNAT",
            udp_no_csum,
            Expect::Out(XDP_REDIRECT, udp_no_csum_out),
        ),
        fixture(
            "IPv4 with options (IHL 7) is balanced, options kept",
            with_options.bytes(),
            Expect::Out(
                XDP_REDIRECT,
                with_options.forwarded_to(BACKEND, 8080).bytes(),
            ),
        ),
        fixture(
            "VLAN-tagged request: rewritten, then passed for the kernel to route",
            tagged.bytes(),
            Expect::Out(XDP_PASS, tagged_out.bytes()),
        ),
        fixture(
            "backend without a neighbour entry: rewritten, passed for the kernel to resolve",
            no_neigh.bytes(),
            Expect::Out(XDP_PASS, no_neigh_out.bytes()),
        ),
        fixture(
            "a service whose table holds no backend drops",
            Pkt::request(VIP_EMPTY, 80, L4::Tcp { syn: true }).bytes(),
            Expect::Unchanged(XDP_DROP),
        ),
        fixture(
            "TCP to the VIP on a port with no service passes untouched",
            Pkt::request(VIP, 81, L4::Tcp { syn: true }).bytes(),
            Expect::Unchanged(XDP_PASS),
        ),
        fixture(
            "TCP to another host passes untouched",
            Pkt::request([198, 18, 10, 1], 22, L4::Tcp { syn: true }).bytes(),
            Expect::Unchanged(XDP_PASS),
        ),
        fixture("ARP passes untouched", arp, Expect::Unchanged(XDP_PASS)),
        fixture(
            "ICMP echo to a VIP passes untouched",
            ping,
            Expect::Unchanged(XDP_PASS),
        ),
        fixture(
            "TTL 1 to a VIP passes untouched (the kernel answers time-exceeded)",
            Pkt {
                ttl: 1,
                sport: 40004,
                ..syn.clone()
            }
            .bytes(),
            Expect::Unchanged(XDP_PASS),
        ),
        fixture(
            "a fragment to a VIP passes untouched",
            Pkt {
                more_fragments: true,
                sport: 40005,
                ..udp.clone()
            }
            .bytes(),
            Expect::Unchanged(XDP_PASS),
        ),
        fixture(
            "IPv4 header cut short passes untouched",
            truncated_ip,
            Expect::Unchanged(XDP_PASS),
        ),
    ]
}

fn sh(cmd: &str) {
    let st = Command::new("sh").args(["-ec", cmd]).status().unwrap();
    assert!(st.success(), "failed: {cmd}");
}

fn ifindex(name: &str) -> u32 {
    let c = std::ffi::CString::new(name).unwrap();
    // SAFETY: NUL-terminated name.
    unsafe { libc::if_nametoindex(c.as_ptr()) }
}

/// Two veth pairs: client link (xc0, 198.18.10.1/24) and backend link (xb0,
/// 198.19.0.1/24), fixed MACs, permanent neighbours for the client and one backend.
fn make_links() {
    let mac = |m: [u8; 6]| {
        m.iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":")
    };
    sh(&format!(
        "ip link set lo up
         ip link add xc0 address {cif} type veth peer name xc1 address {c}
         ip link add xb0 address {bif} type veth peer name xb1 address {b}
         ip addr add 198.18.10.1/24 dev xc0
         ip addr add 198.19.0.1/24 dev xb0
         for d in xc0 xc1 xb0 xb1; do ip link set $d up; done
         ip neigh replace 198.18.10.2 lladdr {c} dev xc0 nud permanent
         ip neigh replace 198.19.0.2 lladdr {b} dev xb0 nud permanent",
        cif = mac(CLIENT_IF_MAC),
        c = mac(CLIENT_MAC),
        bif = mac(BACKEND_IF_MAC),
        b = mac(BACKEND_MAC),
    ));
    std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").unwrap();
}

fn service(vip: [u8; 4], port: u16, proto: u8) -> ServiceKey {
    ServiceKey {
        vip: Addr::from_v4_octets(vip),
        port_be: port.to_be(),
        proto,
        family: FAMILY_V4,
    }
}

fn backend(addr: [u8; 4], port: u16) -> Backend {
    Backend {
        addr: Addr::from_v4_octets(addr),
        port_be: port.to_be(),
        family: FAMILY_V4,
        _pad: 0,
    }
}

/// Services: VIP:80/tcp -> 198.19.0.2:8080, VIP:53/udp -> 198.19.0.2:5353, VIP_EMPTY:80/tcp
/// with a table of empty slots, VIP_NO_NEIGH:80/tcp -> 198.19.0.3:8080 (no neighbour).
fn fill_maps(dp: &mut BpfDataplane) {
    dp.put_backend(0, &backend(BACKEND, 8080)).unwrap();
    dp.put_backend(1, &backend(BACKEND, 5353)).unwrap();
    dp.put_backend(2, &backend(BACKEND_NO_NEIGH, 8080)).unwrap();
    let tables: [(ServiceKey, Vec<u32>); 4] = [
        (service(VIP, 80, PROTO_TCP), vec![0; 7]),
        (service(VIP, 53, PROTO_UDP), vec![1; 7]),
        (service(VIP_EMPTY, 80, PROTO_TCP), vec![NO_BACKEND; 7]),
        (service(VIP_NO_NEIGH, 80, PROTO_TCP), vec![2; 7]),
    ];
    for (id, (key, slots)) in tables.iter().enumerate() {
        let offset = id as u32 * 7;
        dp.write_table(offset, slots).unwrap();
        let value = ServiceValue {
            id: id as u32,
            table_offset: offset,
            table_size: 7,
            generation: 1,
        };
        dp.put_service(key, &value).unwrap();
    }
}

/// `struct xdp_md` for test_run: the packet arrives on `ifindex`.
fn xdp_md(len: usize, ifindex: u32) -> [u8; 24] {
    let mut md = [0u8; 24];
    md[4..8].copy_from_slice(&(len as u32).to_ne_bytes());
    md[12..16].copy_from_slice(&ifindex.to_ne_bytes());
    md
}

fn run(dp: &mut BpfDataplane, input: &[u8], ingress: u32) -> (u32, Vec<u8>) {
    let mut out = vec![0u8; input.len() + 256];
    let md = xdp_md(input.len(), ingress);
    let mut opts = TestRunOptions::new();
    opts.data_in = Some(input);
    opts.data_out = Some(&mut out);
    opts.ctx_in = Some(&md);
    let r = dp.program().test_run(opts).expect("test_run");
    out.truncate(r.data_size_out as usize);
    (r.return_value, out)
}

#[test]
fn xdp_packet_fixtures() {
    if !xlb_testbed::require_root("xdp_packet_fixtures") {
        return;
    }
    // A private network namespace for this thread only; children (ip) inherit it.
    thread::spawn(|| {
        // SAFETY: unshare affects only this thread.
        assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0);
        make_links();
        let mut dp = BpfDataplane::load_detached(1024, 1024).expect("load");
        fill_maps(&mut dp);
        let (client_if, backend_if) = (ifindex("xc0"), ifindex("xb0"));
        let mut failures = Vec::new();
        let all = fixtures();
        for f in &all {
            // Replies come in on the backend link, everything else on the client link.
            let from_backend = f.input.get(6..12) == Some(&BACKEND_MAC[..]);
            let ingress = if from_backend { backend_if } else { client_if };
            let (verdict, out) = run(&mut dp, &f.input, ingress);
            let (want_verdict, want_out) = match &f.expect {
                Expect::Out(v, p) => (*v, p),
                Expect::Unchanged(v) => (*v, &f.input),
            };
            if verdict != want_verdict || &out != want_out {
                failures.push(format!(
                    "{}: verdict {verdict} (want {want_verdict}), output {}",
                    f.desc,
                    if &out == want_out {
                        "as expected".to_string()
                    } else {
                        format!("{out:02x?}\n   want {want_out:02x?}")
                    }
                ));
            }
        }
        // The first fixture made both directions of its flow.
        let request = FlowKey {
            src: Addr::from_v4_octets(CLIENT),
            dst: Addr::from_v4_octets(VIP),
            src_port_be: 40000u16.to_be(),
            dst_port_be: 80u16.to_be(),
            proto: PROTO_TCP,
            family: FAMILY_V4,
            _pad: [0; 2],
        };
        let reply = FlowKey {
            src: Addr::from_v4_octets(BACKEND),
            dst: Addr::from_v4_octets(CLIENT),
            src_port_be: 8080u16.to_be(),
            dst_port_be: 40000u16.to_be(),
            ..request
        };
        let req = dp.flow(&request).expect("request entry");
        assert_eq!(
            (req.direction, req.backend, req.nat_addr),
            (DIR_REQUEST, 0, Addr::from_v4_octets(BACKEND))
        );
        let rep = dp.flow(&reply).expect("reply entry");
        assert_eq!(
            (rep.direction, rep.nat_addr, rep.nat_port_be),
            (DIR_REPLY, Addr::from_v4_octets(VIP), 80u16.to_be())
        );
        eprintln!("{} fixtures, {} failed", all.len(), failures.len());
        assert!(failures.is_empty(), "\n{}", failures.join("\n"));
    })
    .join()
    .unwrap();
}

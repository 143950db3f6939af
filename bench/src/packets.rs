//! The frames the per-packet benchmark feeds the XDP programs, built with etherparse on
//! the addresses and MACs of xdp-harness's IPv4 plan, whose private-namespace links make
//! `bpf_fib_lookup` answer for them; the benchmark adds one route, the VIP through the
//! backend (its service's backend is the VIP itself).
//!
//! Every forwarded frame starts with TTL 255, so a BPF_PROG_TEST_RUN of up to
//! [`MAX_REPEAT`] repetitions forwards on every one of them (each decrements the TTL of the
//! same buffer; at 1 the program would pass the packet to the kernel instead).

use std::process::Command;

use anyhow::{Context as _, Result, bail};
use etherparse::{PacketBuilder, PacketBuilderStep, TcpHeader};
use xlb_xdp_harness::Ip;
use xlb_xdp_harness::netns::BACKEND_IF;
use xlb_xdp_harness::plan::{BACKEND_IF_MAC, BACKEND_MAC, CLIENT_IF_MAC, CLIENT_MAC, V4};

/// An address of the IPv4 plan as etherparse takes it.
const fn v4(ip: Ip) -> [u8; 4] {
    match ip {
        Ip::V4(a) => a,
        Ip::V6(_) => panic!("an IPv6 address in the IPv4 plan"),
    }
}

pub const CLIENT: [u8; 4] = v4(V4.client);
pub const LB_CLIENT_SIDE: [u8; 4] = v4(V4.client_lb);
pub const VIP: [u8; 4] = v4(V4.vip);
const BACKEND: [u8; 4] = v4(V4.backend);
pub const VIP_PORT: u16 = 80;
pub const CLIENT_PORT: u16 = 40000;
/// The client port of the new-flow case (a flow of its own).
pub const NEW_FLOW_PORT: u16 = 40001;
/// The client port of the table-miss case (a flow never entered).
pub const MISS_PORT: u16 = 40002;
/// The TTL of every frame.
pub const TTL: u8 = 255;
/// Repetitions of one test run that all forward: the last of them sees TTL 2.
pub const MAX_REPEAT: u32 = TTL as u32 - 2;

const PAYLOAD: &[u8] = b"a small request";

/// The frames of the cases: one client flow through the VIP (TCP and UDP), a new flow, a
/// table miss that writes no entry, and one packet for the box itself.
pub struct Frames {
    /// The client's SYN to VIP:80 (opens the flow).
    pub syn: Vec<u8>,
    /// A later segment of the same flow, with a small payload.
    pub data: Vec<u8>,
    /// A datagram client:40000 -> VIP:80/udp.
    pub udp: Vec<u8>,
    /// The backend's answer, VIP:80 -> client (the service's backend is the VIP itself),
    /// rewritten back to VIP:80.
    pub reply: Vec<u8>,
    /// SYN|FIN from client:40001: a SYN on a flow whose entry has a close flag set starts
    /// a new flow, and the entry it makes has FIN set again, so every repetition takes
    /// the miss path.
    pub syn_fin: Vec<u8>,
    /// SYN|RST from client:40002: a connection-table miss that takes the whole miss path
    /// (service, flow hash, table slot, backend) and forwards, but, being an RST, writes
    /// no entry (Katran's rule), so the flow stays unknown and every repetition misses.
    pub syn_rst: Vec<u8>,
    /// TCP to the LB's own address, port 22: not a service, passed to the kernel.
    pub pass: Vec<u8>,
}

impl Frames {
    pub fn new() -> Result<Frames> {
        let from_client =
            || PacketBuilder::ethernet2(CLIENT_MAC, CLIENT_IF_MAC).ipv4(CLIENT, VIP, TTL);
        // A client SYN from `port` to VIP:80, with what `more` adds (FIN, RST).
        type Tcp = PacketBuilderStep<TcpHeader>;
        let syn_and = |port, more: fn(Tcp) -> Tcp| -> Result<Vec<u8>> {
            let mut frame = Vec::new();
            more(from_client().tcp(port, VIP_PORT, 1000, 64240).syn()).write(&mut frame, &[])?;
            Ok(frame)
        };
        let syn = syn_and(CLIENT_PORT, |b| b)?;
        let mut data = Vec::new();
        from_client()
            .tcp(CLIENT_PORT, VIP_PORT, 1001, 64240)
            .ack(1)
            .write(&mut data, PAYLOAD)?;
        let mut udp = Vec::new();
        from_client()
            .udp(CLIENT_PORT, VIP_PORT)
            .write(&mut udp, PAYLOAD)?;
        let syn_fin = syn_and(NEW_FLOW_PORT, |b| b.fin())?;
        let syn_rst = syn_and(MISS_PORT, |b| b.rst())?;
        let mut reply = Vec::new();
        PacketBuilder::ethernet2(BACKEND_MAC, BACKEND_IF_MAC)
            .ipv4(VIP, CLIENT, TTL)
            .tcp(VIP_PORT, CLIENT_PORT, 1, 64240)
            .ack(1001 + PAYLOAD.len() as u32)
            .write(&mut reply, PAYLOAD)?;
        let mut pass = Vec::new();
        PacketBuilder::ethernet2(CLIENT_MAC, CLIENT_IF_MAC)
            .ipv4(CLIENT, LB_CLIENT_SIDE, TTL)
            .tcp(CLIENT_PORT, 22, 1000, 64240)
            .ack(1)
            .write(&mut pass, PAYLOAD)?;
        Ok(Frames {
            syn,
            data,
            udp,
            reply,
            syn_fin,
            syn_rst,
            pass,
        })
    }
}

/// Routes the VIP through the plan's backend (a permanent neighbour on the backend link),
/// in the calling thread's namespace, where the harness made its links.
pub fn route_vip_via_backend() -> Result<()> {
    let ip = |a: [u8; 4]| std::net::Ipv4Addr::from(a).to_string();
    let status = Command::new("ip")
        .args([
            "route",
            "add",
            &format!("{}/32", ip(VIP)),
            "via",
            &ip(BACKEND),
        ])
        .args(["dev", BACKEND_IF])
        .status()
        .context("running ip")?;
    if !status.success() {
        bail!("routing the VIP through the backend failed ({status})");
    }
    Ok(())
}

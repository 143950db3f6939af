//! End to end: for each run and each balancer in turn, a fresh testbed (3 clients, LB,
//! 3 backends), the balancer in its LB namespace, and the four load figures. A fresh
//! testbed per measurement keeps one balancer's state (conntrack, nat hooks, XDP, the VIP
//! on lo) from touching the next; runs interleave the balancers so that the shared
//! machine's noise falls on all of them alike.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow};
use serde::Serialize;
use xlb_testbed::{Netns, Testbed};

use crate::balancers::{self, BACKEND_PORT, IPERF_PORT, Kind};
use crate::bpfstats::{Phase, ProgStats, StatsOn, xdp_prog_id};
use crate::cpu::CpuReading;
use crate::generator::UdpFlood;
use crate::loadgen;
use crate::servers::Servers;

const CLIENTS: usize = 3;
const BACKENDS: usize = 3;
/// Source ports (flows) of the generator's UDP runs.
pub const GEN_FLOWS: u16 = 64;
/// The offered load of the generator's fixed-rate run: below what every balancer forwards
/// here, so that all of them carry the same packets and only their CPU differs.
pub const GEN_FIXED_PPS: u64 = 100_000;

/// How long each figure's load runs, and iperf3's streams.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Durations {
    pub tcp_secs: u32,
    pub iperf_streams: u32,
    pub udp_secs: f64,
    pub conn_secs: f64,
    pub latency_secs: f64,
}

/// One balancer's figures from one run.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Figures {
    pub tcp_gbps: f64,
    /// `None` for HAProxy (no UDP).
    pub udp_kpps: Option<f64>,
    pub conn_per_s: f64,
    pub conn_errors: u64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub latency_exchanges: usize,
    /// CPU time (machine-wide softirq + the proxy's processes) per Gbit moved by iperf3.
    pub cpu_ms_per_gbit: f64,
    /// iperf3 -R (the data are replies); XDP kinds only.
    pub tcp_reverse_gbps: Option<f64>,
    /// The generator-driven UDP run, as fast as trafgen goes (not for HAProxy).
    pub generator: Option<GenFigures>,
    /// The same at [`GEN_FIXED_PPS`].
    pub generator_fixed: Option<GenFigures>,
    /// The XDP program's run-time statistics, load by load (XDP kinds only).
    pub bpf: Option<BpfPhases>,
}

/// A generator-driven UDP run: trafgen in client 0 sends 60-byte frames from
/// [`GEN_FLOWS`] source ports to the target, as fast as it can or at a fixed rate.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct GenFigures {
    /// What trafgen handed to its interface, per second: the offered load.
    pub offered_pps: f64,
    /// Packets the backends' interfaces received (RX counters of their veths), per second.
    pub backend_rx_pps: f64,
    /// Datagrams the backends' UDP sinks read, per second.
    pub sink_pps: f64,
    /// Machine-wide softirq time (plus the proxy's processes) per million packets received
    /// by the backends.
    pub cpu_ms_per_mpkt: f64,
    /// The XDP program's own run time per million packets it ran on (XDP kinds).
    pub bpf_ms_per_mpkt: Option<f64>,
}

/// Run-time statistics of the XDP program over each load.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct BpfPhases {
    pub tcp: Phase,
    pub tcp_reverse: Phase,
    pub udp: Phase,
    pub generator: Phase,
    pub conn: Phase,
    pub latency: Phase,
}

/// Measures `kind` once in a fresh testbed; `dir` gets its config files and logs.
pub fn measure_once(kind: Kind, d: &Durations, dir: &Path) -> Result<Figures> {
    std::fs::create_dir_all(dir)?;
    let mut tb = Testbed::new(CLIENTS, BACKENDS)?;
    tune(&tb)?;
    let servers = Servers::start(&tb, BACKEND_PORT)?;
    tb.iperf_server(0, IPERF_PORT)?;
    let lb = balancers::start(kind, &mut tb, dir)
        .with_context(|| format!("starting {}", kind.label()))?;
    let (target_ip, port) = kind.target(&tb);
    let target = SocketAddr::new(target_ip.into(), port);
    loadgen::warm_up(&tb, target, 20, Duration::from_secs(10))?;
    // Run-time statistics on for the XDP kinds' whole run (they add two clock reads to
    // every program run), off for the others.
    let (_stats_on, prog) = if kind.is_xdp() {
        let id = xdp_prog_id(tb.lb(), &tb.lb_ifaces()[0])?;
        (Some(StatsOn::new()?), Some(id))
    } else {
        (None, None)
    };
    let mut bpf = BpfPhases::default();
    let phase = |slot: &mut Phase, before: Option<ProgStats>| -> Result<()> {
        if let (Some(id), Some(b)) = (prog, before) {
            *slot = ProgStats::of(id)?.since(&b).into();
        }
        Ok(())
    };
    let read = || prog.map(ProgStats::of).transpose();

    let before = CpuReading::now(&lb.pids)?;
    let b = read()?;
    let iperf = tb.iperf_client_streams(
        0,
        target_ip.into(),
        IPERF_PORT,
        d.tcp_secs,
        false,
        d.iperf_streams,
    )?;
    phase(&mut bpf.tcp, b)?;
    let cpu = CpuReading::now(&lb.pids)?.since(&before);
    let tcp_gbps = iperf.received_gbps();
    let gbit_moved = tcp_gbps * f64::from(d.tcp_secs);

    let tcp_reverse_gbps = if kind.is_xdp() {
        let b = read()?;
        let r = tb.iperf_client_streams(
            0,
            target_ip.into(),
            IPERF_PORT,
            d.tcp_secs,
            true,
            d.iperf_streams,
        )?;
        phase(&mut bpf.tcp_reverse, b)?;
        Some(r.received_gbps())
    } else {
        None
    };

    let (udp_kpps, generator, generator_fixed) = if kind.has_udp() {
        let b = read()?;
        let kpps = loadgen::udp_rate(&tb, &servers, target, secs(d.udp_secs))? / 1e3;
        phase(&mut bpf.udp, b)?;
        let mut gens = Vec::new();
        for rate in [None, Some(GEN_FIXED_PPS)] {
            let b = read()?;
            let g = generator_run(&tb, &servers, &lb.pids, target, rate, secs(d.udp_secs))?;
            let mut p = Phase::default();
            phase(&mut p, b)?;
            if rate.is_none() {
                bpf.generator = p;
            }
            gens.push(GenFigures {
                bpf_ms_per_mpkt: (p.packets > 0)
                    .then(|| p.run_time_ns as f64 / 1e6 / (p.packets as f64 / 1e6)),
                ..g
            });
        }
        (Some(kpps), Some(gens[0]), Some(gens[1]))
    } else {
        (None, None, None)
    };
    let b = read()?;
    let conn = loadgen::conn_rate(&tb, target, secs(d.conn_secs))?;
    phase(&mut bpf.conn, b)?;
    let b = read()?;
    let lat = loadgen::latency(&tb, target, secs(d.latency_secs))?;
    phase(&mut bpf.latency, b)?;
    drop(lb);
    Ok(Figures {
        tcp_gbps,
        udp_kpps,
        conn_per_s: conn.per_s,
        conn_errors: conn.errors,
        p50_us: lat.p50_us,
        p99_us: lat.p99_us,
        latency_exchanges: lat.exchanges,
        cpu_ms_per_gbit: cpu.as_secs_f64() * 1e3 / gbit_moved,
        tcp_reverse_gbps,
        generator,
        generator_fixed,
        bpf: prog.map(|_| bpf),
    })
}

/// trafgen in client 0 floods `target` with 60-byte UDP frames from [`GEN_FLOWS`] source
/// ports for `secs`, at `rate` pps or as fast as it goes; counted at the backends'
/// interfaces and sinks.
fn generator_run(
    tb: &Testbed,
    servers: &Servers,
    pids: &[u32],
    target: SocketAddr,
    rate: Option<u64>,
    secs: Duration,
) -> Result<GenFigures> {
    let client = tb.client(0);
    let std::net::IpAddr::V4(dst_ip) = target.ip() else {
        return Err(anyhow!("the generator sends IPv4"));
    };
    let mut flood = UdpFlood::small(
        Some(client.ns.name()),
        &client.link.peer_if,
        mac_of(&client.ns, &client.link.peer_if)?,
        mac_of(tb.lb(), &client.link.lb_if)?,
        client.addr(),
        dst_ip,
        target.port(),
        GEN_FLOWS,
        secs,
    );
    flood.rate_pps = rate;
    let rx = || -> Result<u64> {
        tb.backends()
            .iter()
            .map(|b| rx_packets(&b.ns, &b.link.peer_if))
            .sum()
    };
    // The baselines once trafgen sends (its start-up, seconds on a loaded machine, is
    // not part of the run).
    let running = flood.start()?;
    let (rx0, sink0, cpu0) = (rx()?, servers.udp_received(), CpuReading::now(pids)?);
    running.wait_duration();
    let sent = running.finish()?;
    // Frames still queued reach the backends.
    std::thread::sleep(Duration::from_millis(300));
    let (rx1, sink1) = (rx()?, servers.udp_received());
    let cpu = CpuReading::now(pids)?.since(&cpu0);
    let received = rx1.saturating_sub(rx0);
    Ok(GenFigures {
        offered_pps: sent.pps(),
        backend_rx_pps: received as f64 / sent.secs,
        sink_pps: sink1.saturating_sub(sink0) as f64 / sent.secs,
        cpu_ms_per_mpkt: cpu.as_secs_f64() * 1e3 / (received.max(1) as f64 / 1e6),
        bpf_ms_per_mpkt: None,
    })
}

/// The MAC address of `iface` in `ns`.
pub fn mac_of(ns: &Netns, iface: &str) -> Result<[u8; 6]> {
    let out = ns.exec("ip", &["-j", "link", "show", "dev", iface])?;
    let v: serde_json::Value = serde_json::from_str(&out).context("parsing `ip -j link`")?;
    let text = v[0]["address"]
        .as_str()
        .ok_or_else(|| anyhow!("no address of {iface}"))?;
    let mut mac = [0u8; 6];
    let parts: Vec<&str> = text.split(':').collect();
    anyhow::ensure!(parts.len() == 6, "odd MAC {text} of {iface}");
    for (m, p) in mac.iter_mut().zip(parts) {
        *m = u8::from_str_radix(p, 16).with_context(|| format!("odd MAC {text}"))?;
    }
    Ok(mac)
}

/// Packets received by `iface` in `ns` (its RX counter).
pub fn rx_packets(ns: &Netns, iface: &str) -> Result<u64> {
    let out = ns.exec("ip", &["-s", "-j", "link", "show", "dev", iface])?;
    let v: serde_json::Value = serde_json::from_str(&out).context("parsing `ip -s -j link`")?;
    v[0]["stats64"]["rx"]["packets"]
        .as_u64()
        .ok_or_else(|| anyhow!("no RX counter of {iface}"))
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

/// The same socket settings in every namespace, as one tunes a proxy box and a load
/// generator: the whole ephemeral port range, and TIME_WAIT reuse for outgoing connections
/// (clients and proxies open tens of thousands of short connections).
fn tune(tb: &Testbed) -> Result<()> {
    let nodes = tb.clients().iter().chain(tb.backends()).map(|n| &n.ns);
    for ns in nodes.chain([tb.lb()]) {
        ns.sysctl("net/ipv4/ip_local_port_range", "1024 65535")?;
        ns.sysctl("net/ipv4/tcp_tw_reuse", "1")?;
    }
    Ok(())
}

//! End to end: for each run and each balancer in turn, a fresh testbed (3 clients, LB,
//! 3 backends), the balancer in its LB namespace, and the four load figures. A fresh
//! testbed per measurement keeps one balancer's state (conntrack, nat hooks, XDP, the VIP
//! on lo) from touching the next; runs interleave the balancers so that the shared
//! machine's noise falls on all of them alike.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, Result};
use serde::Serialize;
use xlb_testbed::{Testbed, VIP};

use crate::balancers::{self, BACKEND_PORT, IPERF_PORT, Kind, VIP_PORT};
use crate::cpu::CpuReading;
use crate::loadgen;
use crate::servers::Servers;

const CLIENTS: usize = 3;
const BACKENDS: usize = 3;

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
    let vip = SocketAddr::new(VIP.into(), VIP_PORT);
    loadgen::warm_up(&tb, vip, 20, Duration::from_secs(10))?;

    let before = CpuReading::now(&lb.pids)?;
    let iperf = tb.iperf_client_streams(
        0,
        VIP.into(),
        IPERF_PORT,
        d.tcp_secs,
        false,
        d.iperf_streams,
    )?;
    let cpu = CpuReading::now(&lb.pids)?.since(&before);
    let tcp_gbps = iperf.received_gbps();
    let gbit_moved = tcp_gbps * f64::from(d.tcp_secs);

    let udp_kpps = if kind.has_udp() {
        Some(loadgen::udp_rate(&tb, &servers, vip, secs(d.udp_secs))? / 1e3)
    } else {
        None
    };
    let conn = loadgen::conn_rate(&tb, vip, secs(d.conn_secs))?;
    let lat = loadgen::latency(&tb, vip, secs(d.latency_secs))?;
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
    })
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

//! `xlb-bench dsr`: NAT against direct server return (`dsr-l2`) on one TCP download
//! (`iperf3 -R`, 4 streams: the backend sends, the client receives), each in its own
//! testbed layout (NAT: point to point; DSR: the router and L2 segment of
//! `Layout::Dsr`), xlbd in skb mode in both. Figures: the client's Gbit/s, the packets the
//! xlb program ran on, and its CPU time per Gbit received (the kernel's BPF run-time
//! statistics of the attached program: the balancer's own cost; the kernel's forwarding
//! around it is not in it). With DSR the data (the reply direction) never reaches the
//! node: it runs only on the client's ACKs. Medians of `runs` runs; `dsr.json`.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use serde::Serialize;
use xlb_testbed::{Layout, Testbed, VIP};

const PORT: u16 = 5201;
const SECS: u32 = 5;
const STREAMS: u32 = 4;

/// One mode's figures (medians).
#[derive(Debug, Clone, Serialize)]
pub struct ModeFigures {
    pub mode: &'static str,
    pub gbps: f64,
    /// Packets the xlb program ran on during the download.
    pub program_packets: u64,
    /// CPU time the xlb program took per Gbit the client received, in milliseconds.
    pub program_ms_per_gbit: f64,
}

pub fn run(out: &Path, runs: usize) -> Result<()> {
    // Held for the whole benchmark: the kernel counts BPF run time while it is open.
    let _stats = aya::sys::enable_stats(aya::sys::Stats::RunTime)
        .context("enabling BPF run-time statistics")?;
    let mut all = Vec::new();
    for mode in ["nat", "dsr-l2"] {
        let mut figs = Vec::new();
        for run in 0..runs.max(1) {
            eprintln!("bench dsr: {mode} run {}/{runs} ...", run + 1);
            figs.push(once(mode)?);
        }
        let med = |f: &dyn Fn(&(f64, u64, f64)) -> f64| {
            let mut v: Vec<f64> = figs.iter().map(f).collect();
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        all.push(ModeFigures {
            mode,
            gbps: med(&|f| f.0),
            program_packets: med(&|f| f.1 as f64) as u64,
            program_ms_per_gbit: med(&|f| f.2),
        });
    }
    for f in &all {
        println!(
            "bench dsr: {:<6} {:6.2} Gbit/s  xlb program: {:>9} packets, {:7.3} ms CPU per Gbit",
            f.mode, f.gbps, f.program_packets, f.program_ms_per_gbit
        );
    }
    std::fs::create_dir_all(out)?;
    let path = out.join("dsr.json");
    std::fs::write(&path, serde_json::to_string_pretty(&all)? + "\n")
        .with_context(|| format!("writing {}", path.display()))?;
    eprintln!("bench dsr: wrote {}", path.display());
    Ok(())
}

/// One download through `mode`: (Gbit/s, program packets, program ms per Gbit).
fn once(mode: &str) -> Result<(f64, u64, f64)> {
    let layout = if mode == "nat" {
        Layout::PointToPoint
    } else {
        Layout::Dsr
    };
    let mut tb = Testbed::with_layout(1, 1, layout)?;
    tb.iperf_server(0, PORT)?;
    tb.start_xlbd(&["--mode", "skb"])?;
    let service = format!("{VIP}:{PORT}/tcp");
    if mode == "nat" {
        tb.xlb_ok(&["service", "add", &service])?;
    } else {
        // A health check until the backend is up gives the node its neighbour entry.
        tb.xlb_ok(&[
            "service",
            "add",
            &service,
            "--forwarding",
            mode,
            "--check",
            "tcp",
            "--interval",
            "200ms",
            "--rise",
            "1",
        ])?;
    }
    tb.xlb_ok(&["backend", "add", &service, &tb.backend_addr(0, PORT)])?;
    if mode != "nat" {
        let deadline = Instant::now() + Duration::from_secs(5);
        while tb.backend_rows(&service)?.iter().any(|r| r.state != "up") {
            if Instant::now() >= deadline {
                bail!("the backend did not come up");
            }
            thread::sleep(Duration::from_millis(50));
        }
        tb.xlb_ok(&["service", "set-check", &service, "--check", "none"])?;
    }
    let id = attached_program(&tb)?;
    let before = program_stats(id)?;
    let addr = SocketAddr::new(IpAddr::V4(VIP), PORT);
    let r = tb.iperf_client_streams(0, addr.ip(), PORT, SECS, true, STREAMS)?;
    let after = program_stats(id)?;
    let gbps = r.received_gbps();
    let gbit = gbps * f64::from(SECS);
    let ms = (after.0 - before.0).as_secs_f64() * 1e3 / gbit.max(1e-9);
    Ok((gbps, after.1 - before.1, ms))
}

/// The id of the XDP program on xlbd's (first) interface, as `ip link` shows it.
fn attached_program(tb: &Testbed) -> Result<u32> {
    let iface = tb.lb_ifaces().into_iter().next().context("no interface")?;
    let out = tb
        .xlbd_ns()
        .exec("ip", &["-d", "link", "show", "dev", &iface])?;
    out.split_whitespace()
        .skip_while(|w| !w.starts_with("prog/xdp"))
        .skip_while(|w| *w != "id")
        .nth(1)
        .and_then(|id| id.parse().ok())
        .with_context(|| format!("no XDP program id on {iface}: {out}"))
}

/// (run time, run count) of program `id`.
fn program_stats(id: u32) -> Result<(Duration, u64)> {
    for p in aya::programs::loaded_programs() {
        let p = p?;
        if p.id() == id {
            return Ok((p.run_time(), p.run_count()));
        }
    }
    bail!("program {id} is not loaded")
}

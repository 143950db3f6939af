//! `xlb-bench`, run by `cargo xtask bench` (as root): xlb's per-packet cost beside the
//! XDP_TX limit, then xlb, iptables DNAT (kube-proxy), HAProxy and nginx end to end in the
//! netns testbed; medians of several runs go to `latest.json`, `latest.md` and PNG charts.

mod balancers;
mod bpfstats;
mod charts;
mod cpu;
mod dsr;
mod e2e;
mod generator;
mod loadgen;
mod maglev;
mod markdown;
mod packets;
mod per_packet;
mod report;
mod servers;
mod stats;
mod tables;
mod targets;
mod vm;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, bail};
use clap::Parser;

use crate::e2e::{Durations, Figures};
use crate::report::{ByBalancer, Machine, Results, Summary};

#[derive(Parser)]
#[command(about = "xlb's benchmarks: per packet and end to end (needs root)")]
struct Args {
    /// Runs of every end-to-end figure (the median is reported); at least 3 for results
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Where latest.json, latest.md and the charts go
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/results"))]
    out: PathBuf,
    /// Shorter loads (1 s each) and fewer per-packet runs, for trying the benchmark out,
    /// not for results
    #[arg(long)]
    quick: bool,
    /// Only these balancers (xlb, iptables_dnat, haproxy, nginx, xdp_forward_yardstick;
    /// comma-separated; `none`: per packet only; for `vm`: xlb_native, xlb_skb,
    /// iptables_dnat, yardstick, in the order given), for trying the benchmark out
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    #[command(subcommand)]
    what: Option<What>,
}

#[derive(clap::Subcommand)]
enum What {
    /// Maglev table figures (no root needed): one JSON line, also saved to maglev.json
    Maglev,
    /// Time to apply a change of a 65537-slot backend table to the real maps (root): one
    /// JSON line, also saved to tables.json
    Tables,
    /// NAT against direct server return (dsr-l2) on a TCP download: Gbit/s and the xlb
    /// program's CPU per Gbit (needs root): dsr.json
    Dsr,
    /// xlb native and skb XDP, iptables DNAT and the forward-only XDP yardstick in a qemu
    /// guest on virtio-net (needs root): vm.json, vm.md and vm.png
    Vm,
    /// Attaches the forward-only yardstick in driver mode to these interfaces, redirecting
    /// among them, until killed (bench vm runs it in the guest)
    #[command(hide = true)]
    AttachYardstick { ifaces: Vec<String> },
}

fn main() {
    if let Err(e) = run(&Args::parse()) {
        eprintln!("xlb-bench: error: {e:#}");
        std::process::exit(1);
    }
}

fn run(args: &Args) -> Result<()> {
    if let Some(What::AttachYardstick { ifaces }) = &args.what {
        return vm::attach_yardstick(ifaces);
    }
    if let Some(What::Maglev) = args.what {
        return maglev::run(&args.out);
    }
    if let Some(What::Tables) = args.what {
        // SAFETY: geteuid(2) cannot fail and touches no memory.
        if unsafe { libc::geteuid() } != 0 {
            bail!("bench tables loads the XDP program: run it as root");
        }
        return tables::run(&args.out);
    }
    // SAFETY: geteuid(2) cannot fail and touches no memory.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the benchmark loads XDP programs and makes network namespaces: run it as root");
    }
    if let Some(What::Dsr) = args.what {
        return dsr::run(&args.out, args.runs);
    }
    if let Some(What::Vm) = args.what {
        return vm::run(&args.out, args.runs, &args.only);
    }
    charts::check_font()?;
    let d = if args.quick {
        Durations {
            tcp_secs: 1,
            iperf_streams: 4,
            udp_secs: 1.0,
            conn_secs: 1.0,
            latency_secs: 1.0,
        }
    } else {
        Durations {
            tcp_secs: 5,
            iperf_streams: 4,
            udp_secs: 3.0,
            conn_secs: 3.0,
            latency_secs: 3.0,
        }
    };
    eprintln!("bench: per packet (BPF_PROG_TEST_RUN) ...");
    let (per_packet, detail) = per_packet::measure(if args.quick { 20 } else { 150 })?;
    eprintln!("bench: {per_packet:?}");

    let tmp = TempDir::new()?;
    let mut runs: ByBalancer<Vec<Figures>> = ByBalancer(
        balancers::ALL
            .iter()
            .filter(|k| args.only.is_empty() || args.only.iter().any(|o| o == k.key()))
            .map(|k| (*k, Vec::new()))
            .collect(),
    );
    for run in 0..args.runs {
        for (kind, figs) in &mut runs.0 {
            let dir = tmp.0.join(format!("{}-{run}", kind.key()));
            eprintln!("bench: run {}/{}: {} ...", run + 1, args.runs, kind.label());
            let f = e2e::measure_once(*kind, &d, &dir).or_else(|e| {
                eprintln!("bench: {} failed ({e:#}); once more", kind.label());
                e2e::measure_once(*kind, &d, &dir.with_extension("retry"))
            })?;
            eprintln!("bench:   {f:?}");
            figs.push(f);
        }
    }
    let e2e = ByBalancer(
        runs.0
            .iter()
            .map(|(k, figs)| (*k, Summary::of(figs)))
            .collect(),
    );
    let targets = targets::check(&per_packet, &e2e);
    let results = Results {
        per_packet_ns: per_packet,
        e2e,
        targets,
        per_packet_detail: detail,
        e2e_runs: runs,
        runs: args.runs,
        durations: d,
        machine: machine(),
    };
    write(&results, &args.out)
}

fn write(r: &Results, out: &Path) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let json = serde_json::to_string_pretty(r)? + "\n";
    std::fs::write(out.join("latest.json"), json)?;
    let md = markdown::document(r);
    std::fs::write(out.join("latest.md"), &md)?;
    charts::draw(r, out)?;
    println!("{md}");
    eprintln!(
        "bench: wrote latest.json, latest.md, per_packet.png, e2e.png, bpf_stats.png in {}",
        out.display()
    );
    Ok(())
}

fn machine() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let first_line = |cmd: &mut Command| {
        cmd.output()
            .ok()
            .map(|o| {
                let text = [o.stdout, o.stderr].concat();
                String::from_utf8_lossy(&text)
                    .lines()
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_owned()
            })
            .unwrap_or_default()
    };
    Machine {
        cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu_model: cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
            .unwrap_or_default(),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_owned(),
        date_utc: first_line(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"])),
        versions: [
            Command::new("haproxy").arg("-v"),
            Command::new("nginx").arg("-v"),
            Command::new("iptables").arg("-V"),
            Command::new("iperf3").arg("-v"),
        ]
        .into_iter()
        .map(first_line)
        .collect(),
    }
}

/// `/tmp/xlb-bench-<pid>`: the balancers' config files and logs; removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Result<TempDir> {
        let p = PathBuf::from(format!("/tmp/xlb-bench-{}", std::process::id()));
        std::fs::create_dir_all(&p).with_context(|| format!("creating {}", p.display()))?;
        Ok(TempDir(p))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

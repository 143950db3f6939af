//! `xlb-bench vm` (`cargo xtask bench vm`): balancers on a real NIC driver. In one qemu guest
//! of the VM testbed (two virtio-net NICs), in turn: xlb in native XDP mode, xlb in skb
//! (generic) mode, iptables DNAT as kube-proxy writes it, and the forward-only XDP
//! yardstick (`lb-ebpf/src/yardstick.rs`: FIB lookup and redirect, no balancing, traffic
//! aimed at the backend itself) attached natively. Figures per contender: TCP
//! Gbit/s (iperf3 from the client namespace through the VIP to backend 0); small UDP
//! packets reaching the backend at a stated offered load, sent by trafgen on the host into
//! the client's tap; at a fixed lower rate the guest's CPU per packet (the guest's
//! /proc/stat) and qemu's host CPU per packet (its threads' /proc stat), net of the idle
//! guest's; the drop counters of every hop (`ip -s link` and `tc -s qdisc` of both host taps
//! and both guest NICs); new TCP connections/s and p50/p99 round trips (backend 0's id
//! server behind VIP:80). Medians of interleaved rounds. Under TCG only ratios within one
//! run mean anything.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Stdio;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use serde::Serialize;
use xlb_testbed::vm::{self, Vm};
use xlb_testbed::{Netns, TcpConn, Tracked, VIP, die_with_parent};

use crate::balancers::{KubeService, kube_proxy_nat};
use crate::charts;
use crate::generator::{Running, UdpFlood};
use crate::per_packet::{FWD_PROGRAM, attach_forward_yardstick};

/// Seconds of every load run; CPU and packet counters are read over the middle `DUR - 4`.
const DUR: u64 = 8;
/// The fixed UDP rate for CPU per packet, below every contender's saturation under TCG.
const RATE_PPS: u64 = 8000;
/// The offered UDP load for packets/s at the backend: about twice what the fastest
/// contender forwards under TCG, so every contender is saturated.
const OFFERED_PPS: u64 = 50_000;
/// UDP payload bytes (18: the smallest frames, 60 bytes on the wire).
const UDP_LEN: u64 = 18;
/// The generator's flows: source ports `GEN_SPORT..GEN_SPORT + GEN_FLOWS`, in turn.
const GEN_SPORT: u16 = 10_000;
const GEN_FLOWS: u16 = 64;
const IPERF_PORT: u16 = 5201;
/// The VIP port of the id service (backend 0's id server on BACKEND_PORT) for connections/s
/// and latency.
const VIP_PORT: u16 = 80;
const BACKEND_PORT: u16 = 8080;
/// Seconds of the connections/s and of the latency run.
const TCP_SECS: u64 = 3;
/// USER_HZ of /proc/stat and /proc/<pid>/task/<tid>/stat (host and guest).
const TICKS_PER_S: f64 = 100.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Contender {
    XlbNative,
    XlbSkb,
    IptablesDnat,
    Yardstick,
}

impl Contender {
    const ALL: [Contender; 4] = [
        Contender::XlbNative,
        Contender::XlbSkb,
        Contender::IptablesDnat,
        Contender::Yardstick,
    ];

    fn key(self) -> &'static str {
        match self {
            Contender::XlbNative => "xlb_native",
            Contender::XlbSkb => "xlb_skb",
            Contender::IptablesDnat => "iptables_dnat",
            Contender::Yardstick => "yardstick",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Contender::XlbNative => "xlb native XDP (xdpdrv)",
            Contender::XlbSkb => "xlb skb XDP (xdpgeneric)",
            Contender::IptablesDnat => "iptables DNAT (kube-proxy)",
            Contender::Yardstick => "XDP forward-only yardstick (xdpdrv, no NAT)",
        }
    }

    fn short(self) -> &'static str {
        match self {
            Contender::XlbNative => "xlb native",
            Contender::XlbSkb => "xlb skb",
            Contender::IptablesDnat => "iptables",
            Contender::Yardstick => "yardstick",
        }
    }

    /// Where this contender's traffic for `vip_port` goes: the VIP, which backend 0 answers
    /// on `backend_port`; for the yardstick, which balances nothing, backend 0 itself.
    fn target(self, vip_port: u16, backend_port: u16) -> SocketAddr {
        match self {
            Contender::Yardstick => SocketAddr::new(backend().into(), backend_port),
            _ => SocketAddr::new(VIP.into(), vip_port),
        }
    }
}

/// CPU over one measured window: the guest's busy fraction, qemu's vCPU thread's and all
/// of qemu's threads' (the rest is its main loop, where the userspace virtio-net and the
/// taps are served).
#[derive(Debug, Clone, Copy, Default, Serialize)]
struct Cpu {
    guest_busy_pct: f64,
    vcpu_thread_pct: f64,
    qemu_total_pct: f64,
}

/// One hop's counters over a run: `ip -s link`'s packets and drops and the root qdisc's
/// drops (`tc -s qdisc`).
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
struct Hop {
    hop: String,
    rx_packets: u64,
    tx_packets: u64,
    rx_dropped: u64,
    tx_dropped: u64,
    qdisc_drops: u64,
}

impl Hop {
    fn minus(&self, before: &Hop) -> Hop {
        Hop {
            hop: self.hop.clone(),
            rx_packets: self.rx_packets.saturating_sub(before.rx_packets),
            tx_packets: self.tx_packets.saturating_sub(before.tx_packets),
            rx_dropped: self.rx_dropped.saturating_sub(before.rx_dropped),
            tx_dropped: self.tx_dropped.saturating_sub(before.tx_dropped),
            qdisc_drops: self.qdisc_drops.saturating_sub(before.qdisc_drops),
        }
    }

    fn drops(&self) -> u64 {
        self.rx_dropped + self.tx_dropped + self.qdisc_drops
    }
}

/// The hops in [`hops`]' order: the client's tap (host → guest eth0), the guest's eth0 and
/// eth1, the switch's tap (guest eth1 → backends' bridge).
const HOPS: [&str; 4] = [
    "host tap of eth0 (client ns)",
    "guest eth0",
    "guest eth1",
    "host tap of eth1 (switch ns)",
];

#[derive(Debug, Clone, Serialize)]
struct Figures {
    key: &'static str,
    label: &'static str,
    /// `ip link`'s attach mode on eth0 while measured (xdp, xdpgeneric, none).
    attach: String,
    tcp_gbps: f64,
    /// At the offered load: the frames/s the client's tap took from the generator (into
    /// qemu's queue), and the packets/s reaching backend 0.
    sent_pps: f64,
    backend_pps: f64,
    /// CPU at the offered load.
    offered_cpu: Cpu,
    /// Every hop's counters over the whole offered-load run.
    offered_hops: Vec<Hop>,
    /// Packets/s reaching the backend at the fixed rate, and CPU then.
    fixed_backend_pps: f64,
    fixed_cpu: Cpu,
    /// Guest CPU µs per packet at the fixed rate, net of the idle guest's (numerically
    /// also guest cores per Mpps).
    guest_us_per_pkt: f64,
    /// qemu vCPU-thread and all-threads host CPU µs per packet at the fixed rate, net of
    /// idle.
    vcpu_us_per_pkt: f64,
    qemu_us_per_pkt: f64,
    /// New TCP connections per second (connect, one request and answer, close; one at a time).
    conns_per_sec: f64,
    /// Request/answer round trips on one persistent connection, µs.
    p50_us: f64,
    p99_us: f64,
}

#[derive(Debug, Serialize)]
struct Results {
    accel: String,
    guest_kernel: String,
    vcpus: u32,
    nic: &'static str,
    generator: String,
    run_secs: u64,
    cpu_window_secs: u64,
    offered_pps: u64,
    fixed_rate_pps: u64,
    udp_payload_bytes: u64,
    udp_flows: u16,
    idle: Cpu,
    /// The contenders in the order of every round.
    order: Vec<&'static str>,
    /// Rounds per contender; every figure below is the median of the rounds.
    runs: usize,
    balancers: Vec<Figures>,
    all_runs: Vec<Vec<Figures>>,
}

/// `runs` rounds of every contender (or of those in `only`, in that order) in one guest;
/// the report holds each figure's median.
pub fn run(out: &Path, runs: usize, only: &[String]) -> Result<()> {
    if runs == 0 {
        bail!("--runs must be at least 1");
    }
    let order: Vec<Contender> = if only.is_empty() {
        Contender::ALL.to_vec()
    } else {
        only.iter()
            .map(|k| {
                Contender::ALL
                    .into_iter()
                    .find(|c| c.key() == k)
                    .with_context(|| {
                        let keys: Vec<_> = Contender::ALL.iter().map(|c| c.key()).collect();
                        format!("--only {k}: not one of {}", keys.join(", "))
                    })
            })
            .collect::<Result<_>>()?
    };
    if let Some(why) = vm::unavailable() {
        bail!("the VM benchmark cannot run here: {why}");
    }
    charts::check_font()?;
    let mut vm = boot()?;
    let kernel = vm.guest_ok("uname -r")?.trim().to_owned();
    eprintln!("bench vm: idle guest ...");
    let idle = measure(&vm, &Load::Idle)?.cpu;
    eprintln!("bench vm:   {idle:?}");
    // Rounds interleave the contenders, so a burst of load on the host falls on all alike.
    let mut by_contender: Vec<Vec<Figures>> = order.iter().map(|_| Vec::new()).collect();
    for round in 0..runs {
        for (i, &c) in order.iter().enumerate() {
            eprintln!("bench vm: round {}/{runs}: {} ...", round + 1, c.label());
            let f = match round_of(&vm, c, &idle) {
                Ok(f) => f,
                Err(e) => {
                    // Once more in a freshly booted guest (the guest's state went to the
                    // log): on Linux 6.1's virtio-net a generic-XDP round after heavy
                    // rounds could find eth1's transmit queue stuck (every redirected
                    // frame a tx drop), which a new xlbd does not clear but a reboot does.
                    eprintln!(
                        "bench vm: {} failed: {e:#}; once more in a rebooted guest",
                        c.label()
                    );
                    drop(vm);
                    vm = boot()?;
                    round_of(&vm, c, &idle)?
                }
            };
            eprintln!("bench vm:   {f:?}");
            by_contender[i].push(f);
        }
    }
    let balancers = by_contender.iter().map(|runs| median(runs)).collect();
    let results = Results {
        accel: vm.accel().name().to_owned(),
        guest_kernel: kernel,
        vcpus: 1,
        nic: "virtio-net (qemu userspace, no vhost)",
        generator: trafgen_version(),
        run_secs: DUR,
        cpu_window_secs: DUR - 4,
        offered_pps: OFFERED_PPS,
        fixed_rate_pps: RATE_PPS,
        udp_payload_bytes: UDP_LEN,
        udp_flows: GEN_FLOWS,
        idle,
        order: order.iter().map(|c| c.key()).collect(),
        runs,
        balancers,
        all_runs: by_contender,
    };
    drop(vm);
    std::fs::create_dir_all(out)?;
    std::fs::write(
        out.join("vm.json"),
        serde_json::to_string_pretty(&results)? + "\n",
    )?;
    let md = markdown(&results);
    std::fs::write(out.join("vm.md"), &md)?;
    chart(&results, &out.join("vm.png"))?;
    println!("{md}");
    eprintln!(
        "bench vm: wrote vm.json, vm.md and vm.png in {}",
        out.display()
    );
    Ok(())
}

/// A guest booted for the benchmark, with the backend's id server running.
fn boot() -> Result<Vm> {
    let vm = Vm::boot(1)?;
    eprintln!(
        "bench vm: guest up in {:.1} s ({})",
        vm.boot_time().as_secs_f64(),
        vm.accel().name()
    );
    vm.spawn_id_server(0, BACKEND_PORT)?;
    Ok(vm)
}

/// One round of `c`: started, measured, stopped (also when the measuring failed, after
/// the guest's state is logged).
fn round_of(vm: &Vm, c: Contender, idle: &Cpu) -> Result<Figures> {
    start(vm, c)?;
    let f = measure_contender(vm, c, idle);
    if f.is_err() {
        eprintln!("bench vm: the guest's state:\n{}", diagnose(vm));
    }
    stop(vm, c)?;
    f
}

/// What a failed round leaves to look at: xlb's counters, the links, netfilter's tables
/// and conntrack's entries in the guest.
fn diagnose(vm: &Vm) -> String {
    let xlb = vm::guest_bin("xlb").unwrap_or_else(|_| "xlb".into());
    let script = format!(
        "{xlb} stats; ip -s link; ip -d link show dev eth0; ip route; \
         iptables-save; nft list ruleset | head -50; \
         cat /proc/sys/net/netfilter/nf_conntrack_count; head -30 /proc/net/nf_conntrack; \
         lsmod | grep -E 'nf_|xt_|ip_tables'; sysctl net.ipv4.conf.all.rp_filter \
         net.ipv4.conf.eth0.rp_filter net.ipv4.conf.eth1.rp_filter; \
         tail -20 /tmp/xlbd.log"
    );
    match vm.guest(&script, Duration::from_secs(60)) {
        Ok(o) => o.out,
        Err(e) => format!("(cannot read it: {e:#})"),
    }
}

fn backend() -> Ipv4Addr {
    vm::backend_addr(0)
}

fn iperf_server(vm: &Vm) -> Result<Tracked> {
    let mut cmd = vm.backend_ns(0).cmd("iperf3");
    cmd.args(["-s", "-1", "-p", &IPERF_PORT.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let child = die_with_parent(&mut cmd)
        .spawn()
        .context("cannot run iperf3 (run `cargo xtask setup`)")?;
    thread::sleep(Duration::from_millis(500));
    Ok(Tracked::new("iperf3 -s", child))
}

fn start(vm: &Vm, c: Contender) -> Result<()> {
    match c {
        Contender::XlbNative | Contender::XlbSkb => {
            let xlb = vm::guest_bin("xlb")?;
            let mode = if c == Contender::XlbNative {
                "native"
            } else {
                "skb"
            };
            let mut cli = String::new();
            for (proto, port, bport) in SERVICES {
                let svc = format!("{VIP}:{port}/{proto}");
                writeln!(cli, "{xlb} service add {svc}")?;
                writeln!(cli, "{xlb} backend add {svc} {}:{bport}", backend())?;
            }
            vm.start_xlbd(mode, &cli).map(drop)
        }
        Contender::IptablesDnat => vm
            .guest_ok(&format!(
                "iptables-restore <<'EOF'\n{}EOF\n",
                kube_proxy_rules(VIP, backend())
            ))
            .map(drop),
        Contender::Yardstick => {
            let exe = std::env::current_exe().context("this benchmark's own path")?;
            let bench = vm::guest_path(&exe);
            vm.guest_ok(&format!(
                "setsid {bench} attach-yardstick eth0 eth1 > /tmp/yardstick.log 2>&1 < /dev/null &\n\
                 p=$!; echo $p > /tmp/yardstick.pid\n\
                 for i in $(seq 600); do grep -q '^attached' /tmp/yardstick.log && exit 0\n\
                 kill -0 $p 2>/dev/null || break; sleep 0.05; done\n\
                 echo 'the yardstick did not attach:'; cat /tmp/yardstick.log; exit 1"
            ))
            .map(drop)
        }
    }
}

/// `xlb-bench attach-yardstick IFACE...` (run in the guest by [`start`]): the forward-only
/// yardstick in driver mode on every interface, each allowed as a redirect target; says
/// `attached` and holds the links until killed (the kernel detaches them as it exits).
pub fn attach_yardstick(ifaces: &[String]) -> Result<()> {
    if ifaces.is_empty() {
        bail!("attach-yardstick needs at least one interface");
    }
    let _links = attach_forward_yardstick(ifaces)?;
    println!("attached {FWD_PROGRAM} to {}", ifaces.join(" "));
    loop {
        thread::sleep(Duration::from_secs(3600));
    }
}

fn stop(vm: &Vm, c: Contender) -> Result<()> {
    match c {
        Contender::XlbNative | Contender::XlbSkb => vm.stop_xlbd(),
        Contender::IptablesDnat => vm
            .guest_ok("iptables -t nat -F && iptables -t nat -X")
            .map(drop),
        Contender::Yardstick => vm
            .guest_ok(
                "p=$(cat /tmp/yardstick.pid); kill $p\n\
                 for i in $(seq 100); do kill -0 $p 2>/dev/null || exit 0; sleep 0.1; done; exit 1",
            )
            .map(drop),
    }
}

/// (protocol, VIP port, backend port) of every service, each with backend 0 alone.
const SERVICES: [(&str, u16, u16); 3] = [
    ("tcp", IPERF_PORT, IPERF_PORT),
    ("udp", IPERF_PORT, IPERF_PORT),
    ("tcp", VIP_PORT, BACKEND_PORT),
];

/// The nat table kube-proxy (iptables mode) writes for [`SERVICES`], ClusterIP services
/// with one endpoint each (the same writer as the netns bench's).
fn kube_proxy_rules(vip: Ipv4Addr, be: Ipv4Addr) -> String {
    let endpoint = [be.to_string()];
    let names: Vec<String> = SERVICES
        .iter()
        .map(|(proto, port, _)| format!("{}{port}", proto.to_uppercase()))
        .collect();
    let services: Vec<KubeService<'_>> = SERVICES
        .iter()
        .zip(&names)
        .map(|(&(proto, port, bport), name)| (name.as_str(), proto, port, bport, &endpoint[..]))
        .collect();
    kube_proxy_nat(&vip.to_string(), &services)
}

/// What loads the path during a measured run.
enum Load {
    Idle,
    /// iperf3 in the client namespace with these arguments.
    Iperf(Vec<String>),
    /// The generator: UDP to `dst`:[`IPERF_PORT`] at `pps`.
    Udp {
        dst: Ipv4Addr,
        pps: u64,
    },
}

/// One measured run: iperf3's JSON (Null without iperf3), CPU and packet rates over the
/// window, and every hop's counters over the whole run.
struct Run {
    iperf: serde_json::Value,
    cpu: Cpu,
    /// The client tap's tx packets per second (what the host put in qemu's queue).
    sent_pps: f64,
    /// Backend 0's received packets per second.
    backend_pps: f64,
    hops: Vec<Hop>,
}

fn measure_contender(vm: &Vm, c: Contender, idle: &Cpu) -> Result<Figures> {
    let attach = vm.xdp_mode("eth0")?;
    let tcp_target = c.target(IPERF_PORT, IPERF_PORT);
    let tcp = measure(
        vm,
        &Load::Iperf(
            [
                "-c",
                &tcp_target.ip().to_string(),
                "-p",
                &tcp_target.port().to_string(),
                "-t",
                &DUR.to_string(),
                "-J",
                "--connect-timeout",
                "3000",
            ]
            .map(String::from)
            .to_vec(),
        ),
    )?;
    let tcp_gbps = json_f64(&tcp.iperf, &["end", "sum_received", "bits_per_second"])? / 1e9;
    let dst = match tcp_target.ip() {
        std::net::IpAddr::V4(a) => a,
        std::net::IpAddr::V6(_) => unreachable!("the targets are IPv4"),
    };
    let offered = measure(
        vm,
        &Load::Udp {
            dst,
            pps: OFFERED_PPS,
        },
    )?;
    let fixed = measure(vm, &Load::Udp { dst, pps: RATE_PPS })?;
    let per_pkt = |pct: f64, idle_pct: f64| {
        if fixed.backend_pps > 0.0 {
            (pct - idle_pct).max(0.0) / 100.0 * 1e6 / fixed.backend_pps
        } else {
            0.0
        }
    };
    let conns_per_sec = conn_rate(vm, c.target(VIP_PORT, BACKEND_PORT))?;
    let (p50_us, p99_us) = latency(vm, c.target(VIP_PORT, BACKEND_PORT))?;
    Ok(Figures {
        key: c.key(),
        label: c.label(),
        attach,
        tcp_gbps,
        sent_pps: offered.sent_pps,
        backend_pps: offered.backend_pps,
        offered_cpu: offered.cpu,
        offered_hops: offered.hops,
        fixed_backend_pps: fixed.backend_pps,
        fixed_cpu: fixed.cpu,
        guest_us_per_pkt: per_pkt(fixed.cpu.guest_busy_pct, idle.guest_busy_pct),
        vcpu_us_per_pkt: per_pkt(fixed.cpu.vcpu_thread_pct, idle.vcpu_thread_pct),
        qemu_us_per_pkt: per_pkt(fixed.cpu.qemu_total_pct, idle.qemu_total_pct),
        conns_per_sec,
        p50_us,
        p99_us,
    })
}

/// Each figure's median over `runs` (the upper one of an even count), each hop counter's
/// too; the CPU readings and the attach mode of the first run.
fn median(runs: &[Figures]) -> Figures {
    fn med(mut v: Vec<f64>) -> f64 {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    }
    let m = |get: fn(&Figures) -> f64| med(runs.iter().map(get).collect());
    let hops = (0..runs[0].offered_hops.len())
        .map(|h| {
            let hm = |get: fn(&Hop) -> u64| {
                med(runs
                    .iter()
                    .map(|f| get(&f.offered_hops[h]) as f64)
                    .collect()) as u64
            };
            Hop {
                hop: runs[0].offered_hops[h].hop.clone(),
                rx_packets: hm(|x| x.rx_packets),
                tx_packets: hm(|x| x.tx_packets),
                rx_dropped: hm(|x| x.rx_dropped),
                tx_dropped: hm(|x| x.tx_dropped),
                qdisc_drops: hm(|x| x.qdisc_drops),
            }
        })
        .collect();
    Figures {
        tcp_gbps: m(|f| f.tcp_gbps),
        sent_pps: m(|f| f.sent_pps),
        backend_pps: m(|f| f.backend_pps),
        offered_hops: hops,
        fixed_backend_pps: m(|f| f.fixed_backend_pps),
        guest_us_per_pkt: m(|f| f.guest_us_per_pkt),
        vcpu_us_per_pkt: m(|f| f.vcpu_us_per_pkt),
        qemu_us_per_pkt: m(|f| f.qemu_us_per_pkt),
        conns_per_sec: m(|f| f.conns_per_sec),
        p50_us: m(|f| f.p50_us),
        p99_us: m(|f| f.p99_us),
        ..runs[0].clone()
    }
}

/// Connections/s for [`TCP_SECS`]: connect, one request and answer, close.
fn conn_rate(vm: &Vm, to: SocketAddr) -> Result<f64> {
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < Duration::from_secs(TCP_SECS) {
        let mut c = TcpConn::connect(vm.client_ns(), to)?;
        c.ask()?;
        c.close();
        n += 1;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

/// p50 and p99 of request/answer round trips on one connection for [`TCP_SECS`], in µs.
fn latency(vm: &Vm, to: SocketAddr) -> Result<(f64, f64)> {
    let mut c = TcpConn::connect(vm.client_ns(), to)?;
    let start = Instant::now();
    let mut rtts = Vec::new();
    while start.elapsed() < Duration::from_secs(TCP_SECS) {
        let t = Instant::now();
        c.ask()?;
        rtts.push(t.elapsed().as_secs_f64() * 1e6);
    }
    c.close();
    rtts.sort_by(f64::total_cmp);
    let at = |q: f64| rtts[((rtts.len() - 1) as f64 * q).round() as usize];
    Ok((at(0.50), at(0.99)))
}

/// A link's counters from `ip -j -s link show dev X`.
#[derive(Debug, Default, PartialEq, Eq)]
struct LinkStats {
    rx_packets: u64,
    tx_packets: u64,
    rx_dropped: u64,
    tx_dropped: u64,
}

fn parse_link(json: &str) -> Option<LinkStats> {
    let v: serde_json::Value = serde_json::from_str(json).ok()?;
    let s = v.get(0)?.get("stats64")?;
    let n = |dir: &str, f: &str| s.get(dir)?.get(f)?.as_u64();
    Some(LinkStats {
        rx_packets: n("rx", "packets")?,
        tx_packets: n("tx", "packets")?,
        rx_dropped: n("rx", "dropped")?,
        tx_dropped: n("tx", "dropped")?,
    })
}

/// The root qdisc's drops from `tc -j -s qdisc show dev X` (mq's root sums its children).
fn parse_qdisc_drops(json: &str) -> Option<u64> {
    let v: serde_json::Value = serde_json::from_str(json).ok()?;
    v.as_array()?
        .iter()
        .filter(|q| q.get("root").and_then(|r| r.as_bool()) == Some(true))
        .map(|q| q.get("drops").and_then(|d| d.as_u64()))
        .sum()
}

fn host_link(ns: &Netns, dev: &str) -> Result<LinkStats> {
    let out = ns.exec("ip", &["-j", "-s", "link", "show", "dev", dev])?;
    parse_link(&out).with_context(|| format!("`ip -j -s link show dev {dev}`: {out}"))
}

fn host_hop(name: &str, ns: &Netns, dev: &str) -> Result<Hop> {
    let l = host_link(ns, dev)?;
    let q = ns.exec("tc", &["-j", "-s", "qdisc", "show", "dev", dev])?;
    Ok(Hop {
        hop: name.to_owned(),
        rx_packets: l.rx_packets,
        tx_packets: l.tx_packets,
        rx_dropped: l.rx_dropped,
        tx_dropped: l.tx_dropped,
        qdisc_drops: parse_qdisc_drops(&q)
            .with_context(|| format!("`tc -j -s qdisc show dev {dev}`: {q}"))?,
    })
}

/// Every hop's counters, in [`HOPS`]' order (one guest command for both guest NICs).
fn hops(vm: &Vm) -> Result<Vec<Hop>> {
    let [(cns, ctap), (sns, stap)] = vm.host_taps();
    let out = vm.guest_ok(
        "for d in eth0 eth1; do ip -j -s link show dev $d; echo; \
         tc -j -s qdisc show dev $d; echo; done",
    )?;
    let lines: Vec<&str> = out.lines().filter(|l| l.starts_with('[')).collect();
    if lines.len() != 4 {
        bail!("the guest's ip and tc counters: {out}");
    }
    let mut guest = Vec::new();
    for (i, pair) in lines.chunks(2).enumerate() {
        let l = parse_link(pair[0]).with_context(|| format!("guest ip -j -s link: {out}"))?;
        let q = parse_qdisc_drops(pair[1]).with_context(|| format!("guest tc -j: {out}"))?;
        guest.push(Hop {
            hop: HOPS[1 + i].to_owned(),
            rx_packets: l.rx_packets,
            tx_packets: l.tx_packets,
            rx_dropped: l.rx_dropped,
            tx_dropped: l.tx_dropped,
            qdisc_drops: q,
        });
    }
    let mut all = vec![host_hop(HOPS[0], cns, ctap)?];
    all.append(&mut guest);
    all.push(host_hop(HOPS[3], sns, stap)?);
    Ok(all)
}

/// The counters read at each end of the measured window.
struct Sample {
    guest: (u64, u64),
    qemu: (u64, u64),
    /// The client tap's tx packets.
    sent: u64,
    /// Backend 0's eth0 rx packets.
    backend_rx: u64,
    at: Instant,
}

fn sample(vm: &Vm) -> Result<Sample> {
    let [(cns, ctap), _] = vm.host_taps();
    let tap = host_link(cns, ctap)?;
    let be = host_link(vm.backend_ns(0), "eth0")?;
    let at = Instant::now();
    let qemu = qemu_ticks(vm);
    let guest = guest_stat(vm)?;
    Ok(Sample {
        guest,
        qemu,
        sent: tap.tx_packets,
        backend_rx: be.rx_packets,
        at,
    })
}

/// The generator ([`crate::generator`]): trafgen in the client namespace writes `pps`
/// UDP packets/s of [`UDP_LEN`] payload bytes to `dst`:[`IPERF_PORT`] straight into eth0's
/// tap (addressed to the guest's MAC), cycling over [`GEN_FLOWS`] source ports. It
/// bypasses the tap's qdisc and sends a frame the full tap refuses again (each refusal
/// counts as a tx drop of the tap), so the tap stays full at any rate above what qemu
/// takes: closed loop. (Through the qdisc the load would be open loop, but then the tap
/// dropped most frames even at 8000 pps with the guest three-quarters idle, trafgen 0.6.8
/// and qemu 7.2: that measures the tap, not the balancer.)
fn generator(vm: &Vm, dst: Ipv4Addr, pps: u64) -> Result<Running> {
    let [(ns, tap), _] = vm.host_taps();
    let src_mac = host_mac(ns, tap)?;
    let mut flood = UdpFlood::small(
        Some(ns.name()),
        tap,
        src_mac,
        Vm::guest_mac(0),
        vm::client_addr(),
        dst,
        IPERF_PORT,
        GEN_FLOWS,
        Duration::from_secs(DUR),
    );
    flood.first_src_port = GEN_SPORT;
    flood.payload = UDP_LEN as usize;
    flood.rate_pps = Some(pps);
    flood.start()
}

/// A host interface's MAC address.
fn host_mac(ns: &Netns, dev: &str) -> Result<[u8; 6]> {
    let out = ns.exec("ip", &["-j", "link", "show", "dev", dev])?;
    parse_mac(&out).with_context(|| format!("no MAC address of {dev} in `{out}`"))
}

fn parse_mac(ip_json: &str) -> Option<[u8; 6]> {
    let v: serde_json::Value = serde_json::from_str(ip_json).ok()?;
    let text = v.get(0)?.get("address")?.as_str()?;
    let bytes: Vec<u8> = text
        .split(':')
        .map(|h| u8::from_str_radix(h, 16).ok())
        .collect::<Option<_>>()?;
    bytes.try_into().ok()
}

fn trafgen_version() -> String {
    std::process::Command::new("trafgen")
        .arg("-v")
        .output()
        .ok()
        .and_then(|o| {
            // "trafgen 0.6.8 (Flutternozzle), Git id: (none)": the name and the version.
            let text = String::from_utf8_lossy(&o.stdout).into_owned();
            let words: Vec<&str> = text.split_whitespace().take(2).collect();
            (words.len() == 2).then(|| words.join(" "))
        })
        .unwrap_or_else(|| "trafgen".into())
}

/// One run of `DUR` seconds under `load`; counters read from second 2 to second `DUR - 2`.
fn measure(vm: &Vm, load: &Load) -> Result<Run> {
    measure_once(vm, load).or_else(|e| {
        // iperf3 can hang when its control messages are lost on a saturated path.
        eprintln!("bench vm: {e:#}; once more");
        measure_once(vm, load)
    })
}

/// [`measure`] without the retry. A fresh iperf3 server for every iperf3 run (`-1`: one
/// test), so a test left hanging cannot keep it busy.
fn measure_once(vm: &Vm, load: &Load) -> Result<Run> {
    let hops0 = hops(vm)?;
    let _server = match load {
        Load::Iperf(_) => Some(iperf_server(vm)?),
        _ => None,
    };
    let started = Instant::now();
    let mut iperf_out = None;
    let mut gen_run = None;
    let mut proc = match load {
        Load::Idle => None,
        Load::Iperf(args) => {
            let mut cmd = vm.client_ns().cmd("iperf3");
            cmd.args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null());
            let mut child = die_with_parent(&mut cmd)
                .spawn()
                .context("cannot run iperf3")?;
            let stdout = child.stdout.take();
            iperf_out = Some(thread::spawn(move || {
                let mut s = String::new();
                if let Some(mut o) = stdout {
                    let _ = std::io::Read::read_to_string(&mut o, &mut s);
                }
                s
            }));
            Some(Tracked::new("iperf3 -c", child))
        }
        Load::Udp { dst, pps } => {
            gen_run = Some(generator(vm, *dst, *pps)?);
            None
        }
    };
    thread::sleep(Duration::from_secs(2));
    let s0 = sample(vm)?;
    thread::sleep(Duration::from_secs(DUR - 4));
    let s1 = sample(vm)?;
    if let Some(g) = gen_run {
        g.wait_duration();
        g.finish().context("the generator")?;
    }
    if let Some(p) = proc.as_mut() {
        let deadline = started + Duration::from_secs(DUR + 20);
        while p.exited().is_none() {
            if Instant::now() >= deadline {
                bail!("{} did not finish within {} s", p.name(), DUR + 20);
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
    let iperf = match iperf_out {
        Some(reader) => {
            let text = reader.join().unwrap_or_default();
            serde_json::from_str(&text).context("iperf3's JSON report")?
        }
        None => serde_json::Value::Null,
    };
    if let Some(e) = iperf.get("error") {
        bail!("iperf3: {e}");
    }
    let hops1 = hops(vm)?;
    let window = s1.at.duration_since(s0.at).as_secs_f64();
    let (busy, total) = (s1.guest.0 - s0.guest.0, s1.guest.1 - s0.guest.1);
    let cpu = Cpu {
        guest_busy_pct: if total > 0 {
            100.0 * busy as f64 / total as f64
        } else {
            0.0
        },
        vcpu_thread_pct: 100.0 * (s1.qemu.0 - s0.qemu.0) as f64 / TICKS_PER_S / window,
        qemu_total_pct: 100.0 * (s1.qemu.1 - s0.qemu.1) as f64 / TICKS_PER_S / window,
    };
    Ok(Run {
        iperf,
        cpu,
        sent_pps: (s1.sent - s0.sent) as f64 / window,
        backend_pps: (s1.backend_rx - s0.backend_rx) as f64 / window,
        hops: hops1.iter().zip(&hops0).map(|(a, b)| a.minus(b)).collect(),
    })
}

/// The guest's (busy, total) ticks from its /proc/stat.
fn guest_stat(vm: &Vm) -> Result<(u64, u64)> {
    let line = vm.guest_ok("head -1 /proc/stat")?;
    parse_stat(&line).context("the guest's /proc/stat")
}

/// (busy, total) of a `cpu  user nice system idle iowait irq softirq steal ...` line.
fn parse_stat(line: &str) -> Option<(u64, u64)> {
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    if f.len() < 5 {
        return None;
    }
    let total: u64 = f.iter().take(8).sum();
    Some((total - f[3] - f[4], total))
}

/// qemu's (vCPU threads', all threads') utime+stime ticks.
fn qemu_ticks(vm: &Vm) -> (u64, u64) {
    let Some(pid) = vm.qemu_pid() else {
        return (0, 0);
    };
    let mut vcpu = 0;
    let mut all = 0;
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten();
    for t in tasks {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
        let Some(ticks) = thread_ticks(&stat) else {
            continue;
        };
        all += ticks;
        if comm.starts_with("CPU ") {
            vcpu += ticks; // "CPU 0/TCG" or "CPU 0/KVM" (qemu -name ...,debug-threads=on)
        }
    }
    (vcpu, all)
}

/// utime + stime (fields 14 and 15) of a /proc stat line, counted after the `)` of comm.
fn thread_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut f = rest.split_whitespace().skip(11);
    Some(f.next()?.parse::<u64>().ok()? + f.next()?.parse::<u64>().ok()?)
}

fn json_f64(v: &serde_json::Value, path: &[&str]) -> Result<f64> {
    let mut cur = v;
    for p in path {
        cur = cur
            .get(p)
            .with_context(|| format!("iperf3 report has no {}", path.join(".")))?;
    }
    cur.as_f64()
        .with_context(|| format!("iperf3 report's {} is not a number", path.join(".")))
}

/// Where a contender's offered-load run was held up: the emulated vCPU when the guest was
/// (nearly) always busy; qemu's main loop (its userspace virtio and taps) when that thread
/// was saturated, or the client's tap dropped, while the guest had time to spare; else
/// neither.
fn bottleneck(f: &Figures) -> &'static str {
    let io_pct = f.offered_cpu.qemu_total_pct - f.offered_cpu.vcpu_thread_pct;
    let tap_drops = f.offered_hops.first().map_or(0, Hop::drops);
    if f.offered_cpu.guest_busy_pct >= 90.0 {
        "guest vCPU"
    } else if io_pct >= 90.0 || tap_drops > 0 {
        "qemu main loop"
    } else {
        "neither"
    }
}

fn ratio(a: f64, b: f64) -> String {
    if a.is_finite() && b.is_finite() && b > 0.0 {
        format!("{:.2}x", a / b)
    } else {
        "n/a".into()
    }
}

fn markdown(r: &Results) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# xlb on virtio-net in a qemu guest\n\n\
         Guest kernel {}, {} vCPU under **{}**, 2 virtio-net NICs on host taps ({}). Order of \
         every round: {}; medians of {} rounds. Each run {} s, counters read over the middle \
         {} s. TCP: iperf3 from the client namespace through the VIP to one backend. UDP: \
         {} on the host writes {}-byte datagrams ({} flows) into the client's tap at up to \
         {} pps, past the qdisc, sending a frame the full tap refuses again (closed loop: \
         \"sent pps\" is what the tap took, \"pps at backend\" what reached the backend's \
         NIC). Per-packet \
         CPU is at a fixed {} pps, net of the idle guest (guest busy {:.0}%, vCPU thread \
         {:.0}%, qemu {:.0}%); guest µs/pkt is also guest cores per Mpps.\n",
        r.guest_kernel,
        r.vcpus,
        r.accel,
        r.nic,
        r.order.join(", "),
        r.runs,
        r.run_secs,
        r.cpu_window_secs,
        r.generator,
        r.udp_payload_bytes,
        r.udp_flows,
        r.offered_pps,
        r.fixed_rate_pps,
        r.idle.guest_busy_pct,
        r.idle.vcpu_thread_pct,
        r.idle.qemu_total_pct
    );
    if r.accel == "tcg" {
        s.push_str(
            "The guest CPU is emulated (TCG): absolute figures are the emulator's, 50-100x \
             below a real core. Compare only the ratios between contenders in this run.\n\n",
        );
    }
    s.push_str(
        "| contender | attach | TCP Gbit/s | sent pps (tap) | pps at backend | guest busy % | \
         vCPU thread % | qemu other threads % | bottleneck | guest µs/pkt | vCPU thread \
         µs/pkt | qemu µs/pkt | conn/s | p50 µs | p99 µs |\n\
         | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | \
         ---: | ---: | ---: |\n",
    );
    for f in &r.balancers {
        let c = &f.offered_cpu;
        let _ = writeln!(
            s,
            "| {} | {} | {:.3} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {} | {:.1} | {:.1} | \
             {:.1} | {:.0} | {:.0} | {:.0} |",
            f.label,
            f.attach,
            f.tcp_gbps,
            f.sent_pps,
            f.backend_pps,
            c.guest_busy_pct,
            c.vcpu_thread_pct,
            c.qemu_total_pct - c.vcpu_thread_pct,
            bottleneck(f),
            f.guest_us_per_pkt,
            f.vcpu_us_per_pkt,
            f.qemu_us_per_pkt,
            f.conns_per_sec,
            f.p50_us,
            f.p99_us
        );
    }
    s.push_str(
        "\nDrops on each hop over the generator's run at the top rate (`ip -s link` rx \
         dropped / tx dropped / root qdisc drops of `tc -s qdisc`; medians). The client \
         tap's tx drops are the generator's frames the tap refused because qemu had not \
         taken the earlier ones yet (each sent again, so one frame may count many times); \
         the guest's drops are frames its driver or its stack could not take.\n\n| contender |",
    );
    for h in HOPS {
        let _ = write!(s, " {h} |");
    }
    s.push_str("\n| --- |");
    for _ in HOPS {
        s.push_str(" ---: |");
    }
    s.push('\n');
    for f in &r.balancers {
        let _ = write!(s, "| {} |", f.label);
        for h in &f.offered_hops {
            let _ = write!(
                s,
                " {} / {} / {} |",
                h.rx_dropped, h.tx_dropped, h.qdisc_drops
            );
        }
        s.push('\n');
    }
    let get = |k: &str| r.balancers.iter().find(|f| f.key == k);
    if let Some(x) = get("xlb_native") {
        for other in ["iptables_dnat", "xlb_skb"] {
            let Some(o) = get(other) else { continue };
            let _ = writeln!(
                s,
                "\nxlb native vs {} (above 1x: xlb native ahead): pps at backend {}, guest \
                 CPU per packet {}, vCPU thread per packet {}, qemu per packet {}, TCP {}, \
                 conn/s {}, p50 {}, p99 {}.",
                o.label,
                ratio(x.backend_pps, o.backend_pps),
                ratio(o.guest_us_per_pkt, x.guest_us_per_pkt),
                ratio(o.vcpu_us_per_pkt, x.vcpu_us_per_pkt),
                ratio(o.qemu_us_per_pkt, x.qemu_us_per_pkt),
                ratio(x.tcp_gbps, o.tcp_gbps),
                ratio(x.conns_per_sec, o.conns_per_sec),
                ratio(o.p50_us, x.p50_us),
                ratio(o.p99_us, x.p99_us)
            );
        }
    }
    s
}

/// vm.png: one bar per contender in each of six panels.
fn chart(r: &Results, path: &Path) -> Result<()> {
    type Get = fn(&Figures) -> f64;
    let panels: [(&str, Get); 6] = [
        ("UDP pps at the backend, higher is better", |f| {
            f.backend_pps
        }),
        ("guest CPU µs per packet, lower is better", |f| {
            f.guest_us_per_pkt
        }),
        ("qemu host CPU µs per packet, lower is better", |f| {
            f.qemu_us_per_pkt
        }),
        ("TCP Gbit/s, higher is better", |f| f.tcp_gbps),
        ("new connections/s, higher is better", |f| f.conns_per_sec),
        ("p99 round trip µs, lower is better", |f| f.p99_us),
    ];
    let short = |k: &str| {
        Contender::ALL
            .into_iter()
            .find(|c| c.key() == k)
            .map_or("?", Contender::short)
    };
    let data: Vec<charts::Panel<'_>> = panels
        .iter()
        .map(|(title, get)| {
            let bars = r
                .balancers
                .iter()
                .map(|f| (short(f.key), Some(get(f))))
                .collect();
            (*title, bars)
        })
        .collect();
    let title = format!(
        "xlb on virtio-net in a qemu guest ({}, 1 vCPU; ratios only)",
        r.accel
    );
    charts::panels(path, &title, (2, 3), &data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_busy_and_total_from_proc_stat() {
        let line = "cpu  100 0 50 800 10 5 35 0 0 0\n";
        assert_eq!(parse_stat(line), Some((190, 1000)));
        assert_eq!(parse_stat("cpu x"), None);
    }

    #[test]
    fn reads_thread_ticks_after_the_comm() {
        let stat = "42 (CPU 0/TCG) S 1 1 1 0 -1 0 0 0 0 0 700 300 0 0 20 0";
        assert_eq!(thread_ticks(stat), Some(1000));
    }

    #[test]
    fn reads_link_and_qdisc_counters() {
        let link = r#"[{"ifindex":3,"ifname":"eth0","stats64":{"rx":{"bytes":9,"packets":7,"errors":0,"dropped":2,"over_errors":0,"multicast":0},"tx":{"bytes":9,"packets":5,"errors":0,"dropped":1,"carrier_errors":0,"collisions":0}}}]"#;
        assert_eq!(
            parse_link(link),
            Some(LinkStats {
                rx_packets: 7,
                tx_packets: 5,
                rx_dropped: 2,
                tx_dropped: 1
            })
        );
        assert_eq!(parse_link("[]"), None);
        // mq's root line sums its children: only the root counts.
        let tc = r#"[{"kind":"mq","handle":"0:","root":true,"drops":4},{"kind":"fq_codel","handle":"0:","parent":":1","drops":3},{"kind":"fq_codel","handle":"0:","parent":":2","drops":1}]"#;
        assert_eq!(parse_qdisc_drops(tc), Some(4));
        assert_eq!(parse_qdisc_drops("not json"), None);
    }

    #[test]
    fn hop_differences_do_not_underflow() {
        let a = Hop {
            hop: "x".into(),
            rx_packets: 10,
            tx_dropped: 3,
            ..Hop::default()
        };
        let b = Hop {
            rx_packets: 4,
            tx_dropped: 5,
            ..a.clone()
        };
        let d = a.minus(&b);
        assert_eq!((d.rx_packets, d.tx_dropped, d.drops()), (6, 0, 0));
    }

    #[test]
    fn reads_a_mac_address() {
        let j = r#"[{"ifindex":7,"ifname":"tap0","address":"9e:ae:2b:7a:2c:b3"}]"#;
        assert_eq!(parse_mac(j), Some([0x9e, 0xae, 0x2b, 0x7a, 0x2c, 0xb3]));
        assert_eq!(parse_mac(r#"[{"address":"9e:ae"}]"#), None);
    }

    #[test]
    fn kube_proxy_rules_dnat_both_protocols() {
        let r = kube_proxy_rules(VIP, Ipv4Addr::new(198, 19, 200, 10));
        assert!(r.contains("-d 198.18.0.10/32 -p udp -m udp --dport 5201 -j KUBE-SVC-UDP5201"));
        assert!(r.contains("-p tcp -m tcp --dport 80 -j KUBE-SVC-TCP80"));
        assert!(r.contains("DNAT --to-destination 198.19.200.10:5201"));
        assert!(r.contains("DNAT --to-destination 198.19.200.10:8080"));
        assert!(r.ends_with("COMMIT\n"));
    }
}

//! `xlb-bench vm` (`cargo xtask bench vm`): balancers on a real NIC driver. In one qemu guest
//! of the VM testbed (two virtio-net NICs), in turn: xlb in native XDP mode, xlb in skb
//! (generic) mode and iptables DNAT as kube-proxy writes it; iperf3 from the client
//! namespace through the VIP to backend 0. Figures per balancer: TCP Gbit/s, small-packet
//! UDP pps reaching the backend, and at a fixed UDP rate the guest's CPU per packet (from
//! the guest's /proc/stat) and the host CPU of qemu's vCPU thread per packet, both net of
//! the idle guest's. Under TCG only ratios within one run mean anything.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Stdio;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use serde::Serialize;
use xlb_testbed::vm::{self, Vm};
use xlb_testbed::{Tracked, VIP, die_with_parent};

/// Seconds of every iperf3 run; CPU is read over the middle `DUR - 4` seconds.
const DUR: u64 = 8;
/// The fixed UDP load, below every balancer's saturation point under TCG.
const RATE_PPS: u64 = 8000;
/// UDP payload bytes (18: the smallest frames, 60 bytes on the wire).
const UDP_LEN: u64 = 18;
const IPERF_PORT: u16 = 5201;
/// USER_HZ of /proc/stat and /proc/<pid>/task/<tid>/stat (host and guest).
const TICKS_PER_S: f64 = 100.0;

#[derive(Debug, Clone, Copy)]
enum Balancer {
    XlbNative,
    XlbSkb,
    IptablesDnat,
}

impl Balancer {
    fn key(self) -> &'static str {
        match self {
            Balancer::XlbNative => "xlb_native",
            Balancer::XlbSkb => "xlb_skb",
            Balancer::IptablesDnat => "iptables_dnat",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Balancer::XlbNative => "xlb native XDP (xdpdrv)",
            Balancer::XlbSkb => "xlb skb XDP (xdpgeneric)",
            Balancer::IptablesDnat => "iptables DNAT (kube-proxy)",
        }
    }
}

/// CPU over one measured window: the guest's busy fraction and qemu's vCPU thread's.
#[derive(Debug, Clone, Copy, Default, Serialize)]
struct Cpu {
    guest_busy_pct: f64,
    vcpu_thread_pct: f64,
    qemu_total_pct: f64,
}

#[derive(Debug, Serialize)]
struct Figures {
    key: &'static str,
    label: &'static str,
    /// `ip link`'s attach mode on eth0 while measured (xdp, xdpgeneric, none).
    attach: String,
    tcp_gbps: f64,
    udp_max_pps: f64,
    udp_max_cpu: Cpu,
    udp_fixed_pps: f64,
    udp_fixed_cpu: Cpu,
    /// Guest CPU µs per packet at the fixed rate, net of the idle guest's.
    guest_us_per_pkt: f64,
    /// qemu vCPU-thread µs per packet at the fixed rate, net of idle.
    vcpu_us_per_pkt: f64,
}

#[derive(Debug, Serialize)]
struct Results {
    accel: String,
    guest_kernel: String,
    vcpus: u32,
    nic: &'static str,
    run_secs: u64,
    cpu_window_secs: u64,
    fixed_rate_pps: u64,
    udp_payload_bytes: u64,
    idle: Cpu,
    balancers: Vec<Figures>,
}

pub fn run(out: &Path) -> Result<()> {
    if let Some(why) = vm::unavailable() {
        bail!("the VM benchmark cannot run here: {why}");
    }
    let vm = Vm::boot(1)?;
    eprintln!(
        "bench vm: guest up in {:.1} s ({})",
        vm.boot_time().as_secs_f64(),
        vm.accel().name()
    );
    let _server = iperf_server(&vm)?;
    let kernel = vm.guest_ok("uname -r")?.trim().to_owned();
    eprintln!("bench vm: idle guest ...");
    let idle = measure(&vm, None)?.1;
    eprintln!("bench vm:   {idle:?}");
    let mut balancers = Vec::new();
    for b in [
        Balancer::XlbNative,
        Balancer::XlbSkb,
        Balancer::IptablesDnat,
    ] {
        eprintln!("bench vm: {} ...", b.label());
        start(&vm, b)?;
        let f = measure_balancer(&vm, b, &idle);
        stop(&vm, b)?;
        let f = f?;
        eprintln!("bench vm:   {f:?}");
        balancers.push(f);
    }
    let results = Results {
        accel: vm.accel().name().to_owned(),
        guest_kernel: kernel,
        vcpus: 1,
        nic: "virtio-net (qemu userspace, no vhost)",
        run_secs: DUR,
        cpu_window_secs: DUR - 4,
        fixed_rate_pps: RATE_PPS,
        udp_payload_bytes: UDP_LEN,
        idle,
        balancers,
    };
    drop(vm);
    std::fs::create_dir_all(out)?;
    std::fs::write(
        out.join("vm.json"),
        serde_json::to_string_pretty(&results)? + "\n",
    )?;
    let md = markdown(&results);
    std::fs::write(out.join("vm.md"), &md)?;
    println!("{md}");
    eprintln!("bench vm: wrote vm.json and vm.md in {}", out.display());
    Ok(())
}

fn backend() -> Ipv4Addr {
    vm::backend_addr(0)
}

fn iperf_server(vm: &Vm) -> Result<Tracked> {
    let mut cmd = vm.backend_ns(0).cmd("iperf3");
    cmd.args(["-s", "-p", &IPERF_PORT.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let child = die_with_parent(&mut cmd)
        .spawn()
        .context("cannot run iperf3 (run `cargo xtask setup`)")?;
    thread::sleep(Duration::from_millis(500));
    Ok(Tracked::new("iperf3 -s", child))
}

fn start(vm: &Vm, b: Balancer) -> Result<()> {
    match b {
        Balancer::XlbNative | Balancer::XlbSkb => {
            let xlb = vm::guest_bin("xlb")?;
            let mode = if matches!(b, Balancer::XlbNative) {
                "native"
            } else {
                "skb"
            };
            let mut cli = String::new();
            for proto in ["tcp", "udp"] {
                let svc = format!("{VIP}:{IPERF_PORT}/{proto}");
                writeln!(cli, "{xlb} service add {svc}")?;
                writeln!(cli, "{xlb} backend add {svc} {}:{IPERF_PORT}", backend())?;
            }
            vm.start_xlbd(mode, &cli).map(drop)
        }
        Balancer::IptablesDnat => vm
            .guest_ok(&format!(
                "iptables-restore <<'EOF'\n{}EOF\n",
                kube_proxy_rules(VIP, backend(), IPERF_PORT)
            ))
            .map(drop),
    }
}

fn stop(vm: &Vm, b: Balancer) -> Result<()> {
    match b {
        Balancer::XlbNative | Balancer::XlbSkb => vm.stop_xlbd(),
        Balancer::IptablesDnat => vm
            .guest_ok("iptables -t nat -F && iptables -t nat -X")
            .map(drop),
    }
}

/// The nat table kube-proxy (iptables mode) writes for a ClusterIP service with one
/// endpoint, on TCP and UDP: the same chains and jumps, so the same per-packet path.
fn kube_proxy_rules(vip: Ipv4Addr, be: Ipv4Addr, port: u16) -> String {
    let mut chains = String::from(
        "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
         :POSTROUTING ACCEPT [0:0]\n:KUBE-SERVICES - [0:0]\n:KUBE-POSTROUTING - [0:0]\n\
         :KUBE-MARK-MASQ - [0:0]\n",
    );
    let mut rules = String::from(
        "-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
         -A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
         -A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING\n\
         -A KUBE-MARK-MASQ -j MARK --or-mark 0x4000\n\
         -A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN\n\
         -A KUBE-POSTROUTING -j MARK --xor-mark 0x4000\n\
         -A KUBE-POSTROUTING -j MASQUERADE --random-fully\n",
    );
    for proto in ["tcp", "udp"] {
        let p = proto.to_uppercase();
        let _ = writeln!(chains, ":KUBE-SVC-{p} - [0:0]\n:KUBE-SEP-{p}0 - [0:0]");
        let _ = writeln!(
            rules,
            "-A KUBE-SERVICES -d {vip}/32 -p {proto} -m {proto} --dport {port} -j KUBE-SVC-{p}\n\
             -A KUBE-SVC-{p} -j KUBE-SEP-{p}0\n\
             -A KUBE-SEP-{p}0 -s {be}/32 -j KUBE-MARK-MASQ\n\
             -A KUBE-SEP-{p}0 -p {proto} -m {proto} -j DNAT --to-destination {be}:{port}"
        );
    }
    format!("{chains}{rules}COMMIT\n")
}

fn measure_balancer(vm: &Vm, b: Balancer, idle: &Cpu) -> Result<Figures> {
    let attach = vm.xdp_mode("eth0")?;
    let dur = DUR.to_string();
    let target = VIP.to_string();
    let port = IPERF_PORT.to_string();
    let base = ["-c", &target, "-p", &port, "-t", &dur, "-J"];
    let (tcp, _) = measure(vm, Some(&base))?;
    let len = UDP_LEN.to_string();
    let fixed_bps = (RATE_PPS * UDP_LEN * 8).to_string();
    let udp_args = |rate: &'static str| [&base[..], &["-u", "-l", &len, "-b", rate]].concat();
    let (udp_max, udp_max_cpu) = measure(vm, Some(&udp_args("0")))?;
    let mut fixed = udp_args("0");
    *fixed.last_mut().expect("-b has a value") = &fixed_bps;
    let (udp_fixed, udp_fixed_cpu) = measure(vm, Some(&fixed))?;
    let tcp_gbps = json_f64(&tcp, &["end", "sum_received", "bits_per_second"])? / 1e9;
    let udp_max_pps = udp_pps(&udp_max)?;
    let udp_fixed_pps = udp_pps(&udp_fixed)?;
    let per_pkt = |pct: f64, idle_pct: f64| {
        if udp_fixed_pps > 0.0 {
            (pct - idle_pct).max(0.0) / 100.0 * 1e6 / udp_fixed_pps
        } else {
            0.0
        }
    };
    Ok(Figures {
        key: b.key(),
        label: b.label(),
        attach,
        tcp_gbps,
        udp_max_pps,
        udp_max_cpu,
        udp_fixed_pps,
        udp_fixed_cpu,
        guest_us_per_pkt: per_pkt(udp_fixed_cpu.guest_busy_pct, idle.guest_busy_pct),
        vcpu_us_per_pkt: per_pkt(udp_fixed_cpu.vcpu_thread_pct, idle.vcpu_thread_pct),
    })
}

/// One run of `DUR` seconds: iperf3 with `args` in the client namespace (or nothing, for
/// the idle baseline), CPU read from second 2 to second `DUR - 2`. Returns iperf3's JSON.
fn measure(vm: &Vm, args: Option<&[&str]>) -> Result<(serde_json::Value, Cpu)> {
    let client = match args {
        Some(a) => {
            let mut cmd = vm.client_ns().cmd("iperf3");
            cmd.args(a)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null());
            let child = die_with_parent(&mut cmd)
                .spawn()
                .context("cannot run iperf3")?;
            Some(child)
        }
        None => None,
    };
    let started = Instant::now();
    thread::sleep(Duration::from_secs(2));
    let (g0, q0) = (guest_stat(vm)?, qemu_ticks(vm));
    let t0 = Instant::now();
    thread::sleep(Duration::from_secs(DUR - 4));
    let (g1, q1) = (guest_stat(vm)?, qemu_ticks(vm));
    let window = t0.elapsed().as_secs_f64();
    let json = match client {
        Some(mut child) => {
            let stdout = child.stdout.take();
            let reader = thread::spawn(move || {
                let mut s = String::new();
                if let Some(mut o) = stdout {
                    let _ = std::io::Read::read_to_string(&mut o, &mut s);
                }
                s
            });
            let mut tracked = Tracked::new("iperf3 -c", child);
            let deadline = started + Duration::from_secs(DUR + 20);
            while tracked.exited().is_none() {
                if Instant::now() >= deadline {
                    bail!("iperf3 did not finish within {} s", DUR + 20);
                }
                thread::sleep(Duration::from_millis(50));
            }
            let text = reader.join().unwrap_or_default();
            serde_json::from_str(&text).context("iperf3's JSON report")?
        }
        None => serde_json::Value::Null,
    };
    if let Some(e) = json.get("error") {
        bail!("iperf3: {e}");
    }
    let (busy, total) = (g1.0 - g0.0, g1.1 - g0.1);
    let cpu = Cpu {
        guest_busy_pct: if total > 0 {
            100.0 * busy as f64 / total as f64
        } else {
            0.0
        },
        vcpu_thread_pct: 100.0 * (q1.0 - q0.0) as f64 / TICKS_PER_S / window,
        qemu_total_pct: 100.0 * (q1.1 - q0.1) as f64 / TICKS_PER_S / window,
    };
    Ok((json, cpu))
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

/// Datagrams that reached the server per second (sent minus lost).
fn udp_pps(v: &serde_json::Value) -> Result<f64> {
    let packets = json_f64(v, &["end", "sum", "packets"])?;
    let lost = json_f64(v, &["end", "sum", "lost_packets"])?;
    let secs = json_f64(v, &["end", "sum", "seconds"])?;
    Ok(if secs > 0.0 {
        (packets - lost) / secs
    } else {
        0.0
    })
}

fn markdown(r: &Results) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# xlb on virtio-net in a qemu guest\n\n\
         Guest kernel {}, {} vCPU under **{}**, 2 virtio-net NICs on host taps ({}). Each run \
         {} s; CPU read over the middle {} s. iperf3 from the client namespace through the VIP \
         to one backend; UDP payload {} bytes. Per-packet CPU is at a fixed {} pps, net of the \
         idle guest (guest busy {:.0}%, vCPU thread {:.0}%).\n",
        r.guest_kernel,
        r.vcpus,
        r.accel,
        r.nic,
        r.run_secs,
        r.cpu_window_secs,
        r.udp_payload_bytes,
        r.fixed_rate_pps,
        r.idle.guest_busy_pct,
        r.idle.vcpu_thread_pct
    );
    if r.accel == "tcg" {
        s.push_str(
            "The guest CPU is emulated (TCG): absolute figures are the emulator's, 50-100x \
             below a real core. Compare only the ratios between balancers in this run.\n\n",
        );
    }
    s.push_str(
        "| balancer | attach | TCP Gbit/s | UDP max pps at backend | qemu CPU % at UDP max | \
         guest µs/pkt | vCPU thread µs/pkt |\n| --- | --- | ---: | ---: | ---: | ---: | ---: |\n",
    );
    for f in &r.balancers {
        let _ = writeln!(
            s,
            "| {} | {} | {:.3} | {:.0} | {:.0} | {:.1} | {:.1} |",
            f.label,
            f.attach,
            f.tcp_gbps,
            f.udp_max_pps,
            f.udp_max_cpu.qemu_total_pct,
            f.guest_us_per_pkt,
            f.vcpu_us_per_pkt
        );
    }
    let get = |k: &str| r.balancers.iter().find(|f| f.key == k);
    if let (Some(x), Some(i)) = (get("xlb_native"), get("iptables_dnat")) {
        let ratio = |a: f64, b: f64| {
            if b > 0.0 {
                format!("{:.2}x", a / b)
            } else {
                "n/a".into()
            }
        };
        let _ = writeln!(
            s,
            "\nxlb native vs iptables DNAT (above 1x: xlb ahead): UDP pps {}, guest CPU per \
             packet {}, vCPU thread per packet {}, TCP {}.",
            ratio(x.udp_max_pps, i.udp_max_pps),
            ratio(i.guest_us_per_pkt, x.guest_us_per_pkt),
            ratio(i.vcpu_us_per_pkt, x.vcpu_us_per_pkt),
            ratio(x.tcp_gbps, i.tcp_gbps)
        );
    }
    s
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
    fn kube_proxy_rules_dnat_both_protocols() {
        let r = kube_proxy_rules(VIP, Ipv4Addr::new(198, 19, 200, 10), 5201);
        assert!(r.contains("-d 198.18.0.10/32 -p udp -m udp --dport 5201 -j KUBE-SVC-UDP"));
        assert!(r.contains("DNAT --to-destination 198.19.200.10:5201"));
        assert!(r.ends_with("COMMIT\n"));
    }
}

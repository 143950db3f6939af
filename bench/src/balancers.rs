//! The four balancers, each set up in the testbed's LB namespace and removed again: xlb
//! (xlbd, native XDP on every LB veth), iptables DNAT as kube-proxy programs it, HAProxy
//! `mode tcp` and nginx `stream`. Each serves the same services: VIP:80 over TCP (and UDP
//! where it can) on the three backends' port 8080, and VIP:5201 (iperf3) on backend 0 only,
//! because iperf3's control and data connections must meet on one server.
//!
//! And a reference that balances nothing: the forward-only XDP yardstick
//! (`lb-ebpf/src/yardstick.rs`) attached natively to every LB veth instead of xlb, with the
//! traffic aimed at backend 0 itself (it does no NAT), so that its run time per packet under
//! the same loads is the floor xlb's is compared with.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use xlb_testbed::{Testbed, Tracked, VIP, die_with_parent};

use crate::cpu;
use crate::per_packet::{Yardsticks, attach_forward_yardstick};

pub const VIP_PORT: u16 = 80;
pub const BACKEND_PORT: u16 = 8080;
pub const IPERF_PORT: u16 = 5201;
const LISTEN_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Xlb,
    IptablesDnat,
    Haproxy,
    Nginx,
    /// Not a balancer: the forward-only XDP yardstick, traffic aimed at backend 0.
    Yardstick,
}

pub const ALL: [Kind; 5] = [
    Kind::Xlb,
    Kind::IptablesDnat,
    Kind::Haproxy,
    Kind::Nginx,
    Kind::Yardstick,
];

impl Kind {
    /// The key in `latest.json`.
    pub fn key(self) -> &'static str {
        match self {
            Kind::Xlb => "xlb",
            Kind::IptablesDnat => "iptables_dnat",
            Kind::Haproxy => "haproxy",
            Kind::Nginx => "nginx",
            Kind::Yardstick => "xdp_forward_yardstick",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Kind::Xlb => "xlb (XDP)",
            Kind::IptablesDnat => "iptables DNAT",
            Kind::Haproxy => "HAProxy",
            Kind::Nginx => "nginx stream",
            Kind::Yardstick => "XDP forward only (no balancing)",
        }
    }

    /// HAProxy does not proxy UDP.
    pub fn has_udp(self) -> bool {
        self != Kind::Haproxy
    }

    /// An XDP program whose run-time statistics are read.
    pub fn is_xdp(self) -> bool {
        matches!(self, Kind::Xlb | Kind::Yardstick)
    }

    /// Where the loads are aimed, and the port of the TCP/UDP services: the VIP, or backend
    /// 0 itself for the yardstick (which does no NAT).
    pub fn target(self, tb: &Testbed) -> (std::net::Ipv4Addr, u16) {
        match self {
            Kind::Yardstick => (tb.backend(0).addr(), BACKEND_PORT),
            _ => (VIP, VIP_PORT),
        }
    }
}

/// A balancer running in the testbed's LB namespace; dropping it stops its processes.
/// Everything else it changed lives in the testbed's namespaces, which go with the testbed.
pub struct Running {
    procs: Vec<Tracked>,
    /// The processes whose CPU time counts as the balancer's (proxies and their workers).
    pub pids: Vec<u32>,
    /// The yardstick's object, attached in the LB namespace.
    yardstick: Option<AttachedYardstick>,
}

/// Starts `kind` in `tb`'s LB namespace; `dir` holds config files and logs.
pub fn start(kind: Kind, tb: &mut Testbed, dir: &Path) -> Result<Running> {
    let mut r = Running {
        procs: Vec::new(),
        pids: Vec::new(),
        yardstick: None,
    };
    match kind {
        Kind::Xlb => start_xlb(tb)?,
        Kind::Yardstick => r.yardstick = Some(AttachedYardstick::attach(tb)?),
        Kind::IptablesDnat => {
            let rules = dir.join("kube-proxy.rules");
            std::fs::write(&rules, kube_proxy_rules(tb))?;
            let path = rules.to_string_lossy();
            tb.lb().exec("iptables-restore", &[&path])?;
        }
        Kind::Haproxy | Kind::Nginx => {
            tb.lb()
                .ip(&["addr", "add", &format!("{VIP}/32"), "dev", "lo"])?;
            let child = if kind == Kind::Haproxy {
                let cfg = dir.join("haproxy.cfg");
                std::fs::write(&cfg, haproxy_config(tb, dir))?;
                spawn(tb, "haproxy", &["-db", "-f", &cfg.to_string_lossy()], dir)?
            } else {
                let cfg = dir.join("nginx.conf");
                std::fs::write(&cfg, nginx_config(tb, dir))?;
                let (p, c) = (dir.to_string_lossy(), cfg.to_string_lossy());
                let e = dir.join("nginx-error.log");
                spawn(
                    tb,
                    "nginx",
                    &["-p", &p, "-c", &c, "-e", &e.to_string_lossy()],
                    dir,
                )?
            };
            r.procs.push(child);
            wait_listening(tb, &mut r).map_err(|e| {
                let name = if kind == Kind::Haproxy {
                    "haproxy"
                } else {
                    "nginx"
                };
                let log = std::fs::read_to_string(dir.join(format!("{name}.log")));
                e.context(log.unwrap_or_default().trim().to_owned())
            })?;
            if kind == Kind::Nginx {
                let master = r.pids[0];
                r.pids.extend(cpu::children_of(master));
            }
        }
    }
    Ok(r)
}

fn start_xlb(tb: &mut Testbed) -> Result<()> {
    tb.start_xlbd(&[])?;
    for (proto, port, backends) in [
        ("tcp", VIP_PORT, tb.backends().len()),
        ("udp", VIP_PORT, tb.backends().len()),
        ("tcp", IPERF_PORT, 1),
    ] {
        let service = format!("{VIP}:{port}/{proto}");
        tb.xlb_ok(&["service", "add", &service])?;
        let bport = if port == IPERF_PORT {
            port
        } else {
            BACKEND_PORT
        };
        for b in &tb.backends()[..backends] {
            tb.xlb_ok(&["backend", "add", &service, &format!("{}:{bport}", b.addr())])?;
        }
    }
    Ok(())
}

/// `ip netns exec <lb> <program> args...`, tracked by pid, its output in `dir`.
fn spawn(tb: &Testbed, program: &str, args: &[&str], dir: &Path) -> Result<Tracked> {
    let log = std::fs::File::create(dir.join(format!("{program}.log")))?;
    let mut cmd = tb.lb().cmd(program);
    let child = die_with_parent(&mut cmd)
        .args(args)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("cannot run {program} (run `cargo xtask setup`)"))?;
    Ok(Tracked::new(program, child))
}

/// Waits until the proxy listens on VIP:80 and VIP:5201; records its pid.
fn wait_listening(tb: &Testbed, r: &mut Running) -> Result<()> {
    let deadline = Instant::now() + LISTEN_TIMEOUT;
    let want = [VIP_PORT, IPERF_PORT].map(|p| format!("{VIP}:{p}"));
    loop {
        let proc = r.procs.last_mut().expect("a proxy was started");
        if let Some(status) = proc.exited() {
            bail!("{} exited ({status})", proc.name());
        }
        let ss = tb.lb().exec("ss", &["-Hltn"])?;
        if want.iter().all(|w| ss.contains(w.as_str())) {
            r.pids.push(proc.id());
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("{} is not listening after {LISTEN_TIMEOUT:?}", proc.name());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.procs.clear(); // Tracked::drop stops each process
        self.yardstick = None;
    }
}

/// The yardstick attached (native XDP) to every LB veth, redirecting among them. Its
/// links are released in the LB namespace, where they were made.
struct AttachedYardstick {
    obj: Option<Yardsticks>,
    lb_ns: String,
}

impl AttachedYardstick {
    fn attach(tb: &Testbed) -> Result<AttachedYardstick> {
        let ifaces = tb.lb_ifaces();
        let obj = tb.lb().run(|| attach_forward_yardstick(&ifaces))??;
        Ok(AttachedYardstick {
            obj: Some(obj),
            lb_ns: tb.lb().name().to_owned(),
        })
    }
}

impl Drop for AttachedYardstick {
    fn drop(&mut self) {
        let obj = self.obj.take();
        let path = format!("/var/run/netns/{}", self.lb_ns);
        let _ = std::thread::scope(|s| {
            s.spawn(move || {
                if let Ok(f) = std::fs::File::open(&path) {
                    use std::os::fd::AsRawFd as _;
                    // SAFETY: setns(2) on an open namespace file; moves this thread only.
                    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } == 0 {
                        drop(obj);
                        return;
                    }
                }
                // The namespace is gone, and the veths with it: nothing left to detach
                // by interface. Leak the object rather than detach in the wrong namespace.
                std::mem::forget(obj);
            })
            .join()
        });
    }
}

/// One ClusterIP service as kube-proxy sees it: chain-name suffix, protocol, service port,
/// endpoint port, endpoint addresses.
pub type KubeService<'a> = (&'a str, &'a str, u16, u16, &'a [String]);

/// The nat table kube-proxy (iptables mode) writes for the testbed: one ClusterIP service
/// per port over the backends (iperf3's over the first alone).
pub fn kube_proxy_rules(tb: &Testbed) -> String {
    let all: Vec<String> = tb.backends().iter().map(|b| b.addr().to_string()).collect();
    kube_proxy_nat(
        &VIP.to_string(),
        &[
            ("TCPWEB", "tcp", VIP_PORT, BACKEND_PORT, &all[..]),
            ("UDPWEB", "udp", VIP_PORT, BACKEND_PORT, &all[..]),
            ("IPERF3", "tcp", IPERF_PORT, IPERF_PORT, &all[..1]),
        ],
    )
}

/// The nat table kube-proxy (iptables mode) writes for `services` at `vip`: KUBE-SERVICES
/// jumps to a KUBE-SVC chain that picks an endpoint chain (KUBE-SEP) with
/// `statistic --mode random` rules, 1/n, 1/(n-1), ..., and each KUBE-SEP DNATs to its
/// endpoint (after the hairpin masquerade mark). Conntrack keeps each connection on its
/// endpoint and reverses the NAT on replies.
pub fn kube_proxy_nat(vip: &str, services: &[KubeService<'_>]) -> String {
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
    for &(name, proto, port, bport, eps) in services {
        let svc = format!("KUBE-SVC-{name}");
        let _ = writeln!(chains, ":{svc} - [0:0]");
        let _ = writeln!(
            rules,
            "-A KUBE-SERVICES -d {vip}/32 -p {proto} -m {proto} --dport {port} -j {svc}"
        );
        for (i, ep) in eps.iter().enumerate() {
            let sep = format!("KUBE-SEP-{name}{i}");
            let _ = writeln!(chains, ":{sep} - [0:0]");
            let left = eps.len() - i;
            if left > 1 {
                let p = 1.0 / left as f64;
                let _ = writeln!(
                    rules,
                    "-A {svc} -m statistic --mode random --probability {p:.11} -j {sep}"
                );
            } else {
                let _ = writeln!(rules, "-A {svc} -j {sep}");
            }
            let _ = writeln!(rules, "-A {sep} -s {ep}/32 -j KUBE-MARK-MASQ");
            let _ = writeln!(
                rules,
                "-A {sep} -p {proto} -m {proto} -j DNAT --to-destination {ep}:{bport}"
            );
        }
    }
    format!("{chains}{rules}COMMIT\n")
}

/// HAProxy `mode tcp`, `balance roundrobin` over the three servers.
fn haproxy_config(tb: &Testbed, dir: &Path) -> String {
    let mut c = format!(
        "global\n    maxconn 9000\n    pidfile {}\n\n\
         defaults\n    mode tcp\n    timeout connect 5s\n    timeout client 60s\n    \
         timeout server 60s\n\n\
         frontend web\n    bind {VIP}:{VIP_PORT}\n    default_backend web\n\n\
         backend web\n    balance roundrobin\n",
        pid_file(dir, "haproxy").display()
    );
    for (j, b) in tb.backends().iter().enumerate() {
        let _ = writeln!(c, "    server b{j} {}:{BACKEND_PORT}", b.addr());
    }
    let _ = write!(
        c,
        "\nfrontend iperf3\n    bind {VIP}:{IPERF_PORT}\n    default_backend iperf3\n\n\
         backend iperf3\n    server b0 {}:{IPERF_PORT}\n",
        tb.backend(0).addr()
    );
    c
}

/// nginx `stream` with the same upstreams (round robin), TCP and UDP on VIP:80.
fn nginx_config(tb: &Testbed, dir: &Path) -> String {
    let servers: String = tb
        .backends()
        .iter()
        .map(|b| format!("        server {}:{BACKEND_PORT};\n", b.addr()))
        .collect();
    format!(
        "load_module /usr/lib/nginx/modules/ngx_stream_module.so;\n\
         daemon off;\nworker_processes auto;\nworker_rlimit_nofile 20000;\npid {pid};\n\
         error_log {dir}/nginx-error.log warn;\n\
         events {{\n    worker_connections 9000;\n}}\n\
         stream {{\n\
         \x20   upstream web {{\n{servers}    }}\n\
         \x20   upstream iperf3 {{\n        server {b0}:{IPERF_PORT};\n    }}\n\
         \x20   server {{\n        listen {VIP}:{VIP_PORT};\n        proxy_pass web;\n    }}\n\
         \x20   server {{\n        listen {VIP}:{VIP_PORT} udp;\n        proxy_pass web;\n        \
         proxy_responses 0;\n    }}\n\
         \x20   server {{\n        listen {VIP}:{IPERF_PORT};\n        proxy_pass iperf3;\n    }}\n\
         }}\n",
        pid = pid_file(dir, "nginx").display(),
        dir = dir.display(),
        b0 = tb.backend(0).addr(),
    )
}

fn pid_file(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.pid"))
}

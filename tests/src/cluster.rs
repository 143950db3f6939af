//! The cluster testbed (issue 13): several xlb nodes behind an ECMP router that agree.
//!
//! ```text
//!  client ns x K --veth-- [ router ns: BIRD, L4-hashed ECMP ] --veth-- node ns x N (xlbd + BIRD)
//!                               |                                          |
//!                               +------ switch ns: bridge (the backend segment) ------+
//!                                                |
//!                                          backend ns x M (the VIP on lo, ARP for it suppressed)
//! ```
//!
//! - Client k: 198.18.(10+k).2/24, the router .1 (its default gateway).
//! - Node i's front link to the router: 198.19.(150+i).0/24, the router .1, the node .2.
//! - The backend segment 198.19.200.0/24, a bridge in the switch namespace: the router .1,
//!   node i .(5+i), backend j .(10+j). Backends route everything (their DSR replies too)
//!   straight to the router, never through a node.
//! - BGP: the router (AS [`ROUTER_AS`]) peers with every node (AS [`NODE_AS`]) over the
//!   front link; it installs the VIP's paths as one ECMP route (`merge paths on`), hashed on
//!   the 5-tuple (`fib_multipath_hash_policy=1`). Each node's BIRD exports what xlbd puts
//!   in routing table [`ANNOUNCE_TABLE`] (`xlbd --announce-table`). Hold time 3 s
//!   (keepalive 1 s) and BFD at 100 ms x 3: a node that stops answering is dropped within
//!   about 0.3 s, one whose BIRD dies (TCP reset) at once.
//!
//! Each BIRD and xlbd has its own config, control socket, log and pid under the run dir;
//! they are stopped by pid, and the namespaces and run dir removed, when the [`Cluster`]
//! drops (also on panic).

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

use crate::conn::TcpConn;
use crate::daemon::bin_path;
use crate::netns::Netns;
use crate::proc::{self, Tracked, die_with_parent};
use crate::servers::{IdServer, backend_id, start_id_servers};
use crate::topology::{MAX_IFNAME, RunDir, VIP, VIP6, new_run};

/// The routing table xlbd announces into and BIRD's kernel protocol reads.
pub const ANNOUNCE_TABLE: u32 = 100;
pub const ROUTER_AS: u32 = 65000;
pub const NODE_AS: u32 = 65001;
/// The port the VIP's service and the backends' servers use (DSR keeps the port).
pub const PORT: u16 = 80;
/// BFD: intervals and multiplier, so a silent node is noticed in `BFD_MS * BFD_MULT` ms.
pub const BFD_MS: u32 = 100;
pub const BFD_MULT: u32 = 3;
/// BGP hold time (s), the fallback when BFD is not heard from at all.
pub const HOLD_S: u32 = 3;

/// The backend segment: (IPv4 third octet) and hosts.
const SEGMENT: u8 = 200;
const ROUTER_ON_SEGMENT: Ipv4Addr = Ipv4Addr::new(198, 19, SEGMENT, 1);

/// How long one CLI call may take.
const CLI_TIMEOUT: Duration = Duration::from_secs(10);

/// Backend `j`'s address on the segment.
pub fn backend_addr(j: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 19, SEGMENT, 10 + j as u8)
}

/// Node `i`'s front address (its BGP next hop at the router).
pub fn node_front(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 19, 150 + i as u8, 2)
}

fn router_front(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 19, 150 + i as u8, 1)
}

/// `2001:2:0:<group>::<host>` (groups and hosts as written, in hex).
fn v6(group: u16, host: u16) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 2, 0, group, 0, 0, 0, host)
}

/// The backend segment's IPv6 group.
const SEGMENT6: u16 = 0x200;

/// Backend `j`'s IPv6 address on the segment (2001:2:0:200::(10+j)).
pub fn backend_addr6(j: usize) -> Ipv6Addr {
    v6(SEGMENT6, 0x10 + j as u16)
}

/// Node `i`'s IPv6 front address (2001:2:0:(150+i)::2).
pub fn node_front6(i: usize) -> Ipv6Addr {
    v6(0x150 + i as u16, 2)
}

fn router_front6(i: usize) -> Ipv6Addr {
    v6(0x150 + i as u16, 1)
}

fn node_back(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 19, SEGMENT, 5 + i as u8)
}

/// A client namespace.
#[derive(Debug)]
pub struct Client {
    pub ns: Netns,
    pub addr: Ipv4Addr,
}

/// One LB node: its namespace, interfaces, and its xlbd and BIRD when running.
#[derive(Debug)]
pub struct LbNode {
    pub ns: Netns,
    pub front_if: String,
    pub back_if: String,
    xlbd: Option<Tracked>,
    bird: Option<Tracked>,
}

/// The whole cluster testbed. Dropping it stops every process it started (by pid), then
/// deletes its namespaces and its run directory.
#[derive(Debug)]
pub struct Cluster {
    threads: Vec<IdServer>,
    router_bird: Option<Tracked>,
    // Dropped in this order, after `Drop::drop`.
    pub router: Netns,
    pub switch: Netns,
    pub clients: Vec<Client>,
    pub nodes: Vec<LbNode>,
    pub backends: Vec<Netns>,
    dir: RunDir,
    short: String,
}

impl Cluster {
    /// Builds the namespaces and links and starts the router's BIRD (nodes start with
    /// [`Cluster::start_node`]).
    pub fn new(clients: usize, nodes: usize, backends: usize) -> Result<Cluster> {
        if clients > 200 || nodes > 5 || backends > 100 {
            bail!(
                "cluster of {clients} clients, {nodes} nodes, {backends} backends is outside the address plan"
            );
        }
        let (tag, short, dir) = new_run()?;
        let ns = |name: &str| Netns::create(&format!("xlbt-{tag}-{name}"));
        let router = ns("r")?;
        let switch = ns("sw")?;
        let mut c = Cluster {
            threads: Vec::new(),
            router_bird: None,
            router,
            switch,
            clients: Vec::new(),
            nodes: Vec::new(),
            backends: Vec::new(),
            dir,
            short,
        };
        for (key, value) in [
            ("net/ipv4/ip_forward", "1"),
            ("net/ipv4/fib_multipath_hash_policy", "1"),
            ("net/ipv6/fib_multipath_hash_policy", "1"),
            ("net/ipv4/conf/all/rp_filter", "0"),
            ("net/ipv4/conf/default/rp_filter", "0"),
        ] {
            c.router.sysctl(key, value)?;
        }
        c.switch
            .ip(&["link", "add", "name", "seg", "type", "bridge"])?;
        c.switch.ip(&["link", "set", "dev", "seg", "up"])?;
        let rb = c.ifname("rb", "")?;
        c.segment_port(&c.router, &rb, ROUTER_ON_SEGMENT, 1)?;
        for k in 0..clients {
            let ns = ns(&format!("c{k}"))?;
            let (rif, cif) = (
                c.ifname("c", &k.to_string())?,
                c.ifname("cp", &k.to_string())?,
            );
            let addr = Ipv4Addr::new(198, 18, 10 + k as u8, 2);
            let gw = Ipv4Addr::new(198, 18, 10 + k as u8, 1);
            veth(&c.router, &rif, &ns, &cif)?;
            c.router
                .ip(&["addr", "add", &format!("{gw}/24"), "dev", &rif])?;
            ns.ip(&["addr", "add", &format!("{addr}/24"), "dev", &cif])?;
            up(&c.router, &rif)?;
            up(&ns, &cif)?;
            ns.ip(&["route", "add", "default", "via", &gw.to_string()])?;
            let group = 0x10 + k as u16;
            addr6(&c.router, &rif, v6(group, 1))?;
            addr6(&ns, &cif, v6(group, 2))?;
            default_route6(&ns, v6(group, 1))?;
            ns.exec("ethtool", &["-K", &cif, "tx", "off", "gro", "on"])?;
            c.router
                .exec("ethtool", &["-K", &rif, "tx", "off", "gro", "on"])?;
            c.clients.push(Client { ns, addr });
        }
        for i in 0..nodes {
            let ns = ns(&format!("n{i}"))?;
            let (rif, fif) = (
                c.ifname("n", &i.to_string())?,
                c.ifname("nf", &i.to_string())?,
            );
            veth(&c.router, &rif, &ns, &fif)?;
            c.router.ip(&[
                "addr",
                "add",
                &format!("{}/24", router_front(i)),
                "dev",
                &rif,
            ])?;
            ns.ip(&["addr", "add", &format!("{}/24", node_front(i)), "dev", &fif])?;
            up(&c.router, &rif)?;
            up(&ns, &fif)?;
            // XDP redirects into the router's end need GRO (or XDP) there.
            c.router
                .exec("ethtool", &["-K", &rif, "tx", "off", "gro", "on"])?;
            ns.exec("ethtool", &["-K", &fif, "tx", "off", "gro", "on"])?;
            let bif = c.ifname("nb", &i.to_string())?;
            c.segment_port(&ns, &bif, node_back(i), 5 + i as u16)?;
            addr6(&c.router, &rif, router_front6(i))?;
            addr6(&ns, &fif, node_front6(i))?;
            default_route6(&ns, router_front6(i))?;
            ns.ip(&[
                "route",
                "add",
                "default",
                "via",
                &router_front(i).to_string(),
            ])?;
            // bpf_fib_lookup answers only where forwarding is on.
            ns.sysctl("net/ipv4/ip_forward", "1")?;
            ns.sysctl("net/ipv6/conf/all/forwarding", "1")?;
            c.nodes.push(LbNode {
                ns,
                front_if: fif,
                back_if: bif,
                xlbd: None,
                bird: None,
            });
        }
        for j in 0..backends {
            let ns = ns(&format!("b{j}"))?;
            let bif = c.ifname("bp", &j.to_string())?;
            c.segment_port(&ns, &bif, backend_addr(j), 0x10 + j as u16)?;
            // DSR: the VIP is the backend's own address, on lo; it must not answer ARP
            // for it (else it would take the VIP's traffic from the router's segment).
            for (key, value) in [
                ("net/ipv4/conf/all/arp_ignore", "1"),
                ("net/ipv4/conf/all/arp_announce", "2"),
                ("net/ipv4/conf/all/rp_filter", "0"),
                ("net/ipv4/conf/default/rp_filter", "0"),
            ] {
                ns.sysctl(key, value)?;
            }
            ns.ip(&["addr", "add", &format!("{VIP}/32"), "dev", "lo"])?;
            ns.ip(&["addr", "add", &format!("{VIP6}/128"), "dev", "lo", "nodad"])?;
            default_route6(&ns, v6(SEGMENT6, 1))?;
            ns.ip(&[
                "route",
                "add",
                "default",
                "via",
                &ROUTER_ON_SEGMENT.to_string(),
            ])?;
            c.backends.push(ns);
        }
        // After the links exist: `all` sets every existing interface.
        c.router.sysctl("net/ipv6/conf/all/forwarding", "1")?;
        c.start_router_bird()?;
        Ok(c)
    }

    /// `<prefix><idx>-<short>`, checked against IFNAMSIZ.
    fn ifname(&self, prefix: &str, idx: &str) -> Result<String> {
        let name = format!("{prefix}{idx}-{}", self.short);
        if name.len() > MAX_IFNAME {
            bail!("interface name {name} is longer than {MAX_IFNAME}");
        }
        Ok(name)
    }

    /// A veth from `ns` (named `ifname`, holding `addr`/24) to a port of the segment's
    /// bridge in the switch namespace.
    fn segment_port(&self, ns: &Netns, ifname: &str, addr: Ipv4Addr, host6: u16) -> Result<()> {
        let port = format!("s{}", &ifname[..ifname.len().min(MAX_IFNAME - 1)]);
        veth(ns, ifname, &self.switch, &port)?;
        self.switch
            .ip(&["link", "set", "dev", &port, "master", "seg"])?;
        ns.ip(&["addr", "add", &format!("{addr}/24"), "dev", ifname])?;
        addr6(ns, ifname, v6(SEGMENT6, host6))?;
        up(ns, ifname)?;
        up(&self.switch, &port)?;
        ns.exec("ethtool", &["-K", ifname, "tx", "off", "gro", "on"])?;
        // Frames XDP-redirected into a node's segment veth arrive here: GRO takes them.
        self.switch
            .exec("ethtool", &["-K", &port, "tx", "off", "gro", "on"])?;
        Ok(())
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Node `i`'s xlbd control socket.
    pub fn socket(&self, i: usize) -> PathBuf {
        self.file(&format!("n{i}-xlbd.sock"))
    }

    /// Node `i`'s xlbd log.
    pub fn xlbd_log(&self, i: usize) -> PathBuf {
        self.file(&format!("n{i}-xlbd.log"))
    }

    fn bird_conf(&self, name: &str, body: &str) -> Result<(PathBuf, PathBuf)> {
        let conf = self.file(&format!("{name}-bird.conf"));
        std::fs::write(&conf, body).with_context(|| format!("writing {}", conf.display()))?;
        Ok((conf, self.file(&format!("{name}-bird.ctl"))))
    }

    /// Starts BIRD in `ns` (foreground, so the pid is BIRD's) with its config, socket and
    /// log under the run dir.
    fn spawn_bird(&self, ns: &Netns, name: &str, body: &str) -> Result<Tracked> {
        let (conf, ctl) = self.bird_conf(name, body)?;
        let log = File::create(self.file(&format!("{name}-bird.log")))?;
        let mut cmd = ns.cmd("bird");
        cmd.arg("-f")
            .arg("-c")
            .arg(&conf)
            .arg("-s")
            .arg(&ctl)
            .arg("-P")
            .arg(self.file(&format!("{name}-bird.pid")))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        die_with_parent(&mut cmd);
        let what = proc::describe(&cmd);
        let child = cmd.spawn().with_context(|| {
            format!("cannot run `{what}` (is BIRD 2 installed? cargo xtask setup)")
        })?;
        let mut t = Tracked::new(format!("bird-{name}"), child);
        // BIRD checks its config before it forks nothing (-f): a bad one exits at once.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !ctl.exists() {
            if let Some(status) = t.exited() {
                let log = std::fs::read_to_string(self.file(&format!("{name}-bird.log")))
                    .unwrap_or_default();
                bail!("BIRD ({name}) exited ({status}): {}", log.trim());
            }
            if Instant::now() >= deadline {
                bail!("BIRD ({name}) made no control socket within 5 s");
            }
            thread::sleep(Duration::from_millis(20));
        }
        Ok(t)
    }

    fn start_router_bird(&mut self) -> Result<()> {
        let mut conf = format!(
            "# the router: learns the VIP from every node and installs the paths as ECMP\n\
             log stderr all;\n\
             debug protocols {{ states }};\n\
             router id {ROUTER_ON_SEGMENT};\n\
             protocol device {{ scan time 10; }}\n\
             protocol kernel {{ ipv4 {{ import none; export all; }}; merge paths on; }}\n\
             protocol kernel kernel6 {{ ipv6 {{ import none; export all; }}; merge paths on; }}\n\
             {bfd}\
             template bgp node {{\n  local as {ROUTER_AS};\n  {timers}\n  ipv4 {{ import all; export none; }};\n}}\n\
             template bgp node6 {{\n  local as {ROUTER_AS};\n  {timers}\n  ipv6 {{ import all; export none; }};\n}}\n",
            bfd = bfd_conf(),
            timers = bgp_timers(),
        );
        for i in 0..self.nodes.len() {
            conf.push_str(&format!(
                "protocol bgp node{i} from node {{ neighbor {} as {NODE_AS}; }}\n\
                 protocol bgp node{i}v6 from node6 {{ neighbor {} as {NODE_AS}; }}\n",
                node_front(i),
                node_front6(i)
            ));
        }
        self.router_bird = Some(self.spawn_bird(&self.router, "router", &conf)?);
        Ok(())
    }

    /// The services file every node loads (`xlbd --config`): the TCP services VIP:PORT
    /// and [VIP6]:PORT ([`PORT`]) with every backend, forwarded as `forwarding` says (e.g. `dsr-l2`; `None`
    /// leaves the default), tcp health checks every 200 ms
    /// (timeout 200 ms: the machine is shared; rise 2, fall 2).
    pub fn write_services(&self, forwarding: Option<&str>) -> Result<PathBuf> {
        let mut s = String::new();
        for vip in [IpAddr::from(VIP), IpAddr::from(VIP6)] {
            let at = |a: IpAddr| SocketAddr::new(a, PORT);
            s.push_str(&format!("[[service]]\naddress = \"{}/tcp\"\n", at(vip)));
            if let Some(f) = forwarding {
                s.push_str(&format!("forwarding = \"{f}\"\n"));
            }
            s.push_str(
                "\n[service.check]\nkind = \"tcp\"\ninterval = \"200ms\"\ntimeout = \"200ms\"\nrise = 2\nfall = 2\n",
            );
            for j in 0..self.backends.len() {
                let b: IpAddr = if vip.is_ipv4() {
                    backend_addr(j).into()
                } else {
                    backend_addr6(j).into()
                };
                s.push_str(&format!("\n[[service.backend]]\naddress = \"{}\"\n", at(b)));
            }
            s.push('\n');
        }
        let path = self.file("services.toml");
        std::fs::write(&path, s)?;
        Ok(path)
    }

    /// Starts node `i`: its BIRD, then its xlbd on both its interfaces with `config`
    /// (native XDP, `--announce-table`), waiting until `xlb status` answers.
    pub fn start_node(&mut self, i: usize, config: &std::path::Path) -> Result<()> {
        if self.nodes[i].bird.is_none() {
            let conf = format!(
                "# node {i}: exports the VIPs xlbd puts in table {ANNOUNCE_TABLE}\n\
                 log stderr all;\n\
                 router id {front};\n\
                 protocol device {{ scan time 10; }}\n\
                 protocol kernel vips {{ ipv4 {{ import all; export none; }}; kernel table {ANNOUNCE_TABLE}; learn; scan time 1; }}\n\
                 protocol kernel vips6 {{ ipv6 {{ import all; export none; }}; kernel table {ANNOUNCE_TABLE}; learn; scan time 1; }}\n\
                 {bfd}\
                 protocol bgp uplink {{\n  local as {NODE_AS};\n  neighbor {rf} as {ROUTER_AS};\n  {timers}\n  \
                 ipv4 {{ import none; export where proto = \"vips\"; next hop self; }};\n}}\n\
                 protocol bgp uplink6 {{\n  local as {NODE_AS};\n  neighbor {rf6} as {ROUTER_AS};\n  {timers}\n  \
                 ipv6 {{ import none; export where proto = \"vips6\"; next hop self; }};\n}}\n",
                front = node_front(i),
                rf = router_front(i),
                rf6 = router_front6(i),
                bfd = bfd_conf(),
                timers = bgp_timers(),
            );
            let bird = self.spawn_bird(&self.nodes[i].ns, &format!("n{i}"), &conf)?;
            self.nodes[i].bird = Some(bird);
        }
        if self.nodes[i].xlbd.is_some() {
            bail!("node {i}'s xlbd is already running");
        }
        let xlbd = bin_path("xlbd")?;
        let log = File::create(self.xlbd_log(i))?;
        let node = &self.nodes[i];
        let pin_dir = self.dir.bpffs().join(format!("n{i}"));
        let mut cmd = node.ns.cmd(&xlbd.to_string_lossy());
        cmd.args(["--iface", &node.front_if, "--iface", &node.back_if])
            .args(["--mode", "native", "--config"])
            .arg(config)
            .arg("--socket")
            .arg(self.socket(i))
            .arg("--pin-dir")
            .arg(pin_dir)
            .arg("--state-dir")
            .arg(self.file(&format!("n{i}-state")))
            .args(["--announce-table", &ANNOUNCE_TABLE.to_string()])
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        die_with_parent(&mut cmd);
        let what = proc::describe(&cmd);
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot run `{what}`"))?;
        self.nodes[i].xlbd = Some(Tracked::new(format!("xlbd-n{i}"), child));
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.nodes[i].xlbd.as_mut().and_then(Tracked::exited) {
                self.nodes[i].xlbd = None;
                bail!(
                    "node {i}'s xlbd exited early ({status}):\n{}",
                    self.log_tail(i, 20)
                );
            }
            if self.xlb(i, &["status"]).is_ok_and(|o| o.status.success()) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "node {i}'s xlbd did not answer within 10 s:\n{}",
                    self.log_tail(i, 20)
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// The last `lines` lines of node `i`'s xlbd log.
    pub fn log_tail(&self, i: usize, lines: usize) -> String {
        let text = std::fs::read_to_string(self.xlbd_log(i)).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        format!(
            "--- tail of {} ---\n{}\n---",
            self.xlbd_log(i).display(),
            all[all.len().saturating_sub(lines)..].join("\n")
        )
    }

    /// Makes node `i` silent towards the router, or talkative again: iptables and ip6tables drop
    /// everything its front link sends or receives in the kernel (BGP, BFD; XDP still
    /// sees the packets first), as a hung box or a cut cable with the carrier up would.
    pub fn silence_node(&self, i: usize, silent: bool) -> Result<()> {
        let n = &self.nodes[i];
        let op = if silent { "-I" } else { "-D" };
        for tool in ["iptables", "ip6tables"] {
            n.ns.exec(tool, &[op, "INPUT", "-i", &n.front_if, "-j", "DROP"])?;
            n.ns.exec(tool, &[op, "OUTPUT", "-o", &n.front_if, "-j", "DROP"])?;
        }
        Ok(())
    }

    /// The pids of node `i`'s xlbd and BIRD (for a demo to show what it kills).
    pub fn node_pids(&self, i: usize) -> (Option<u32>, Option<u32>) {
        let n = &self.nodes[i];
        (
            n.xlbd.as_ref().map(Tracked::id),
            n.bird.as_ref().map(Tracked::id),
        )
    }

    /// Kills node `i` as a crash would: SIGKILL to its xlbd and to its BIRD, by pid, and
    /// reaps both. (The XDP program stays attached: it keeps balancing whatever still
    /// reaches the node until the router drops the node's path.)
    pub fn kill_node(&mut self, i: usize) -> Result<()> {
        let node = &mut self.nodes[i];
        for t in [node.xlbd.take(), node.bird.take()].into_iter().flatten() {
            kill_and_reap(t, libc::SIGKILL)?;
        }
        Ok(())
    }

    /// Stops node `i`'s xlbd with `signal` (SIGTERM: a clean stop, which withdraws) and
    /// reaps it; its BIRD keeps running.
    pub fn stop_xlbd(&mut self, i: usize, signal: i32) -> Result<()> {
        let t = self.nodes[i].xlbd.take().context("xlbd is not running")?;
        kill_and_reap(t, signal)
    }

    /// `xlb --socket <node i's> args...`.
    pub fn xlb(&self, i: usize, args: &[&str]) -> Result<Output> {
        let mut cmd = Command::new(bin_path("xlb")?);
        cmd.arg("--socket").arg(self.socket(i)).args(args);
        proc::output_timeout(&mut cmd, CLI_TIMEOUT)
    }

    /// Like [`Cluster::xlb`], a non-zero exit is an error; returns stdout.
    pub fn xlb_ok(&self, i: usize, args: &[&str]) -> Result<String> {
        let out = self.xlb(i, args)?;
        if !out.status.success() {
            bail!(
                "node {i}: `xlb {}` failed ({}): {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The router's next hops for the VIP (`ip route show <VIP>` in its namespace), as
    /// node indexes, sorted; empty when no node announces it.
    pub fn vip_paths(&self) -> Result<Vec<usize>> {
        self.paths(IpAddr::V4(VIP))
    }

    /// [`Cluster::vip_paths`] for the IPv6 VIP.
    pub fn vip6_paths(&self) -> Result<Vec<usize>> {
        self.paths(IpAddr::V6(VIP6))
    }

    fn paths(&self, vip: IpAddr) -> Result<Vec<usize>> {
        let family = if vip.is_ipv4() { "-4" } else { "-6" };
        let out = self
            .router
            .exec("ip", &[family, "route", "show", &vip.to_string()])?;
        let front = |i: usize| match vip {
            IpAddr::V4(_) => IpAddr::V4(node_front(i)),
            IpAddr::V6(_) => IpAddr::V6(node_front6(i)),
        };
        let mut nodes: Vec<usize> = out
            .split_whitespace()
            .collect::<Vec<_>>()
            .windows(2)
            .filter(|w| w[0] == "via")
            .filter_map(|w| w[1].parse::<IpAddr>().ok())
            .filter_map(|a| (0..self.nodes.len()).find(|&i| front(i) == a))
            .collect();
        nodes.sort_unstable();
        Ok(nodes)
    }

    /// `birdc -s <router's socket> args...`: what the router's BIRD says (e.g. `show
    /// protocols`, `show bfd sessions`).
    pub fn router_birdc(&self, args: &[&str]) -> Result<String> {
        proc::run(
            Command::new("birdc")
                .arg("-s")
                .arg(self.file("router-bird.ctl"))
                .args(args),
        )
    }

    /// Waits until the router's BFD sessions (IPv4 and IPv6) with all `n` running nodes are
    /// `Up` (they come
    /// up a few seconds after BGP; until then a silent node is noticed only by the hold
    /// time); returns how long that took.
    pub fn wait_bfd(&self, n: usize, limit: Duration) -> Result<Duration> {
        let start = Instant::now();
        loop {
            let out = self.router_birdc(&["show", "bfd", "sessions"])?;
            let up = out
                .lines()
                .filter(|l| l.split_whitespace().nth(2) == Some("Up"))
                .count();
            if up >= 2 * n {
                return Ok(start.elapsed());
            }
            if start.elapsed() >= limit {
                bail!("{up} of {} BFD sessions up after {limit:?}:\n{out}", 2 * n);
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// The last `lines` lines of the router's BIRD log.
    pub fn router_log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(self.file("router-bird.log")).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// The router's routes for the VIPs as `ip route` prints them.
    pub fn vip_route(&self) -> Result<String> {
        let v4 = self
            .router
            .exec("ip", &["-4", "route", "show", &VIP.to_string()])?;
        let v6 = self
            .router
            .exec("ip", &["-6", "route", "show", &VIP6.to_string()])?;
        Ok(format!("{}\n{}", v4.trim_end(), v6.trim_end()))
    }

    /// Polls [`Cluster::vip_paths`] and [`Cluster::vip6_paths`] every 10 ms until both
    /// equal `want`; returns how long that took, or fails after `limit` naming what the
    /// router had.
    pub fn wait_paths(&self, want: &[usize], limit: Duration) -> Result<Duration> {
        let start = Instant::now();
        loop {
            let (v4, v6) = (self.vip_paths()?, self.vip6_paths()?);
            if v4 == want && v6 == want {
                return Ok(start.elapsed());
            }
            if start.elapsed() >= limit {
                bail!(
                    "the router's paths are nodes {v4:?} to {VIP} and {v6:?} to {VIP6}, not {want:?}, after {limit:?}:\n{}",
                    self.vip_route()?
                );
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Starts the id servers (TCP and UDP on [`PORT`], answering `backend-j`) in backend
    /// `j`; they stop when the handle is stopped or dropped.
    pub fn start_backend(&self, j: usize) -> Result<IdServer> {
        start_id_servers(&self.backends[j], &backend_id(j), PORT)
    }

    /// Starts every backend's id servers for the testbed's life.
    pub fn start_backends(&mut self) -> Result<()> {
        for j in 0..self.backends.len() {
            let s = self.start_backend(j)?;
            self.threads.push(s);
        }
        Ok(())
    }

    /// A TCP connection from client `k` to `vip`:PORT.
    pub fn connect(&self, k: usize, vip: IpAddr) -> Result<TcpConn> {
        TcpConn::connect(&self.clients[k].ns, SocketAddr::new(vip, PORT))
    }

    /// Opens `n` connections to `vip`:PORT, round-robin over the clients, one at a time,
    /// each asked once (so its backend is known), and finds the node that carried its
    /// first packet: the one running node whose xlb counted one more new flow.
    pub fn open_streams(&self, n: usize, vip: IpAddr) -> Result<Vec<Stream>> {
        let running: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].xlbd.is_some())
            .collect();
        // The nodes are asked at once (each `xlb` call is a process and a map walk).
        let counts = || -> Result<Vec<u64>> {
            thread::scope(|sc| {
                let asks: Vec<_> = running
                    .iter()
                    .map(|&i| sc.spawn(move || self.new_flows(i)))
                    .collect();
                asks.into_iter()
                    .map(|h| {
                        h.join()
                            .map_err(|_| anyhow::anyhow!("a counter thread panicked"))?
                    })
                    .collect()
            })
        };
        let mut before = counts()?;
        (0..n)
            .map(|k| {
                let client = k % self.clients.len();
                let mut conn = self.connect(client, vip)?;
                let backend = conn.ask()?;
                let after = counts()?;
                let grew: Vec<usize> = (0..running.len())
                    .filter(|&x| after[x] != before[x])
                    .map(|x| running[x])
                    .collect();
                let [first_node] = grew[..] else {
                    bail!(
                        "connection {k} ({}): new flows changed on nodes {grew:?}, not on one",
                        conn.local()
                    );
                };
                before = after;
                Ok(Stream {
                    client,
                    local: conn.local(),
                    first_node,
                    backends: vec![backend],
                    answers: 1,
                    error: None,
                    conn: Some(conn),
                })
            })
            .collect()
    }

    /// New flows node `i`'s xlb gave its backends (the sum of `new_flows` in
    /// `xlb backend list --json`).
    pub fn new_flows(&self, i: usize) -> Result<u64> {
        let out = self.xlb_ok(i, &["backend", "list", "--json"])?;
        let v: serde_json::Value = serde_json::from_str(&out)
            .with_context(|| format!("backend list --json is not JSON: {out:?}"))?;
        let rows = v["backends"].as_array().context("no \"backends\" array")?;
        Ok(rows.iter().filter_map(|r| r["new_flows"].as_u64()).sum())
    }
}

/// One long-lived connection through the VIP and what it has seen.
#[derive(Debug)]
pub struct Stream {
    pub client: usize,
    /// Its client address and port.
    pub local: SocketAddr,
    /// The node the router chose for its first packet.
    pub first_node: usize,
    /// The backend ids it got, in order, repeats removed.
    pub backends: Vec<String>,
    pub answers: usize,
    /// Why it broke, if it did.
    pub error: Option<String>,
    conn: Option<TcpConn>,
}

impl Stream {
    pub fn local_port(&self) -> u16 {
        self.local.port()
    }

    pub fn broken(&self) -> bool {
        self.error.is_some()
    }

    /// Every answer came from one backend.
    pub fn sticky(&self) -> bool {
        self.backends.len() == 1
    }

    /// The backend that served it first.
    pub fn backend(&self) -> &str {
        &self.backends[0]
    }

    fn ask(&mut self) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        match conn.ask() {
            Ok(id) => {
                self.answers += 1;
                if self.backends.last() != Some(&id) {
                    self.backends.push(id);
                }
            }
            Err(e) => {
                self.error = Some(format!("{e:#}"));
                self.conn = None;
            }
        }
    }

    /// Closes the connection (FIN).
    pub fn close(&mut self) {
        if let Some(c) = self.conn.take() {
            c.close();
        }
    }
}

/// Asks every stream for a line, `rounds` times, `gap` apart; before round `r` runs
/// `before(r)` (e.g. to kill a node in the middle). A stream that fails stays broken.
pub fn stream_rounds(
    streams: &mut [Stream],
    rounds: usize,
    gap: Duration,
    mut before: impl FnMut(usize) -> Result<()>,
) -> Result<()> {
    for r in 0..rounds {
        before(r)?;
        let start = Instant::now();
        for s in streams.iter_mut() {
            s.ask();
        }
        if let Some(rest) = gap.checked_sub(start.elapsed()) {
            thread::sleep(rest);
        }
    }
    Ok(())
}

fn bfd_conf() -> String {
    format!(
        "protocol bfd {{ interface \"*\" {{ min rx interval {BFD_MS} ms; min tx interval {BFD_MS} ms; multiplier {BFD_MULT}; }}; }}\n"
    )
}

fn bgp_timers() -> String {
    format!(
        "hold time {HOLD_S}; keepalive time 1; connect retry time 1; error wait time 1, 2; bfd on;"
    )
}

fn veth(a: &Netns, a_if: &str, b: &Netns, b_if: &str) -> Result<()> {
    a.ip(&[
        "link",
        "add",
        "name",
        a_if,
        "type",
        "veth",
        "peer",
        "name",
        b_if,
        "netns",
        b.name(),
    ])
}

/// `addr`/64 on `ifname`, usable at once (no duplicate address detection).
fn addr6(ns: &Netns, ifname: &str, addr: Ipv6Addr) -> Result<()> {
    ns.ip(&[
        "-6",
        "addr",
        "add",
        &format!("{addr}/64"),
        "dev",
        ifname,
        "nodad",
    ])
}

/// `ns`'s IPv6 default route, through `via`.
fn default_route6(ns: &Netns, via: Ipv6Addr) -> Result<()> {
    ns.ip(&["-6", "route", "add", "default", "via", &via.to_string()])
}

fn up(ns: &Netns, ifname: &str) -> Result<()> {
    ns.ip(&["link", "set", "dev", ifname, "up"])
}

/// Sends `signal` to the tracked process (only its pid) and waits up to 5 s for it.
fn kill_and_reap(mut t: Tracked, signal: i32) -> Result<()> {
    // SAFETY: kill(2) on the pid of our own unreaped child.
    unsafe { libc::kill(t.id() as libc::pid_t, signal) };
    let deadline = Instant::now() + Duration::from_secs(5);
    while t.exited().is_none() {
        if Instant::now() >= deadline {
            bail!("{} did not exit within 5 s of signal {signal}", t.name());
        }
        thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for i in 0..self.nodes.len() {
                eprintln!("{}", self.log_tail(i, 15));
            }
        }
        for n in &mut self.nodes {
            // Tracked::drop sends SIGTERM (xlbd withdraws), then SIGKILL after a grace.
            n.xlbd = None;
            n.bird = None;
        }
        self.router_bird = None;
        self.threads.clear();
    }
}

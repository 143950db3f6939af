//! The testbed's topology (DESIGN.md section 5): client namespaces and backend namespaces,
//! each joined to one LB namespace by its own veth pair, with the address plan from
//! 198.18.0.0/15 and 2001:2::/48. Backends are on point-to-point links
//! ([`Layout::PointToPoint`]) or share a Linux bridge in the LB namespace whose ports are
//! the veths ([`Layout::Bridge`], as `docker0`/`cni0` on a container host). Everything it
//! made is removed when the [`Testbed`] drops.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use anyhow::{Context as _, Result, bail};

use crate::netns::Netns;
use crate::proc::{self, Tracked};

/// The VIP the tests and the demo use. VIPs (198.18.0.0/24) are on no interface.
pub const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 10);
/// The IPv6 VIP the tests use (2001:2::/64 holds VIPs, on no interface).
pub const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 0x10);

/// IFNAMSIZ - 1.
pub(crate) const MAX_IFNAME: usize = 15;

/// Which side of the LB a namespace is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Client,
    Backend,
}

impl Role {
    fn letter(self) -> char {
        match self {
            Role::Client => 'c',
            Role::Backend => 'b',
        }
    }
}

/// How the backends are joined to the LB namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// A veth pair per backend, each its own subnet.
    PointToPoint,
    /// A bridge in the LB namespace holding the LB's backend-side addresses
    /// (198.19.200.1/24, 2001:2:0:200::1/64); each backend's veth is a port of it, and
    /// backend j is 198.19.200.(10+j) and 2001:2:0:200::(10+j) (hex).
    Bridge,
    /// Direct server return on one L2 segment: the `lb` namespace only routes (the
    /// clients' gateway, and the backends' for their replies); its bridge is the segment
    /// (as [`Layout::Bridge`]) and one more port of it leads to an xlb node namespace
    /// ([`Testbed::node`], 198.19.200.254 and 2001:2:0:200::fe), where xlbd runs. The
    /// router sends the VIPs (198.18.0.0/24, 2001:2::/64) to the node; the backends hold
    /// [`VIP`] and [`VIP6`] on `lo` with ARP for them suppressed (arp_ignore=1,
    /// arp_announce=2), so requests reach them through the node and their replies go
    /// straight to the router, past the node.
    Dsr,
}

/// The xlb node's host number on the DSR segment.
pub const DSR_NODE_HOST: u8 = 254;

/// The bridged backends' subnet: (IPv4 third octet, IPv6 fourth group).
const BRIDGE_NET: (u8, u16) = (200, 0x200);

/// The LB's and backend `idx`'s addresses on the bridge.
pub fn bridge_addrs(idx: usize) -> Result<Vec<AddrPair>> {
    if idx > 200 {
        bail!("bridged backend index {idx} is outside the address plan");
    }
    let (c, group) = BRIDGE_NET;
    let host = 10 + idx as u8;
    let v6 = |h: u16| Ipv6Addr::new(0x2001, 2, 0, group, 0, 0, 0, h).into();
    Ok(vec![
        AddrPair {
            lb: Ipv4Addr::new(198, 19, c, 1).into(),
            peer: Ipv4Addr::new(198, 19, c, host).into(),
            prefix_len: 24,
        },
        AddrPair {
            lb: v6(1),
            peer: v6(host as u16),
            prefix_len: 64,
        },
    ])
}

/// One address on each end of a link, and the prefix they share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddrPair {
    pub lb: IpAddr,
    pub peer: IpAddr,
    pub prefix_len: u8,
}

/// The address plan: client k's link is 198.18.(10+k).0/24 and 2001:2:0:(10+k)::/64,
/// backend j's is 198.19.j.0/24 and 2001:2:0:(100+j)::/64 (the IPv6 group in hex, as
/// written: client 0 is 2001:2:0:10::/64); the LB side is .1 / ::1, the other side .2 / ::2.
pub fn link_addrs(role: Role, idx: usize) -> Result<Vec<AddrPair>> {
    let (b, c, group) = match role {
        Role::Client if idx <= 245 => (18, 10 + idx as u8, 0x10 + idx as u16),
        Role::Backend if idx <= 255 => (19, idx as u8, 0x100 + idx as u16),
        _ => bail!("{role:?} index {idx} is outside the address plan"),
    };
    let v6 = |host| Ipv6Addr::new(0x2001, 2, 0, group, 0, 0, 0, host).into();
    Ok(vec![
        AddrPair {
            lb: Ipv4Addr::new(198, b, c, 1).into(),
            peer: Ipv4Addr::new(198, b, c, 2).into(),
            prefix_len: 24,
        },
        AddrPair {
            lb: v6(1),
            peer: v6(2),
            prefix_len: 64,
        },
    ])
}

/// The veth pair between the LB namespace and one client or backend namespace.
#[derive(Debug, Clone)]
pub struct Link {
    /// The veth end in the LB namespace (xlbd attaches here).
    pub lb_if: String,
    /// The veth end in the client's or backend's namespace.
    pub peer_if: String,
    pub addrs: Vec<AddrPair>,
}

impl Link {
    fn v4(&self) -> AddrPair {
        *self
            .addrs
            .iter()
            .find(|a| a.peer.is_ipv4())
            .expect("every link has an IPv4 pair")
    }

    fn v6(&self) -> AddrPair {
        *self
            .addrs
            .iter()
            .find(|a| a.peer.is_ipv6())
            .expect("every link has an IPv6 pair")
    }
}

/// A client or backend namespace and its link to the LB.
#[derive(Debug)]
pub struct Node {
    pub ns: Netns,
    pub link: Link,
}

impl Node {
    /// This node's own IPv4 address.
    pub fn addr(&self) -> Ipv4Addr {
        as_v4(self.link.v4().peer)
    }

    /// The LB's IPv4 address on this node's link (this node's default gateway).
    pub fn lb_addr(&self) -> Ipv4Addr {
        as_v4(self.link.v4().lb)
    }

    /// This node's own IPv6 address.
    pub fn addr6(&self) -> IpAddr {
        self.link.v6().peer
    }

    /// This node's address of the same family as `like`.
    pub fn addr_like(&self, like: IpAddr) -> IpAddr {
        if like.is_ipv6() {
            self.addr6()
        } else {
            self.addr().into()
        }
    }
}

fn as_v4(a: IpAddr) -> Ipv4Addr {
    match a {
        IpAddr::V4(v4) => v4,
        IpAddr::V6(_) => unreachable!("v4() returns IPv4 pairs"),
    }
}

/// A directory for this testbed's files (xlbd's socket, log and state dir), with a bpffs of
/// its own mounted at `bpf/` for xlbd's pins: mounted from the root mount namespace, so
/// every `ip netns exec` sees the same one and a restarted xlbd finds what the last one
/// pinned. Unmounted (which frees the pins) and removed on drop.
#[derive(Debug)]
pub(crate) struct RunDir(PathBuf);

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A new run's names, after sweeping stale runs' leftovers: its tag (`<pid>-<n>`, for
/// namespaces and the run directory), its short tag (hex, for interface names, which
/// IFNAMSIZ keeps short) and its run directory.
pub(crate) fn new_run() -> Result<(String, String, RunDir)> {
    sweep_stale();
    let pid = std::process::id();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let tag = format!("{pid}-{n}");
    let dir = RunDir::create(PathBuf::from(format!("/tmp/xlbt-{tag}")))?;
    Ok((tag, format!("{pid:x}{n:x}"), dir))
}

impl RunDir {
    pub(crate) fn create(dir: PathBuf) -> Result<RunDir> {
        std::fs::create_dir_all(dir.join(BPFFS))
            .with_context(|| format!("creating {}", dir.display()))?;
        let run = RunDir(dir);
        proc::run(
            std::process::Command::new("mount")
                .args(["-t", "bpf", "bpf"])
                .arg(run.0.join(BPFFS)),
        )?;
        Ok(run)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }

    /// Where xlbd pins its maps and links.
    pub(crate) fn pin_dir(&self) -> PathBuf {
        self.0.join(BPFFS).join("xlb")
    }

    /// The run directory's own bpffs (one pin dir per xlbd under it).
    pub(crate) fn bpffs(&self) -> PathBuf {
        self.0.join(BPFFS)
    }
}

/// The run directory's bpffs mount point.
const BPFFS: &str = "bpf";

fn remove_run_dir(dir: &Path) {
    let _ = proc::run(
        std::process::Command::new("umount")
            .arg("-l")
            .arg(dir.join(BPFFS)),
    );
    let _ = std::fs::remove_dir_all(dir);
}

impl Drop for RunDir {
    fn drop(&mut self) {
        remove_run_dir(&self.0);
    }
}

/// The whole testbed. Dropping it stops the servers and processes it started, then deletes
/// its namespaces (which destroys their veths) and its run directory.
#[derive(Debug)]
pub struct Testbed {
    pub(crate) stop: Arc<AtomicBool>,
    pub(crate) threads: Mutex<Vec<JoinHandle<()>>>,
    pub(crate) children: Mutex<Vec<Tracked>>,
    pub(crate) xlbd: Option<Tracked>,
    /// Print every `xlb` command (and its output) that [`Testbed::xlb_ok`] runs.
    pub(crate) echo: bool,
    // Dropped in this order, after `Drop::drop` below.
    pub(crate) lb: Netns,
    pub(crate) clients: Vec<Node>,
    pub(crate) backends: Vec<Node>,
    /// [`Layout::Dsr`]: the xlb node (xlbd runs there); its `link.peer_if` is its port.
    pub(crate) node: Option<Node>,
    pub(crate) dir: RunDir,
}

impl Testbed {
    /// Builds the LB namespace plus `clients` client and `backends` backend namespaces,
    /// every backend on a point-to-point link.
    pub fn new(clients: usize, backends: usize) -> Result<Testbed> {
        Self::with_layout(clients, backends, Layout::PointToPoint)
    }

    /// [`Testbed::new`] with the backends joined as `layout` says.
    pub fn with_layout(clients: usize, backends: usize, layout: Layout) -> Result<Testbed> {
        let (tag, short, dir) = new_run()?;

        let lb = Netns::create(&format!("xlbt-{tag}-lb"))?;
        lb.sysctl("net/ipv4/ip_forward", "1")?;
        let bridge = match layout {
            Layout::PointToPoint => None,
            Layout::Bridge | Layout::Dsr => Some(make_bridge(&lb, &short)?),
        };
        let make = |role: Role, count: usize| -> Result<Vec<Node>> {
            (0..count)
                .map(|i| {
                    let on_bridge = bridge.as_deref().filter(|_| role == Role::Backend);
                    make_node(&lb, &tag, &short, role, i, on_bridge)
                })
                .collect()
        };
        let clients = make(Role::Client, clients)?;
        let backends = make(Role::Backend, backends)?;
        // After the links exist: `all` sets every existing interface.
        lb.sysctl("net/ipv6/conf/all/forwarding", "1")?;
        let node = match (layout, &bridge) {
            (Layout::Dsr, Some(br)) => Some(make_dsr(&lb, &tag, &short, br, &backends)?),
            _ => None,
        };
        Ok(Testbed {
            stop: Arc::new(AtomicBool::new(false)),
            threads: Mutex::new(Vec::new()),
            children: Mutex::new(Vec::new()),
            xlbd: None,
            echo: false,
            lb,
            clients,
            backends,
            node,
            dir,
        })
    }

    pub fn lb(&self) -> &Netns {
        &self.lb
    }

    pub fn clients(&self) -> &[Node] {
        &self.clients
    }

    pub fn backends(&self) -> &[Node] {
        &self.backends
    }

    /// Client `k`; panics when out of range (a bug in the test).
    pub fn client(&self, k: usize) -> &Node {
        &self.clients[k]
    }

    /// Backend `j`; panics when out of range (a bug in the test).
    pub fn backend(&self, j: usize) -> &Node {
        &self.backends[j]
    }

    /// The namespace xlbd runs in: the xlb node's with [`Layout::Dsr`], else the LB's.
    pub fn xlbd_ns(&self) -> &Netns {
        self.node.as_ref().map_or(&self.lb, |n| &n.ns)
    }

    /// The xlb node of a [`Layout::Dsr`] testbed.
    pub fn node(&self) -> Option<&Node> {
        self.node.as_ref()
    }

    /// The LB-side interfaces of all links (what xlbd attaches to); with [`Layout::Dsr`],
    /// the xlb node's one port.
    pub fn lb_ifaces(&self) -> Vec<String> {
        if let Some(n) = &self.node {
            return vec![n.link.peer_if.clone()];
        }
        self.clients
            .iter()
            .chain(&self.backends)
            .map(|n| n.link.lb_if.clone())
            .collect()
    }

    /// Registers a child process so that drop stops it.
    pub(crate) fn track(&self, child: Tracked) {
        self.children.lock().expect("children lock").push(child);
    }
}

/// Removes namespaces and run directories left by testbeds of processes that no longer
/// exist (killed before their `Drop` ran). Names are `xlbt-<pid>-...`.
pub(crate) fn sweep_stale() {
    sweep_dead("xlbt-", remove_run_dir);
}

/// Deletes the namespaces and removes (with `remove_dir`) the `/tmp` directories named
/// `<prefix><pid>-...` whose process no longer exists.
pub(crate) fn sweep_dead(prefix: &str, remove_dir: impl Fn(&Path)) {
    let dead = |name: &str| {
        let pid = name.strip_prefix(prefix).and_then(|r| r.split('-').next());
        pid.and_then(|p| p.parse::<u32>().ok())
            .is_some_and(|p| !Path::new(&format!("/proc/{p}")).exists())
    };
    let names = |dir: &str| -> Vec<String> {
        let entries = std::fs::read_dir(dir).into_iter().flatten().flatten();
        entries
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| dead(n))
            .collect()
    };
    for ns in names("/var/run/netns") {
        let _ = proc::run(std::process::Command::new("ip").args(["netns", "del", &ns]));
    }
    for dir in names("/tmp") {
        remove_dir(&Path::new("/tmp").join(dir));
    }
}

/// The bridge in the LB namespace, with the LB's addresses on the bridged subnet.
fn make_bridge(lb: &Netns, short: &str) -> Result<String> {
    let br = format!("br-{short}");
    if br.len() > MAX_IFNAME {
        bail!("interface name {br} is longer than {MAX_IFNAME}");
    }
    lb.ip(&["link", "add", "name", &br, "type", "bridge"])?;
    for a in bridge_addrs(0)? {
        let nodad: &[&str] = if a.lb.is_ipv6() { &["nodad"] } else { &[] };
        lb.ip(&[
            &["addr", "add", &cidr(a.lb, a.prefix_len), "dev", &br],
            nodad,
        ]
        .concat())?;
    }
    lb.ip(&["link", "set", "dev", &br, "up"])?;
    lb.exec("ethtool", &["-K", &br, "tx", "off"])?;
    Ok(br)
}

/// A client or backend namespace and its veth to the LB; with `bridge`, the LB's end is a
/// port of that bridge and holds no address.
fn make_node(
    lb: &Netns,
    tag: &str,
    short: &str,
    role: Role,
    idx: usize,
    bridge: Option<&str>,
) -> Result<Node> {
    let r = role.letter();
    let ns = Netns::create(&format!("xlbt-{tag}-{r}{idx}"))?;
    let link = Link {
        lb_if: format!("{r}{idx}-{short}"),
        peer_if: format!("{r}{idx}p-{short}"),
        addrs: match bridge {
            None => link_addrs(role, idx)?,
            Some(_) => bridge_addrs(idx)?,
        },
    };
    add_veth(lb, &ns, &link)?;
    let (lb_if, peer_if) = (link.lb_if.as_str(), link.peer_if.as_str());
    if let Some(br) = bridge {
        lb.ip(&["link", "set", "dev", lb_if, "master", br])?;
    }
    for a in &link.addrs {
        // No duplicate address detection: IPv6 addresses are usable at once.
        let nodad: &[&str] = if a.lb.is_ipv6() { &["nodad"] } else { &[] };
        let (lb_cidr, peer_cidr) = (cidr(a.lb, a.prefix_len), cidr(a.peer, a.prefix_len));
        if bridge.is_none() {
            lb.ip(&[&["addr", "add", &lb_cidr, "dev", lb_if], nodad].concat())?;
        }
        ns.ip(&[&["addr", "add", &peer_cidr, "dev", peer_if], nodad].concat())?;
    }
    lb.ip(&["link", "set", "dev", lb_if, "up"])?;
    ns.ip(&["link", "set", "dev", peer_if, "up"])?;
    for a in &link.addrs {
        let family = if a.lb.is_ipv4() { "-4" } else { "-6" };
        // Backends too: replies must go back through the LB (NAT mode).
        ns.ip(&[family, "route", "add", "default", "via", &a.lb.to_string()])?;
    }
    // The XDP program updates checksums incrementally, which needs full checksums rather
    // than CHECKSUM_PARTIAL; XDP_REDIRECT into a veth needs GRO on the receiving peer.
    ns.exec("ethtool", &["-K", peer_if, "tx", "off", "gro", "on"])?;
    lb.exec("ethtool", &["-K", lb_if, "tx", "off"])?;
    Ok(Node { ns, link })
}

/// The DSR layout's xlb node on the bridge `br` of the router `lb`, the router's routes
/// for the VIPs through it, and the backends' VIPs on `lo` (see [`Layout::Dsr`]).
fn make_dsr(lb: &Netns, tag: &str, short: &str, br: &str, backends: &[Node]) -> Result<Node> {
    let ns = Netns::create(&format!("xlbt-{tag}-n0"))?;
    let mut addrs = bridge_addrs(0)?;
    let host = DSR_NODE_HOST;
    addrs[0].peer = Ipv4Addr::new(198, 19, BRIDGE_NET.0, host).into();
    addrs[1].peer = Ipv6Addr::new(0x2001, 2, 0, BRIDGE_NET.1, 0, 0, 0, host as u16).into();
    let link = Link {
        lb_if: format!("n0-{short}"),
        peer_if: format!("n0p-{short}"),
        addrs,
    };
    add_veth(lb, &ns, &link)?;
    let (lb_if, peer_if) = (link.lb_if.as_str(), link.peer_if.as_str());
    lb.ip(&["link", "set", "dev", lb_if, "master", br])?;
    for a in &link.addrs {
        let nodad: &[&str] = if a.lb.is_ipv6() { &["nodad"] } else { &[] };
        ns.ip(&[
            &["addr", "add", &cidr(a.peer, a.prefix_len), "dev", peer_if],
            nodad,
        ]
        .concat())?;
    }
    lb.ip(&["link", "set", "dev", lb_if, "up"])?;
    ns.ip(&["link", "set", "dev", peer_if, "up"])?;
    for a in &link.addrs {
        let family = if a.lb.is_ipv4() { "-4" } else { "-6" };
        ns.ip(&[family, "route", "add", "default", "via", &a.lb.to_string()])?;
        let vips = if a.lb.is_ipv4() {
            "198.18.0.0/24"
        } else {
            "2001:2::/64"
        };
        lb.ip(&[family, "route", "add", vips, "via", &a.peer.to_string()])?;
    }
    // bpf_fib_lookup answers only where forwarding is on.
    ns.sysctl("net/ipv4/ip_forward", "1")?;
    ns.sysctl("net/ipv6/conf/all/forwarding", "1")?;
    // Frames the node sends back out of its port (XDP_TX) arrive on the bridge's end,
    // which needs GRO (or an XDP program) to take them.
    ns.exec("ethtool", &["-K", peer_if, "tx", "off", "gro", "on"])?;
    lb.exec("ethtool", &["-K", lb_if, "tx", "off", "gro", "on"])?;
    for b in backends {
        b.ns.sysctl("net/ipv4/conf/all/arp_ignore", "1")?;
        b.ns.sysctl("net/ipv4/conf/all/arp_announce", "2")?;
        b.ns.ip(&["addr", "add", &format!("{VIP}/32"), "dev", "lo"])?;
        b.ns.ip(&["addr", "add", &format!("{VIP6}/128"), "dev", "lo", "nodad"])?;
    }
    Ok(Node { ns, link })
}

/// The veth pair of `link`, its LB end in `lb` and its other end in `ns`, both created
/// directly in their namespaces: nothing appears in the root ns.
fn add_veth(lb: &Netns, ns: &Netns, link: &Link) -> Result<()> {
    if link.peer_if.len() > MAX_IFNAME {
        bail!(
            "interface name {} is longer than {MAX_IFNAME}",
            link.peer_if
        );
    }
    lb.ip(&[
        "link",
        "add",
        "name",
        &link.lb_if,
        "type",
        "veth",
        "peer",
        "name",
        &link.peer_if,
        "netns",
        ns.name(),
    ])?;
    Ok(())
}

pub(crate) fn cidr(a: IpAddr, prefix_len: u8) -> String {
    format!("{a}/{prefix_len}")
}

impl Drop for Testbed {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self
            .threads
            .get_mut()
            .map(std::mem::take)
            .unwrap_or_default()
        {
            let _ = t.join();
        }
        if let Ok(children) = self.children.get_mut() {
            children.clear(); // Tracked::drop stops each one
        }
        if std::thread::panicking() && self.xlbd.is_some() {
            eprintln!("{}", self.xlbd_log_tail(40));
        }
        self.xlbd = None;
    }
}

//! The VM testbed: a qemu guest running Debian's kernel with two virtio-net NICs, so xlbd
//! attaches in native (driver) XDP mode on a real NIC driver. The guest's root is the host's
//! `/` shared read-only over 9p (the workspace's xlbd and xlb run in it as they are), and
//! commands run in it through a file-based agent in a read-write 9p share. On the host,
//! eth0's tap is moved into a client namespace and eth1's into a switch namespace, whose
//! bridge joins the backend namespaces (the netns testbed's address plan: the client link
//! 198.18.10.0/24, the bridged backends 198.19.200.0/24, the VIP 198.18.0.10).
//! Dropping the [`Vm`] stops qemu and the processes it started (by pid), deletes its
//! namespaces and its directory, also when a test panics.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

use crate::clients::{Flow, tcp_flow};
use crate::netns::Netns;
use crate::proc::{self, Tracked, die_with_parent};
use crate::servers::{backend_id, spawn_id_servers};
use crate::topology::{Role, bridge_addrs, link_addrs};
use crate::vm_image::{self, Image};

/// How long a TCG guest may take from qemu's start to its agent being ready (about 10 s on
/// an idle machine, 25 s while compiles run).
const TCG_BOOT_BOUND: Duration = Duration::from_secs(120);
/// A KVM guest that is not ready by then is taken as an unusable KVM, and TCG is used.
const KVM_BOOT_BOUND: Duration = Duration::from_secs(30);
/// How long one guest command may take unless the caller says otherwise.
pub const GUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// The guest's RAM.
const MEM_MB: u32 = 1024;

/// The guest agent: runs `cmd/N.sh` in the background as it appears and leaves `cmd/N.out`
/// and then `cmd/N.rc` (each renamed into place, so it is complete when it appears).
const AGENT: &str = r#"#!/bin/bash
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
cd /mnt
ip link set lo up
sysctl -qw net.ipv4.ip_forward=1
cut -d' ' -f1 /proc/uptime > /mnt/ready.t; mv /mnt/ready.t /mnt/ready
# `read -t` on a fifo nobody writes is a sleep without a fork (forks are dear under TCG).
mkfifo /run/agent.fifo; exec 9<>/run/agent.fifo
n=0
while :; do
    if [[ -f cmd/$n.sh ]]; then
        (bash cmd/$n.sh > cmd/$n.o 2>&1 < /dev/null; rc=$?; mv cmd/$n.o cmd/$n.out
         echo $rc > cmd/$n.rc.t; mv cmd/$n.rc.t cmd/$n.rc) &
        n=$((n + 1))
    else
        read -r -t 0.1 -u 9 || true
    fi
done
"#;

/// How the guest's CPU is run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    /// qemu's emulator: real driver code on an emulated CPU (compare only ratios).
    Tcg,
}

impl Accel {
    pub fn name(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

/// Which accelerator to try first, and why, in one line: `$XLB_VM_ACCEL` (kvm or tcg) if
/// set; else KVM only where /dev/kvm is a VMX/SVM one (a PVM /dev/kvm runs only PVM-guest
/// kernels: a stock kernel crawls under it).
pub fn choose_accel() -> (Accel, String) {
    match std::env::var("XLB_VM_ACCEL").as_deref() {
        Ok("kvm") => return (Accel::Kvm, "kvm ($XLB_VM_ACCEL)".into()),
        Ok("tcg") => return (Accel::Tcg, "tcg ($XLB_VM_ACCEL)".into()),
        _ => {}
    }
    if !Path::new("/dev/kvm").exists() {
        return (Accel::Tcg, "tcg (no /dev/kvm)".into());
    }
    if Path::new("/sys/module/kvm_pvm").exists() {
        return (
            Accel::Tcg,
            "tcg (/dev/kvm is kvm_pvm, which runs only PVM-guest kernels)".into(),
        );
    }
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let hw = cpuinfo
        .lines()
        .filter(|l| l.starts_with("flags"))
        .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"));
    if hw {
        (Accel::Kvm, "kvm (/dev/kvm with VMX/SVM)".into())
    } else {
        (Accel::Tcg, "tcg (/dev/kvm but no VMX/SVM flag)".into())
    }
}

/// Why the VM parts cannot run here, if they cannot (no qemu, no /dev/net/tun).
pub fn unavailable() -> Option<String> {
    let qemu = Command::new("qemu-system-x86_64")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !qemu.is_ok_and(|s| s.success()) {
        return Some("qemu-system-x86_64 does not run (`cargo xtask setup` installs it)".into());
    }
    if !Path::new("/dev/net/tun").exists() {
        return Some("no /dev/net/tun".into());
    }
    None
}

/// A guest command's exit code and its output (stdout and stderr together).
#[derive(Debug, Clone)]
pub struct GuestOutput {
    pub rc: i32,
    pub out: String,
}

/// This VM's directory (the share, qemu's and the console's logs), removed on drop.
#[derive(Debug)]
struct VmDir(PathBuf);

impl Drop for VmDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A booted guest and its host namespaces. See the module documentation.
#[derive(Debug)]
pub struct Vm {
    stop: Arc<AtomicBool>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    qemu: Option<Tracked>,
    accel: Accel,
    boot_time: Duration,
    next_cmd: AtomicU32,
    // Dropped in this order, after `Drop::drop` has stopped qemu.
    client: Netns,
    switch: Option<Netns>,
    /// The host taps of eth0 (in the client namespace) and eth1 (in the switch namespace).
    taps: [String; 2],
    backends: Vec<Netns>,
    dir: VmDir,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// The guest's eth0 (client side) and eth1 (backend side) addresses, the client's, and
/// backend j's.
pub fn guest_eth0() -> Ipv4Addr {
    v4(link_addrs(Role::Client, 0).expect("in plan")[0].lb)
}
pub fn client_addr() -> Ipv4Addr {
    v4(link_addrs(Role::Client, 0).expect("in plan")[0].peer)
}
pub fn guest_eth1() -> Ipv4Addr {
    v4(bridge_addrs(0).expect("in plan")[0].lb)
}
pub fn backend_addr(j: usize) -> Ipv4Addr {
    v4(bridge_addrs(j).expect("in plan")[0].peer)
}

fn v4(a: std::net::IpAddr) -> Ipv4Addr {
    match a {
        std::net::IpAddr::V4(v) => v,
        std::net::IpAddr::V6(_) => unreachable!("the first pair is IPv4"),
    }
}

impl Vm {
    /// Prepares the image (cached), boots the guest with 1 vCPU and 2 virtio-net NICs and
    /// builds the client, switch and `backends` backend namespaces (at most 100).
    pub fn boot(backends: usize) -> Result<Vm> {
        if backends > 100 {
            bail!("{backends} backends: the VM testbed takes at most 100");
        }
        if let Some(why) = unavailable() {
            bail!("the VM testbed cannot run: {why}");
        }
        sweep_stale();
        let image = vm_image::prepare()?;
        let pid = std::process::id();
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let tag = format!("{pid}-{n}");
        let short = format!("{pid:x}{n:x}");
        let dir = VmDir(PathBuf::from(format!("/tmp/xlbv-{tag}")));
        std::fs::create_dir_all(dir.0.join("share/cmd"))
            .with_context(|| format!("creating {}", dir.0.display()))?;
        let agent = dir.0.join("share/agent.sh");
        std::fs::write(&agent, AGENT)?;
        // qemu runs in the client namespace, so its taps are made there and never appear in
        // the root namespace.
        let client = Netns::create(&format!("xlbv-{tag}-c"))?;
        let (accel, why) = choose_accel();
        crate::report(&format!("vm: accelerator {why}"));
        let mut vm = Vm {
            stop: Arc::new(AtomicBool::new(false)),
            threads: Mutex::new(Vec::new()),
            qemu: None,
            accel,
            boot_time: Duration::ZERO,
            next_cmd: AtomicU32::new(0),
            client,
            switch: None,
            taps: [format!("xv{short}c"), format!("xv{short}b")],
            backends: Vec::new(),
            dir,
        };
        let taps = vm.taps.clone();
        let start = Instant::now();
        let bound = if accel == Accel::Kvm {
            KVM_BOOT_BOUND
        } else {
            TCG_BOOT_BOUND
        };
        vm.start_qemu(&image, &taps)?;
        if let Err(e) = vm.wait_ready(bound) {
            if accel != Accel::Kvm {
                return Err(e);
            }
            crate::report(&format!(
                "vm: KVM guest failed ({e:#}); falling back to tcg"
            ));
            vm.qemu = None;
            vm.accel = Accel::Tcg;
            vm.start_qemu(&image, &taps)?;
            vm.wait_ready(TCG_BOOT_BOUND)?;
        }
        vm.boot_time = start.elapsed();
        vm.net_up(&tag, &short, &taps, backends)?;
        Ok(vm)
    }

    fn share(&self) -> PathBuf {
        self.dir.0.join("share")
    }

    /// The guest's serial console log.
    pub fn console_log(&self) -> PathBuf {
        self.dir.0.join("console.log")
    }

    fn start_qemu(&mut self, image: &Image, taps: &[String; 2]) -> Result<()> {
        let _ = std::fs::remove_file(self.share().join("ready"));
        let cpu = if self.accel == Accel::Kvm {
            "host"
        } else {
            "max"
        };
        let log = std::fs::File::create(self.dir.0.join("qemu.log"))?;
        let mut cmd = self.client.cmd("qemu-system-x86_64");
        cmd.args(["-name", "xlbvm,debug-threads=on"])
            .args(["-machine", &format!("q35,accel={}", self.accel.name())])
            .args(["-cpu", cpu, "-smp", "1", "-m", &MEM_MB.to_string()])
            .args(["-nodefaults", "-display", "none", "-no-reboot"])
            .arg("-kernel")
            .arg(&image.kernel)
            .arg("-initrd")
            .arg(&image.initramfs)
            .args(["-append", "console=ttyS0 panic=-1 quiet"])
            .arg("-serial")
            .arg(format!("file:{}", self.console_log().display()))
            .args([
                "-fsdev",
                "local,id=hr,path=/,security_model=none,readonly=on,multidevs=remap",
                "-device",
                "virtio-9p-pci,fsdev=hr,mount_tag=hostroot",
            ])
            .arg("-fsdev")
            .arg(format!(
                "local,id=sh,path={},security_model=none",
                self.share().display()
            ))
            .args(["-device", "virtio-9p-pci,fsdev=sh,mount_tag=share"]);
        // Two queue pairs for one vCPU: virtio_net's XDP_TX/REDIRECT wants a TX queue per
        // CPU beyond the ones in use (curr_queue_pairs + nr_cpus <= max_queue_pairs).
        for (i, tap) in taps.iter().enumerate() {
            cmd.arg("-netdev")
                .arg(format!(
                    "tap,id=n{i},ifname={tap},script=no,downscript=no,queues=2"
                ))
                .arg("-device")
                .arg(format!(
                    "virtio-net-pci,netdev=n{i},mac={},mq=on,vectors=6",
                    Vm::guest_mac(i).map(|b| format!("{b:02x}")).join(":")
                ));
        }
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let what = proc::describe(&cmd);
        let child = die_with_parent(&mut cmd)
            .spawn()
            .with_context(|| format!("cannot run `{what}`"))?;
        self.qemu = Some(Tracked::new("qemu", child));
        Ok(())
    }

    fn wait_ready(&mut self, bound: Duration) -> Result<()> {
        let deadline = Instant::now() + bound;
        let ready = self.share().join("ready");
        loop {
            if ready.exists() {
                return Ok(());
            }
            if let Some(status) = self.qemu.as_mut().and_then(Tracked::exited) {
                bail!(
                    "qemu exited ({status}): {}\n{}",
                    tail(&self.dir.0.join("qemu.log"), 10),
                    tail(&self.console_log(), 20)
                );
            }
            if Instant::now() >= deadline {
                bail!(
                    "the guest's agent was not ready within {bound:?}:\n{}",
                    tail(&self.console_log(), 20)
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// The client's address on eth0's tap, the switch's bridge with eth1's tap and one veth
    /// per backend namespace; the guest's addresses. Backends route back through the guest
    /// (NAT mode).
    fn net_up(
        &mut self,
        tag: &str,
        short: &str,
        taps: &[String; 2],
        backends: usize,
    ) -> Result<()> {
        let (tap_c, tap_b) = (&taps[0], &taps[1]);
        let c = &self.client;
        c.ip(&[
            "addr",
            "add",
            &format!("{}/24", client_addr()),
            "dev",
            tap_c,
        ])?;
        c.ip(&["link", "set", "dev", tap_c, "up"])?;
        c.ip(&["route", "add", "default", "via", &guest_eth0().to_string()])?;
        let sw = Netns::create(&format!("xlbv-{tag}-sw"))?;
        let sw = self.switch.insert(sw);
        c.ip(&["link", "set", "dev", tap_b, "netns", sw.name()])?;
        let br = format!("xvbr{short}");
        sw.ip(&["link", "add", "name", &br, "type", "bridge"])?;
        sw.ip(&["link", "set", "dev", &br, "up"])?;
        sw.ip(&["link", "set", "dev", tap_b, "master", &br, "up"])?;
        for j in 0..backends {
            let ns = Netns::create(&format!("xlbv-{tag}-b{j}"))?;
            let port = format!("xv{short}v{j}");
            sw.ip(&[
                "link",
                "add",
                "name",
                &port,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                ns.name(),
            ])?;
            sw.ip(&["link", "set", "dev", &port, "master", &br, "up"])?;
            ns.ip(&[
                "addr",
                "add",
                &format!("{}/24", backend_addr(j)),
                "dev",
                "eth0",
            ])?;
            ns.ip(&["link", "set", "dev", "eth0", "up"])?;
            ns.ip(&["route", "add", "default", "via", &guest_eth1().to_string()])?;
            self.backends.push(ns);
        }
        self.guest_ok(&format!(
            "ip addr add {}/24 dev eth0 && ip addr add {}/24 dev eth1 && \
             ip link set eth0 up && ip link set eth1 up",
            guest_eth0(),
            guest_eth1()
        ))?;
        Ok(())
    }

    pub fn accel(&self) -> Accel {
        self.accel
    }

    /// From qemu's start to the guest's agent being ready.
    pub fn boot_time(&self) -> Duration {
        self.boot_time
    }

    /// qemu's pid (for its CPU time in /proc).
    pub fn qemu_pid(&self) -> Option<u32> {
        self.qemu.as_ref().map(Tracked::id)
    }

    pub fn client_ns(&self) -> &Netns {
        &self.client
    }

    pub fn backend_ns(&self, j: usize) -> &Netns {
        &self.backends[j]
    }

    pub fn backend_count(&self) -> usize {
        self.backends.len()
    }

    /// The host side of the guest's NICs: (namespace, tap) of eth0 (the client's) and of
    /// eth1 (the switch's, bridged to the backends).
    pub fn host_taps(&self) -> [(&Netns, &str); 2] {
        let switch = self.switch.as_ref().expect("the switch exists once booted");
        [(&self.client, &self.taps[0]), (switch, &self.taps[1])]
    }

    /// The MAC address of the guest's NIC `i` (0: eth0, 1: eth1), as qemu is told.
    pub fn guest_mac(i: usize) -> [u8; 6] {
        [0x52, 0x54, 0x00, 0x78, 0x76, i as u8]
    }

    /// Runs `script` with bash in the guest (as root, in the host's root read-only with
    /// tmpfs on /tmp, /run, /var/lib and /root) and waits at most `timeout` for it.
    pub fn guest(&self, script: &str, timeout: Duration) -> Result<GuestOutput> {
        let n = self.next_cmd.fetch_add(1, Ordering::Relaxed);
        let cmd = self.share().join("cmd");
        let tmp = cmd.join(format!("{n}.sh.t"));
        std::fs::write(&tmp, script)?;
        std::fs::rename(&tmp, cmd.join(format!("{n}.sh")))?;
        let rc_file = cmd.join(format!("{n}.rc"));
        let deadline = Instant::now() + timeout;
        while !rc_file.exists() {
            if self.qemu.is_none() || !self.qemu_alive() {
                bail!(
                    "qemu is gone (guest command: {script}):\n{}",
                    tail(&self.console_log(), 20)
                );
            }
            if Instant::now() >= deadline {
                bail!("guest command did not finish within {timeout:?}: {script}");
            }
            thread::sleep(Duration::from_millis(20));
        }
        let rc = std::fs::read_to_string(&rc_file)?
            .trim()
            .parse()
            .context("the agent's rc file")?;
        let out = std::fs::read_to_string(cmd.join(format!("{n}.out"))).unwrap_or_default();
        Ok(GuestOutput { rc, out })
    }

    /// [`Vm::guest`] within [`GUEST_TIMEOUT`]; a non-zero exit is an error carrying the
    /// output. Returns the output.
    pub fn guest_ok(&self, script: &str) -> Result<String> {
        let o = self.guest(script, GUEST_TIMEOUT)?;
        if o.rc != 0 {
            bail!(
                "guest command failed (rc {}): {script}\n{}",
                o.rc,
                o.out.trim_end()
            );
        }
        Ok(o.out)
    }

    fn qemu_alive(&self) -> bool {
        // Not reaped until dropped: a zombie counts as gone.
        self.qemu.as_ref().is_some_and(|q| {
            std::fs::read_to_string(format!("/proc/{}/stat", q.id()))
                .ok()
                .and_then(|s| s.rsplit_once(") ").map(|(_, r)| !r.starts_with('Z')))
                .unwrap_or(false)
        })
    }

    /// Starts, in backend `j`'s namespace, the netns testbed's id servers (TCP and UDP on
    /// `port`, answering [`backend_id`]`(j)`).
    pub fn spawn_id_server(&self, j: usize, port: u16) -> Result<()> {
        spawn_id_servers(
            &self.backends[j],
            &backend_id(j),
            port,
            &self.stop,
            &self.threads,
        )
    }

    /// `count` TCP connections from the client namespace to `addr`, one after another, each
    /// sending `lines` lines and collecting the ids that answer.
    pub fn tcp_flows(&self, addr: SocketAddr, count: usize, lines: usize) -> Vec<Result<Flow>> {
        (0..count)
            .map(|_| tcp_flow(&self.client, addr, lines))
            .collect()
    }

    /// Starts xlbd in the guest on eth0 and eth1 in `mode` (native or skb; `--reset`: empty,
    /// whatever an earlier one saved is forgotten) and waits for
    /// its control socket; then runs `then` (a shell snippet, e.g. CLI calls) in the same
    /// guest command, so a test pays for few round trips. Returns the command's output.
    pub fn start_xlbd(&self, mode: &str, then: &str) -> Result<String> {
        let xlbd = guest_bin("xlbd")?;
        self.guest_ok(&format!(
            "setsid {xlbd} --iface eth0 --iface eth1 --mode {mode} --reset --detach-on-exit \
             > /tmp/xlbd.log 2>&1 < /dev/null &\n\
             p=$!\n\
             for i in $(seq 600); do [ -S /run/xlb/xlbd.sock ] && break\n\
             kill -0 $p 2>/dev/null || break; sleep 0.05; done\n\
             [ -S /run/xlb/xlbd.sock ] || {{ echo 'xlbd did not start:'; cat /tmp/xlbd.log; exit 1; }}\n\
             set -e\n{then}"
        ))
    }

    /// Stops the guest's xlbd (SIGTERM; it detaches, as started with --detach-on-exit).
    pub fn stop_xlbd(&self) -> Result<()> {
        self.guest_ok(
            "p=$(pidof xlbd) || exit 0; kill $p\n\
             for i in $(seq 100); do kill -0 $p 2>/dev/null || exit 0; sleep 0.1; done; exit 1",
        )
        .map(drop)
    }

    /// The XDP attach mode `ip link` shows on a guest interface: `xdp` (driver),
    /// `xdpgeneric` (skb), `xdpoffload`, or "none".
    pub fn xdp_mode(&self, iface: &str) -> Result<String> {
        let out = self.guest_ok(&format!("ip link show dev {iface}"))?;
        Ok(parse_xdp_mode(&out).unwrap_or("none").to_owned())
    }
}

/// The attach-mode keyword in `ip link show`'s first line (`... mtu 1500 xdp qdisc ...`).
pub fn parse_xdp_mode(ip_link: &str) -> Option<&str> {
    ip_link.lines().next()?.split_whitespace().find(|w| {
        matches!(
            *w,
            "xdp" | "xdpgeneric" | "xdpdrv" | "xdpoffload" | "xdpmulti"
        )
    })
}

/// A workspace binary's path as the guest sees it: under the host's root as the guest
/// mounts it whole (the workspace may be under a directory that is tmpfs in the guest).
pub fn guest_bin(name: &str) -> Result<String> {
    Ok(guest_path(&crate::daemon::bin_path(name)?))
}

/// A host path as the guest sees it (see [`guest_bin`]).
pub fn guest_path(p: &Path) -> String {
    let p = p.canonicalize().unwrap_or_else(|_| p.to_owned());
    format!(
        "{}{}",
        crate::vm_image::GUEST_HOST_ROOT,
        p.to_string_lossy()
    )
}

/// The last `lines` lines of a file, under a header naming it.
fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    let tail = all[all.len().saturating_sub(lines)..].join("\n");
    format!("--- tail of {} ---\n{tail}\n---", path.display())
}

/// Removes namespaces and directories of VMs whose process no longer exists (killed before
/// its `Drop` ran; its qemu died with it). Names are `xlbv-<pid>-...`.
fn sweep_stale() {
    crate::topology::sweep_dead("xlbv-", |dir| {
        let _ = std::fs::remove_dir_all(dir);
    });
}

impl Drop for Vm {
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
        if std::thread::panicking() {
            eprintln!("{}", tail(&self.console_log(), 30));
        }
        self.qemu = None; // Tracked::drop: SIGTERM, then SIGKILL, to qemu's pid only
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_xdp_mode_from_ip_link() {
        let drv = "2: eth0: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 xdp qdisc mq state UP\n    prog/xdp id 10";
        assert_eq!(parse_xdp_mode(drv), Some("xdp"));
        let skb = "2: eth0: <UP> mtu 1500 xdpgeneric qdisc mq state UP";
        assert_eq!(parse_xdp_mode(skb), Some("xdpgeneric"));
        assert_eq!(parse_xdp_mode("2: eth0: <UP> mtu 1500 qdisc mq"), None);
    }

    #[test]
    fn addresses_follow_the_plan() {
        assert_eq!(guest_eth0(), Ipv4Addr::new(198, 18, 10, 1));
        assert_eq!(client_addr(), Ipv4Addr::new(198, 18, 10, 2));
        assert_eq!(guest_eth1(), Ipv4Addr::new(198, 19, 200, 1));
        assert_eq!(backend_addr(2), Ipv4Addr::new(198, 19, 200, 12));
    }
}

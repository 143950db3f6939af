//! A small-packet UDP generator: `trafgen` (netsniff-ng) writing ready-made Ethernet frames
//! through a PACKET_MMAP socket on one interface, so that the receiver, not the sender's
//! socket stack, is the bottleneck. Source ports cycle over `flows` values (one flow each);
//! the rate is capped or as fast as trafgen goes; the run ends after `duration` or at a
//! packet cap, whichever comes first. Nothing here knows the netns testbed: the caller names
//! the namespace (or none), the interface, the MACs and the addresses, so the same module
//! drives the netns testbed and a host tap feeding a VM.
//!
//! trafgen is run with `--no-sock-mem` and `--notouch-irq`: it would otherwise raise the
//! machine-wide socket buffer sysctls and move IRQ affinities.

use std::io::Read as _;
use std::net::Ipv4Addr;
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use serde::Serialize;

/// The payload of a 60-byte frame (the Ethernet minimum without FCS): 14 + 20 + 8 + 18.
pub const SMALL_PAYLOAD: usize = 18;
/// No run sends more than this many packets, whatever the duration.
pub const MAX_PACKETS: u64 = 2_000_000_000;
/// How long a stopped trafgen may take to exit before it is killed.
const EXIT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long trafgen may take to start sending (it fills its ring first; seconds on a
/// loaded machine).
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// What trafgen prints (and flushes) when it starts sending.
const RUNNING: &str = "Running!";

/// What to send.
#[derive(Debug, Clone)]
pub struct UdpFlood {
    /// `ip netns exec` into this namespace; `None`: the caller's namespace.
    pub netns: Option<String>,
    pub iface: String,
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub src_ip: Ipv4Addr,
    pub dst_ip: Ipv4Addr,
    /// Source ports are `first_src_port .. first_src_port + flows`, one per packet in turn.
    pub first_src_port: u16,
    pub dst_port: u16,
    pub flows: u16,
    /// Packets per second (trafgen's `--rate`), or `None`: as fast as it can.
    pub rate_pps: Option<u64>,
    pub duration: Duration,
    pub payload: usize,
    /// trafgen processes (one per CPU it may use).
    pub cpus: u32,
}

impl UdpFlood {
    /// 60-byte frames, one sending process, `flows` flows from port 10000, as fast as
    /// trafgen goes for `duration`.
    #[allow(clippy::too_many_arguments)]
    pub fn small(
        netns: Option<&str>,
        iface: &str,
        src_mac: [u8; 6],
        dst_mac: [u8; 6],
        src_ip: Ipv4Addr,
        dst_ip: Ipv4Addr,
        dst_port: u16,
        flows: u16,
        duration: Duration,
    ) -> UdpFlood {
        UdpFlood {
            netns: netns.map(str::to_owned),
            iface: iface.to_owned(),
            src_mac,
            dst_mac,
            src_ip,
            dst_ip,
            first_src_port: 10000,
            dst_port,
            flows,
            rate_pps: None,
            duration,
            payload: SMALL_PAYLOAD,
            cpus: 1,
        }
    }

    fn check(&self) -> Result<()> {
        ensure!(self.flows >= 1, "a UDP flood needs at least one flow");
        ensure!(
            u32::from(self.first_src_port) + u32::from(self.flows) - 1 <= u32::from(u16::MAX),
            "source ports {}..+{} run past 65535",
            self.first_src_port,
            self.flows
        );
        ensure!(!self.duration.is_zero(), "a UDP flood needs a duration");
        ensure!(self.rate_pps != Some(0), "a rate of 0 pps sends nothing");
        ensure!(self.cpus >= 1, "trafgen needs at least one process");
        ensure!(
            self.payload <= 1472,
            "a {}-byte payload does not fit a 1500-byte MTU",
            self.payload
        );
        Ok(())
    }

    /// The frame in trafgen's packet language: Ethernet, IPv4, UDP (trafgen fills in the
    /// lengths and both checksums, also as the source port changes), payload bytes 0x5a.
    pub fn trafgen_config(&self) -> String {
        let mac = |m: [u8; 6]| {
            m.iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(":")
        };
        let sp = if self.flows == 1 {
            self.first_src_port.to_string()
        } else {
            format!(
                "dinc({}, {})",
                self.first_src_port,
                self.first_src_port + (self.flows - 1)
            )
        };
        let fill = if self.payload > 0 {
            format!(",\n  fill(0x5a, {})", self.payload)
        } else {
            String::new()
        };
        format!(
            "{{\n  eth(da={}, sa={}),\n  ipv4(sa={}, da={}, ttl=64),\n  udp(sp={sp}, dp={}){fill}\n}}\n",
            mac(self.dst_mac),
            mac(self.src_mac),
            self.src_ip,
            self.dst_ip,
            self.dst_port,
        )
    }

    /// Starts trafgen and returns once it sends; it sends until [`Running::finish`] (or
    /// its packet cap). The run's time counts from its first packet.
    pub fn start(&self) -> Result<Running> {
        self.check()?;
        static N: AtomicU32 = AtomicU32::new(0);
        let cfg = std::env::temp_dir().join(format!(
            "xlb-trafgen-{}-{}.cfg",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&cfg, self.trafgen_config())
            .with_context(|| format!("writing {}", cfg.display()))?;
        let cap = match self.rate_pps {
            // A little beyond what the rate sends in the duration: it still stops by itself.
            Some(r) => (r as f64 * self.duration.as_secs_f64() * 1.5) as u64 + 1000,
            None => MAX_PACKETS,
        }
        .min(MAX_PACKETS);
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "trafgen"]);
                c
            }
            None => Command::new("trafgen"),
        };
        cmd.arg("--dev")
            .arg(&self.iface)
            .arg("--conf")
            .arg(&cfg)
            .args(["--num", &cap.to_string()])
            .args(["--cpus", &self.cpus.to_string()])
            .args(["--no-sock-mem", "--notouch-irq", "--no-cpu-stats"]);
        if let Some(r) = self.rate_pps {
            cmd.args(["--rate", &format!("{r}pps")]);
        }
        // A process group of its own: trafgen forks its sending processes, and a stop
        // signal must reach them all, as Ctrl-C does.
        let mut child = xlb_testbed::die_with_parent(&mut cmd)
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot run trafgen (run `cargo xtask setup`)")?;
        // Its stdout line by line on a thread: the start line now, the counts at the end.
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)) {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut r = Running {
            child: Some(child),
            cfg,
            started: Instant::now(),
            duration: self.duration,
            lines: rx,
            text: String::new(),
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match r.lines.recv_timeout(left) {
                Ok(line) => {
                    let started = line.contains(RUNNING);
                    r.text.push_str(&line);
                    r.text.push('\n');
                    if started {
                        break;
                    }
                }
                // Exited (stdout closed) or still silent: no run.
                Err(_) => bail!(
                    "trafgen did not start sending within {START_TIMEOUT:?}: {}",
                    r.text.trim().lines().last().unwrap_or("no output")
                ),
            }
        }
        r.started = Instant::now();
        Ok(r)
    }

    /// Sends for `duration` (or until the packet cap) and returns what trafgen sent.
    // The one-call form, for callers with nothing to do meanwhile (the VM benchmark).
    #[allow(dead_code)]
    pub fn run(&self) -> Result<Sent> {
        let r = self.start()?;
        r.wait_duration();
        r.finish()
    }
}

/// What one run sent, as trafgen counts it (frames handed to the interface).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Sent {
    pub packets: u64,
    pub bytes: u64,
    /// From start to the stop signal.
    pub secs: f64,
}

impl Sent {
    pub fn pps(&self) -> f64 {
        self.packets as f64 / self.secs
    }
}

/// A running trafgen; dropping it without [`Running::finish`] kills it.
pub struct Running {
    child: Option<Child>,
    cfg: PathBuf,
    started: Instant,
    duration: Duration,
    /// trafgen's stdout lines, from its reader thread.
    lines: std::sync::mpsc::Receiver<String>,
    text: String,
}

impl Running {
    /// Sleeps until the run's duration has passed since the start.
    pub fn wait_duration(&self) {
        if let Some(left) = self.duration.checked_sub(self.started.elapsed()) {
            std::thread::sleep(left);
        }
    }

    /// Stops trafgen (SIGINT: it prints its counts and exits) and returns its counts.
    pub fn finish(mut self) -> Result<Sent> {
        let mut child = self.child.take().expect("finish runs once");
        let secs = self.started.elapsed().as_secs_f64();
        let group = child.id() as libc::pid_t;
        // SAFETY: kill(2) on the process group our child leads (`ip netns exec` execs
        // trafgen, so it is trafgen and its forks); the child has not been waited for, so
        // the group id is not reused.
        unsafe { libc::kill(-group, libc::SIGINT) };
        let deadline = Instant::now() + EXIT_TIMEOUT;
        let status = loop {
            if let Some(s) = child.try_wait()? {
                break s;
            }
            if Instant::now() >= deadline {
                // SAFETY: as above; the group is still ours (its leader is not reaped).
                unsafe { libc::kill(-group, libc::SIGKILL) };
                let _ = child.wait();
                bail!("trafgen did not exit within {EXIT_TIMEOUT:?} of SIGINT");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        // The reader thread ends at EOF, which the exit brings.
        let mut text = std::mem::take(&mut self.text);
        while let Ok(line) = self.lines.recv_timeout(EXIT_TIMEOUT) {
            text.push_str(&line);
            text.push('\n');
        }
        if let Some(mut e) = child.stderr.take() {
            e.read_to_string(&mut text)?;
        }
        let packets = count_of(&text, "packets outgoing");
        let bytes = count_of(&text, "bytes outgoing");
        match (packets, bytes) {
            (Some(0), _) => bail!("trafgen ({status}) sent nothing: {}", text.trim()),
            (Some(packets), Some(bytes)) => Ok(Sent {
                packets,
                bytes,
                secs,
            }),
            _ => bail!(
                "trafgen ({status}) printed no packet count: {}",
                text.trim().lines().last().unwrap_or("")
            ),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: the process group our unreaped child leads (see `finish`).
            unsafe { libc::kill(-(c.id() as libc::pid_t), libc::SIGKILL) };
            let _ = c.wait();
        }
        let _ = std::fs::remove_file(&self.cfg);
    }
}

/// The number before `what` on one of trafgen's summary lines ("  5000 packets outgoing").
fn count_of(text: &str, what: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.trim().strip_suffix(what)?.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flood(flows: u16) -> UdpFlood {
        UdpFlood::small(
            Some("ns"),
            "eth0",
            [2, 0, 0, 0, 0, 1],
            [2, 0, 0, 0, 0, 2],
            Ipv4Addr::new(198, 18, 10, 2),
            Ipv4Addr::new(198, 18, 0, 10),
            80,
            flows,
            Duration::from_secs(1),
        )
    }

    #[test]
    fn config_names_macs_addresses_and_ports() {
        let c = flood(16).trafgen_config();
        assert!(
            c.contains("eth(da=02:00:00:00:00:02, sa=02:00:00:00:00:01)"),
            "{c}"
        );
        assert!(
            c.contains("ipv4(sa=198.18.10.2, da=198.18.0.10, ttl=64)"),
            "{c}"
        );
        assert!(c.contains("udp(sp=dinc(10000, 10015), dp=80)"), "{c}");
        assert!(c.contains("fill(0x5a, 18)"), "{c}");
        assert!(flood(1).trafgen_config().contains("udp(sp=10000, dp=80)"));
    }

    #[test]
    fn bad_floods_are_refused() {
        assert!(flood(0).check().is_err());
        let mut f = flood(2);
        f.first_src_port = 65535;
        assert!(f.check().is_err());
        let mut f = flood(2);
        f.rate_pps = Some(0);
        assert!(f.check().is_err());
        assert!(flood(2).check().is_ok());
    }

    /// Root only: trafgen in a private namespace sends over a veth pair at a capped rate,
    /// and the peer receives what it says it sent.
    #[test]
    fn sends_what_it_counts() {
        // SAFETY: geteuid(2) cannot fail and touches no memory.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("SKIPPED (needs root): sends_what_it_counts");
            return;
        }
        let sent = std::thread::spawn(|| -> Result<(Sent, u64)> {
            // SAFETY: unshare(2) changes only this thread's network namespace; commands
            // spawned from this thread inherit it.
            ensure!(unsafe { libc::unshare(libc::CLONE_NEWNET) } == 0, "unshare");
            let sh = |script: &str| {
                let ok = Command::new("sh").args(["-ec", script]).status()?.success();
                ensure!(ok, "{script}");
                Ok(())
            };
            sh("ip link add name tga type veth peer name tgb
                ip link set tga up
                ip link set tgb up")?;
            let mut f = flood(8);
            f.netns = None;
            f.iface = "tga".into();
            f.rate_pps = Some(20_000);
            let sent = f.run()?;
            std::thread::sleep(Duration::from_millis(200));
            // (/sys/class/net shows the namespace sysfs was mounted in, not this one.)
            let out = Command::new("ip")
                .args(["-s", "-j", "link", "show", "dev", "tgb"])
                .output()?;
            let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
            let rx = v[0]["stats64"]["rx"]["packets"].as_u64();
            Ok((sent, rx.ok_or_else(|| anyhow::anyhow!("no RX counter"))?))
        })
        .join()
        .unwrap()
        .unwrap();
        let (sent, rx) = sent;
        assert!(sent.packets > 1000, "{sent:?}");
        assert_eq!(sent.bytes, sent.packets * 60, "{sent:?}");
        // The peer also saw the links' own few packets (IPv6 router solicitations...).
        assert!(
            rx >= sent.packets && rx < sent.packets + 50,
            "rx {rx}, {sent:?}"
        );
    }

    #[test]
    fn reads_trafgen_counts() {
        let out = "Running! Hang up with ^C!\n\n\n        5000 packets outgoing\n      \
                   300000 bytes outgoing\n";
        assert_eq!(count_of(out, "packets outgoing"), Some(5000));
        assert_eq!(count_of(out, "bytes outgoing"), Some(300000));
        assert_eq!(count_of("nothing", "packets outgoing"), None);
    }
}

//! The backends' side of `dsr-ipip` in the testbed: `xlbd --decap` on a backend's
//! interface, started and stopped per backend (its counters are its last line).

use std::fs::File;
use std::process::Stdio;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

use crate::daemon::bin_path;
use crate::proc::{Tracked, die_with_parent};
use crate::topology::Testbed;

/// How long `xlbd --decap` may take to attach.
const ATTACH_TIMEOUT: Duration = Duration::from_secs(10);

impl Testbed {
    fn decap_log(&self, j: usize) -> std::path::PathBuf {
        self.run_file(&format!("decap-{j}.log"))
    }

    /// Starts `xlbd --decap` on backend `j`'s interface in `mode` (native or skb) and
    /// waits until it has attached.
    pub fn start_decap(&self, j: usize, mode: &str) -> Result<()> {
        let xlbd = bin_path("xlbd")?;
        let b = self.backend(j);
        let path = self.decap_log(j);
        let log = File::create(&path).context("creating the decap log")?;
        let mut cmd = b.ns.cmd(&xlbd.to_string_lossy());
        cmd.args(["--decap", "--iface", &b.link.peer_if, "--mode", mode])
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        die_with_parent(&mut cmd);
        let child = cmd.spawn().context("starting xlbd --decap")?;
        self.track(Tracked::new(format!("decap-{j}"), child));
        wait_attached(&path, &format!("backend {j}"))
    }

    /// Attaches the object's pass-everything program (`xlbd --decap --pass-only`) to the
    /// router's port toward the xlb node of a `Layout::Dsr` testbed: that veth takes the
    /// node's XDP_TX frames through its XDP path, and without a program there some of
    /// them were lost or held back (native mode; skb mode does not need it).
    pub fn start_node_port_pass(&self) -> Result<()> {
        let node = self.node().context("not a DSR testbed")?;
        let xlbd = bin_path("xlbd")?;
        let path = self.run_file("node-port-pass.log");
        let log = File::create(&path).context("creating the pass log")?;
        let mut cmd = self.lb().cmd(&xlbd.to_string_lossy());
        cmd.args(["--decap", "--pass-only", "--iface", &node.link.lb_if])
            .args(["--mode", "native"])
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        die_with_parent(&mut cmd);
        let child = cmd.spawn().context("starting xlbd --decap --pass-only")?;
        self.track(Tracked::new("node-port-pass", child));
        wait_attached(&path, "the router's port to the node")
    }

    /// Stops backend `j`'s `xlbd --decap` (SIGTERM) and returns its counters line
    /// (`decap: rx=N stripped=N pass=N drop_malformed=N`).
    pub fn stop_decap(&self, j: usize) -> Result<String> {
        let name = format!("decap-{j}");
        {
            let mut children = self.children.lock().expect("children lock");
            let child = children
                .iter_mut()
                .find(|c| c.name() == name)
                .with_context(|| format!("no {name} running"))?;
            child.stop();
        }
        let text = std::fs::read_to_string(self.decap_log(j)).unwrap_or_default();
        text.lines()
            .find(|l| l.starts_with("decap:"))
            .map(str::to_owned)
            .with_context(|| format!("{name} printed no counters:\n{text}"))
    }
}

/// Waits until the `xlbd --decap` logging to `log` has attached.
fn wait_attached(log: &std::path::Path, what: &str) -> Result<()> {
    let deadline = Instant::now() + ATTACH_TIMEOUT;
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains("attached to") {
            return Ok(());
        }
        if text.contains("error") || Instant::now() >= deadline {
            bail!("xlbd --decap on {what} did not attach:\n{text}");
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// One counter of a `decap: ...` line.
pub fn decap_counter(line: &str, name: &str) -> Option<u64> {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('=')?.parse().ok())
}

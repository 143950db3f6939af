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
        let deadline = Instant::now() + ATTACH_TIMEOUT;
        loop {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            if text.contains("attached to") {
                return Ok(());
            }
            if text.contains("error") || Instant::now() >= deadline {
                bail!("xlbd --decap on backend {j} did not attach:\n{text}");
            }
            thread::sleep(Duration::from_millis(50));
        }
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

/// One counter of a `decap: ...` line.
pub fn decap_counter(line: &str, name: &str) -> Option<u64> {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('=')?.parse().ok())
}

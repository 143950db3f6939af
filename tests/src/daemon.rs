//! Starting xlbd in the LB namespace and driving it with the xlb CLI.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

use crate::proc::{self, Tracked};
use crate::topology::Testbed;

/// How long xlbd may take to answer `xlb status` after it starts.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one CLI call may take.
const CLI_TIMEOUT: Duration = Duration::from_secs(10);

/// Where xlbd and xlb are: `$XLB_BIN_DIR`, else `<target dir>/debug` where the target dir is
/// `$CARGO_TARGET_DIR` or the workspace's `target/`.
pub fn bin_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("XLB_BIN_DIR") {
        return d.into();
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("debug")
}

/// The path of one of the project's binaries (`xlbd`, `xlb`), checked to exist.
pub fn bin_path(name: &str) -> Result<PathBuf> {
    let p = bin_dir().join(name);
    if !p.is_file() {
        bail!(
            "{name} not found at {}: run `cargo build --workspace --exclude lb-ebpf --bins` \
             (or `cargo xtask test`)",
            p.display()
        );
    }
    Ok(p)
}

impl Testbed {
    /// xlbd's control socket (a path, so it works from any namespace).
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("xlbd.sock")
    }

    /// A file in this testbed's run directory (removed with it).
    pub fn run_file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// xlbd's stdout and stderr.
    pub fn xlbd_log(&self) -> PathBuf {
        self.dir.path().join("xlbd.log")
    }

    /// xlbd's state dir (where it saves services and backends).
    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// xlbd's pin dir (in the testbed's own bpffs).
    pub fn pin_dir(&self) -> PathBuf {
        self.dir.pin_dir()
    }

    /// Ends the running xlbd with `signal` (SIGKILL: a crash; SIGTERM: a stop) and reaps
    /// it; the data path it pinned stays.
    pub fn kill_xlbd(&mut self, signal: i32) -> Result<()> {
        let mut xlbd = self.xlbd.take().context("no xlbd is running")?;
        // SAFETY: kill(2) on the pid of our own unreaped child.
        unsafe { libc::kill(xlbd.id() as libc::pid_t, signal) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while xlbd.exited().is_none() {
            if Instant::now() >= deadline {
                bail!("xlbd did not exit within 5 s of signal {signal}");
            }
            thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Starts xlbd in the LB namespace on every LB-side veth (native mode unless `extra`
    /// has a `--mode`; pins in the testbed's bpffs, state in its run dir) and waits until
    /// `xlb status` answers. A second call after [`Testbed::kill_xlbd`] restarts it, and it
    /// adopts what the first pinned and saved.
    /// With `--config` in `extra`, neither `--iface` nor `--mode` is given: the file's are
    /// used.
    pub fn start_xlbd(&mut self, extra: &[&str]) -> Result<()> {
        if self.xlbd.is_some() {
            bail!("xlbd is already running in this testbed");
        }
        let xlbd = bin_path("xlbd")?;
        let log = File::create(self.xlbd_log()).context("creating xlbd.log")?;
        let mut cmd = self.xlbd_ns().cmd(&xlbd.to_string_lossy());
        let from_file = extra.contains(&"--config");
        for iface in self.lb_ifaces().iter().filter(|_| !from_file) {
            cmd.args(["--iface", iface]);
        }
        if !extra.contains(&"--mode") && !from_file {
            cmd.args(["--mode", "native"]);
        }
        cmd.arg("--socket")
            .arg(self.socket())
            .arg("--pin-dir")
            .arg(self.dir.pin_dir())
            .arg("--state-dir")
            .arg(self.state_dir())
            .args(extra)
            .env("NO_COLOR", "1") // a log file, not a terminal
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let what = proc::describe(&cmd);
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot run `{what}`"))?;
        self.xlbd = Some(Tracked::new("xlbd", child));
        self.wait_ready()
    }

    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.xlbd.as_mut().and_then(Tracked::exited) {
                self.xlbd = None;
                bail!("xlbd exited early ({status}):\n{}", self.xlbd_log_tail(20));
            }
            if self.socket().exists() && self.xlb(&["status"]).is_ok_and(|o| o.status.success()) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "xlbd did not answer `xlb status` within {START_TIMEOUT:?}:\n{}",
                    self.xlbd_log_tail(20)
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// The last `lines` lines of xlbd's log, under a header naming the file.
    pub fn xlbd_log_tail(&self, lines: usize) -> String {
        let path = self.xlbd_log();
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        let tail = all[all.len().saturating_sub(lines)..].join("\n");
        format!("--- tail of {} ---\n{tail}\n---", path.display())
    }

    /// Runs `xlb --socket <sock> args...` from the root namespace.
    pub fn xlb(&self, args: &[&str]) -> Result<Output> {
        let mut cmd = Command::new(bin_path("xlb")?);
        cmd.arg("--socket").arg(self.socket()).args(args);
        proc::output_timeout(&mut cmd, CLI_TIMEOUT)
    }

    /// Makes [`Testbed::xlb_ok`] print each command as `$ xlb ...`, and its output.
    pub fn set_echo(&mut self, on: bool) {
        self.echo = on;
    }

    /// Like [`Testbed::xlb`] but a non-zero exit is an error (with the CLI's stderr);
    /// returns stdout.
    pub fn xlb_ok(&self, args: &[&str]) -> Result<String> {
        if self.echo {
            println!("$ xlb {}", args.join(" "));
        }
        let out = self.xlb(args)?;
        if !out.status.success() {
            bail!(
                "`xlb {}` failed ({}): {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if self.echo {
            print!("{stdout}");
        }
        Ok(stdout)
    }

    /// `xlb service add <service>`, then `xlb backend add <service> <addr>:<port>` for the
    /// address of every backend of the testbed (IPv6 ones for a `[VIP]:port` service).
    pub fn add_service_with_backends(&self, service: &str, backend_port: u16) -> Result<()> {
        self.xlb_ok(&["service", "add", service])?;
        for b in &self.backends {
            let backend = if service.starts_with('[') {
                format!("[{}]:{backend_port}", b.addr6())
            } else {
                format!("{}:{backend_port}", b.addr())
            };
            self.xlb_ok(&["backend", "add", service, &backend])?;
        }
        Ok(())
    }
}

//! Running commands: checked one-shot runs with a time limit, and long-running children that
//! are tracked by pid and stopped (only them) when their owner is dropped.

use std::io::Read;
use std::os::unix::process::CommandExt as _;
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

/// How long a one-shot helper command (`ip`, `ethtool`, `ss`, ...) may take.
pub const CMD_TIMEOUT: Duration = Duration::from_secs(10);

/// A command line as one string, for error messages.
pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs `cmd` with stdin closed, collecting its output; kills it after `timeout`.
pub fn output_timeout(cmd: &mut Command, timeout: Duration) -> Result<Output> {
    let what = describe(cmd);
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run `{what}`"))?;
    let out = drain(child.stdout.take());
    let err = drain(child.stderr.take());
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("`{what}` did not finish within {timeout:?}");
        }
        thread::sleep(Duration::from_millis(10));
    };
    Ok(Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    })
}

fn drain(pipe: Option<impl Read + Send + 'static>) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_end(&mut buf);
        }
        buf
    })
}

/// Runs `cmd` (within [`CMD_TIMEOUT`]) and returns its stdout; a non-zero exit is an error
/// that names the command and carries its stderr.
pub fn run(cmd: &mut Command) -> Result<String> {
    let out = output_timeout(cmd, CMD_TIMEOUT)?;
    if !out.status.success() {
        bail!(
            "`{}` failed ({}): {}",
            describe(cmd),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A child process this crate started. Dropping it stops it: SIGTERM, then SIGKILL after
/// a grace period. Only this pid is ever signalled, and only while it is not yet reaped.
#[derive(Debug)]
pub struct Tracked {
    name: String,
    child: Child,
}

/// Makes `cmd`'s process get SIGTERM if the thread that spawns it dies (e.g. the test
/// process is killed before its `Drop`s run). Spawn from the thread that owns the testbed.
pub fn die_with_parent(cmd: &mut Command) -> &mut Command {
    // SAFETY: the closure only calls prctl(2), which is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    }
}

impl Tracked {
    pub fn new(name: impl Into<String>, child: Child) -> Tracked {
        Tracked {
            name: name.into(),
            child,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The process id (for reading its CPU time from /proc).
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// `Some(status)` once the process has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Stops the process (if still running) and reaps it.
    pub fn stop(&mut self) {
        if self.exited().is_some() {
            return;
        }
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: kill(2) on the pid of our own unreaped child; no memory is involved.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if self.exited().is_some() {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.stop();
    }
}

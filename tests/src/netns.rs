//! A named network namespace (`ip netns add`), deleted on drop, and ways to run code and
//! commands inside it.

use std::fs::File;
use std::os::fd::AsRawFd as _;
use std::process::Command;
use std::thread;

use anyhow::{Context as _, Result, anyhow};

use crate::proc;

#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates the namespace and brings its loopback up.
    pub fn create(name: &str) -> Result<Netns> {
        proc::run(Command::new("ip").args(["netns", "add", name]))?;
        let ns = Netns {
            name: name.to_owned(),
        };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip netns exec <ns> <program>`: add arguments and run it (`ip netns exec` execs the
    /// program, so the child's pid is the program's).
    pub fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// Runs `program args...` in the namespace; non-zero exit is an error. Returns stdout.
    pub fn exec(&self, program: &str, args: &[&str]) -> Result<String> {
        proc::run(self.cmd(program).args(args))
    }

    /// `ip -n <ns> args...`.
    pub fn ip(&self, args: &[&str]) -> Result<()> {
        proc::run(Command::new("ip").arg("-n").arg(&self.name).args(args)).map(drop)
    }

    /// Writes a sysctl of this namespace, e.g. `sysctl("net/ipv4/ip_forward", "1")`.
    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        let path = format!("/proc/sys/{key}");
        self.run(|| std::fs::write(&path, value))?
            .with_context(|| format!("writing {path} in netns {}", self.name))
    }

    fn handle(&self) -> Result<File> {
        let path = format!("/var/run/netns/{}", self.name);
        File::open(&path).with_context(|| format!("opening {path}"))
    }

    /// Runs `f` on a new thread that has entered this namespace and returns its result.
    /// Sockets made by `f` stay in the namespace after it returns.
    pub fn run<T: Send, F: FnOnce() -> T + Send>(&self, f: F) -> Result<T> {
        let handle = self.handle()?;
        thread::scope(|s| {
            s.spawn(move || {
                enter(&handle)?;
                Ok(f())
            })
            .join()
            .map_err(|_| anyhow!("thread in netns {} panicked", self.name))?
        })
    }
}

/// Moves the calling thread into the network namespace `ns` (network namespaces are
/// per thread).
fn enter(ns: &File) -> Result<()> {
    // SAFETY: setns(2) with a valid open fd; it changes only this thread's namespace.
    let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).context("setns(CLONE_NEWNET)");
    }
    Ok(())
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = proc::run(Command::new("ip").args(["netns", "del", &self.name])) {
            eprintln!("xlb-testbed: cleanup: {e:#}");
        }
    }
}

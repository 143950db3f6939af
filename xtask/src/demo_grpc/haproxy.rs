//! The demo's pool once more through HAProxy `mode tcp` in the LB namespace, when HAProxy
//! is installed: a proxy terminates the client's connection and opens its own to the
//! backend, so the LB holds two sockets per client-server pair where xlb holds none.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use xlb_testbed::Testbed;

use super::{POOL, pool_run, print_header, row};

/// HAProxy listens on the LB's own address on client 0's link, at this port.
const LISTEN_PORT: u16 = 50052;
/// How long HAProxy may take to listen: 50 tries 100 ms apart.
const START_TRIES: usize = 50;

/// Runs the pool through HAProxy and prints its row and connection counts; says so and
/// does nothing when HAProxy is not installed.
pub fn compare(tb: &Testbed, backend_port: u16) -> Result<()> {
    let installed = crate::cmd::probe(Command::new("sh").args(["-c", "command -v haproxy"]));
    if installed.is_none() {
        println!("\n(HAProxy is not installed: no comparison with a proxy)");
        return Ok(());
    }
    let listen = SocketAddr::new(tb.client(0).lb_addr().into(), LISTEN_PORT);
    let _haproxy = Haproxy::start(tb, listen, backend_port)?;
    println!(
        "\nthe same pool of {POOL} through HAProxy (mode tcp, balance roundrobin) at {listen} \
         in the LB namespace:"
    );
    print_header();
    let (cfg, report, census) = pool_run(tb, listen, 23000)?;
    row(tb, 0, &cfg, Ok(&report));
    census.print("HAProxy");
    Ok(())
}

/// An `haproxy -db` (foreground) process in the LB namespace; killed on drop.
struct Haproxy {
    child: Child,
    config: PathBuf,
}

impl Haproxy {
    fn start(tb: &Testbed, listen: SocketAddr, backend_port: u16) -> Result<Haproxy> {
        let config = std::env::temp_dir().join(format!("xlb-grpc-demo-{}.cfg", std::process::id()));
        let mut text = format!(
            "defaults\n  mode tcp\n  timeout connect 3s\n  timeout client 30s\n  \
             timeout server 30s\nfrontend grpc\n  bind {listen}\n  default_backend grpc\n\
             backend grpc\n  balance roundrobin\n"
        );
        for (j, b) in tb.backends().iter().enumerate() {
            text.push_str(&format!("  server b{j} {}:{backend_port}\n", b.addr()));
        }
        std::fs::write(&config, text).with_context(|| format!("writing {}", config.display()))?;
        let child = tb
            .lb()
            .cmd("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .context("starting haproxy")?;
        let mut haproxy = Haproxy { child, config };
        haproxy.wait_listening(tb, listen)?;
        Ok(haproxy)
    }

    fn wait_listening(&mut self, tb: &Testbed, listen: SocketAddr) -> Result<()> {
        let filter = format!("sport = :{}", listen.port());
        for _ in 0..START_TRIES {
            if let Some(status) = self.child.try_wait()? {
                bail!("haproxy exited ({status})");
            }
            if !tb.lb().exec("ss", &["-Htln", &filter])?.trim().is_empty() {
                return Ok(());
            }
            thread::sleep(Duration::from_millis(100));
        }
        bail!("haproxy did not listen on {listen} within 5 s")
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.config);
    }
}

//! iperf3 servers in backend namespaces and bounded iperf3 clients in client namespaces,
//! and ping. iperf3 runs as child processes of the test, tracked by pid.

use std::net::IpAddr;
use std::process::Stdio;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};

use crate::netns::Netns;
use crate::proc::{self, Tracked};
use crate::topology::Testbed;

const LISTEN_TIMEOUT: Duration = Duration::from_secs(5);

/// The figures of one iperf3 run, from its JSON report.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IperfResult {
    pub sent_bps: f64,
    pub received_bps: f64,
}

impl IperfResult {
    pub fn received_gbps(&self) -> f64 {
        self.received_bps / 1e9
    }
}

/// `ping -c 1 -W 1 <addr>` from `ns`: whether an answer came. Exit codes other than
/// 0 (answer) and 1 (no answer) are errors, e.g. ping not installed.
pub fn ping(ns: &Netns, addr: IpAddr) -> Result<bool> {
    let mut cmd = ns.cmd("ping");
    cmd.args(["-c", "1", "-W", "1", &addr.to_string()]);
    let out = proc::output_timeout(&mut cmd, proc::CMD_TIMEOUT)?;
    match out.status.code() {
        Some(0) => Ok(true),
        Some(1) => Ok(false),
        _ => bail!(
            "`{}` failed ({}): {}",
            proc::describe(&cmd),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ),
    }
}

impl Testbed {
    /// Starts `iperf3 -s -p <port>` in backend `j`'s namespace and waits until it listens.
    pub fn iperf_server(&self, j: usize, port: u16) -> Result<()> {
        let ns = &self.backend(j).ns;
        let mut cmd = ns.cmd("iperf3");
        let child = proc::die_with_parent(&mut cmd)
            .args(["-s", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot run iperf3 (run `cargo xtask setup`)")?;
        let mut server = Tracked::new(format!("iperf3 -s in {}", ns.name()), child);
        let deadline = Instant::now() + LISTEN_TIMEOUT;
        let filter = format!("sport = :{port}");
        loop {
            if let Some(status) = server.exited() {
                bail!("{} exited ({status})", server.name());
            }
            if !ns.exec("ss", &["-Hltn", &filter])?.trim().is_empty() {
                break;
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} is not listening after {LISTEN_TIMEOUT:?}",
                    server.name()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
        self.track(server);
        Ok(())
    }

    /// Runs `iperf3 -c <addr> -p <port> -t <secs> -J` (with `-R` when `reverse`: the server
    /// sends) from client `k`'s namespace, bounded in time.
    pub fn iperf_client(
        &self,
        k: usize,
        addr: IpAddr,
        port: u16,
        secs: u32,
        reverse: bool,
    ) -> Result<IperfResult> {
        self.iperf_client_streams(k, addr, port, secs, reverse, 1)
    }

    /// [`Testbed::iperf_client`] with `-P <streams>` parallel streams (benchmarks).
    pub fn iperf_client_streams(
        &self,
        k: usize,
        addr: IpAddr,
        port: u16,
        secs: u32,
        reverse: bool,
        streams: u32,
    ) -> Result<IperfResult> {
        let ns = &self.client(k).ns;
        let mut cmd = ns.cmd("iperf3");
        let (addr, port, secs_s) = (addr.to_string(), port.to_string(), secs.to_string());
        cmd.args(["-c", &addr, "-p", &port, "-t", &secs_s, "-J"])
            .args(["-P", &streams.to_string(), "--connect-timeout", "3000"]);
        if reverse {
            cmd.arg("-R");
        }
        let limit = Duration::from_secs(u64::from(secs) + 20);
        let out = proc::output_timeout(&mut cmd, limit)?;
        let report = String::from_utf8_lossy(&out.stdout);
        parse_report(&report)
            .with_context(|| format!("`{}` ({})", proc::describe(&cmd), out.status))
    }
}

fn parse_report(json: &str) -> Result<IperfResult> {
    let v: serde_json::Value = serde_json::from_str(json).context("iperf3 JSON report")?;
    if let Some(e) = v.get("error").and_then(|e| e.as_str()) {
        bail!("iperf3: {e}");
    }
    let bps = |section: &str| {
        v["end"][section]["bits_per_second"]
            .as_f64()
            .ok_or_else(|| anyhow!("iperf3 report has no end.{section}.bits_per_second"))
    };
    Ok(IperfResult {
        sent_bps: bps("sum_sent")?,
        received_bps: bps("sum_received")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_report_and_error() {
        let ok = r#"{"end":{"sum_sent":{"bits_per_second":2e9},"sum_received":{"bits_per_second":1.5e9}}}"#;
        let r = parse_report(ok).unwrap();
        assert_eq!((r.sent_bps, r.received_bps), (2e9, 1.5e9));
        let err = r#"{"start":{},"end":{},"error":"unable to connect to server"}"#;
        assert!(format!("{:#}", parse_report(err).unwrap_err()).contains("unable to connect"));
        assert!(parse_report("{}").is_err());
    }
}

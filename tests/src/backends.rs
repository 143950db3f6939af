//! Reading a service's backends back from xlbd (`xlb backend list --json`): weights,
//! counters and live flows, and waiting for a flow count to reach a value.

use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

use crate::topology::Testbed;

/// How often [`Testbed::wait_flows`] reads the listing again.
const POLL: Duration = Duration::from_millis(100);

/// One row of `xlb backend list --json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendRow {
    pub service: String,
    pub backend: String,
    pub index: u64,
    pub weight: u64,
    pub packets: u64,
    pub bytes: u64,
    pub flows: u64,
    /// up, down, checking or draining.
    pub state: String,
}

impl BackendRow {
    fn from_json(v: &Value) -> Result<BackendRow> {
        let s = |k: &str| {
            v[k].as_str()
                .map(str::to_owned)
                .with_context(|| format!("backend list: no string {k:?} in {v}"))
        };
        let n = |k: &str| {
            v[k].as_u64()
                .with_context(|| format!("backend list: no number {k:?} in {v}"))
        };
        Ok(BackendRow {
            service: s("service")?,
            backend: s("backend")?,
            index: n("index")?,
            weight: n("weight")?,
            packets: n("packets")?,
            bytes: n("bytes")?,
            flows: n("flows")?,
            state: s("state")?,
        })
    }
}

impl Testbed {
    /// `ADDR:PORT` of backend `j`, as `xlb backend ...` takes and lists it.
    pub fn backend_addr(&self, j: usize, port: u16) -> String {
        format!("{}:{port}", self.backend(j).addr())
    }

    /// `xlb backend list <service> --json`, parsed.
    pub fn backend_rows(&self, service: &str) -> Result<Vec<BackendRow>> {
        let out = self.xlb_ok(&["backend", "list", service, "--json"])?;
        let v: Value = serde_json::from_str(&out)
            .with_context(|| format!("backend list --json is not JSON: {out:?}"))?;
        let rows = v["backends"]
            .as_array()
            .with_context(|| format!("backend list --json has no \"backends\" array: {out}"))?;
        rows.iter().map(BackendRow::from_json).collect()
    }

    /// The row of `backend` (`ADDR:PORT`) in `service`, if it is there.
    pub fn backend_row(&self, service: &str, backend: &str) -> Result<Option<BackendRow>> {
        let rows = self.backend_rows(service)?;
        Ok(rows.into_iter().find(|r| r.backend == backend))
    }

    /// Reads the live flows of `backend` (or, with `None`, of all the service's backends
    /// together) until `done(flows)` holds or `timeout` has passed, and returns the last
    /// count read. Counting reads the connection table, so a change shows after a moment.
    pub fn wait_flows(
        &self,
        service: &str,
        backend: Option<&str>,
        timeout: Duration,
        done: impl Fn(u64) -> bool,
    ) -> Result<u64> {
        let deadline = Instant::now() + timeout;
        loop {
            let rows = self.backend_rows(service)?;
            if let Some(b) = backend
                && !rows.iter().any(|r| r.backend == b)
            {
                bail!("backend {b} is not in the list of {service}");
            }
            let flows = rows
                .iter()
                .filter(|r| backend.is_none_or(|b| r.backend == b))
                .map(|r| r.flows)
                .sum();
            if done(flows) || Instant::now() >= deadline {
                return Ok(flows);
            }
            thread::sleep(POLL);
        }
    }
}

//! Per-packet cost under real traffic: the kernel's own run-time statistics of an XDP
//! program (`run_time_ns` and `run_cnt`, what `bpftool prog show` prints), read before and
//! after a load. The kernel keeps them only while statistics are on
//! (`kernel.bpf_stats_enabled`); [`StatsOn`] turns them on for as long as it lives.

use std::os::fd::OwnedFd;

use anyhow::{Context as _, Result, anyhow, bail};
use serde::Serialize;
use xlb_testbed::Netns;

/// Run-time statistics on while this lives. It holds a BPF_ENABLE_STATS descriptor: the
/// same kernel switch as the `kernel.bpf_stats_enabled` sysctl, counted, so it never turns
/// off statistics someone else turned on, and the kernel releases it when the process
/// ends, even if it is killed (a sysctl written back on drop would stay on after a kill).
pub struct StatsOn(#[allow(dead_code)] OwnedFd);

impl StatsOn {
    pub fn new() -> Result<StatsOn> {
        aya::sys::enable_stats(aya::sys::Stats::RunTime)
            .map(StatsOn)
            .map_err(|e| anyhow!("turning on BPF run-time statistics: {e}"))
    }
}

/// A program's counters at one moment, or their difference over a load.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct ProgStats {
    pub run_time_ns: u64,
    pub run_cnt: u64,
}

impl ProgStats {
    /// The counters of the loaded program `id`.
    pub fn of(id: u32) -> Result<ProgStats> {
        for info in aya::programs::loaded_programs() {
            let info = info.context("listing BPF programs")?;
            if info.id() == id {
                return Ok(ProgStats {
                    run_time_ns: info.run_time().as_nanos() as u64,
                    run_cnt: info.run_count(),
                });
            }
        }
        bail!("no BPF program with id {id}")
    }

    pub fn since(&self, earlier: &ProgStats) -> ProgStats {
        ProgStats {
            run_time_ns: self.run_time_ns.saturating_sub(earlier.run_time_ns),
            run_cnt: self.run_cnt.saturating_sub(earlier.run_cnt),
        }
    }

    /// ns per run (one run per packet for XDP).
    pub fn ns_per_packet(&self) -> Option<f64> {
        (self.run_cnt > 0).then(|| self.run_time_ns as f64 / self.run_cnt as f64)
    }
}

/// One load's counters of the program measured: packets (runs) and ns per packet.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Phase {
    pub packets: u64,
    pub run_time_ns: u64,
    pub ns_per_packet: Option<f64>,
}

impl From<ProgStats> for Phase {
    fn from(s: ProgStats) -> Phase {
        Phase {
            packets: s.run_cnt,
            run_time_ns: s.run_time_ns,
            ns_per_packet: s.ns_per_packet(),
        }
    }
}

/// The id of the XDP program attached to `iface` in namespace `ns` (from `ip -j link`).
pub fn xdp_prog_id(ns: &Netns, iface: &str) -> Result<u32> {
    let out = ns.exec("ip", &["-j", "-d", "link", "show", "dev", iface])?;
    let v: serde_json::Value = serde_json::from_str(&out).context("parsing `ip -j link`")?;
    prog_id_of(&v).ok_or_else(|| anyhow!("no XDP program on {iface} in {}", ns.name()))
}

fn prog_id_of(v: &serde_json::Value) -> Option<u32> {
    let xdp = v.get(0)?.get("xdp")?;
    let id = xdp
        .get("prog")
        .and_then(|p| p.get("id"))
        .or_else(|| xdp.get("attached")?.get(0)?.get("prog")?.get("id"))?;
    id.as_u64().and_then(|i| u32::try_from(i).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differences_and_ids() {
        let a = ProgStats {
            run_time_ns: 1000,
            run_cnt: 10,
        };
        let b = ProgStats {
            run_time_ns: 4000,
            run_cnt: 40,
        };
        assert_eq!(b.since(&a).ns_per_packet(), Some(100.0));
        assert_eq!(a.since(&a).ns_per_packet(), None);
        let v: serde_json::Value =
            serde_json::from_str(r#"[{"ifname":"x","xdp":{"mode":1,"prog":{"id":42}}}]"#).unwrap();
        assert_eq!(prog_id_of(&v), Some(42));
        let none: serde_json::Value = serde_json::from_str(r#"[{"ifname":"x"}]"#).unwrap();
        assert_eq!(prog_id_of(&none), None);
    }
}

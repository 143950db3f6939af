//! CPU time from /proc: the machine's softirq time (where the kernel forwards packets:
//! XDP, netfilter, veth, the TCP/IP stacks of every namespace) and the user+system time of
//! given processes (the proxies and their workers).

use std::time::Duration;

use anyhow::{Context as _, Result};

/// USER_HZ: /proc/stat and /proc/<pid>/stat count in ticks of 1/100 s on Linux.
const TICKS_PER_S: f64 = 100.0;

/// A reading to subtract from a later one.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CpuReading {
    pub softirq_ticks: u64,
    pub proc_ticks: u64,
}

impl CpuReading {
    /// Reads the machine's softirq ticks and the utime+stime ticks of `pids`.
    pub fn now(pids: &[u32]) -> Result<CpuReading> {
        let stat = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
        let softirq_ticks = softirq_of_stat(&stat).context("no cpu line in /proc/stat")?;
        let proc_ticks = pids
            .iter()
            .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/stat")).ok())
            .filter_map(|s| utime_stime_of_pid_stat(&s))
            .sum();
        Ok(CpuReading {
            softirq_ticks,
            proc_ticks,
        })
    }

    /// CPU time spent between `earlier` and `self`: softirq plus the processes'.
    pub fn since(&self, earlier: &CpuReading) -> Duration {
        let ticks = self.softirq_ticks.saturating_sub(earlier.softirq_ticks)
            + self.proc_ticks.saturating_sub(earlier.proc_ticks);
        Duration::from_secs_f64(ticks as f64 / TICKS_PER_S)
    }
}

/// The `softirq` column (the 7th number) of the `cpu` line of /proc/stat.
fn softirq_of_stat(stat: &str) -> Option<u64> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    line.split_whitespace().nth(7)?.parse().ok()
}

/// utime + stime (fields 14 and 15) of /proc/<pid>/stat. The command name (field 2) is in
/// parentheses and may hold spaces, so fields are counted after its closing parenthesis.
fn utime_stime_of_pid_stat(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut f = rest.split_whitespace().skip(11); // field 3 is the first after ')'
    let utime: u64 = f.next()?.parse().ok()?;
    let stime: u64 = f.next()?.parse().ok()?;
    Some(utime + stime)
}

/// The pids whose parent is `parent` (nginx's workers under its master).
pub fn children_of(parent: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| ppid_of_pid_stat(&s))
                == Some(parent)
        })
        .collect()
}

fn ppid_of_pid_stat(stat: &str) -> Option<u32> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_stat_lines() {
        let stat = "cpu  100 2 300 4000 5 6 77 0 0 0\ncpu0 50 1 150 2000 2 3 40 0 0 0\n";
        assert_eq!(softirq_of_stat(stat), Some(77));
        assert_eq!(softirq_of_stat("intr 1 2\n"), None);
        let pid = "4242 (nginx: worker (x)) S 4241 4242 4242 0 -1 4194560 100 0 0 0 \
                   12 34 0 0 20 0 1 0 123 0 0";
        assert_eq!(utime_stime_of_pid_stat(pid), Some(46));
        assert_eq!(ppid_of_pid_stat(pid), Some(4241));
        let a = CpuReading {
            softirq_ticks: 10,
            proc_ticks: 5,
        };
        let b = CpuReading {
            softirq_ticks: 60,
            proc_ticks: 55,
        };
        assert_eq!(b.since(&a), Duration::from_secs(1));
    }
}

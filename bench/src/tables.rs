//! `xlb-bench tables`: how long a change of a 65537-slot backend table takes to reach the
//! real maps (needs root: the program is loaded, not attached, on a thread in a private
//! network namespace). Medians of several runs, printed as one JSON line and saved to
//! `tables.json`:
//!
//! - `full_rewrite_ms`: all 65537 slots changed and the flip (`Dataplane` calls);
//! - `weight_change_ms`: one backend's weight changed in a 100-backend service, the whole
//!   `ControlState::set_weight` (Maglev build, table write, flip), spaced from the previous
//!   change; `maglev_build_ms` is the build alone, `weight_change_write_ms` the write and
//!   flip alone, `weight_change_slots_written` how many slots changed,
//!   `weight_change_wait_ms` what it waited for the previous grace period (0 unless the
//!   machine is so loaded that one outlasts the pause);
//! - `back_to_back_change_ms`: the same change right after another one, which first waits
//!   for the grace period of the previous flip (`back_to_back_wait_ms`).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow};
use lb_common::{DEFAULT_TABLE_AREA, ServiceValue};
use lb_userspace::addr::{BackendAddr, ServiceAddr};
use lb_userspace::bpf::BpfDataplane;
use lb_userspace::dataplane::Dataplane as _;
use lb_userspace::state::ControlState;
use lb_userspace::table::{TableEntry, build_table};

use crate::stats::median;

/// Table size of the measured service: the default, and the largest the issue names.
const M: u32 = 65537;
const BACKENDS: u32 = 100;
const RUNS: usize = 9;
const FLOW_ENTRIES: u32 = 1024;
/// Pause between spaced changes: longer than an RCU grace period here (about 4-20 ms).
const SPACING: Duration = Duration::from_millis(100);

/// Runs the measurement on a thread in a private network namespace.
pub fn run(out: &Path) -> Result<()> {
    let line = std::thread::spawn(|| {
        // SAFETY: unshare(2) changes only this thread's network namespace.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            return Err(std::io::Error::last_os_error()).context("unshare(CLONE_NEWNET)");
        }
        measure()
    })
    .join()
    .map_err(|_| anyhow!("the tables thread panicked"))??;
    serde_json::from_str::<serde_json::Value>(&line).context("tables line is not JSON")?;
    println!("{line}");
    std::fs::create_dir_all(out)?;
    let path = out.join("tables.json");
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, format!("{line}\n")).context("writing tables.json")?;
    std::fs::rename(&tmp, &path).context("writing tables.json")?;
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn med(xs: &[f64]) -> Result<f64> {
    median(xs)
        .map(|m| (m * 1000.0).round() / 1000.0)
        .ok_or_else(|| anyhow!("no samples"))
}

fn backend(i: u32) -> BackendAddr {
    format!("198.19.{}.{}:8080", i / 250, i % 250 + 2)
        .parse()
        .expect("a valid backend address")
}

fn measure() -> Result<String> {
    let mut dp = BpfDataplane::load_detached(FLOW_ENTRIES, DEFAULT_TABLE_AREA)
        .map_err(|e| anyhow!("loading xlb's program: {e}"))?;

    // Full rewrite: every one of the 65537 slots changes, then the service flips to them.
    let key = "198.18.0.99:80/tcp".parse::<ServiceAddr>()?.key();
    let mut full = Vec::new();
    for run in 0..RUNS as u32 {
        let slots = vec![run % 2; M as usize];
        let t = Instant::now();
        dp.write_table(0, &slots)?;
        let value = ServiceValue {
            id: 0,
            table_offset: 0,
            table_size: M,
            generation: run + 1,
            ..Default::default()
        };
        dp.put_service(&key, &value)?;
        full.push(ms(t.elapsed()));
    }
    dp.remove_service(&key)?;

    // One backend's weight changed in a 100-backend service, through the control state:
    // the Maglev build, the table write and the flip.
    let mut st = ControlState::new(dp);
    let svc: ServiceAddr = "198.18.0.10:80/tcp".parse()?;
    st.add_service(svc, Some(M))?;
    for i in 0..BACKENDS {
        st.add_backend(&svc, backend(i), Some(100))?;
    }
    let entries: Vec<TableEntry> = (0..BACKENDS)
        .map(|i| TableEntry {
            addr: backend(i),
            index: i,
            weight: if i == 0 { 50 } else { 100 },
        })
        .collect();
    let mut build = Vec::new();
    let mut spaced = Vec::new();
    let mut write = Vec::new();
    let mut spaced_wait = Vec::new();
    let mut written = Vec::new();
    let mut quick = Vec::new();
    let mut quick_wait = Vec::new();
    let weight = |run: usize| if run.is_multiple_of(2) { 50 } else { 100 };
    for run in 0..RUNS {
        let t = Instant::now();
        std::hint::black_box(build_table(&entries, M));
        build.push(ms(t.elapsed()));
        // Spaced: the grace period of the previous change has ended.
        std::thread::sleep(SPACING);
        let t = Instant::now();
        st.set_weight(&svc, &backend(0), weight(run))?;
        spaced.push(ms(t.elapsed()));
        let cost = st.last_table_write().context("no table write recorded")?;
        write.push(ms(cost.write));
        spaced_wait.push(ms(cost.wait));
        written.push(cost.slots_written as f64);
        // Back to back: the next change right away, so it waits for the grace period.
        let t = Instant::now();
        st.set_weight(&svc, &backend(0), weight(run + 1))?;
        quick.push(ms(t.elapsed()));
        let cost = st.last_table_write().context("no table write recorded")?;
        quick_wait.push(ms(cost.wait));
    }

    Ok(format!(
        "{{\"table_size\":{M},\"backends\":{BACKENDS},\"runs\":{RUNS},\"full_rewrite_ms\":{},\"weight_change_ms\":{},\"maglev_build_ms\":{},\"weight_change_write_ms\":{},\"weight_change_slots_written\":{},\"weight_change_wait_ms\":{},\"back_to_back_change_ms\":{},\"back_to_back_wait_ms\":{}}}",
        med(&full)?,
        med(&spaced)?,
        med(&build)?,
        med(&write)?,
        med(&written)?,
        med(&spaced_wait)?,
        med(&quick)?,
        med(&quick_wait)?,
    ))
}

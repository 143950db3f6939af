//! `xlb-bench maglev`: figures of the Maglev table builder, printed as one JSON line and
//! saved to `maglev.json`. Pure computation: no root, no testbed.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context as _, Result};
use lb_userspace::maglev::{Member, build, imbalance, owners, test_member, unrelated_moved_pct};

const M: u32 = 65537;

fn members(n: u32) -> Vec<Member> {
    (0..n).map(|i| test_member(i, 100)).collect()
}

/// Share of unrelated slots that change owner when backend `k` of `set` is removed.
fn moved_when_removing(set: &[Member], before: &[Option<[u8; 18]>], k: usize) -> f64 {
    let mut after = set.to_vec();
    let removed = after.remove(k);
    unrelated_moved_pct(before, &owners(&build(&after, M), &after), &removed.id)
}

pub fn run(out: &Path) -> Result<()> {
    let hundred = members(100);
    let before = owners(&build(&hundred, M), &hundred);
    // Every one of the 100 backends removed in turn: the mean and the worst case.
    let moved: Vec<f64> = (0..hundred.len())
        .map(|k| moved_when_removing(&hundred, &before, k))
        .collect();
    let mean = moved.iter().sum::<f64>() / moved.len() as f64;
    let worst = moved.iter().copied().fold(0.0, f64::max);

    let thousand = members(1000);
    let mut times: Vec<f64> = (0..5)
        .map(|_| {
            let t = Instant::now();
            let table = build(&thousand, M);
            std::hint::black_box(&table);
            t.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    times.sort_by(f64::total_cmp);

    // The keys in the order the issue gives them (serde_json's map would sort them).
    let line = format!(
        "{{\"backends\":100,\"table_size\":{M},\"unrelated_moved_pct\":{},\"imbalance_max_over_min\":{},\"build_ms_1000_backends\":{},\"unrelated_moved_pct_worst\":{},\"imbalance_max_over_min_1000_backends\":{}}}",
        round(mean),
        round(imbalance(&build(&hundred, M), &hundred)),
        round(times[times.len() / 2]),
        round(worst),
        round(imbalance(&build(&thousand, M), &thousand)),
    );
    serde_json::from_str::<serde_json::Value>(&line).context("maglev line is not JSON")?;
    println!("{line}");
    std::fs::create_dir_all(out)?;
    let path = out.join("maglev.json");
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, format!("{line}\n")).context("writing maglev.json")?;
    std::fs::rename(&tmp, &path).context("writing maglev.json")?;
    Ok(())
}

fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

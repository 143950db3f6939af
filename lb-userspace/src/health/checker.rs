//! The checker: one probe loop (a tokio task) per checked backend, so checks run
//! concurrently, each at its service's interval. A supervisor starts and stops the loops as
//! services, backends and settings change. A loop takes the control state's lock only to
//! count a finished probe's result in, never while a probe waits on the network, and holds
//! only a weak reference to the state, so a stopping daemon gets it back whole.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::Mutex;
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::MissedTickBehavior;
use tracing::{info, warn};

use super::{CheckResult, HealthState, probe::probe};
use crate::addr::{BackendAddr, ServiceAddr};
use crate::check::{AllDown, latency};
use crate::dataplane::Dataplane;
use crate::state::{CheckTarget, ControlState, Transition};

/// How often the supervisor looks for backends and settings that changed.
const SYNC: Duration = Duration::from_millis(100);

/// Runs the checker for ever (the daemon aborts it); dropping it stops every probe loop.
pub async fn run<D: Dataplane>(state: Arc<Mutex<ControlState<D>>>) {
    let mut loops: HashMap<(ServiceAddr, BackendAddr), (CheckTarget, AbortHandle)> = HashMap::new();
    let mut tasks = JoinSet::new();
    let mut tick = tokio::time::interval(SYNC);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        while tasks.try_join_next().is_some() {}
        let targets = state.lock().await.check_targets();
        let mut want: HashMap<_, _> = targets
            .into_iter()
            .map(|t| ((t.service, t.backend), t))
            .collect();
        loops.retain(|key, (running, handle)| {
            let keep = want.get(key) == Some(running);
            if !keep {
                handle.abort();
            }
            keep
        });
        want.retain(|key, _| !loops.contains_key(key));
        for (key, target) in want {
            let handle = tasks.spawn(check_loop(Arc::downgrade(&state), target.clone()));
            loops.insert(key, (target, handle));
        }
    }
}

/// Probes `t` every interval and counts each result in, until aborted or the state is gone.
async fn check_loop<D: Dataplane>(state: Weak<Mutex<ControlState<D>>>, t: CheckTarget) {
    let timeout = Duration::from_millis(t.settings.timeout_ms.into());
    let mut tick = tokio::time::interval(Duration::from_millis(t.settings.interval_ms.into()));
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let at = SystemTime::now();
        let started = Instant::now();
        let outcome = probe(t.target, &t.settings.kind, timeout).await;
        let result = CheckResult {
            ok: outcome.is_ok(),
            detail: outcome.err().unwrap_or_else(|| "ok".into()),
            latency: started.elapsed(),
            at,
        };
        let Some(state) = state.upgrade() else {
            return;
        };
        let change =
            state
                .lock()
                .await
                .record_check(&t.service, &t.backend, t.epoch, result.clone());
        drop(state);
        match change {
            Ok(Some(tr)) => log(&t, &tr, &result),
            Ok(None) => {}
            Err(e) => warn!(
                "xlbd: backend {} of {}: cannot apply its check result: {e}",
                t.backend, t.service
            ),
        }
    }
}

/// One line per verdict change, and one when the service starts or stops failing open or
/// drops everything.
fn log(t: &CheckTarget, tr: &Transition, last: &CheckResult) {
    let s = &t.settings;
    let (n, what) = if last.ok {
        (s.rise, "passed")
    } else {
        (s.fall, "failed")
    };
    let line = format!(
        "xlbd: backend {} of {} is {} (was {}): {n} {} checks {what} in a row, the last to {}: {} in {}",
        t.backend,
        t.service,
        tr.to,
        tr.from,
        s.kind_name(),
        t.target,
        last.detail,
        latency(last.latency),
    );
    if tr.to == HealthState::Down {
        warn!("{line}");
    } else {
        info!("{line}");
    }
    match tr.fail_open {
        Some(true) => warn!(
            "xlbd: every backend of {} is down: failing open, its table holds them all (--all-down fail-open)",
            t.service
        ),
        Some(false) => info!(
            "xlbd: service {} no longer fails open: a backend is up",
            t.service
        ),
        None if tr.all_down && tr.to == HealthState::Down && s.all_down == AllDown::Drop => {
            warn!(
                "xlbd: every backend of {} is down: its table is empty, its packets are dropped (--all-down drop)",
                t.service
            )
        }
        None => {}
    }
}

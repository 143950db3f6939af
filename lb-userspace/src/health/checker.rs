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
        let applying = Instant::now();
        let change =
            state
                .lock()
                .await
                .record_check(&t.service, &t.backend, t.epoch, result.clone());
        drop(state);
        match change {
            Ok(Some(tr)) => log(&t, &tr, &result, applying.elapsed()),
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
fn log(t: &CheckTarget, tr: &Transition, last: &CheckResult, applied: Duration) {
    let s = &t.settings;
    let (n, what) = if last.ok {
        (s.rise, "passed")
    } else {
        (s.fall, "failed")
    };
    let line = format!(
        "xlbd: backend {} of {} is {} (was {}): {n} {} checks {what} in a row, the last to {}: {} in {} (applied in {})",
        t.backend,
        t.service,
        tr.to,
        tr.from,
        s.kind_name(),
        t.target,
        last.detail,
        latency(last.latency),
        latency(applied),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::{CheckKind, CheckSettings};
    use crate::dataplane::FakeDataplane;
    use crate::state::ControlState;

    /// The checker over the fake data path, against a listener on loopback: the backend
    /// comes up, goes down when the listener closes (leaving the table), and the state is
    /// given back whole when the checker stops.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_checker_follows_a_listener_and_gives_the_state_back() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let svc: ServiceAddr = "198.18.0.10:80/tcp".parse().unwrap();
        let live: BackendAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let mut st = ControlState::new(FakeDataplane::new(4096));
        st.add_service(svc, Some(1031)).unwrap();
        st.add_backend(&svc, live, None).unwrap();
        st.add_backend(&svc, "198.19.0.2:8080".parse().unwrap(), None)
            .unwrap();
        let check = CheckSettings {
            kind: CheckKind::Tcp,
            interval_ms: 20,
            timeout_ms: 20,
            rise: 2,
            fall: 2,
            port: Some(port),
            addr: Some("127.0.0.1".parse().unwrap()),
            ..CheckSettings::default()
        };
        st.set_check(&svc, check).unwrap();
        let state = Arc::new(Mutex::new(st));
        let checker = tokio::spawn(run(state.clone()));
        let wait = |want: &'static str| {
            let state = state.clone();
            async move {
                for _ in 0..200 {
                    let rows = state.lock().await.backends(None).unwrap();
                    if rows.iter().all(|r| r.state == want) {
                        return true;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                false
            }
        };
        // Both are checked at 127.0.0.1:port (the check address and port).
        assert!(
            wait("up").await,
            "backends not up while the listener accepts"
        );
        drop(listener);
        assert!(
            wait("down").await,
            "backends not down after the listener closed"
        );
        {
            let st = state.lock().await;
            let rows = st.backends(None).unwrap();
            let last = rows[0].health.last.as_ref().unwrap();
            assert!(!last.ok && last.detail.starts_with("connect: "), "{last:?}");
            // Both down: fail-open keeps the table full.
            let table = st.dataplane().live_table(&svc.key()).unwrap();
            assert!(!table.contains(&lb_common::NO_BACKEND));
        }
        checker.abort();
        let _ = checker.await;
        // The probe loops hold only weak references: the state comes back whole.
        let mut state = state;
        for _ in 0..100 {
            match Arc::try_unwrap(state) {
                Ok(_) => return,
                Err(s) => state = s,
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the state is still shared after the checker stopped");
    }
}

//! Health verdicts and what they do to a service's table, over the fake data path: a down
//! backend leaves the table and its flows stay; drained stays drained; all down fails open
//! or drops; stale results are ignored; checks and verdicts survive a restore.

use std::time::{Duration, SystemTime};

use lb_common::NO_BACKEND;

use super::*;
use crate::check::CheckKind;
use crate::dataplane::FakeDataplane;

const WEB: &str = "198.18.0.10:80/tcp";
const B: [&str; 3] = ["198.19.0.2:8080", "198.19.1.2:8080", "198.19.2.2:8080"];

fn svc() -> ServiceAddr {
    WEB.parse().unwrap()
}

fn be(i: usize) -> BackendAddr {
    B[i].parse().unwrap()
}

fn tcp(rise: u32, fall: u32, all_down: AllDown) -> CheckSettings {
    CheckSettings {
        kind: CheckKind::Tcp,
        interval_ms: 200,
        timeout_ms: 100,
        rise,
        fall,
        all_down,
        ..CheckSettings::default()
    }
}

/// A service of three backends (weight 100), checked by tcp with rise 2, fall 2.
fn checked(all_down: AllDown) -> ControlState<FakeDataplane> {
    let mut st = ControlState::new(FakeDataplane::new(4096));
    st.add_service(svc(), Some(1031)).unwrap();
    for i in 0..3 {
        st.add_backend(&svc(), be(i), None).unwrap();
    }
    st.set_check(&svc(), tcp(2, 2, all_down)).unwrap();
    st
}

fn table(st: &ControlState<FakeDataplane>) -> Vec<u32> {
    st.dataplane().live_table(&svc().key()).unwrap().to_vec()
}

fn index(st: &ControlState<FakeDataplane>, i: usize) -> u32 {
    st.backends(None).unwrap()[i].index
}

fn slots_of(table: &[u32], index: u32) -> usize {
    table.iter().filter(|&&s| s == index).count()
}

fn result(ok: bool) -> CheckResult {
    CheckResult {
        ok,
        detail: if ok {
            "ok"
        } else {
            "connect: Connection refused"
        }
        .into(),
        latency: Duration::from_micros(250),
        at: SystemTime::now(),
    }
}

fn epoch(st: &ControlState<FakeDataplane>, i: usize) -> u64 {
    st.check_targets()
        .into_iter()
        .find(|t| t.backend == be(i))
        .unwrap()
        .epoch
}

/// Counts `results` of backend `i` in; the transitions they made.
fn feed(st: &mut ControlState<FakeDataplane>, i: usize, results: &[bool]) -> Vec<Transition> {
    let e = epoch(st, i);
    results
        .iter()
        .filter_map(|&ok| st.record_check(&svc(), &be(i), e, result(ok)).unwrap())
        .collect()
}

fn state_of(st: &ControlState<FakeDataplane>, i: usize) -> &'static str {
    st.backends(None).unwrap()[i].state
}

#[test]
fn checking_backends_keep_their_slots_and_nothing_is_published() {
    let mut st = ControlState::new(FakeDataplane::new(4096));
    st.add_service(svc(), Some(1031)).unwrap();
    for i in 0..3 {
        st.add_backend(&svc(), be(i), None).unwrap();
    }
    let (before, generation) = (table(&st), st.services()[0].generation);
    let info = st.set_check(&svc(), tcp(2, 2, AllDown::FailOpen)).unwrap();
    assert_eq!(info.check, tcp(2, 2, AllDown::FailOpen));
    assert_eq!(
        st.services()[0].generation,
        generation,
        "set-check published"
    );
    assert_eq!(table(&st), before);
    assert!((0..3).all(|i| state_of(&st, i) == "checking"));
    let targets = st.check_targets();
    assert_eq!(targets.len(), 3);
    assert_eq!(targets[0].target, "198.19.0.2:8080".parse().unwrap());
}

#[test]
fn a_down_backend_leaves_the_table_keeps_its_flows_and_returns_after_rise() {
    let mut st = checked(AllDown::FailOpen);
    let before = table(&st);
    let b1 = index(&st, 1);
    st.dataplane_mut().add_live_flows(b1, 3);
    assert!(
        feed(&mut st, 1, &[false]).is_empty(),
        "one failure of fall 2"
    );
    assert_eq!(table(&st), before);
    let tr = feed(&mut st, 1, &[false]);
    assert_eq!(
        tr,
        [Transition {
            from: HealthState::Checking,
            to: HealthState::Down,
            fail_open: None,
            all_down: false
        }]
    );
    let down = table(&st);
    assert_eq!(slots_of(&down, b1), 0, "a down backend kept table slots");
    assert!(!down.contains(&NO_BACKEND));
    // Maglev: few slots of the healthy backends moved.
    let moved = before
        .iter()
        .zip(&down)
        .filter(|(a, b)| a != b && **a != b1)
        .count();
    assert!(
        moved * 100 <= before.len() * 5,
        "{moved} slots of healthy backends moved"
    );
    let row = &st.backends(None).unwrap()[1];
    assert_eq!((row.state, row.flows, row.weight), ("down", 3, 100));
    assert_eq!(
        row.health.last.as_ref().map(|r| r.detail.as_str()),
        Some("connect: Connection refused")
    );
    // One success is not enough; two in a row bring it back to the same slots.
    assert!(feed(&mut st, 1, &[true, false, true]).is_empty());
    assert_eq!(slots_of(&table(&st), b1), 0);
    let tr = feed(&mut st, 1, &[true]);
    assert_eq!(tr[0].to, HealthState::Up);
    assert_eq!(table(&st), before);
    assert_eq!(state_of(&st, 1), "up");
}

#[test]
fn a_drained_backend_stays_drained_whatever_its_health() {
    let mut st = checked(AllDown::FailOpen);
    st.set_weight(&svc(), &be(0), 0).unwrap();
    let b0 = index(&st, 0);
    feed(&mut st, 0, &[true, true]);
    assert_eq!(slots_of(&table(&st), b0), 0);
    assert_eq!(state_of(&st, 0), "draining");
    assert_eq!(st.backends(None).unwrap()[0].health.state, HealthState::Up);
    // Drained and down backends never count for "all down".
    feed(&mut st, 1, &[false, false]);
    let tr = feed(&mut st, 2, &[false, false]);
    assert_eq!(tr[0].fail_open, Some(true));
    assert_eq!(
        slots_of(&table(&st), b0),
        0,
        "fail-open gave a drained backend slots"
    );
}

#[test]
fn all_down_fails_open_to_every_backend_by_default() {
    let mut st = checked(AllDown::FailOpen);
    let before = table(&st);
    feed(&mut st, 0, &[false, false]);
    feed(&mut st, 1, &[false, false]);
    let tr = feed(&mut st, 2, &[false, false]);
    assert_eq!((tr[0].fail_open, tr[0].all_down), (Some(true), true));
    assert_eq!(table(&st), before, "fail-open table is not the full table");
    assert!((0..3).all(|i| state_of(&st, i) == "down"));
    // The first to come back takes the whole table; fail-open ends.
    let tr = feed(&mut st, 1, &[true, true]);
    assert_eq!(tr[0].fail_open, Some(false));
    let b1 = index(&st, 1);
    assert!(table(&st).iter().all(|&s| s == b1));
}

#[test]
fn all_down_with_drop_empties_the_table() {
    let mut st = checked(AllDown::Drop);
    for i in 0..3 {
        feed(&mut st, i, &[false, false]);
    }
    assert!(table(&st).iter().all(|&s| s == NO_BACKEND));
    feed(&mut st, 2, &[true, true]);
    let b2 = index(&st, 2);
    assert!(table(&st).iter().all(|&s| s == b2));
}

#[test]
fn results_of_an_older_check_are_ignored() {
    let mut st = checked(AllDown::FailOpen);
    let old = epoch(&st, 1);
    st.set_check(&svc(), tcp(1, 1, AllDown::FailOpen)).unwrap();
    assert_ne!(epoch(&st, 1), old);
    assert_eq!(
        st.record_check(&svc(), &be(1), old, result(false)).unwrap(),
        None
    );
    assert_eq!(state_of(&st, 1), "checking");
    // Removed and added again: a new epoch too.
    let e = epoch(&st, 1);
    st.remove_backend(&svc(), &be(1), false).unwrap();
    assert_eq!(
        st.record_check(&svc(), &be(1), e, result(false)).unwrap(),
        None
    );
    st.add_backend(&svc(), be(1), None).unwrap();
    assert_ne!(epoch(&st, 1), e);
}

#[test]
fn check_none_brings_down_backends_back_and_stops_checking() {
    let mut st = checked(AllDown::FailOpen);
    let before = table(&st);
    feed(&mut st, 0, &[false, false]);
    assert_ne!(table(&st), before);
    st.set_check(&svc(), CheckSettings::default()).unwrap();
    assert_eq!(table(&st), before);
    assert!(st.check_targets().is_empty());
    assert!((0..3).all(|i| state_of(&st, i) == "up"));
    // Checking again: every backend starts over as checking, in the table.
    st.set_check(&svc(), tcp(2, 2, AllDown::FailOpen)).unwrap();
    assert!((0..3).all(|i| state_of(&st, i) == "checking"));
    assert_eq!(table(&st), before);
}

#[test]
fn bad_settings_are_refused_and_change_nothing() {
    let mut st = checked(AllDown::FailOpen);
    let before = (st.services(), table(&st));
    let bad = CheckSettings {
        timeout_ms: 300,
        ..tcp(2, 2, AllDown::FailOpen)
    };
    let e = st.set_check(&svc(), bad).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    assert_eq!(
        e.to_string(),
        "timeout 300ms is longer than the interval 200ms"
    );
    assert_eq!((st.services(), table(&st)), before);
    let other: ServiceAddr = "198.18.0.11:80/tcp".parse().unwrap();
    let e = st.set_check(&other, tcp(2, 2, AllDown::Drop)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
}

#[test]
fn checks_and_down_verdicts_survive_a_restore() {
    let mut st = checked(AllDown::Drop);
    feed(&mut st, 1, &[false, false]);
    feed(&mut st, 0, &[true, true]);
    let snap = st.snapshot();
    let live = table(&st);
    let text = serde_json::to_string(&snap).unwrap();
    assert!(text.contains("\"down\":true"), "{text}");
    // Over the same maps: no table written, and the down backend is still down.
    let st = ControlState::restore(st.into_dataplane(), snap.clone()).unwrap();
    assert_eq!(table(&st), live);
    assert_eq!(st.services()[0].check, tcp(2, 2, AllDown::Drop));
    let states: Vec<_> = (0..3).map(|i| state_of(&st, i)).collect();
    assert_eq!(states, ["checking", "down", "checking"]);
    // Into empty maps: the same table is published.
    let st = ControlState::restore(FakeDataplane::new(4096), snap).unwrap();
    assert_eq!(table(&st), live);
}

#[test]
fn a_state_file_of_before_health_checks_still_loads() {
    let st = checked(AllDown::FailOpen);
    let mut v = serde_json::to_value(st.snapshot()).unwrap();
    for s in v["services"].as_array_mut().unwrap() {
        s.as_object_mut().unwrap().remove("check");
    }
    let old: persist::ControlSnapshot = serde_json::from_value(v).unwrap();
    let st = ControlState::restore(FakeDataplane::new(4096), old).unwrap();
    assert!(st.services()[0].check.is_none());
    assert!(st.check_targets().is_empty());
}

use lb_common::NO_BACKEND;

use super::*;
use crate::testing::{Fail, Op, Recorder};

fn svc(s: &str) -> ServiceAddr {
    s.parse().unwrap()
}

fn be(s: &str) -> BackendAddr {
    s.parse().unwrap()
}

fn spec(table_size: u32, backends: &[(&str, u32)]) -> ServiceSpec {
    ServiceSpec {
        table_size,
        backends: backends.iter().map(|(b, w)| (be(b), *w)).collect(),
        affinity: crate::affinity::Affinity::None,
        forwarding: Default::default(),
        check: CheckSettings::default(),
    }
}

const WEB: &str = "198.18.0.10:80/tcp";
const DNS: &str = "198.18.0.10:53/udp";

fn desired() -> Services {
    [
        (
            svc(WEB),
            spec(13, &[("198.19.0.2:8080", 100), ("198.19.1.2:8080", 100)]),
        ),
        (svc(DNS), spec(7, &[("198.19.0.2:53", 1)])),
    ]
    .into()
}

/// A state over a table area of `2 * half` slots with `desired()` applied, its ops cleared.
fn applied(half: u32) -> ControlState<Recorder> {
    let mut st = ControlState::new(Recorder::new(2 * half)).with_slots_per_backend(0);
    st.apply(&desired(), ApplyOptions::default()).unwrap();
    st.dataplane_mut().ops.clear();
    st
}

/// The map writes among `ops`, without the grace periods around them.
fn without_grace(ops: &[Op]) -> Vec<Op> {
    ops.iter()
        .filter(|o| !matches!(o, Op::StartGrace(_) | Op::WaitGrace(_)))
        .cloned()
        .collect()
}

fn generation(st: &ControlState<Recorder>, s: &str) -> u32 {
    st.services()
        .into_iter()
        .find(|i| i.service == svc(s))
        .unwrap()
        .generation
}

/// Everything the control state and the fake maps hold.
fn snapshot(st: &ControlState<Recorder>) -> impl PartialEq + std::fmt::Debug + use<> {
    let fake = &st.dataplane().fake;
    let mut services: Vec<_> = fake.services.iter().map(|(k, v)| (*k, *v)).collect();
    services.sort_by_key(|(_, v)| v.id);
    let mut backends: Vec<_> = fake.backends.iter().map(|(i, b)| (*i, *b)).collect();
    backends.sort_by_key(|b| b.0);
    let listed: Vec<_> = st
        .backends(None)
        .unwrap()
        .into_iter()
        .map(|b| (b.service, b.backend, b.index, b.weight))
        .collect();
    (
        st.services(),
        listed,
        services,
        backends,
        fake.tables.clone(),
        fake.flows.len(),
    )
}

#[test]
fn a_new_service_and_its_backends_are_one_table_write() {
    let mut st = ControlState::new(Recorder::new(64)).with_slots_per_backend(0);
    // What an earlier daemon left: every slot of a new table differs from it.
    st.dataplane_mut().fake.tables.fill(7777);
    let changes = st.apply(&desired(), ApplyOptions::default()).unwrap();
    assert_eq!(changes.len(), 5, "{changes:?}");
    let ops = &st.dataplane().ops;
    let writes = ops
        .iter()
        .filter(|o| matches!(o, Op::WriteSlots { .. }))
        .count();
    let flips = ops
        .iter()
        .filter(|o| matches!(o, Op::PutService(..)))
        .count();
    assert_eq!((writes, flips), (2, 2), "{ops:?}");
    // Backends before the table that names them.
    assert!(matches!(ops[0], Op::PutBackend(..)));
    for s in [WEB, DNS] {
        assert_eq!(generation(&st, s), 1);
    }
    assert_eq!(st.running(), desired());
    // The table is the one the CLI's commands would have built.
    let mut by_cli = ControlState::new(Recorder::new(64)).with_slots_per_backend(0);
    by_cli.add_service(svc(DNS), Some(7)).unwrap();
    by_cli
        .add_backend(&svc(DNS), be("198.19.0.2:53"), Some(1))
        .unwrap();
    by_cli.add_service(svc(WEB), Some(13)).unwrap();
    for b in ["198.19.0.2:8080", "198.19.1.2:8080"] {
        by_cli.add_backend(&svc(WEB), be(b), None).unwrap();
    }
    for s in [WEB, DNS] {
        let key = svc(s).key();
        let ours = st.dataplane().fake.live_table(&key).unwrap();
        let theirs = by_cli.dataplane().fake.live_table(&key).unwrap();
        let names = |t: &[u32], st: &ControlState<Recorder>| -> Vec<Option<BackendAddr>> {
            let by_index: BTreeMap<u32, BackendAddr> = st
                .backends(None)
                .unwrap()
                .into_iter()
                .map(|b| (b.index, b.backend))
                .collect();
            t.iter().map(|i| by_index.get(i).copied()).collect()
        };
        assert_eq!(names(ours, &st), names(theirs, &by_cli), "{s}");
    }
}

#[test]
fn the_same_services_write_nothing() {
    let mut st = applied(32);
    let changes = st.apply(&desired(), ApplyOptions::default()).unwrap();
    assert!(changes.is_empty());
    assert!(st.dataplane().ops.is_empty());
    let prune = ApplyOptions {
        prune: true,
        force: true,
        ..Default::default()
    };
    assert!(st.apply(&desired(), prune).unwrap().is_empty());
    assert!(st.dataplane().ops.is_empty());
}

#[test]
fn one_weight_rewrites_only_its_service() {
    let mut st = applied(32);
    let mut want = desired();
    want.get_mut(&svc(WEB))
        .unwrap()
        .backends
        .insert(be("198.19.1.2:8080"), 300);
    st.apply(&want, ApplyOptions::default()).unwrap();
    let ops = without_grace(&st.dataplane().ops);
    assert_eq!(ops.len(), 2, "{ops:?}");
    assert!(matches!(ops[0], Op::WriteSlots { count, .. } if count > 0 && count <= 13));
    assert!(matches!(ops[1], Op::PutService(k, _) if k == svc(WEB).key()));
    assert_eq!((generation(&st, WEB), generation(&st, DNS)), (2, 1));
    assert_eq!(st.running(), want);
}

#[test]
fn several_changes_of_one_service_are_one_write() {
    let mut st = applied(32);
    let old_index = |st: &ControlState<Recorder>, b: &str| {
        st.backends(Some(&svc(WEB)))
            .unwrap()
            .into_iter()
            .find(|x| x.backend == be(b))
            .map(|x| x.index)
    };
    let kept = old_index(&st, "198.19.0.2:8080").unwrap();
    let removed = old_index(&st, "198.19.1.2:8080").unwrap();
    let id = st
        .services()
        .iter()
        .find(|s| s.service == svc(WEB))
        .unwrap()
        .id;
    // New table size, one backend re-weighted, one removed, one added.
    let mut want = desired();
    want.insert(
        svc(WEB),
        spec(17, &[("198.19.0.2:8080", 5), ("198.19.2.2:8080", 5)]),
    );
    let opts = ApplyOptions {
        prune: true,
        ..Default::default()
    };
    let changes = st.apply(&want, opts).unwrap();
    assert_eq!(changes.len(), 4, "{changes:?}");
    let ops = without_grace(&st.dataplane().ops);
    assert_eq!(ops.len(), 3, "{ops:?}");
    assert!(matches!(ops[0], Op::PutBackend(i, _) if i != removed));
    assert!(matches!(ops[1], Op::WriteSlots { count, .. } if count > 0 && count <= 17));
    let info = st
        .services()
        .into_iter()
        .find(|s| s.service == svc(WEB))
        .unwrap();
    assert_eq!((info.id, info.table_size, info.generation), (id, 17, 2));
    // The kept backend keeps its index (its flows stay on it).
    assert_eq!(old_index(&st, "198.19.0.2:8080"), Some(kept));
    assert_eq!(st.running(), want);
    let live = st.dataplane().fake.live_table(&svc(WEB).key()).unwrap();
    assert_eq!(live.len(), 17);
    assert!(live.iter().all(|&i| i != removed && i != NO_BACKEND));
    // The other service's table was neither written nor overwritten by the new region.
    assert_eq!(generation(&st, DNS), 1);
    let dns = st.dataplane().fake.live_table(&svc(DNS).key()).unwrap();
    assert!(dns.iter().all(|&i| i != NO_BACKEND));
}

#[test]
fn dry_run_reports_and_changes_nothing() {
    let mut st = applied(32);
    let before = snapshot(&st);
    let want: Services = [(svc(WEB), spec(13, &[("198.19.0.2:8080", 1)]))].into();
    let opts = ApplyOptions {
        prune: true,
        dry_run: true,
        ..Default::default()
    };
    let changes = st.apply(&want, opts).unwrap();
    assert_eq!(
        changes,
        [
            Change::RemoveService { service: svc(DNS) },
            Change::SetWeight {
                service: svc(WEB),
                backend: be("198.19.0.2:8080"),
                from: 100,
                to: 1
            },
            Change::RemoveBackend {
                service: svc(WEB),
                backend: be("198.19.1.2:8080")
            },
        ]
    );
    assert!(st.dataplane().ops.is_empty());
    assert_eq!(snapshot(&st), before);
}

#[test]
fn a_refused_apply_changes_nothing() {
    // Table room for the first new service only: the whole apply is refused.
    let mut st = applied(32);
    let before = snapshot(&st);
    let mut want = desired();
    want.insert(svc("198.18.0.11:80/tcp"), spec(11, &[]));
    want.insert(svc("198.18.0.12:80/tcp"), spec(11, &[]));
    let e = st.apply(&want, ApplyOptions::default()).unwrap_err();
    assert_eq!(e.service, svc("198.18.0.12:80/tcp"));
    assert_eq!(
        e.to_string(),
        "service \"198.18.0.12:80/tcp\": no room for a table of 11 slots (largest free region: 1 slots; remove a service or raise xlbd --table-area)"
    );
    assert_eq!(e.source.kind(), ErrorKind::ResourceExhausted);
    assert!(st.dataplane().ops.is_empty());
    assert_eq!(snapshot(&st), before);

    // Larger than half the table area.
    want = desired();
    want.get_mut(&svc(DNS)).unwrap().table_size = 37;
    let e = st.apply(&want, ApplyOptions::default()).unwrap_err();
    assert!(matches!(
        *e.source,
        StateError::TableSizeTooLarge { size: 37, half: 32 }
    ));
    assert!(st.dataplane().ops.is_empty());
    assert_eq!(snapshot(&st), before);
}

#[test]
fn pruning_live_flows_needs_force() {
    let mut st = applied(32);
    let gone = be("198.19.1.2:8080");
    let index = |st: &ControlState<Recorder>, b: BackendAddr| {
        st.backends(None)
            .unwrap()
            .into_iter()
            .find(|x| x.backend == b)
            .unwrap()
            .index
    };
    let gone_index = index(&st, gone);
    let stay_index = index(&st, be("198.19.0.2:8080"));
    st.dataplane_mut().fake.add_live_flows(gone_index, 3);
    st.dataplane_mut().fake.add_live_flows(stay_index, 2);
    let before = snapshot(&st);
    let mut want = desired();
    want.get_mut(&svc(WEB)).unwrap().backends.remove(&gone);

    // Without prune: drained, flows kept.
    let mut drained = applied(32);
    drained.dataplane_mut().fake.add_live_flows(gone_index, 3);
    let c = drained.apply(&want, ApplyOptions::default()).unwrap();
    assert_eq!(
        c,
        [Change::SetWeight {
            service: svc(WEB),
            backend: gone,
            from: 100,
            to: 0
        }]
    );
    assert_eq!(drained.dataplane().fake.flows.len(), 6);

    // Prune without force: refused, nothing changed, the backend named.
    let prune = ApplyOptions {
        prune: true,
        ..Default::default()
    };
    let e = st.apply(&want, prune).unwrap_err();
    assert_eq!(e.backend, Some(gone));
    assert!(matches!(*e.source, StateError::LiveFlows { flows: 3, .. }));
    assert!(st.dataplane().ops.is_empty());
    assert_eq!(snapshot(&st), before);
    // Also when it is the whole service that goes.
    let dns_index = index(&st, be("198.19.0.2:53"));
    st.dataplane_mut().fake.add_live_flows(dns_index, 1);
    let only_web: Services = [(svc(WEB), desired()[&svc(WEB)].clone())].into();
    let e = st.apply(&only_web, prune).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("service \"198.18.0.10:53/udp\": backend 198.19.0.2:53 has 1 live flows")
    );
    assert!(st.dataplane().ops.is_empty());
    st.dataplane_mut().fake.flows.clear();
    st.dataplane_mut().fake.add_live_flows(gone_index, 3);
    st.dataplane_mut().fake.add_live_flows(stay_index, 2);

    // With force: removed, its flows deleted, the others' kept.
    let force = ApplyOptions {
        force: true,
        ..prune
    };
    st.apply(&want, force).unwrap();
    assert_eq!(st.running(), want);
    let flows = &st.dataplane().fake.flows;
    assert_eq!(flows.len(), 4);
    assert!(flows.values().all(|f| f.backend == stay_index));
}

#[test]
fn a_failed_map_write_leaves_the_service_as_it_was() {
    let mut st = applied(32);
    // What the data path reads (a backend entry written before the refused table write
    // is unreferenced, as with `add_backend`).
    let visible = |st: &ControlState<Recorder>| {
        let fake = &st.dataplane().fake;
        let mut services: Vec<_> = fake.services.values().copied().collect();
        services.sort_by_key(|v| v.id);
        (st.services(), st.running(), services, fake.tables.clone())
    };
    let before = visible(&st);
    let mut want = desired();
    want.get_mut(&svc(WEB))
        .unwrap()
        .backends
        .insert(be("198.19.5.2:8080"), 1);
    st.dataplane_mut().fail = Some(Fail::WriteSlots);
    let e = st.apply(&want, ApplyOptions::default()).unwrap_err();
    assert_eq!(e.source.kind(), ErrorKind::Internal);
    st.dataplane_mut().fail = None;
    assert_eq!(visible(&st), before);
    // And the same apply then goes through.
    st.apply(&want, ApplyOptions::default()).unwrap();
    assert_eq!(st.running(), want);
}

/// A check in the wanted services is set as `set-check` sets it, after the trial run.
#[test]
fn a_check_is_applied_as_set_check() {
    let mut st = applied(100);
    let mut want = desired();
    let tcp = CheckSettings {
        kind: crate::check::CheckKind::Tcp,
        interval_ms: 200,
        timeout_ms: 100,
        fall: 2,
        ..CheckSettings::default()
    };
    want.get_mut(&svc(WEB)).unwrap().check = tcp.clone();
    let before = snapshot(&st);
    let dry = ApplyOptions {
        dry_run: true,
        ..Default::default()
    };
    let changes = st.apply(&want, dry).unwrap();
    assert_eq!(
        changes,
        [Change::SetCheck {
            service: svc(WEB),
            from: CheckSettings::default(),
            to: tcp.clone(),
        }]
    );
    assert_eq!(snapshot(&st), before, "a dry run changed something");
    assert_eq!(st.apply(&want, ApplyOptions::default()).unwrap(), changes);
    let info = st
        .services()
        .into_iter()
        .find(|i| i.service == svc(WEB))
        .unwrap();
    assert_eq!(info.check, tcp);
    let states: Vec<&str> = st
        .backends(Some(&svc(WEB)))
        .unwrap()
        .into_iter()
        .map(|b| b.state)
        .collect();
    assert_eq!(states, ["checking", "checking"]);
    // Checking backends keep their slots: the table is not written for the check.
    assert!(
        without_grace(&st.dataplane().ops)
            .iter()
            .all(|o| !matches!(o, Op::WriteSlots { .. }))
    );
    assert_eq!(st.running(), want);
    assert_eq!(st.apply(&want, ApplyOptions::default()).unwrap(), []);
    // An invalid check (as an API client may send) is refused in the trial run.
    let mut bad = want.clone();
    bad.get_mut(&svc(WEB)).unwrap().check.rise = 0;
    bad.get_mut(&svc(DNS))
        .unwrap()
        .backends
        .insert(be("198.19.1.2:53"), 5);
    let before = snapshot(&st);
    let e = st.apply(&bad, ApplyOptions::default()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "service \"198.18.0.10:80/tcp\": rise 0 out of range (1-100)"
    );
    assert_eq!(snapshot(&st), before);
}

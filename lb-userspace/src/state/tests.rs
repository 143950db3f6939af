use lb_common::{Backend, NO_BACKEND};

use super::*;
use crate::testing::{Fail, Op, Recorder};

fn svc(s: &str) -> ServiceAddr {
    s.parse().unwrap()
}

fn be(s: &str) -> BackendAddr {
    s.parse().unwrap()
}

/// A state over a table area of `2 * half` slots, with tables of any size for any number
/// of backends (tiny tables keep these tests readable; the Maglev rule has its own tests).
fn state(half: u32) -> ControlState<Recorder> {
    ControlState::new(Recorder::new(2 * half)).with_slots_per_backend(0)
}

const WEB: &str = "198.18.0.10:80/tcp";

/// What the data path holds, to compare before and after a refused request.
type Snapshot = (Vec<ServiceInfo>, usize, Vec<u32>, Vec<(u32, Backend)>);

fn snapshot(st: &ControlState<Recorder>) -> Snapshot {
    let fake = &st.dataplane().fake;
    let mut backends: Vec<_> = fake.backends.iter().map(|(i, b)| (*i, *b)).collect();
    backends.sort_by_key(|b| b.0);
    (
        st.services(),
        fake.services.len(),
        fake.tables.clone(),
        backends,
    )
}

fn live(st: &ControlState<Recorder>, s: &str) -> Vec<u32> {
    st.dataplane()
        .fake
        .live_table(&svc(s).key())
        .unwrap()
        .to_vec()
}

#[test]
fn new_service_gets_an_empty_table_then_the_service_entry() {
    let mut st = state(lb_common::DEFAULT_TABLE_AREA / 2);
    let info = st.add_service(svc(WEB), None).unwrap();
    assert_eq!(
        (
            info.id,
            info.table_size,
            info.generation,
            info.table_offset,
            info.backends
        ),
        (0, DEFAULT_TABLE_SIZE, 1, 0, 0)
    );
    let value = ServiceValue {
        id: 0,
        table_offset: 0,
        table_size: 65537,
        generation: 1,
        ..Default::default()
    };
    // A new map holds 0 (backend 0) everywhere: every slot changes to NO_BACKEND.
    assert_eq!(
        st.dataplane().ops,
        [
            Op::WriteSlots {
                first: 0,
                last: 65536,
                count: 65537
            },
            Op::PutService(svc(WEB).key(), value),
            Op::StartGrace(1),
        ]
    );
    assert!(live(&st, WEB).iter().all(|&s| s == NO_BACKEND));
}

#[test]
fn every_change_flips_to_the_other_half_and_bumps_generation() {
    let mut st = state(16);
    st.add_service(svc(WEB), Some(7)).unwrap();
    let b1 = be("198.19.0.2:8080");
    let b2 = be("198.19.0.3:8080");
    st.add_backend(&svc(WEB), b1, None).unwrap();
    st.add_backend(&svc(WEB), b2, Some(100)).unwrap();
    st.set_weight(&svc(WEB), &b2, 0).unwrap();
    st.remove_backend(&svc(WEB), &b1, false).unwrap();
    let flips: Vec<(u32, u32)> = st
        .dataplane()
        .ops
        .iter()
        .filter_map(|op| match op {
            Op::PutService(_, v) => Some((v.generation, v.table_offset)),
            _ => None,
        })
        .collect();
    assert_eq!(flips, [(1, 0), (2, 16), (3, 0), (4, 16), (5, 0)]);
    // Each flip points at the table written just before it.
    for pair in st.dataplane().ops.windows(2) {
        if let [Op::WriteSlots { first, last, .. }, Op::PutService(_, v)] = pair {
            assert!(*first >= v.table_offset && *last < v.table_offset + 7);
        }
    }
    check_no_write_to_a_readable_half(&st.dataplane().ops).unwrap();
    // Only b2 is left, drained: the live table is empty.
    assert_eq!(live(&st, WEB), [NO_BACKEND; 7]);
    assert_eq!(st.services()[0].generation, 5);
}

#[test]
fn backend_entry_is_written_before_any_table_naming_it() {
    let mut st = state(16);
    leave_old_tables(&mut st);
    st.add_service(svc(WEB), Some(7)).unwrap();
    let before = st.dataplane().ops.len();
    let info = st
        .add_backend(&svc(WEB), be("198.19.0.2:8080"), None)
        .unwrap();
    let ops = &st.dataplane().ops[before..];
    assert_eq!(ops.len(), 5);
    assert_eq!(
        ops[0],
        Op::PutBackend(info.index, be("198.19.0.2:8080").backend())
    );
    assert_eq!(ops[1], Op::WaitGrace(1));
    assert_eq!(
        ops[2],
        Op::WriteSlots {
            first: 16,
            last: 22,
            count: 7
        }
    );
    assert!(matches!(ops[3], Op::PutService(..)));
    assert_eq!(ops[4], Op::StartGrace(2));
    assert_eq!(live(&st, WEB), [info.index; 7]);
    assert_eq!(
        st.dataplane().fake.backends[&info.index],
        be("198.19.0.2:8080").backend()
    );
}

#[test]
fn refused_requests_change_nothing() {
    let mut st = state(16);
    st.add_service(svc(WEB), Some(7)).unwrap();
    st.add_backend(&svc(WEB), be("198.19.0.2:8080"), None)
        .unwrap();
    let before = snapshot(&st);
    let ops = st.dataplane().ops.len();

    let b = be("198.19.0.3:8080");
    let other = svc("198.18.0.11:80/tcp");
    let errors = [
        st.add_service(svc(WEB), Some(7)).unwrap_err(),
        st.add_service(other, Some(8)).unwrap_err(),
        st.add_service(other, Some(17)).unwrap_err(),
        st.add_service(other, Some(13)).unwrap_err(),
        st.add_backend(&svc(WEB), be("198.19.0.2:8080"), None)
            .unwrap_err(),
        st.add_backend(&svc(WEB), be("[2001:2::2]:8080"), None)
            .unwrap_err(),
        st.add_backend(&svc(WEB), b, Some(MAX_WEIGHT + 1))
            .unwrap_err(),
        st.add_backend(&other, b, None).unwrap_err(),
        st.remove_backend(&svc(WEB), &b, false).unwrap_err(),
        st.set_weight(&svc(WEB), &be("198.19.0.2:8080"), 70000)
            .unwrap_err(),
        st.set_weight(&svc(WEB), &b, 1).unwrap_err(),
        st.remove_service(&other).unwrap_err(),
        st.backends(Some(&other)).unwrap_err(),
    ];
    let messages: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
    assert_eq!(
        messages,
        [
            "service 198.18.0.10:80/tcp already exists",
            "table size 8 is not a prime number (Maglev needs a prime)",
            "table size 17 does not fit in half the table area (16 slots; see xlbd --table-area)",
            "no room for a table of 13 slots (largest free region: 9 slots; remove a service or raise xlbd --table-area)",
            "backend 198.19.0.2:8080 is already in service 198.18.0.10:80/tcp",
            "backend [2001:2::2]:8080 is IPv6 but service 198.18.0.10:80/tcp is IPv4 (no NAT between IPv4 and IPv6)",
            "weight 65536 out of range (0-65535)",
            "no such service: 198.18.0.11:80/tcp",
            "backend 198.19.0.3:8080 is not in service 198.18.0.10:80/tcp",
            "weight 70000 out of range (0-65535)",
            "backend 198.19.0.3:8080 is not in service 198.18.0.10:80/tcp",
            "no such service: 198.18.0.11:80/tcp",
            "no such service: 198.18.0.11:80/tcp",
        ]
    );
    let kinds: Vec<ErrorKind> = errors.iter().map(|e| e.kind()).collect();
    use ErrorKind::*;
    assert_eq!(
        kinds,
        [
            AlreadyExists,
            InvalidArgument,
            InvalidArgument,
            ResourceExhausted,
            AlreadyExists,
            InvalidArgument,
            InvalidArgument,
            NotFound,
            NotFound,
            InvalidArgument,
            NotFound,
            NotFound,
            NotFound,
        ]
    );
    assert_eq!(snapshot(&st), before);
    assert_eq!(st.dataplane().ops.len(), ops);
}

#[test]
fn a_failed_write_leaves_the_state_as_it_was() {
    let mut st = state(16);
    leave_old_tables(&mut st);
    st.add_service(svc(WEB), Some(7)).unwrap();
    let b1 = be("198.19.0.2:8080");
    for fail in [
        Fail::PutBackend,
        Fail::WaitGrace,
        Fail::WriteSlots,
        Fail::PutService,
    ] {
        st.dataplane_mut().fail = Some(fail);
        let e = st.add_backend(&svc(WEB), b1, None).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Internal);
        assert_eq!(st.services()[0].backends, 0);
        assert_eq!(st.services()[0].generation, 1);
        assert_eq!(live(&st, WEB), [NO_BACKEND; 7]);
    }
    st.dataplane_mut().fail = Some(Fail::PutService);
    assert!(st.add_service(svc("198.18.0.11:80/tcp"), Some(7)).is_err());
    st.dataplane_mut().fail = Some(Fail::RemoveService);
    assert!(st.remove_service(&svc(WEB)).is_err());
    assert_eq!(st.services().len(), 1);

    st.dataplane_mut().fail = None;
    // Nothing was used up by the failed attempts: the first index and the next id and
    // region are still free.
    assert_eq!(st.add_backend(&svc(WEB), b1, None).unwrap().index, 0);
    let other = st.add_service(svc("198.18.0.11:80/tcp"), Some(7)).unwrap();
    assert_eq!((other.id, other.table_offset), (1, 7));
}

#[test]
fn regions_are_first_fit_and_reused_in_both_halves() {
    let mut st = state(30);
    let a = svc("198.18.0.10:80/tcp");
    let b = svc("198.18.0.10:81/tcp");
    let c = svc("198.18.0.10:82/tcp");
    assert_eq!(st.add_service(a, Some(11)).unwrap().table_offset, 0);
    assert_eq!(st.add_service(b, Some(11)).unwrap().table_offset, 11);
    assert!(matches!(
        st.add_service(c, Some(11)),
        Err(StateError::TableAreaFull {
            size: 11,
            largest: 8
        })
    ));
    st.remove_service(&a).unwrap();
    let info = st.add_service(c, Some(7)).unwrap();
    assert_eq!((info.id, info.table_offset), (0, 0));
    // The second generation of the same region is in the other half.
    st.add_backend(&c, be("198.19.0.2:80"), None).unwrap();
    let info = st.services().into_iter().find(|i| i.service == c).unwrap();
    assert_eq!(info.table_offset, 30);
    // 4 slots left between c and b, 8 at the end.
    assert_eq!(st.add_service(a, Some(5)).unwrap().table_offset, 22);
    assert_eq!(
        st.add_service(svc("198.18.0.10:83/tcp"), Some(3))
            .unwrap()
            .table_offset,
        7
    );
}

#[test]
fn removing_a_service_frees_everything_it_held() {
    let mut st = state(16);
    st.add_service(svc(WEB), Some(7)).unwrap();
    st.add_backend(&svc(WEB), be("198.19.0.2:80"), None)
        .unwrap();
    st.add_backend(&svc(WEB), be("198.19.0.3:80"), None)
        .unwrap();
    st.remove_service(&svc(WEB)).unwrap();
    let ops = &st.dataplane().ops;
    // The service's flows are deleted after the removal's grace period.
    assert_eq!(
        ops[ops.len() - 3..],
        [
            Op::RemoveService(svc(WEB).key()),
            Op::StartGrace(4),
            Op::WaitGrace(4)
        ]
    );
    assert!(st.dataplane().fake.services.is_empty());
    assert_eq!(st.services(), []);
    assert_eq!(st.counts(), (0, 0));
    assert!(st.backends(None).unwrap().is_empty());
    let before = st.dataplane().ops.len();
    let again = st.add_service(svc(WEB), Some(13)).unwrap();
    assert_eq!((again.id, again.table_offset, again.generation), (0, 0, 1));
    // The freed region is written again only after the removal's grace period.
    assert_eq!(st.dataplane().ops[before], Op::WaitGrace(4));
}

#[test]
fn removing_a_service_deletes_its_flows_only() {
    let mut st = state(16);
    let other = svc("198.18.0.10:53/udp");
    let mut index_and_id = Vec::new();
    for (s, b) in [(svc(WEB), "198.19.0.2:80"), (other, "198.19.0.3:53")] {
        let id = st.add_service(s, Some(7)).unwrap().id;
        let index = st.add_backend(&s, be(b), None).unwrap().index;
        index_and_id.push((index, id));
    }
    for &(index, id) in &index_and_id {
        let fake = &mut st.dataplane_mut().fake;
        fake.add_live_flows(index, 3);
        for v in fake.flows.values_mut().filter(|v| v.backend == index) {
            v.service = id;
        }
    }
    assert_eq!(st.dataplane().fake.flows.len(), 12);
    st.remove_service(&svc(WEB)).unwrap();
    let flows = &st.dataplane().fake.flows;
    assert_eq!(
        flows.len(),
        6,
        "both entries of the other service's 3 flows"
    );
    assert!(flows.values().all(|v| v.service == index_and_id[1].1));
}

#[test]
fn service_ids_reuse_the_lowest_free() {
    let mut st = state(64);
    for port in 1..=3 {
        st.add_service(svc(&format!("198.18.0.10:{port}/udp")), Some(2))
            .unwrap();
    }
    st.remove_service(&svc("198.18.0.10:2/udp")).unwrap();
    let info = st.add_service(svc("198.18.0.10:9/udp"), Some(2)).unwrap();
    assert_eq!(info.id, 1);
}

#[test]
fn service_ids_run_out() {
    let mut st = state(2 * MAX_SERVICES);
    for port in 1..=MAX_SERVICES {
        st.add_service(svc(&format!("198.18.0.10:{port}/tcp")), Some(2))
            .unwrap();
    }
    let e = st
        .add_service(svc("198.18.0.11:80/tcp"), Some(2))
        .unwrap_err();
    assert_eq!(e.to_string(), "all 256 service ids are in use");
    assert_eq!(e.kind(), ErrorKind::ResourceExhausted);
}

#[test]
fn backend_indexes_are_global_and_reused_late() {
    let mut st = state(16);
    let a = svc(WEB);
    let b = svc("198.18.0.10:443/tcp");
    st.add_service(a, Some(2)).unwrap();
    st.add_service(b, Some(2)).unwrap();
    let b1 = be("198.19.0.2:80");
    assert_eq!(st.add_backend(&a, b1, None).unwrap().index, 0);
    // The same address in another service is another backend, with its own index.
    assert_eq!(st.add_backend(&b, b1, None).unwrap().index, 1);
    st.remove_backend(&a, &b1, false).unwrap();
    assert_eq!(
        st.add_backend(&a, be("198.19.0.3:80"), None).unwrap().index,
        2
    );
    assert_eq!(st.counts(), (2, 2));
}

#[test]
fn backend_indexes_run_out() {
    let mut st = state(64);
    let per_service = 256;
    for s in 0..=MAX_BACKENDS / per_service {
        st.add_service(svc(&format!("198.18.0.10:{}/tcp", s + 1)), Some(2))
            .unwrap();
    }
    for i in 0..MAX_BACKENDS {
        let s = svc(&format!("198.18.0.10:{}/tcp", i / per_service + 1));
        let b = be(&format!("198.19.{}.{}:80", i / 256, i % 256));
        st.add_backend(&s, b, None).unwrap();
    }
    let last = svc(&format!(
        "198.18.0.10:{}/tcp",
        MAX_BACKENDS / per_service + 1
    ));
    let e = st
        .add_backend(&last, be("198.19.99.1:80"), None)
        .unwrap_err();
    assert_eq!(e.to_string(), "all 4096 backend indexes are in use");
    assert_eq!(e.kind(), ErrorKind::ResourceExhausted);
}

#[test]
fn tables_follow_weights_and_drain() {
    let mut st = state(16);
    let s = svc(WEB);
    st.add_service(s, Some(11)).unwrap();
    let b1 = be("198.19.0.2:80");
    let b2 = be("198.19.0.3:80");
    let i1 = st.add_backend(&s, b1, Some(1)).unwrap().index;
    let i2 = st.add_backend(&s, b2, Some(1)).unwrap().index;
    let count = |t: &[u32], i| t.iter().filter(|&&x| x == i).count();
    let t = live(&st, WEB);
    assert_eq!((count(&t, i1), count(&t, i2)), (6, 5));
    st.set_weight(&s, &b2, 10).unwrap();
    let t = live(&st, WEB);
    assert_eq!((count(&t, i1), count(&t, i2)), (1, 10));
    let info = st.set_weight(&s, &b2, 0).unwrap();
    assert_eq!(info.weight, 0);
    assert_eq!(live(&st, WEB), [i1; 11]);
    st.set_weight(&s, &b1, 0).unwrap();
    assert_eq!(live(&st, WEB), [NO_BACKEND; 11]);
}

#[test]
fn listings_carry_counters_and_flows() {
    let mut st = state(16);
    let s = svc(WEB);
    st.add_service(s, Some(7)).unwrap();
    st.add_backend(&s, be("198.19.0.3:80"), Some(5)).unwrap();
    st.add_backend(&s, be("198.19.0.2:80"), None).unwrap();
    let dp = st.dataplane_mut();
    dp.backend_counters.insert(
        0,
        Counter {
            packets: 10,
            bytes: 1000,
        },
    );
    dp.fake.add_live_flows(0, 3);
    dp.counters[lb_common::stats::STAT_RX as usize] = Counter {
        packets: 7,
        bytes: 700,
    };

    let list = st.backends(None).unwrap();
    let rows: Vec<(String, u32, u32, u64, u64, u64)> = list
        .iter()
        .map(|b| {
            (
                b.backend.to_string(),
                b.index,
                b.weight,
                b.packets,
                b.bytes,
                b.flows,
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("198.19.0.2:80".to_string(), 1, 100, 0, 0, 0),
            ("198.19.0.3:80".to_string(), 0, 5, 10, 1000, 3),
        ]
    );
    assert_eq!(st.backends(Some(&s)).unwrap(), list);
    let counters = st.counters().unwrap();
    assert_eq!(counters.len(), STAT_NAMES.len());
    assert_eq!(
        counters[0],
        (
            "rx",
            Counter {
                packets: 7,
                bytes: 700
            }
        )
    );
    assert_eq!(st.services()[0].backends, 2);
}

#[test]
fn generations_alternate_halves_across_wrap_around() {
    assert_eq!(table_offset(100, 5, 1), 5);
    assert_eq!(table_offset(100, 5, 2), 105);
    assert_eq!(table_offset(100, 5, u32::MAX), 5);
    assert_eq!(table_offset(100, 5, u32::MAX.wrapping_add(1)), 105);
}

#[test]
fn primes() {
    let primes: Vec<u32> = (0..30).filter(|&n| is_prime(n)).collect();
    assert_eq!(primes, [2, 3, 5, 7, 11, 13, 17, 19, 23, 29]);
    assert!(is_prime(65537));
    assert!(!is_prime(65536));
    assert!(is_prime(4_294_967_291));
    assert!(!is_prime(u32::MAX));
}

#[test]
fn removing_a_backend_with_live_flows_is_refused_unless_forced() {
    let mut st = state(64);
    let s = svc(WEB);
    st.add_service(s, Some(7)).unwrap();
    let (b0, b1) = (be("198.19.0.2:80"), be("198.19.1.2:80"));
    let i0 = st.add_backend(&s, b0, None).unwrap().index;
    st.add_backend(&s, b1, None).unwrap();
    st.dataplane_mut().fake.add_live_flows(i0, 3);
    assert_eq!(st.backends(Some(&s)).unwrap()[0].flows, 3);

    let before = snapshot(&st);
    let e = st.remove_backend(&s, &b0, false).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::FailedPrecondition);
    assert!(e.to_string().contains("3 live flows") && e.to_string().contains("--force"));
    assert_eq!(
        snapshot(&st),
        before,
        "a refused remove changed the data path"
    );

    // Draining does not end the flows; forcing removes the backend and its entries.
    st.set_weight(&s, &b0, 0).unwrap();
    assert_eq!(st.backends(Some(&s)).unwrap()[0].flows, 3);
    st.remove_backend(&s, &b0, true).unwrap();
    assert!(st.dataplane().fake.flows.is_empty());
    assert!(live(&st, WEB).iter().all(|&i| i != i0));
    assert_eq!(st.backends(Some(&s)).unwrap().len(), 1);
}

#[test]
fn sweep_keeps_live_flows() {
    let mut st = state(64);
    st.dataplane_mut().fake.add_live_flows(0, 2);
    assert_eq!(st.sweep().unwrap(), 0);
    assert_eq!(st.dataplane().fake.flows.len(), 4);
    // With a zero UDP/TCP idle timeout, one nanosecond later everything has expired.
    let mut st = st.with_timeouts(Timeouts {
        tcp_idle_ns: 0,
        tcp_closed_ns: 0,
        udp_idle_ns: 0,
    });
    std::thread::sleep(std::time::Duration::from_millis(1));
    assert_eq!(st.sweep().unwrap(), 4);
}

/// The daemon is the authority: every nonsense request of issue 16 is refused here, whatever
/// the client checked, with one line naming the rule, and changes nothing.
#[test]
fn nonsense_is_refused_by_the_state_and_changes_nothing() {
    // The real rule: SLOTS_PER_BACKEND slots per backend.
    let mut st = ControlState::new(Recorder::new(2 * 4096));
    let web = svc(WEB);
    let other = svc("198.18.0.11:53/udp");
    st.add_service(web, Some(211)).unwrap();
    st.add_service(other, Some(101)).unwrap();
    st.add_backend(&web, be("198.19.0.2:8080"), None).unwrap();
    st.add_backend(&web, be("198.19.0.3:8080"), Some(0))
        .unwrap();
    let before = snapshot(&st);
    let ops = st.dataplane().ops.len();

    const UNICAST: &str = "a VIP or backend must be a unicast address";
    type Attempt = Box<dyn Fn(&mut ControlState<Recorder>) -> Result<(), StateError>>;
    let add_service = |s: &'static str, size: Option<u32>| -> Attempt {
        Box::new(move |st| st.add_service(svc(s), size).map(drop))
    };
    let add_backend = |s: &'static str, b: &'static str, w: Option<u32>| -> Attempt {
        Box::new(move |st| st.add_backend(&svc(s), be(b), w).map(drop))
    };
    let cases: Vec<(Attempt, ErrorKind, String)> = vec![
        (add_service("0.0.0.0:80/tcp", None), ErrorKind::InvalidArgument,
         format!("invalid service \"0.0.0.0:80/tcp\": 0.0.0.0 is the unspecified address; {UNICAST}")),
        (add_service("[::]:80/tcp", None), ErrorKind::InvalidArgument,
         format!("invalid service \"[::]:80/tcp\": :: is the unspecified address; {UNICAST}")),
        (add_service("255.255.255.255:80/tcp", None), ErrorKind::InvalidArgument,
         format!("invalid service \"255.255.255.255:80/tcp\": 255.255.255.255 is the broadcast address; {UNICAST}")),
        (add_service("224.0.0.1:80/udp", None), ErrorKind::InvalidArgument,
         format!("invalid service \"224.0.0.1:80/udp\": 224.0.0.1 is a multicast address (224.0.0.0/4, ff00::/8); {UNICAST}")),
        (add_service("[ff05::2]:80/udp", None), ErrorKind::InvalidArgument,
         format!("invalid service \"[ff05::2]:80/udp\": ff05::2 is a multicast address (224.0.0.0/4, ff00::/8); {UNICAST}")),
        (add_service("[::ffff:198.18.0.20]:80/tcp", None), ErrorKind::InvalidArgument,
         "invalid service \"[::ffff:198.18.0.20]:80/tcp\": ::ffff:198.18.0.20 is an IPv4-mapped IPv6 address (::ffff:0:0/96); write the IPv4 address 198.18.0.20".into()),
        (add_service("198.19.0.2:443/tcp", None), ErrorKind::InvalidArgument,
         "backend 198.19.0.2:8080 has the address of service 198.19.0.2:443/tcp: a backend cannot be a VIP (its packets would come back to the load balancer)".into()),
        (add_service("198.18.0.12:80/tcp", Some(3)), ErrorKind::InvalidArgument,
         "table size 3 out of range (101-4294967295)".into()),
        (add_service("198.18.0.12:80/tcp", Some(100)), ErrorKind::InvalidArgument,
         "table size 100 out of range (101-4294967295)".into()),
        (add_service("198.18.0.12:80/tcp", Some(1009 * 5)), ErrorKind::InvalidArgument,
         "table size 5045 is not a prime number (Maglev needs a prime)".into()),
        (add_backend(WEB, "0.0.0.0:8080", None), ErrorKind::InvalidArgument,
         format!("invalid backend \"0.0.0.0:8080\": 0.0.0.0 is the unspecified address; {UNICAST}")),
        (add_backend(WEB, "255.255.255.255:8080", None), ErrorKind::InvalidArgument,
         format!("invalid backend \"255.255.255.255:8080\": 255.255.255.255 is the broadcast address; {UNICAST}")),
        (add_backend(WEB, "224.0.0.5:8080", None), ErrorKind::InvalidArgument,
         format!("invalid backend \"224.0.0.5:8080\": 224.0.0.5 is a multicast address (224.0.0.0/4, ff00::/8); {UNICAST}")),
        (add_backend(WEB, "198.18.0.10:8080", None), ErrorKind::InvalidArgument,
         "backend 198.18.0.10:8080 has the address of service 198.18.0.10:80/tcp: a backend cannot be a VIP (its packets would come back to the load balancer)".into()),
        (add_backend(WEB, "198.18.0.11:53", None), ErrorKind::InvalidArgument,
         "backend 198.18.0.11:53 has the address of service 198.18.0.11:53/udp: a backend cannot be a VIP (its packets would come back to the load balancer)".into()),
        (add_backend(WEB, "198.19.0.4:8080", Some(70000)), ErrorKind::InvalidArgument,
         "weight 70000 out of range (0-65535)".into()),
        // 211 slots hold 2 backends (a drained one counts: it may be given weight again).
        (add_backend(WEB, "198.19.0.4:8080", None), ErrorKind::FailedPrecondition,
         "service 198.18.0.10:80/tcp has no room for a backend more: its table of 211 slots takes 2 at 100 slots per backend, as Maglev needs (re-create it with --table-size 307 or more)".into()),
    ];
    for (i, (attempt, kind, message)) in cases.iter().enumerate() {
        let e = attempt(&mut st).unwrap_err();
        assert_eq!(
            (e.kind(), e.to_string()),
            (*kind, message.clone()),
            "case {i}"
        );
        assert_eq!(snapshot(&st), before, "case {i} changed the state");
        assert_eq!(
            st.dataplane().ops.len(),
            ops,
            "case {i} wrote to the data path"
        );
    }
    // The other service's table (101 slots) takes exactly one backend.
    st.add_backend(&other, be("198.19.0.9:53"), None).unwrap();
    let e = st
        .add_backend(&other, be("198.19.0.10:53"), None)
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("table of 101 slots takes 1 at 100 slots per backend"),
        "{e}"
    );
}

#[test]
fn the_default_table_takes_655_backends() {
    let mut st = ControlState::new(Recorder::new(2 * DEFAULT_TABLE_SIZE));
    let s = svc(WEB);
    st.add_service(s, None).unwrap();
    // Adding them through the state would rebuild the table 655 times; fill the service
    // with weight 0 backends instead (no table slots to compute) and check the 656th.
    for i in 0..655u32 {
        st.add_backend(
            &s,
            be(&format!("198.19.{}.{}:80", i / 250, i % 250 + 1)),
            Some(0),
        )
        .unwrap();
    }
    let e = st.add_backend(&s, be("198.19.9.9:80"), None).unwrap_err();
    assert_eq!(
        e.to_string(),
        "service 198.18.0.10:80/tcp has no room for a backend more: its table of 65537 slots takes 655 at 100 slots per backend, as Maglev needs (re-create it with --table-size 65609 or more)"
    );
}

/// Fills the table area with a value no table holds, as if an earlier daemon had left
/// other tables there, so that every slot of a first write differs from what is there.
fn leave_old_tables(st: &mut ControlState<Recorder>) {
    st.dataplane_mut().fake.tables.fill(7777);
}

/// Replays `ops` and checks that no table write touches a range that a packet may be
/// reading: a service's live half, or a half retired by a flip (or a removal) whose grace
/// period has not been waited for.
fn check_no_write_to_a_readable_half(ops: &[Op]) -> Result<(), String> {
    use std::collections::HashMap;
    let mut live: HashMap<lb_common::ServiceKey, (u32, u32)> = HashMap::new();
    // Retired ranges and the grace period that covers them (None: none started yet).
    let mut retired: Vec<((u32, u32), Option<u64>)> = Vec::new();
    for (n, op) in ops.iter().enumerate() {
        match op {
            Op::PutService(k, v) => {
                let range = (v.table_offset, v.table_offset + v.table_size);
                if let Some(old) = live.insert(*k, range) {
                    retired.push((old, None));
                }
            }
            Op::RemoveService(k) => {
                if let Some(old) = live.remove(k) {
                    retired.push((old, None));
                }
            }
            Op::StartGrace(t) => {
                for r in retired.iter_mut().filter(|r| r.1.is_none()) {
                    r.1 = Some(*t);
                }
            }
            Op::WaitGrace(t) => retired.retain(|r| r.1.is_none_or(|x| x > *t)),
            Op::WriteSlots { first, last, .. } => {
                let readable = live.values().chain(retired.iter().map(|r| &r.0));
                for (start, end) in readable {
                    if *first < *end && *last >= *start {
                        return Err(format!(
                            "op {n}: write of slots {first}..={last} while {start}..{end} may be read"
                        ));
                    }
                }
            }
            Op::PutBackend(..) => {}
        }
    }
    Ok(())
}

#[test]
fn the_checker_catches_a_write_to_a_retired_half() {
    let key = svc(WEB).key();
    let at = |table_offset| {
        Op::PutService(
            key,
            ServiceValue {
                table_offset,
                table_size: 7,
                ..Default::default()
            },
        )
    };
    let write = |first| Op::WriteSlots {
        first,
        last: first + 6,
        count: 7,
    };
    let good = [
        write(0),
        at(0),
        Op::StartGrace(1),
        write(16),
        at(16),
        Op::StartGrace(2),
        Op::WaitGrace(2),
        write(0),
    ];
    assert_eq!(check_no_write_to_a_readable_half(&good), Ok(()));
    // Without the wait; waiting for the grace period of an earlier flip; writing the live half.
    let mut no_wait = good.to_vec();
    no_wait.remove(6);
    let mut early = good.to_vec();
    early[6] = Op::WaitGrace(1);
    let mut live_half = good.to_vec();
    live_half[7] = write(16);
    for bad in [no_wait, early, live_half] {
        assert!(check_no_write_to_a_readable_half(&bad).is_err(), "{bad:?}");
    }
}

#[test]
fn two_quick_changes_wait_for_in_flight_programs_before_reusing_a_half() {
    let mut st = state(16);
    leave_old_tables(&mut st);
    let s = svc(WEB);
    st.add_service(s, Some(7)).unwrap();
    let b = be("198.19.0.2:80");
    let index = st.add_backend(&s, b, None).unwrap().index;
    let b2 = be("198.19.0.3:80");
    let index2 = st.add_backend(&s, b2, None).unwrap().index;
    let value = |table_offset, generation| ServiceValue {
        id: 0,
        table_offset,
        table_size: 7,
        generation,
        ..Default::default()
    };
    let write = |first| Op::WriteSlots {
        first,
        last: first + 6,
        count: 7,
    };
    assert_eq!(
        st.dataplane().ops,
        [
            // add: the first half, then the flip to it, then a grace period starts.
            write(0),
            Op::PutService(s.key(), value(0, 1)),
            Op::StartGrace(1),
            // add_backend: the second half was never live, but may have been read by a
            // removed service's packets; wait, write it, flip.
            Op::PutBackend(index, b.backend()),
            Op::WaitGrace(1),
            write(16),
            Op::PutService(s.key(), value(16, 2)),
            Op::StartGrace(2),
            // The next add: the first half was live until the flip just before; only once
            // the grace period started after that flip has ended is it rewritten.
            Op::PutBackend(index2, b2.backend()),
            Op::WaitGrace(2),
            write(0),
            Op::PutService(s.key(), value(0, 3)),
            Op::StartGrace(3),
        ]
    );
    check_no_write_to_a_readable_half(&st.dataplane().ops).unwrap();
}

#[test]
fn only_the_changed_slots_are_written() {
    const SIZE: u32 = 4099;
    let mut st = state(SIZE);
    let s = svc(WEB);
    st.add_service(s, Some(SIZE)).unwrap();
    let backends: Vec<BackendAddr> = (0..20)
        .map(|i| be(&format!("198.19.0.{}:80", i + 2)))
        .collect();
    for b in &backends {
        st.add_backend(&s, *b, None).unwrap();
    }
    // The same weight again: now both halves hold the table of all 20 at weight 100.
    st.set_weight(&s, &backends[0], 100).unwrap();
    let both = live(&st, WEB);

    let before = st.dataplane().ops.len();
    st.set_weight(&s, &backends[0], 50).unwrap();
    let after = live(&st, WEB);
    let differ = both.iter().zip(&after).filter(|(a, b)| a != b).count();
    assert!(
        differ > 0 && differ < SIZE as usize / 20,
        "{differ} slots moved"
    );
    let written: Vec<usize> = st.dataplane().ops[before..]
        .iter()
        .filter_map(|op| match op {
            Op::WriteSlots { count, .. } => Some(*count),
            _ => None,
        })
        .collect();
    assert_eq!(written, [differ], "one batch of exactly the changed slots");
    assert_eq!(st.last_table_write().unwrap().slots_written, differ);

    // Twice more at 50: the first rewrites the other half (it held weight 100), the
    // second finds the table already there and writes nothing, but still flips.
    st.set_weight(&s, &backends[0], 50).unwrap();
    assert_eq!(st.last_table_write().unwrap().slots_written, differ);
    let before = st.dataplane().ops.len();
    st.set_weight(&s, &backends[0], 50).unwrap();
    let ops = &st.dataplane().ops[before..];
    // Nothing to write, so nothing to wait for either: read back, flip, start a grace period.
    assert!(
        matches!(ops, [Op::PutService(..), Op::StartGrace(_)]),
        "{ops:?}"
    );
    assert_eq!(live(&st, WEB), after);
    check_no_write_to_a_readable_half(&st.dataplane().ops).unwrap();
}

#[test]
fn no_sequence_of_changes_writes_a_half_that_may_be_read() {
    let mut st = state(64);
    leave_old_tables(&mut st);
    let a = svc(WEB);
    let b = svc("198.18.0.10:443/tcp");
    let (b1, b2, b3) = (
        be("198.19.0.2:80"),
        be("198.19.0.3:80"),
        be("198.19.0.4:80"),
    );
    st.add_service(a, Some(13)).unwrap();
    st.add_service(b, Some(11)).unwrap();
    st.add_backend(&a, b1, None).unwrap();
    st.add_backend(&b, b1, Some(3)).unwrap();
    st.add_backend(&a, b2, Some(7)).unwrap();
    st.set_weight(&a, &b1, 0).unwrap();
    st.set_weight(&b, &b1, 9).unwrap();
    st.add_backend(&b, b3, None).unwrap();
    st.remove_backend(&a, &b1, false).unwrap();
    st.dataplane_mut().fake.add_live_flows(1, 2);
    st.remove_backend(&b, &b1, true).unwrap();
    st.remove_service(&a).unwrap();
    // A new service in the freed region, changed at once.
    let c = svc("198.18.0.10:8080/udp");
    st.add_service(c, Some(13)).unwrap();
    st.add_backend(&c, b3, None).unwrap();
    st.set_weight(&c, &b3, 1).unwrap();
    st.set_weight(&b, &b3, 1).unwrap();
    let ops = &st.dataplane().ops;
    check_no_write_to_a_readable_half(ops).unwrap();
    // The forced removal waited for the grace period of its flip before deleting flows.
    assert!(st.dataplane().fake.flows.is_empty());
    assert!(ops.iter().filter(|o| matches!(o, Op::WaitGrace(_))).count() >= 10);
}

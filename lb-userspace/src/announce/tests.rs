use super::*;
use HealthState::{Checking, Down, Up};

fn ip(s: &str) -> IpAddr {
    s.parse().expect("an address")
}

#[test]
fn a_vip_is_announced_while_one_backend_is_up_and_not_drained() {
    let (a, b) = (ip("198.18.0.10"), ip("2001:2::10"));
    let d = decide(
        false,
        [
            (a, 100, Down),
            (a, 100, Up),
            (a, 0, Up),
            (b, 100, Checking),
            (b, 0, Up),
        ],
    );
    assert_eq!(d[&a], Reason::Up(1));
    // checking is not up yet; a drained backend does not count whatever its health.
    assert_eq!(d[&b], Reason::NoBackendUp);
    assert!(d[&a].announced() && !d[&b].announced());
}

#[test]
fn services_on_one_vip_count_together_and_a_service_without_backends_withdraws() {
    let a = ip("198.18.0.10");
    // :80 has every backend down, :443 one up: the VIP stays announced.
    let d = decide(false, [(a, 100, Down), (a, 100, Up)]);
    assert_eq!(d[&a], Reason::Up(1));
    let empty = ip("198.18.0.11");
    assert_eq!(
        decide(false, [(empty, 0, Down)])[&empty],
        Reason::NoBackendUp
    );
}

#[test]
fn a_draining_node_withdraws_every_vip() {
    let (a, b) = (ip("198.18.0.10"), ip("198.18.0.11"));
    let d = decide(true, [(a, 100, Up), (b, 100, Down)]);
    assert_eq!(
        d.values().copied().collect::<Vec<_>>(),
        [Reason::Draining; 2]
    );
    assert_eq!(Reason::Draining.describe(), "the node is draining");
    assert_eq!(Reason::Up(2).describe(), "2 backends up");
}

#[test]
fn changes_are_the_two_differences() {
    let set = |v: &[&str]| v.iter().map(|s| ip(s)).collect::<BTreeSet<_>>();
    let (add, del) = changes(
        &set(&["198.18.0.1", "198.18.0.2"]),
        &set(&["198.18.0.2", "198.18.0.3"]),
    );
    assert_eq!((add, del), (vec![ip("198.18.0.3")], vec![ip("198.18.0.1")]));
}

/// Records writes; fails the adds of `fail`.
#[derive(Default)]
struct Recorder {
    log: Vec<String>,
    fail: Option<IpAddr>,
}

impl Routes for Recorder {
    fn add(&mut self, vip: IpAddr) -> io::Result<()> {
        if self.fail == Some(vip) {
            return Err(io::Error::from_raw_os_error(libc::EPERM));
        }
        self.log.push(format!("add {vip}"));
        Ok(())
    }

    fn delete(&mut self, vip: IpAddr) -> io::Result<()> {
        self.log.push(format!("del {vip}"));
        Ok(())
    }
}

#[test]
fn the_announcer_writes_only_changes_and_clears_stale_routes_once() {
    let (a, b) = (ip("198.18.0.10"), ip("198.18.0.11"));
    let mut ann = Announcer::new(Recorder::default());
    let d1 = decide(false, [(a, 100, Up), (b, 100, Down)]);
    ann.apply(&d1);
    // b was never seen: whatever an earlier (killed) xlbd left is deleted.
    assert_eq!(ann.routes.log, ["add 198.18.0.10", "del 198.18.0.11"]);
    ann.apply(&d1);
    assert_eq!(
        ann.routes.log.len(),
        2,
        "an unchanged decision writes nothing"
    );
    ann.apply(&decide(true, [(a, 100, Up), (b, 100, Down)]));
    assert_eq!(ann.routes.log[2..], ["del 198.18.0.10"]);
    ann.apply(&decide(false, [(a, 100, Up), (b, 100, Up)]));
    assert_eq!(ann.routes.log[3..], ["add 198.18.0.10", "add 198.18.0.11"]);
    // The service on b is removed: its VIP is no longer decided and is withdrawn.
    ann.apply(&decide(false, [(a, 100, Up)]));
    assert_eq!(ann.routes.log[5..], ["del 198.18.0.11"]);
    ann.withdraw_all();
    assert_eq!(ann.routes.log[6..], ["del 198.18.0.10"]);
    assert!(ann.announced.is_empty());
}

#[test]
fn a_failed_announcement_is_tried_again() {
    let a = ip("198.18.0.10");
    let mut ann = Announcer::new(Recorder {
        fail: Some(a),
        ..Recorder::default()
    });
    let d = decide(false, [(a, 100, Up)]);
    assert!(ann.apply(&d).is_empty());
    ann.routes.fail = None;
    assert!(ann.apply(&d).contains(&a));
    assert_eq!(ann.routes.log, ["add 198.18.0.10"]);
}

#[test]
fn the_table_flag_refuses_the_forwarding_tables() {
    assert_eq!(parse_table("100"), Ok(KernelTable(100)));
    assert_eq!(parse_table("4294967295"), Ok(KernelTable(u32::MAX)));
    for bad in ["0", "-1", "main", "", "4294967296"] {
        assert!(
            matches!(parse_table(bad), Err(TableError::NotANumber(_))),
            "{bad}"
        );
    }
    assert_eq!(parse_table("254"), Err(TableError::Reserved(254, "main")));
    let line = parse_table("255").unwrap_err().to_string();
    assert!(line.contains("local") && !line.contains('\n'), "{line}");
}

#[test]
fn the_route_request_is_a_blackhole_host_route_in_the_table() {
    let m = KernelTable(100).message(RTM_NEWROUTE, 0, ip("198.18.0.10"));
    assert_eq!(
        u32::from_ne_bytes(m[..4].try_into().unwrap()) as usize,
        m.len()
    );
    assert_eq!(m.len(), 16 + 12 + 8 + 8);
    assert_eq!(u16::from_ne_bytes([m[4], m[5]]), RTM_NEWROUTE);
    // rtmsg: AF_INET, /32, table 100, proto xlb, blackhole.
    assert_eq!(
        &m[16..24],
        &[2, 32, 0, 0, 100, RTPROT_XLB, 0, RTN_BLACKHOLE]
    );
    assert_eq!(&m[28..36], &[8, 0, 1, 0, 198, 18, 0, 10]);
    assert_eq!(&m[36..40], &[8, 0, 15, 0]);
    assert_eq!(u32::from_ne_bytes(m[40..44].try_into().unwrap()), 100);
    let v6 = KernelTable(1000).message(RTM_DELROUTE, 0, ip("2001:2::10"));
    assert_eq!(&v6[16..21], &[libc::AF_INET6 as u8, 128, 0, 0, 0]);
    assert_eq!(v6.len(), 16 + 12 + 20 + 8);
}

#[test]
fn the_drain_flag_is_kept_in_the_state_dir() {
    let dir = std::env::temp_dir().join(format!("xlb-announce-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let node = Node::new(None, Some(dir.clone()));
    assert!(!node.draining());
    node.set_draining(true).unwrap();
    assert!(
        Node::new(None, Some(dir.clone())).draining(),
        "a restart stays drained"
    );
    node.set_draining(false).unwrap();
    node.set_draining(false).unwrap();
    assert!(!Node::new(None, Some(dir.clone())).draining());
    std::fs::remove_dir_all(&dir).unwrap();
}

use clap::Parser as _;

use super::*;

const WEB: &str = "198.18.0.10:80/tcp";

fn backend(
    addr: &str,
    index: u32,
    weight: u32,
    packets: u64,
    bytes: u64,
    flows: u64,
) -> proto::BackendEntry {
    proto::BackendEntry {
        service: WEB.into(),
        backend: addr.into(),
        index,
        weight,
        packets,
        bytes,
        flows,
        new_flows: packets / 100,
        state: if weight == 0 { "draining" } else { "up" }.into(),
        ..Default::default()
    }
}

fn counter(name: &str, packets: u64) -> proto::Counter {
    proto::Counter {
        name: name.into(),
        packets,
        bytes: 0,
    }
}

fn poll(at: Instant, scale: u64) -> Poll {
    Poll {
        at,
        services: vec![proto::Service {
            service: WEB.into(),
            id: 0,
            table_size: 65537,
            table_offset: 0,
            generation: 2,
            backends: 2,
            ..Default::default()
        }],
        backends: vec![
            backend("198.19.0.2:8080", 0, 100, 1000 * scale, 125_000 * scale, 3),
            backend("198.19.1.2:8080", 1, 0, 10 * scale, 1000 * scale, 1),
        ],
        counters: vec![
            counter("rx", 2000 * scale),
            counter("forward", 1010 * scale),
            counter("new_flow", 5 * scale),
            counter("drop_no_backend", 2 * scale),
            counter("drop_flow_table", scale),
        ],
    }
}

#[test]
fn rates_are_differences_over_time() {
    assert_eq!(rate(100, 300, 2.0), Some(100.0));
    assert_eq!(rate(100, 100, 0.5), Some(0.0));
    // A counter that went back (daemon restarted) or no time between: unknown.
    assert_eq!(rate(300, 100, 2.0), None);
    assert_eq!(rate(100, 300, 0.0), None);
}

#[test]
fn si_units() {
    assert_eq!(si(0.0), "0");
    assert_eq!(si(999.4), "999");
    assert_eq!(si(1000.0), "1.0k");
    assert_eq!(si(1_250_000.0), "1.2M");
    assert_eq!(si(8e9), "8.0G");
}

#[test]
fn intervals_are_checked() {
    use crate::limits::parse_interval;
    assert_eq!(parse_interval("0.5").unwrap(), Duration::from_millis(500));
    assert_eq!(parse_interval("2").unwrap(), Duration::from_secs(2));
    assert_eq!(
        parse_interval("0").unwrap_err().to_string(),
        "interval 0 out of range (0.1-3600 seconds)"
    );
    assert!(parse_interval("soon").is_err());
    assert!(parse_interval("NaN").is_err());
    // As the CLI prints it: our message alone.
    let e = crate::cli::Cli::try_parse_from(["xlb", "top", "--interval", "-1"]).unwrap_err();
    assert_eq!(
        crate::cli::usage_error_line(e),
        "interval -1 out of range (0.1-3600 seconds)"
    );
}

#[test]
fn the_first_screen_has_no_rates_yet() {
    let now = Instant::now();
    let lines = render(None, &poll(now, 1), DEFAULT_INTERVAL, 120, 40);
    assert_eq!(
        lines,
        [
            "xlb top - every 1.0s - q quits   1 services  2 backends",
            "rx - pps   forward - pps   reply - pps   new flows -/s   drops -/s",
            "",
            "SERVICE / BACKEND   WEIGHT      PPS        BIT/S   NEW/S    FLOWS  HEALTH",
            "198.18.0.10:80/tcp                -            -       -        4",
            "  198.19.0.2:8080      100        -            -       -        3      up",
            "  198.19.1.2:8080    drain        -            -       -        1  draining",
        ]
    );
}

#[test]
fn rates_between_two_polls() {
    let t0 = Instant::now();
    let t1 = t0 + Duration::from_secs(2);
    // Over 2 s: backend 0 forwarded 1000 packets (500/s) and 125000 bytes (500 kbit/s);
    // backend 1 10 packets (5/s), 1000 bytes (4 kbit/s).
    let lines = render(Some(&poll(t0, 1)), &poll(t1, 2), DEFAULT_INTERVAL, 120, 40);
    assert_eq!(
        lines[1],
        "rx 1.0k pps   forward 505 pps   reply - pps   new flows 2/s   drops 2/s"
    );
    assert_eq!(
        lines[4],
        "198.18.0.10:80/tcp              505  504.0kbit/s       5        4"
    );
    assert_eq!(
        lines[5],
        "  198.19.0.2:8080      100      500  500.0kbit/s       5        3      up"
    );
    assert_eq!(
        lines[6],
        "  198.19.1.2:8080    drain        5    4.0kbit/s       0        1  draining"
    );
}

#[test]
fn the_screen_is_cut_to_the_terminal() {
    let now = Instant::now();
    let lines = render(None, &poll(now, 1), DEFAULT_INTERVAL, 20, 4);
    assert_eq!(lines.len(), 4);
    assert!(lines.iter().all(|l| l.chars().count() <= 20), "{lines:?}");
    let empty = Poll {
        services: vec![],
        backends: vec![],
        ..poll(now, 1)
    };
    let lines = render(None, &empty, DEFAULT_INTERVAL, 80, 24);
    assert_eq!(
        lines.last().unwrap(),
        "(no services: xlb service add VIP:PORT/PROTO)"
    );
}

/// A backend removed and added again gets another index: its old counters are not
/// subtracted from the new ones.
#[test]
fn a_re_added_backend_starts_without_a_rate() {
    let t0 = Instant::now();
    let mut cur = poll(t0 + Duration::from_secs(1), 2);
    cur.backends[0].index = 7;
    let lines = render(Some(&poll(t0, 1)), &cur, DEFAULT_INTERVAL, 120, 40);
    assert!(
        lines[5].starts_with("  198.19.0.2:8080      100        -"),
        "{}",
        lines[5]
    );
    assert!(
        lines[4].starts_with("198.18.0.10:80/tcp                -"),
        "{}",
        lines[4]
    );
}

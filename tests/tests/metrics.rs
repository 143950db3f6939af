//! What an operator scrapes and watches (issue 10): `xlbd --metrics-addr` after known
//! traffic, parsed with an OpenMetrics parser, and `xlb top` run under tmux for a few
//! refreshes, its screen read and `q` pressed.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use openmetrics_parser::{MetricsExposition, OpenMetricsType, OpenMetricsValue};
use xlb_testbed::{Testbed, VIP, backend_id, bin_path, report, require_root, tcp_flow};

const UDP_SERVICE: &str = "198.18.0.10:53/udp";
const TCP_SERVICE: &str = "198.18.0.10:80/tcp";
const BACKEND_PORT: u16 = 8080;
const BACKENDS: usize = 3;
/// Where xlbd serves metrics, in the LB namespace.
const METRICS: &str = "127.0.0.1:9100";
const FLOW_ENTRIES: &str = "4096";

type Exposition = MetricsExposition<OpenMetricsType, OpenMetricsValue>;

/// 1 client, 3 backends with id servers, xlbd with metrics, a UDP and a TCP service over
/// the three backends.
fn testbed() -> Testbed {
    let mut tb = Testbed::new(1, BACKENDS).expect("testbed");
    for j in 0..BACKENDS {
        tb.spawn_id_server(j, BACKEND_PORT).expect("id server");
    }
    tb.start_xlbd(&["--metrics-addr", METRICS, "--flow-entries", FLOW_ENTRIES])
        .expect("start xlbd");
    tb.add_service_with_backends(UDP_SERVICE, BACKEND_PORT)
        .expect("UDP service");
    tb.add_service_with_backends(TCP_SERVICE, BACKEND_PORT)
        .expect("TCP service");
    tb
}

/// `GET /metrics` from inside the LB namespace (the endpoint is on its loopback): the
/// Content-Type and the body.
fn scrape(tb: &Testbed) -> (String, String) {
    let raw = tb
        .lb()
        .run(|| -> std::io::Result<String> {
            let mut s = TcpStream::connect(METRICS)?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: xlbd\r\nConnection: close\r\n\r\n")?;
            let mut out = String::new();
            s.read_to_string(&mut out)?;
            Ok(out)
        })
        .expect("enter the LB namespace")
        .expect("scrape the metrics endpoint");
    let (head, body) = raw.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    let content_type = head
        .lines()
        .find_map(|l| l.strip_prefix("content-type: "))
        .expect("a content-type")
        .to_string();
    (content_type, body.to_string())
}

fn parse(text: &str) -> Exposition {
    openmetrics_parser::openmetrics::parse_openmetrics(text)
        .unwrap_or_else(|e| panic!("not valid OpenMetrics text: {e}\n{text}"))
}

/// `family`'s sample with exactly `labels`.
fn value(exp: &Exposition, family: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let want: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    exp.families.get(family)?.iter_samples().find_map(|s| {
        let got: BTreeMap<String, String> = s
            .get_labelset()
            .ok()?
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        (got == want).then(|| match &s.value {
            OpenMetricsValue::Counter(c) => c.value.as_f64(),
            OpenMetricsValue::Gauge(n) => n.as_f64(),
            other => panic!("{family}: unexpected {other:?}"),
        })
    })
}

fn backend_of(id: &str) -> usize {
    (0..BACKENDS)
        .find(|&j| backend_id(j) == id)
        .unwrap_or_else(|| panic!("answer {id:?} is no backend's id"))
}

/// One UDP flow from client 0 to the VIP: `datagrams` datagrams, each sent once and
/// answered (a lost one fails the test rather than being sent again, so the count of
/// what the client sent is exact). Returns the backend and the frame bytes sent.
fn udp_flow(tb: &Testbed, datagrams: usize) -> (usize, u64) {
    let socket = tb
        .client(0)
        .ns
        .run(|| UdpSocket::bind("0.0.0.0:0"))
        .expect("enter the client namespace")
        .expect("bind");
    socket
        .connect(SocketAddr::new(VIP.into(), 53))
        .expect("connect");
    socket
        .set_read_timeout(Some(Duration::from_secs(3)))
        .expect("timeout");
    let (mut backend, mut bytes) = (None, 0);
    let mut buf = [0u8; 256];
    for i in 0..datagrams {
        let payload = format!("metrics {i}");
        socket.send(payload.as_bytes()).expect("send");
        // Ethernet 14 + IPv4 20 + UDP 8 + payload: what the data path counts.
        bytes += 42 + payload.len() as u64;
        let n = socket.recv(&mut buf).expect("an answer to every datagram");
        let j = backend_of(&String::from_utf8_lossy(&buf[..n]));
        assert_eq!(*backend.get_or_insert(j), j, "a UDP flow changed backend");
    }
    (backend.expect("some datagrams"), bytes)
}

#[test]
fn metrics_count_what_the_clients_sent() {
    if !require_root("metrics_count_what_the_clients_sent") {
        return;
    }
    let tb = testbed();
    let addr = |j: usize| format!("{}:{BACKEND_PORT}", tb.backend(j).addr());

    let (content_type, text) = scrape(&tb);
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    let before = parse(&text);
    for svc in [UDP_SERVICE, TCP_SERVICE] {
        for j in 0..BACKENDS {
            let l = [("service", svc), ("backend", &addr(j))];
            assert_eq!(
                value(&before, "xlb_backend_packets", &l),
                Some(0.0),
                "{svc} {j}"
            );
        }
    }

    // Known traffic: 12 UDP flows of 5 datagrams, 6 TCP connections of 4 lines.
    const UDP_FLOWS: usize = 12;
    const DATAGRAMS: usize = 5;
    const TCP_CONNS: usize = 6;
    const LINES: usize = 4;
    let mut udp_sent = [0u64; BACKENDS];
    let mut udp_bytes = [0u64; BACKENDS];
    for _ in 0..UDP_FLOWS {
        let (j, bytes) = udp_flow(&tb, DATAGRAMS);
        udp_sent[j] += DATAGRAMS as u64;
        udp_bytes[j] += bytes;
    }
    let mut tcp_conns = [0u64; BACKENDS];
    let vip80 = SocketAddr::new(VIP.into(), 80);
    for _ in 0..TCP_CONNS {
        let flow = tcp_flow(&tb.client(0).ns, vip80, LINES).expect("TCP flow");
        tcp_conns[backend_of(flow.backend().expect("one backend"))] += 1;
    }
    // Let the last connections' FINs and ACKs pass.
    thread::sleep(Duration::from_millis(300));

    let started = Instant::now();
    let (_, text) = scrape(&tb);
    report(&format!(
        "metrics: a scrape took {:?} ({} bytes)",
        started.elapsed(),
        text.len()
    ));
    let exp = parse(&text);
    let mut forwarded = 0.0;
    for j in 0..BACKENDS {
        let udp = [("service", UDP_SERVICE), ("backend", &addr(j))];
        let tcp = [("service", TCP_SERVICE), ("backend", &addr(j))];
        // UDP: exactly the datagrams sent, and their bytes.
        let got = value(&exp, "xlb_backend_packets", &udp).expect("UDP backend packets");
        assert_eq!(got, udp_sent[j] as f64, "UDP packets of backend {j}");
        let got = value(&exp, "xlb_backend_bytes", &udp).expect("UDP backend bytes");
        assert_eq!(got, udp_bytes[j] as f64, "UDP bytes of backend {j}");
        // TCP: the lines sent, plus per connection the handshake (SYN, ACK), the close
        // (FIN, ACK) and at most one ACK per answer.
        let got = value(&exp, "xlb_backend_packets", &tcp).expect("TCP backend packets");
        let lines = (tcp_conns[j] * LINES as u64) as f64;
        let most = lines + (tcp_conns[j] * (4 + LINES as u64)) as f64;
        assert!(
            got >= lines + tcp_conns[j] as f64 && got <= most,
            "TCP packets of backend {j}: {got}, {} connections of {LINES} lines",
            tcp_conns[j]
        );
        let new = |l: &[(&str, &str)]| value(&exp, "xlb_backend_new_flows", l).unwrap_or(0.0);
        assert_eq!(
            (new(&udp), new(&tcp)),
            ((udp_sent[j] / DATAGRAMS as u64) as f64, tcp_conns[j] as f64),
            "new flows of backend {j}: one per UDP flow and per TCP connection"
        );
        let udp_got = value(&exp, "xlb_backend_packets", &udp).unwrap();
        forwarded += udp_got + got;
        report(&format!(
            "metrics: backend {j}: UDP {} datagrams sent, {udp_got} counted; TCP {} connections x {LINES} lines, {got} packets counted",
            udp_sent[j], tcp_conns[j]
        ));
    }
    let flows = (UDP_FLOWS + TCP_CONNS) as f64;
    assert_eq!(value(&exp, "xlb_new_flows", &[]), Some(flows));
    // UDP flows stay live for 30 s; the TCP connections closed.
    assert_eq!(
        value(&exp, "xlb_service_live_flows", &[("service", UDP_SERVICE)]),
        Some(UDP_FLOWS as f64)
    );
    assert_eq!(
        value(&exp, "xlb_service_live_flows", &[("service", TCP_SERVICE)]),
        Some(0.0)
    );
    // Two entries per flow; closed TCP ones stay until their timeout.
    assert_eq!(
        value(&exp, "xlb_flow_table_entries", &[]),
        Some(2.0 * flows)
    );
    assert_eq!(value(&exp, "xlb_flow_table_capacity", &[]), Some(4096.0));
    // Every packet to a backend was also received, and forwarded (in XDP, or via the
    // kernel while a neighbour was resolved).
    let by = |reason: &str| {
        value(
            &exp,
            "xlb_packets",
            &[("verdict", "forward"), ("reason", reason)],
        )
        .unwrap_or(0.0)
    };
    let via_kernel = value(
        &exp,
        "xlb_packets",
        &[("verdict", "pass"), ("reason", "fib")],
    )
    .unwrap_or(0.0)
        + value(
            &exp,
            "xlb_packets",
            &[("verdict", "pass"), ("reason", "egress")],
        )
        .unwrap_or(0.0);
    // (pass_fib also counts replies passed while the client's neighbour was resolved.)
    let fwd = by("forward");
    assert!(fwd <= forwarded && fwd + via_kernel >= forwarded, "{text}");
    assert!(value(&exp, "xlb_received_packets", &[]).unwrap() >= forwarded);
    assert_eq!(
        value(
            &exp,
            "xlb_packets",
            &[("verdict", "drop"), ("reason", "no_backend")]
        ),
        Some(0.0)
    );
    // One table per backend added, plus the empty one of the service's creation.
    assert_eq!(
        value(
            &exp,
            "xlb_service_table_changes",
            &[("service", UDP_SERVICE)]
        ),
        Some((1 + BACKENDS) as f64)
    );
}

/// A tmux server of our own (`-L`), killed on drop.
struct Tmux {
    name: String,
}

impl Tmux {
    fn cmd(&self, args: &[&str]) -> std::process::Output {
        Command::new("tmux")
            .arg("-L")
            .arg(&self.name)
            .args(args)
            .env("TERM", "xterm")
            .output()
            .expect("run tmux")
    }

    fn screen(&self) -> String {
        let out = self.cmd(&["capture-pane", "-p", "-t", "top"]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Polls the screen until `pred` holds, for at most `limit`.
    fn wait_screen(&self, limit: Duration, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let s = self.screen();
            if pred(&s) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "{what} not seen within {limit:?}:\n{s}"
            );
            thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd(&["kill-server"]);
    }
}

fn tmp_file(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("xlb-top-test-{}-{name}", std::process::id()))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .trim()
        .to_string()
}

#[test]
fn xlb_top_shows_services_backends_and_rates_and_quits_on_q() {
    if !require_root("xlb_top_shows_services_backends_and_rates_and_quits_on_q") {
        return;
    }
    if Command::new("tmux").arg("-V").output().is_err() {
        panic!("tmux is not installed: run `cargo xtask setup`");
    }
    let tb = testbed();
    // Without a terminal: one line and exit 1.
    let out = tb.xlb(&["top"]).expect("run xlb top");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "xlb: error: xlb top needs a terminal (for scripts: xlb backend list --json, xlb stats --json)\n"
    );
    let xlb = bin_path("xlb").expect("xlb");
    let (before, after, rc) = (tmp_file("before"), tmp_file("after"), tmp_file("rc"));
    // The terminal's settings before and after, and xlb's exit code, written by the shell
    // that runs it in the pane.
    let script = format!(
        "stty -g > {b}; {xlb} --socket {sock} top --interval 0.3; echo $? > {rc}; stty -g > {a}",
        b = before.display(),
        a = after.display(),
        rc = rc.display(),
        xlb = xlb.display(),
        sock = tb.socket().display(),
    );
    let tmux = Tmux {
        name: format!("xlb-top-test-{}", std::process::id()),
    };
    let out = tmux.cmd(&[
        "new-session",
        "-d",
        "-s",
        "top",
        "-x",
        "120",
        "-y",
        "30",
        "sh",
        "-c",
        &script,
    ]);
    assert!(
        out.status.success(),
        "tmux: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let b0 = format!("{}:{BACKEND_PORT}", tb.backend(0).addr());
    let first = tmux.wait_screen(Duration::from_secs(10), "the first screen", |s| {
        s.contains("xlb top") && s.contains(UDP_SERVICE) && s.contains(TCP_SERVICE)
    });
    for j in 0..BACKENDS {
        let b = format!("{}:{BACKEND_PORT}", tb.backend(j).addr());
        assert_eq!(
            first.matches(&b).count(),
            2,
            "backend {j} under both services:\n{first}"
        );
    }
    assert!(first.contains("SERVICE / BACKEND"), "{first}");

    // Traffic while it refreshes: UDP flows of 40 datagrams each, for at most 3 s; some
    // backend row of the UDP service must show a packet rate above 0.
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut seen = None;
    while Instant::now() < deadline && seen.is_none() {
        udp_flow(&tb, 40);
        let s = tmux.screen();
        // The UDP service's backend rows: NAME WEIGHT PPS BIT/S NEW/S FLOWS HEALTH.
        let moving = s
            .lines()
            .skip_while(|l| !l.starts_with(UDP_SERVICE))
            .skip(1)
            .take(BACKENDS)
            .filter_map(|l| l.split_whitespace().nth(2))
            .any(|pps| pps != "-" && pps != "0");
        if moving {
            seen = Some(s);
        }
    }
    let seen = seen.expect("a backend of the UDP service with packets/s above 0");
    report(&format!("xlb top, as read:\n{seen}"));
    assert!(seen.contains(&b0), "{seen}");
    // Live flows: the UDP service's row counts the flows just made.
    let udp_row = seen.lines().find(|l| l.starts_with(UDP_SERVICE)).unwrap();
    let flows: u64 = udp_row
        .split_whitespace()
        .last()
        .unwrap()
        .parse()
        .expect("FLOWS");
    assert!(flows >= 1, "{udp_row}");

    let out = tmux.cmd(&["send-keys", "-t", "top", "q"]);
    assert!(out.status.success());
    let deadline = Instant::now() + Duration::from_secs(5);
    while read(&after).is_empty() {
        assert!(
            Instant::now() < deadline,
            "xlb top did not quit on q:\n{}",
            tmux.screen()
        );
        thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(read(&rc), "0", "xlb top's exit code");
    assert_eq!(
        read(&before),
        read(&after),
        "the terminal's settings were restored"
    );
    for f in [before, after, rc] {
        let _ = std::fs::remove_file(f);
    }
    report(&format!(
        "xlb top: a refreshed screen read under tmux:\n{seen}"
    ));
}

/// The control socket stays the only way in: mode 0600, owned by root, and a user other
/// than root cannot use it (issue 10, item 6). The metrics endpoint only reads.
#[test]
fn the_control_socket_is_root_only() {
    if !require_root("the_control_socket_is_root_only") {
        return;
    }
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    let mut tb = Testbed::new(1, 1).expect("testbed");
    tb.start_xlbd(&[]).expect("start xlbd");
    let meta = std::fs::metadata(tb.socket()).expect("the socket");
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!((meta.uid(), meta.gid()), (0, 0));
    // nobody (65534), through setpriv (util-linux): refused by the kernel.
    let xlb = bin_path("xlb").expect("xlb");
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&xlb)
        .arg("--socket")
        .arg(tb.socket())
        .arg("status")
        .output()
        .expect("run setpriv");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "nobody reached xlbd: {err}");
    assert!(err.contains("Permission denied"), "{err}");
    assert!(tb.xlb_ok(&["status"]).is_ok());
}

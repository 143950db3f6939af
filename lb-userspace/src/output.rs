//! What `xlb` prints: aligned text tables, or with `--json` one JSON document.
//!
//! The JSON keys are stable (scripts, tests and the demo read them):
//!
//! - `xlb service list --json`:
//!   `{"services":[{"service":"198.18.0.10:80/tcp","id":0,"table_size":65537,
//!   "table_offset":0,"generation":1,"backends":3,"check":{"kind":"tcp","interval_ms":200,
//!   "timeout_ms":100,"rise":2,"fall":2,"port":null,"addr":"","http_method":"",...,
//!   "all_down":"fail-open"}}]}` (the `HealthCheck` message of `proto/xlb.proto`)
//! - `xlb backend list [SERVICE] --json`:
//!   `{"backends":[{"service":"198.18.0.10:80/tcp","backend":"198.19.0.2:8080","index":0,
//!   "weight":100,"packets":12,"bytes":1234,"flows":1,"new_flows":5,"state":"up","health":"up",
//!   "since_unix_ms":1764584400000,"last_check":{"ok":true,"detail":"ok",
//!   "latency_us":412,"at_unix_ms":1764584412000}}]}` (`last_check` is null before the
//!   first check; `state` is up, down, checking or draining)
//! - `xlb status --json`:
//!   `{"version":"0.1.0","interfaces":["eth0"],"mode":"native","uptime_seconds":12,
//!   "services":1,"backends":3,"table_area":1048576,"counters":{"rx":{"packets":1,"bytes":60},...}}`
//! - `xlb stats --json`: `{"counters":{"rx":{"packets":1,"bytes":60},...}}`, the counters
//!   in `lb_common::stats::STAT_NAMES` order.

use std::time::SystemTime;

use serde::Serialize;
use serde::ser::SerializeMap as _;

use crate::affinity::{Affinity, MODE_NONE};
use crate::check::{CheckSettings, latency};
use crate::control::proto;

#[derive(Serialize)]
struct ServiceJson<'a> {
    service: &'a str,
    id: u32,
    table_size: u32,
    table_offset: u32,
    generation: u32,
    backends: u32,
    check: Option<&'a proto::HealthCheck>,
    /// `none` or `client-ip`.
    affinity: &'a str,
    /// Seconds with `client-ip`, else 0.
    affinity_timeout_s: u32,
    /// `nat`, `dsr-l2` or `dsr-ipip`.
    forwarding: &'a str,
}

#[derive(Serialize)]
struct BackendJson<'a> {
    service: &'a str,
    backend: &'a str,
    index: u32,
    weight: u32,
    packets: u64,
    bytes: u64,
    flows: u64,
    new_flows: u64,
    state: &'a str,
    health: &'a str,
    since_unix_ms: u64,
    last_check: Option<&'a proto::CheckResult>,
}

#[derive(Serialize)]
struct CounterJson {
    packets: u64,
    bytes: u64,
}

/// Counters as a JSON object keyed by name, in the daemon's order.
struct Counters<'a>(&'a [proto::Counter]);

impl Serialize for Counters<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for c in self.0 {
            let value = CounterJson {
                packets: c.packets,
                bytes: c.bytes,
            };
            map.serialize_entry(&c.name, &value)?;
        }
        map.end()
    }
}

#[derive(Serialize)]
struct StatusJson<'a> {
    version: &'a str,
    interfaces: &'a [String],
    mode: &'a str,
    uptime_seconds: u64,
    services: u32,
    backends: u32,
    table_area: u32,
    counters: Counters<'a>,
    egress: &'a [proto::Egress],
}

fn json(value: &impl Serialize) -> Result<String, serde_json::Error> {
    Ok(serde_json::to_string_pretty(value)? + "\n")
}

pub fn services(list: &[proto::Service], as_json: bool) -> Result<String, serde_json::Error> {
    if as_json {
        let services: Vec<ServiceJson> = list
            .iter()
            .map(|s| ServiceJson {
                service: &s.service,
                id: s.id,
                table_size: s.table_size,
                table_offset: s.table_offset,
                generation: s.generation,
                backends: s.backends,
                check: s.check.as_ref(),
                affinity: s
                    .affinity
                    .as_ref()
                    .map_or(MODE_NONE, |a| match a.mode.as_str() {
                        "" => MODE_NONE,
                        m => m,
                    }),
                affinity_timeout_s: s.affinity.as_ref().and_then(|a| a.timeout_s).unwrap_or(0),
                forwarding: forwarding_name(&s.forwarding),
            })
            .collect();
        #[derive(Serialize)]
        struct List<'a> {
            services: Vec<ServiceJson<'a>>,
        }
        return json(&List { services });
    }
    let rows = list.iter().map(|s| {
        vec![
            s.service.clone(),
            s.id.to_string(),
            s.table_size.to_string(),
            s.generation.to_string(),
            s.backends.to_string(),
            s.check
                .as_ref()
                .map_or_else(|| "none".into(), check_summary),
            affinity_summary(s.affinity.as_ref()),
            forwarding_name(&s.forwarding).to_string(),
        ]
    });
    Ok(table_aligned(
        &[
            "SERVICE",
            "ID",
            "TABLE SIZE",
            "GENERATION",
            "BACKENDS",
            "CHECK",
            "AFFINITY",
            "FORWARDING",
        ],
        "lrrrrlll",
        rows,
    ))
}

/// A service's forwarding mode as the daemon stated it (empty, from an older daemon: nat).
fn forwarding_name(f: &str) -> &str {
    if f.is_empty() { "nat" } else { f }
}

/// A check's settings in one line (see `CheckSettings`'s `Display`).
/// `none` or `client-ip/30s`, as the daemon stated it (absent: none).
pub fn affinity_summary(a: Option<&proto::Affinity>) -> String {
    match a {
        None => MODE_NONE.to_string(),
        Some(m) => {
            Affinity::new(&m.mode, m.timeout_s).map_or_else(|_| m.mode.clone(), |a| a.to_string())
        }
    }
}

pub fn check_summary(m: &proto::HealthCheck) -> String {
    CheckSettings::parse_proto(m).map_or_else(|_| m.kind.clone(), |s| s.to_string())
}

pub fn backends(list: &[proto::BackendEntry], as_json: bool) -> Result<String, serde_json::Error> {
    backends_at(list, as_json, SystemTime::now())
}

/// `backends` with SINCE counted up to `now`.
fn backends_at(
    list: &[proto::BackendEntry],
    as_json: bool,
    now: SystemTime,
) -> Result<String, serde_json::Error> {
    if as_json {
        let backends: Vec<BackendJson> = list
            .iter()
            .map(|b| BackendJson {
                service: &b.service,
                backend: &b.backend,
                index: b.index,
                weight: b.weight,
                packets: b.packets,
                bytes: b.bytes,
                flows: b.flows,
                new_flows: b.new_flows,
                state: &b.state,
                health: &b.health,
                since_unix_ms: b.since_unix_ms,
                last_check: b.last_check.as_ref(),
            })
            .collect();
        #[derive(Serialize)]
        struct List<'a> {
            backends: Vec<BackendJson<'a>>,
        }
        return json(&List { backends });
    }
    let now_ms = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let rows = list.iter().map(|b| {
        let since = match b.since_unix_ms {
            0 => "-".into(),
            t => duration(now_ms.saturating_sub(t) / 1000),
        };
        let last = match &b.last_check {
            None => "-".into(),
            Some(c) => {
                let took = latency(std::time::Duration::from_micros(c.latency_us));
                if c.ok {
                    format!("ok {took}")
                } else {
                    format!("failed {took}: {}", c.detail)
                }
            }
        };
        vec![
            b.service.clone(),
            b.backend.clone(),
            b.state.clone(),
            since,
            b.weight.to_string(),
            b.index.to_string(),
            b.packets.to_string(),
            b.bytes.to_string(),
            b.flows.to_string(),
            last,
        ]
    });
    Ok(table_aligned(
        &[
            "SERVICE",
            "BACKEND",
            "STATE",
            "SINCE",
            "WEIGHT",
            "INDEX",
            "PACKETS",
            "BYTES",
            "FLOWS",
            "LAST CHECK",
        ],
        "lllrrrrrrl",
        rows,
    ))
}

pub fn stats(counters: &[proto::Counter], as_json: bool) -> Result<String, serde_json::Error> {
    if as_json {
        #[derive(Serialize)]
        struct StatsJson<'a> {
            counters: Counters<'a>,
        }
        return json(&StatsJson {
            counters: Counters(counters),
        });
    }
    Ok(counter_table(counters))
}

pub fn status(s: &proto::StatusReply, as_json: bool) -> Result<String, serde_json::Error> {
    if as_json {
        return json(&StatusJson {
            version: &s.version,
            interfaces: &s.interfaces,
            mode: &s.mode,
            uptime_seconds: s.uptime_seconds,
            services: s.services,
            backends: s.backends,
            table_area: s.table_area,
            counters: Counters(&s.counters),
            egress: &s.egress,
        });
    }
    let fields = [
        ("version", s.version.clone()),
        ("interfaces", s.interfaces.join(", ")),
        ("mode", s.mode.clone()),
        ("uptime", duration(s.uptime_seconds)),
        ("services", s.services.to_string()),
        ("backends", s.backends.to_string()),
        ("table area", format!("{} slots", s.table_area)),
    ];
    let mut out = String::new();
    for (name, value) in fields {
        out += &format!("{:<12}{value}\n", format!("{name}:"));
    }
    Ok(out + "\n" + &egress_table(&s.egress) + "\n" + &counter_table(&s.counters))
}

/// How packets leave through each device: XDP redirect, or the kernel and why.
fn egress_table(egress: &[proto::Egress]) -> String {
    let rows = egress.iter().map(|e| {
        vec![
            e.name.clone(),
            if e.attached { "yes" } else { "no" }.to_string(),
            e.path.clone(),
            e.reason.clone(),
            e.kernel_packets.to_string(),
            e.ifindex.to_string(),
        ]
    });
    table(
        &["DEVICE", "XLB", "PATH", "WHY", "KERNEL_PKTS", "IFINDEX"],
        4,
        rows,
    )
}

fn counter_table(counters: &[proto::Counter]) -> String {
    let rows = counters
        .iter()
        .map(|c| vec![c.name.clone(), c.packets.to_string(), c.bytes.to_string()]);
    table(&["COUNTER", "PACKETS", "BYTES"], 1, rows)
}

/// `1d 2h 3m 4s`, leaving out the leading zero units.
fn duration(secs: u64) -> String {
    let parts = [
        (secs / 86400, "d"),
        (secs / 3600 % 24, "h"),
        (secs / 60 % 60, "m"),
        (secs % 60, "s"),
    ];
    let first = parts.iter().position(|p| p.0 > 0).unwrap_or(3);
    parts[first..]
        .iter()
        .map(|(n, unit)| format!("{n}{unit}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A text table: the first `left` columns left-aligned, the others (numbers) right-aligned,
/// two spaces between columns.
fn table(header: &[&str], left: usize, rows: impl Iterator<Item = Vec<String>>) -> String {
    let align: String = (0..header.len())
        .map(|c| if c < left { 'l' } else { 'r' })
        .collect();
    table_aligned(header, &align, rows)
}

/// A text table whose column `c` is left-aligned when `align`'s `c`th letter is `l`, else
/// right-aligned.
fn table_aligned(header: &[&str], align: &str, rows: impl Iterator<Item = Vec<String>>) -> String {
    let left: Vec<bool> = align.chars().map(|a| a == 'l').collect();
    let mut all: Vec<Vec<String>> = vec![header.iter().map(|h| h.to_string()).collect()];
    all.extend(rows);
    let widths: Vec<usize> = (0..header.len())
        .map(|c| all.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in &all {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(c, (cell, &w))| {
                if left.get(c).copied().unwrap_or(false) {
                    format!("{cell:<w$}")
                } else {
                    format!("{cell:>w$}")
                }
            })
            .collect();
        out += cells.join("  ").trim_end();
        out.push('\n');
    }
    out
}

/// `xlb node status`: the drain flag, the announce table, then one line per VIP.
pub fn node_status(n: &proto::NodeStatus, as_json: bool) -> Result<String, serde_json::Error> {
    if as_json {
        return json(n);
    }
    let mut out = format!(
        "node: {}, announcing {}\n",
        if n.draining { "draining" } else { "active" },
        if n.announce_table == 0 {
            "off (xlbd without --announce-table)".to_string()
        } else {
            format!("into routing table {}", n.announce_table)
        }
    );
    for a in &n.announcements {
        let shown = match (a.wanted, a.announced) {
            (_, true) => "announced",
            (true, false) if n.announce_table == 0 => "would be announced",
            (true, false) => "announcing",
            (false, _) => "withdrawn",
        };
        out.push_str(&format!("{:<40} {:<18} {}\n", a.vip, shown, a.reason));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_status_says_why_each_vip_is_or_is_not_announced() {
        let a = |vip: &str, wanted, announced, reason: &str| proto::Announcement {
            vip: vip.into(),
            wanted,
            announced,
            reason: reason.into(),
        };
        let n = proto::NodeStatus {
            draining: false,
            announce_table: 100,
            announcements: vec![
                a("198.18.0.10", true, true, "3 backends up"),
                a("198.18.0.11", false, false, "no backend is up"),
            ],
        };
        let text = node_status(&n, false).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "node: active, announcing into routing table 100");
        assert!(
            lines[1].starts_with("198.18.0.10")
                && lines[1].contains("announced")
                && lines[1].ends_with("3 backends up")
        );
        assert!(lines[2].contains("withdrawn") && lines[2].ends_with("no backend is up"));
        let off = proto::NodeStatus {
            announce_table: 0,
            ..n
        };
        let text = node_status(&off, false).unwrap();
        assert!(
            text.contains("off (xlbd without --announce-table)"),
            "{text}"
        );
        let json: serde_json::Value =
            serde_json::from_str(&node_status(&off, true).unwrap()).unwrap();
        assert_eq!(json["announcements"][1]["reason"], "no backend is up");
    }

    fn backend() -> proto::BackendEntry {
        proto::BackendEntry {
            service: "198.18.0.10:80/tcp".into(),
            backend: "198.19.0.2:8080".into(),
            index: 3,
            weight: 100,
            packets: 12,
            bytes: 1234,
            flows: 1,
            new_flows: 5,
            state: "up".into(),
            health: "up".into(),
            since_unix_ms: 1_000_000,
            last_check: Some(proto::CheckResult {
                ok: true,
                detail: "ok".into(),
                latency_us: 412,
                at_unix_ms: 1_001_000,
            }),
        }
    }

    fn counter(name: &str, packets: u64) -> proto::Counter {
        proto::Counter {
            name: name.into(),
            packets,
            bytes: packets * 100,
        }
    }

    #[test]
    fn service_json_has_the_documented_keys() {
        let s = proto::Service {
            service: "198.18.0.10:80/tcp".into(),
            id: 0,
            table_size: 65537,
            table_offset: 0,
            generation: 1,
            backends: 3,
            check: None,
            affinity: Some(proto::Affinity {
                mode: "client-ip".into(),
                timeout_s: Some(30),
            }),
            forwarding: "dsr-ipip".into(),
        };
        let v: serde_json::Value = serde_json::from_str(&services(&[s], true).unwrap()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"services":[{"service":"198.18.0.10:80/tcp","id":0,
                "table_size":65537,"table_offset":0,"generation":1,"backends":3,
                "check":null,"affinity":"client-ip","affinity_timeout_s":30,
                "forwarding":"dsr-ipip"}]})
        );
    }

    #[test]
    fn backend_json_has_the_documented_keys() {
        let v: serde_json::Value =
            serde_json::from_str(&backends(&[backend()], true).unwrap()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"backends":[{"service":"198.18.0.10:80/tcp",
                "backend":"198.19.0.2:8080","index":3,"weight":100,"packets":12,
                "bytes":1234,"flows":1,"new_flows":5,"state":"up","health":"up","since_unix_ms":1000000,
                "last_check":{"ok":true,"detail":"ok","latency_us":412,"at_unix_ms":1001000}}]})
        );
        assert_eq!(backends(&[], true).unwrap(), "{\n  \"backends\": []\n}\n");
    }

    #[test]
    fn counters_keep_their_order_in_json() {
        let out = stats(&[counter("rx", 2), counter("forward", 1)], true).unwrap();
        let rx = out.find("\"rx\"").unwrap();
        assert!(rx < out.find("\"forward\"").unwrap());
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(
            v["counters"]["forward"],
            serde_json::json!({"packets":1,"bytes":100})
        );
    }

    #[test]
    fn text_tables_are_aligned() {
        let mut other = backend();
        other.backend = "[2001:2::2]:8080".into();
        other.packets = 7;
        other.state = "down".into();
        other.last_check = Some(proto::CheckResult {
            ok: false,
            detail: "connect: Connection refused".into(),
            latency_us: 15_300,
            at_unix_ms: 1_061_000,
        });
        let mut fresh = backend();
        (fresh.state, fresh.last_check) = ("checking".into(), None);
        let now = SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_062_500);
        let out = backends_at(&[backend(), other, fresh], false, now).unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines,
            [
                "SERVICE             BACKEND           STATE     SINCE  WEIGHT  INDEX  PACKETS  BYTES  FLOWS  LAST CHECK",
                "198.18.0.10:80/tcp  198.19.0.2:8080   up        1m 2s     100      3       12   1234      1  ok 0.4ms",
                "198.18.0.10:80/tcp  [2001:2::2]:8080  down      1m 2s     100      3        7   1234      1  failed 15ms: connect: Connection refused",
                "198.18.0.10:80/tcp  198.19.0.2:8080   checking  1m 2s     100      3       12   1234      1  -",
            ]
        );
    }

    #[test]
    fn status_text() {
        let reply = proto::StatusReply {
            version: "0.1.0".into(),
            interfaces: vec!["veth0".into(), "veth1".into()],
            mode: "native".into(),
            uptime_seconds: 3723,
            services: 1,
            backends: 2,
            table_area: 1024,
            counters: vec![counter("rx", 5)],
            egress: vec![
                proto::Egress {
                    name: "veth0".into(),
                    ifindex: 5,
                    attached: true,
                    path: "xdp".into(),
                    reason: String::new(),
                    kernel_packets: 0,
                },
                proto::Egress {
                    name: "br0".into(),
                    ifindex: 7,
                    attached: false,
                    path: "kernel".into(),
                    reason: "a bridge".into(),
                    kernel_packets: 12,
                },
            ],
        };
        let out = status(&reply, false).unwrap();
        assert!(
            out.contains(
                "DEVICE  XLB  PATH    WHY       KERNEL_PKTS  IFINDEX\n\
                 veth0   yes  xdp                         0        5\n\
                 br0     no   kernel  a bridge           12        7\n"
            ),
            "{out}"
        );
        assert!(out.starts_with("version:    0.1.0\ninterfaces: veth0, veth1\nmode:       native\nuptime:     1h 2m 3s\n"));
        assert!(out.ends_with("COUNTER  PACKETS  BYTES\nrx             5    500\n"));
        let v: serde_json::Value = serde_json::from_str(&status(&reply, true).unwrap()).unwrap();
        assert_eq!(v["interfaces"], serde_json::json!(["veth0", "veth1"]));
        assert_eq!(v["counters"]["rx"]["packets"], 5);
        assert_eq!(v["egress"][1]["path"], "kernel");
        assert_eq!(v["egress"][1]["kernel_packets"], 12);
    }

    #[test]
    fn stats_is_a_table_unless_json() {
        let out = stats(&[counter("rx", 12), counter("drop_no_backend", 3)], false).unwrap();
        assert_eq!(
            out,
            "COUNTER          PACKETS  BYTES\n\
             rx                    12   1200\n\
             drop_no_backend        3    300\n"
        );
    }

    #[test]
    fn durations() {
        assert_eq!(duration(0), "0s");
        assert_eq!(duration(59), "59s");
        assert_eq!(duration(3600), "1h 0m 0s");
        assert_eq!(duration(90061), "1d 1h 1m 1s");
    }
}

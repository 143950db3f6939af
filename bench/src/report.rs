//! The results: medians over runs, `latest.json` and the markdown table of `latest.md`.

use std::fmt::Write as _;

use serde::ser::{Serialize, SerializeMap as _, Serializer};

use crate::balancers::Kind;
use crate::e2e::{Durations, Figures};
use crate::per_packet::{PerPacket, PerPacketRaw};
use crate::stats::median;

/// One balancer's figures: the median of each over the runs.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Summary {
    pub tcp_gbps: f64,
    pub udp_kpps: Option<f64>,
    pub conn_per_s: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub cpu_ms_per_gbit: f64,
    /// Failed connects or exchanges in the connection-rate loads, summed over runs.
    pub conn_errors: u64,
}

impl Summary {
    pub fn of(runs: &[Figures]) -> Summary {
        let m = |f: fn(&Figures) -> f64| median(&runs.iter().map(f).collect::<Vec<_>>());
        let udp: Vec<f64> = runs.iter().filter_map(|r| r.udp_kpps).collect();
        Summary {
            tcp_gbps: m(|r| r.tcp_gbps).unwrap_or(f64::NAN),
            udp_kpps: median(&udp),
            conn_per_s: m(|r| r.conn_per_s).unwrap_or(f64::NAN),
            p50_us: m(|r| r.p50_us).unwrap_or(f64::NAN),
            p99_us: m(|r| r.p99_us).unwrap_or(f64::NAN),
            cpu_ms_per_gbit: m(|r| r.cpu_ms_per_gbit).unwrap_or(f64::NAN),
            conn_errors: runs.iter().map(|r| r.conn_errors).sum(),
        }
    }
}

/// Balancers in the order measured, serialized as a JSON object keyed by [`Kind::key`].
#[derive(Debug, Clone, Default)]
pub struct ByBalancer<T>(pub Vec<(Kind, T)>);

impl<T> ByBalancer<T> {
    pub fn get(&self, kind: Kind) -> Option<&T> {
        self.0.iter().find(|(k, _)| *k == kind).map(|(_, v)| v)
    }
}

impl<T: Serialize> Serialize for ByBalancer<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k.key(), v)?;
        }
        map.end()
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Machine {
    pub cpus: usize,
    pub cpu_model: String,
    pub kernel: String,
    pub date_utc: String,
    pub versions: Vec<String>,
}

/// Everything `latest.json` holds.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Results {
    pub per_packet_ns: PerPacket,
    pub e2e: ByBalancer<Summary>,
    pub per_packet_detail: PerPacketRaw,
    pub e2e_runs: ByBalancer<Vec<Figures>>,
    pub runs: usize,
    pub durations: Durations,
    pub machine: Machine,
}

pub fn num(x: f64) -> String {
    if x.is_nan() {
        "n/a".into()
    } else if x >= 100.0 {
        format!("{x:.0}")
    } else if x >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

/// `a / b` as "2.3x", or n/a.
pub fn ratio(a: f64, b: f64) -> String {
    if a.is_finite() && b.is_finite() && b > 0.0 {
        format!("{:.1}x", a / b)
    } else {
        "n/a".into()
    }
}

/// One end-to-end figure: its table row, its chart title, and where it is in a summary.
pub struct Figure {
    pub row: &'static str,
    pub chart: &'static str,
    pub get: fn(&Summary) -> Option<f64>,
}

pub const FIGURES: [Figure; 6] = [
    Figure {
        row: "TCP throughput, Gbit/s (iperf3 -P 4, 1 backend)",
        chart: "TCP Gbit/s (higher is better)",
        get: |s| Some(s.tcp_gbps),
    },
    Figure {
        row: "UDP 60-byte frames reaching backends, kpps",
        chart: "UDP kpps at backends (higher)",
        get: |s| s.udp_kpps,
    },
    Figure {
        row: "new TCP connections/s",
        chart: "new TCP connections/s (higher)",
        get: |s| Some(s.conn_per_s),
    },
    Figure {
        row: "p50 latency, µs (persistent connections)",
        chart: "p50 latency µs (lower)",
        get: |s| Some(s.p50_us),
    },
    Figure {
        row: "p99 latency, µs (persistent connections)",
        chart: "p99 latency µs (lower)",
        get: |s| Some(s.p99_us),
    },
    Figure {
        row: "CPU ms per Gbit moved (TCP run)",
        chart: "CPU ms per Gbit (lower)",
        get: |s| Some(s.cpu_ms_per_gbit),
    },
];

/// The end-to-end table (balancers as columns).
pub fn e2e_table(r: &Results) -> String {
    let mut t = String::from("| figure (median of runs) |");
    for (k, _) in &r.e2e.0 {
        let _ = write!(t, " {} |", k.label());
    }
    t.push_str("\n| --- |");
    t.push_str(&" ---: |".repeat(r.e2e.0.len()));
    t.push('\n');
    for f in &FIGURES {
        let _ = write!(t, "| {} |", f.row);
        for (k, s) in &r.e2e.0 {
            let cell = match (f.get)(s) {
                Some(v) => num(v),
                None if !k.has_udp() => "n/a (no UDP)".into(),
                None => "n/a".into(),
            };
            let _ = write!(t, " {cell} |");
        }
        t.push('\n');
    }
    t
}

/// The per-packet table, each figure also as a multiple of the XDP_TX limit.
pub fn per_packet_table(p: &PerPacket) -> String {
    let mut t = String::from("| packet | ns/packet | x XDP_TX limit |\n| --- | ---: | ---: |\n");
    for (name, v) in [
        ("XDP_TX limit (swap MACs, XDP_TX)", p.xdp_tx_limit),
        ("xlb, established flow", p.xlb_established),
        ("xlb, new flow (SYN)", p.xlb_new_flow),
        ("xlb, reply (reverse NAT)", p.xlb_reply),
        ("xlb, packet that passes", p.xlb_pass),
    ] {
        let _ = writeln!(t, "| {name} | {v:.1} | {} |", ratio(v, p.xdp_tx_limit));
    }
    t
}

/// xlb against the others, figure by figure: rates as xlb's / theirs, latency and CPU as
/// theirs / xlb's, so above 1x means xlb is ahead.
pub fn ratios(r: &Results) -> String {
    let Some(x) = r.e2e.get(Kind::Xlb) else {
        return String::new();
    };
    let mut out = String::new();
    for (k, s) in r.e2e.0.iter().filter(|(k, _)| *k != Kind::Xlb) {
        let udp = match (x.udp_kpps, s.udp_kpps) {
            (Some(a), Some(b)) => ratio(a, b),
            _ => "n/a".into(),
        };
        let _ = writeln!(
            out,
            "- xlb vs {} (above 1x: xlb ahead): TCP {}, UDP {udp}, conn/s {}, p50 {}, p99 {}, CPU/Gbit {}",
            k.label(),
            ratio(x.tcp_gbps, s.tcp_gbps),
            ratio(x.conn_per_s, s.conn_per_s),
            ratio(s.p50_us, x.p50_us),
            ratio(s.p99_us, x.p99_us),
            ratio(s.cpu_ms_per_gbit, x.cpu_ms_per_gbit),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figs(tcp: f64, udp: Option<f64>) -> Figures {
        Figures {
            tcp_gbps: tcp,
            udp_kpps: udp,
            conn_per_s: 1000.0,
            conn_errors: 1,
            p50_us: 50.0,
            p99_us: 99.0,
            latency_exchanges: 10,
            cpu_ms_per_gbit: 10.0,
        }
    }

    #[test]
    fn summaries_tables_and_json_shape() {
        let s = Summary::of(&[figs(3.0, Some(9.0)), figs(1.0, Some(7.0)), figs(2.0, None)]);
        assert_eq!((s.tcp_gbps, s.udp_kpps, s.conn_errors), (2.0, Some(8.0), 3));
        let h = Summary::of(&[figs(1.0, None)]);
        assert_eq!(h.udp_kpps, None);
        let e2e = ByBalancer(vec![(Kind::Xlb, s), (Kind::Haproxy, h)]);
        let json = serde_json::to_value(&e2e).unwrap();
        assert_eq!(json["xlb"]["tcp_gbps"], 2.0);
        assert!(json["haproxy"]["udp_kpps"].is_null());
        let text = serde_json::to_string(&e2e).unwrap();
        assert!(
            text.find("\"xlb\"") < text.find("\"haproxy\""),
            "measured order kept"
        );
        assert_eq!(ratio(4.0, 2.0), "2.0x");
        assert_eq!(ratio(1.0, 0.0), "n/a");
        assert_eq!(num(1234.4), "1234");
        assert_eq!(num(f64::NAN), "n/a");
    }
}

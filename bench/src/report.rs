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
    pub tcp_reverse_gbps: Option<f64>,
    /// The generator-driven UDP run.
    pub gen_offered_kpps: Option<f64>,
    pub gen_backend_kpps: Option<f64>,
    pub gen_sink_kpps: Option<f64>,
    pub gen_cpu_ms_per_mpkt: Option<f64>,
    pub gen_bpf_ms_per_mpkt: Option<f64>,
    /// The generator at a fixed rate (`e2e::GEN_FIXED_PPS`).
    pub gen_fixed_offered_kpps: Option<f64>,
    pub gen_fixed_backend_kpps: Option<f64>,
    pub gen_fixed_cpu_ms_per_mpkt: Option<f64>,
    pub gen_fixed_bpf_ms_per_mpkt: Option<f64>,
    /// The XDP program's ns per packet under each load (bpf_stats).
    pub bpf_ns: Option<BpfNs>,
}

/// Medians over runs of the XDP program's ns per packet, load by load.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct BpfNs {
    pub tcp: Option<f64>,
    pub tcp_reverse: Option<f64>,
    pub udp: Option<f64>,
    pub generator: Option<f64>,
    pub conn: Option<f64>,
    pub latency: Option<f64>,
}

impl BpfNs {
    /// (key, what the load is) of every load, with this summary's figure.
    pub fn rows(&self) -> [(&'static str, &'static str, Option<f64>); 6] {
        [
            (
                "tcp",
                "TCP iperf3 -P 4 (data to the backend: requests; ACKs: replies)",
                self.tcp,
            ),
            (
                "tcp_reverse",
                "TCP iperf3 -R -P 4 (data from the backend: replies)",
                self.tcp_reverse,
            ),
            ("udp", "UDP from sockets (established flows)", self.udp),
            (
                "generator",
                "UDP from trafgen, 64 flows (established flows)",
                self.generator,
            ),
            (
                "conn",
                "new TCP connections (SYN, data, FIN both ways)",
                self.conn,
            ),
            (
                "latency",
                "persistent TCP request/echo (requests and replies)",
                self.latency,
            ),
        ]
    }
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
            tcp_reverse_gbps: opt(runs, |r| r.tcp_reverse_gbps),
            gen_offered_kpps: opt(runs, |r| r.generator.map(|g| g.offered_pps / 1e3)),
            gen_backend_kpps: opt(runs, |r| r.generator.map(|g| g.backend_rx_pps / 1e3)),
            gen_sink_kpps: opt(runs, |r| r.generator.map(|g| g.sink_pps / 1e3)),
            gen_cpu_ms_per_mpkt: opt(runs, |r| r.generator.map(|g| g.cpu_ms_per_mpkt)),
            gen_bpf_ms_per_mpkt: opt(runs, |r| r.generator.and_then(|g| g.bpf_ms_per_mpkt)),
            gen_fixed_offered_kpps: opt(runs, |r| r.generator_fixed.map(|g| g.offered_pps / 1e3)),
            gen_fixed_backend_kpps: opt(runs, |r| {
                r.generator_fixed.map(|g| g.backend_rx_pps / 1e3)
            }),
            gen_fixed_cpu_ms_per_mpkt: opt(runs, |r| r.generator_fixed.map(|g| g.cpu_ms_per_mpkt)),
            gen_fixed_bpf_ms_per_mpkt: opt(runs, |r| {
                r.generator_fixed.and_then(|g| g.bpf_ms_per_mpkt)
            }),
            bpf_ns: runs.iter().any(|r| r.bpf.is_some()).then(|| BpfNs {
                tcp: opt(runs, |r| r.bpf.and_then(|b| b.tcp.ns_per_packet)),
                tcp_reverse: opt(runs, |r| r.bpf.and_then(|b| b.tcp_reverse.ns_per_packet)),
                udp: opt(runs, |r| r.bpf.and_then(|b| b.udp.ns_per_packet)),
                generator: opt(runs, |r| r.bpf.and_then(|b| b.generator.ns_per_packet)),
                conn: opt(runs, |r| r.bpf.and_then(|b| b.conn.ns_per_packet)),
                latency: opt(runs, |r| r.bpf.and_then(|b| b.latency.ns_per_packet)),
            }),
        }
    }
}

/// The median of an optional figure over the runs that have it.
fn opt(runs: &[Figures], f: impl Fn(&Figures) -> Option<f64>) -> Option<f64> {
    median(&runs.iter().filter_map(f).collect::<Vec<_>>())
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
    /// Issue 11's targets against this run's figures.
    pub targets: Vec<crate::targets::Target>,
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

pub const FIGURES: [Figure; 8] = [
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
    Figure {
        row: "UDP from trafgen: kpps reaching backends (RX counters)",
        chart: "trafgen UDP kpps at backends (higher)",
        get: |s| s.gen_backend_kpps,
    },
    Figure {
        row: "UDP from trafgen at 100 kpps: CPU ms per million packets delivered",
        chart: "trafgen 100 kpps: CPU ms/Mpkt (lower)",
        get: |s| s.gen_fixed_cpu_ms_per_mpkt,
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

/// The per-packet table: each figure (median over calls) also as a multiple of both
/// yardsticks measured in the same run.
pub fn per_packet_table(p: &PerPacket) -> String {
    let mut t = String::from(
        "| packet | ns/packet | x forward-only yardstick | x MAC-swap yardstick |\n\
         | --- | ---: | ---: | ---: |\n",
    );
    for (_, name, v) in p.rows() {
        let _ = writeln!(
            t,
            "| {name} | {v:.1} | {} | {} |",
            ratio(v, p.fwd_yardstick),
            ratio(v, p.xdp_tx_limit)
        );
    }
    t
}

/// xlb's ns per packet under each load (bpf_stats) beside the forward-only yardstick's in
/// the same loads, and their ratio.
pub fn bpf_table(r: &Results) -> String {
    let x = r.e2e.get(Kind::Xlb).and_then(|s| s.bpf_ns);
    let y = r.e2e.get(Kind::Yardstick).and_then(|s| s.bpf_ns);
    if x.is_none() && y.is_none() {
        return String::from("(no XDP program measured in this run)\n");
    }
    let (x, y) = (x.unwrap_or_default(), y.unwrap_or_default());
    let mut t = String::from(
        "| load | xlb, ns/packet | forward-only yardstick, ns/packet | xlb / yardstick |\n\
         | --- | ---: | ---: | ---: |\n",
    );
    for ((_, what, a), (_, _, b)) in x.rows().into_iter().zip(y.rows()) {
        let cell = |v: Option<f64>| v.map_or("n/a".into(), |v| format!("{v:.1}"));
        let ratio = match (a, b) {
            (Some(a), Some(b)) => ratio(a, b),
            _ => "n/a".into(),
        };
        let _ = writeln!(t, "| {what} | {} | {} | {ratio} |", cell(a), cell(b));
    }
    t
}

/// The generator-driven UDP runs (as fast as trafgen goes, and at a fixed rate),
/// balancer by balancer.
pub fn generator_table(r: &Results) -> String {
    let mut t = String::from(
        "| balancer, run | offered, kpps (trafgen) | at backends, kpps (RX counters) | \
         read by sinks, kpps | CPU ms per Mpkt (softirq, machine-wide) | XDP program ms per \
         Mpkt (bpf_stats) |\n| --- | ---: | ---: | ---: | ---: | ---: |\n",
    );
    let c = |v: Option<f64>| v.map_or("n/a".into(), num);
    for (k, s) in r.e2e.0.iter().filter(|(k, _)| k.has_udp()) {
        let _ = writeln!(
            t,
            "| {}, max rate | {} | {} | {} | {} | {} |",
            k.label(),
            c(s.gen_offered_kpps),
            c(s.gen_backend_kpps),
            c(s.gen_sink_kpps),
            c(s.gen_cpu_ms_per_mpkt),
            c(s.gen_bpf_ms_per_mpkt),
        );
    }
    for (k, s) in r.e2e.0.iter().filter(|(k, _)| k.has_udp()) {
        let _ = writeln!(
            t,
            "| {}, {} kpps | {} | {} | n/a | {} | {} |",
            k.label(),
            crate::e2e::GEN_FIXED_PPS / 1000,
            c(s.gen_fixed_offered_kpps),
            c(s.gen_fixed_backend_kpps),
            c(s.gen_fixed_cpu_ms_per_mpkt),
            c(s.gen_fixed_bpf_ms_per_mpkt),
        );
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
        let both = |a: Option<f64>, b: Option<f64>, flip: bool| match (a, b) {
            (Some(a), Some(b)) if flip => ratio(b, a),
            (Some(a), Some(b)) => ratio(a, b),
            _ => "n/a".into(),
        };
        let _ = writeln!(
            out,
            "- xlb vs {} (above 1x: xlb ahead): TCP {}, UDP {udp}, conn/s {}, p50 {}, p99 {}, \
             CPU/Gbit {}, trafgen UDP pps {}, trafgen CPU/Mpkt at 100 kpps {}",
            k.label(),
            ratio(x.tcp_gbps, s.tcp_gbps),
            ratio(x.conn_per_s, s.conn_per_s),
            ratio(s.p50_us, x.p50_us),
            ratio(s.p99_us, x.p99_us),
            ratio(s.cpu_ms_per_gbit, x.cpu_ms_per_gbit),
            both(x.gen_backend_kpps, s.gen_backend_kpps, false),
            both(
                x.gen_fixed_cpu_ms_per_mpkt,
                s.gen_fixed_cpu_ms_per_mpkt,
                true
            ),
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
            ..Figures::default()
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

//! The fast path's targets (issue 11), checked against one run's figures: printed by the
//! benchmark, kept in `latest.json` and listed in `latest.md`. Benchmarks, not tests: a
//! target not met is reported, never an error.

use std::fmt::Write as _;

use serde::Serialize;

use crate::balancers::Kind;
use crate::per_packet::PerPacket;
use crate::report::{ByBalancer, Summary};

/// Established-flow cost in BPF_PROG_TEST_RUN, ns.
const ESTABLISHED_NS: f64 = 150.0;
/// New-flow cost in BPF_PROG_TEST_RUN, ns.
const NEW_FLOW_NS: f64 = 400.0;
/// Program time under real traffic (bpf_stats), as a multiple of the forward-only
/// yardstick's in the same loads: established flows and replies, and new connections.
const BPF_ESTABLISHED_X: f64 = 4.0;
const BPF_NEW_X: f64 = 10.0;
/// Generator-driven UDP: xlb's pps over iptables DNAT's at least this, or its CPU per
/// packet at most `1 / GEN_CPU_X` of iptables'.
const GEN_PPS_X: f64 = 1.5;
const GEN_CPU_X: f64 = 2.0;

/// One target: the figure it is about, the limit, and whether this run met it (`None`:
/// not measured in this run).
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    pub what: String,
    pub figure: Option<f64>,
    /// The figure's unit, e.g. "ns" or "x yardstick".
    pub unit: &'static str,
    /// The limit, e.g. "<= 150 ns".
    pub limit: String,
    pub met: Option<bool>,
}

fn at_most(what: String, figure: Option<f64>, unit: &'static str, limit: f64) -> Target {
    Target {
        what,
        figure,
        unit,
        limit: format!("<= {limit} {unit}"),
        met: figure.map(|f| f <= limit),
    }
}

/// Every target against the figures of one run.
pub fn check(p: &PerPacket, e2e: &ByBalancer<Summary>) -> Vec<Target> {
    let mut t = vec![
        at_most(
            "established TCP flow, BPF_PROG_TEST_RUN".into(),
            Some(p.xlb_established),
            "ns",
            ESTABLISHED_NS,
        ),
        at_most(
            "new flow, BPF_PROG_TEST_RUN".into(),
            Some(p.xlb_new_flow),
            "ns",
            NEW_FLOW_NS,
        ),
    ];
    let x = e2e
        .get(Kind::Xlb)
        .and_then(|s| s.bpf_ns)
        .unwrap_or_default();
    let y = e2e
        .get(Kind::Yardstick)
        .and_then(|s| s.bpf_ns)
        .unwrap_or_default();
    for ((key, what, a), (_, _, b)) in x.rows().into_iter().zip(y.rows()) {
        let limit = if key == "conn" {
            BPF_NEW_X
        } else {
            BPF_ESTABLISHED_X
        };
        t.push(at_most(
            format!("bpf_stats, {what}: xlb / forward-only yardstick"),
            ratio(a, b),
            "x",
            limit,
        ));
    }
    t.push(generator(e2e));
    t
}

/// Generator UDP: xlb's pps at the backends over iptables DNAT's (as fast as trafgen
/// goes), or iptables' CPU per packet over xlb's (at the fixed rate): either one meets it.
fn generator(e2e: &ByBalancer<Summary>) -> Target {
    let (x, i) = (e2e.get(Kind::Xlb), e2e.get(Kind::IptablesDnat));
    let pps = ratio(
        x.and_then(|s| s.gen_backend_kpps),
        i.and_then(|s| s.gen_backend_kpps),
    );
    let cpu = ratio(
        i.and_then(|s| s.gen_fixed_cpu_ms_per_mpkt),
        x.and_then(|s| s.gen_fixed_cpu_ms_per_mpkt),
    );
    let met = match (pps, cpu) {
        (None, None) => None,
        _ => Some(pps.is_some_and(|r| r >= GEN_PPS_X) || cpu.is_some_and(|r| r >= GEN_CPU_X)),
    };
    Target {
        what: format!(
            "trafgen UDP on veths: xlb pps / iptables DNAT pps (CPU per packet, iptables / \
             xlb: {}; virtio-net: `bench vm`)",
            cpu.map_or("n/a".into(), |c| format!("{c:.2}x"))
        ),
        figure: pps,
        unit: "x",
        limit: format!(">= {GEN_PPS_X} x, or the CPU ratio >= {GEN_CPU_X} x"),
        met,
    }
}

/// `a / b` when both were measured and `b` is not 0.
fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    a.zip(b).filter(|(_, b)| *b > 0.0).map(|(a, b)| a / b)
}

/// The targets as a markdown table.
pub fn table(targets: &[Target]) -> String {
    let mut s = String::from("| target | this run | limit | met |\n| --- | ---: | --- | --- |\n");
    for t in targets {
        let fig = t
            .figure
            .map_or("n/a".into(), |f| format!("{f:.2} {}", t.unit));
        let met = match t.met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "not measured",
        };
        let _ = writeln!(s, "| {} | {fig} | {} | {met} |", t.what, t.limit);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::BpfNs;

    fn per_packet(established: f64, new_flow: f64) -> PerPacket {
        PerPacket {
            xdp_tx_limit: 20.0,
            fwd_yardstick: 180.0,
            xlb_established: established,
            xlb_established_udp: established,
            xlb_new_flow: new_flow,
            xlb_miss_no_entry: 200.0,
            xlb_reply: 160.0,
            xlb_pass: 90.0,
        }
    }

    fn summary(bpf: Option<BpfNs>, gen_kpps: f64, gen_cpu: f64) -> Summary {
        Summary {
            tcp_gbps: 1.0,
            udp_kpps: None,
            conn_per_s: 1.0,
            p50_us: 1.0,
            p99_us: 1.0,
            cpu_ms_per_gbit: 1.0,
            conn_errors: 0,
            tcp_reverse_gbps: None,
            gen_offered_kpps: None,
            gen_backend_kpps: Some(gen_kpps),
            gen_sink_kpps: None,
            gen_cpu_ms_per_mpkt: None,
            gen_bpf_ms_per_mpkt: None,
            gen_fixed_offered_kpps: None,
            gen_fixed_backend_kpps: None,
            gen_fixed_cpu_ms_per_mpkt: Some(gen_cpu),
            gen_fixed_bpf_ms_per_mpkt: None,
            bpf_ns: bpf,
        }
    }

    fn by_what<'a>(t: &'a [Target], what: &str) -> &'a Target {
        t.iter().find(|t| t.what.contains(what)).unwrap()
    }

    #[test]
    fn per_packet_limits_and_unmeasured_loads() {
        let t = check(&per_packet(150.0, 400.1), &ByBalancer(Vec::new()));
        assert_eq!(by_what(&t, "established TCP").met, Some(true));
        assert_eq!(by_what(&t, "new flow").met, Some(false));
        // No end-to-end run: every other target is "not measured", none passes.
        assert!(t[2..].iter().all(|t| t.met.is_none() && t.figure.is_none()));
        assert!(table(&t).contains("| **no** |"));
    }

    #[test]
    fn bpf_stats_ratios_use_the_new_connection_limit_for_conn_only() {
        let xlb = BpfNs {
            tcp: Some(800.0),
            conn: Some(900.0),
            ..BpfNs::default()
        };
        let yard = BpfNs {
            tcp: Some(199.0),
            conn: Some(100.0),
            ..BpfNs::default()
        };
        let e2e = ByBalancer(vec![
            (Kind::Xlb, summary(Some(xlb), 1.0, 1.0)),
            (Kind::Yardstick, summary(Some(yard), 1.0, 1.0)),
        ]);
        let t = check(&per_packet(1.0, 1.0), &e2e);
        let tcp = by_what(&t, "iperf3 -P 4");
        assert_eq!(tcp.met, Some(false), "800/199 is over 4x");
        let conn = by_what(&t, "new TCP connections");
        assert_eq!((conn.figure, conn.met), (Some(9.0), Some(true)));
        assert_eq!(by_what(&t, "persistent").met, None);
    }

    #[test]
    fn generator_target_is_met_by_pps_or_by_cpu() {
        let g = |xk, xc, ik, ic| {
            generator(&ByBalancer(vec![
                (Kind::Xlb, summary(None, xk, xc)),
                (Kind::IptablesDnat, summary(None, ik, ic)),
            ]))
            .met
        };
        assert_eq!(g(150.0, 10.0, 100.0, 10.0), Some(true), "1.5x the pps");
        assert_eq!(g(100.0, 5.0, 100.0, 10.0), Some(true), "half the CPU");
        assert_eq!(g(149.0, 6.0, 100.0, 10.0), Some(false), "neither");
        assert_eq!(generator(&ByBalancer(Vec::new())).met, None);
    }
}

//! Per-packet cost with BPF_PROG_TEST_RUN: xlb's program on an established TCP and UDP flow,
//! a new flow, a reply and a packet that passes, beside two yardsticks from the same
//! object (a MAC swap with XDP_TX, and the forward-only router of `lb-ebpf/src/yardstick.rs`).
//!
//! BPF_PROG_TEST_RUN with `repeat` runs the program again and again on the *same* buffer,
//! which every run leaves as it rewrote it. So the cases are built to be fixed points:
//! - the service's one backend is the VIP:port itself (routed through the backend side),
//!   so DNAT rewrites the destination to what it already is, the reply entry's NAT
//!   source is the VIP, and an established packet (or a reply) is the same case after
//!   every repetition;
//! - the new-flow case is a SYN|FIN: a SYN on a flow whose entry has a close flag starts
//!   a new flow, and the new entry has FIN set again, so every repetition takes the miss
//!   path (hash, table slot, backend, both entries written) — over an existing entry;
//! - the table-miss case is a SYN|RST of a flow the table never had: the same miss path,
//!   but an RST of no known flow writes no entry, so it stays a miss; the difference from
//!   the new-flow case is what writing the flow's two entries costs;
//! - every frame starts with TTL 255, and each forwarding repetition decrements it, so a
//!   call runs [`REPEAT`] (< 254) repetitions; the TTL of the frame that comes back proves
//!   that every one of them forwarded, and the counters prove which path they took.
//!
//! Many interleaved calls per case (after discarded warm-up calls), on one pinned CPU; the
//! figure is the median of the calls' per-repetition averages.

use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail, ensure};
use aya::maps::DevMapHash;
use aya::programs::Xdp;
use aya::{Ebpf, EbpfLoader};
use lb_common::stats::{STAT_FORWARD, STAT_NEW_FLOW, STAT_REPLY};
use lb_common::{Addr, Backend, FAMILY_V4, PROTO_TCP, PROTO_UDP, ServiceKey, ServiceValue};
use lb_userspace::bpf::{BpfDataplane, LIMIT_PROGRAM, xdp_object};
use lb_userspace::dataplane::Dataplane as _;
use serde::Serialize;
use xlb_xdp_harness::harness::{self, test_run};
use xlb_xdp_harness::netns::{self, in_private_netns};
use xlb_xdp_harness::{Harness, Side, XDP_PASS, XDP_REDIRECT, XDP_TX};

use crate::packets::{self, Frames, TTL, VIP, VIP_PORT};
use crate::stats::{median, percentile};

/// The forward-only yardstick program and its devmap (lb-ebpf/src/yardstick.rs).
pub const FWD_PROGRAM: &str = "xdp_fwd_yardstick";
pub const FWD_EGRESS_MAP: &str = "YARDSTICK_EGRESS";
/// Repetitions per call: each forwarding repetition takes one off the frame's TTL.
const REPEAT: u32 = 250;
const _: () = assert!(REPEAT <= packets::MAX_REPEAT);
/// The measured calls of one run (after its warm-up call).
const CALLS_PER_RUN: usize = 4;
/// The programs that never rewrite what they read (the MAC swap, a passed packet) also
/// run with a large `repeat`, to show what [`REPEAT`] leaves of a call's fixed cost.
const LARGE_REPEAT: u32 = 1_000_000;
const LARGE_RUNS: usize = 5;
/// Connection-table entries and table slots of the detached program.
const FLOW_ENTRIES: u32 = 4096;
const TABLE_SLOTS: u32 = 7;

/// The figures of `latest.json`'s `per_packet_ns`: ns per packet, each the median over
/// runs of the kernel's average per repetition.
#[derive(Debug, Clone, Serialize)]
pub struct PerPacket {
    /// Swap MACs, XDP_TX (the old yardstick).
    pub xdp_tx_limit: f64,
    /// Forward-only: TTL, FIB lookup, MACs, redirect through a devmap.
    pub fwd_yardstick: f64,
    pub xlb_established: f64,
    pub xlb_established_udp: f64,
    pub xlb_new_flow: f64,
    /// The miss path without the entries written (SYN|RST of an unknown flow).
    pub xlb_miss_no_entry: f64,
    pub xlb_reply: f64,
    pub xlb_pass: f64,
}

impl PerPacket {
    /// (json key, table label, ns) of every figure, yardsticks first.
    pub fn rows(&self) -> [(&'static str, &'static str, f64); 8] {
        [
            (
                "xdp_tx_limit",
                "MAC-swap yardstick (swap MACs, XDP_TX)",
                self.xdp_tx_limit,
            ),
            (
                "fwd_yardstick",
                "forward-only yardstick (FIB lookup, TTL, MACs, redirect)",
                self.fwd_yardstick,
            ),
            (
                "xlb_established",
                "xlb, established TCP flow",
                self.xlb_established,
            ),
            (
                "xlb_established_udp",
                "xlb, established UDP flow",
                self.xlb_established_udp,
            ),
            (
                "xlb_new_flow",
                "xlb, new flow (SYN+FIN, miss path)",
                self.xlb_new_flow,
            ),
            (
                "xlb_miss_no_entry",
                "xlb, table miss writing no entry (SYN+RST)",
                self.xlb_miss_no_entry,
            ),
            ("xlb_reply", "xlb, reply (reverse NAT)", self.xlb_reply),
            ("xlb_pass", "xlb, packet that passes", self.xlb_pass),
        ]
    }
}

/// How the runs of one case spread (ns per repetition).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Spread {
    pub median: f64,
    pub p10: f64,
    pub p90: f64,
    /// Mean of the middle half of the runs.
    pub iqm: f64,
}

/// How the figures were taken, and the spread of each, kept in `latest.json`.
#[derive(Debug, Clone, Serialize)]
pub struct PerPacketRaw {
    pub repeat: u32,
    pub runs: usize,
    /// Measured calls per run, after one discarded warm-up call.
    pub calls_per_run: usize,
    /// The CPU the measuring thread was pinned to.
    pub cpu: usize,
    pub large_repeat: u32,
    /// The MAC swap and the pass case with `large_repeat` (median of a few calls): the
    /// difference from their `repeat` figures is what remains of a call's fixed cost.
    pub xdp_tx_limit_large_repeat_ns: f64,
    pub xlb_pass_large_repeat_ns: f64,
    /// Every case's spread, by its `per_packet_ns` key.
    pub spread: Vec<(String, Spread)>,
}

/// Runs the whole measurement (`runs` runs per case, in rounds) on a thread in a private
/// network namespace.
pub fn measure(runs: usize) -> Result<(PerPacket, PerPacketRaw)> {
    ensure!(runs >= 1, "at least one run per case");
    in_private_netns(move || {
        let cpu = harness::pin_to_this_cpu()?;
        // The highest priority for this thread alone: the kernel's test-run loop yields
        // whenever another task wants the CPU, and on a shared machine each yield costs a
        // time slice (the measured time excludes it, but the run takes minutes).
        // SAFETY: setpriority(2) on this thread (tid), no memory touched.
        unsafe {
            libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, -20);
        }
        measure_here(cpu, runs)
    })
}

/// One measured case: its program, frame, ingress and the verdicts that mean it took the
/// path it measures.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Prog {
    Xlb,
    Limit,
    Fwd,
}

struct Case<'a> {
    key: &'static str,
    prog: Prog,
    frame: &'a [u8],
    ifindex: u32,
    want: &'static [u32],
    /// Whether every repetition forwards (so the returned frame's TTL went down by
    /// `repeat`); otherwise the TTL must be untouched.
    forwards: bool,
}

const FORWARDED: &[u32] = &[XDP_TX, XDP_REDIRECT];

fn measure_here(cpu: usize, runs: usize) -> Result<(PerPacket, PerPacketRaw)> {
    let frames = Frames::new()?;
    // The harness's links and program (both veths allowed as redirect targets, as xlbd
    // would), with this benchmark's own service in the maps.
    let mut h = Harness::bare(FLOW_ENTRIES, TABLE_SLOTS).context("loading xlb's program")?;
    packets::route_vip_via_backend()?;
    let dp = h.dataplane_mut();
    fill_maps(dp)?;
    let (client_if, backend_if) = (h.ifindex(Side::Client), h.ifindex(Side::Backend));
    let mut yardsticks = load_yardsticks(&[client_if, backend_if])?;

    let case = |key, prog, frame, ifindex, want, forwards| Case {
        key,
        prog,
        frame,
        ifindex,
        want,
        forwards,
    };
    let cases = [
        case(
            "xdp_tx_limit",
            Prog::Limit,
            &frames.data[..],
            client_if,
            &[XDP_TX][..],
            false,
        ),
        case(
            "fwd_yardstick",
            Prog::Fwd,
            &frames.data,
            client_if,
            FORWARDED,
            true,
        ),
        case(
            "xlb_established",
            Prog::Xlb,
            &frames.data,
            client_if,
            FORWARDED,
            true,
        ),
        case(
            "xlb_established_udp",
            Prog::Xlb,
            &frames.udp,
            client_if,
            FORWARDED,
            true,
        ),
        case(
            "xlb_new_flow",
            Prog::Xlb,
            &frames.syn_fin,
            client_if,
            FORWARDED,
            true,
        ),
        case(
            "xlb_miss_no_entry",
            Prog::Xlb,
            &frames.syn_rst,
            client_if,
            FORWARDED,
            true,
        ),
        case(
            "xlb_reply",
            Prog::Xlb,
            &frames.reply,
            backend_if,
            FORWARDED,
            true,
        ),
        case(
            "xlb_pass",
            Prog::Xlb,
            &frames.pass,
            client_if,
            &[XDP_PASS][..],
            false,
        ),
    ];
    // The flows exist before any established or reply case runs: the SYN opens the TCP
    // flow (both entries), the first datagram the UDP one.
    let dp = h.dataplane_mut();
    run(dp.program(), &frames.syn, client_if, 1, FORWARDED).context("the flow's SYN")?;
    run(dp.program(), &frames.udp, client_if, 1, FORWARDED).context("the first datagram")?;
    check_paths(dp, &cases)?;

    // Round by round, every case in turn: a warm-up call (discarded), then
    // `CALLS_PER_RUN` calls back to back; the run's figure is their mean.
    let mut samples: Vec<Vec<f64>> = vec![Vec::with_capacity(runs); cases.len()];
    for _ in 0..runs {
        for (c, s) in cases.iter().zip(&mut samples) {
            let prog = match c.prog {
                Prog::Xlb => dp.program(),
                Prog::Limit => yardsticks.program(LIMIT_PROGRAM)?,
                Prog::Fwd => yardsticks.program(FWD_PROGRAM)?,
            };
            run_case(prog, c, REPEAT)?;
            let mut sum = 0.0;
            for _ in 0..CALLS_PER_RUN {
                sum += run_case(prog, c, REPEAT)?;
            }
            s.push(sum / CALLS_PER_RUN as f64);
        }
    }
    let spread = cases
        .iter()
        .zip(&samples)
        .map(|(c, s)| Ok((c.key.to_owned(), spread_of(s)?)))
        .collect::<Result<Vec<_>>>()?;
    let fig = |key: &str| {
        spread
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, s)| s.median)
            .expect("every case was measured")
    };
    let figures = PerPacket {
        xdp_tx_limit: fig("xdp_tx_limit"),
        fwd_yardstick: fig("fwd_yardstick"),
        xlb_established: fig("xlb_established"),
        xlb_established_udp: fig("xlb_established_udp"),
        xlb_new_flow: fig("xlb_new_flow"),
        xlb_miss_no_entry: fig("xlb_miss_no_entry"),
        xlb_reply: fig("xlb_reply"),
        xlb_pass: fig("xlb_pass"),
    };
    let pass_case = cases
        .iter()
        .find(|c| c.key == "xlb_pass")
        .expect("the pass case is measured");
    let large = |prog: &mut Xdp, c: &Case| -> Result<f64> {
        let runs = (0..LARGE_RUNS)
            .map(|_| run_case(prog, c, LARGE_REPEAT))
            .collect::<Result<Vec<_>>>()?;
        median(&runs).ok_or_else(|| anyhow!("no samples"))
    };
    let raw = PerPacketRaw {
        repeat: REPEAT,
        runs,
        calls_per_run: CALLS_PER_RUN,
        cpu,
        large_repeat: LARGE_REPEAT,
        xdp_tx_limit_large_repeat_ns: large(yardsticks.program(LIMIT_PROGRAM)?, &cases[0])?,
        xlb_pass_large_repeat_ns: large(dp.program(), pass_case)?,
        spread,
    };
    Ok((figures, raw))
}

/// Checks, with xlb's own counters, that one call of each xlb case takes its path on
/// every repetition: the new-flow case makes `REPEAT` new flows, the established and
/// table-miss cases none (and forward `REPEAT` packets), the reply case rewrites `REPEAT`
/// replies; and that the table-miss case's flow never got an entry.
fn check_paths(dp: &mut BpfDataplane, cases: &[Case]) -> Result<()> {
    for c in cases.iter().filter(|c| c.prog == Prog::Xlb && c.forwards) {
        let before = dp.stats()?;
        run_case(dp.program(), c, REPEAT)?;
        let after = dp.stats()?;
        let delta = |stat: u32| after[stat as usize].packets - before[stat as usize].packets;
        let (new, fwd, reply) = (delta(STAT_NEW_FLOW), delta(STAT_FORWARD), delta(STAT_REPLY));
        let r = u64::from(REPEAT);
        let ok = match c.key {
            "xlb_new_flow" => new == r && fwd == r,
            "xlb_reply" => new == 0 && reply == r,
            _ => new == 0 && fwd == r,
        };
        ensure!(
            ok,
            "case {}: {REPEAT} repetitions made {new} new flows, forwarded {fwd} requests and \
             {reply} replies: the repetitions did not all take the measured path",
            c.key
        );
    }
    // The table-miss case must have stayed a miss: no entry of its flow, either direction.
    let port = packets::MISS_PORT.to_be();
    let entries = dp
        .flows()?
        .iter()
        .filter(|(k, _)| k.src_port_be == port || k.dst_port_be == port)
        .count();
    ensure!(
        entries == 0,
        "case xlb_miss_no_entry: its flow has {entries} connection-table entries, none expected"
    );
    Ok(())
}

fn spread_of(xs: &[f64]) -> Result<Spread> {
    let p = |q| percentile(xs, q).ok_or_else(|| anyhow!("no samples"));
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let mid = &v[v.len() / 4..v.len() - v.len() / 4];
    Ok(Spread {
        median: median(xs).ok_or_else(|| anyhow!("no samples"))?,
        p10: p(10.0)?,
        p90: p(90.0)?,
        iqm: mid.iter().sum::<f64>() / mid.len() as f64,
    })
}

/// One service per protocol, VIP:80, whose every table slot is backend 0: VIP:80 itself.
fn fill_maps(dp: &mut BpfDataplane) -> Result<()> {
    let backend = Backend {
        addr: Addr::from_v4_octets(VIP),
        port_be: VIP_PORT.to_be(),
        family: FAMILY_V4,
        _pad: 0,
    };
    dp.put_backend(0, &backend)?;
    dp.write_table(0, &[0; TABLE_SLOTS as usize])?;
    for (id, proto) in [(0, PROTO_TCP), (1, PROTO_UDP)] {
        let key = ServiceKey {
            vip: Addr::from_v4_octets(VIP),
            port_be: VIP_PORT.to_be(),
            proto,
            family: FAMILY_V4,
        };
        let value = ServiceValue {
            id,
            table_offset: 0,
            table_size: TABLE_SLOTS,
            generation: 1,
            ..Default::default()
        };
        dp.put_service(&key, &value)?;
    }
    Ok(())
}

/// The object loaded a second time, for its two yardstick programs (never attached).
pub struct Yardsticks(Ebpf);

impl Yardsticks {
    pub fn program(&mut self, name: &str) -> Result<&mut Xdp> {
        Ok(self
            .0
            .program_mut(name)
            .ok_or_else(|| anyhow!("no program {name} in the object"))?
            .try_into()?)
    }
}

/// Loads the object's yardsticks, the forward-only one allowed to redirect to `egress`.
pub fn load_yardsticks(egress: &[u32]) -> Result<Yardsticks> {
    let mut loader = EbpfLoader::new();
    // The yardsticks use none of xlb's large maps: the smallest sizes. (Names, not
    // lb-common's constants: the connection tables' names change with the data path, and
    // a name the object does not have is ignored.)
    for map in ["FLOWS", "FLOWS4", "FLOWS6", "TABLES"] {
        loader.map_max_entries(map, 2);
    }
    let mut obj = loader
        .load(xdp_object())
        .context("loading the XDP object for its yardsticks")?;
    let mut devmap: DevMapHash<_> = obj
        .map_mut(FWD_EGRESS_MAP)
        .ok_or_else(|| anyhow!("no map {FWD_EGRESS_MAP} in the object"))?
        .try_into()?;
    for &i in egress {
        devmap
            .insert(i, i, None, 0)
            .with_context(|| format!("allowing redirects to ifindex {i}"))?;
    }
    let mut y = Yardsticks(obj);
    for name in [LIMIT_PROGRAM, FWD_PROGRAM] {
        y.program(name)?.load()?;
    }
    Ok(y)
}

/// The forward-only yardstick attached in driver mode to every one of `ifaces` (named in
/// this network namespace), each allowed as a redirect target; the links live as long as
/// the returned object.
pub fn attach_forward_yardstick(ifaces: &[String]) -> Result<Yardsticks> {
    let idx = ifaces
        .iter()
        .map(|i| netns::ifindex(i))
        .collect::<Result<Vec<_>>>()?;
    let mut y = load_yardsticks(&idx)?;
    let prog = y.program(FWD_PROGRAM)?;
    for i in ifaces {
        prog.attach(i, aya::programs::XdpMode::Driver)
            .with_context(|| format!("attaching the yardstick to {i} in driver mode"))?;
    }
    Ok(y)
}

/// One call of case `c` with `repeat` repetitions: the kernel's average ns per repetition.
/// The verdict (of the last repetition) must be one of `c.want`, and the frame that comes
/// back must have lost `repeat` from its TTL if the case forwards (each repetition
/// decremented it), nothing otherwise.
fn run_case(prog: &mut Xdp, c: &Case, repeat: u32) -> Result<f64> {
    let (ns, out) = run_out(prog, c.frame, c.ifindex, repeat, c.want)
        .with_context(|| format!("case {}", c.key))?;
    let ttl = *out
        .get(14 + 8)
        .ok_or_else(|| anyhow!("case {}: the frame came back short", c.key))?;
    let want_ttl = if c.forwards { TTL - repeat as u8 } else { TTL };
    if ttl != want_ttl {
        bail!(
            "case {}: TTL {ttl} after {repeat} repetitions, {want_ttl} expected: not every \
             repetition took the measured path",
            c.key
        );
    }
    Ok(ns)
}

fn run(prog: &mut Xdp, frame: &[u8], ifindex: u32, repeat: u32, want: &[u32]) -> Result<f64> {
    run_out(prog, frame, ifindex, repeat, want).map(|(ns, _)| ns)
}

/// One BPF_PROG_TEST_RUN (xdp-harness's): the kernel's average ns per repeat and the
/// frame as the last repetition left it; the verdict must be one of `want`.
fn run_out(
    prog: &mut Xdp,
    frame: &[u8],
    ifindex: u32,
    repeat: u32,
    want: &[u32],
) -> Result<(f64, Vec<u8>)> {
    let r = test_run(prog, frame, ifindex, repeat)?;
    if !want.contains(&r.verdict) {
        bail!(
            "verdict {} where {want:?} was expected (repeat {repeat})",
            r.verdict
        );
    }
    Ok((ns(r.per_repetition), r.frame))
}

fn ns(d: Duration) -> f64 {
    d.as_secs_f64() * 1e9
}

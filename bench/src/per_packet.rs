//! Per-packet cost with BPF_PROG_TEST_RUN: xlb's program on an established flow, a new
//! flow, a reply and a packet that passes, beside the XDP_TX yardstick from the same object.
//!
//! BPF_PROG_TEST_RUN with `repeat` runs the program again and again on the *same* buffer,
//! which the previous run rewrote: after one DNAT the frame is no longer for the VIP. So
//! xlb's cases run with repeat=1, thousands of times, interleaved, and what a single call
//! adds (the harness's timer, bh disable, run context, and the first touch of the maps)
//! is taken out: for xlb it is its pass case's repeat=1 median minus the same case with a
//! large repeat (a packet that passes is not rewritten, so every repeat is the same work);
//! the yardstick (a MAC swap, the same work on every repeat) runs with a large repeat.
//! A new flow is measured by emptying the connection table before each SYN.

use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};
use aya::programs::{TestRun as _, TestRunOptions, Xdp};
use aya::{Ebpf, EbpfLoader};
use lb_common::{
    Addr, Backend, FAMILY_V4, FlowKey, MAP_FLOWS4, MAP_FLOWS6, PROTO_TCP, ServiceKey, ServiceValue,
};
use lb_userspace::bpf::{BpfDataplane, LIMIT_PROGRAM, xdp_object};
use lb_userspace::dataplane::Dataplane as _;
use serde::Serialize;

use crate::packets::{self, BACKEND, BACKEND_PORT, Frames, VIP, VIP_PORT};
use crate::stats::median;

const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;
const XDP_REDIRECT: u32 = 4;
/// Interleaved repeat=1 rounds (one call per case each).
const ROUNDS: usize = 4000;
/// `repeat` of the large-repeat runs, and how many of them (the median is kept).
const REPEAT: u32 = 2_000_000;
const REPEAT_RUNS: usize = 5;
/// Connection-table entries and table slots of the detached program.
const FLOW_ENTRIES: u32 = 4096;
const TABLE_SLOTS: u32 = 7;

/// The figures of `latest.json`'s `per_packet_ns`, in ns per packet.
#[derive(Debug, Clone, Serialize)]
pub struct PerPacket {
    pub xdp_tx_limit: f64,
    pub xlb_established: f64,
    pub xlb_new_flow: f64,
    pub xlb_reply: f64,
    pub xlb_pass: f64,
}

/// The raw medians the figures come from, kept in `latest.json` for checking.
#[derive(Debug, Clone, Serialize)]
pub struct PerPacketRaw {
    pub rounds: usize,
    pub repeat: u32,
    pub harness_overhead_ns: f64,
    pub xdp_tx_limit_repeat1_ns: f64,
    pub xlb_established_repeat1_ns: f64,
    pub xlb_new_flow_repeat1_ns: f64,
    pub xlb_reply_repeat1_ns: f64,
    pub xlb_pass_repeat1_ns: f64,
    /// The pass case does not change the frame, so it runs with a large repeat too; the
    /// difference from its repeat=1 median is `harness_overhead_ns`.
    pub xlb_pass_large_repeat_ns: f64,
}

/// Runs the whole measurement on a thread in a private network namespace.
pub fn measure() -> Result<(PerPacket, PerPacketRaw)> {
    std::thread::spawn(|| {
        // SAFETY: unshare(2) changes only this thread's network namespace.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            return Err(std::io::Error::last_os_error()).context("unshare(CLONE_NEWNET)");
        }
        packets::make_links()?;
        measure_here()
    })
    .join()
    .map_err(|_| anyhow!("the per-packet thread panicked"))?
}

fn measure_here() -> Result<(PerPacket, PerPacketRaw)> {
    let frames = Frames::new()?;
    let client_if = packets::ifindex(packets::CLIENT_IF)?;
    let backend_if = packets::ifindex(packets::BACKEND_IF)?;
    let mut dp = BpfDataplane::load_detached(FLOW_ENTRIES, TABLE_SLOTS)
        .map_err(|e| anyhow!("loading xlb's program: {e}"))?;
    fill_maps(&mut dp)?;
    // As xlbd would: both veths take XDP redirects.
    dp.allow_egress(client_if)?;
    dp.allow_egress(backend_if)?;
    let mut limit_obj = load_limit()?;
    let limit = limit_program(&mut limit_obj)?;

    let forwarded = [XDP_TX, XDP_REDIRECT];
    let mut s = Samples::default();
    for _ in 0..ROUNDS {
        clear(&mut dp)?;
        let xlb = dp.program();
        s.new_flow
            .push(run(xlb, &frames.syn, client_if, 1, &forwarded)?);
        s.established
            .push(run(xlb, &frames.data, client_if, 1, &forwarded)?);
        s.reply
            .push(run(xlb, &frames.reply, backend_if, 1, &forwarded)?);
        s.pass
            .push(run(xlb, &frames.pass, client_if, 1, &[XDP_PASS])?);
        s.limit
            .push(run(limit, &frames.data, client_if, 1, &[XDP_TX])?);
    }
    let large = |prog: &mut Xdp, frame: &[u8], want: u32| -> Result<f64> {
        let runs = (0..REPEAT_RUNS)
            .map(|_| run(prog, frame, client_if, REPEAT, &[want]))
            .collect::<Result<Vec<_>>>()?;
        med(&runs)
    };
    let limit_large = large(limit, &frames.data, XDP_TX)?;
    let pass_large = large(dp.program(), &frames.pass, XDP_PASS)?;

    let raw = PerPacketRaw {
        rounds: ROUNDS,
        repeat: REPEAT,
        harness_overhead_ns: 0.0,
        xdp_tx_limit_repeat1_ns: med(&s.limit)?,
        xlb_established_repeat1_ns: med(&s.established)?,
        xlb_new_flow_repeat1_ns: med(&s.new_flow)?,
        xlb_reply_repeat1_ns: med(&s.reply)?,
        xlb_pass_repeat1_ns: med(&s.pass)?,
        xlb_pass_large_repeat_ns: pass_large,
    };
    let overhead = (raw.xlb_pass_repeat1_ns - pass_large).max(0.0);
    let net = |x: f64| (x - overhead).max(0.0);
    let figures = PerPacket {
        xdp_tx_limit: limit_large,
        xlb_established: net(raw.xlb_established_repeat1_ns),
        xlb_new_flow: net(raw.xlb_new_flow_repeat1_ns),
        xlb_reply: net(raw.xlb_reply_repeat1_ns),
        xlb_pass: pass_large,
    };
    Ok((
        figures,
        PerPacketRaw {
            harness_overhead_ns: overhead,
            ..raw
        },
    ))
}

#[derive(Default)]
struct Samples {
    new_flow: Vec<f64>,
    established: Vec<f64>,
    reply: Vec<f64>,
    pass: Vec<f64>,
    limit: Vec<f64>,
}

fn med(xs: &[f64]) -> Result<f64> {
    median(xs).ok_or_else(|| anyhow!("no samples"))
}

/// One service, VIP:80/tcp, whose every table slot is backend 0, 198.19.0.2:8080.
fn fill_maps(dp: &mut BpfDataplane) -> Result<()> {
    let backend = Backend {
        addr: Addr::from_v4_octets(BACKEND),
        port_be: BACKEND_PORT.to_be(),
        family: FAMILY_V4,
        _pad: 0,
    };
    dp.put_backend(0, &backend)?;
    dp.write_table(0, &[0; TABLE_SLOTS as usize])?;
    let key = ServiceKey {
        vip: Addr::from_v4_octets(VIP),
        port_be: VIP_PORT.to_be(),
        proto: PROTO_TCP,
        family: FAMILY_V4,
    };
    let value = ServiceValue {
        id: 0,
        table_offset: 0,
        table_size: TABLE_SLOTS,
        generation: 1,
        ..Default::default()
    };
    dp.put_service(&key, &value)?;
    Ok(())
}

/// Empties the connection table (both families' maps).
fn clear(dp: &mut BpfDataplane) -> Result<()> {
    let keys: Vec<FlowKey> = dp.flows()?.into_iter().map(|(k, _)| k).collect();
    dp.remove_flows(&keys)?;
    Ok(())
}

/// The object loaded a second time, for its yardstick program (never attached).
fn load_limit() -> Result<Ebpf> {
    EbpfLoader::new()
        .map_max_entries(MAP_FLOWS4, 2)
        .map_max_entries(MAP_FLOWS6, 2)
        .map_max_entries(lb_common::MAP_TABLES, 2)
        .load(xdp_object())
        .context("loading the XDP object for its yardstick")
}

fn limit_program(obj: &mut Ebpf) -> Result<&mut Xdp> {
    let prog: &mut Xdp = obj
        .program_mut(LIMIT_PROGRAM)
        .ok_or_else(|| anyhow!("no program {LIMIT_PROGRAM} in the object"))?
        .try_into()?;
    prog.load()?;
    Ok(prog)
}

/// `struct xdp_md` for test_run: the frame arrives on `ifindex`.
fn xdp_md(len: usize, ifindex: u32) -> [u8; 24] {
    let mut md = [0u8; 24];
    md[4..8].copy_from_slice(&(len as u32).to_ne_bytes());
    md[12..16].copy_from_slice(&ifindex.to_ne_bytes());
    md
}

/// One BPF_PROG_TEST_RUN: the kernel's average ns per repeat; the verdict must be one of
/// `want` (a wrong verdict means the case measured something else).
fn run(prog: &mut Xdp, frame: &[u8], ifindex: u32, repeat: u32, want: &[u32]) -> Result<f64> {
    let mut out = vec![0u8; frame.len() + 256];
    let md = xdp_md(frame.len(), ifindex);
    let mut opts = TestRunOptions::new();
    opts.data_in = Some(frame);
    opts.data_out = Some(&mut out);
    opts.ctx_in = Some(&md);
    opts.repeat = repeat;
    let r = prog.test_run(opts).context("BPF_PROG_TEST_RUN")?;
    if !want.contains(&r.return_value) {
        bail!(
            "verdict {} where {want:?} was expected (repeat {repeat})",
            r.return_value
        );
    }
    Ok(ns(r.duration))
}

fn ns(d: Duration) -> f64 {
    d.as_secs_f64() * 1e9
}

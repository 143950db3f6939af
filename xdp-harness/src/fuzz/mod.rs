//! The fuzzer: seeded random and mutated packets through the program, each checked:
//!
//! 1. the verdict is never `XDP_ABORTED` (nor anything but DROP, PASS, TX, REDIRECT);
//! 2. a packet that leaves (`XDP_TX`/`XDP_REDIRECT`) or is rewritten parses (etherparse);
//!    when the input's checksums were valid, so are the output's (see [`crate::validate`];
//!    xlb, like any L4 balancer, does not verify checksums, so a wrong one stays wrong);
//! 3. a packet that carries no VIP address anywhere leaves the maps untouched: the
//!    `new_flow` counter does not move, and over batches made only of such packets the
//!    connection table's entry count does not change;
//! 4. every packet also runs through the decapsulation program (`xlb_decap`): its verdict
//!    is PASS or DROP, and a packet it changed is the input without an outer header of
//!    the input's family, whose inner IP header is whole and fits what is left.
//!
//! Iteration `i` of a run with seed `s` is rebuilt from `(s, i)` alone.

mod generate;
mod mutate;
pub mod rng;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Result;
use lb_common::stats::STAT_NEW_FLOW;

use crate::fixture::Side;
use crate::harness::Harness;
use crate::plan::PLANS;
use crate::validate::validate;
use crate::{XDP_ABORTED, XDP_DROP, XDP_PASS, XDP_REDIRECT, XDP_TX, hex, verdict_name};
use rng::Rng;

/// Connection-table entries for fuzzing: small, so counting them is cheap.
pub const FLOW_ENTRIES: u32 = 1024;
/// Packets per batch; one batch in four carries no VIP address and is checked for an
/// unchanged connection table.
const BATCH: u64 = 256;
/// Failures kept in full (hex) for the report: the first of each kind, at most this many.
const KEEP_FAILURES: usize = 12;

/// One failed check.
#[derive(Debug, Clone)]
pub struct Failure {
    pub iteration: u64,
    pub what: String,
    pub reason: String,
    pub input: Vec<u8>,
    pub output: Vec<u8>,
}

/// The figures of a run.
#[derive(Debug, Default)]
pub struct Figures {
    pub count: u64,
    pub seed: u64,
    pub verdicts: BTreeMap<&'static str, u64>,
    pub mutated: u64,
    /// Inputs whose checksums etherparse found valid.
    pub valid_inputs: u64,
    /// Packets that left (TX/REDIRECT) or were rewritten, all checked.
    pub checked_outputs: u64,
    /// Packets without a VIP address checked for untouched maps.
    pub checked_untouched: u64,
    pub clean_batches: u64,
    /// The decapsulation program's verdicts, and the packets it stripped (all checked).
    pub decap_verdicts: BTreeMap<&'static str, u64>,
    pub decap_stripped: u64,
    pub failures: u64,
    /// Failures by kind: the reason up to its first period, without its numbers.
    pub failure_kinds: BTreeMap<String, u64>,
    /// The first failure of each kind.
    pub first_failures: Vec<Failure>,
    pub elapsed: Duration,
}

impl Figures {
    pub fn summary(&self) -> String {
        let verdicts: Vec<String> = self
            .verdicts
            .iter()
            .map(|(v, n)| format!("{v}={n}"))
            .collect();
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        format!(
            "fuzz: count={} seed={} verdicts[{}] decap[{} stripped={}] mutated={} \
             valid_inputs={} checked_outputs={} checked_untouched={} clean_batches={} \
             failures={} elapsed={:.1}s packets/s={:.0}",
            self.count,
            self.seed,
            verdicts.join(" "),
            self.decap_verdicts
                .iter()
                .map(|(v, n)| format!("{v}={n}"))
                .collect::<Vec<_>>()
                .join(" "),
            self.decap_stripped,
            self.mutated,
            self.valid_inputs,
            self.checked_outputs,
            self.checked_untouched,
            self.clean_batches,
            self.failures,
            secs,
            self.count as f64 / secs
        )
    }

    /// The summary and the first failures with their packets in hex.
    pub fn report(&self) -> String {
        let mut s = self.summary();
        for (kind, n) in &self.failure_kinds {
            s += &format!("\n  {n} x {kind}");
        }
        for f in &self.first_failures {
            s += &format!(
                "\n  #{} {}: {}\n    input  {}\n    output {}",
                f.iteration,
                f.what,
                f.reason,
                hex(&f.input),
                hex(&f.output)
            );
        }
        s
    }
}

/// Whether `frame` holds any VIP address's bytes (then it may rightly touch the maps).
fn has_vip(frame: &[u8]) -> bool {
    PLANS.iter().flat_map(|p| p.vips()).any(|vip| {
        let v = vip.octets();
        frame.windows(v.len()).any(|w| w == v)
    })
}

/// One iteration's packet: a valid packet, mutated with probability 7/10, then (half of
/// the time) with its checksums repaired.
pub fn packet(seed: u64, i: u64, vip_free: bool) -> (String, Vec<u8>, bool) {
    let mut r = Rng::for_iteration(seed, i);
    let g = generate::packet(&mut r, vip_free);
    let mut frame = g.frame;
    let mut what = g.kind.to_string();
    let mutated = r.chance(7, 10);
    if mutated {
        for _ in 0..1 + r.below(2) {
            what += "+";
            what += mutate::mutate(&mut r, &mut frame);
        }
        if r.chance(1, 2) {
            mutate::repair(&mut frame);
            what += "+repaired";
        }
    }
    (what, frame, mutated)
}

fn fail(fig: &mut Figures, f: Failure) {
    fig.failures += 1;
    let first = f.reason.split('.').next().unwrap_or_default();
    let kind = first
        .split_whitespace()
        .filter(|w| !w.starts_with("0x") && !w.starts_with(|c: char| c.is_ascii_digit()))
        .collect::<Vec<_>>()
        .join(" ");
    let seen = fig.failure_kinds.entry(kind).or_default();
    *seen += 1;
    // The first failure of each kind, up to KEEP_FAILURES of them.
    if *seen == 1 && fig.first_failures.len() < KEEP_FAILURES {
        fig.first_failures.push(f);
    }
}

/// A packet the decapsulation program changed: the input's Ethernet header, then the
/// input after an outer header of 20-60 bytes (IPv4) or 40 (IPv6) of the input's family,
/// holding an inner IP header of that family whose length fits.
fn check_stripped(input: &[u8], out: &[u8]) -> Result<(), String> {
    let strip = input.len().saturating_sub(out.len());
    let v6 = input.get(12..14) == Some(&[0x86, 0xdd][..]);
    let ok_strip = if v6 {
        strip == 40
    } else {
        (20..=60).contains(&strip)
    };
    if !ok_strip || out.len() < 14 {
        return Err(format!("stripped {strip} bytes"));
    }
    if out[..14] != input[..14] || out[14..] != input[14 + strip..] {
        return Err("the output is not the input without its outer header".into());
    }
    let inner = &out[14..];
    let fits = if v6 {
        etherparse::Ipv6HeaderSlice::from_slice(inner)
            .map(|h| 40 + usize::from(h.payload_length()) <= inner.len())
            .unwrap_or(false)
    } else {
        etherparse::Ipv4HeaderSlice::from_slice(inner)
            .map(|h| usize::from(h.total_len()) <= inner.len())
            .unwrap_or(false)
    };
    if !fits {
        return Err("the inner IP header is cut or longer than what is left".into());
    }
    Ok(())
}

fn new_flows(h: &Harness) -> Result<u64> {
    Ok(h.stats()?[STAT_NEW_FLOW as usize].packets)
}

/// Runs `count` iterations seeded with `seed`.
pub fn run(h: &mut Harness, count: u64, seed: u64) -> Result<Figures> {
    let start = Instant::now();
    let mut fig = Figures {
        count,
        seed,
        ..Default::default()
    };
    let mut batch_start = 0;
    while batch_start < count {
        let end = (batch_start + BATCH).min(count);
        let clean = Rng::for_iteration(seed, batch_start).chance(1, 4);
        let flows_before = if clean { Some(h.flow_count()?) } else { None };
        let mut all_vip_free = true;
        let mut new_flow = new_flows(h)?;
        for i in batch_start..end {
            let (what, input, mutated) = packet(seed, i, clean);
            fig.mutated += u64::from(mutated);
            let input_valid = validate(&input).is_ok();
            fig.valid_inputs += u64::from(input_valid);
            let (verdict, output) = h.run(&input, Side::of(&input))?;
            *fig.verdicts.entry(verdict_name(verdict)).or_default() += 1;
            let failure = |reason: String| Failure {
                iteration: i,
                what: what.clone(),
                reason,
                input: input.clone(),
                output: output.clone(),
            };
            if !matches!(verdict, XDP_DROP | XDP_PASS | XDP_TX | XDP_REDIRECT) {
                let why = if verdict == XDP_ABORTED {
                    "XDP_ABORTED".into()
                } else {
                    format!("verdict {verdict}")
                };
                fail(&mut fig, failure(why));
            }
            if matches!(verdict, XDP_TX | XDP_REDIRECT) || output != input {
                fig.checked_outputs += 1;
                match validate(&output) {
                    Ok(()) => {}
                    Err(e) if input_valid || !e.is_checksum() => fail(
                        &mut fig,
                        failure(format!("{} output: {e}", verdict_name(verdict))),
                    ),
                    Err(_) => {}
                }
            }
            let vip_free = !has_vip(&input);
            all_vip_free &= vip_free;
            let now = new_flows(h)?;
            if vip_free {
                fig.checked_untouched += 1;
                if now != new_flow {
                    fail(
                        &mut fig,
                        failure(format!(
                            "no VIP in it, yet new_flow went {new_flow} -> {now}"
                        )),
                    );
                }
            }
            new_flow = now;
            let (dv, dout) = h.run_decap(&input)?;
            *fig.decap_verdicts.entry(verdict_name(dv)).or_default() += 1;
            let dfail = |reason: String| Failure {
                iteration: i,
                what: format!("{what} (decap)"),
                reason,
                input: input.clone(),
                output: dout.clone(),
            };
            match dv {
                XDP_DROP => {}
                XDP_PASS if dout == input => {}
                XDP_PASS => {
                    fig.decap_stripped += 1;
                    if let Err(why) = check_stripped(&input, &dout) {
                        fail(&mut fig, dfail(why));
                    }
                }
                v => fail(
                    &mut fig,
                    dfail(format!("decap verdict {}", verdict_name(v))),
                ),
            }
        }
        if let (Some(before), true) = (flows_before, all_vip_free) {
            fig.clean_batches += 1;
            let after = h.flow_count()?;
            if after != before {
                fail(
                    &mut fig,
                    Failure {
                        iteration: batch_start,
                        what: format!("batch of {} packets without a VIP", end - batch_start),
                        reason: format!("FLOWS entries went {before} -> {after}"),
                        input: Vec::new(),
                        output: Vec::new(),
                    },
                );
            }
        }
        batch_start = end;
    }
    fig.elapsed = start.elapsed();
    Ok(fig)
}

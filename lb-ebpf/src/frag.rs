//! Fragments: the first fragment of a datagram is balanced like any packet of its flow
//! (it carries the L4 header); the rewrite it got is recorded per datagram, so the later
//! fragments (no L4 header) get the same address rewrite and reach the same backend.
//! A later fragment of a datagram not recorded (its first fragment not seen, or evicted)
//! is passed untouched.

use lb_common::{FlowValue, FragKey, FragValue};

use crate::{
    maps::{FRAGS, scratch},
    parse::Packet,
};

/// Writes the datagram key of `p` into `k` (addresses as received).
#[inline(always)]
fn key(k: &mut FragKey, p: &Packet) {
    *k = FragKey {
        src: p.key.src,
        dst: p.key.dst,
        id: p.frag_id,
        proto: p.key.proto,
        family: p.key.family,
        _pad: [0; 2],
    };
}

/// Records the rewrite of the datagram whose first fragment `p` is.
#[inline(always)]
pub fn record(p: &Packet, flow: &FlowValue) {
    let Some(sc) = scratch() else { return };
    key(&mut sc.frag_key, p);
    sc.frag = FragValue {
        nat_addr: flow.nat_addr,
        direction: flow.direction,
        _pad: [0; 3],
        backend: flow.backend,
    };
    // A full table evicts the oldest datagram; a failure leaves the later fragments to
    // the pass rule.
    let _ = FRAGS.insert(&sc.frag_key, &sc.frag, 0);
}

/// The rewrite recorded for the datagram a later fragment belongs to.
#[inline(always)]
pub fn lookup(p: &Packet) -> Option<&'static FragValue> {
    let sc = scratch()?;
    key(&mut sc.frag_key, p);
    // SAFETY: a map value, valid until the program returns.
    unsafe { FRAGS.get(&sc.frag_key) }
}

//! Backend selection: the connection table first, then the service's backend table.

use aya_ebpf::helpers::bpf_ktime_get_ns;
use lb_common::{
    DIR_REPLY, DIR_REQUEST, FlowKey, FlowValue, NO_BACKEND, ServiceValue,
    conntrack::{close_flags, is_syn},
    hash::{FLOW_HASH_SEED, flow_hash, slot},
    stats::{STAT_DROP_FLOW_TABLE, STAT_DROP_NO_BACKEND, STAT_NEW_FLOW},
};

use crate::{
    maps::{BACKENDS, FLOWS, TABLES},
    stats::count,
};

/// Entries' last-seen times are rewritten at most this often (ns), so a busy flow does
/// not dirty its entry's cache line on every packet.
const TOUCH_NS: u64 = 1_000_000_000;

/// Records a packet with TCP flags `tcp_flags` at `now` in an entry.
#[inline(always)]
fn touch(v: &mut FlowValue, tcp_flags: u8, now: u64) {
    let closing = close_flags(tcp_flags);
    if closing & !v.flags != 0 {
        v.flags |= closing;
    }
    if now.wrapping_sub(v.last_seen_ns) > TOUCH_NS {
        v.last_seen_ns = now;
    }
}

/// The request-direction entry of the flow `key` to service `svc`: the existing one, or a
/// new one (both directions recorded) for a backend taken from the service's table. A SYN
/// on a flow that has closed starts a new flow.
/// `Err(stat)` names the counter of the reason the packet is dropped.
#[inline(always)]
pub fn backend_for(
    key: &FlowKey,
    svc: &ServiceValue,
    tcp_flags: u8,
    len: u64,
) -> Result<FlowValue, u32> {
    // SAFETY: monotonic clock read, no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    if let Some(v) = FLOWS.get_ptr_mut(key) {
        // SAFETY: a live map value; concurrent writers only set bits and times.
        let v = unsafe { &mut *v };
        if v.direction == DIR_REQUEST && !(v.flags != 0 && is_syn(tcp_flags)) {
            touch(v, tcp_flags, now);
            return Ok(*v);
        }
    }
    if svc.table_size == 0 {
        return Err(STAT_DROP_NO_BACKEND);
    }
    let at = svc.table_offset + slot(flow_hash(key, FLOW_HASH_SEED), svc.table_size);
    let index = match TABLES.get(at) {
        Some(&i) if i != NO_BACKEND => i,
        _ => return Err(STAT_DROP_NO_BACKEND),
    };
    let Some(b) = BACKENDS.get(index) else {
        return Err(STAT_DROP_NO_BACKEND);
    };
    let request = FlowValue {
        nat_addr: b.addr,
        nat_port_be: b.port_be,
        direction: DIR_REQUEST,
        flags: close_flags(tcp_flags),
        backend: index,
        service: svc.id,
        _pad: 0,
        last_seen_ns: now,
    };
    let reply_key = FlowKey {
        src: b.addr,
        dst: key.src,
        src_port_be: b.port_be,
        dst_port_be: key.src_port_be,
        proto: key.proto,
        family: key.family,
        _pad: [0; 2],
    };
    let reply = FlowValue {
        nat_addr: key.dst,
        nat_port_be: key.dst_port_be,
        direction: DIR_REPLY,
        ..request
    };
    // The reply entry first: a request entry without it would forward packets whose
    // answers could not be translated back.
    if FLOWS.insert(&reply_key, &reply, 0).is_err() || FLOWS.insert(key, &request, 0).is_err() {
        return Err(STAT_DROP_FLOW_TABLE);
    }
    count(STAT_NEW_FLOW, len);
    Ok(request)
}

/// The reply-direction entry for a packet from a backend, if it belongs to a balanced flow.
#[inline(always)]
pub fn reply_for(key: &FlowKey, tcp_flags: u8) -> Option<FlowValue> {
    let v = FLOWS.get_ptr_mut(key)?;
    // SAFETY: a live map value; concurrent writers only set bits and times.
    let v = unsafe { &mut *v };
    if v.direction != DIR_REPLY {
        return None;
    }
    // SAFETY: monotonic clock read, no preconditions.
    touch(v, tcp_flags, unsafe { bpf_ktime_get_ns() });
    Some(*v)
}

//! Backend selection: the connection table first, then the service's backend table.

use lb_common::{
    DIR_REPLY, DIR_REQUEST, FlowKey, FlowValue, NO_BACKEND, ServiceValue,
    hash::{FLOW_HASH_SEED, flow_hash, slot},
    stats::{STAT_DROP_FLOW_TABLE, STAT_DROP_NO_BACKEND, STAT_NEW_FLOW},
};

use crate::{
    maps::{BACKENDS, FLOWS, TABLES},
    stats::count,
};

/// The request-direction entry of the flow `key` to service `svc`: the existing one, or a
/// new one (both directions recorded) for a backend taken from the service's table.
/// `Err(stat)` names the counter of the reason the packet is dropped.
#[inline(always)]
pub fn backend_for(key: &FlowKey, svc: &ServiceValue, len: u64) -> Result<FlowValue, u32> {
    // SAFETY: the value is copied out at once; the LRU may evict it afterwards.
    if let Some(v) = unsafe { FLOWS.get(key) }
        && v.direction == DIR_REQUEST
    {
        return Ok(*v);
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
        _pad: 0,
        backend: index,
        service: svc.id,
        _pad2: 0,
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
pub fn reply_for(key: &FlowKey) -> Option<FlowValue> {
    // SAFETY: copied out at once.
    match unsafe { FLOWS.get(key) } {
        Some(v) if v.direction == DIR_REPLY => Some(*v),
        _ => None,
    }
}

//! Backend selection: the connection table first, then the service's backend table.

use core::ptr::{read_volatile, write_volatile};

use lb_common::{
    AFFINITY_CLIENT_IP, Addr, Backend, DIR_REPLY, DIR_REQUEST, FORWARD_NAT, FlowKey, FlowValue,
    NO_BACKEND, ServiceValue,
    conntrack::{close_flags, is_rst, is_syn},
    hash::{FLOW_HASH_SEED, flow_hash, slot},
    stats::{STAT_DROP_FLOW_TABLE, STAT_DROP_NO_BACKEND, STAT_NEW_FLOW, STAT_NEW_FLOW_CAPPED},
};

use crate::{
    clock,
    maps::{AFFINITY, BACKENDS, CONFIG, Scratch, TABLES, flow_insert, flow_ptr, scratch},
    stats::{count, count_backend},
};

/// Entries' last-seen times are rewritten at most this often (ns), so a busy flow does
/// not dirty its entry's cache line on every packet.
const TOUCH_NS: u64 = 1_000_000_000;

// `new_flow` writes the affinity key's family and padding as one word.
const _: () = assert!(core::mem::offset_of!(lb_common::AffinityKey, family) % 4 == 0);

/// Copies an address word by word: assignments of addresses became calls to a `memmove`
/// subprogram, one more frame in the deepest call chain.
#[inline(always)]
fn copy_addr(to: &mut Addr, from: &Addr) {
    let mut i = 0;
    while i < 4 {
        // SAFETY: word `i` of two addresses.
        unsafe { write_volatile(&raw mut to.words[i], read_volatile(&from.words[i])) };
        i += 1;
    }
}

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

/// The entry of a packet of a known flow, either direction, refreshed: `None` when the
/// table has none, or when a SYN meets a closed flow's request entry (a new flow, which
/// the services map must give a backend).
#[inline(always)]
pub fn known<const V6: bool>(key: &FlowKey, tcp_flags: u8) -> Option<&'static FlowValue> {
    let v = flow_ptr::<V6>(key)?;
    // SAFETY: a live map value; concurrent writers only set bits and times.
    let v = unsafe { &mut *v };
    if v.direction == DIR_REQUEST && v.flags != 0 && is_syn(tcp_flags) {
        return None;
    }
    touch(v, tcp_flags, clock::now());
    Some(v)
}

/// A new flow `key` to service `svc`: both directions recorded for a backend taken from
/// the service's table (or, with `client-ip` affinity, the client's last backend while it
/// holds); the request-direction entry is returned.
/// `Err(stat)` names the counter of the reason the packet is dropped.
#[inline(always)]
pub fn new_flow<const V6: bool>(
    key: &FlowKey,
    svc: &ServiceValue,
    tcp_flags: u8,
    len: u64,
) -> Result<&'static FlowValue, u32> {
    let now = clock::now();
    if svc.table_size == 0 {
        return Err(STAT_DROP_NO_BACKEND);
    }
    let Some(sc) = scratch() else {
        return Err(STAT_DROP_FLOW_TABLE);
    };
    // The slot of the table (from its start) the flow's backend is taken from: the one
    // its hash picks, unless the client has a live affinity entry for the service.
    let mut rel = slot(flow_hash(key, FLOW_HASH_SEED), svc.table_size);
    let affinity = svc.affinity == AFFINITY_CLIENT_IP;
    if affinity {
        let ak = &mut sc.affinity_key;
        copy_addr(&mut ak.client, &key.src);
        ak.service = svc.id;
        ak.family = key.family;
        // The family and the padding as one aligned word (a 3-byte array store at an odd
        // offset became a call to a `memset` subprogram).
        // SAFETY: bytes 20..24 of the key, 4-aligned (asserted below).
        unsafe { *(&raw mut ak.family as *mut u32) = u32::from_ne_bytes([key.family, 0, 0, 0]) };
        if let Some(a) = AFFINITY.get_ptr(ak) {
            // SAFETY: a live map value, read once field by field.
            let a = unsafe { &*a };
            // The entry holds only while its slot still names its backend in the live
            // table (see `AffinityValue`): one array read, no search of the table.
            if a.fresh(now, svc.affinity_timeout_s)
                && a.slot < svc.table_size
                && TABLES.get(svc.table_offset + a.slot) == Some(&a.backend)
            {
                rel = a.slot;
            }
        }
    }
    let index = match TABLES.get(svc.table_offset + rel) {
        Some(&i) if i != NO_BACKEND => i,
        _ => return Err(STAT_DROP_NO_BACKEND),
    };
    let Some(b) = BACKENDS.get(index) else {
        return Err(STAT_DROP_NO_BACKEND);
    };
    // Field by field: struct literals would be built on the stack and then copied.
    let r = &mut sc.request;
    copy_addr(&mut r.nat_addr, &b.addr);
    r.nat_port_be = b.port_be;
    r.direction = DIR_REQUEST;
    r.flags = close_flags(tcp_flags);
    r.backend = index;
    r.service = svc.id;
    r.forwarding = svc.forwarding;
    r.last_seen_ns = now;
    // Katran's miss rules: an RST of no known flow makes no entry, nor does a new flow
    // over this CPU's insert cap (so a SYN flood cannot flush the table); both go where
    // the table sends them.
    if is_rst(tcp_flags) {
        return Ok(&sc.request);
    }
    let cap = CONFIG.get(0).map_or(0, |c| c.new_flow_cap);
    if !sc.insert_budget.take(now, cap) {
        count(STAT_NEW_FLOW_CAPPED, len);
        return Ok(&sc.request);
    }
    if svc.forwarding != FORWARD_NAT {
        // Direct server return: the backend answers the client itself, so only the
        // request direction passes here.
        if flow_insert::<V6>(key, &sc.request).is_err() {
            return Err(STAT_DROP_FLOW_TABLE);
        }
    } else if !insert_both::<V6>(key, b, sc) {
        return Err(STAT_DROP_FLOW_TABLE);
    }
    if affinity {
        // Every new flow renews the entry: the timeout counts from the client's last
        // new flow (kube-proxy's `ClientIP`). A failed write only loses the affinity.
        let a = &mut sc.affinity;
        a.backend = index;
        a.slot = rel;
        a.last_seen_ns = now;
        let _ = AFFINITY.insert(&sc.affinity_key, &sc.affinity, 0);
    }
    count(STAT_NEW_FLOW, len);
    count_backend(lb_common::NEW_FLOWS_BASE + index, len);
    Ok(&sc.request)
}

/// A NAT flow's two entries: the reply direction (the backend's answers, translated back
/// to the VIP) built from the request entry in the scratch area, then the request
/// direction. `false`: the table took neither or only the reply entry.
#[inline(always)]
fn insert_both<const V6: bool>(key: &FlowKey, b: &Backend, sc: &mut Scratch) -> bool {
    let k = &mut sc.reply_key;
    copy_addr(&mut k.src, &b.addr);
    copy_addr(&mut k.dst, &key.src);
    k.src_port_be = b.port_be;
    k.dst_port_be = key.src_port_be;
    k.proto = key.proto;
    k.family = key.family;
    k._pad = [0; 2];
    // The same entry with the VIP as its NAT target (a copy between map values, not
    // through the stack).
    sc.reply = sc.request;
    copy_addr(&mut sc.reply.nat_addr, &key.dst);
    sc.reply.nat_port_be = key.dst_port_be;
    sc.reply.direction = DIR_REPLY;
    // The reply entry first: a request entry without it would forward packets whose
    // answers could not be translated back.
    flow_insert::<V6>(&sc.reply_key, &sc.reply).is_ok()
        && flow_insert::<V6>(key, &sc.request).is_ok()
}

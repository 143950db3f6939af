//! This CPU's cache of the FIB's answer (egress device, MACs, MTU) per destination, so a
//! packet of an established flow does not call `bpf_fib_lookup` each time: per backend
//! index for requests (`FIB_CACHE`, an array), per client address for replies
//! (`REPLY_FIB`, an LRU hash). An answer is used for at most `FIB_CACHE_TTL_NS` and only
//! under the generation userspace last set (it bumps it when a backend index gets a new
//! address); see `lb_common::FibCacheEntry`.

use aya_ebpf::bindings::bpf_fib_lookup;
use lb_common::{FibCacheEntry, FlowKey, NO_BACKEND};

use crate::{
    clock,
    forward::copy_mac,
    maps::{CONFIG, FIB_CACHE, REPLY_FIB, scratch},
};

/// `forward`'s target for a reply: the answer is cached by the packet's destination (the
/// client). Backend indexes are below `MAX_BACKENDS`, so neither this nor `NO_BACKEND`
/// (not cached: ICMP errors, fragments of replies) is one.
pub const TO_CLIENT: u32 = NO_BACKEND - 1;

#[inline(always)]
fn generation() -> u32 {
    CONFIG.get(0).map_or(0, |c| c.fib_generation)
}

/// The `REPLY_FIB` key of a reply's destination, written into the scratch area.
#[inline(always)]
fn client_key(key: &FlowKey) -> Option<&'static lb_common::FibKey> {
    let sc = scratch()?;
    let k = &mut sc.fib_key;
    let mut i = 0;
    while i < 4 {
        k.addr.words[i] = key.dst.words[i];
        i += 1;
    }
    // The family and the padding as one aligned word (a 3-byte array store at an odd
    // offset becomes a `memset` call).
    // SAFETY: bytes 16..20 of the key, 4-aligned (asserted below).
    unsafe { *(&raw mut k.family as *mut u32) = u32::from_ne_bytes([key.family, 0, 0, 0]) };
    Some(&sc.fib_key)
}

const _: () = assert!(core::mem::offset_of!(lb_common::FibKey, family) % 4 == 0);

/// The usable answer for a packet of `ip_len` bytes (flow `key`) to `target`: a backend
/// index, `TO_CLIENT`, or `NO_BACKEND` (never cached).
#[inline(always)]
pub fn get(target: u32, key: &FlowKey, ip_len: u16) -> Option<&'static FibCacheEntry> {
    let e = if target == TO_CLIENT {
        // SAFETY: this CPU's value, valid until the program returns.
        unsafe { REPLY_FIB.get(client_key(key)?)? }
    } else if target != NO_BACKEND {
        FIB_CACHE.get(target)?
    } else {
        return None;
    };
    e.usable(generation(), clock::now(), ip_len).then_some(e)
}

/// `e` as the FIB's answer `fib` (a successful lookup), given now.
#[inline(always)]
fn fill(e: &mut FibCacheEntry, fib: &bpf_fib_lookup) {
    e.at_ns = clock::now();
    e.generation = generation();
    e.ifindex = fib.ifindex;
    // SAFETY: a successful lookup sets `mtu_result` (the union's output side).
    e.mtu = unsafe { fib.__bindgen_anon_1.mtu_result };
    copy_mac(&raw mut e.smac, &fib.smac);
    copy_mac(&raw mut e.dmac, &fib.dmac);
}

/// Records the FIB's answer `fib` (a successful lookup) for `target` (see [`get`]).
#[inline(always)]
pub fn put(target: u32, key: &FlowKey, fib: &bpf_fib_lookup) {
    if target == TO_CLIENT {
        let Some(k) = client_key(key) else { return };
        let Some(sc) = scratch() else { return };
        fill(&mut sc.fib_entry, fib);
        // A full map evicts its least recently used client; a failure only costs the
        // next reply a FIB lookup.
        let _ = REPLY_FIB.insert(k, &sc.fib_entry, 0);
    } else if target != NO_BACKEND {
        let Some(e) = FIB_CACHE.get_ptr_mut(target) else {
            return;
        };
        // SAFETY: this CPU's slot, which only this program run writes meanwhile.
        fill(unsafe { &mut *e }, fib);
    }
}

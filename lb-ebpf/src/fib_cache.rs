//! This CPU's cache of the FIB's answer per backend (egress device, MACs, MTU), so a
//! packet to a backend does not call `bpf_fib_lookup` each time. An answer is used for at
//! most `FIB_CACHE_TTL_NS` and only under the generation userspace last set (it bumps it
//! when a backend index gets a new address); see `lb_common::FibCacheEntry`.

use aya_ebpf::bindings::bpf_fib_lookup;
use lb_common::{FibCacheEntry, NO_BACKEND};

use crate::{
    clock,
    forward::copy_mac,
    maps::{CONFIG, FIB_CACHE},
};

#[inline(always)]
fn generation() -> u32 {
    CONFIG.get(0).map_or(0, |c| c.fib_generation)
}

/// The usable answer for packets of `ip_len` bytes to backend `backend` (`NO_BACKEND`:
/// not a packet to a backend, never cached).
#[inline(always)]
pub fn get(backend: u32, ip_len: u16) -> Option<&'static FibCacheEntry> {
    if backend == NO_BACKEND {
        return None;
    }
    let e = FIB_CACHE.get(backend)?;
    e.usable(generation(), clock::now(), ip_len).then_some(e)
}

/// Records the FIB's answer `fib` (a successful lookup) for backend `backend`.
#[inline(always)]
pub fn put(backend: u32, fib: &bpf_fib_lookup) {
    if backend == NO_BACKEND {
        return;
    }
    let Some(e) = FIB_CACHE.get_ptr_mut(backend) else {
        return;
    };
    // SAFETY: this CPU's slot, which only this program run writes meanwhile.
    let e = unsafe { &mut *e };
    e.at_ns = clock::now();
    e.generation = generation();
    e.ifindex = fib.ifindex;
    // SAFETY: a successful lookup sets `mtu_result` (the union's output side).
    e.mtu = unsafe { fib.__bindgen_anon_1.mtu_result };
    copy_mac(&raw mut e.smac, &fib.smac);
    copy_mac(&raw mut e.dmac, &fib.dmac);
}

//! Counting: a per-CPU slot each, so no atomics on the fast path.

use lb_common::stats::Counter;

use crate::maps::{BACKEND_STATS, STATS};

#[inline(always)]
fn bump(slot: Option<*mut Counter>, bytes: u64) {
    if let Some(c) = slot {
        // SAFETY: a per-CPU array slot, only this CPU writes it while the program runs.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += bytes;
        }
    }
}

/// Counts one packet of `bytes` under the global counter `stat`.
#[inline(always)]
pub fn count(stat: u32, bytes: u64) {
    bump(STATS.get_ptr_mut(stat), bytes);
}

/// Counts one packet of `bytes` forwarded to backend `index`.
#[inline(always)]
pub fn count_backend(index: u32, bytes: u64) {
    bump(BACKEND_STATS.get_ptr_mut(index), bytes);
}

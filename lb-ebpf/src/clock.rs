//! The data path's clock: `CLOCK_MONOTONIC` in ns, the unit userspace's expiry arithmetic
//! (`lb_common::conntrack`) reads, but not a `bpf_ktime_get_ns` call per packet.
//!
//! `bpf_jiffies64` is inlined by the verifier into one load; the ns time is read again
//! only when the jiffy changed since this CPU last read it, so a time handed out is at
//! most one jiffy (1 to 10 ms) old. Entries' times are kept to within a second anyway
//! (see `select::TOUCH_NS`); a time a jiffy early makes an entry expire at most a jiffy
//! sooner. (Jiffies are global and advance on an idle CPU too, so the cache is never
//! older than a jiffy, however rarely this CPU sees packets.) Two CPUs' times may differ by
//! up to a jiffy either way, so a time another CPU wrote into a shared entry can be ahead
//! of this CPU's: comparisons allow for it (`lb_common::CLOCK_SKEW_NS`).

use aya_ebpf::helpers::{bpf_jiffies64, bpf_ktime_get_ns};

use crate::maps::scratch;

/// The monotonic time in ns, to within a jiffy.
#[inline(always)]
pub fn now() -> u64 {
    // SAFETY: clock reads, no preconditions.
    let jiffies = unsafe { bpf_jiffies64() };
    let Some(sc) = scratch() else {
        // SAFETY: as above.
        return unsafe { bpf_ktime_get_ns() };
    };
    if sc.clock_jiffies != jiffies {
        sc.clock_jiffies = jiffies;
        // SAFETY: as above.
        sc.clock_ns = unsafe { bpf_ktime_get_ns() };
    }
    sc.clock_ns
}

//! Sending a rewritten packet on: the kernel's FIB (or this CPU's cache of its answer, see
//! `fib_cache`) gives the egress interface and the next hop's MAC; the frame leaves by XDP_TX (same interface) or a redirect through the
//! `EGRESS` devmap. When the FIB has no answer (no neighbour entry yet, no route), or its
//! egress device cannot take an XDP redirect (not in `EGRESS`: a bridge, say), the
//! rewritten packet is passed to the kernel, which routes it (and resolves the neighbour)
//! itself. Passed packets keep their MACs and TTL: the kernel only forwards a frame that
//! was sent to this host's MAC, and decrements the TTL itself.

use core::{
    mem::size_of,
    ptr::{read_volatile, write_volatile},
};

use aya_ebpf::{
    EbpfContext as _,
    bindings::{BPF_FIB_LKUP_RET_SUCCESS, bpf_fib_lookup, xdp_action},
    helpers::bpf_fib_lookup as fib_lookup,
    programs::XdpContext,
};
use lb_common::stats::{STAT_PASS_EGRESS, STAT_PASS_FIB, STAT_PASS_TTL};

use crate::{
    fib_cache,
    maps::{EGRESS, EGRESS_MISS, scratch},
    nat,
    parse::{self, Packet},
    stats::count,
};

const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;

/// Whether the packet may be forwarded here at all: a TTL or hop limit of 0 or 1 would
/// expire, so the kernel gets it untouched and answers as a router does.
#[inline(always)]
pub fn ttl_allows<const V6: bool>(p: &Packet) -> bool {
    if nat::ttl::<V6>(p) <= 1 {
        count(STAT_PASS_TTL, p.len);
        return false;
    }
    true
}

/// Copies a MAC address 16 bits at a time (aligned: see `parse::ne16`; the FIB block's
/// MACs sit at even offsets). An array assignment became a call to a `memmove`
/// subprogram: two calls per forwarded packet, and a frame more in the deepest call chain.
#[inline(always)]
pub fn copy_mac(to: *mut [u8; 6], from: &[u8; 6]) {
    let (to, from) = (to as *mut u16, from.as_ptr() as *const u16);
    let mut i = 0;
    while i < 3 {
        // SAFETY: halves of two 6-byte addresses; `to` lies in a checked Ethernet header.
        unsafe { write_volatile(to.add(i), read_volatile(from.add(i))) };
        i += 1;
    }
}

/// Forwards the (already rewritten) packet toward its new destination: by this CPU's
/// cached FIB answer for `target` (a backend index, `fib_cache::TO_CLIENT` for a reply,
/// `NO_BACKEND` for none) while it holds, else by the FIB.
// Its own BPF function: the FIB parameter block's frame is not added to the callers'.
#[inline(never)]
pub fn forward<const V6: bool>(ctx: &XdpContext, p: &Packet, target: u32) -> u32 {
    if p.tagged {
        // The egress of a tagged frame is a VLAN device the FIB does not give us here:
        // the kernel routes the rewritten packet.
        count(STAT_PASS_FIB, p.len);
        return xdp_action::XDP_PASS;
    }
    let ingress = ctx.ingress_ifindex() as u32;
    if let Some(c) = fib_cache::get(target, &p.key, p.ip_len) {
        return out::<V6>(p, ingress, c.ifindex, &c.smac, &c.dmac);
    }
    let Some(sc) = scratch() else {
        count(STAT_PASS_FIB, p.len);
        return xdp_action::XDP_PASS;
    };
    // Zeroed, then every input field is set.
    let fib = sc.fib_zeroed();
    fib.l4_protocol = p.key.proto;
    fib.__bindgen_anon_1.tot_len = p.ip_len;
    fib.ifindex = ingress;
    let (s, d) = parse::addr_offsets::<V6>();
    if V6 {
        fib.family = AF_INET6;
        fib.__bindgen_anon_3.ipv6_src = parse::addr::<V6>(p.ip, s).words;
        fib.__bindgen_anon_4.ipv6_dst = parse::addr::<V6>(p.ip, d).words;
    } else {
        fib.family = AF_INET;
        fib.__bindgen_anon_3.ipv4_src = parse::ne32(p.ip, s);
        fib.__bindgen_anon_4.ipv4_dst = parse::ne32(p.ip, d);
    }
    // SAFETY: `fib` is a valid, initialised parameter block of the size given.
    let rc = unsafe {
        fib_lookup(
            ctx.as_ptr(),
            fib as *mut bpf_fib_lookup,
            size_of::<bpf_fib_lookup>() as i32,
            0,
        )
    };
    if rc != BPF_FIB_LKUP_RET_SUCCESS as i64 {
        count(STAT_PASS_FIB, p.len);
        return xdp_action::XDP_PASS;
    }
    fib_cache::put(target, &p.key, fib);
    out::<V6>(p, ingress, fib.ifindex, &fib.smac, &fib.dmac)
}

/// Sends the packet out `egress` with these MACs: XDP_TX back out the ingress, else a
/// redirect (the kernel's forwarding when the device cannot take one).
#[inline(always)]
fn out<const V6: bool>(
    p: &Packet,
    ingress: u32,
    egress: u32,
    smac: &[u8; 6],
    dmac: &[u8; 6],
) -> u32 {
    let Some(action) = egress_action(ingress, egress) else {
        return kernel_egress(egress, p.len);
    };
    nat::decrement_ttl::<V6>(p);
    // SAFETY: the Ethernet header was bounds-checked by the parser.
    unsafe { set_macs(p.eth as *mut u8, smac, dmac) };
    action
}

/// The verdict that sends a frame out of `egress`: `XDP_TX` back out the ingress, else a
/// redirect through `EGRESS`; `None` when the device is not there (it cannot take one).
/// The helper only records the target; the frame leaves after the program returns, so
/// the MACs may still be rewritten after this.
#[inline(always)]
pub fn egress_action(ingress: u32, egress: u32) -> Option<u32> {
    if egress == ingress {
        return Some(xdp_action::XDP_TX);
    }
    EGRESS.redirect(egress, xdp_action::XDP_PASS as u64).ok()
}

/// Writes `smac` and `dmac` into the Ethernet header at `eth`.
///
/// # Safety
/// `eth` points to the 12 writable, 2-byte aligned MAC bytes of a checked frame.
#[inline(always)]
pub unsafe fn set_macs(eth: *mut u8, smac: &[u8; 6], dmac: &[u8; 6]) {
    copy_mac(eth as *mut [u8; 6], dmac);
    // SAFETY: bytes 6..12 of the same header (the caller's promise).
    copy_mac(unsafe { eth.add(6) } as *mut [u8; 6], smac);
}

/// The FIB's egress cannot take a redirect: the kernel forwards the (rewritten) packet.
/// Counted, and the device recorded for the daemon to report.
// Inlined: as a function of its own it made the chain xlb -> parse_l4 ->
// later_fragment -> forward -> kernel_egress 512 bytes as Linux 6.1 counts it.
#[inline(always)]
fn kernel_egress(ifindex: u32, len: u64) -> u32 {
    count(STAT_PASS_EGRESS, len);
    match EGRESS_MISS.get_ptr_mut(&ifindex) {
        // SAFETY: a map value; a lost increment between CPUs only undercounts a report.
        Some(n) => unsafe { *n += 1 },
        None => {
            let _ = EGRESS_MISS.insert(&ifindex, &1, 0);
        }
    }
    xdp_action::XDP_PASS
}

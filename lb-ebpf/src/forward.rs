//! Sending a rewritten packet on: the kernel's FIB gives the egress interface and the
//! next hop's MAC; the frame leaves by XDP_TX (same interface) or bpf_redirect.
//! When the FIB has no answer (no neighbour entry yet, no route) the rewritten packet is
//! passed to the kernel, which routes it (and resolves the neighbour) itself.

use core::mem::{size_of, zeroed};

use aya_ebpf::{
    EbpfContext as _,
    bindings::{BPF_FIB_LKUP_RET_SUCCESS, bpf_fib_lookup, xdp_action},
    helpers::{bpf_fib_lookup as fib_lookup, bpf_redirect},
    programs::XdpContext,
};
use lb_common::stats::{STAT_PASS_FIB, STAT_PASS_TTL};

use crate::{nat, parse::Packet, stats::count};

const AF_INET: u8 = 2;

/// Whether the packet may be forwarded here at all: a TTL of 0 or 1 would expire, so the
/// kernel gets it untouched and answers as a router does.
#[inline(always)]
pub fn ttl_allows(p: &Packet) -> bool {
    if nat::ttl(p) <= 1 {
        count(STAT_PASS_TTL, p.len);
        return false;
    }
    true
}

/// Forwards the (already rewritten) packet toward its new destination.
#[inline(always)]
pub fn forward(ctx: &XdpContext, p: &Packet) -> u32 {
    if p.tagged {
        // The egress of a tagged frame is a VLAN device the FIB does not give us here:
        // the kernel routes the rewritten packet.
        count(STAT_PASS_FIB, p.len);
        return xdp_action::XDP_PASS;
    }
    // SAFETY: plain-old-data struct for the helper; every field the helper reads is set.
    let mut fib: bpf_fib_lookup = unsafe { zeroed() };
    let ingress = ctx.ingress_ifindex() as u32;
    unsafe {
        fib.family = AF_INET;
        fib.l4_protocol = p.key.proto;
        fib.sport = 0;
        fib.dport = 0;
        fib.__bindgen_anon_1.tot_len = u16::from_be_bytes((*p.ip).tot_len);
        fib.ifindex = ingress;
        fib.__bindgen_anon_3.ipv4_src = u32::from_ne_bytes((*p.ip).src_addr);
        fib.__bindgen_anon_4.ipv4_dst = u32::from_ne_bytes((*p.ip).dst_addr);
    }
    let rc = unsafe {
        fib_lookup(
            ctx.as_ptr(),
            &mut fib,
            size_of::<bpf_fib_lookup>() as i32,
            0,
        )
    };
    if rc != BPF_FIB_LKUP_RET_SUCCESS as i64 {
        count(STAT_PASS_FIB, p.len);
        return xdp_action::XDP_PASS;
    }
    nat::decrement_ttl(p);
    // SAFETY: the Ethernet header was bounds-checked by the parser.
    unsafe {
        (*p.eth).src_addr = fib.smac;
        (*p.eth).dst_addr = fib.dmac;
    }
    if fib.ifindex == ingress {
        return xdp_action::XDP_TX;
    }
    // SAFETY: a plain helper call; it returns an XDP action.
    unsafe { bpf_redirect(fib.ifindex, 0) as u32 }
}

//! The backends' side of `dsr-ipip`: an XDP program (`xlb_decap`) that strips the outer
//! header of IPv4-in-IPv4 and IPv6-in-IPv6 packets and hands the inner packet to the
//! stack, as the kernel's ipip/ip6_tunnel modules would (this kernel has neither; Katran
//! ships the same kind of program). The rule is `encap::decap_v4`/`decap_v6`: a whole
//! inner packet that exactly fills the outer payload is stripped; a fragment of a
//! tunnelled packet, and everything that is not IPIP/IPv6-in-IPv6 (or is VLAN-tagged),
//! passes untouched; an encapsulated packet whose headers disagree is dropped, never
//! handed on corrupted. Any outer destination is accepted: the program runs on the
//! backend's own interface.

use aya_ebpf::{
    bindings::xdp_action,
    helpers::bpf_xdp_adjust_head,
    macros::{map, xdp},
    maps::PerCpuArray,
    programs::XdpContext,
};
use lb_common::{
    DECAP_STAT_COUNT, DECAP_STAT_DROP_MALFORMED, DECAP_STAT_PASS, DECAP_STAT_RX,
    DECAP_STAT_STRIPPED,
    encap::{self, Decap, PROTO_IPIP, PROTO_IPV6},
    stats::Counter,
};

use crate::parse::{self, be16, byte, ne16, ptr_at};

/// Counters of the decapsulation program, by `DECAP_STAT_*`.
#[map]
pub static DECAP_STATS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(DECAP_STAT_COUNT, 0);

const ETH_HLEN: usize = 14;

#[xdp]
pub fn xlb_decap(ctx: XdpContext) -> u32 {
    let len = (ctx.data_end() - ctx.data()) as u64;
    bump(DECAP_STAT_RX, len);
    let (stat, action) = match try_decap(&ctx) {
        Decap::Strip => (DECAP_STAT_STRIPPED, xdp_action::XDP_PASS),
        Decap::Pass => (DECAP_STAT_PASS, xdp_action::XDP_PASS),
        Decap::Malformed => (DECAP_STAT_DROP_MALFORMED, xdp_action::XDP_DROP),
    };
    bump(stat, len);
    action
}

#[inline(always)]
fn bump(stat: u32, bytes: u64) {
    if let Some(c) = DECAP_STATS.get_ptr_mut(stat) {
        // SAFETY: a per-CPU slot only this CPU writes while the program runs.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += bytes;
        }
    }
}

#[inline(always)]
fn try_decap(ctx: &XdpContext) -> Decap {
    let Ok(eth) = ptr_at::<[u8; ETH_HLEN]>(ctx, 0) else {
        return Decap::Pass;
    };
    let eth = eth as *const u8;
    let avail = (ctx.data_end() - ctx.data() - ETH_HLEN) as u32;
    let ether_type = be16(eth, 12);
    let strip = if ether_type == parse::ETH_IPV4 {
        let Ok(ip) = ptr_at::<[u8; 20]>(ctx, ETH_HLEN) else {
            return Decap::Pass;
        };
        let ip = ip as *const u8;
        let vihl = byte(ip, 0);
        if vihl >> 4 != 4 || byte(ip, 9) != PROTO_IPIP {
            return Decap::Pass;
        }
        let ihl = ((vihl & 0x0f) as usize) << 2;
        // The inner header's first 4 bytes: version and total length.
        let (inner_vihl, inner_len) = match ptr_at::<[u8; 20]>(ctx, ETH_HLEN + ihl) {
            Ok(inner) => (byte(inner as *const u8, 0), be16(inner as *const u8, 2)),
            Err(_) => (0, 0),
        };
        let d = encap::decap_v4(
            ihl as u32,
            be16(ip, 2) as u32,
            be16(ip, 6),
            avail,
            inner_vihl,
            inner_len as u32,
        );
        if d != Decap::Strip {
            return d;
        }
        ihl
    } else if ether_type == parse::ETH_IPV6 {
        let Ok(ip) = ptr_at::<[u8; 40]>(ctx, ETH_HLEN) else {
            return Decap::Pass;
        };
        let ip = ip as *const u8;
        if byte(ip, 0) >> 4 != 6 || byte(ip, 6) != PROTO_IPV6 {
            return Decap::Pass;
        }
        let (inner_v, inner_payload) = match ptr_at::<[u8; 40]>(ctx, ETH_HLEN + 40) {
            Ok(inner) => (byte(inner as *const u8, 0), be16(inner as *const u8, 4)),
            Err(_) => (0, 0),
        };
        let d = encap::decap_v6(be16(ip, 4) as u32, avail, inner_v, inner_payload as u32);
        if d != Decap::Strip {
            return d;
        }
        40
    } else {
        return Decap::Pass;
    };
    let macs = [
        ne16(eth, 0),
        ne16(eth, 2),
        ne16(eth, 4),
        ne16(eth, 6),
        ne16(eth, 8),
        ne16(eth, 10),
        ne16(eth, 12),
    ];
    // SAFETY: shrinks the headroom side; packet pointers are re-derived below.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, strip as i32) } != 0 {
        return Decap::Malformed;
    }
    let Ok(eth) = ptr_at::<[u8; ETH_HLEN]>(ctx, 0) else {
        return Decap::Malformed;
    };
    let e = eth as *mut u16;
    let mut i = 0;
    while i < 7 {
        // SAFETY: the 14 checked bytes of the new Ethernet header.
        unsafe { *e.add(i) = macs[i] };
        i += 1;
    }
    Decap::Strip
}

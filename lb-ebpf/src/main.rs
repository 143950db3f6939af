//! xlb's XDP data path: packets to a virtual service are DNATed to a backend chosen by
//! flow hash (and kept there by the connection table); replies from backends are SNATed
//! back to the VIP; later fragments follow their datagram's first fragment; ICMP errors
//! about balanced flows are translated; everything else passes untouched.
//!
//! Stack: the verifier adds up the frames of every chain of BPF-to-BPF calls against 512
//! bytes, and Linux 6.1 (the oldest kernel xlb supports) rounds each frame up to 32 bytes
//! and counts an empty one as 32, so every `#[inline(never)]` function, and every call to
//! a `memset`/`memmove` subprogram that LLVM emits for a struct or array copy, costs at
//! least 32. `lb-userspace/tests/stack_depth.rs` checks the built object against that rule.
#![no_std]
#![no_main]

mod clock;
mod decap;
mod dsr;
mod fib_cache;
mod forward;
mod frag;
mod icmp;
mod limit;
mod maps;
mod nat;
mod parse;
mod select;
mod stats;
mod yardstick;

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use lb_common::{
    DIR_REPLY, DIR_REQUEST, FORWARD_NAT, FlowKey, FlowValue, NO_BACKEND, ServiceValue,
    stats::{
        STAT_FORWARD, STAT_FRAGMENT, STAT_ICMP_ERROR, STAT_PASS_EXTHDR, STAT_PASS_FRAGMENT,
        STAT_PASS_MALFORMED, STAT_PASS_OTHER, STAT_REPLY,
    },
};

use crate::{
    icmp::IcmpError,
    maps::{SERVICES, flow_ptr, scratch},
    nat::End,
    parse::{Frag, Packet, Skip},
    stats::{count, count_backend},
};

#[xdp]
pub fn xlb(ctx: XdpContext) -> u32 {
    try_xlb(&ctx)
}

#[inline(always)]
fn try_xlb(ctx: &XdpContext) -> u32 {
    // The upgrade test's variant build (see Cargo.toml): never true for a real frame.
    #[cfg(feature = "upgrade-variant")]
    if ctx.data_end() - ctx.data() > 1 << 20 {
        return xdp_action::XDP_PASS;
    }
    match parse::link(ctx) {
        Ok((parse::ETH_IPV4, base)) => handle::<false>(ctx, &base),
        Ok((parse::ETH_IPV6, base)) => handle::<true>(ctx, &base),
        Ok(_) => skipped(ctx, Skip::Other),
        Err(skip) => skipped(ctx, skip),
    }
}

/// Every function below is generic over the address family (`V6`), fixed where the
/// EtherType is read, so the verifier never has to follow a family read back at run time.
/// One BPF function per family, so the two families' frames are not added together.
#[inline(always)]
fn handle<const V6: bool>(ctx: &XdpContext, base: &parse::Base) -> u32 {
    parse::ip::<V6>(ctx, base)
}

/// Not balanced: counted by reason and passed untouched.
#[inline(always)]
pub(crate) fn skipped(ctx: &XdpContext, skip: Skip) -> u32 {
    let stat = match skip {
        Skip::Other => STAT_PASS_OTHER,
        Skip::Malformed => STAT_PASS_MALFORMED,
        Skip::ExtHdr => STAT_PASS_EXTHDR,
    };
    count(stat, (ctx.data_end() - ctx.data()) as u64);
    xdp_action::XDP_PASS
}

/// A TCP or UDP packet: a packet of a known flow (either direction), a new flow to a
/// service, a later fragment of a balanced datagram, or none of these (passed).
///
/// The connection table is looked up first, so an established flow or a reply costs one
/// hash lookup; only a miss (or a SYN on a closed flow, which starts a new flow) looks the
/// services map up.
#[inline(always)]
pub(crate) fn flow<const V6: bool>(ctx: &XdpContext, p: &Packet) -> u32 {
    if p.frag == Frag::Later {
        return later_fragment::<V6>(ctx, p);
    }
    if let Some(flow) = select::known::<V6>(&p.key, p.tcp_flags) {
        if flow.forwarding != FORWARD_NAT {
            return dsr::send::<V6>(ctx, p, flow);
        }
        if !forward::ttl_allows::<V6>(p) {
            return xdp_action::XDP_PASS;
        }
        if flow.direction == DIR_REPLY {
            return send::<V6>(ctx, p, End::Source, flow, STAT_REPLY);
        }
        count_backend(flow.backend, p.len);
        return send::<V6>(ctx, p, End::Destination, flow, STAT_FORWARD);
    }
    let Some(sc) = scratch() else {
        return xdp_action::XDP_PASS;
    };
    let k = &mut sc.service_key;
    k.vip = p.key.dst;
    k.port_be = p.key.dst_port_be;
    k.proto = p.key.proto;
    k.family = p.key.family;
    // SAFETY: a map value, valid until the program returns.
    if let Some(svc) = unsafe { SERVICES.get(&sc.service_key) } {
        return request::<V6>(ctx, p, svc);
    }
    count(STAT_PASS_OTHER, p.len);
    xdp_action::XDP_PASS
}

/// The first packet of a flow to a service: to the backend its table gives.
#[inline(always)]
fn request<const V6: bool>(ctx: &XdpContext, p: &Packet, svc: &ServiceValue) -> u32 {
    if svc.forwarding != FORWARD_NAT {
        return dsr::request::<V6>(ctx, p, svc);
    }
    if !forward::ttl_allows::<V6>(p) {
        return xdp_action::XDP_PASS;
    }
    let stat = new_flow::<V6>(&p.key, svc, p.tcp_flags, p.len);
    if stat != NEW_FLOW_OK {
        count(stat, p.len);
        return xdp_action::XDP_DROP;
    }
    let Some(sc) = scratch() else {
        return xdp_action::XDP_PASS;
    };
    count_backend(sc.request.backend, p.len);
    send::<V6>(ctx, p, End::Destination, &sc.request, STAT_FORWARD)
}

/// `new_flow`'s answer when the flow has its backend (in the scratch area's `request`).
pub(crate) const NEW_FLOW_OK: u32 = u32::MAX;

/// `select::new_flow` as a BPF function of its own: the new-flow path's temporaries stay
/// out of `parse::parse_l4`'s frame, which every packet's call chain carries (inlined,
/// they made the chain xlb -> parse_l4 -> later_fragment -> forward -> kernel_egress 544
/// bytes as Linux 6.1 counts it). Returns `NEW_FLOW_OK` or the counter of the drop.
#[inline(never)]
pub(crate) fn new_flow<const V6: bool>(
    key: &FlowKey,
    svc: &ServiceValue,
    tcp_flags: u8,
    len: u64,
) -> u32 {
    match select::new_flow::<V6>(key, svc, tcp_flags, len) {
        Ok(_) => NEW_FLOW_OK,
        Err(stat) => stat,
    }
}

/// Rewrites `end` to the flow's NAT address and port, records a first fragment's
/// datagram, counts under `stat` and forwards.
#[inline(always)]
fn send<const V6: bool>(
    ctx: &XdpContext,
    p: &Packet,
    end: End,
    flow: &FlowValue,
    stat: u32,
) -> u32 {
    nat::rewrite::<V6>(p, end, &flow.nat_addr, flow.nat_port_be);
    if p.frag == Frag::First {
        frag::record(p, flow);
    }
    count(stat, p.len);
    // The FIB answer is cached per backend for requests, per client for replies.
    let target = if end == End::Destination {
        flow.backend
    } else {
        fib_cache::TO_CLIENT
    };
    forward::forward::<V6>(ctx, p, target)
}

/// A fragment without the L4 header: the rewrite its datagram's first fragment got.
// A function of its own (a BPF-to-BPF call): its stack frame is not added to the
// other paths'.
#[inline(never)]
fn later_fragment<const V6: bool>(ctx: &XdpContext, p: &Packet) -> u32 {
    let Some(f) = frag::lookup(p) else {
        count(STAT_PASS_FRAGMENT, p.len);
        return xdp_action::XDP_PASS;
    };
    if !forward::ttl_allows::<V6>(p) {
        return xdp_action::XDP_PASS;
    }
    let (end, backend) = if f.direction == DIR_REQUEST {
        count_backend(f.backend, p.len);
        (End::Destination, f.backend)
    } else {
        (End::Source, NO_BACKEND)
    };
    nat::set_addr::<V6>(p.ip, end, &f.nat_addr);
    count(STAT_FRAGMENT, p.len);
    forward::forward::<V6>(ctx, p, backend)
}

/// An ICMP error: translated to the flow it is about, or passed.
// Inlined into `icmp::parse`, its one caller (a BPF function of its own, whose frame no
// other path adds): a frame of its own here made the chain xlb -> icmp::parse ->
// icmp_error -> forward 544 bytes as Linux 6.1 counts it (each frame rounded up to 32),
// over the verifier's 512.
#[inline(always)]
pub(crate) fn icmp_error<const V6: bool>(ctx: &XdpContext, p: &Packet, e: &IcmpError) -> u32 {
    // SAFETY: a map value, valid until the program returns.
    let flow = scratch()
        .and_then(|sc| flow_ptr::<V6>(&sc.icmp_key))
        .map(|v| unsafe { &*v });
    // A DSR flow's entry is the request direction only, with nothing to translate back.
    let Some(flow) = flow.filter(|f| f.forwarding == FORWARD_NAT) else {
        count(STAT_PASS_OTHER, p.len);
        return xdp_action::XDP_PASS;
    };
    if !forward::ttl_allows::<V6>(p) {
        return xdp_action::XDP_PASS;
    }
    icmp::translate::<V6>(p, e, flow);
    count(STAT_ICMP_ERROR, p.len);
    forward::forward::<V6>(ctx, p, NO_BACKEND)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

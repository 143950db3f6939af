//! xlb's XDP data path: packets to a virtual service are DNATed to a backend chosen by
//! flow hash (and kept there by the connection table); replies from backends are SNATed
//! back to the VIP; everything else passes untouched.
#![no_std]
#![no_main]

mod forward;
mod limit;
mod maps;
mod nat;
mod parse;
mod select;
mod stats;

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use lb_common::{
    ServiceKey,
    stats::{STAT_FORWARD, STAT_PASS_MALFORMED, STAT_PASS_OTHER, STAT_REPLY, STAT_RX},
};

use crate::{
    maps::SERVICES,
    nat::End,
    parse::{Packet, Skip},
    stats::{count, count_backend},
};

#[xdp]
pub fn xlb(ctx: XdpContext) -> u32 {
    try_xlb(&ctx)
}

#[inline(always)]
fn try_xlb(ctx: &XdpContext) -> u32 {
    let p = match parse::parse(ctx) {
        Ok(p) => p,
        Err(skip) => {
            let stat = match skip {
                Skip::Other => STAT_PASS_OTHER,
                Skip::Malformed => STAT_PASS_MALFORMED,
            };
            let len = (ctx.data_end() - ctx.data()) as u64;
            count(STAT_RX, len);
            count(stat, len);
            return xdp_action::XDP_PASS;
        }
    };
    count(STAT_RX, p.len);
    let service = ServiceKey {
        vip: p.key.dst,
        port_be: p.key.dst_port_be,
        proto: p.key.proto,
        family: p.key.family,
    };
    // SAFETY: copied out at once.
    if let Some(svc) = unsafe { SERVICES.get(&service) }.copied() {
        return request(ctx, &p, &svc);
    }
    if let Some(flow) = select::reply_for(&p.key, p.tcp_flags) {
        if !forward::ttl_allows(&p) {
            return xdp_action::XDP_PASS;
        }
        nat::rewrite(&p, End::Source, &flow.nat_addr, flow.nat_port_be);
        count(STAT_REPLY, p.len);
        return forward::forward(ctx, &p);
    }
    count(STAT_PASS_OTHER, p.len);
    xdp_action::XDP_PASS
}

/// A packet addressed to a service: to its flow's backend.
#[inline(always)]
fn request(ctx: &XdpContext, p: &Packet, svc: &lb_common::ServiceValue) -> u32 {
    if !forward::ttl_allows(p) {
        return xdp_action::XDP_PASS;
    }
    let flow = match select::backend_for(&p.key, svc, p.tcp_flags, p.len) {
        Ok(flow) => flow,
        Err(stat) => {
            count(stat, p.len);
            return xdp_action::XDP_DROP;
        }
    };
    nat::rewrite(p, End::Destination, &flow.nat_addr, flow.nat_port_be);
    count(STAT_FORWARD, p.len);
    count_backend(flow.backend, p.len);
    forward::forward(ctx, p)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

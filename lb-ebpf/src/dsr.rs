//! Direct server return: requests to `dsr-l2` and `dsr-ipip` services. The backend holds
//! the VIP itself and answers the client directly, so only the request direction passes
//! here, and the connection table keeps that direction only.
//!
//! - `dsr-l2` (IPVS "DR"): the frame's destination MAC becomes the backend's (the FIB's
//!   neighbour for the backend's address); nothing of L3/L4 changes, not even the TTL.
//! - `dsr-ipip` (Katran): an outer IPv4 (IPv6) header to the backend is put in front of
//!   the IPv4 (IPv6) packet; its source is `encap::outer_source` of the flow hash within
//!   the `ENCAP` prefix. When the result would not fit the egress MTU (the FIB's check,
//!   given the encapsulated length), the client gets ICMP "fragmentation needed" (IPv4
//!   with DF) or "packet too big" (IPv6) from the VIP instead, as Katran answers.
//!
//! A flow without an entry takes the backend of the service's table at its hash, whatever
//! its TCP flags: another xlb node may have seen its SYN, and every node with the same
//! table picks the same backend. Fragments and VLAN-tagged frames are passed untouched.

use core::mem::size_of;

use aya_ebpf::{
    EbpfContext as _,
    bindings::{
        BPF_FIB_LKUP_RET_FRAG_NEEDED, BPF_FIB_LKUP_RET_SUCCESS, bpf_fib_lookup, xdp_action,
    },
    helpers::{bpf_fib_lookup as fib_lookup, bpf_xdp_adjust_head, bpf_xdp_adjust_tail},
    macros::map,
    maps::{Array, PerCpuArray},
    programs::XdpContext,
};
use lb_common::{
    Addr, EncapConfig, FORWARD_DSR_IPIP, FlowValue, ServiceValue,
    csum::fold,
    encap::{self, OUTER_V4, OUTER_V6, PROTO_ICMP, PROTO_ICMPV6, QUOTE_V4, QUOTE_V6},
    hash::{FLOW_HASH_SEED, flow_hash},
    stats::{STAT_DROP_DSR, STAT_FORWARD, STAT_ICMP_TOO_BIG, STAT_PASS_EGRESS, STAT_PASS_FRAGMENT},
};

use crate::{
    forward,
    maps::scratch,
    parse::{self, Frag, Packet, byte, ne16},
    stats::{count, count_backend},
};

/// How `dsr-ipip` picks outer source addresses (slot 0; written by the daemon).
#[map]
pub static ENCAP: Array<EncapConfig> = Array::with_max_entries(1, 0);

/// Room for this module's temporaries (the outer source, headers being built), off the
/// 512-byte BPF stack; one slot per CPU, as `maps::SCRATCH`.
#[repr(C)]
pub struct DsrScratch {
    /// The outer source of the packet being encapsulated, and its flow hash.
    src: Addr,
    hash: u32,
    /// The FIB's MTU for a packet that did not fit.
    mtu: u32,
    /// The frame's MACs, while the outer header is put in front.
    macs: [u16; 6],
}

#[map]
static DSR_SCRATCH: PerCpuArray<DsrScratch> = PerCpuArray::with_max_entries(1, 0);

const ETH_HLEN: usize = 14;
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;

/// The first packet of a flow to a DSR service (`svc.forwarding` is not NAT): a backend
/// from the service's table (`select::new_flow`, which records the request direction
/// only), then on as `send` sends it.
#[inline(always)]
pub fn request<const V6: bool>(ctx: &XdpContext, p: &Packet, svc: &ServiceValue) -> u32 {
    if p.frag != Frag::Whole || p.tagged {
        count(STAT_PASS_FRAGMENT, p.len);
        return xdp_action::XDP_PASS;
    }
    let stat = crate::new_flow::<V6>(&p.key, svc, p.tcp_flags, p.len);
    if stat != crate::NEW_FLOW_OK {
        count(stat, p.len);
        return xdp_action::XDP_DROP;
    }
    let Some(sc) = scratch() else {
        return xdp_action::XDP_PASS;
    };
    send::<V6>(ctx, p, &sc.request)
}

/// A request of a DSR flow `flow` (its entry: the backend and the mode) to its backend.
// Its own BPF function, and each step below one of its own called from here, so the
// deepest chain is this frame and one step's (the stack-depth rule of `main.rs`).
#[inline(never)]
pub fn send<const V6: bool>(ctx: &XdpContext, p: &Packet, flow: &FlowValue) -> u32 {
    if p.frag != Frag::Whole || p.tagged {
        count(STAT_PASS_FRAGMENT, p.len);
        return xdp_action::XDP_PASS;
    }
    if flow.forwarding != FORWARD_DSR_IPIP {
        return l2::<V6>(ctx, p, &flow.nat_addr, flow.backend);
    }
    match route::<V6>(ctx, p, &flow.nat_addr) {
        ROUTE_DROP => {
            count(STAT_DROP_DSR, p.len);
            xdp_action::XDP_DROP
        }
        ROUTE_TOO_BIG => too_big::<V6>(ctx, p),
        r => encapsulate::<V6>(ctx, p, &flow.nat_addr, flow.backend, r == ROUTE_OK),
    }
}

/// `dsr-l2`: the backend's MAC (the FIB's neighbour for its address) as the destination,
/// out of the FIB's egress. Without a neighbour entry (or route) the frame is dropped:
/// the kernel could not deliver a frame addressed to the VIP there either.
#[inline(never)]
fn l2<const V6: bool>(ctx: &XdpContext, p: &Packet, to: &Addr, backend: u32) -> u32 {
    let Some((rc, fib)) = lookup::<V6>(ctx, p, to, None, p.ip_len) else {
        count(STAT_DROP_DSR, p.len);
        return xdp_action::XDP_DROP;
    };
    let action = if rc == BPF_FIB_LKUP_RET_SUCCESS as i64 {
        egress(ctx, fib)
    } else {
        None
    };
    let Some(action) = action else {
        count(STAT_DROP_DSR, p.len);
        return xdp_action::XDP_DROP;
    };
    // SAFETY: the Ethernet header was bounds-checked by the parser.
    unsafe { set_macs(p.eth as *mut u8, fib) };
    count_backend(backend, p.len);
    count(STAT_FORWARD, p.len);
    action
}

/// The FIB's answer for a packet from `src` (absent: the packet's own source) to `to` of
/// `tot_len` bytes arriving on this interface: the helper's return code and the block.
#[inline(always)]
fn lookup<const V6: bool>(
    ctx: &XdpContext,
    p: &Packet,
    to: &Addr,
    src: Option<&Addr>,
    tot_len: u16,
) -> Option<(i64, &'static mut bpf_fib_lookup)> {
    let sc = scratch()?;
    let fib = sc.fib_zeroed();
    fib.l4_protocol = p.key.proto;
    fib.__bindgen_anon_1.tot_len = tot_len;
    fib.ifindex = ctx.ingress_ifindex() as u32;
    let from = match src {
        Some(a) => a,
        None => &p.key.src,
    };
    if V6 {
        fib.family = AF_INET6;
        let mut i = 0;
        while i < 4 {
            // SAFETY: writing plain words of the unions' IPv6 members (word by word: an
            // array assignment becomes a `memmove` call, a frame more in the chain).
            unsafe {
                fib.__bindgen_anon_3.ipv6_src[i] = from.words[i];
                fib.__bindgen_anon_4.ipv6_dst[i] = to.words[i];
            }
            i += 1;
        }
    } else {
        fib.family = AF_INET;
        fib.__bindgen_anon_3.ipv4_src = from.words[0];
        fib.__bindgen_anon_4.ipv4_dst = to.words[0];
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
    Some((rc, fib))
}

/// The verdict that sends the frame out of the FIB's egress (see `forward::egress_action`).
#[inline(always)]
fn egress(ctx: &XdpContext, fib: &bpf_fib_lookup) -> Option<u32> {
    forward::egress_action(ctx.ingress_ifindex() as u32, fib.ifindex)
}

/// Writes the FIB's MACs into the Ethernet header at `eth`.
///
/// # Safety
/// As `forward::set_macs`.
#[inline(always)]
unsafe fn set_macs(eth: *mut u8, fib: &bpf_fib_lookup) {
    // SAFETY: the caller's promise.
    unsafe { forward::set_macs(eth, &fib.smac, &fib.dmac) };
}

/// Writes 16-bit words at `at` (checked, 2-byte aligned).
#[inline(always)]
fn put(at: *mut u8, words: &[u16]) {
    let w = at as *mut u16;
    let mut i = 0;
    while i < words.len() {
        // SAFETY: callers bound-check `words.len() * 2` bytes from `at`.
        unsafe { *w.add(i) = words[i] };
        i += 1;
    }
}

/// `route`'s answers: the FIB found the backend's next hop (`ROUTE_OK`); it did not
/// (no neighbour entry yet, an egress outside `EGRESS`: the kernel forwards the
/// encapsulated packet, `ROUTE_KERNEL`); the packet would not fit (`ROUTE_TOO_BIG`, the
/// MTU in the scratch area); no answer possible (`ROUTE_DROP`).
const ROUTE_OK: u32 = 0;
const ROUTE_KERNEL: u32 = 1;
const ROUTE_TOO_BIG: u32 = 2;
const ROUTE_DROP: u32 = 3;

/// `dsr-ipip`, first step: the outer source (into the scratch area) and the FIB's answer
/// for the encapsulated packet (left in `maps::SCRATCH` for `encapsulate`).
#[inline(never)]
fn route<const V6: bool>(ctx: &XdpContext, p: &Packet, to: &Addr) -> u32 {
    let (Some(cfg), Some(ds)) = (ENCAP.get(0), DSR_SCRATCH.get_ptr_mut(0)) else {
        return ROUTE_DROP;
    };
    // SAFETY: per-CPU memory only this program run uses until it returns.
    let ds = unsafe { &mut *ds };
    let hash = flow_hash(&p.key, FLOW_HASH_SEED);
    ds.hash = hash;
    ds.src = if V6 {
        encap::outer_source(&cfg.src_v6, &cfg.host_mask_v6, hash)
    } else {
        encap::outer_source(&cfg.src_v4, &cfg.host_mask_v4, hash)
    };
    let outer = if V6 { OUTER_V6 } else { OUTER_V4 };
    let len = p.ip_len.saturating_add(outer);
    let Some((rc, fib)) = lookup::<V6>(ctx, p, to, Some(&ds.src), len) else {
        return ROUTE_DROP;
    };
    if rc == BPF_FIB_LKUP_RET_FRAG_NEEDED as i64 {
        // SAFETY: reading the union member the helper wrote for this answer.
        ds.mtu = unsafe { fib.__bindgen_anon_1.mtu_result } as u32;
        return ROUTE_TOO_BIG;
    }
    if rc == BPF_FIB_LKUP_RET_SUCCESS as i64 {
        ROUTE_OK
    } else {
        ROUTE_KERNEL
    }
}

/// `dsr-ipip`, second step: the outer header in front, and out (`routed`: by the FIB's
/// answer; else to the kernel with the frame's own MACs, which forwards it and resolves
/// the neighbour itself).
#[inline(never)]
fn encapsulate<const V6: bool>(
    ctx: &XdpContext,
    p: &Packet,
    to: &Addr,
    backend: u32,
    routed: bool,
) -> u32 {
    let (Some(ds), Some(sc)) = (DSR_SCRATCH.get_ptr_mut(0), scratch()) else {
        return xdp_action::XDP_DROP;
    };
    // SAFETY: per-CPU memory only this program run uses until it returns.
    let ds = unsafe { &mut *ds };
    let ip = p.ip;
    let tos = if V6 {
        (byte(ip, 0) << 4) | (byte(ip, 1) >> 4)
    } else {
        byte(ip, 1)
    };
    let ip_len = p.ip_len;
    let outer = if V6 { OUTER_V6 } else { OUTER_V4 };
    let total = p.len + outer as u64;
    // The frame's own MACs, kept for a packet the kernel forwards (it takes only frames
    // sent to this host).
    let eth = p.eth as *const u8;
    let mut i = 0;
    while i < 6 {
        ds.macs[i] = ne16(eth, 2 * i);
        i += 1;
    }
    // SAFETY: grows the headroom; every packet pointer is stale afterwards and is
    // re-derived from the context below.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -(outer as i32)) } != 0 {
        count(STAT_DROP_DSR, total);
        return xdp_action::XDP_DROP;
    }
    let (start, end) = (ctx.data(), ctx.data_end());
    if start + ETH_HLEN + outer as usize > end {
        return xdp_action::XDP_DROP;
    }
    let eth = start as *mut u8;
    let oip = (start + ETH_HLEN) as *mut u8;
    put(eth, &ds.macs);
    put(
        // SAFETY: offset 12 of the checked Ethernet header.
        unsafe { eth.add(12) },
        &[if V6 { parse::ETH_IPV6 } else { parse::ETH_IPV4 }.to_be()],
    );
    if V6 {
        put(oip, &encap::ipv6_outer_head(ip_len, tos, ds.hash));
        let s = ds.src.words.as_ptr() as *const u16;
        let d = to.words.as_ptr() as *const u16;
        let o = oip as *mut u16;
        let mut i = 0;
        while i < 8 {
            // SAFETY: halves of two addresses; 40 checked bytes from `oip`.
            unsafe {
                *o.add(4 + i) = *s.add(i);
                *o.add(12 + i) = *d.add(i);
            }
            i += 1;
        }
    } else {
        put(
            oip,
            &encap::ipv4_outer(ip_len, tos, ds.src.words[0], to.words[0]),
        );
    }
    count_backend(backend, total);
    // Forwarded either way (every packet ends in one outcome counter); one the kernel
    // forwards is counted under `pass_egress` as well, as NAT's are.
    count(STAT_FORWARD, total);
    let action = if routed { egress(ctx, &sc.fib) } else { None };
    match action {
        Some(a) => {
            // SAFETY: the 12 MAC bytes of the checked Ethernet header.
            unsafe { set_macs(eth, &sc.fib) };
            a
        }
        None => {
            count(STAT_PASS_EGRESS, total);
            xdp_action::XDP_PASS
        }
    }
}

/// Answers a request that would not fit the egress MTU `mtu` once encapsulated: an ICMP
/// "fragmentation needed" (IPv4; only for a DF packet without options) or "packet too
/// big" (IPv6) from the VIP to the client, quoting the request's IP header and 8 bytes
/// after it, sent back out of the interface the request came in on.
// The MTU is `route`'s, from the scratch area.
#[inline(never)]
fn too_big<const V6: bool>(ctx: &XdpContext, p: &Packet) -> u32 {
    let mtu = DSR_SCRATCH.get(0).map_or(0, |d| d.mtu);
    let ip = p.ip;
    if !V6 && (byte(ip, 0) != 0x45 || byte(ip, 6) & 0x40 == 0) {
        count(STAT_DROP_DSR, p.len);
        return xdp_action::XDP_DROP;
    }
    let (hdr, quote) = if V6 {
        (40usize, QUOTE_V6 as usize)
    } else {
        (20usize, QUOTE_V4 as usize)
    };
    // The answer: Ethernet, IP, 8 bytes of ICMP, the quote. Made by growing the head by
    // the new IP and ICMP headers (the old Ethernet header lands in front of the quote)
    // and cutting the tail after the quote.
    let grow = hdr + 8;
    let want = ETH_HLEN + grow + quote;
    let len = p.len as usize;
    if len < ETH_HLEN + quote {
        count(STAT_DROP_DSR, p.len);
        return xdp_action::XDP_DROP;
    }
    // SAFETY: shrinks the frame; every packet pointer is re-derived below.
    if unsafe { bpf_xdp_adjust_tail(ctx.ctx, (ETH_HLEN + quote) as i32 - len as i32) } != 0 {
        count(STAT_DROP_DSR, p.len);
        return xdp_action::XDP_DROP;
    }
    // SAFETY: as above.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -(grow as i32)) } != 0 {
        count(STAT_DROP_DSR, p.len);
        return xdp_action::XDP_DROP;
    }
    let (start, end) = (ctx.data(), ctx.data_end());
    if start + want > end {
        return xdp_action::XDP_DROP;
    }
    let f = start as *mut u8;
    // SAFETY (offsets below): inside the `want` checked bytes.
    let (old_eth, nip, icmp, q) = unsafe {
        (
            f.add(grow),
            f.add(ETH_HLEN),
            f.add(ETH_HLEN + hdr),
            f.add(ETH_HLEN + grow),
        )
    };
    // Back to where it came from: the MACs swapped.
    let macs = [
        ne16(old_eth, 6),
        ne16(old_eth, 8),
        ne16(old_eth, 10),
        ne16(old_eth, 0),
        ne16(old_eth, 2),
        ne16(old_eth, 4),
        ne16(old_eth, 12),
    ];
    put(f, &macs);
    let reported = encap::reported_mtu(mtu, V6);
    put(icmp, &encap::icmp_too_big_head(reported, V6));
    let icmp_len = (8 + quote) as u16;
    let mut sum = 0u32;
    if V6 {
        put(nip, &encap::ipv6_head(icmp_len, 0, 0, PROTO_ICMPV6));
        // Source: the VIP (the quote's destination); destination: the client.
        let mut i = 0;
        while i < 8 {
            let (vip, client) = (ne16(q, 24 + 2 * i), ne16(q, 8 + 2 * i));
            put(
                // SAFETY: inside the checked IPv6 header.
                unsafe { nip.add(8 + 2 * i) },
                &[vip],
            );
            // SAFETY: as above.
            put(unsafe { nip.add(24 + 2 * i) }, &[client]);
            sum += vip as u32 + client as u32;
            i += 1;
        }
        // The pseudo-header's length and next header.
        sum += icmp_len.to_be() as u32 + (PROTO_ICMPV6 as u16).to_be() as u32;
    } else {
        let (vip, client) = (parse::ne32(q, 16), parse::ne32(q, 12));
        put(
            nip,
            &encap::ipv4_header((20 + 8 + quote) as u16, 0, false, PROTO_ICMP, vip, client),
        );
    }
    let mut i = 0;
    while i < (8 + quote) / 2 {
        sum += ne16(icmp, 2 * i) as u32;
        i += 1;
    }
    put(
        // SAFETY: the ICMP checksum field, inside the checked bytes.
        unsafe { icmp.add(2) },
        &[!fold(sum)],
    );
    count(STAT_ICMP_TOO_BIG, want as u64);
    xdp_action::XDP_TX
}

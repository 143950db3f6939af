//! The forward-only yardstick: what an XDP router must do for every IPv4 packet and no
//! more (no service lookup, no NAT, no connection table). It checks the TTL, asks
//! `bpf_fib_lookup` for the egress and the next hop's MAC, decrements the TTL (the header
//! checksum updated incrementally), writes both MACs and sends the frame by XDP_TX (same
//! interface) or a redirect through its own devmap, `YARDSTICK_EGRESS`. Anything else
//! (not IPv4, options, TTL 1, no FIB answer, an egress outside the devmap) is passed.
//!
//! Benchmarks attach it instead of `xlb` (traffic then aimed at the backends themselves)
//! to read its cost under the same traffic with `kernel.bpf_stats_enabled`, and run it
//! with BPF_PROG_TEST_RUN beside `xlb`. xlbd never attaches it.

use core::mem::size_of;

use aya_ebpf::{
    EbpfContext as _,
    bindings::{BPF_FIB_LKUP_RET_SUCCESS, bpf_fib_lookup, xdp_action},
    helpers::bpf_fib_lookup as fib_lookup,
    macros::{map, xdp},
    maps::DevMapHash,
    programs::XdpContext,
};

/// Ethernet header: destination MAC, source MAC, EtherType.
mod eth {
    pub const DST: usize = 0;
    pub const SRC: usize = 6;
    pub const TYPE: usize = 12;
    pub const LEN: usize = 14;
}

/// IPv4 header fields (offsets from its start).
mod ipv4 {
    pub const VER_IHL: usize = 0;
    pub const TOT_LEN: usize = 2;
    pub const TTL: usize = 8;
    pub const PROTO: usize = 9;
    pub const CHECK: usize = 10;
    pub const SRC: usize = 12;
    pub const DST: usize = 16;
    pub const LEN: usize = 20;
}

const ETH_P_IP_BE: [u8; 2] = [0x08, 0x00];
const AF_INET: u8 = 2;

/// The egress devices the yardstick may redirect to, by ifindex (the benchmark fills it
/// with every interface it is attached to).
#[map]
static YARDSTICK_EGRESS: DevMapHash = DevMapHash::with_max_entries(64, 0);

#[xdp]
pub fn xdp_fwd_yardstick(ctx: XdpContext) -> u32 {
    forward(&ctx)
}

#[inline(always)]
fn forward(ctx: &XdpContext) -> u32 {
    let start = ctx.data();
    if start + eth::LEN + ipv4::LEN > ctx.data_end() {
        return xdp_action::XDP_PASS;
    }
    let frame = start as *mut u8;
    // SAFETY: offsets inside the Ethernet header and the 20-byte IPv4 header, both
    // checked to lie within the frame above (so are the accesses through `ip` below).
    let (ethertype, ver_ihl) = unsafe {
        (
            [*frame.add(eth::TYPE), *frame.add(eth::TYPE + 1)],
            *frame.add(eth::LEN + ipv4::VER_IHL),
        )
    };
    if ethertype != ETH_P_IP_BE || ver_ihl != 0x45 {
        return xdp_action::XDP_PASS;
    }
    // SAFETY: the IPv4 header's start, within the checked frame.
    let ip = unsafe { frame.add(eth::LEN) };
    // SAFETY: inside the checked IPv4 header.
    let ttl = unsafe { *ip.add(ipv4::TTL) };
    if ttl <= 1 {
        return xdp_action::XDP_PASS;
    }
    let ingress = ctx.ingress_ifindex() as u32;
    // SAFETY: a plain-data parameter block; all zero is its "no input" state.
    let mut fib: bpf_fib_lookup = unsafe { core::mem::zeroed() };
    fib.family = AF_INET;
    fib.ifindex = ingress;
    // SAFETY: reads inside the checked IPv4 header; writes to plain fields of `fib`.
    unsafe {
        fib.l4_protocol = *ip.add(ipv4::PROTO);
        // In host order (the helper compares it with the MTU).
        fib.__bindgen_anon_1.tot_len =
            u16::from_be_bytes([*ip.add(ipv4::TOT_LEN), *ip.add(ipv4::TOT_LEN + 1)]);
        fib.__bindgen_anon_3.ipv4_src = (ip.add(ipv4::SRC) as *const u32).read_unaligned();
        fib.__bindgen_anon_4.ipv4_dst = (ip.add(ipv4::DST) as *const u32).read_unaligned();
    }
    // SAFETY: `fib` is an initialised parameter block of the size given.
    let rc = unsafe {
        fib_lookup(
            ctx.as_ptr(),
            &mut fib,
            size_of::<bpf_fib_lookup>() as i32,
            0,
        )
    };
    if rc != BPF_FIB_LKUP_RET_SUCCESS as i64 {
        return xdp_action::XDP_PASS;
    }
    let action = if fib.ifindex == ingress {
        xdp_action::XDP_TX
    } else {
        match YARDSTICK_EGRESS.redirect(fib.ifindex, xdp_action::XDP_PASS as u64) {
            Ok(a) => a,
            Err(_) => return xdp_action::XDP_PASS,
        }
    };
    // SAFETY: writes inside the checked Ethernet and IPv4 headers.
    unsafe {
        // TTL and protocol share a 16-bit word: RFC 1624 incremental update of the
        // checksum for the TTL byte going down by one (the word by 0x0100).
        *ip.add(ipv4::TTL) = ttl - 1;
        let check = u16::from_be_bytes([*ip.add(ipv4::CHECK), *ip.add(ipv4::CHECK + 1)]);
        let sum = u32::from(check) + 0x0100;
        let folded = ((sum & 0xffff) + (sum >> 16)) as u16;
        let [hi, lo] = folded.to_be_bytes();
        *ip.add(ipv4::CHECK) = hi;
        *ip.add(ipv4::CHECK + 1) = lo;
        let mut i = 0;
        while i < 6 {
            *frame.add(eth::DST + i) = fib.dmac[i];
            *frame.add(eth::SRC + i) = fib.smac[i];
            i += 1;
        }
    }
    action
}

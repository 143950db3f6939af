//! The yardstick for per-packet cost: swap the Ethernet addresses and bounce the frame
//! with XDP_TX, the least an XDP forwarder can do. Benchmarks run it beside `xlb` with
//! BPF_PROG_TEST_RUN; it is never attached.

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use network_types::eth::EthHdr;

#[xdp]
pub fn xdp_tx_limit(ctx: XdpContext) -> u32 {
    let start = ctx.data();
    if start + core::mem::size_of::<EthHdr>() > ctx.data_end() {
        return xdp_action::XDP_PASS;
    }
    let eth = start as *mut EthHdr;
    // SAFETY: the header is within the frame (checked above).
    unsafe {
        core::mem::swap(&mut (*eth).src_addr, &mut (*eth).dst_addr);
    }
    xdp_action::XDP_TX
}

//! CI's fuzz run: 20,000 seeded random and mutated packets through the XDP program, with
//! every check of `xlb_xdp_harness::fuzz` (needs root; skips loudly otherwise).

use xlb_xdp_harness::{Harness, fuzz, netns::in_private_netns, require_root};

#[test]
fn fuzz_20000_packets() {
    if !require_root("fuzz_20000_packets") {
        return;
    }
    let fig = in_private_netns(|| {
        let mut h = Harness::new(fuzz::FLOW_ENTRIES).expect("harness");
        fuzz::run(&mut h, 20_000, 0x5eed).expect("fuzz run")
    });
    eprintln!("{}", fig.report());
    assert_eq!(fig.failures, 0, "\n{}", fig.report());
    assert!(fig.checked_outputs > 1000 && fig.checked_untouched > 1000);
}

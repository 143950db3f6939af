//! xlbd says what is wrong with its links: one warning for an interface that is DOWN (and
//! it starts anyway), and an MTU too large for native XDP named in the attach error, with
//! `--mode skb` as the way out.

use xlb_testbed::{Testbed, require_root};

fn log(tb: &Testbed) -> String {
    std::fs::read_to_string(tb.xlbd_log()).expect("xlbd.log")
}

#[test]
fn a_down_interface_gets_one_warning_and_xlbd_starts() {
    if !require_root("a_down_interface_gets_one_warning_and_xlbd_starts") {
        return;
    }
    let mut tb = Testbed::new(1, 1).expect("testbed");
    let down = tb.backend(0).link.lb_if.clone();
    tb.lb()
        .ip(&["link", "set", &down, "down"])
        .expect("set the backend link down");
    tb.start_xlbd(&[]).expect("xlbd starts on a DOWN interface");
    let text = log(&tb);
    let warnings: Vec<&str> = text.lines().filter(|l| l.contains("WARN")).collect();
    assert_eq!(
        warnings.len(),
        1,
        "expected one warning:\n{}",
        tb.xlbd_log_tail(20)
    );
    assert!(
        warnings[0].ends_with(&format!(
            "xlbd: interface {down} is DOWN: XDP is attached but sees no packets until it is up (ip link set {down} up)"
        )),
        "{}",
        warnings[0]
    );
    let status = tb.xlb_ok(&["status", "--json"]).expect("status");
    assert!(status.contains(&down), "{status}");

    // Up again: a new daemon has nothing to warn about.
    drop(tb);
    let mut tb = Testbed::new(1, 1).expect("testbed");
    tb.start_xlbd(&[]).expect("start xlbd");
    assert!(
        !log(&tb).contains("WARN"),
        "warning with every link up:\n{}",
        tb.xlbd_log_tail(20)
    );
}

#[test]
fn an_mtu_too_large_for_native_xdp_is_named_with_the_way_out() {
    if !require_root("an_mtu_too_large_for_native_xdp_is_named_with_the_way_out") {
        return;
    }
    let mut tb = Testbed::new(1, 1).expect("testbed");
    let node = tb.client(0);
    let (lb_if, peer_if) = (node.link.lb_if.clone(), node.link.peer_if.clone());
    // A veth takes native XDP only while its peer's MTU fits a page (about 3500 bytes).
    node.ns
        .ip(&["link", "set", &peer_if, "mtu", "9000"])
        .expect("peer mtu");
    tb.lb()
        .ip(&["link", "set", &lb_if, "mtu", "9000"])
        .expect("lb mtu");
    let e = tb
        .start_xlbd(&[])
        .expect_err("native XDP accepted a veth with MTU 9000 on this kernel");
    let text = log(&tb);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "expected one line:\n{text}\n({e:#})");
    assert_eq!(
        lines[0],
        format!(
            "xlbd: error: cannot attach XDP to {lb_if} in native mode: MTU too large for native XDP on this driver: \
             {lb_if} has MTU 9000, and veth and virtio-net take at most about 3500 bytes with 4 KiB pages \
             (for a veth, its peer's MTU counts); lower the MTU or use --mode skb \
             (kernel: `bpf_link_create` failed: Numerical result out of range (os error 34))"
        )
    );

    // The way out the message names works.
    tb.start_xlbd(&["--mode", "skb"])
        .expect("xlbd starts in skb mode");
    let status = tb.xlb_ok(&["status", "--json"]).expect("status");
    let status: serde_json::Value = serde_json::from_str(&status).expect("status --json");
    assert_eq!(status["mode"], "skb");
}

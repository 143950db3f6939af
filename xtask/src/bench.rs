//! `cargo xtask bench`: setup (which installs HAProxy, nginx, iptables and iperf3), builds
//! xlbd and xlb for the testbed, then runs the benchmark binary `xlb-bench` (crate
//! `bench/`) in release. It lives outside xtask because it links lb-userspace, whose build
//! needs the bpf-linker that setup installs. Results go to `bench/results/`.

use anyhow::{Result, bail};

use crate::cmd;

pub fn bench(args: &[String]) -> Result<()> {
    crate::setup::setup()?;
    // `bench maglev` is pure computation; `bench tables` loads the program but starts no
    // daemon; everything else needs root and the binaries.
    let what = args.first().map(String::as_str);
    if what != Some("maglev") {
        if !cmd::is_root() {
            bail!("the benchmark loads XDP programs and makes network namespaces: run it as root");
        }
        if what != Some("tables") {
            crate::build_bins()?;
        }
    }
    cmd::run(cmd::cargo(&["run", "--release", "--quiet", "-p", "xlb-bench", "--"]).args(args))
}

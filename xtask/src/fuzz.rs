//! `cargo xtask fuzz --count N --seed S`: setup, then the fuzzer `xlb-fuzz` (crate
//! `xdp-harness/`) in release: N seeded random and mutated packets through the XDP
//! program with BPF_PROG_TEST_RUN. It lives outside xtask because it links lb-userspace,
//! whose build needs the bpf-linker that setup installs.

use anyhow::{Result, bail};

use crate::cmd;

pub fn fuzz(count: u64, seed: u64) -> Result<()> {
    crate::setup::setup()?;
    if !cmd::is_root() {
        bail!("the fuzzer loads the XDP program: run it as root");
    }
    let (count, seed) = (count.to_string(), seed.to_string());
    cmd::run(&mut cmd::cargo(&[
        "run",
        "--release",
        "--quiet",
        "-p",
        "xlb-xdp-harness",
        "--bin",
        "xlb-fuzz",
        "--",
        "--count",
        &count,
        "--seed",
        &seed,
    ]))
}

//! The upgrade test's second build of the XDP program: `lb-ebpf` with its `upgrade-variant`
//! feature, built the way lb-userspace's build.rs (aya-build) builds it, into its own
//! target dir. `cargo xtask test` hands its path to the tests in `XLB_UPGRADE_OBJECT`.

use std::path::PathBuf;

use anyhow::{Context as _, Result};

use crate::cmd::{self, workspace_root};

/// The environment variable the upgrade test reads.
pub const ENV: &str = "XLB_UPGRADE_OBJECT";

/// Builds the variant object and returns its path.
pub fn build() -> Result<PathBuf> {
    let target_dir = workspace_root().join("target/upgrade-variant");
    // As aya-build: the nightly's cargo, core built from source, BTF in the object.
    let flags = [
        "--cfg=bpf_target_arch=\"x86_64\"",
        "-Cdebuginfo=2",
        "-Clink-arg=--btf",
    ]
    .join("\x1f");
    let mut c = std::process::Command::new("rustup");
    c.args([
        "run",
        "nightly",
        "cargo",
        "build",
        "--package",
        "lb-ebpf",
        "--bins",
    ])
    .args([
        "--release",
        "--target",
        "bpfel-unknown-none",
        "-Z",
        "build-std=core",
    ])
    .args(["--features", "upgrade-variant", "--target-dir"])
    .arg(&target_dir)
    .env("CARGO_ENCODED_RUSTFLAGS", flags)
    .env_remove("RUSTC")
    .env_remove("RUSTC_WORKSPACE_WRAPPER")
    .env_remove("CARGO")
    .current_dir(workspace_root());
    cmd::run(&mut c).context("building the upgrade test's variant of the XDP program")?;
    Ok(target_dir.join("bpfel-unknown-none/release/xlb-xdp"))
}

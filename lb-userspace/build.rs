//! Builds the XDP object (`lb-ebpf`, for the bpf target, with the nightly toolchain and
//! bpf-linker) and the control API's gRPC code from `proto/xlb.proto` (with protox, so no
//! system `protoc` is needed).
use anyhow::{Context as _, anyhow};

fn main() -> anyhow::Result<()> {
    build_proto()?;
    build_ebpf()
}

fn build_proto() -> anyhow::Result<()> {
    let proto = "proto/xlb.proto";
    println!("cargo:rerun-if-changed={proto}");
    let fds = protox::compile([proto], ["proto"]).context("compiling proto/xlb.proto")?;
    tonic_prost_build::configure()
        // Printed as they are by `xlb ... --json` (STYLE.md example 5).
        .type_attribute("xlb.v1.Egress", "#[derive(serde::Serialize)]")
        .type_attribute("xlb.v1.CheckResult", "#[derive(serde::Serialize)]")
        .type_attribute("xlb.v1.HealthCheck", "#[derive(serde::Serialize)]")
        .type_attribute("xlb.v1.NodeStatus", "#[derive(serde::Serialize)]")
        .type_attribute("xlb.v1.Announcement", "#[derive(serde::Serialize)]")
        .compile_fds(fds)
        .context("generating gRPC code")?;
    Ok(())
}

fn build_ebpf() -> anyhow::Result<()> {
    let metadata = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    let pkg = metadata
        .packages
        .into_iter()
        .find(|p| p.name.as_str() == "lb-ebpf")
        .ok_or_else(|| anyhow!("lb-ebpf package not found in the workspace"))?;
    let root_dir = pkg
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("no parent for {}", pkg.manifest_path))?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: pkg.name.as_str(),
            root_dir: root_dir.as_str(),
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
    .context("building the XDP program (is `cargo xtask setup` done?)")
}

//! Generates the gRPC code of `proto/demo.proto` (with protox, so no system `protoc`).
use anyhow::Context as _;

fn main() -> anyhow::Result<()> {
    let proto = "proto/demo.proto";
    println!("cargo:rerun-if-changed={proto}");
    let fds = protox::compile([proto], ["proto"]).context("compiling proto/demo.proto")?;
    tonic_prost_build::configure()
        .compile_fds(fds)
        .context("generating gRPC code")?;
    Ok(())
}

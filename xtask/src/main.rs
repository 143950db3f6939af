//! xlb's orchestration: `cargo xtask setup | test | demo | bench | fuzz`.

mod bench;
mod cmd;
mod demo;
mod demo_cluster;
mod demo_grpc;
mod demo_vm;
mod fuzz;
mod setup;
mod summary;
mod variant;

use anyhow::Result;
use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "xlb's orchestration tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what builds, tests and the demo need (idempotent; some steps need root)
    Setup,
    /// Setup, fmt and clippy checks, build the binaries, then `cargo test` (extra args are
    /// passed on to it, e.g. `cargo xtask test -- --nocapture`)
    Test {
        #[arg(
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "CARGO_TEST_ARGS"
        )]
        _args: Vec<String>,
    },
    /// Setup, build, then drive 30 connections through a VIP in a netns testbed (needs root);
    /// `demo grpc`: unary calls, streams and a connection pool through a gRPC VIP;
    /// `demo vm`: the same 30 connections through xlbd in native XDP mode on virtio-net in a
    /// qemu guest; `demo cluster`: 3 xlb nodes behind an ECMP router (BGP), 60 connections,
    /// one node killed while they stream
    Demo {
        #[arg(value_enum)]
        which: Option<DemoKind>,
    },
    /// Setup, build, then the benchmarks: xlb per packet against the XDP_TX limit, and end
    /// to end against iptables DNAT, HAProxy and nginx (needs root; writes bench/results/;
    /// extra args go to xlb-bench, e.g. `cargo xtask bench --runs 5`); `bench vm`: xlb
    /// native and skb, iptables DNAT and the forward-only XDP yardstick in a qemu guest on
    /// virtio-net (bench/results/vm.*)
    Bench {
        #[arg(
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "XLB_BENCH_ARGS"
        )]
        args: Vec<String>,
    },
    /// Setup, then N seeded random and mutated packets through the XDP program
    /// (BPF_PROG_TEST_RUN; needs root): never ABORTED, valid outputs, maps untouched by
    /// packets not for a VIP. Prints the figures; fails on any failed check
    Fuzz {
        #[arg(long, default_value_t = 100_000)]
        count: u64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum DemoKind {
    /// gRPC clients (unary, stream, pool) and three gRPC backends behind one VIP
    Grpc,
    /// xlbd in a qemu guest, native XDP on its virtio-net NICs (TCG where KVM is unusable)
    Vm,
    /// 3 xlb nodes behind an ECMP router that learns the VIP from each over BGP (BIRD)
    Cluster,
}

/// Workspace packages built and tested on the host: all but `lb-ebpf`, which is built for
/// the BPF target by lb-userspace's build.rs.
const HOST: &[&str] = &["--workspace", "--exclude", "lb-ebpf"];

/// `cargo build` of xlbd and xlb.
pub fn build_bins() -> Result<()> {
    cmd::run(cmd::cargo(&["build"]).args(HOST).arg("--bins"))
}

fn test(args: &[String]) -> Result<()> {
    setup::setup()?;
    cmd::run(&mut cmd::cargo(&["fmt", "--all", "--", "--check"]))?;
    cmd::run(
        cmd::cargo(&["clippy"])
            .args(HOST)
            .args(["--all-targets", "--", "-D", "warnings"]),
    )?;
    build_bins()?;
    let upgrade = variant::build()?;
    // All test binaries run even when one fails, so one run shows every failure.
    summary::run_tests(
        cmd::cargo(&["test", "--no-fail-fast"])
            .args(HOST)
            .args(args)
            .env(variant::ENV, upgrade),
    )
    .map(|_| ())
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.task {
        Task::Setup => setup::setup(),
        // clap drops a `--` from trailing args; cargo test needs it (`-- --nocapture`), so
        // pass on everything after `test` as given (xtask has no options before it).
        Task::Test { .. } => test(&std::env::args().skip(2).collect::<Vec<_>>()),
        Task::Demo { which: None } => demo::demo(),
        Task::Demo {
            which: Some(DemoKind::Grpc),
        } => demo_grpc::demo(),
        Task::Demo {
            which: Some(DemoKind::Vm),
        } => demo_vm::demo(),
        Task::Demo {
            which: Some(DemoKind::Cluster),
        } => demo_cluster::demo(),
        Task::Bench { args } => bench::bench(&args),
        Task::Fuzz { count, seed } => fuzz::fuzz(count, seed),
    };
    if let Err(e) = result {
        eprintln!("xtask: error: {e:#}");
        std::process::exit(1);
    }
}

//! `grpc-demo server --listen ADDR --id ID` and
//! `grpc-demo client --addr ADDR (unary|stream|pool --connections K) --calls N`:
//! the demo's backend and client as programs (e.g. under `ip netns exec`).

use std::net::{SocketAddr, TcpListener};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use grpc_demo::{ClientConfig, Mode};

#[derive(Parser)]
#[command(
    name = "grpc-demo",
    about = "The gRPC backend and client of `cargo xtask demo grpc`"
)]
enum Cli {
    /// Serve DemoService and grpc.health.v1 until interrupted
    Server {
        #[arg(long, default_value = "0.0.0.0:50051")]
        listen: SocketAddr,
        /// The id every reply carries
        #[arg(long)]
        id: String,
    },
    /// Send calls and print how many replies came from each backend
    Client {
        #[arg(long)]
        addr: SocketAddr,
        #[command(subcommand)]
        mode: ModeArg,
        /// Calls (unary, pool) or messages (stream)
        #[arg(long, default_value_t = 12)]
        calls: usize,
    },
}

#[derive(Subcommand, Clone, Copy)]
enum ModeArg {
    /// One connection, N calls
    Unary,
    /// One bidirectional stream, N messages
    Stream,
    /// K connections, calls spread round-robin
    Pool {
        #[arg(long, default_value_t = 12)]
        connections: usize,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse() {
        Cli::Server { listen, id } => {
            let listener = TcpListener::bind(listen).with_context(|| format!("bind {listen}"))?;
            let server = grpc_demo::spawn(listener, &id)?;
            eprintln!("grpc-demo: serving as {id} on {listen}; Ctrl-C stops");
            wait_for_interrupt()?;
            server.stop()?;
        }
        Cli::Client { addr, mode, calls } => {
            let mode = match mode {
                ModeArg::Unary => Mode::Unary,
                ModeArg::Stream => Mode::Stream,
                ModeArg::Pool { connections } => Mode::Pool(connections),
            };
            let cfg = ClientConfig {
                addr,
                mode,
                calls,
                source_port: None,
            };
            let report = grpc_demo::run(&cfg)?;
            println!("{mode}: {report}");
            if report.errors > 0 {
                std::process::exit(1);
            }
        }
    }
    Ok(())
}

fn wait_for_interrupt() -> anyhow::Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(tokio::signal::ctrl_c())?;
    Ok(())
}

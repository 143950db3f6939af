//! The gRPC traffic of `cargo xtask demo grpc` and of `tests/tests/grpc.rs`.
//!
//! - [`server`]: a backend serving `xlb.demo.v1.DemoService` (unary `SayHello`,
//!   bidirectional `SayHelloStream`; every reply carries the backend's id) and the standard
//!   `grpc.health.v1.Health`, on a thread of its own;
//! - [`client`]: a client in one of three modes, [`Mode::Unary`] (one connection, N calls),
//!   [`Mode::Stream`] (one stream, N messages) and [`Mode::Pool`] (K connections, calls spread
//!   round-robin), that counts the replies of each backend.
//!
//! Both run their own tokio runtime on the calling (or a new) thread, so whatever network
//! namespace that thread is in is where their sockets are made.

pub mod client;
pub mod server;

/// The generated code of `proto/demo.proto`.
pub mod proto {
    tonic::include_proto!("xlb.demo.v1");
}

pub use client::{ClientConfig, Mode, Report, health, run, run_then};
pub use server::{ServerHandle, spawn};

use std::net::SocketAddr;

/// The full name of the demo service, as the health service knows it.
pub const SERVICE: &str = "xlb.demo.v1.DemoService";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot start a tokio runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("listener: {0}")]
    Listener(#[source] std::io::Error),
    #[error("cannot connect to {addr}: {reason}")]
    Connect { addr: SocketAddr, reason: String },
    #[error("health check of {addr}: {reason}")]
    Health { addr: SocketAddr, reason: String },
    #[error("gRPC server: {0}")]
    Serve(#[from] tonic::transport::Error),
    #[error("the server thread panicked")]
    Panicked,
}

/// A runtime on the calling thread: tasks, and the sockets they make, stay on this thread.
fn runtime() -> Result<tokio::runtime::Runtime, Error> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(Error::Runtime)
}

/// The innermost cause of an error chain (transport errors wrap the useful `io::Error`).
fn innermost(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

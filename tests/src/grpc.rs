//! gRPC backends and clients (the `grpc-demo` crate) in the testbed's namespaces: what
//! `tests/tests/grpc.rs` and `cargo xtask demo grpc` drive through the VIP.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::thread;

use anyhow::{Context as _, Result, anyhow};
use grpc_demo::{ClientConfig, Mode, Report, ServerHandle};

use crate::servers::backend_id;
use crate::topology::Testbed;

impl Testbed {
    /// Starts a gRPC backend (`DemoService` answering with [`backend_id`]`(j)`, and
    /// `grpc.health.v1`) on `port` in every backend namespace. The servers stop when the
    /// handles drop; drop them before the testbed.
    pub fn spawn_grpc_servers(&self, port: u16) -> Result<Vec<ServerHandle>> {
        (0..self.backends().len())
            .map(|j| {
                let any = (Ipv4Addr::UNSPECIFIED, port);
                let listener = self.backend(j).ns.run(|| TcpListener::bind(any))?;
                let listener =
                    listener.with_context(|| format!("binding {port} in backend {j}"))?;
                Ok(grpc_demo::spawn(listener, &backend_id(j))?)
            })
            .collect()
    }

    /// `per_client` clients of `mode` from every client namespace, each with `calls` calls
    /// to `addr`. Source ports are fixed (see [`ClientConfig::source_port`]): client `i` of
    /// a namespace starts at `first_port + i * connections`.
    pub fn grpc_plan(
        &self,
        addr: SocketAddr,
        mode: Mode,
        per_client: usize,
        calls: usize,
        first_port: u16,
    ) -> Vec<(usize, ClientConfig)> {
        let conns = mode.connections();
        let config = |i: usize| ClientConfig {
            addr,
            mode,
            calls,
            source_port: Some(first_port + (i * conns) as u16),
        };
        (0..self.clients().len())
            .flat_map(|k| (0..per_client).map(move |i| (k, config(i))))
            .collect()
    }

    /// Runs one gRPC client from client `k`'s namespace.
    pub fn grpc_client(&self, k: usize, cfg: &ClientConfig) -> Result<Report> {
        Ok(self.client(k).ns.run(|| grpc_demo::run(cfg))??)
    }

    /// Runs `(client index, config)` clients, all at once, each on a thread of its own.
    /// Returns the results in the order given.
    pub fn grpc_clients(&self, clients: &[(usize, ClientConfig)]) -> Vec<Result<Report>> {
        thread::scope(|s| {
            let threads: Vec<_> = clients
                .iter()
                .map(|(k, cfg)| s.spawn(move || self.grpc_client(*k, cfg)))
                .collect();
            threads
                .into_iter()
                .map(|t| {
                    t.join()
                        .unwrap_or_else(|_| Err(anyhow!("a gRPC client panicked")))
                })
                .collect()
        })
    }

    /// `grpc.health.v1` status of `service` at `addr`, asked from client `k`'s namespace.
    pub fn grpc_health(&self, k: usize, addr: SocketAddr, service: &str) -> Result<String> {
        Ok(self
            .client(k)
            .ns
            .run(|| grpc_demo::health(addr, service))??)
    }
}

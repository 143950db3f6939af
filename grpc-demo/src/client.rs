//! The client: one of three modes over one or more HTTP/2 connections, counting which
//! backend sent each reply.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::net::TcpSocket;
use tokio::sync::mpsc;
use tokio::time::timeout;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint, Uri};
use tonic::{Response, Status};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use tower::service_fn;

use crate::proto::demo_service_client::DemoServiceClient;
use crate::proto::{HelloReply, HelloRequest};
use crate::{Error, innermost, runtime};

/// The longest a connect, a call or one stream message may take.
const TIMEOUT: Duration = Duration::from_secs(3);

/// How a client sends its calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// One connection (one HTTP/2 channel), N unary calls on it.
    Unary,
    /// One connection, one bidirectional stream, N messages on it.
    Stream,
    /// K connections, N unary calls spread over them round-robin.
    Pool(usize),
}

impl Mode {
    pub fn connections(self) -> usize {
        match self {
            Mode::Pool(k) => k,
            Mode::Unary | Mode::Stream => 1,
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mode::Unary => f.write_str("unary"),
            Mode::Stream => f.write_str("stream"),
            Mode::Pool(k) => write!(f, "pool {k}"),
        }
    }
}

/// One client's run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// The server (a VIP, or a backend itself).
    pub addr: SocketAddr,
    pub mode: Mode,
    /// Calls (unary, pool) or messages (stream).
    pub calls: usize,
    /// When set, connection `i` binds source port `source_port + i` instead of an
    /// ephemeral one: the 5-tuples, hence the backends an L4 balancer picks, are the same
    /// on every run.
    pub source_port: Option<u16>,
}

/// What one client saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Replies per backend id.
    pub per_backend: BTreeMap<String, usize>,
    /// Calls or messages that got no reply.
    pub errors: usize,
    /// The first error, for diagnostics.
    pub first_error: Option<String>,
}

impl Report {
    fn add(&mut self, reply: Result<HelloReply, Status>) {
        match reply {
            Ok(r) => *self.per_backend.entry(r.backend_id).or_default() += 1,
            Err(s) => self.fail(1, &s),
        }
    }

    fn fail(&mut self, calls: usize, why: &Status) {
        self.errors += calls;
        if self.first_error.is_none() {
            self.first_error = Some(format!("{:?}: {}", why.code(), why.message()));
        }
    }

    /// All replies came from one backend, and none is missing.
    pub fn sticky(&self) -> bool {
        self.errors == 0 && self.per_backend.len() == 1
    }

    /// How many backends answered.
    pub fn backends(&self) -> usize {
        self.per_backend.len()
    }

    pub fn replies(&self) -> usize {
        self.per_backend.values().sum()
    }
}

impl fmt::Display for Report {
    /// `backend-0=4 backend-2=8`, then ` errors=N (first error)` when there are errors.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let counts: Vec<String> = self
            .per_backend
            .iter()
            .map(|(id, n)| format!("{id}={n}"))
            .collect();
        f.write_str(&counts.join(" "))?;
        if self.errors > 0 {
            let first = self.first_error.as_deref().unwrap_or("");
            write!(f, " errors={} ({first})", self.errors)?;
        }
        Ok(())
    }
}

/// Runs the client on a runtime of the calling thread (so its sockets are made in this
/// thread's network namespace) and closes its connections.
pub fn run(cfg: &ClientConfig) -> Result<Report, Error> {
    run_then(cfg, || ()).map(|(report, ())| report)
}

/// Like [`run`], and calls `while_open` after the calls, while the connections are still
/// open (e.g. to count them with `ss`).
pub fn run_then<T>(
    cfg: &ClientConfig,
    while_open: impl FnOnce() -> T,
) -> Result<(Report, T), Error> {
    runtime()?.block_on(async {
        let mut clients = Vec::with_capacity(cfg.mode.connections());
        for i in 0..cfg.mode.connections() {
            let port = cfg.source_port.map(|p| p.saturating_add(i as u16));
            clients.push(DemoServiceClient::new(connect(cfg.addr, port).await?));
        }
        let mut report = Report::default();
        match cfg.mode {
            Mode::Unary | Mode::Pool(_) => unary(&mut clients, cfg.calls, &mut report).await,
            Mode::Stream => stream(&mut clients[0], cfg.calls, &mut report).await,
        }
        Ok((report, while_open()))
    })
}

/// One HTTP/2 connection to `addr` from `source_port` (ephemeral when `None`).
async fn connect(addr: SocketAddr, source_port: Option<u16>) -> Result<Channel, Error> {
    let failed = |reason: String| Error::Connect { addr, reason };
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| failed(e.to_string()))?
        .timeout(TIMEOUT);
    let connector = service_fn(move |_: Uri| async move {
        let (socket, any) = match addr {
            SocketAddr::V4(_) => (TcpSocket::new_v4()?, Ipv4Addr::UNSPECIFIED.into()),
            SocketAddr::V6(_) => (TcpSocket::new_v6()?, Ipv6Addr::UNSPECIFIED.into()),
        };
        if let Some(port) = source_port {
            socket.bind(SocketAddr::new(any, port))?;
        }
        let stream = timeout(TIMEOUT, socket.connect(addr)).await??;
        Ok::<_, std::io::Error>(TokioIo::new(stream))
    });
    endpoint
        .connect_with_connector(connector)
        .await
        .map_err(|e| failed(innermost(&e)))
}

fn hello(i: usize) -> HelloRequest {
    HelloRequest {
        name: format!("call {i}"),
    }
}

/// `calls` unary calls, call `i` on connection `i % clients.len()`.
async fn unary(clients: &mut [DemoServiceClient<Channel>], calls: usize, report: &mut Report) {
    let n = clients.len();
    for i in 0..calls {
        let reply = clients[i % n].say_hello(hello(i)).await;
        report.add(reply.map(Response::into_inner));
    }
}

/// One bidirectional stream: send a message, wait for its reply, `messages` times. After
/// the first failure the stream is given up and the messages left count as errors.
async fn stream(client: &mut DemoServiceClient<Channel>, messages: usize, report: &mut Report) {
    let (tx, rx) = mpsc::channel(1);
    let mut replies = match client.say_hello_stream(ReceiverStream::new(rx)).await {
        Ok(r) => r.into_inner(),
        Err(s) => return report.fail(messages, &s),
    };
    for i in 0..messages {
        let reply = match tx.send(hello(i)).await {
            Ok(()) => match timeout(TIMEOUT, replies.message()).await {
                Ok(Ok(Some(r))) => Ok(r),
                Ok(Ok(None)) => Err(Status::unavailable("stream ended early")),
                Ok(Err(s)) => Err(s),
                Err(_) => Err(Status::deadline_exceeded("no reply in time")),
            },
            Err(_) => Err(Status::unavailable("request stream closed")),
        };
        match reply {
            Ok(r) => report.add(Ok(r)),
            Err(s) => return report.fail(messages - i, &s),
        }
    }
}

/// Asks the `grpc.health.v1.Health` service at `addr` about `service` (`""`: the server as a
/// whole, or [`crate::SERVICE`]) and returns the status's name, e.g. `SERVING`.
pub fn health(addr: SocketAddr, service: &str) -> Result<String, Error> {
    runtime()?.block_on(async {
        let mut client = HealthClient::new(connect(addr, None).await?);
        let request = HealthCheckRequest {
            service: service.to_owned(),
        };
        let reply = client.check(request).await.map_err(|s| Error::Health {
            addr,
            reason: format!("{:?}: {}", s.code(), s.message()),
        })?;
        Ok(reply.into_inner().status().as_str_name().to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(id: &str) -> Result<HelloReply, Status> {
        Ok(HelloReply {
            message: String::new(),
            backend_id: id.to_owned(),
        })
    }

    #[test]
    fn a_report_is_sticky_only_with_one_backend_and_no_errors() {
        let mut r = Report::default();
        assert!(!r.sticky(), "no replies at all");
        r.add(reply("backend-1"));
        r.add(reply("backend-1"));
        assert!(r.sticky());
        assert_eq!(r.to_string(), "backend-1=2");
        r.add(Err(Status::unavailable("gone")));
        assert!(!r.sticky());
        assert_eq!(r.to_string(), "backend-1=2 errors=1 (Unavailable: gone)");
        let mut two = Report::default();
        two.add(reply("backend-0"));
        two.add(reply("backend-2"));
        assert!(!two.sticky());
        assert_eq!((two.backends(), two.replies()), (2, 2));
    }

    #[test]
    fn a_pool_has_k_connections_the_others_one() {
        assert_eq!(Mode::Pool(12).connections(), 12);
        assert_eq!(Mode::Unary.connections(), 1);
        assert_eq!(Mode::Stream.connections(), 1);
        assert_eq!(Mode::Pool(12).to_string(), "pool 12");
    }
}

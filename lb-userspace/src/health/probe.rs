//! The probes: a TCP connect, an HTTP/1.1 request over a plain TCP connection, and
//! `grpc.health.v1.Health/Check` over a new HTTP/2 connection each time (as
//! `grpc_health_probe` does, so a dead server is never hidden by a cached channel). They
//! run in xlbd's own namespace, so their source address is the LB's.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::check::{CheckKind, ms};

/// The most bytes of an HTTP answer read to find its status line.
const MAX_STATUS_LINE: usize = 1024;

/// Probes `target` with `kind` within `timeout`: `Ok` or why it failed, in a few words.
pub async fn probe(target: SocketAddr, kind: &CheckKind, timeout: Duration) -> Result<(), String> {
    let run = async {
        match kind {
            CheckKind::None => Ok(()),
            CheckKind::Tcp => connect(target).await.map(drop),
            CheckKind::Http {
                method,
                path,
                status,
                host,
            } => {
                let host = host.clone().unwrap_or_else(|| target.to_string());
                http(target, &request(method, path, &host), *status).await
            }
            CheckKind::Grpc { service } => grpc(target, service, timeout).await,
        }
    };
    match tokio::time::timeout(timeout, run).await {
        Ok(r) => r,
        Err(_) => Err(format!(
            "timed out after {}",
            ms(timeout.as_millis() as u32)
        )),
    }
}

async fn connect(target: SocketAddr) -> Result<TcpStream, String> {
    TcpStream::connect(target)
        .await
        .map_err(|e| format!("connect: {}", io_reason(&e)))
}

/// The request: one line, the Host header, and `Connection: close`.
pub fn request(method: &str, path: &str, host: &str) -> String {
    format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: xlb-health-check\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    )
}

async fn http(target: SocketAddr, request: &str, want: (u16, u16)) -> Result<(), String> {
    let mut stream = connect(target).await?;
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("sending the request: {}", io_reason(&e)))?;
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 256];
    while !buf.contains(&b'\n') && buf.len() < MAX_STATUS_LINE {
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|e| format!("reading the answer: {}", io_reason(&e)))?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let code = status_code(&buf)?;
    if (want.0..=want.1).contains(&code) {
        Ok(())
    } else {
        Err(format!("status {code}"))
    }
}

/// The status code of an answer that starts `HTTP/1.x NNN`.
pub fn status_code(answer: &[u8]) -> Result<u16, String> {
    if answer.is_empty() {
        return Err("closed without an answer".into());
    }
    let line = answer.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut words = line.split_whitespace();
    match (words.next(), words.next().map(str::parse::<u16>)) {
        (Some(v), Some(Ok(code))) if v.starts_with("HTTP/1.") && (100..=599).contains(&code) => {
            Ok(code)
        }
        _ => Err(format!(
            "not an HTTP answer: {}",
            crate::limits::quoted(line.trim_end())
        )),
    }
}

async fn grpc(target: SocketAddr, service: &str, timeout: Duration) -> Result<(), String> {
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{target}"))
        .map_err(|e| e.to_string())?
        .connect_timeout(timeout)
        .timeout(timeout);
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| format!("connect: {}", innermost(&e)))?;
    let request = HealthCheckRequest {
        service: service.to_owned(),
    };
    let reply = HealthClient::new(channel)
        .check(request)
        .await
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?;
    match reply.into_inner().status() {
        ServingStatus::Serving => Ok(()),
        other => Err(other.as_str_name().to_owned()),
    }
}

/// An I/O error's reason without the `(os error N)` tail.
fn io_reason(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error") {
        Some(at) => s[..at].to_owned(),
        None => s,
    }
}

fn innermost(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    let s = cur.to_string();
    match s.find(" (os error") {
        Some(at) => s[..at].to_owned(),
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines() {
        assert_eq!(status_code(b"HTTP/1.1 200 OK\r\n"), Ok(200));
        assert_eq!(
            status_code(b"HTTP/1.0 503 Service Unavailable\r\n"),
            Ok(503)
        );
        assert_eq!(status_code(b"HTTP/1.1 204"), Ok(204));
        assert!(status_code(b"").unwrap_err().contains("closed"));
        assert!(
            status_code(b"backend-0\n")
                .unwrap_err()
                .contains("not an HTTP answer")
        );
        assert!(status_code(b"HTTP/1.1 99 x\r\n").is_err());
    }

    #[test]
    fn the_request_is_one_line_and_headers() {
        assert_eq!(
            request("GET", "/healthz", "198.19.0.2:8080"),
            "GET /healthz HTTP/1.1\r\nHost: 198.19.0.2:8080\r\nUser-Agent: xlb-health-check\r\n\
             Accept: */*\r\nConnection: close\r\n\r\n"
        );
    }

    /// Probes against servers on loopback (no privileges needed): an accepting listener,
    /// a closed port, an HTTP answer with a wanted and an unwanted status, and silence.
    #[tokio::test]
    async fn probes_tell_success_from_failure() {
        let t = Duration::from_millis(500);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let open = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 512];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let answer: &[u8] = if buf[..n].starts_with(b"GET /bad ") {
                    b"HTTP/1.1 503 Unavailable\r\nContent-Length: 0\r\n\r\n"
                } else if buf[..n].starts_with(b"GET /silent ") {
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    b""
                } else {
                    b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
                };
                let _ = s.write_all(answer).await;
            }
        });
        assert_eq!(probe(open, &CheckKind::Tcp, t).await, Ok(()));
        let http = |path: &str| CheckKind::Http {
            method: "GET".into(),
            path: path.into(),
            status: (200, 399),
            host: None,
        };
        assert_eq!(probe(open, &http("/healthz"), t).await, Ok(()));
        assert_eq!(
            probe(open, &http("/bad"), t).await,
            Err("status 503".into())
        );
        assert_eq!(
            probe(open, &http("/silent"), t).await,
            Err("timed out after 500ms".into())
        );
        // A port nobody listens on: the listener is gone once this one is dropped.
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let e = probe(closed, &CheckKind::Tcp, t).await.unwrap_err();
        assert!(e.starts_with("connect: "), "{e}");
        let grpc = CheckKind::Grpc {
            service: String::new(),
        };
        assert!(
            probe(closed, &grpc, t)
                .await
                .unwrap_err()
                .starts_with("connect: ")
        );
        server.abort();
    }
}

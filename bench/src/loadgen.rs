//! Bounded load generators run from the client namespaces: short TCP connections per
//! second, request/response latency over persistent connections, and a small-datagram UDP
//! flood counted at the backends. Every loop ends at its deadline or its count, whichever
//! comes first.

use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};
use xlb_testbed::Testbed;

use crate::servers::Servers;
use crate::stats::percentile;

/// The request of every exchange; the echo server sends it back.
const MSG: [u8; 16] = *b"xlb-bench-ping!\n";
const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// Upper bounds per thread, beyond the deadline.
const MAX_CONNS: u64 = 2_000_000;
const MAX_EXCHANGES: usize = 5_000_000;
const MAX_DATAGRAMS: u64 = 500_000_000;
/// Threads per client namespace opening short connections.
const CONN_THREADS: usize = 4;
/// UDP sockets (flows) per client namespace, sent from by one thread in turn.
const UDP_FLOWS: usize = 4;
/// Payload of a small datagram: with UDP, IPv4 and Ethernet headers, a 60-byte frame.
const DATAGRAM: [u8; 18] = [0x5a; 18];

#[derive(Debug, Clone, Copy, Default)]
pub struct ConnRate {
    pub per_s: f64,
    pub errors: u64,
}

/// Every client opens short connections to `vip` for `secs` from [`CONN_THREADS`] threads:
/// connect, send 16 bytes, read the 16-byte echo, close.
pub fn conn_rate(tb: &Testbed, vip: SocketAddr, secs: Duration) -> Result<ConnRate> {
    let start = Instant::now();
    let deadline = start + secs;
    let per_thread = per_client_threads(tb, CONN_THREADS, || {
        let (mut ok, mut errors) = (0u64, 0u64);
        while Instant::now() < deadline && ok + errors < MAX_CONNS {
            match one_exchange(vip) {
                Ok(()) => ok += 1,
                Err(_) => {
                    errors += 1;
                    thread::sleep(Duration::from_millis(1));
                }
            }
        }
        (ok, errors)
    })?;
    let elapsed = start.elapsed().as_secs_f64();
    let ok: u64 = per_thread.iter().map(|r| r.0).sum();
    Ok(ConnRate {
        per_s: ok as f64 / elapsed,
        errors: per_thread.iter().map(|r| r.1).sum(),
    })
}

fn one_exchange(vip: SocketAddr) -> std::io::Result<()> {
    let mut s = TcpStream::connect_timeout(&vip, IO_TIMEOUT)?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.write_all(&MSG)?;
    let mut back = [0u8; MSG.len()];
    s.read_exact(&mut back)
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Latency {
    pub p50_us: f64,
    pub p99_us: f64,
    pub exchanges: usize,
}

/// One persistent connection per client; each sends 16 bytes and waits for the echo, again
/// and again for `secs`. Percentiles of all exchanges of all clients.
pub fn latency(tb: &Testbed, vip: SocketAddr, secs: Duration) -> Result<Latency> {
    let deadline = Instant::now() + secs;
    let per_client = per_client_threads(tb, 1, || -> std::io::Result<Vec<f64>> {
        let mut s = TcpStream::connect_timeout(&vip, IO_TIMEOUT)?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(IO_TIMEOUT))?;
        let mut back = [0u8; MSG.len()];
        let mut samples = Vec::with_capacity(1 << 16);
        while Instant::now() < deadline && samples.len() < MAX_EXCHANGES {
            let t = Instant::now();
            s.write_all(&MSG)?;
            s.read_exact(&mut back)?;
            samples.push(t.elapsed().as_secs_f64() * 1e6);
        }
        Ok(samples)
    })?;
    let mut all = Vec::new();
    for r in per_client {
        all.extend(r?);
    }
    let pct = |p| percentile(&all, p).ok_or_else(|| anyhow!("no exchange completed"));
    Ok(Latency {
        p50_us: pct(50.0)?,
        p99_us: pct(99.0)?,
        exchanges: all.len(),
    })
}

/// Every client sends small datagrams to `vip` from [`UDP_FLOWS`] sockets as fast as it
/// can for `secs`; the figure is datagrams counted by the backends' sinks per second.
pub fn udp_rate(tb: &Testbed, servers: &Servers, vip: SocketAddr, secs: Duration) -> Result<f64> {
    let before = servers.udp_received();
    let start = Instant::now();
    let deadline = start + secs;
    per_client_threads(tb, 1, || -> std::io::Result<u64> {
        let socks = (0..UDP_FLOWS)
            .map(|_| {
                let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
                s.connect(vip)?;
                Ok(s)
            })
            .collect::<std::io::Result<Vec<_>>>()?;
        let mut sent = 0u64;
        while Instant::now() < deadline && sent < MAX_DATAGRAMS {
            for s in &socks {
                // A full socket or device queue (ENOBUFS) drops the datagram: that is load.
                let _ = s.send(&DATAGRAM);
                sent += 1;
            }
        }
        Ok(sent)
    })?;
    let elapsed = start.elapsed().as_secs_f64();
    thread::sleep(Duration::from_millis(300)); // datagrams still queued reach the sinks
    Ok((servers.udp_received() - before) as f64 / elapsed)
}

/// Runs `f` on `threads` threads in each client's namespace at once; all results.
fn per_client_threads<T: Send, F: Fn() -> T + Sync>(
    tb: &Testbed,
    threads: usize,
    f: F,
) -> Result<Vec<T>> {
    thread::scope(|s| {
        let handles: Vec<_> = tb
            .clients()
            .iter()
            .flat_map(|c| (0..threads).map(move |_| c))
            .map(|c| s.spawn(|| c.ns.run(&f)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().map_err(|_| anyhow!("a load thread panicked"))?)
            .collect()
    })
}

/// Until every client has had `n` exchanges through `vip` answered (neighbours resolved,
/// proxies accepting), within `within`.
pub fn warm_up(tb: &Testbed, vip: SocketAddr, n: usize, within: Duration) -> Result<()> {
    let deadline = Instant::now() + within;
    let ok = per_client_threads(tb, 1, || {
        let mut ok = 0;
        while ok < n && Instant::now() < deadline {
            match one_exchange(vip) {
                Ok(()) => ok += 1,
                Err(_) => thread::sleep(Duration::from_millis(50)),
            }
        }
        ok
    })?;
    if ok.iter().any(|&k| k < n) {
        return Err(anyhow!(
            "warm-up through {vip}: answered exchanges per client {ok:?}, wanted {n} each"
        ));
    }
    Ok(())
}

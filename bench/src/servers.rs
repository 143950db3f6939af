//! Backend-side servers for the end-to-end figures, on threads of the benchmark in each
//! backend namespace: a TCP echo server (a pool of workers, each serving one connection at a
//! time) and a UDP sink that counts datagrams. They stop when [`Servers`] drops.

use std::io::{ErrorKind, Read as _, Write as _};
use std::net::{Ipv4Addr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context as _, Result};
use xlb_testbed::Testbed;

/// How often a blocked server thread looks at the stop flag.
const POLL: Duration = Duration::from_millis(100);
/// Echo workers per backend: more than the connections one backend has at once.
const WORKERS: usize = 24;

pub struct Servers {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    /// Datagrams received, per backend.
    udp: Vec<Arc<AtomicU64>>,
}

impl Servers {
    /// TCP echo and UDP sink on `port` in every backend of `tb`.
    pub fn start(tb: &Testbed, port: u16) -> Result<Servers> {
        let mut s = Servers {
            stop: Arc::new(AtomicBool::new(false)),
            threads: Vec::new(),
            udp: Vec::new(),
        };
        for b in tb.backends() {
            let (tcp, udp) = b.ns.run(|| -> Result<_> {
                let any = (Ipv4Addr::UNSPECIFIED, port);
                let tcp = TcpListener::bind(any).context("binding the echo server")?;
                let udp = UdpSocket::bind(any).context("binding the UDP sink")?;
                Ok((tcp, udp))
            })??;
            tcp.set_nonblocking(true)?;
            udp.set_read_timeout(Some(POLL))?;
            for _ in 0..WORKERS {
                let (l, stop) = (tcp.try_clone()?, s.stop.clone());
                s.threads
                    .push(std::thread::spawn(move || echo_worker(&l, &stop)));
            }
            let count = Arc::new(AtomicU64::new(0));
            let (c, stop) = (count.clone(), s.stop.clone());
            s.threads
                .push(std::thread::spawn(move || sink(&udp, &c, &stop)));
            s.udp.push(count);
        }
        Ok(s)
    }

    /// Datagrams received so far by all backends' sinks.
    pub fn udp_received(&self) -> u64 {
        self.udp.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Waits until the listener is readable (or [`POLL`] passes), then tries to accept.
fn echo_worker(listener: &TcpListener, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        let mut pfd = libc::pollfd {
            fd: listener.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the duration of the call.
        if unsafe { libc::poll(&mut pfd, 1, POLL.as_millis() as i32) } <= 0 {
            continue;
        }
        if let Ok((conn, _)) = listener.accept() {
            let _ = echo(conn, stop);
        }
    }
}

/// Sends back every byte received until the peer closes or the servers stop.
fn echo(mut conn: TcpStream, stop: &AtomicBool) -> std::io::Result<()> {
    conn.set_nonblocking(false)?;
    conn.set_nodelay(true)?;
    conn.set_read_timeout(Some(POLL))?;
    let mut buf = [0u8; 4096];
    while !stop.load(Ordering::Relaxed) {
        match conn.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => conn.write_all(&buf[..n])?,
            Err(e) if is_timeout(&e) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn sink(socket: &UdpSocket, count: &AtomicU64, stop: &AtomicBool) {
    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::Relaxed) {
        match socket.recv(&mut buf) {
            Ok(_) => {
                count.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) if is_timeout(&e) => {}
            Err(_) => std::thread::sleep(POLL),
        }
    }
}

pub fn is_timeout(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

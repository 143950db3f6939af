//! Test servers that answer with their backend's id, so a client can tell which backend
//! served it. They run on threads of the test process in a backend namespace and stop when
//! the testbed drops (or, started with [`Testbed::start_id_server_in`], when their
//! [`IdServer`] handle stops or drops). A TCP connection whose first line is an HTTP/1.x
//! request line gets an HTTP answer instead: `200 OK` with the id as the body, then close
//! (what an http health check asks).

use std::io::{BufRead as _, BufReader, ErrorKind, Write as _};
use std::net::{Ipv4Addr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use anyhow::{Context as _, Result};

use crate::netns::Netns;
use crate::topology::Testbed;

/// How often a server thread looks at the stop flag.
const POLL: Duration = Duration::from_millis(100);
/// The most bytes one request line may have.
const MAX_LINE: usize = 4096;

/// The id that backend `j`'s servers answer with.
pub fn backend_id(j: usize) -> String {
    format!("backend-{j}")
}

impl Testbed {
    /// Starts, in backend `j`'s namespace, a TCP server on `port` that answers every line
    /// with `<backend-id>\n`, and a UDP server on the same port that answers every datagram
    /// with `<backend-id>` (see [`backend_id`]); each on IPv4 and on IPv6.
    pub fn spawn_id_server(&self, j: usize, port: u16) -> Result<()> {
        self.spawn_id_server_in(&self.backend(j).ns, &backend_id(j), port)
    }

    /// The same servers in any namespace of this testbed, answering with `id`.
    pub fn spawn_id_server_in(&self, ns: &Netns, id: &str, port: u16) -> Result<()> {
        spawn_id_servers(ns, id, port, &self.stop, &self.threads)
    }

    /// Like [`Testbed::spawn_id_server`], but the servers stop (and their sockets close)
    /// when the returned handle stops or drops, so a test can take one backend's server
    /// away and bring it back.
    pub fn start_id_server(&self, j: usize, port: u16) -> Result<IdServer> {
        self.start_id_server_in(&self.backend(j).ns, &backend_id(j), port)
    }

    /// [`Testbed::start_id_server`] in any namespace, answering with `id`.
    pub fn start_id_server_in(&self, ns: &Netns, id: &str, port: u16) -> Result<IdServer> {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = serve_id(ns, id, port, &stop)?;
        Ok(IdServer { stop, threads })
    }
}

/// Id servers answering `id` on `port` in `ns`, stopped by the returned handle (the
/// cluster testbed's backends).
pub(crate) fn start_id_servers(ns: &Netns, id: &str, port: u16) -> Result<IdServer> {
    let stop = Arc::new(AtomicBool::new(false));
    let threads = serve_id(ns, id, port, &stop)?;
    Ok(IdServer { stop, threads })
}

/// Id servers of their own (see [`Testbed::start_id_server`]).
#[derive(Debug)]
pub struct IdServer {
    stop: Arc<AtomicBool>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl IdServer {
    /// Stops the servers and waits for their threads: the port is closed (connections to
    /// it are refused) and the connections they served are closed when this returns.
    pub fn stop(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for IdServer {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// Binds the TCP and UDP id servers on `port` (IPv4 and IPv6) in `ns` and serves them on
/// threads until `stop` is set.
fn serve_id(
    ns: &Netns,
    id: &str,
    port: u16,
    stop: &Arc<AtomicBool>,
) -> Result<Vec<thread::JoinHandle<()>>> {
    let sockets = ns.run(|| -> Result<_> {
        let any = (Ipv4Addr::UNSPECIFIED, port);
        let tcp = TcpListener::bind(any).context("binding the TCP id server")?;
        let udp = UdpSocket::bind(any).context("binding the UDP id server")?;
        let tcp6 = TcpListener::from(v6only_socket(libc::SOCK_STREAM, port)?);
        let udp6 = UdpSocket::from(v6only_socket(libc::SOCK_DGRAM, port)?);
        for t in [&tcp, &tcp6] {
            t.set_nonblocking(true)?;
        }
        for u in [&udp, &udp6] {
            u.set_read_timeout(Some(POLL))?;
        }
        Ok([(tcp, udp), (tcp6, udp6)])
    })??;
    let mut threads = Vec::new();
    for (tcp, udp) in sockets {
        let (id_t, id_u) = (id.to_owned(), id.to_owned());
        let (stop_t, stop_u) = (stop.clone(), stop.clone());
        threads.push(thread::spawn(move || serve_tcp(tcp, &id_t, &stop_t)));
        threads.push(thread::spawn(move || serve_udp(udp, &id_u, &stop_u)));
    }
    Ok(threads)
}

/// The id servers of [`Testbed::spawn_id_server`] in `ns`, on threads pushed to `threads`
/// that end once `stop` is set (the VM testbed shares them).
pub(crate) fn spawn_id_servers(
    ns: &Netns,
    id: &str,
    port: u16,
    stop: &Arc<AtomicBool>,
    threads: &Mutex<Vec<JoinHandle<()>>>,
) -> Result<()> {
    let started = serve_id(ns, id, port, stop)?;
    threads.lock().expect("threads lock").extend(started);
    Ok(())
}

/// A socket of `kind` bound to `[::]:port` for IPv6 only (std cannot set IPV6_V6ONLY
/// before binding), so that it sits beside the IPv4 one on the same port; TCP ones listen.
fn v6only_socket(kind: libc::c_int, port: u16) -> Result<OwnedFd> {
    let err = |what: &str| anyhow::anyhow!("{what}: {}", std::io::Error::last_os_error());
    // SAFETY: plain socket(2); the result is checked and owned at once.
    let fd = unsafe { libc::socket(libc::AF_INET6, kind | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(err("socket(AF_INET6)"));
    }
    // SAFETY: `fd` is a socket we just made and nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let on: libc::c_int = 1;
    let setopt = |level, opt, what: &str| {
        let len = std::mem::size_of_val(&on) as libc::socklen_t;
        let on_ptr = (&on as *const libc::c_int).cast();
        // SAFETY: a valid socket, and an int option's pointer and length.
        let rc = unsafe { libc::setsockopt(fd.as_raw_fd(), level, opt, on_ptr, len) };
        if rc == 0 { Ok(()) } else { Err(err(what)) }
    };
    setopt(
        libc::IPPROTO_IPV6,
        libc::IPV6_V6ONLY,
        "setsockopt(IPV6_V6ONLY)",
    )?;
    setopt(
        libc::SOL_SOCKET,
        libc::SO_REUSEADDR,
        "setsockopt(SO_REUSEADDR)",
    )?;
    // SAFETY: all-zero is a valid sockaddr_in6 (the unspecified address, port 0).
    let mut addr: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
    addr.sin6_family = libc::AF_INET6 as libc::sa_family_t;
    addr.sin6_port = port.to_be();
    let (sa, sa_len) = (
        (&addr as *const libc::sockaddr_in6).cast(),
        std::mem::size_of_val(&addr) as libc::socklen_t,
    );
    // SAFETY: a valid socket and a sockaddr_in6 of the given length.
    if unsafe { libc::bind(fd.as_raw_fd(), sa, sa_len) } != 0 {
        return Err(err(&format!("binding [::]:{port}")));
    }
    // SAFETY: a valid, bound stream socket.
    if kind == libc::SOCK_STREAM && unsafe { libc::listen(fd.as_raw_fd(), 128) } != 0 {
        return Err(err("listen"));
    }
    Ok(fd)
}

fn serve_tcp(listener: TcpListener, id: &str, stop: &Arc<AtomicBool>) {
    let mut conns = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, _)) => {
                let (id, stop) = (id.to_owned(), stop.clone());
                conns.push(thread::spawn(move || {
                    let _ = serve_conn(stream, &id, &stop);
                }));
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => thread::sleep(Duration::from_millis(5)),
            Err(_) => thread::sleep(POLL),
        }
        conns.retain(|c: &thread::JoinHandle<()>| !c.is_finished());
    }
    for c in conns {
        let _ = c.join();
    }
}

/// Answers each line on one connection until the peer closes it or the testbed stops.
fn serve_conn(stream: TcpStream, id: &str, stop: &AtomicBool) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(POLL))?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        match reader.read_until(b'\n', &mut line) {
            Ok(0) => return Ok(()),
            Ok(_) if line.ends_with(b"\n") && is_http_request(&line) => {
                return answer_http(&mut reader, &mut writer, id, stop);
            }
            Ok(_) if line.ends_with(b"\n") => {
                writer.write_all(format!("{id}\n").as_bytes())?;
                line.clear();
            }
            Ok(_) => return Ok(()), // EOF after a partial line
            Err(e) if is_timeout(&e) => {}
            Err(e) => return Err(e),
        }
        if line.len() > MAX_LINE {
            return Ok(());
        }
    }
    Ok(())
}

/// `GET /path HTTP/1.1` and the like: a method in capitals, a path, an HTTP version.
fn is_http_request(line: &[u8]) -> bool {
    let line = String::from_utf8_lossy(line);
    let words: Vec<&str> = line.split_whitespace().collect();
    matches!(words.as_slice(), [method, path, version]
        if method.bytes().all(|b| b.is_ascii_uppercase())
            && path.starts_with('/')
            && version.starts_with("HTTP/1."))
}

/// Reads the request's headers up to the blank line, answers `200 OK` with the id, and
/// returns (the connection closes).
fn answer_http(
    reader: &mut BufReader<TcpStream>,
    writer: &mut TcpStream,
    id: &str,
    stop: &AtomicBool,
) -> std::io::Result<()> {
    let mut header = Vec::new();
    let mut lines = 0;
    while !stop.load(Ordering::Relaxed) && lines < 100 {
        match reader.read_until(b'\n', &mut header) {
            Ok(0) => return Ok(()),
            Ok(_) if header.ends_with(b"\n") => {
                if header == b"\r\n" || header == b"\n" {
                    let body = format!("{id}\n");
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    return writer.write_all(answer.as_bytes());
                }
                header.clear();
                lines += 1;
            }
            Ok(_) => return Ok(()),
            Err(e) if is_timeout(&e) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn serve_udp(socket: UdpSocket, id: &str, stop: &AtomicBool) {
    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::Relaxed) {
        match socket.recv_from(&mut buf) {
            Ok((_, from)) => {
                let _ = socket.send_to(id.as_bytes(), from);
            }
            Err(e) if is_timeout(&e) => {}
            Err(_) => thread::sleep(POLL),
        }
    }
}

pub(crate) fn is_timeout(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

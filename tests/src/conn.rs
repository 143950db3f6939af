//! Connections that stay open: a TCP connection or a connected UDP socket made in a client
//! namespace, which can ask its server for the backend id again and again (the socket stays
//! in the namespace it was made in, so any thread may use it afterwards).

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpStream, UdpSocket};
use std::thread;
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};

use crate::netns::Netns;
use crate::servers::is_timeout;
use crate::topology::Testbed;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const READ_TIMEOUT: Duration = Duration::from_secs(3);
/// UDP has no retransmission: each datagram is tried this many times, waiting
/// `READ_TIMEOUT / UDP_TRIES` each (the first packet of a flow may be dropped while the LB
/// resolves the backend's MAC address).
const UDP_TRIES: u32 = 3;

/// An open TCP connection to an id server (directly or through a VIP).
#[derive(Debug)]
pub struct TcpConn {
    local: SocketAddr,
    peer: SocketAddr,
    writer: TcpStream,
    reader: BufReader<TcpStream>,
    sent: usize,
}

impl TcpConn {
    /// Connects from `ns` to `addr`; reads and writes time out after 3 s.
    pub fn connect(ns: &Netns, addr: SocketAddr) -> Result<TcpConn> {
        let stream = ns
            .run(|| TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT))?
            .with_context(|| format!("TCP connect to {addr} from {}", ns.name()))?;
        stream.set_read_timeout(Some(READ_TIMEOUT))?;
        stream.set_write_timeout(Some(READ_TIMEOUT))?;
        Ok(TcpConn {
            local: stream.local_addr()?,
            peer: addr,
            writer: stream.try_clone()?,
            reader: BufReader::new(stream),
            sent: 0,
        })
    }

    /// This end's address (the client address and port the backend sees).
    pub fn local(&self) -> SocketAddr {
        self.local
    }

    /// Sends one line and returns the answer line without its newline: the id of the
    /// backend that holds this connection.
    pub fn ask(&mut self) -> Result<String> {
        let (local, peer, i) = (self.local, self.peer, self.sent);
        self.sent += 1;
        self.writer
            .write_all(format!("hello {i}\n").as_bytes())
            .with_context(|| format!("TCP {local} -> {peer}: sending line {i}"))?;
        let mut answer = String::new();
        let n = self
            .reader
            .read_line(&mut answer)
            .with_context(|| format!("TCP {local} -> {peer}: reading answer {i}"))?;
        if n == 0 {
            bail!("TCP {local} -> {peer}: closed by the peer after {i} answers");
        }
        Ok(answer.trim_end().to_owned())
    }

    /// Closes the connection in an orderly way (FIN), rather than leaving it to drop.
    pub fn close(self) {
        let _ = self.writer.shutdown(Shutdown::Both);
    }
}

/// A UDP socket connected to an id server: one flow, for as long as it is kept. Answers
/// from any other address than the server's are not accepted.
#[derive(Debug)]
pub struct UdpConn {
    local: SocketAddr,
    peer: SocketAddr,
    socket: UdpSocket,
    sent: usize,
}

impl UdpConn {
    /// Binds an ephemeral port in `ns` and connects it to `addr`.
    pub fn connect(ns: &Netns, addr: SocketAddr) -> Result<UdpConn> {
        let any: IpAddr = if addr.is_ipv6() {
            Ipv6Addr::UNSPECIFIED.into()
        } else {
            Ipv4Addr::UNSPECIFIED.into()
        };
        let socket = ns.run(|| UdpSocket::bind((any, 0)))??;
        socket.connect(addr)?;
        socket.set_read_timeout(Some(READ_TIMEOUT / UDP_TRIES))?;
        Ok(UdpConn {
            local: socket.local_addr()?,
            peer: addr,
            socket,
            sent: 0,
        })
    }

    pub fn local(&self) -> SocketAddr {
        self.local
    }

    /// Sends one datagram (up to [`UDP_TRIES`] times) and returns the answer: the id of the
    /// backend that holds this flow.
    pub fn ask(&mut self) -> Result<String> {
        let (local, peer, i) = (self.local, self.peer, self.sent);
        self.sent += 1;
        let mut buf = [0u8; 2048];
        for _ in 0..UDP_TRIES {
            self.socket.send(format!("hello {i}").as_bytes())?;
            match self.socket.recv(&mut buf) {
                Ok(n) => return Ok(String::from_utf8_lossy(&buf[..n]).into_owned()),
                Err(e) if is_timeout(&e) => {}
                Err(e) => return Err(e).context(format!("UDP {local} -> {peer}")),
            }
        }
        bail!("UDP {local} -> {peer}: no answer to datagram {i} after {UDP_TRIES} tries")
    }
}

/// Asks every connection once, all at the same time (a thread each), so that broken ones
/// cost one read timeout in all rather than one each. The answers, in the same order.
pub fn ask_all(conns: &mut [TcpConn]) -> Vec<Result<String>> {
    thread::scope(|s| {
        let asking: Vec<_> = conns.iter_mut().map(|c| s.spawn(|| c.ask())).collect();
        asking
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow!("asking thread panicked")))
            })
            .collect()
    })
}

impl Testbed {
    /// A TCP connection from client `k` to `addr`.
    pub fn tcp_conn(&self, k: usize, addr: SocketAddr) -> Result<TcpConn> {
        TcpConn::connect(&self.client(k).ns, addr)
    }

    /// A UDP flow from client `k` to `addr`.
    pub fn udp_conn(&self, k: usize, addr: SocketAddr) -> Result<UdpConn> {
        UdpConn::connect(&self.client(k).ns, addr)
    }
}

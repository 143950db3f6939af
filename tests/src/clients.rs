//! Test clients: one TCP connection or one UDP socket (a "flow") from a client namespace,
//! sending a bounded number of messages and collecting the backend ids that answer.

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::thread;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};

use crate::netns::Netns;
use crate::servers::is_timeout;
use crate::topology::Testbed;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const READ_TIMEOUT: Duration = Duration::from_secs(3);
/// UDP has no retransmission: each datagram is tried this many times, waiting
/// `READ_TIMEOUT / UDP_TRIES` each (the first packet of a flow may be dropped while the LB
/// resolves the backend's MAC address).
const UDP_TRIES: u32 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Tcp,
    Udp,
}

/// One finished flow: its local address and the ids answered, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flow {
    pub local: SocketAddr,
    pub ids: Vec<String>,
}

impl Flow {
    /// The backend that served the flow, if all replies came from one backend.
    pub fn backend(&self) -> Option<&str> {
        let first = self.ids.first()?;
        self.ids
            .iter()
            .all(|i| i == first)
            .then_some(first.as_str())
    }
}

/// Opens a TCP connection from `ns` to `addr`, sends `lines` lines one at a time and reads
/// one answer line after each.
pub fn tcp_flow(ns: &Netns, addr: SocketAddr, lines: usize) -> Result<Flow> {
    ns.run(|| -> Result<Flow> {
        let stream = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)
            .with_context(|| format!("TCP connect to {addr} from {}", ns.name()))?;
        stream.set_read_timeout(Some(READ_TIMEOUT))?;
        stream.set_write_timeout(Some(READ_TIMEOUT))?;
        let local = stream.local_addr()?;
        let mut writer = stream.try_clone()?;
        let mut reader = BufReader::new(stream);
        let mut ids = Vec::with_capacity(lines);
        for i in 0..lines {
            writer.write_all(format!("hello {i}\n").as_bytes())?;
            let mut answer = String::new();
            let n = reader
                .read_line(&mut answer)
                .with_context(|| format!("TCP {local} -> {addr}: reading answer {i}"))?;
            if n == 0 {
                bail!("TCP {local} -> {addr}: closed after {i} of {lines} answers");
            }
            ids.push(answer.trim_end().to_owned());
        }
        Ok(Flow { local, ids })
    })?
}

/// Sends `datagrams` datagrams from one UDP socket in `ns` to `addr`, one at a time,
/// and collects the answers. The socket is connected, so answers from any other address
/// than `addr` are not accepted.
pub fn udp_flow(ns: &Netns, addr: SocketAddr, datagrams: usize) -> Result<Flow> {
    ns.run(|| -> Result<Flow> {
        let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
        socket.connect(addr)?;
        socket.set_read_timeout(Some(READ_TIMEOUT / UDP_TRIES))?;
        let local = socket.local_addr()?;
        let mut ids = Vec::with_capacity(datagrams);
        let mut buf = [0u8; 2048];
        for i in 0..datagrams {
            let mut answer = None;
            for _ in 0..UDP_TRIES {
                socket.send(format!("hello {i}").as_bytes())?;
                match socket.recv(&mut buf) {
                    Ok(n) => {
                        answer = Some(String::from_utf8_lossy(&buf[..n]).into_owned());
                        break;
                    }
                    Err(e) if is_timeout(&e) => {}
                    Err(e) => return Err(e).context(format!("UDP {local} -> {addr}")),
                }
            }
            match answer {
                Some(a) => ids.push(a),
                None => bail!("UDP {local} -> {addr}: no answer to datagram {i} of {datagrams}"),
            }
        }
        Ok(Flow { local, ids })
    })?
}

impl Testbed {
    /// One flow of `proto` from client `k` to `addr` with `messages` request/answer pairs.
    pub fn flow(&self, proto: Proto, k: usize, addr: SocketAddr, messages: usize) -> Result<Flow> {
        let ns = &self.client(k).ns;
        match proto {
            Proto::Tcp => tcp_flow(ns, addr, messages),
            Proto::Udp => udp_flow(ns, addr, messages),
        }
    }

    /// `per_client` flows from every client (clients in parallel, each client's flows one
    /// after another). Returns `(client index, result)` for every flow, by client.
    pub fn flows(
        &self,
        proto: Proto,
        addr: SocketAddr,
        per_client: usize,
        messages: usize,
    ) -> Vec<(usize, Result<Flow>)> {
        thread::scope(|s| {
            let handles: Vec<_> = (0..self.clients().len())
                .map(|k| {
                    s.spawn(move || {
                        (0..per_client)
                            .map(|_| (k, self.flow(proto, k, addr, messages)))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().expect("client thread panicked"))
                .collect()
        })
    }
}

/// How many flows each backend served, counting only flows served by one backend.
pub fn flows_per_backend<'a>(flows: impl IntoIterator<Item = &'a Flow>) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for backend in flows.into_iter().filter_map(Flow::backend) {
        *counts.entry(backend.to_owned()).or_insert(0) += 1;
    }
    counts
}

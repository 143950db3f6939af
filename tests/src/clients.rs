//! Test clients: one TCP connection or one UDP socket (a "flow") from a client namespace,
//! sending a bounded number of messages and collecting the backend ids that answer.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::thread;

use anyhow::Result;

use crate::conn::{TcpConn, UdpConn};
use crate::netns::Netns;
use crate::topology::Testbed;

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
    let mut conn = TcpConn::connect(ns, addr)?;
    let ids = (0..lines).map(|_| conn.ask()).collect::<Result<_>>()?;
    Ok(Flow {
        local: conn.local(),
        ids,
    })
}

/// Sends `datagrams` datagrams from one UDP socket in `ns` to `addr`, one at a time,
/// and collects the answers. The socket is connected, so answers from any other address
/// than `addr` are not accepted.
pub fn udp_flow(ns: &Netns, addr: SocketAddr, datagrams: usize) -> Result<Flow> {
    let mut conn = UdpConn::connect(ns, addr)?;
    let ids = (0..datagrams).map(|_| conn.ask()).collect::<Result<_>>()?;
    Ok(Flow {
        local: conn.local(),
        ids,
    })
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

/// Fails the test unless every flow was answered by one backend throughout.
pub fn assert_sticky(flows: &[Flow]) {
    for f in flows {
        assert!(
            f.backend().is_some(),
            "flow {} switched backends: {:?}",
            f.local,
            f.ids
        );
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

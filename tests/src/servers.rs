//! Test servers that answer with their backend's id, so a client can tell which backend
//! served it. They run on threads of the test process in a backend namespace and stop when
//! the testbed drops.

use std::io::{BufRead as _, BufReader, ErrorKind, Write as _};
use std::net::{Ipv4Addr, TcpListener, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
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
    /// with `<backend-id>` (see [`backend_id`]).
    pub fn spawn_id_server(&self, j: usize, port: u16) -> Result<()> {
        self.spawn_id_server_in(&self.backend(j).ns, &backend_id(j), port)
    }

    /// The same servers in any namespace of this testbed, answering with `id`.
    pub fn spawn_id_server_in(&self, ns: &Netns, id: &str, port: u16) -> Result<()> {
        let (tcp, udp) = ns.run(|| -> Result<_> {
            let any = (Ipv4Addr::UNSPECIFIED, port);
            let tcp = TcpListener::bind(any).context("binding the TCP id server")?;
            let udp = UdpSocket::bind(any).context("binding the UDP id server")?;
            tcp.set_nonblocking(true)?;
            udp.set_read_timeout(Some(POLL))?;
            Ok((tcp, udp))
        })??;
        let (id_t, id_u) = (id.to_owned(), id.to_owned());
        let (stop_t, stop_u) = (self.stop.clone(), self.stop.clone());
        let mut threads = self.threads.lock().expect("threads lock");
        threads.push(thread::spawn(move || serve_tcp(tcp, &id_t, &stop_t)));
        threads.push(thread::spawn(move || serve_udp(udp, &id_u, &stop_u)));
        Ok(())
    }
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

//! The network devices of the daemon's namespace: name, index, whether up, and what XDP
//! actions each driver supports (the kernel's `netdev` generic-netlink family, Linux 6.3+;
//! on older kernels the features are unknown).

use std::collections::HashMap;
use std::ffi::CStr;
use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};

/// `NETDEV_XDP_ACT_NDO_XMIT`: the device can transmit frames redirected to it by XDP.
pub const XDP_ACT_NDO_XMIT: u64 = 1 << 2;

/// One network device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Device {
    pub ifindex: u32,
    pub name: String,
    pub up: bool,
    pub loopback: bool,
    /// `NETDEV_XDP_ACT_*` bits; `None` when the kernel has no `netdev` netlink family.
    pub xdp_features: Option<u64>,
}

/// Every device of the calling thread's network namespace.
pub fn devices() -> io::Result<Vec<Device>> {
    let features = match xdp_features() {
        Ok(f) => Some(f),
        // No `netdev` family (kernel before 6.3): features unknown.
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => None,
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for (name, flags) in links()? {
        let Ok(c) = std::ffi::CString::new(name.as_str()) else {
            continue;
        };
        // SAFETY: `c` is NUL-terminated.
        let ifindex = unsafe { libc::if_nametoindex(c.as_ptr()) };
        if ifindex == 0 {
            continue; // gone meanwhile
        }
        out.push(Device {
            ifindex,
            name,
            up: flags & libc::IFF_UP as u32 != 0,
            loopback: flags & libc::IFF_LOOPBACK as u32 != 0,
            xdp_features: features
                .as_ref()
                .map(|f| f.get(&ifindex).copied().unwrap_or(0)),
        });
    }
    out.sort_by_key(|d| d.ifindex);
    Ok(out)
}

/// Names and flags of every link (getifaddrs lists each once with an AF_PACKET address).
fn links() -> io::Result<Vec<(String, u32)>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list that freeifaddrs releases below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut out = Vec::new();
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, not yet freed.
        let ifa = unsafe { &*cur };
        // SAFETY: a non-null ifa_addr points to a sockaddr at least as large as its family field.
        let packet = !ifa.ifa_addr.is_null()
            && unsafe { (*ifa.ifa_addr).sa_family } as i32 == libc::AF_PACKET;
        if packet {
            // SAFETY: ifa_name is a NUL-terminated string owned by the list.
            let name = unsafe { CStr::from_ptr(ifa.ifa_name) };
            out.push((name.to_string_lossy().into_owned(), ifa.ifa_flags));
        }
        cur = ifa.ifa_next;
    }
    // SAFETY: `head` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    Ok(out)
}

// Generic netlink, as much as the two requests below need.
const GENL_ID_CTRL: u16 = 0x10;
const CTRL_CMD_GETFAMILY: u8 = 3;
const CTRL_ATTR_FAMILY_ID: u16 = 1;
const CTRL_ATTR_FAMILY_NAME: u16 = 2;
const NETDEV_CMD_DEV_GET: u8 = 1;
const NETDEV_A_DEV_IFINDEX: u16 = 1;
const NETDEV_A_DEV_XDP_FEATURES: u16 = 3;
const NLMSG_HDR: usize = 16;
const GENL_HDR: usize = 4;
const NLA_HDR: usize = 4;
const NLA_TYPE_MASK: u16 = 0x3fff;

/// XDP feature bits by ifindex; `ENOENT` when the kernel has no `netdev` family.
fn xdp_features() -> io::Result<HashMap<u32, u64>> {
    let sock = Socket::open(libc::NETLINK_GENERIC)?;
    let name = b"netdev\0";
    sock.send(&request(GENL_ID_CTRL, 0, CTRL_CMD_GETFAMILY, 1, |b| {
        attr(b, CTRL_ATTR_FAMILY_NAME, name)
    }))?;
    let mut family = None;
    sock.receive(|_, attrs| {
        if let Some(id) = find(attrs, CTRL_ATTR_FAMILY_ID).and_then(u16_of) {
            family = Some(id);
        }
    })?;
    let family = family.ok_or_else(|| io::Error::from_raw_os_error(libc::ENOENT))?;
    let dump = (libc::NLM_F_DUMP) as u16;
    sock.send(&request(family, dump, NETDEV_CMD_DEV_GET, 1, |_| {}))?;
    let mut out = HashMap::new();
    sock.receive(|_, attrs| {
        let index = find(attrs, NETDEV_A_DEV_IFINDEX).and_then(u32_of);
        let features = find(attrs, NETDEV_A_DEV_XDP_FEATURES).and_then(u64_of);
        if let (Some(i), Some(f)) = (index, features) {
            out.insert(i, f);
        }
    })?;
    Ok(out)
}

/// A generic-netlink request: netlink header, genl header, then what `body` appends.
fn request(
    family: u16,
    flags: u16,
    cmd: u8,
    version: u8,
    body: impl FnOnce(&mut Vec<u8>),
) -> Vec<u8> {
    message(family, flags, &[cmd, version, 0, 0], body)
}

/// A netlink request of type `kind`: the netlink header (with `NLM_F_REQUEST` and
/// `flags`), the family's fixed header `head` (genl, `rtmsg`, `ndmsg`), then what `body`
/// appends (attributes).
pub(crate) fn message(
    kind: u16,
    flags: u16,
    head: &[u8],
    body: impl FnOnce(&mut Vec<u8>),
) -> Vec<u8> {
    let mut b = vec![0u8; NLMSG_HDR];
    b.extend_from_slice(head);
    body(&mut b);
    let len = b.len() as u32;
    b[0..4].copy_from_slice(&len.to_ne_bytes());
    b[4..6].copy_from_slice(&kind.to_ne_bytes());
    b[6..8].copy_from_slice(&(libc::NLM_F_REQUEST as u16 | flags).to_ne_bytes());
    b[8..12].copy_from_slice(&1u32.to_ne_bytes()); // sequence number
    b
}

/// Sends one rtnetlink request on a fresh socket and reads its answer: `None` for a
/// successful acknowledgement, else the first message's type and body (after the netlink
/// header); an error acknowledgement is its errno.
pub(crate) fn route_call(msg: &[u8]) -> io::Result<Option<(u16, Vec<u8>)>> {
    let mut first = None;
    route_each(msg, |kind, body| {
        first.get_or_insert_with(|| (kind, body.to_vec()));
    })?;
    Ok(first)
}

/// Sends one rtnetlink request (a dump, or a single request) on a fresh socket, calling
/// `each(type, body)` for every message of the answer (see [`Socket::receive_messages`]).
pub(crate) fn route_each(msg: &[u8], each: impl FnMut(u16, &[u8])) -> io::Result<()> {
    let sock = Socket::open(libc::NETLINK_ROUTE)?;
    sock.send(msg)?;
    sock.receive_messages(each)
}

/// An address's `AF_*` family byte and its bytes, as netlink messages carry them.
pub(crate) fn family_and_bytes(a: std::net::IpAddr) -> (u8, Vec<u8>) {
    match a {
        std::net::IpAddr::V4(a) => (libc::AF_INET as u8, a.octets().to_vec()),
        std::net::IpAddr::V6(a) => (libc::AF_INET6 as u8, a.octets().to_vec()),
    }
}

pub(crate) fn attr(b: &mut Vec<u8>, kind: u16, payload: &[u8]) {
    let len = (NLA_HDR + payload.len()) as u16;
    b.extend_from_slice(&len.to_ne_bytes());
    b.extend_from_slice(&kind.to_ne_bytes());
    b.extend_from_slice(payload);
    b.resize(b.len().next_multiple_of(4), 0);
}

/// The payload of the first attribute of `kind` in `attrs`.
pub(crate) fn find(mut attrs: &[u8], kind: u16) -> Option<&[u8]> {
    while attrs.len() >= NLA_HDR {
        let len = u16::from_ne_bytes([attrs[0], attrs[1]]) as usize;
        let t = u16::from_ne_bytes([attrs[2], attrs[3]]) & NLA_TYPE_MASK;
        if len < NLA_HDR || len > attrs.len() {
            return None;
        }
        if t == kind {
            return Some(&attrs[NLA_HDR..len]);
        }
        attrs = &attrs[len.next_multiple_of(4).min(attrs.len())..];
    }
    None
}

pub(crate) fn u16_of(p: &[u8]) -> Option<u16> {
    Some(u16::from_ne_bytes(p.get(..2)?.try_into().ok()?))
}

pub(crate) fn u32_of(p: &[u8]) -> Option<u32> {
    Some(u32::from_ne_bytes(p.get(..4)?.try_into().ok()?))
}

fn u64_of(p: &[u8]) -> Option<u64> {
    Some(u64::from_ne_bytes(p.get(..8)?.try_into().ok()?))
}

/// A netlink socket, closed on drop.
struct Socket(OwnedFd);

/// A netlink socket of `protocol` (e.g. `NETLINK_ROUTE`), with a 2 s receive timeout: a
/// kernel that never answers must not hang the daemon.
fn netlink_socket(protocol: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2) call.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            protocol,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a socket we just made and nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let tv = libc::timeval {
        tv_sec: 2,
        tv_usec: 0,
    };
    // SAFETY: `tv` is a valid timeval of the size given.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

impl Socket {
    /// A socket of netlink family `protocol` (`NETLINK_GENERIC`, `NETLINK_ROUTE`).
    fn open(protocol: libc::c_int) -> io::Result<Socket> {
        netlink_socket(protocol).map(Socket)
    }

    /// Sends one request to the kernel.
    fn send(&self, msg: &[u8]) -> io::Result<()> {
        // SAFETY: zeroed sockaddr_nl is valid; the kernel is pid 0.
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: `msg` and `addr` are valid for the lengths given.
        let rc = unsafe {
            libc::sendto(
                self.0.as_raw_fd(),
                msg.as_ptr().cast(),
                msg.len(),
                0,
                (&addr as *const libc::sockaddr_nl).cast(),
                size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Reads one datagram into `buf`: its length.
    fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: `buf` is valid for writes of its length.
        let n = unsafe { libc::recv(self.0.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    /// Reads the answer to the last generic-netlink request, calling `each(genl_cmd,
    /// attributes)` for every message (see [`Socket::receive_messages`]).
    fn receive(&self, mut each: impl FnMut(u8, &[u8])) -> io::Result<()> {
        self.receive_messages(|_, body| {
            if body.len() >= GENL_HDR {
                each(body[0], &body[GENL_HDR..]);
            }
        })
    }

    /// Reads the answer to the last request, calling `each(type, body)` for every message
    /// (the body after the netlink header), until the end of a dump or a single answer. A
    /// netlink error becomes Err.
    fn receive_messages(&self, mut each: impl FnMut(u16, &[u8])) -> io::Result<()> {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = self.recv(&mut buf)?;
            let mut msgs = &buf[..n];
            let mut multi = false;
            while msgs.len() >= NLMSG_HDR {
                let len = u32::from_ne_bytes(msgs[0..4].try_into().expect("4 bytes")) as usize;
                let kind = u16::from_ne_bytes([msgs[4], msgs[5]]);
                let flags = u16::from_ne_bytes([msgs[6], msgs[7]]);
                if len < NLMSG_HDR || len > msgs.len() {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "short netlink message",
                    ));
                }
                multi |= flags & libc::NLM_F_MULTI as u16 != 0;
                let body = &msgs[NLMSG_HDR..len];
                match kind as i32 {
                    libc::NLMSG_DONE => return Ok(()),
                    libc::NLMSG_ERROR => {
                        let code = body.get(..4).and_then(|b| b.try_into().ok());
                        let code = i32::from_ne_bytes(code.unwrap_or([0; 4]));
                        if code != 0 {
                            return Err(io::Error::from_raw_os_error(-code));
                        }
                        if !multi {
                            return Ok(()); // an acknowledgement
                        }
                    }
                    _ => each(kind, body),
                }
                msgs = &msgs[len.next_multiple_of(4).min(msgs.len())..];
            }
            if !multi {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_round_trip() {
        let mut b = Vec::new();
        attr(&mut b, 1, &7u32.to_ne_bytes());
        attr(&mut b, 2, b"netdev\0");
        attr(&mut b, 3, &(1u64 << 40 | 4).to_ne_bytes());
        assert_eq!(b.len() % 4, 0);
        assert_eq!(find(&b, 1).and_then(u32_of), Some(7));
        assert_eq!(find(&b, 2), Some(&b"netdev\0"[..]));
        assert_eq!(find(&b, 3).and_then(u64_of), Some(1 << 40 | 4));
        assert_eq!(find(&b, 4), None);
        // A length that runs past the buffer ends the walk.
        let mut bad = b.clone();
        bad[0] = 200;
        assert_eq!(find(&bad, 3), None);
    }

    #[test]
    fn requests_carry_their_length_and_flags() {
        let r = request(GENL_ID_CTRL, 0, CTRL_CMD_GETFAMILY, 1, |b| {
            attr(b, CTRL_ATTR_FAMILY_NAME, b"netdev\0")
        });
        assert_eq!(u32_of(&r).unwrap() as usize, r.len());
        assert_eq!(u16_of(&r[4..]).unwrap(), GENL_ID_CTRL);
        assert_eq!(u16_of(&r[6..]).unwrap(), libc::NLM_F_REQUEST as u16);
        assert_eq!(r[NLMSG_HDR], CTRL_CMD_GETFAMILY);
    }

    #[test]
    fn a_route_call_reads_a_message_or_an_errno() {
        // A route query for loopback's address: one RTM_NEWROUTE message.
        let mut rtmsg = [0u8; 12];
        rtmsg[0] = libc::AF_INET as u8;
        rtmsg[1] = 32;
        let q = message(26, 0, &rtmsg, |b| attr(b, 1, &[127, 0, 0, 1]));
        let (kind, body) = route_call(&q).unwrap().expect("a route message");
        assert_eq!(kind, 24);
        assert_eq!(body[7], 2, "a local route (RTN_LOCAL)");
        // Deleting a route that is not there: ESRCH.
        let del = message(25, libc::NLM_F_ACK as u16, &rtmsg, |b| {
            attr(b, 1, &[198, 18, 255, 254]);
            attr(b, 15, &7777u32.to_ne_bytes());
        });
        let e = route_call(&del).unwrap_err();
        assert!(
            matches!(e.raw_os_error(), Some(libc::ESRCH | libc::EPERM)),
            "{e}"
        );
    }

    #[test]
    fn lists_loopback_with_its_features() {
        let devs = devices().expect("devices");
        let lo = devs.iter().find(|d| d.name == "lo").expect("lo is listed");
        assert!(lo.loopback);
        assert_eq!(lo.ifindex, 1);
        // This kernel (6.18) has the netdev family; loopback cannot take XDP redirects.
        if let Some(f) = lo.xdp_features {
            assert_eq!(f & XDP_ACT_NDO_XMIT, 0);
        }
    }
}

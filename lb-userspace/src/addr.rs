//! Parsing and printing of the addresses operators type: a service `VIP:PORT/PROTO`
//! (`198.18.0.10:80/tcp`, `[2001:2::10]:80/udp`) and a backend `ADDR:PORT`
//! (`198.19.0.2:8080`, `[2001:2::2]:8080`), and their conversion to the map types.
//!
//! The CLI and the daemon use the same parser and the same rules, so both reject bad input
//! with the same one-line message. The rules ([`ServiceAddr::check_vip`],
//! [`BackendAddr::check_host`], [`ServiceAddr::check_backend`]) are apart from parsing so
//! that a service or backend can always be named, e.g. to remove it.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use lb_common::{Addr, Backend, FAMILY_V4, FAMILY_V6, PROTO_TCP, PROTO_UDP, ServiceKey};

use crate::limits::{cut, quoted};

/// Why an address did not parse or does not fit; the `Display` is the whole message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddrError {
    #[error("invalid service {}: {reason}", quoted(input))]
    Service { input: String, reason: Reason },
    #[error("invalid backend {}: {reason}", quoted(input))]
    Backend { input: String, reason: Reason },
    #[error(
        "backend {backend} is {} but service {service} is {} (no NAT between IPv4 and IPv6)",
        family_name(backend.ip()),
        family_name(service.ip)
    )]
    FamilyMismatch {
        service: ServiceAddr,
        backend: BackendAddr,
    },
    #[error(
        "backend {backend} has the address of service {service}: a backend cannot be a VIP (its packets would come back to the load balancer)"
    )]
    BackendIsVip {
        service: ServiceAddr,
        backend: BackendAddr,
    },
}

/// What is wrong with one address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Reason {
    #[error("expected VIP:PORT/PROTO, e.g. 198.18.0.10:80/tcp or [2001:2::10]:80/udp")]
    ServiceShape,
    #[error("expected ADDR:PORT, e.g. 198.19.0.2:8080 or [2001:2::2]:8080")]
    BackendShape,
    #[error("protocol {} is not tcp or udp", quoted(.0))]
    Proto(String),
    #[error("{} is not an IP address", quoted(.0))]
    Ip(String),
    #[error("IPv6 addresses need brackets: [{}]:PORT", cut(.0))]
    V6Brackets(String),
    #[error("port {} is not a number", quoted(.0))]
    PortNotNumber(String),
    #[error("port {0} out of range (1-65535)")]
    PortRange(u64),
    #[error("{0} is the unspecified address; a VIP or backend must be a unicast address")]
    Unspecified(IpAddr),
    #[error("{0} is the broadcast address; a VIP or backend must be a unicast address")]
    Broadcast(IpAddr),
    #[error(
        "{0} is a multicast address (224.0.0.0/4, ff00::/8); a VIP or backend must be a unicast address"
    )]
    Multicast(IpAddr),
    #[error("{0} is an IPv4-mapped IPv6 address (::ffff:0:0/96); write the IPv4 address {1}")]
    V4Mapped(Ipv6Addr, Ipv4Addr),
}

/// Why `ip` cannot be a VIP or a backend: it does not name one host. The one definition of
/// the rule for both.
pub fn not_one_host(ip: IpAddr) -> Option<Reason> {
    if ip.is_unspecified() {
        return Some(Reason::Unspecified(ip));
    }
    if ip.is_multicast() {
        return Some(Reason::Multicast(ip));
    }
    match ip {
        IpAddr::V4(v4) if v4 == Ipv4Addr::BROADCAST => Some(Reason::Broadcast(ip)),
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(|v4| Reason::V4Mapped(v6, v4)),
        IpAddr::V4(_) => None,
    }
}

fn family_name(ip: IpAddr) -> &'static str {
    if ip.is_ipv4() { "IPv4" } else { "IPv6" }
}

/// Transport protocol of a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub fn number(self) -> u8 {
        match self {
            Proto::Tcp => PROTO_TCP,
            Proto::Udp => PROTO_UDP,
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        })
    }
}

/// A virtual service `VIP:PORT/PROTO`. Ordered by address, port, protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceAddr {
    pub ip: IpAddr,
    pub port: u16,
    pub proto: Proto,
}

impl ServiceAddr {
    /// The `SERVICES` map key.
    pub fn key(&self) -> ServiceKey {
        let (vip, family) = wire_addr(self.ip);
        ServiceKey {
            vip,
            port_be: self.port.to_be(),
            proto: self.proto.number(),
            family,
        }
    }

    /// Checks that `backend` can serve this service: same address family, and not this
    /// service's VIP (whatever the port).
    pub fn check_backend(&self, backend: &BackendAddr) -> Result<(), AddrError> {
        if self.ip.is_ipv4() != backend.ip().is_ipv4() {
            return Err(AddrError::FamilyMismatch {
                service: *self,
                backend: *backend,
            });
        }
        self.check_not_vip_of(backend)
    }

    /// Checks that `backend` does not have this service's VIP as its address. The daemon
    /// checks a new backend against every service, and a new service against every backend.
    pub fn check_not_vip_of(&self, backend: &BackendAddr) -> Result<(), AddrError> {
        if self.ip == backend.ip() {
            return Err(AddrError::BackendIsVip {
                service: *self,
                backend: *backend,
            });
        }
        Ok(())
    }

    /// Checks that the VIP names one host: not unspecified, broadcast, multicast or an
    /// IPv4-mapped IPv6 address.
    pub fn check_vip(&self) -> Result<(), AddrError> {
        match not_one_host(self.ip) {
            Some(reason) => Err(AddrError::Service {
                input: self.to_string(),
                reason,
            }),
            None => Ok(()),
        }
    }
}

impl fmt::Display for ServiceAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", SocketAddr::new(self.ip, self.port), self.proto)
    }
}

impl FromStr for ServiceAddr {
    type Err = AddrError;

    fn from_str(s: &str) -> Result<Self, AddrError> {
        let err = |reason| AddrError::Service {
            input: s.to_string(),
            reason,
        };
        let (hostport, proto) = s.rsplit_once('/').ok_or(err(Reason::ServiceShape))?;
        let proto = match proto.to_ascii_lowercase().as_str() {
            "tcp" => Proto::Tcp,
            "udp" => Proto::Udp,
            _ => return Err(err(Reason::Proto(proto.to_string()))),
        };
        let (ip, port) = parse_host_port(hostport, Reason::ServiceShape).map_err(err)?;
        Ok(ServiceAddr { ip, port, proto })
    }
}

/// A backend `ADDR:PORT`. Ordered by address, then port (the table builder's sort key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackendAddr(pub SocketAddr);

impl BackendAddr {
    pub fn ip(&self) -> IpAddr {
        self.0.ip()
    }

    /// The `BACKENDS` map value.
    pub fn backend(&self) -> Backend {
        let (addr, family) = wire_addr(self.0.ip());
        Backend {
            addr,
            port_be: self.0.port().to_be(),
            family,
            _pad: 0,
        }
    }
}

impl BackendAddr {
    /// Checks that the address names one host (the rule of [`ServiceAddr::check_vip`]).
    pub fn check_host(&self) -> Result<(), AddrError> {
        match not_one_host(self.ip()) {
            Some(reason) => Err(AddrError::Backend {
                input: self.to_string(),
                reason,
            }),
            None => Ok(()),
        }
    }
}

impl fmt::Display for BackendAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for BackendAddr {
    type Err = AddrError;

    fn from_str(s: &str) -> Result<Self, AddrError> {
        let (ip, port) =
            parse_host_port(s, Reason::BackendShape).map_err(|reason| AddrError::Backend {
                input: s.to_string(),
                reason,
            })?;
        Ok(BackendAddr(SocketAddr::new(ip, port)))
    }
}

/// Splits `ADDR:PORT` or `[V6]:PORT`; `shape` is the error for input of the wrong form.
fn parse_host_port(s: &str, shape: Reason) -> Result<(IpAddr, u16), Reason> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or(shape.clone())?;
        let port = after.strip_prefix(':').ok_or(shape)?;
        let ip: std::net::Ipv6Addr = host.parse().map_err(|_| Reason::Ip(host.to_string()))?;
        (IpAddr::V6(ip), port)
    } else {
        let (host, port) = s.rsplit_once(':').ok_or(shape)?;
        if host.contains(':') {
            // `2001:2::10:80` is ambiguous: the last group may be the port or the address.
            return Err(Reason::V6Brackets(host.to_string()));
        }
        let ip: std::net::Ipv4Addr = host.parse().map_err(|_| Reason::Ip(host.to_string()))?;
        (IpAddr::V4(ip), port)
    };
    Ok((host, parse_port(port)?))
}

fn parse_port(s: &str) -> Result<u16, Reason> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Reason::PortNotNumber(s.to_string()));
    }
    // All digits: only overflow can fail, and that is out of range too.
    let n: u64 = s.parse().unwrap_or(u64::MAX);
    match u16::try_from(n) {
        Ok(p) if p != 0 => Ok(p),
        _ => Err(Reason::PortRange(n)),
    }
}

/// An address as the maps store it: the 16 wire bytes and the family.
fn wire_addr(ip: IpAddr) -> (Addr, u8) {
    match ip {
        IpAddr::V4(v4) => (Addr::from_v4_octets(v4.octets()), FAMILY_V4),
        IpAddr::V6(v6) => (Addr::from_v6_octets(v6.octets()), FAMILY_V6),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(s: &str) -> ServiceAddr {
        s.parse().unwrap()
    }

    fn be(s: &str) -> BackendAddr {
        s.parse().unwrap()
    }

    fn svc_err(s: &str) -> String {
        s.parse::<ServiceAddr>().unwrap_err().to_string()
    }

    fn be_err(s: &str) -> String {
        s.parse::<BackendAddr>().unwrap_err().to_string()
    }

    #[test]
    fn parses_and_prints_services() {
        let s = svc("198.18.0.10:80/tcp");
        assert_eq!(s.ip, "198.18.0.10".parse::<IpAddr>().unwrap());
        assert_eq!(s.port, 80);
        assert_eq!(s.proto, Proto::Tcp);
        assert_eq!(s.to_string(), "198.18.0.10:80/tcp");
        assert_eq!(
            svc("[2001:2::10]:53/UDP").to_string(),
            "[2001:2::10]:53/udp"
        );
        assert_eq!(svc("198.18.0.10:443/Tcp").proto, Proto::Tcp);
    }

    #[test]
    fn parses_and_prints_backends() {
        assert_eq!(be("198.19.0.2:8080").to_string(), "198.19.0.2:8080");
        assert_eq!(be("[2001:2::2]:8080").to_string(), "[2001:2::2]:8080");
        assert_eq!(be("[2001:2::2]:65535").0.port(), 65535);
    }

    #[test]
    fn service_errors_are_one_line_and_specific() {
        assert_eq!(
            svc_err("198.18.0.10:99999/tcp"),
            "invalid service \"198.18.0.10:99999/tcp\": port 99999 out of range (1-65535)"
        );
        assert!(svc_err("198.18.0.10:0/tcp").ends_with("port 0 out of range (1-65535)"));
        assert!(svc_err("198.18.0.10:80/sctp").ends_with("protocol \"sctp\" is not tcp or udp"));
        assert!(svc_err("198.18.0.10:80").contains("expected VIP:PORT/PROTO"));
        assert!(svc_err("198.18.0.10/tcp").contains("expected VIP:PORT/PROTO"));
        assert!(svc_err("198.18.0.300:80/tcp").ends_with("\"198.18.0.300\" is not an IP address"));
        assert!(svc_err("x:80/tcp").ends_with("\"x\" is not an IP address"));
        assert!(svc_err("198.18.0.10:http/tcp").ends_with("port \"http\" is not a number"));
        assert!(svc_err("198.18.0.10:/tcp").ends_with("port \"\" is not a number"));
        assert!(svc_err("198.18.0.10:+80/tcp").ends_with("port \"+80\" is not a number"));
        assert!(svc_err("2001:2::10:80/tcp").contains("IPv6 addresses need brackets"));
        assert!(svc_err("[2001:2::10:80/tcp").contains("expected VIP:PORT/PROTO"));
        assert!(svc_err("[2001:2::10]80/tcp").contains("expected VIP:PORT/PROTO"));
        assert!(svc_err("[198.18.0.1]:80/tcp").contains("is not an IP address"));
        assert!(
            svc_err("198.18.0.10:123456789012345678901234/tcp")
                .ends_with(&format!("port {} out of range (1-65535)", u64::MAX))
        );
        for e in [svc_err(""), svc_err("/"), be_err(""), be_err(":")] {
            assert!(!e.contains('\n'), "{e}");
        }
    }

    #[test]
    fn backend_errors() {
        assert_eq!(
            be_err("198.19.0.2"),
            "invalid backend \"198.19.0.2\": expected ADDR:PORT, e.g. 198.19.0.2:8080 or [2001:2::2]:8080"
        );
        assert!(be_err("198.19.0.2:0").ends_with("port 0 out of range (1-65535)"));
        assert!(be_err("198.19.0.2:65536").ends_with("port 65536 out of range (1-65535)"));
        assert!(be_err("2001:2::2:8080").contains("need brackets"));
    }

    #[test]
    fn converts_to_map_types_in_wire_order() {
        let k = svc("198.18.0.10:80/tcp").key();
        assert_eq!(k.vip, Addr::from_v4_octets([198, 18, 0, 10]));
        assert_eq!(k.port_be, 80u16.to_be());
        assert_eq!(k.port_be.to_ne_bytes(), [0, 80]);
        assert_eq!((k.proto, k.family), (PROTO_TCP, FAMILY_V4));

        let k6 = svc("[2001:2::10]:53/udp").key();
        let mut o = [0u8; 16];
        o[..4].copy_from_slice(&[0x20, 0x01, 0, 2]);
        o[15] = 0x10;
        assert_eq!(k6.vip, Addr::from_v6_octets(o));
        assert_eq!((k6.proto, k6.family), (PROTO_UDP, FAMILY_V6));

        let b = be("198.19.0.2:8080").backend();
        assert_eq!(b.addr, Addr::from_v4_octets([198, 19, 0, 2]));
        assert_eq!(b.port_be.to_ne_bytes(), 8080u16.to_be_bytes());
        assert_eq!((b.family, b._pad), (FAMILY_V4, 0));
        assert_eq!(be("[2001:2::2]:1").backend().family, FAMILY_V6);
    }

    #[test]
    fn family_mismatch_is_rejected() {
        let v4 = svc("198.18.0.10:80/tcp");
        assert!(v4.check_backend(&be("198.19.0.2:80")).is_ok());
        let e = v4.check_backend(&be("[2001:2::2]:80")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "backend [2001:2::2]:80 is IPv6 but service 198.18.0.10:80/tcp is IPv4 (no NAT between IPv4 and IPv6)"
        );
        let v6 = svc("[2001:2::10]:80/tcp");
        assert!(v6.check_backend(&be("198.19.0.2:80")).is_err());
        assert!(v6.check_backend(&be("[2001:2::2]:80")).is_ok());
    }

    #[test]
    fn vips_and_backends_must_name_one_host() {
        const RULE: &str = "a VIP or backend must be a unicast address";
        // (address, what the message says of it); `None`: accepted.
        let cases: &[(&str, Option<&str>)] = &[
            ("0.0.0.0", Some("0.0.0.0 is the unspecified address")),
            ("[::]", Some(":: is the unspecified address")),
            (
                "255.255.255.255",
                Some("255.255.255.255 is the broadcast address"),
            ),
            (
                "224.0.0.1",
                Some("224.0.0.1 is a multicast address (224.0.0.0/4, ff00::/8)"),
            ),
            (
                "239.255.255.250",
                Some("239.255.255.250 is a multicast address"),
            ),
            ("[ff02::1]", Some("ff02::1 is a multicast address")),
            ("[ff00::]", Some("ff00:: is a multicast address")),
            (
                "[::ffff:198.18.0.20]",
                Some(
                    "::ffff:198.18.0.20 is an IPv4-mapped IPv6 address (::ffff:0:0/96); write the IPv4 address 198.18.0.20",
                ),
            ),
            ("198.18.0.20", None),
            ("198.19.255.255", None),
            ("223.255.255.255", None),
            ("[2001:2::10]", None),
            ("[fe00::1]", None),
        ];
        for (ip, want) in cases {
            let s = svc(&format!("{ip}:80/tcp"));
            let b = be(&format!("{ip}:8080"));
            match want {
                None => {
                    assert_eq!(s.check_vip(), Ok(()), "{ip}");
                    assert_eq!(b.check_host(), Ok(()), "{ip}");
                }
                Some(said) => {
                    let (se, be) = (
                        s.check_vip().unwrap_err().to_string(),
                        b.check_host().unwrap_err().to_string(),
                    );
                    assert!(
                        se.starts_with(&format!("invalid service \"{s}\": {said}")),
                        "{se}"
                    );
                    assert!(
                        be.starts_with(&format!("invalid backend \"{b}\": {said}")),
                        "{be}"
                    );
                    if !said.contains("IPv4-mapped") {
                        assert!(se.ends_with(RULE) && be.ends_with(RULE), "{se} / {be}");
                    }
                }
            }
        }
    }

    #[test]
    fn a_backend_cannot_be_the_vip() {
        let s = svc("198.18.0.10:80/tcp");
        for backend in ["198.18.0.10:80", "198.18.0.10:8080"] {
            assert_eq!(
                s.check_backend(&be(backend)).unwrap_err().to_string(),
                format!(
                    "backend {backend} has the address of service 198.18.0.10:80/tcp: a backend cannot be a VIP (its packets would come back to the load balancer)"
                )
            );
        }
        assert!(s.check_backend(&be("198.18.0.11:80")).is_ok());
        let s6 = svc("[2001:2::10]:53/udp");
        assert!(matches!(
            s6.check_backend(&be("[2001:2::10]:53")),
            Err(AddrError::BackendIsVip { .. })
        ));
    }

    #[test]
    fn echoed_input_is_cut_and_escaped_in_every_message() {
        let long = "9".repeat(10_000);
        let cases: Vec<(String, String)> = vec![
            (
                "198.18.0.20:80/tcp\n".into(),
                "invalid service \"198.18.0.20:80/tcp\\n\": protocol \"tcp\\n\" is not tcp or udp".into(),
            ),
            (
                format!("{long}:80/tcp"),
                format!(
                    "invalid service \"{}…\": \"{}…\" is not an IP address",
                    "9".repeat(64),
                    "9".repeat(64)
                ),
            ),
            (
                format!("198.18.0.1:{long}/tcp"),
                format!(
                    "invalid service \"198.18.0.1:{}…\": port {} out of range (1-65535)",
                    "9".repeat(53),
                    u64::MAX
                ),
            ),
            (
                "198.18.0.1:8\u{1b}[2J/tcp".into(),
                "invalid service \"198.18.0.1:8\\u{1b}[2J/tcp\": port \"8\\u{1b}[2J\" is not a number".into(),
            ),
        ];
        for (input, want) in &cases {
            let got = svc_err(input);
            assert_eq!(&got, want);
            assert!(!got.contains('\n') && got.chars().count() < 200, "{got}");
        }
        let e = svc_err(&format!("{}:80/tcp", "1:".repeat(5000)));
        assert!(
            e.contains("IPv6 addresses need brackets: [1:1:") && e.contains("…]:PORT"),
            "{e}"
        );
        assert!(e.chars().count() < 250, "{e}");
        let e = be_err(&format!("198.19.0.2\r\n{long}"));
        assert!(
            !e.contains('\n') && !e.contains('\r') && e.chars().count() < 250,
            "{e}"
        );
    }
}

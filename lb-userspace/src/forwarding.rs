//! How a service's packets reach its backends: `nat` (the default), `dsr-l2` or
//! `dsr-ipip`. One type for the CLI, the control API, the configuration file, the saved
//! state and the data path's `ServiceValue::forwarding`, so the names are checked in one
//! place.

use std::{fmt, str::FromStr};

use lb_common::{FORWARD_DSR_IPIP, FORWARD_DSR_L2, FORWARD_NAT};

use crate::limits::quoted;

/// A service's forwarding mode.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum Forwarding {
    /// Destination rewritten to the backend; replies come back through the LB.
    #[default]
    Nat,
    /// Direct server return on one L2 segment: only the destination MAC changes.
    DsrL2,
    /// Direct server return through IP-in-IP to the backend.
    DsrIpip,
}

/// The names, as the CLI, the API, the config file and `service list` spell them.
pub const NAMES: [&str; 3] = ["nat", "dsr-l2", "dsr-ipip"];

/// An unknown forwarding mode; one line for the operator.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("forwarding {} is not one of nat, dsr-l2, dsr-ipip", quoted(.0))]
pub struct ForwardingError(pub String);

impl Forwarding {
    pub fn name(&self) -> &'static str {
        match self {
            Forwarding::Nat => NAMES[0],
            Forwarding::DsrL2 => NAMES[1],
            Forwarding::DsrIpip => NAMES[2],
        }
    }

    /// Whether replies bypass the LB (the connection table keeps requests only).
    pub fn is_dsr(&self) -> bool {
        *self != Forwarding::Nat
    }

    /// `ServiceValue::forwarding`.
    pub fn to_value(&self) -> u32 {
        match self {
            Forwarding::Nat => FORWARD_NAT,
            Forwarding::DsrL2 => FORWARD_DSR_L2,
            Forwarding::DsrIpip => FORWARD_DSR_IPIP,
        }
    }

    /// From a name where empty means the default (the API's and the saved state's
    /// encoding of "absent").
    ///
    /// # Errors
    /// An unknown name.
    pub fn from_name_or_default(s: &str) -> Result<Forwarding, ForwardingError> {
        if s.is_empty() {
            Ok(Forwarding::Nat)
        } else {
            s.parse()
        }
    }
}

impl FromStr for Forwarding {
    type Err = ForwardingError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "nat" => Ok(Forwarding::Nat),
            "dsr-l2" => Ok(Forwarding::DsrL2),
            "dsr-ipip" => Ok(Forwarding::DsrIpip),
            other => Err(ForwardingError(other.to_string())),
        }
    }
}

impl fmt::Display for Forwarding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// `dsr-ipip`'s outer source prefixes by default: within the benchmarking ranges the
/// testbed uses (RFC 2544, RFC 5180), and on no interface there. The backends' decap
/// program strips the outer header before their stack sees it, so the source need not be
/// routable back; pick a prefix of your own network that nothing else uses (`xlbd
/// --encap-source-v4/-v6`).
pub const DEFAULT_ENCAP_SOURCE_V4: &str = "198.19.254.0/24";
pub const DEFAULT_ENCAP_SOURCE_V6: &str = "2001:2:0:fe::/64";

/// A bad `--encap-source-v4/-v6`; one line for the operator.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("encap source {} is not an {family} prefix ADDR/LEN (LEN {max} at most)", quoted(.text))]
pub struct PrefixError {
    text: String,
    family: &'static str,
    max: u32,
}

/// The `ENCAP` map's value for outer sources within `v4` and `v6` (`ADDR/LEN`): the
/// host bits (after LEN) come from the flow hash.
///
/// # Errors
/// A text that is not a prefix of its family.
pub fn encap_config(v4: &str, v6: &str) -> Result<lb_common::EncapConfig, PrefixError> {
    let (a4, l4) = prefix(v4, false)?;
    let (a6, l6) = prefix(v6, true)?;
    let (src_v4, src_v6) = match (a4, a6) {
        (std::net::IpAddr::V4(a), std::net::IpAddr::V6(b)) => (
            lb_common::Addr::from_v4_octets(a.octets()),
            lb_common::Addr::from_v6_octets(b.octets()),
        ),
        _ => unreachable!("prefix() checks the family"),
    };
    Ok(lb_common::EncapConfig {
        src_v4,
        host_mask_v4: lb_common::encap::host_mask(l4, 32),
        src_v6,
        host_mask_v6: lb_common::encap::host_mask(l6, 128),
    })
}

fn prefix(text: &str, v6: bool) -> Result<(std::net::IpAddr, u32), PrefixError> {
    let max = if v6 { 128 } else { 32 };
    let err = || PrefixError {
        text: text.to_string(),
        family: if v6 { "IPv6" } else { "IPv4" },
        max,
    };
    let (addr, len) = text.split_once('/').ok_or_else(err)?;
    let addr: std::net::IpAddr = addr.parse().map_err(|_| err())?;
    let len: u32 = len.parse().map_err(|_| err())?;
    if addr.is_ipv6() != v6 || len > max {
        return Err(err());
    }
    Ok((addr, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encap_prefixes_parse_into_prefix_and_host_mask() {
        let c = encap_config(DEFAULT_ENCAP_SOURCE_V4, DEFAULT_ENCAP_SOURCE_V6).unwrap();
        assert_eq!(c.src_v4.v4_octets(), [198, 19, 254, 0]);
        assert_eq!(c.host_mask_v4.v4_octets(), [0, 0, 0, 255]);
        assert_eq!(&c.host_mask_v6.v6_octets()[..8], &[0u8; 8]);
        assert_eq!(&c.host_mask_v6.v6_octets()[8..], &[255u8; 8]);
        assert_eq!(
            encap_config("198.19.0.0/33", DEFAULT_ENCAP_SOURCE_V6)
                .unwrap_err()
                .to_string(),
            "encap source \"198.19.0.0/33\" is not an IPv4 prefix ADDR/LEN (LEN 32 at most)"
        );
        assert!(encap_config("2001:2::/64", DEFAULT_ENCAP_SOURCE_V6).is_err());
        assert!(encap_config(DEFAULT_ENCAP_SOURCE_V4, "198.19.0.0/16").is_err());
        assert!(encap_config("198.19.0.0", DEFAULT_ENCAP_SOURCE_V6).is_err());
    }

    #[test]
    fn names_round_trip_and_map_to_the_data_path_values() {
        for name in NAMES {
            let f: Forwarding = name.parse().unwrap();
            assert_eq!(f.to_string(), name);
        }
        assert_eq!(
            Forwarding::from_name_or_default("").unwrap(),
            Forwarding::Nat
        );
        assert_eq!(Forwarding::DsrL2.to_value(), FORWARD_DSR_L2);
        assert_eq!(Forwarding::DsrIpip.to_value(), FORWARD_DSR_IPIP);
        assert!(!Forwarding::Nat.is_dsr() && Forwarding::DsrIpip.is_dsr());
        assert_eq!(
            "dsr".parse::<Forwarding>().unwrap_err().to_string(),
            "forwarding \"dsr\" is not one of nat, dsr-l2, dsr-ipip"
        );
    }
}

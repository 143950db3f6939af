//! Session affinity of a service: `none`, or `client-ip` with its timeout. One type for
//! the CLI, the control API, the saved state and the data path's `ServiceValue` fields,
//! so the mode names and the timeout's range are checked in one place.

use std::fmt;

use lb_common::{AFFINITY_CLIENT_IP, AFFINITY_NONE};

use crate::limits::{AFFINITY_TIMEOUT, DEFAULT_AFFINITY_TIMEOUT_S, LimitError, quoted};

/// How the new flows of one client address are spread over a service's backends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Affinity {
    /// Each new flow takes the backend its hash picks.
    #[default]
    None,
    /// A client's new flows go to the backend its last new flow went to, for `timeout_s`
    /// seconds after that flow (kube-proxy's `ClientIP`, Cilium's session affinity).
    ClientIp { timeout_s: u32 },
}

/// The mode names, as the CLI, the API and `service list` spell them.
pub const MODE_NONE: &str = "none";
pub const MODE_CLIENT_IP: &str = "client-ip";

/// Why an affinity setting was refused; one line for the operator.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AffinityError {
    #[error("affinity {} is not one of none, client-ip", quoted(.0))]
    UnknownMode(String),
    #[error("an affinity timeout needs affinity client-ip")]
    TimeoutWithoutAffinity,
    #[error(transparent)]
    Limit(#[from] LimitError),
}

impl Affinity {
    /// The setting a mode name and an optional timeout (seconds; absent: the default) ask
    /// for. An empty mode is `none`.
    ///
    /// # Errors
    /// An unknown mode, a timeout with `none`, a timeout out of range.
    pub fn new(mode: &str, timeout_s: Option<u32>) -> Result<Affinity, AffinityError> {
        match mode {
            "" | MODE_NONE => match timeout_s {
                None | Some(0) => Ok(Affinity::None),
                Some(_) => Err(AffinityError::TimeoutWithoutAffinity),
            },
            MODE_CLIENT_IP => {
                let t = timeout_s.unwrap_or(DEFAULT_AFFINITY_TIMEOUT_S);
                Ok(Affinity::ClientIp {
                    timeout_s: AFFINITY_TIMEOUT.check(u64::from(t))?,
                })
            }
            other => Err(AffinityError::UnknownMode(other.to_string())),
        }
    }

    /// From a timeout where 0 means `none` (the saved state's and the API's encoding).
    ///
    /// # Errors
    /// A timeout out of range.
    pub fn from_timeout(timeout_s: u32) -> Result<Affinity, AffinityError> {
        match timeout_s {
            0 => Ok(Affinity::None),
            t => Affinity::new(MODE_CLIENT_IP, Some(t)),
        }
    }

    pub fn mode(&self) -> &'static str {
        match self {
            Affinity::None => MODE_NONE,
            Affinity::ClientIp { .. } => MODE_CLIENT_IP,
        }
    }

    /// Seconds, 0 with `none`.
    pub fn timeout_s(&self) -> u32 {
        match self {
            Affinity::None => 0,
            Affinity::ClientIp { timeout_s } => *timeout_s,
        }
    }

    pub fn is_none(&self) -> bool {
        *self == Affinity::None
    }

    /// `ServiceValue::affinity` and `ServiceValue::affinity_timeout_s`.
    pub fn to_value(&self) -> (u32, u32) {
        match self {
            Affinity::None => (AFFINITY_NONE, 0),
            Affinity::ClientIp { timeout_s } => (AFFINITY_CLIENT_IP, *timeout_s),
        }
    }
}

/// `none`, or `client-ip/30s`.
impl fmt::Display for Affinity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Affinity::None => f.write_str(MODE_NONE),
            Affinity::ClientIp { timeout_s } => write!(f, "{MODE_CLIENT_IP}/{timeout_s}s"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_and_timeouts() {
        assert_eq!(Affinity::new("", None), Ok(Affinity::None));
        assert_eq!(Affinity::new("none", None), Ok(Affinity::None));
        assert_eq!(
            Affinity::new("client-ip", None),
            Ok(Affinity::ClientIp { timeout_s: 10800 })
        );
        assert_eq!(
            Affinity::new("client-ip", Some(2)),
            Ok(Affinity::ClientIp { timeout_s: 2 })
        );
        assert_eq!(
            Affinity::new("none", Some(5)),
            Err(AffinityError::TimeoutWithoutAffinity)
        );
        let e = Affinity::new("client-ip", Some(86401)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "affinity timeout 86401 out of range (1-86400)"
        );
        let e = Affinity::new("client-ip", Some(0)).unwrap_err();
        assert_eq!(e.to_string(), "affinity timeout 0 out of range (1-86400)");
        let e = Affinity::new("sticky", None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "affinity \"sticky\" is not one of none, client-ip"
        );
        assert_eq!(Affinity::from_timeout(0), Ok(Affinity::None));
        assert_eq!(
            Affinity::from_timeout(30).map(|a| (a.to_string(), a.to_value())),
            Ok(("client-ip/30s".to_string(), (AFFINITY_CLIENT_IP, 30)))
        );
    }
}

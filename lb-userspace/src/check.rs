//! A service's health-check settings (`xlb service add|set-check --check ...`): what they
//! are, their defaults and limits, parsing the operator's spellings, and the API message.
//! Shared by the CLI and the daemon (as `limits` is), so a setting has one range and one
//! message wherever it is checked. The checker itself is `crate::health`.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::addr::{ServiceAddr, not_one_host};
use crate::control::proto;
use crate::limits::{cut, quoted};

/// Milliseconds between two checks of a backend when none is given (HAProxy's `inter`).
pub const DEFAULT_INTERVAL_MS: u32 = 2000;
/// The longest a check may take when no timeout is given (or the interval, if shorter).
pub const DEFAULT_TIMEOUT_MS: u32 = 1000;
/// Consecutive successes that make a backend up (HAProxy's default).
pub const DEFAULT_RISE: u32 = 2;
/// Consecutive failures that make a backend down (HAProxy's default).
pub const DEFAULT_FALL: u32 = 3;
/// The shortest and longest interval, in milliseconds.
pub const INTERVAL_MS: (u32, u32) = (10, 3_600_000);
/// The most consecutive results `rise` and `fall` may ask for.
pub const MAX_COUNT: u32 = 100;
/// The longest HTTP path, host header or gRPC service name, in bytes.
const MAX_TEXT: usize = 1024;

/// How a service's backends are checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckSettings {
    pub kind: CheckKind,
    pub interval_ms: u32,
    pub timeout_ms: u32,
    pub rise: u32,
    pub fall: u32,
    /// Check this port instead of the backend's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Check this address instead of the backend's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addr: Option<IpAddr>,
    /// What the table holds when every backend that is not drained is down.
    pub all_down: AllDown,
}

/// The probe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum CheckKind {
    /// No check: every backend counts as up.
    None,
    /// A TCP connection is accepted.
    Tcp,
    /// An HTTP/1.1 request gets a status in `status`.
    Http {
        method: String,
        path: String,
        status: (u16, u16),
        /// The `Host` header; absent: the checked address.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        host: Option<String>,
    },
    /// `grpc.health.v1.Health/Check` for `service` ("": the server) answers SERVING.
    Grpc { service: String },
}

/// What happens when every backend of a service that is not drained is down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum AllDown {
    /// The table holds every backend that is not drained, as if none were down (Envoy's
    /// panic threshold): a check that fails everywhere at once is more likely wrong than
    /// every server.
    FailOpen,
    /// The table is empty: packets to the service are dropped (and counted).
    Drop,
}

impl AllDown {
    pub fn name(self) -> &'static str {
        match self {
            AllDown::FailOpen => "fail-open",
            AllDown::Drop => "drop",
        }
    }
}

/// Why a setting was refused. The `Display` is one line for the operator.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckError {
    #[error("{name} {} is not a duration (e.g. 200ms, 2s, 1m)", quoted(value))]
    NotADuration { name: &'static str, value: String },
    #[error("{name} {value} out of range ({min}-{max})")]
    OutOfRange {
        name: &'static str,
        value: String,
        min: String,
        max: String,
    },
    #[error("timeout {timeout}ms is longer than the interval {interval}ms")]
    TimeoutOverInterval { timeout: u32, interval: u32 },
    #[error("check kind {} is not one of none, tcp, http, grpc", quoted(.0))]
    Kind(String),
    #[error("all-down {} is not one of fail-open, drop", quoted(.0))]
    AllDown(String),
    #[error("{0} needs --check {1}")]
    Needs(&'static str, &'static str),
    #[error("--check-port and --check-addr need a check (--check tcp, http or grpc)")]
    TargetWithoutCheck,
    #[error("HTTP status range {} is not N or N-M with 100 <= N <= M <= 599", quoted(.0))]
    Status(String),
    #[error("HTTP method {} is not a method name (letters, e.g. GET or HEAD)", quoted(.0))]
    Method(String),
    #[error("{name} {} {why}", quoted(value))]
    Text {
        name: &'static str,
        value: String,
        why: &'static str,
    },
    #[error("check address {}: {why}", quoted(value))]
    Addr { value: String, why: String },
}

/// A setting besides the kind, as the CLI's flags and the configuration file's keys name
/// it: which kinds of check take it is one rule for both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setting {
    Interval,
    Timeout,
    Rise,
    Fall,
    Port,
    Addr,
    HttpPath,
    HttpMethod,
    HttpStatus,
    HttpHost,
    GrpcService,
    AllDown,
}

impl Setting {
    /// The CLI's flag, e.g. `--check-port`.
    pub fn flag(self) -> &'static str {
        match self {
            Setting::Interval => "--interval",
            Setting::Timeout => "--timeout",
            Setting::Rise => "--rise",
            Setting::Fall => "--fall",
            Setting::Port => "--check-port",
            Setting::Addr => "--check-addr",
            Setting::HttpPath => "--http-path",
            Setting::HttpMethod => "--http-method",
            Setting::HttpStatus => "--http-status",
            Setting::HttpHost => "--http-host",
            Setting::GrpcService => "--grpc-service",
            Setting::AllDown => "--all-down",
        }
    }

    /// The configuration file's key in `[service.check]`, e.g. `port`.
    pub fn key(self) -> &'static str {
        match self {
            Setting::Interval => "interval",
            Setting::Timeout => "timeout",
            Setting::Rise => "rise",
            Setting::Fall => "fall",
            Setting::Port => "port",
            Setting::Addr => "addr",
            Setting::HttpPath => "http_path",
            Setting::HttpMethod => "http_method",
            Setting::HttpStatus => "http_status",
            Setting::HttpHost => "http_host",
            Setting::GrpcService => "grpc_service",
            Setting::AllDown => "all_down",
        }
    }

    /// The kinds that take this setting, as a message lists them, when `kind` does not:
    /// with no check nothing else may be set; the http and grpc settings belong to theirs.
    pub fn misfit(self, kind: &str) -> Option<&'static str> {
        let (fits, kinds) = match self {
            _ if kind == "none" => (false, "tcp, http or grpc"),
            Setting::HttpPath | Setting::HttpMethod | Setting::HttpStatus | Setting::HttpHost => {
                (kind == "http", "http")
            }
            Setting::GrpcService => (kind == "grpc", "grpc"),
            _ => (true, ""),
        };
        (!fits).then_some(kinds)
    }

    /// The setting an error is about (`None`: the kind, or no one setting).
    pub fn of_error(e: &CheckError) -> Option<Setting> {
        Some(match e {
            CheckError::NotADuration { name, .. } | CheckError::OutOfRange { name, .. } => {
                match *name {
                    "interval" => Setting::Interval,
                    "timeout" => Setting::Timeout,
                    "rise" => Setting::Rise,
                    "fall" => Setting::Fall,
                    "check port" => Setting::Port,
                    _ => return None,
                }
            }
            CheckError::TimeoutOverInterval { .. } => Setting::Timeout,
            CheckError::AllDown(_) => Setting::AllDown,
            CheckError::Status(_) => Setting::HttpStatus,
            CheckError::Method(_) => Setting::HttpMethod,
            CheckError::Text { name, .. } => match *name {
                "HTTP path" => Setting::HttpPath,
                "HTTP host" => Setting::HttpHost,
                "gRPC service" => Setting::GrpcService,
                _ => return None,
            },
            CheckError::Addr { .. } => Setting::Addr,
            CheckError::Kind(_) | CheckError::Needs(..) | CheckError::TargetWithoutCheck => {
                return None;
            }
        })
    }
}

impl Default for CheckSettings {
    fn default() -> Self {
        CheckSettings {
            kind: CheckKind::None,
            interval_ms: DEFAULT_INTERVAL_MS,
            timeout_ms: DEFAULT_TIMEOUT_MS,
            rise: DEFAULT_RISE,
            fall: DEFAULT_FALL,
            port: None,
            addr: None,
            all_down: AllDown::FailOpen,
        }
    }
}

impl CheckSettings {
    /// Whether backends are checked at all.
    pub fn is_on(&self) -> bool {
        self.kind != CheckKind::None
    }

    pub fn is_none(&self) -> bool {
        !self.is_on()
    }

    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            CheckKind::None => "none",
            CheckKind::Tcp => "tcp",
            CheckKind::Http { .. } => "http",
            CheckKind::Grpc { .. } => "grpc",
        }
    }

    /// Checks every setting against its limits; `service` gives the address family a
    /// check address must have.
    pub fn validate(&self, service: &ServiceAddr) -> Result<(), CheckError> {
        let (lo, hi) = INTERVAL_MS;
        if !(lo..=hi).contains(&self.interval_ms) {
            return Err(range("interval", ms(self.interval_ms), ms(lo), ms(hi)));
        }
        if !(1..=hi).contains(&self.timeout_ms) {
            return Err(range("timeout", ms(self.timeout_ms), ms(1), ms(hi)));
        }
        if self.timeout_ms > self.interval_ms {
            return Err(CheckError::TimeoutOverInterval {
                timeout: self.timeout_ms,
                interval: self.interval_ms,
            });
        }
        for (name, n) in [("rise", self.rise), ("fall", self.fall)] {
            if !(1..=MAX_COUNT).contains(&n) {
                return Err(range(
                    name,
                    n.to_string(),
                    "1".into(),
                    MAX_COUNT.to_string(),
                ));
            }
        }
        if self.port == Some(0) {
            return Err(range("check port", "0".into(), "1".into(), "65535".into()));
        }
        if let Some(addr) = self.addr {
            let bad = |why: String| CheckError::Addr {
                value: addr.to_string(),
                why,
            };
            if addr.is_ipv4() != service.ip.is_ipv4() {
                return Err(bad(format!(
                    "not of the address family of service {service}"
                )));
            }
            if let Some(reason) = not_one_host(addr) {
                return Err(bad(reason.to_string()));
            }
        }
        if self.kind == CheckKind::None && (self.port.is_some() || self.addr.is_some()) {
            return Err(CheckError::TargetWithoutCheck);
        }
        match &self.kind {
            CheckKind::Http {
                method,
                path,
                status,
                host,
            } => {
                check_method(method)?;
                if !path.starts_with('/') {
                    return Err(text("HTTP path", path, "does not start with /"));
                }
                check_text("HTTP path", path)?;
                if let Some(host) = host {
                    check_text("HTTP host", host)?;
                }
                if !(100..=599).contains(&status.0) || status.0 > status.1 || status.1 > 599 {
                    return Err(CheckError::Status(format!("{}-{}", status.0, status.1)));
                }
            }
            CheckKind::Grpc { service } if !service.is_empty() => {
                check_text("gRPC service", service)?
            }
            _ => {}
        }
        Ok(())
    }

    /// The settings a request carries, checked. Zero numbers and empty strings take their
    /// defaults, so a client may leave them out.
    pub fn from_proto(
        m: &proto::HealthCheck,
        service: &ServiceAddr,
    ) -> Result<CheckSettings, CheckError> {
        let settings = CheckSettings::parse_proto(m)?;
        settings.validate(service)?;
        Ok(settings)
    }

    /// [`CheckSettings::from_proto`] without the range checks (for showing a reply).
    pub fn parse_proto(m: &proto::HealthCheck) -> Result<CheckSettings, CheckError> {
        let kind = match m.kind.as_str() {
            "" | "none" => CheckKind::None,
            "tcp" => CheckKind::Tcp,
            "http" => CheckKind::Http {
                method: or(&m.http_method, "GET"),
                path: or(&m.http_path, "/"),
                status: if m.http_status.is_empty() {
                    (200, 399)
                } else {
                    parse_status(&m.http_status)?
                },
                host: (!m.http_host.is_empty()).then(|| m.http_host.clone()),
            },
            "grpc" => CheckKind::Grpc {
                service: m.grpc_service.clone(),
            },
            other => return Err(CheckError::Kind(other.to_owned())),
        };
        let interval_ms = nonzero(m.interval_ms, DEFAULT_INTERVAL_MS);
        let settings =
            CheckSettings {
                kind,
                interval_ms,
                timeout_ms: nonzero(m.timeout_ms, DEFAULT_TIMEOUT_MS.min(interval_ms)),
                rise: nonzero(m.rise, DEFAULT_RISE),
                fall: nonzero(m.fall, DEFAULT_FALL),
                port: match m.port {
                    None => None,
                    Some(p) => Some(u16::try_from(p).map_err(|_| {
                        range("check port", p.to_string(), "1".into(), "65535".into())
                    })?),
                },
                addr: match m.addr.as_str() {
                    "" => None,
                    a => Some(a.parse().map_err(|_| CheckError::Addr {
                        value: a.to_owned(),
                        why: "not an IP address".into(),
                    })?),
                },
                all_down: match m.all_down.as_str() {
                    "" | "fail-open" => AllDown::FailOpen,
                    "drop" => AllDown::Drop,
                    other => return Err(CheckError::AllDown(other.to_owned())),
                },
            };
        Ok(settings)
    }

    pub fn to_proto(&self) -> proto::HealthCheck {
        let mut m = proto::HealthCheck {
            kind: self.kind_name().into(),
            interval_ms: self.interval_ms,
            timeout_ms: self.timeout_ms,
            rise: self.rise,
            fall: self.fall,
            port: self.port.map(u32::from),
            addr: self.addr.map(|a| a.to_string()).unwrap_or_default(),
            all_down: self.all_down.name().into(),
            ..Default::default()
        };
        match &self.kind {
            CheckKind::Http {
                method,
                path,
                status,
                host,
            } => {
                m.http_method = method.clone();
                m.http_path = path.clone();
                m.http_status = format!("{}-{}", status.0, status.1);
                m.http_host = host.clone().unwrap_or_default();
            }
            CheckKind::Grpc { service } => m.grpc_service = service.clone(),
            _ => {}
        }
        m
    }
}

/// One line, e.g. `http GET /healthz 200-399 port 9090, every 200ms, timeout 100ms, rise 2,
/// fall 2, all down: fail-open`, or `none`.
impl fmt::Display for CheckSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind_name())?;
        match &self.kind {
            CheckKind::None => return Ok(()),
            CheckKind::Tcp => {}
            CheckKind::Http {
                method,
                path,
                status,
                host,
            } => {
                write!(f, " {method} {path} {}-{}", status.0, status.1)?;
                if let Some(h) = host {
                    write!(f, " host {h}")?;
                }
            }
            CheckKind::Grpc { service } if !service.is_empty() => write!(f, " {service}")?,
            CheckKind::Grpc { .. } => {}
        }
        if let Some(a) = self.addr {
            write!(f, " addr {a}")?;
        }
        if let Some(p) = self.port {
            write!(f, " port {p}")?;
        }
        write!(
            f,
            ", every {}, timeout {}, rise {}, fall {}, all down: {}",
            ms(self.interval_ms),
            ms(self.timeout_ms),
            self.rise,
            self.fall,
            self.all_down.name()
        )
    }
}

/// `200ms`, `2s`, `1m` (the shortest exact spelling).
pub fn ms(n: u32) -> String {
    if n >= 3_600_000 && n.is_multiple_of(3_600_000) {
        format!("{}h", n / 3_600_000)
    } else if n >= 60_000 && n.is_multiple_of(60_000) {
        format!("{}m", n / 60_000)
    } else if n >= 1000 && n.is_multiple_of(1000) {
        format!("{}s", n / 1000)
    } else {
        format!("{n}ms")
    }
}

/// `0.4ms`, `12ms`, `1s`.
pub fn latency(d: Duration) -> String {
    let us = d.as_micros();
    if us < 10_000 {
        format!("{:.1}ms", us as f64 / 1000.0)
    } else {
        ms(d.as_millis().min(u128::from(u32::MAX)) as u32)
    }
}

/// A duration as the operator types it (`200ms`, `2s`, `1m`, `1h`), in milliseconds.
pub fn parse_duration(name: &'static str, s: &str) -> Result<u32, CheckError> {
    let bad = || CheckError::NotADuration {
        name,
        value: s.to_owned(),
    };
    let split = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (num, unit) = s.split_at(split);
    let factor: u64 = match unit {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return Err(bad()),
    };
    let n: u64 = num.parse().map_err(|_| bad())?;
    let total = n.checked_mul(factor).ok_or_else(bad)?;
    u32::try_from(total).map_err(|_| range(name, cut(s), ms(1), ms(INTERVAL_MS.1)))
}

pub fn parse_interval(s: &str) -> Result<u32, CheckError> {
    parse_duration("interval", s)
}

pub fn parse_timeout(s: &str) -> Result<u32, CheckError> {
    parse_duration("timeout", s)
}

/// `200-399` or `200`.
pub fn parse_status(s: &str) -> Result<(u16, u16), CheckError> {
    let bad = || CheckError::Status(s.to_owned());
    let (lo, hi) = s.split_once('-').unwrap_or((s, s));
    let lo: u16 = lo.parse().map_err(|_| bad())?;
    let hi: u16 = hi.parse().map_err(|_| bad())?;
    if !(100..=599).contains(&lo) || lo > hi || hi > 599 {
        return Err(bad());
    }
    Ok((lo, hi))
}

fn check_method(m: &str) -> Result<(), CheckError> {
    if m.is_empty() || m.len() > 16 || !m.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(CheckError::Method(m.to_owned()));
    }
    Ok(())
}

/// Text that goes into a request as it is: visible ASCII, no spaces, not too long.
fn check_text(name: &'static str, s: &str) -> Result<(), CheckError> {
    if s.is_empty() {
        return Err(text(name, s, "is empty"));
    }
    if s.len() > MAX_TEXT {
        return Err(text(name, s, "is longer than 1024 bytes"));
    }
    if !s.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(text(
            name,
            s,
            "has a space, a control or a non-ASCII character",
        ));
    }
    Ok(())
}

fn text(name: &'static str, value: &str, why: &'static str) -> CheckError {
    CheckError::Text {
        name,
        value: value.to_owned(),
        why,
    }
}

fn range(name: &'static str, value: String, min: String, max: String) -> CheckError {
    CheckError::OutOfRange {
        name,
        value,
        min,
        max,
    }
}

fn or(s: &str, default: &str) -> String {
    if s.is_empty() { default } else { s }.to_owned()
}

fn nonzero(n: u32, default: u32) -> u32 {
    if n == 0 { default } else { n }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc() -> ServiceAddr {
        "198.18.0.10:80/tcp".parse().unwrap()
    }

    fn tcp() -> proto::HealthCheck {
        proto::HealthCheck {
            kind: "tcp".into(),
            ..Default::default()
        }
    }

    #[test]
    fn durations_take_a_unit() {
        assert_eq!(parse_interval("200ms"), Ok(200));
        assert_eq!(parse_interval("2s"), Ok(2000));
        assert_eq!(parse_interval("1m"), Ok(60_000));
        for bad in ["200", "ms", "2 s", "-1s", "1.5s", "2d", ""] {
            let e = parse_interval(bad).unwrap_err().to_string();
            assert!(e.contains("is not a duration"), "{bad}: {e}");
        }
        assert_eq!(ms(200), "200ms");
        assert_eq!(ms(2000), "2s");
        assert_eq!(ms(120_000), "2m");
        assert_eq!(ms(3_600_000), "1h");
        assert_eq!(parse_interval("1h"), Ok(3_600_000));
        assert_eq!(ms(1500), "1500ms");
    }

    #[test]
    fn empty_fields_take_defaults_and_the_timeout_fits_the_interval() {
        let s = CheckSettings::from_proto(&tcp(), &svc()).unwrap();
        assert_eq!(
            (s.interval_ms, s.timeout_ms, s.rise, s.fall, s.all_down),
            (2000, 1000, 2, 3, AllDown::FailOpen)
        );
        let m = proto::HealthCheck {
            interval_ms: 200,
            ..tcp()
        };
        assert_eq!(
            CheckSettings::from_proto(&m, &svc()).unwrap().timeout_ms,
            200
        );
        let m = proto::HealthCheck {
            kind: "http".into(),
            ..Default::default()
        };
        let s = CheckSettings::from_proto(&m, &svc()).unwrap();
        assert_eq!(
            s.kind,
            CheckKind::Http {
                method: "GET".into(),
                path: "/".into(),
                status: (200, 399),
                host: None
            }
        );
        assert_eq!(CheckSettings::from_proto(&s.to_proto(), &svc()).unwrap(), s);
    }

    #[test]
    fn nonsense_is_refused_with_one_line() {
        let cases: Vec<(proto::HealthCheck, &str)> = vec![
            (
                proto::HealthCheck {
                    kind: "icmp".into(),
                    ..Default::default()
                },
                "check kind \"icmp\" is not one of none, tcp, http, grpc",
            ),
            (
                proto::HealthCheck {
                    interval_ms: 5,
                    ..tcp()
                },
                "interval 5ms out of range (10ms-1h)",
            ),
            (
                proto::HealthCheck {
                    interval_ms: 100,
                    timeout_ms: 200,
                    ..tcp()
                },
                "timeout 200ms is longer than the interval 100ms",
            ),
            (
                proto::HealthCheck { rise: 101, ..tcp() },
                "rise 101 out of range (1-100)",
            ),
            (
                proto::HealthCheck {
                    port: Some(70000),
                    ..tcp()
                },
                "check port 70000 out of range (1-65535)",
            ),
            (
                proto::HealthCheck {
                    addr: "2001:2::5".into(),
                    ..tcp()
                },
                "check address \"2001:2::5\": not of the address family of service 198.18.0.10:80/tcp",
            ),
            (
                proto::HealthCheck {
                    port: Some(9090),
                    ..Default::default()
                },
                "--check-port and --check-addr need a check (--check tcp, http or grpc)",
            ),
            (
                proto::HealthCheck {
                    kind: "http".into(),
                    http_path: "healthz".into(),
                    ..Default::default()
                },
                "HTTP path \"healthz\" does not start with /",
            ),
            (
                proto::HealthCheck {
                    kind: "http".into(),
                    http_path: "/a b".into(),
                    ..Default::default()
                },
                "HTTP path \"/a b\" has a space, a control or a non-ASCII character",
            ),
            (
                proto::HealthCheck {
                    kind: "http".into(),
                    http_method: "get\r\n".into(),
                    ..Default::default()
                },
                "HTTP method \"get\\r\\n\" is not a method name (letters, e.g. GET or HEAD)",
            ),
            (
                proto::HealthCheck {
                    kind: "http".into(),
                    http_status: "399-200".into(),
                    ..Default::default()
                },
                "HTTP status range \"399-200\" is not N or N-M with 100 <= N <= M <= 599",
            ),
            (
                proto::HealthCheck {
                    all_down: "panic".into(),
                    ..tcp()
                },
                "all-down \"panic\" is not one of fail-open, drop",
            ),
        ];
        for (m, want) in cases {
            let e = CheckSettings::from_proto(&m, &svc())
                .unwrap_err()
                .to_string();
            assert_eq!(e, want);
        }
    }

    #[test]
    fn statuses_and_the_one_line_summary() {
        assert_eq!(parse_status("200"), Ok((200, 200)));
        assert_eq!(parse_status("200-399"), Ok((200, 399)));
        assert!(parse_status("99").is_err());
        assert!(parse_status("200-600").is_err());
        let m = proto::HealthCheck {
            kind: "http".into(),
            interval_ms: 200,
            timeout_ms: 100,
            rise: 2,
            fall: 2,
            port: Some(9090),
            http_path: "/healthz".into(),
            all_down: "drop".into(),
            ..Default::default()
        };
        let s = CheckSettings::from_proto(&m, &svc()).unwrap();
        assert_eq!(
            s.to_string(),
            "http GET /healthz 200-399 port 9090, every 200ms, timeout 100ms, rise 2, fall 2, all down: drop"
        );
        assert_eq!(CheckSettings::default().to_string(), "none");
    }
}

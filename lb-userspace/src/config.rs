//! The declarative configuration (`xlbd --config FILE`, `xlb apply -f FILE`, `xlb config
//! dump`): its TOML schema, parsing with file:line errors, validation, the diff between the
//! running services and the wanted ones, and rendering back to TOML. Pure functions; the
//! daemon side of `apply` (executing a plan over the maps) is in `state/apply.rs`.
//!
//! ```toml
//! [daemon]                      # read by xlbd at start only; flags win
//! interfaces = ["eth0", "eth1"]
//! mode = "native"               # or "skb"
//!
//! [[service]]
//! address = "198.18.0.10:80/tcp"
//! table_size = 65537            # optional, a prime; default 65537
//! affinity = "client-ip"        # optional, "none" (default) or "client-ip"
//! affinity_timeout = 10800      # optional, seconds (1-86400) with client-ip; default 10800
//! forwarding = "dsr-l2"         # optional, "nat" (default), "dsr-l2" or "dsr-ipip"
//!
//! [service.check]               # optional; absent: no health check
//! kind = "tcp"                  # none, tcp, http or grpc; the other keys as `xlb service
//! interval = "200ms"            #   add --check ...` (see check.rs), defaults included
//! fall = 2
//!
//! [[service.backend]]
//! address = "198.19.0.2:8080"
//! weight = 100                  # optional, 0-65535; default 100; 0 drains
//! ```
//!
//! Later per-service options (session affinity, a forwarding mode) become new optional
//! keys of `[[service]]` (or sub-tables such as `[service.check]`): unknown keys are
//! refused, so an old xlb never silently ignores a new option.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::addr::{AddrError, BackendAddr, ServiceAddr};
use crate::affinity::Affinity;
use crate::bpf::AttachMode;
use crate::check::{self, CheckError, CheckSettings, Setting};
use crate::control::proto;
use crate::forwarding::Forwarding;
use crate::state::{self, DEFAULT_TABLE_SIZE, DEFAULT_WEIGHT};

/// Weights by backend.
pub type Backends = BTreeMap<BackendAddr, u32>;

/// What one service should be: its table size, its backends with their weights, its
/// session affinity, and how they are health-checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSpec {
    pub table_size: u32,
    pub backends: Backends,
    pub affinity: Affinity,
    pub forwarding: Forwarding,
    /// Kind `none` when the service is not checked (then its other settings are the
    /// defaults: see [`running_check`]).
    pub check: CheckSettings,
}

/// Services by address: the part of a configuration that `xlb apply` applies.
pub type Services = BTreeMap<ServiceAddr, ServiceSpec>;

/// The `[daemon]` table: read by `xlbd --config` at start; a command-line flag wins.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DaemonSettings {
    pub interfaces: Option<Vec<String>>,
    pub mode: Option<AttachMode>,
}

/// A parsed and validated configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub daemon: DaemonSettings,
    pub services: Services,
    /// Where each service and backend is in the file, to point errors found later (by the
    /// daemon, against its running state) at a line.
    lines: BTreeMap<(ServiceAddr, Option<BackendAddr>), usize>,
}

/// A configuration error: `FILE:LINE: CONTEXT: MESSAGE`, one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {message}")]
pub struct ConfigError {
    pub file: String,
    pub line: usize,
    pub message: String,
}

impl Config {
    /// A configuration of `services` with no `[daemon]` settings and no file lines (what
    /// `xlb config dump` starts from).
    pub fn new(daemon: DaemonSettings, services: Services) -> Self {
        Config {
            daemon,
            services,
            lines: BTreeMap::new(),
        }
    }

    /// The line of `backend` in `service` (or of the service itself when `backend` is
    /// `None` or not in the file).
    pub fn line_of(&self, service: &ServiceAddr, backend: Option<&BackendAddr>) -> Option<usize> {
        backend
            .and_then(|b| self.lines.get(&(*service, Some(*b))))
            .or_else(|| self.lines.get(&(*service, None)))
            .copied()
    }
}

// ---- parsing -------------------------------------------------------------------------

/// The file as written; every table refuses unknown keys.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileToml {
    daemon: Option<DaemonToml>,
    #[serde(default)]
    service: Vec<ServiceToml>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DaemonToml {
    interfaces: Option<Spanned<Vec<Spanned<String>>>>,
    mode: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ServiceToml {
    address: Spanned<String>,
    table_size: Option<Spanned<u32>>,
    check: Option<CheckToml>,
    #[serde(default)]
    backend: Vec<BackendToml>,
    affinity: Option<Spanned<String>>,
    affinity_timeout: Option<Spanned<u32>>,
    forwarding: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BackendToml {
    address: Spanned<String>,
    weight: Option<Spanned<u32>>,
}

/// `[service.check]`: the keys are [`Setting::key`]'s; durations as the CLI takes them.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckToml {
    kind: Spanned<String>,
    interval: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
    rise: Option<Spanned<u32>>,
    fall: Option<Spanned<u32>>,
    /// Wider than a port so that 70000 gets check.rs's message, not serde's.
    port: Option<Spanned<u32>>,
    addr: Option<Spanned<String>>,
    http_path: Option<Spanned<String>>,
    http_method: Option<Spanned<String>>,
    http_status: Option<Spanned<String>>,
    http_host: Option<Spanned<String>>,
    grpc_service: Option<Spanned<String>>,
    all_down: Option<Spanned<String>>,
}

/// A service as a list of strings and numbers, wherever it came from (a file, where `P` is
/// a byte span, or an `Apply` request, where `P` is `()`): validated by [`validate`].
#[derive(Debug, Clone)]
pub struct RawService<P> {
    pub address: (String, P),
    pub table_size: Option<(u32, P)>,
    /// `none` or `client-ip`; absent: none.
    pub affinity: Option<(String, P)>,
    /// Seconds, with `client-ip` only; absent: the default.
    pub affinity_timeout: Option<(u32, P)>,
    /// `nat`, `dsr-l2` or `dsr-ipip`; absent: nat.
    pub forwarding: Option<(String, P)>,
    pub backends: Vec<RawBackend<P>>,
    /// Absent: no check.
    pub check: Option<RawCheck<P>>,
}

/// A service's health check as given, validated by [`check_settings`].
#[derive(Debug, Clone)]
pub enum RawCheck<P> {
    /// A `[service.check]` table: the kind, and every other key written, as written.
    File {
        kind: (String, P),
        keys: Vec<(Setting, RawValue, P)>,
    },
    /// An `Apply` request's check: 0 and "" take their defaults, as in `SetCheck`.
    Api(proto::HealthCheck),
}

/// A value of a `[service.check]` key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawValue {
    Text(String),
    Number(u32),
}

#[derive(Debug, Clone)]
pub struct RawBackend<P> {
    pub address: (String, P),
    pub weight: Option<(u32, P)>,
}

/// Where a validation error is, and what it says (context included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid<P> {
    pub at: P,
    pub message: String,
}

/// Parses and validates a configuration; `file` is the name errors start with.
///
/// # Errors
///
/// The first error in the file, as `FILE:LINE: ...`: bad TOML, an unknown key, a value of
/// the wrong type, a bad address, a duplicate service or backend, a weight or table size
/// out of range, a backend of the other address family, an unknown mode.
pub fn parse(file: &str, text: &str) -> Result<Config, ConfigError> {
    let at = |span: &Range<usize>, message: String| ConfigError {
        file: file.to_string(),
        line: line_at(text, span.start),
        message,
    };
    let raw: FileToml = toml::from_str(text).map_err(|e| {
        let span = e.span().unwrap_or(0..0);
        let context = context_at(text, span.start);
        // An unknown key names itself; other messages ("invalid type: ...") do not.
        let message = e.message().trim_end();
        let message = match context {
            Some(c) if message.starts_with("unknown field") => {
                let c = c.rsplit_once(": ").map_or(String::new(), |(c, _)| c.into());
                join(&c, message)
            }
            Some(c) => join(&c, message),
            None => message.to_string(),
        };
        at(&span, message)
    })?;

    let daemon = match raw.daemon {
        None => DaemonSettings::default(),
        Some(d) => DaemonSettings {
            interfaces: d
                .interfaces
                .map(|list| {
                    let span = list.span();
                    let names = list.into_inner();
                    if names.is_empty() {
                        return Err(at(&span, "daemon: interfaces: the list is empty".into()));
                    }
                    names
                        .into_iter()
                        .map(|n| {
                            let span = n.span();
                            let n = n.into_inner();
                            if n.is_empty() || n.contains(',') {
                                Err(at(
                                    &span,
                                    format!("daemon: interfaces: {n:?} is not an interface name"),
                                ))
                            } else {
                                Ok(n)
                            }
                        })
                        .collect()
                })
                .transpose()?,
            mode: d
                .mode
                .map(|m| {
                    parse_mode(m.get_ref()).ok_or_else(|| {
                        at(
                            &m.span(),
                            format!("daemon: mode: {}", mode_error(m.get_ref())),
                        )
                    })
                })
                .transpose()?,
        },
    };

    let raw_services: Vec<RawService<Range<usize>>> = raw
        .service
        .into_iter()
        .map(|s| RawService {
            address: (s.address.get_ref().clone(), s.address.span()),
            table_size: s.table_size.map(|t| (*t.get_ref(), t.span())),
            affinity: s.affinity.map(|a| (a.get_ref().clone(), a.span())),
            affinity_timeout: s.affinity_timeout.map(|t| (*t.get_ref(), t.span())),
            forwarding: s.forwarding.map(|f| (f.get_ref().clone(), f.span())),
            backends: s
                .backend
                .into_iter()
                .map(|b| RawBackend {
                    address: (b.address.get_ref().clone(), b.address.span()),
                    weight: b.weight.map(|w| (*w.get_ref(), w.span())),
                })
                .collect(),
            check: s.check.map(raw_check),
        })
        .collect();
    let services = validate(&raw_services).map_err(|e| at(&e.at, e.message))?;
    let mut lines = BTreeMap::new();
    for s in &raw_services {
        // Validated: every address parses.
        let Ok(service) = s.address.0.parse::<ServiceAddr>() else {
            continue;
        };
        lines.insert((service, None), line_at(text, s.address.1.start));
        for b in &s.backends {
            if let Ok(backend) = b.address.0.parse::<BackendAddr>() {
                lines.insert((service, Some(backend)), line_at(text, b.address.1.start));
            }
        }
    }
    Ok(Config {
        daemon,
        services,
        lines,
    })
}

/// Checks services as given (from a file or an `Apply` request) with the same rules as the
/// CLI and the daemon's other requests, and turns them into [`Services`]. Missing table
/// sizes and weights take their defaults.
///
/// # Errors
///
/// The first bad item, with where it is and `service "S": backend "B": ` before the reason.
pub fn validate<P: Clone>(raw: &[RawService<P>]) -> Result<Services, Invalid<P>> {
    let mut services = Services::new();
    // Where each service was first seen, to name it in a duplicate's error.
    let mut first: BTreeMap<ServiceAddr, usize> = BTreeMap::new();
    for (i, s) in raw.iter().enumerate() {
        let ctx = format!("service {:?}", s.address.0);
        let bad = |at: &P, message: String| Invalid {
            at: at.clone(),
            message: join(&ctx, &message),
        };
        let service: ServiceAddr = s
            .address
            .0
            .parse()
            .map_err(|e| bad(&s.address.1, addr_message(&e)))?;
        if let Some(&j) = first.get(&service) {
            return Err(bad(
                &s.address.1,
                format!("duplicate service (also service #{})", j + 1),
            ));
        }
        first.insert(service, i);
        let table_size = match &s.table_size {
            Some((size, at)) => {
                crate::limits::check_table_size(*size).map_err(|e| bad(at, e.to_string()))?
            }
            None => DEFAULT_TABLE_SIZE,
        };
        let affinity = {
            let mode = s.affinity.as_ref().map_or("", |(m, _)| m.as_str());
            let timeout = s.affinity_timeout.as_ref().map(|(t, _)| *t);
            // The error is at the timeout when one is given, else at the mode.
            let at = match (&s.affinity_timeout, &s.affinity) {
                (Some((_, at)), _) | (None, Some((_, at))) => Some(at),
                (None, None) => None,
            };
            match (Affinity::new(mode, timeout), at) {
                (Ok(a), _) => a,
                (Err(e), Some(at)) => return Err(bad(at, e.to_string())),
                (Err(_), None) => Affinity::None,
            }
        };
        let forwarding = match &s.forwarding {
            Some((name, at)) => name
                .parse()
                .map_err(|e: crate::forwarding::ForwardingError| bad(at, e.to_string()))?,
            None => Forwarding::Nat,
        };
        let check = match &s.check {
            // As the daemon lists it, so that a `none` with leftovers is no change.
            Some(c) => running_check(
                &check_settings(c, &service, &s.address.1).map_err(|e| bad(&e.at, e.message))?,
            ),
            None => CheckSettings::default(),
        };
        let mut backends = Backends::new();
        for b in &s.backends {
            let bctx = format!("backend {:?}", b.address.0);
            let bad = |at: &P, message: String| bad(at, join(&bctx, &message));
            let backend: BackendAddr = b
                .address
                .0
                .parse()
                .map_err(|e| bad(&b.address.1, addr_message(&e)))?;
            service
                .check_backend(&backend)
                .map_err(|e| bad(&b.address.1, e.to_string()))?;
            if backends.contains_key(&backend) {
                return Err(bad(&b.address.1, "duplicate backend".into()));
            }
            let weight = match &b.weight {
                Some((w, at)) => state::check_weight(*w).map_err(|e| bad(at, e.to_string()))?,
                None => DEFAULT_WEIGHT,
            };
            backends.insert(backend, weight);
        }
        services.insert(
            service,
            ServiceSpec {
                table_size,
                backends,
                affinity,
                forwarding,
                check,
            },
        );
    }
    Ok(services)
}

/// The keys of a `[service.check]` table, in the order they are checked.
fn raw_check(c: CheckToml) -> RawCheck<Range<usize>> {
    let text = |v: Option<Spanned<String>>, s: Setting| {
        v.map(|v| (s, RawValue::Text(v.get_ref().clone()), v.span()))
    };
    let number = |v: Option<Spanned<u32>>, s: Setting| {
        v.map(|v| (s, RawValue::Number(*v.get_ref()), v.span()))
    };
    let keys = [
        text(c.interval, Setting::Interval),
        text(c.timeout, Setting::Timeout),
        number(c.rise, Setting::Rise),
        number(c.fall, Setting::Fall),
        number(c.port, Setting::Port),
        text(c.addr, Setting::Addr),
        text(c.http_path, Setting::HttpPath),
        text(c.http_method, Setting::HttpMethod),
        text(c.http_status, Setting::HttpStatus),
        text(c.http_host, Setting::HttpHost),
        text(c.grpc_service, Setting::GrpcService),
        text(c.all_down, Setting::AllDown),
    ];
    RawCheck::File {
        kind: (c.kind.get_ref().clone(), c.kind.span()),
        keys: keys.into_iter().flatten().collect(),
    }
}

/// A check as given, made into settings by check.rs's own parsing, defaults and limits
/// (those of `xlb service set-check`); `at` is where an error about no one key is.
///
/// # Errors
///
/// `check: REASON` at the key at fault, e.g. `check: interval 5ms out of range (10ms-1h)`
/// or `check: http_path needs kind http`.
pub fn check_settings<P: Clone>(
    raw: &RawCheck<P>,
    service: &ServiceAddr,
    at: &P,
) -> Result<CheckSettings, Invalid<P>> {
    let (kind, keys) = match raw {
        RawCheck::Api(m) => {
            return CheckSettings::from_proto(m, service).map_err(|e| Invalid {
                at: at.clone(),
                message: format!("check: {e}"),
            });
        }
        RawCheck::File { kind, keys } => (kind, keys),
    };
    let bad = |e: CheckError| {
        let at = match Setting::of_error(&e) {
            Some(s) => keys.iter().find(|k| k.0 == s).map_or(&kind.1, |k| &k.2),
            None => &kind.1,
        };
        Invalid {
            at: at.clone(),
            message: format!("check: {e}"),
        }
    };
    // The API takes "" as none; a file says what it means.
    if kind.0.is_empty() {
        return Err(bad(CheckError::Kind(String::new())));
    }
    let mut m = proto::HealthCheck {
        kind: kind.0.clone(),
        ..Default::default()
    };
    // Numbers as written, 0 included (which the message would take as "the default").
    let mut numbers = Vec::new();
    for (setting, value, _) in keys {
        let text = || match value {
            RawValue::Text(t) => t.clone(),
            RawValue::Number(n) => n.to_string(),
        };
        let number = match value {
            RawValue::Number(n) => *n,
            RawValue::Text(_) => 0,
        };
        match setting {
            Setting::Interval => {
                m.interval_ms = check::parse_interval(&text()).map_err(bad)?;
                numbers.push((*setting, m.interval_ms));
            }
            Setting::Timeout => {
                m.timeout_ms = check::parse_timeout(&text()).map_err(bad)?;
                numbers.push((*setting, m.timeout_ms));
            }
            Setting::Rise => {
                m.rise = number;
                numbers.push((*setting, number));
            }
            Setting::Fall => {
                m.fall = number;
                numbers.push((*setting, number));
            }
            Setting::Port => m.port = Some(number),
            Setting::Addr => m.addr = text(),
            Setting::HttpPath => m.http_path = text(),
            Setting::HttpMethod => m.http_method = text(),
            Setting::HttpStatus => m.http_status = text(),
            Setting::HttpHost => m.http_host = text(),
            Setting::GrpcService => m.grpc_service = text(),
            Setting::AllDown => m.all_down = text(),
        }
    }
    let mut settings = CheckSettings::parse_proto(&m).map_err(bad)?;
    if let Some((setting, kinds, at)) = keys
        .iter()
        .find_map(|(s, _, at)| s.misfit(&m.kind).map(|k| (s, k, at)))
    {
        return Err(Invalid {
            at: at.clone(),
            message: format!("check: {} needs kind {kinds}", setting.key()),
        });
    }
    for (setting, n) in numbers {
        match setting {
            Setting::Interval => settings.interval_ms = n,
            Setting::Timeout => settings.timeout_ms = n,
            Setting::Rise => settings.rise = n,
            Setting::Fall => settings.fall = n,
            _ => {}
        }
    }
    settings.validate(service).map_err(bad)?;
    Ok(settings)
}

/// A service's check as a configuration holds it: the settings when it checks, else the
/// defaults (kind `none` with, say, `all_down = "drop"` left over is not worth a diff).
pub fn running_check(check: &CheckSettings) -> CheckSettings {
    if check.is_on() {
        check.clone()
    } else {
        CheckSettings::default()
    }
}

/// An address error without the input (the context already names it).
fn addr_message(e: &AddrError) -> String {
    match e {
        AddrError::Service { reason, .. } | AddrError::Backend { reason, .. } => {
            format!("address: {reason}")
        }
        AddrError::FamilyMismatch { .. } | AddrError::BackendIsVip { .. } => e.to_string(),
    }
}

fn join(context: &str, message: &str) -> String {
    if context.is_empty() {
        message.to_string()
    } else {
        format!("{context}: {message}")
    }
}

/// 1-based line of byte offset `pos`.
fn line_at(text: &str, pos: usize) -> usize {
    let pos = pos.min(text.len());
    1 + text.as_bytes()[..pos]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
}

fn parse_mode(s: &str) -> Option<AttachMode> {
    use clap::ValueEnum as _;
    AttachMode::from_str(s, false).ok()
}

fn mode_error(s: &str) -> String {
    use clap::ValueEnum as _;
    let names: Vec<String> = AttachMode::value_variants()
        .iter()
        .filter_map(|m| m.to_possible_value())
        .map(|v| format!("{:?}", v.get_name()))
        .collect();
    format!("{s:?} is not {}", names.join(" or "))
}

fn mode_name(mode: AttachMode) -> String {
    use clap::ValueEnum as _;
    mode.to_possible_value()
        .map(|v| v.get_name().to_string())
        .unwrap_or_default()
}

/// What a serde error at byte `pos` is about, e.g. `service "198.18.0.10:80/tcp": backend
/// "198.19.0.2:8080": weight`, found by walking the document with its spans (the TOML is
/// well-formed here: only type errors reach this). `None` at the top level.
fn context_at(text: &str, pos: usize) -> Option<String> {
    use toml::de::{DeTable, DeValue};

    /// The bytes a value covers: a table's own span is only its header, so the union of
    /// every key and value under it.
    fn extent(v: &Spanned<DeValue<'_>>) -> Range<usize> {
        let mut r = v.span();
        let mut grow = |s: Range<usize>| {
            r.start = r.start.min(s.start);
            r.end = r.end.max(s.end);
        };
        match v.get_ref() {
            DeValue::Table(t) => {
                for (k, v) in t.iter() {
                    grow(k.span());
                    grow(extent(v));
                }
            }
            DeValue::Array(a) => {
                for e in a.iter() {
                    grow(extent(e));
                }
            }
            _ => {}
        }
        r
    }

    fn inside(r: Range<usize>, pos: usize) -> bool {
        r.start <= pos && pos < r.end.max(r.start + 1)
    }

    fn walk(table: &DeTable<'_>, pos: usize, path: &mut Vec<String>) {
        let Some((k, v)) = table
            .iter()
            .find(|(k, v)| inside(k.span(), pos) || inside(extent(v), pos))
        else {
            return;
        };
        let key = k.get_ref().to_string();
        match v.get_ref() {
            DeValue::Table(t) => {
                path.push(key);
                walk(t, pos, path);
            }
            DeValue::Array(a) => {
                let found = a
                    .iter()
                    .enumerate()
                    .find(|(_, e)| inside(extent(e), pos))
                    .and_then(|(i, e)| Some((i, e.get_ref().as_table()?)));
                match found {
                    Some((i, t)) => {
                        path.push(element(&key, i, t));
                        walk(t, pos, path);
                    }
                    None => path.push(key),
                }
            }
            _ => path.push(key),
        }
    }

    /// `service "ADDR"` for an element with a string address, else `service #N`.
    fn element(key: &str, i: usize, t: &DeTable<'_>) -> String {
        let address = t
            .iter()
            .find(|(k, _)| k.get_ref() == "address")
            .and_then(|(_, v)| v.get_ref().as_str().map(str::to_string));
        match address {
            Some(a) => format!("{key} {a:?}"),
            None => format!("{key} #{}", i + 1),
        }
    }

    let doc = DeTable::parse(text).ok()?;
    let mut path = Vec::new();
    walk(doc.get_ref(), pos, &mut path);
    (!path.is_empty()).then(|| path.join(": "))
}

// ---- diff ------------------------------------------------------------------------------

/// What `xlb apply` does to the running services besides making the file's: services and
/// backends absent from the file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ApplyOptions {
    /// Remove the services and backends that are not in the file (without it: services are
    /// kept as they are, backends drained).
    pub prune: bool,
    /// With `prune`: remove them even with live flows, which re-hash (as `xlb backend remove
    /// --force`). Without it, pruning something with live flows is refused.
    pub force: bool,
    /// Compute and validate the changes, change nothing.
    pub dry_run: bool,
}

/// One service before and after an apply (`None`: absent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePlan {
    pub service: ServiceAddr,
    pub before: Option<ServiceSpec>,
    pub after: Option<ServiceSpec>,
}

/// The services that change when `desired` is applied over `running`, in the order they
/// are applied: removed services first (they free ids, indexes and table room), then
/// changed ones, then new ones; each group in address order. An unchanged service is not
/// in the plan, so its table is not written.
pub fn plan(running: &Services, desired: &Services, opts: ApplyOptions) -> Vec<ServicePlan> {
    let mut removed = Vec::new();
    let mut changed = Vec::new();
    for (service, before) in running {
        let after = match desired.get(service) {
            Some(want) => {
                let mut after = want.clone();
                if !opts.prune {
                    // Absent backends are drained, not cut: kept at weight 0.
                    for b in before.backends.keys() {
                        after.backends.entry(*b).or_insert(0);
                    }
                }
                Some(after)
            }
            None if opts.prune => None,
            None => Some(before.clone()),
        };
        if after.as_ref() == Some(before) {
            continue;
        }
        let p = ServicePlan {
            service: *service,
            before: Some(before.clone()),
            after,
        };
        if p.after.is_none() {
            removed.push(p);
        } else {
            changed.push(p);
        }
    }
    let added = desired
        .iter()
        .filter(|(s, _)| !running.contains_key(s))
        .map(|(s, want)| ServicePlan {
            service: *s,
            before: None,
            after: Some(want.clone()),
        });
    removed.into_iter().chain(changed).chain(added).collect()
}

/// One line of a diff.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Change {
    AddService {
        #[serde(serialize_with = "as_str")]
        service: ServiceAddr,
        table_size: u32,
    },
    RemoveService {
        #[serde(serialize_with = "as_str")]
        service: ServiceAddr,
    },
    SetTableSize {
        #[serde(serialize_with = "as_str")]
        service: ServiceAddr,
        from: u32,
        to: u32,
    },
    AddBackend {
        #[serde(serialize_with = "as_str")]
        service: ServiceAddr,
        #[serde(serialize_with = "as_str")]
        backend: BackendAddr,
        weight: u32,
    },
    RemoveBackend {
        #[serde(serialize_with = "as_str")]
        service: ServiceAddr,
        #[serde(serialize_with = "as_str")]
        backend: BackendAddr,
    },
    SetWeight {
        #[serde(serialize_with = "as_str")]
        service: ServiceAddr,
        #[serde(serialize_with = "as_str")]
        backend: BackendAddr,
        from: u32,
        to: u32,
    },
    /// Also after `AddService` for a new service whose affinity is not `none`.
    SetAffinity {
        #[serde(serialize_with = "as_str")]
        service: ServiceAddr,
        #[serde(serialize_with = "as_str")]
        from: Affinity,
        #[serde(serialize_with = "as_str")]
        to: Affinity,
    },
    /// Also after `AddService` for a new service that is not `nat`.
    SetForwarding {
        #[serde(serialize_with = "as_str")]
        service: ServiceAddr,
        #[serde(serialize_with = "as_str")]
        from: Forwarding,
        #[serde(serialize_with = "as_str")]
        to: Forwarding,
    },
    /// A service's health check changes (also from `none` for a new service that checks).
    SetCheck {
        #[serde(serialize_with = "as_str")]
        service: ServiceAddr,
        #[serde(serialize_with = "as_check")]
        from: CheckSettings,
        #[serde(serialize_with = "as_check")]
        to: CheckSettings,
    },
}

fn as_str<T: fmt::Display, S: serde::Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

/// A check as `xlb service list --json` shows one (the API's message).
fn as_check<S: serde::Serializer>(c: &CheckSettings, s: S) -> Result<S::Ok, S::Error> {
    c.to_proto().serialize(s)
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::AddService {
                service,
                table_size,
            } => write!(f, "+ service {service} table_size={table_size}"),
            Change::RemoveService { service } => write!(f, "- service {service}"),
            Change::SetTableSize { service, from, to } => {
                write!(f, "~ service {service} table_size={from}->{to}")
            }
            Change::AddBackend {
                service,
                backend,
                weight,
            } => write!(f, "+ backend {service} {backend} weight={weight}"),
            Change::RemoveBackend { service, backend } => {
                write!(f, "- backend {service} {backend}")
            }
            Change::SetWeight {
                service,
                backend,
                from,
                to,
            } => {
                write!(f, "~ backend {service} {backend} weight={from}->{to}")?;
                if *to == 0 {
                    f.write_str(" (drain)")?;
                }
                Ok(())
            }
            Change::SetAffinity { service, from, to } => {
                write!(f, "~ service {service} affinity={from}->{to}")
            }
            Change::SetForwarding { service, from, to } => {
                write!(f, "~ service {service} forwarding={from}->{to}")
            }
            Change::SetCheck { service, from, to } => write!(
                f,
                "~ service {service} check {} -> {}",
                check_brief(from),
                check_brief(to)
            ),
        }
    }
}

/// A check in one word for a diff line: `none`, or e.g. `tcp/200ms` then every other
/// setting as `key=value` (`http GET /healthz 200-399/2s timeout=1s rise=2 fall=3
/// all_down=fail-open`), so any change shows.
fn check_brief(c: &CheckSettings) -> String {
    if c.is_none() {
        return "none".into();
    }
    // The one-line summary's head: kind and what it probes.
    let full = c.to_string();
    let head = full.split(", every ").next().unwrap_or(&full);
    format!(
        "{head}/{} timeout={} rise={} fall={} all_down={}",
        check::ms(c.interval_ms),
        check::ms(c.timeout_ms),
        c.rise,
        c.fall,
        c.all_down.name()
    )
}

/// The diff of a plan, one [`Change`] per added, removed or changed item.
pub fn changes(plans: &[ServicePlan]) -> Vec<Change> {
    let mut out = Vec::new();
    for p in plans {
        let service = p.service;
        let (before, after) = match (&p.before, &p.after) {
            (_, None) => {
                out.push(Change::RemoveService { service });
                continue;
            }
            (None, Some(after)) => {
                out.push(Change::AddService {
                    service,
                    table_size: after.table_size,
                });
                if !after.affinity.is_none() {
                    out.push(Change::SetAffinity {
                        service,
                        from: Affinity::None,
                        to: after.affinity,
                    });
                }
                if after.forwarding.is_dsr() {
                    out.push(Change::SetForwarding {
                        service,
                        from: Forwarding::Nat,
                        to: after.forwarding,
                    });
                }
                for (&backend, &weight) in &after.backends {
                    out.push(Change::AddBackend {
                        service,
                        backend,
                        weight,
                    });
                }
                out.extend(check_change(
                    service,
                    &CheckSettings::default(),
                    &after.check,
                ));
                continue;
            }
            (Some(before), Some(after)) => (before, after),
        };
        if before.table_size != after.table_size {
            out.push(Change::SetTableSize {
                service,
                from: before.table_size,
                to: after.table_size,
            });
        }
        if before.affinity != after.affinity {
            out.push(Change::SetAffinity {
                service,
                from: before.affinity,
                to: after.affinity,
            });
        }
        if before.forwarding != after.forwarding {
            out.push(Change::SetForwarding {
                service,
                from: before.forwarding,
                to: after.forwarding,
            });
        }
        for (&backend, &from) in &before.backends {
            match after.backends.get(&backend) {
                None => out.push(Change::RemoveBackend { service, backend }),
                Some(&to) if to != from => out.push(Change::SetWeight {
                    service,
                    backend,
                    from,
                    to,
                }),
                Some(_) => {}
            }
        }
        for (&backend, &weight) in &after.backends {
            if !before.backends.contains_key(&backend) {
                out.push(Change::AddBackend {
                    service,
                    backend,
                    weight,
                });
            }
        }
        out.extend(check_change(service, &before.check, &after.check));
    }
    out
}

/// The change of a service's check, if it changes (last of the service's changes: it is
/// applied after its backends, by `set_check`).
fn check_change(service: ServiceAddr, from: &CheckSettings, to: &CheckSettings) -> Option<Change> {
    (from != to).then(|| Change::SetCheck {
        service,
        from: from.clone(),
        to: to.clone(),
    })
}

/// The diff as `xlb apply` prints it: one line per change, or `no changes`.
pub fn render_changes(changes: &[Change]) -> String {
    if changes.is_empty() {
        return "no changes\n".into();
    }
    changes.iter().map(|c| format!("{c}\n")).collect()
}

// ---- the API's messages ------------------------------------------------------------------

impl Change {
    pub fn to_proto(&self) -> proto::Change {
        if let Change::SetCheck { service, from, to } = self {
            return proto::Change {
                op: "set_check".into(),
                service: service.to_string(),
                check_from: Some(from.to_proto()),
                check_to: Some(to.to_proto()),
                ..Default::default()
            };
        }
        let (op, service, backend, from, to) = match *self {
            Change::AddService {
                service,
                table_size,
            } => ("add_service", service, None, None, Some(table_size)),
            Change::RemoveService { service } => ("remove_service", service, None, None, None),
            Change::SetTableSize { service, from, to } => {
                ("set_table_size", service, None, Some(from), Some(to))
            }
            Change::AddBackend {
                service,
                backend,
                weight,
            } => ("add_backend", service, Some(backend), None, Some(weight)),
            Change::RemoveBackend { service, backend } => {
                ("remove_backend", service, Some(backend), None, None)
            }
            Change::SetWeight {
                service,
                backend,
                from,
                to,
            } => ("set_weight", service, Some(backend), Some(from), Some(to)),
            // As timeouts in seconds, 0 for none.
            Change::SetAffinity { service, from, to } => (
                "set_affinity",
                service,
                None,
                Some(from.timeout_s()),
                Some(to.timeout_s()),
            ),
            // As `ServiceValue::forwarding` values.
            Change::SetForwarding { service, from, to } => (
                "set_forwarding",
                service,
                None,
                Some(from.to_value()),
                Some(to.to_value()),
            ),
            Change::SetCheck { .. } => unreachable!("returned above"),
        };
        proto::Change {
            op: op.into(),
            service: service.to_string(),
            backend: backend.map(|b| b.to_string()).unwrap_or_default(),
            from,
            to,
            ..Default::default()
        }
    }

    /// The change a daemon's reply describes; `None` for one this CLI does not know.
    pub fn from_proto(c: &proto::Change) -> Option<Change> {
        let service: ServiceAddr = c.service.parse().ok()?;
        let backend = || c.backend.parse::<BackendAddr>().ok();
        Some(match c.op.as_str() {
            "add_service" => Change::AddService {
                service,
                table_size: c.to?,
            },
            "remove_service" => Change::RemoveService { service },
            "set_table_size" => Change::SetTableSize {
                service,
                from: c.from?,
                to: c.to?,
            },
            "add_backend" => Change::AddBackend {
                service,
                backend: backend()?,
                weight: c.to?,
            },
            "remove_backend" => Change::RemoveBackend {
                service,
                backend: backend()?,
            },
            "set_weight" => Change::SetWeight {
                service,
                backend: backend()?,
                from: c.from?,
                to: c.to?,
            },
            "set_affinity" => Change::SetAffinity {
                service,
                from: Affinity::from_timeout(c.from?).ok()?,
                to: Affinity::from_timeout(c.to?).ok()?,
            },
            "set_forwarding" => Change::SetForwarding {
                service,
                from: forwarding_of(c.from?)?,
                to: forwarding_of(c.to?)?,
            },
            "set_check" => Change::SetCheck {
                service,
                from: CheckSettings::parse_proto(c.check_from.as_ref()?).ok()?,
                to: CheckSettings::parse_proto(c.check_to.as_ref()?).ok()?,
            },
            _ => return None,
        })
    }
}

/// The mode a `ServiceValue::forwarding` value names.
fn forwarding_of(v: u32) -> Option<Forwarding> {
    crate::forwarding::NAMES
        .iter()
        .filter_map(|n| n.parse::<Forwarding>().ok())
        .find(|f| f.to_value() == v)
}

/// The services of a configuration as an `Apply` request carries them.
pub fn services_to_proto(services: &Services) -> Vec<proto::ServiceConfig> {
    services
        .iter()
        .map(|(s, spec)| proto::ServiceConfig {
            service: s.to_string(),
            table_size: Some(spec.table_size),
            affinity: (!spec.affinity.is_none()).then(|| proto::Affinity {
                mode: spec.affinity.mode().into(),
                timeout_s: Some(spec.affinity.timeout_s()),
            }),
            forwarding: if spec.forwarding.is_dsr() {
                spec.forwarding.to_string()
            } else {
                String::new()
            },
            backends: spec
                .backends
                .iter()
                .map(|(b, w)| proto::BackendConfig {
                    backend: b.to_string(),
                    weight: Some(*w),
                })
                .collect(),
            check: spec.check.is_on().then(|| spec.check.to_proto()),
        })
        .collect()
}

/// The services of an `Apply` request, checked as a file's are.
///
/// # Errors
///
/// The first bad item, e.g. `service "198.18.0.10:80/tcp": backend "x": address: ...`.
pub fn services_from_proto(list: &[proto::ServiceConfig]) -> Result<Services, String> {
    let raw: Vec<RawService<()>> = list
        .iter()
        .map(|s| RawService {
            address: (s.service.clone(), ()),
            table_size: s.table_size.map(|t| (t, ())),
            affinity: s.affinity.as_ref().map(|a| (a.mode.clone(), ())),
            affinity_timeout: s
                .affinity
                .as_ref()
                .and_then(|a| a.timeout_s)
                .map(|t| (t, ())),
            forwarding: (!s.forwarding.is_empty()).then(|| (s.forwarding.clone(), ())),
            backends: s
                .backends
                .iter()
                .map(|b| RawBackend {
                    address: (b.backend.clone(), ()),
                    weight: b.weight.map(|w| (w, ())),
                })
                .collect(),
            check: s.check.clone().map(RawCheck::Api),
        })
        .collect();
    validate(&raw).map_err(|e| e.message)
}

// ---- rendering -------------------------------------------------------------------------

/// A configuration as a TOML file that [`parse`] reads back to the same configuration.
/// Every table size and weight is written out, defaults included.
pub fn render(config: &Config) -> String {
    let quote = |s: &str| toml::Value::String(s.to_string()).to_string();
    let mut out = String::from("# xlb configuration (see the README, \"Configuration\")\n");
    let d = &config.daemon;
    if d.interfaces.is_some() || d.mode.is_some() {
        out.push_str("\n[daemon]\n");
        if let Some(ifaces) = &d.interfaces {
            let list: Vec<String> = ifaces.iter().map(|i| quote(i)).collect();
            out.push_str(&format!("interfaces = [{}]\n", list.join(", ")));
        }
        if let Some(mode) = d.mode {
            out.push_str(&format!("mode = {}\n", quote(&mode_name(mode))));
        }
    }
    for (service, spec) in &config.services {
        out.push_str(&format!(
            "\n[[service]]\naddress = {}\ntable_size = {}\n",
            quote(&service.to_string()),
            spec.table_size
        ));
        if let Affinity::ClientIp { timeout_s } = spec.affinity {
            out.push_str(&format!(
                "affinity = {}\naffinity_timeout = {timeout_s}\n",
                quote(spec.affinity.mode())
            ));
        }
        if spec.forwarding.is_dsr() {
            out.push_str(&format!("forwarding = {}\n", quote(spec.forwarding.name())));
        }
        out.push_str(&render_check(&spec.check));
        for (backend, weight) in &spec.backends {
            out.push_str(&format!(
                "\n[[service.backend]]\naddress = {}\nweight = {weight}\n",
                quote(&backend.to_string())
            ));
        }
    }
    out
}

/// A service's `[service.check]` table with every setting written out (nothing for no
/// check), so that [`parse`] reads back the same settings.
fn render_check(c: &CheckSettings) -> String {
    use std::fmt::Write as _;

    if c.is_none() {
        return String::new();
    }
    let quote = |s: &str| toml::Value::String(s.to_string()).to_string();
    let mut out = format!(
        "\n[service.check]\nkind = {}\ninterval = {}\ntimeout = {}\nrise = {}\nfall = {}\n",
        quote(c.kind_name()),
        quote(&check::ms(c.interval_ms)),
        quote(&check::ms(c.timeout_ms)),
        c.rise,
        c.fall
    );
    if let Some(port) = c.port {
        let _ = writeln!(out, "port = {port}");
    }
    if let Some(addr) = c.addr {
        let _ = writeln!(out, "addr = {}", quote(&addr.to_string()));
    }
    match &c.kind {
        check::CheckKind::Http {
            method,
            path,
            status,
            host,
        } => {
            let _ = writeln!(out, "http_method = {}", quote(method));
            let _ = writeln!(out, "http_path = {}", quote(path));
            let _ = writeln!(
                out,
                "http_status = {}",
                quote(&format!("{}-{}", status.0, status.1))
            );
            if let Some(host) = host {
                let _ = writeln!(out, "http_host = {}", quote(host));
            }
        }
        check::CheckKind::Grpc { service } if !service.is_empty() => {
            let _ = writeln!(out, "grpc_service = {}", quote(service));
        }
        check::CheckKind::Grpc { .. } => {}
        check::CheckKind::None | check::CheckKind::Tcp => {}
    }
    let _ = writeln!(out, "all_down = {}", quote(c.all_down.name()));
    out
}

#[cfg(test)]
mod tests;

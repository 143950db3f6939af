//! `xlb`, the command-line client of xlbd: arguments, and what each command asks the daemon.
//!
//! Addresses, weights and table sizes are checked here before the daemon is contacted, so a
//! bad argument fails fast; the daemon checks them again with the same code.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use tonic::Code;

use crate::addr::{AddrError, BackendAddr, ServiceAddr};
use crate::affinity::{Affinity, AffinityError};
use crate::check::{self, AllDown, CheckError, CheckSettings, Setting};
use crate::client::{self, DEFAULT_SOCKET, Unreachable};
use crate::control::proto;
use crate::forwarding::{Forwarding, ForwardingError};
use crate::limits::{self, LimitError};
use crate::output;

mod apply;

#[derive(Debug, Parser)]
#[command(
    name = "xlb",
    version,
    about = "Control xlbd, the xlb L4 load balancer daemon"
)]
pub struct Cli {
    /// xlbd's control socket.
    #[arg(long, global = true, env = "XLB_SOCKET", default_value = DEFAULT_SOCKET, value_name = "PATH")]
    pub socket: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

// Parsed once per run and moved into a `Request` at once: the size of its largest variant
// (`service add` with its check, affinity and forwarding options) costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Add, remove and list virtual services (VIP:PORT/PROTO).
    #[command(subcommand)]
    Service(ServiceCmd),
    /// Add, remove, reweight, drain and list the backends of a service.
    #[command(subcommand)]
    Backend(BackendCmd),
    /// The daemon: version, interfaces, mode, uptime, counts and counters.
    Status {
        /// One JSON document instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Global data-path counters, by name: a table, or JSON with --json.
    Stats {
        /// One JSON document instead of text.
        #[arg(long)]
        json: bool,
    },
    /// A live view of services and backends: packets/s, bit/s, live flows; q quits.
    Top {
        /// Seconds between refreshes (0.1-3600, decimals allowed) [default: 1].
        #[arg(long, value_name = "SECS", value_parser = limits::parse_interval,
              allow_negative_numbers = true)]
        interval: Option<std::time::Duration>,
    },
    /// Make the running services a configuration file's, with the fewest changes; prints
    /// them. Services absent from the file are kept; backends absent are drained (weight 0).
    Apply {
        /// The configuration file (TOML; see the README, "Configuration").
        #[arg(short = 'f', long = "file", value_name = "FILE")]
        file: PathBuf,
        /// Print the changes and make none.
        #[arg(long)]
        dry_run: bool,
        /// Remove the services and backends absent from the file (refused while one has
        /// live flows, unless --force).
        #[arg(long)]
        prune: bool,
        /// With --prune: remove even with live flows; they re-hash to other backends.
        #[arg(long, requires = "prune")]
        force: bool,
        /// The changes as a JSON array instead of text.
        #[arg(long)]
        json: bool,
    },
    /// The running configuration.
    #[command(subcommand)]
    Config(ConfigCmd),
    /// This node among several behind ECMP routers: drain it (its VIPs are withdrawn from
    /// BGP), end the drain, show what it announces.
    #[command(subcommand)]
    Node(NodeCmd),
}

#[derive(Debug, Subcommand)]
pub enum NodeCmd {
    /// Withdraw every VIP from BGP (xlbd --announce-table): the routers send this node no
    /// more flows; what still arrives is balanced. Kept across xlbd restarts.
    Drain,
    /// End the drain: VIPs with a backend up are announced again.
    Undrain,
    /// Whether the node drains, and VIP by VIP whether it is announced and why.
    Status {
        /// One JSON document instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCmd {
    /// Print the running settings and services as a configuration file (`xlb apply` of it
    /// changes nothing).
    Dump,
}

#[derive(Debug, Subcommand)]
pub enum ServiceCmd {
    /// Add a service, e.g. 198.18.0.10:80/tcp or [2001:2::10]:53/udp.
    Add {
        /// VIP:PORT/PROTO (proto: tcp or udp).
        service: String,
        /// Slots in the service's backend table: a prime, at least 100 per backend (Maglev's
        /// 1% balance), at least 101 [default: 65537, room for 655 backends].
        #[arg(long, value_name = "M", value_parser = limits::parse_table_size,
              allow_negative_numbers = true)]
        table_size: Option<u32>,
        #[command(flatten)]
        check: CheckArgs,
        #[command(flatten)]
        affinity: AffinityArgs,
        /// How packets reach the backends: nat (rewritten to the backend; replies come
        /// back through xlb), dsr-l2 (only the destination MAC changes; backends on this
        /// L2 segment hold the VIP) or dsr-ipip (IP-in-IP to the backend, which
        /// decapsulates with `xlbd --decap`). See the README's "Direct server return".
        #[arg(long, value_name = "MODE", default_value = "nat",
              value_parser = crate::forwarding::parse)]
        forwarding: Forwarding,
    },
    /// Set a service's session affinity (e.g. --affinity client-ip --affinity-timeout 30;
    /// --affinity none turns it off).
    SetAffinity {
        /// VIP:PORT/PROTO.
        service: String,
        #[command(flatten)]
        affinity: AffinityArgs,
    },
    /// Set how a service's backends are health-checked (replaces all its check settings;
    /// --check none stops checking).
    SetCheck {
        /// VIP:PORT/PROTO.
        service: String,
        #[command(flatten)]
        check: CheckArgs,
    },
    /// Remove a service and all its backends.
    Remove {
        /// VIP:PORT/PROTO.
        service: String,
    },
    /// List the services.
    List {
        /// One JSON document instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// Session affinity options of `service add` and `service set-affinity`.
#[derive(Debug, Clone, clap::Args)]
pub struct AffinityArgs {
    /// Session affinity: none, or client-ip (a client address's new flows go to the
    /// backend its last new flow went to, until the timeout passes without one)
    /// [default: none].
    #[arg(long, value_name = "MODE")]
    pub affinity: Option<String>,
    /// Seconds a client-ip affinity lasts after the client's last new flow, 1-86400
    /// [default: 10800].
    #[arg(long, value_name = "SECONDS", value_parser = limits::parse_affinity_timeout,
          allow_negative_numbers = true)]
    pub affinity_timeout: Option<u32>,
}

impl AffinityArgs {
    /// The setting asked for, checked as the daemon checks it; `None` when no option was
    /// given.
    fn to_proto(&self) -> Result<Option<proto::Affinity>, CliError> {
        if self.affinity.is_none() && self.affinity_timeout.is_none() {
            return Ok(None);
        }
        let mode = self.affinity.as_deref().unwrap_or("");
        let a = Affinity::new(mode, self.affinity_timeout)?;
        Ok(Some(proto::Affinity {
            mode: a.mode().to_string(),
            timeout_s: (!a.is_none()).then(|| a.timeout_s()),
        }))
    }
}

#[derive(Debug, Subcommand)]
pub enum BackendCmd {
    /// Add a backend to a service.
    Add {
        /// VIP:PORT/PROTO.
        service: String,
        /// ADDR:PORT, e.g. 198.19.0.2:8080 or [2001:2::2]:8080.
        backend: String,
        /// Relative share of new flows, 0-65535 [default: 100].
        #[arg(long, value_name = "N", value_parser = limits::parse_weight,
              allow_negative_numbers = true)]
        weight: Option<u32>,
    },
    /// Remove a backend from a service (refused while it has live flows: drain it first).
    Remove {
        /// VIP:PORT/PROTO.
        service: String,
        /// ADDR:PORT.
        backend: String,
        /// Remove it even with live flows; they re-hash to the other backends.
        #[arg(long)]
        force: bool,
    },
    /// Change a backend's weight (0 drains it).
    SetWeight {
        /// VIP:PORT/PROTO.
        service: String,
        /// ADDR:PORT.
        backend: String,
        /// Relative share of new flows, 0-65535.
        #[arg(value_parser = limits::parse_weight, allow_negative_numbers = true)]
        weight: u32,
    },
    /// Drain a backend: no new flows, existing ones stay (weight 0).
    Drain {
        /// VIP:PORT/PROTO.
        service: String,
        /// ADDR:PORT.
        backend: String,
    },
    /// List backends with their counters and live flows.
    List {
        /// Only this service's backends (VIP:PORT/PROTO).
        service: Option<String>,
        /// One JSON document instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// A service's health-check settings (see the README's "Health checks"). A backend starts
/// `checking`; --rise successes in a row make it up, --fall failures down. A down backend
/// gets no new flows; its established ones keep going.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct CheckArgs {
    /// Health check of the backends: none, tcp (a connection is accepted), http (the answer's
    /// status is in --http-status) or grpc (grpc.health.v1 Check answers SERVING)
    /// [default: none].
    #[arg(long, value_name = "KIND", value_parser = ["none", "tcp", "http", "grpc"])]
    pub check: Option<String>,
    /// Time between two checks of a backend, e.g. 200ms, 2s, 1m (10ms-1h) [default: 2s].
    #[arg(long, value_name = "DURATION", value_parser = check::parse_interval)]
    pub interval: Option<u32>,
    /// The longest a check may take, at most the interval [default: 1s, or the interval].
    #[arg(long, value_name = "DURATION", value_parser = check::parse_timeout)]
    pub timeout: Option<u32>,
    /// Consecutive successes that make a backend up (1-100) [default: 2].
    #[arg(long, value_name = "N")]
    pub rise: Option<u32>,
    /// Consecutive failures that make a backend down (1-100) [default: 3].
    #[arg(long, value_name = "N")]
    pub fall: Option<u32>,
    /// Check this port instead of the backend's own.
    #[arg(long, value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    pub check_port: Option<u16>,
    /// Check this address instead of the backend's own.
    #[arg(long, value_name = "ADDR")]
    pub check_addr: Option<IpAddr>,
    /// http: the request's path [default: /].
    #[arg(long, value_name = "PATH")]
    pub http_path: Option<String>,
    /// http: the request's method [default: GET].
    #[arg(long, value_name = "METHOD")]
    pub http_method: Option<String>,
    /// http: the statuses that pass, N or N-M [default: 200-399].
    #[arg(long, value_name = "RANGE")]
    pub http_status: Option<String>,
    /// http: the Host header [default: the checked ADDR:PORT].
    #[arg(long, value_name = "HOST")]
    pub http_host: Option<String>,
    /// grpc: the service asked about [default: "", the server as a whole].
    #[arg(long, value_name = "NAME")]
    pub grpc_service: Option<String>,
    /// When every backend that is not drained is down: fail-open (the table holds them
    /// all, as Envoy's panic threshold) or drop (an empty table) [default: fail-open].
    #[arg(long, value_enum, value_name = "WHAT")]
    pub all_down: Option<AllDown>,
}

impl CheckArgs {
    /// Whether any flag was given.
    fn given(&self) -> bool {
        self.check.is_some() || self.others().next().is_some()
    }

    /// The settings other than --check that were given.
    fn others(&self) -> impl Iterator<Item = Setting> {
        [
            (Setting::Interval, self.interval.is_some()),
            (Setting::Timeout, self.timeout.is_some()),
            (Setting::Rise, self.rise.is_some()),
            (Setting::Fall, self.fall.is_some()),
            (Setting::Port, self.check_port.is_some()),
            (Setting::Addr, self.check_addr.is_some()),
            (Setting::HttpPath, self.http_path.is_some()),
            (Setting::HttpMethod, self.http_method.is_some()),
            (Setting::HttpStatus, self.http_status.is_some()),
            (Setting::HttpHost, self.http_host.is_some()),
            (Setting::GrpcService, self.grpc_service.is_some()),
            (Setting::AllDown, self.all_down.is_some()),
        ]
        .into_iter()
        .filter_map(|(setting, given)| given.then_some(setting))
    }

    /// The settings as the API carries them, checked with the daemon's own rules.
    fn to_proto(&self, service: &ServiceAddr) -> Result<proto::HealthCheck, CheckError> {
        let kind = self.check.clone().unwrap_or_else(|| "none".into());
        if let Some((flag, kinds)) = self
            .others()
            .find_map(|s| s.misfit(&kind).map(|k| (s.flag(), k)))
        {
            return Err(CheckError::Needs(flag, kinds));
        }
        let m = proto::HealthCheck {
            kind,
            interval_ms: self.interval.unwrap_or(0),
            timeout_ms: self.timeout.unwrap_or(0),
            rise: self.rise.unwrap_or(0),
            fall: self.fall.unwrap_or(0),
            port: self.check_port.map(u32::from),
            addr: self.check_addr.map(|a| a.to_string()).unwrap_or_default(),
            http_method: self.http_method.clone().unwrap_or_default(),
            http_path: self.http_path.clone().unwrap_or_default(),
            http_status: self.http_status.clone().unwrap_or_default(),
            http_host: self.http_host.clone().unwrap_or_default(),
            grpc_service: self.grpc_service.clone().unwrap_or_default(),
            all_down: self.all_down.map(AllDown::name).unwrap_or_default().into(),
        };
        // The daemon checks again with the same code; zero rise/fall are refused here
        // rather than taken as defaults.
        for (name, n) in [("rise", self.rise), ("fall", self.fall)] {
            if n == Some(0) {
                return Err(CheckError::OutOfRange {
                    name,
                    value: "0".into(),
                    min: "1".into(),
                    max: check::MAX_COUNT.to_string(),
                });
            }
        }
        if self.interval == Some(0) || self.timeout == Some(0) {
            let name = if self.interval == Some(0) {
                "interval"
            } else {
                "timeout"
            };
            return Err(CheckError::OutOfRange {
                name,
                value: "0ms".into(),
                min: check::ms(if name == "interval" {
                    check::INTERVAL_MS.0
                } else {
                    1
                }),
                max: check::ms(check::INTERVAL_MS.1),
            });
        }
        CheckSettings::from_proto(&m, service)?;
        Ok(m)
    }
}

/// The one-line summary of the settings a reply carries.
fn check_summary(check: Option<&proto::HealthCheck>) -> String {
    check.map_or_else(|| "none".into(), output::check_summary)
}

/// Why a command failed; the `Display` is the one line printed after `xlb: error: `.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Addr(#[from] AddrError),
    #[error(transparent)]
    Limit(#[from] LimitError),
    #[error(transparent)]
    Check(#[from] CheckError),
    #[error("set-check needs --check KIND (none, tcp, http or grpc)")]
    SetCheckWithoutKind,
    #[error(transparent)]
    Affinity(#[from] AffinityError),
    #[error("set-affinity needs --affinity MODE (none or client-ip)")]
    SetAffinityWithoutMode,
    #[error(transparent)]
    Forwarding(#[from] ForwardingError),
    #[error(transparent)]
    Unreachable(#[from] Unreachable),
    #[error("{0}")]
    Daemon(String),
    #[error("cannot write JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("{0}")]
    Config(String),
    #[error("{0}")]
    Top(String),
}

/// Runs one command; what it prints on success goes to stdout.
pub async fn run(cli: Cli) -> Result<(), CliError> {
    let request = Request::from_command(cli.command)?;
    let mut client = client::connect(&cli.socket).await?;
    let rpc = |e: tonic::Status| daemon_error(&cli.socket, e);
    match request {
        Request::AddService(service, table_size, check, affinity, forwarding) => {
            let req = proto::AddServiceRequest {
                service: service.to_string(),
                table_size,
                check,
                affinity,
                forwarding: forwarding.to_string(),
            };
            let s = client.add_service(req).await.map_err(rpc)?.into_inner();
            println!(
                "added service {} (id {}, table size {}, check {}, affinity {}, forwarding {})",
                s.service,
                s.id,
                s.table_size,
                check_summary(s.check.as_ref()),
                output::affinity_summary(s.affinity.as_ref()),
                s.forwarding
            );
        }
        Request::SetAffinity(service, affinity) => {
            let req = proto::SetAffinityRequest {
                service: service.to_string(),
                affinity: Some(affinity),
            };
            let s = client.set_affinity(req).await.map_err(rpc)?.into_inner();
            println!(
                "set affinity of {}: {}",
                s.service,
                output::affinity_summary(s.affinity.as_ref())
            );
        }
        Request::SetCheck(service, check) => {
            let req = proto::SetCheckRequest {
                service: service.to_string(),
                check: Some(check),
            };
            let s = client.set_check(req).await.map_err(rpc)?.into_inner();
            println!(
                "set check of {}: {}",
                s.service,
                check_summary(s.check.as_ref())
            );
        }
        Request::RemoveService(service) => {
            let req = proto::RemoveServiceRequest {
                service: service.to_string(),
            };
            client.remove_service(req).await.map_err(rpc)?;
            println!("removed service {service}");
        }
        Request::ListServices { json } => {
            let req = proto::ListServicesRequest {};
            let reply = client.list_services(req).await.map_err(rpc)?.into_inner();
            print!("{}", output::services(&reply.services, json)?);
        }
        Request::AddBackend(service, backend, weight) => {
            let req = proto::AddBackendRequest {
                service: service.to_string(),
                backend: backend.to_string(),
                weight,
            };
            let b = client.add_backend(req).await.map_err(rpc)?.into_inner();
            println!(
                "added backend {} to {} (index {}, weight {})",
                b.backend, b.service, b.index, b.weight
            );
        }
        Request::RemoveBackend(service, backend, force) => {
            let req = proto::RemoveBackendRequest {
                service: service.to_string(),
                backend: backend.to_string(),
                force,
            };
            client.remove_backend(req).await.map_err(rpc)?;
            println!("removed backend {backend} from {service}");
        }
        Request::SetWeight(service, backend, weight) => {
            let req = proto::SetWeightRequest {
                service: service.to_string(),
                backend: backend.to_string(),
                weight,
            };
            let b = client.set_weight(req).await.map_err(rpc)?.into_inner();
            if b.weight == 0 {
                println!("draining backend {} of {} (weight 0)", b.backend, b.service);
            } else {
                println!(
                    "set weight of backend {} of {} to {}",
                    b.backend, b.service, b.weight
                );
            }
        }
        Request::ListBackends(service, json) => {
            let req = proto::ListBackendsRequest {
                service: service.map(|s| s.to_string()).unwrap_or_default(),
            };
            let reply = client.list_backends(req).await.map_err(rpc)?.into_inner();
            print!("{}", output::backends(&reply.backends, json)?);
        }
        Request::Status {
            json,
            counters_only,
        } => {
            let reply = client
                .status(proto::StatusRequest {})
                .await
                .map_err(rpc)?
                .into_inner();
            let text = if counters_only {
                output::stats(&reply.counters, json)?
            } else {
                output::status(&reply, json)?
            };
            print!("{text}");
        }
        Request::Apply(apply) => print!("{}", apply.run(&mut client, &cli.socket).await?),
        Request::Dump => print!("{}", apply::dump(&mut client, &cli.socket).await?),
        Request::NodeDrain(drain) => {
            let req = proto::SetNodeDrainRequest { drain };
            let n = client.set_node_drain(req).await.map_err(rpc)?.into_inner();
            println!(
                "{}",
                if drain {
                    "node draining: every VIP withdrawn"
                } else {
                    "node drain ended"
                }
            );
            print!("{}", output::node_status(&n, false)?);
        }
        Request::NodeStatus { json } => {
            let req = proto::NodeStatusRequest {};
            let n = client.get_node_status(req).await.map_err(rpc)?.into_inner();
            print!("{}", output::node_status(&n, json)?);
        }
        Request::Top(interval) => match crate::top::run(&mut client, interval).await {
            Ok(()) => {}
            Err(crate::top::TopError::Rpc(e)) => return Err(rpc(e)),
            Err(e) => return Err(CliError::Top(e.to_string())),
        },
    }
    Ok(())
}

/// A command with its arguments parsed and checked.
enum Request {
    AddService(
        ServiceAddr,
        Option<u32>,
        Option<proto::HealthCheck>,
        Option<proto::Affinity>,
        Forwarding,
    ),
    SetAffinity(ServiceAddr, proto::Affinity),
    SetCheck(ServiceAddr, proto::HealthCheck),
    RemoveService(ServiceAddr),
    ListServices {
        json: bool,
    },
    AddBackend(ServiceAddr, BackendAddr, Option<u32>),
    RemoveBackend(ServiceAddr, BackendAddr, bool),
    SetWeight(ServiceAddr, BackendAddr, u32),
    ListBackends(Option<ServiceAddr>, bool),
    Status {
        json: bool,
        counters_only: bool,
    },
    Apply(Box<apply::Apply>),
    Dump,
    Top(std::time::Duration),
    NodeDrain(bool),
    NodeStatus {
        json: bool,
    },
}

impl Request {
    fn from_command(command: Command) -> Result<Request, CliError> {
        Ok(match command {
            Command::Service(ServiceCmd::Add {
                service,
                table_size,
                check,
                affinity,
                forwarding,
            }) => {
                let service: ServiceAddr = service.parse()?;
                service.check_vip()?;
                let check = if check.given() {
                    Some(check.to_proto(&service)?)
                } else {
                    None
                };
                Request::AddService(service, table_size, check, affinity.to_proto()?, forwarding)
            }
            Command::Service(ServiceCmd::SetAffinity { service, affinity }) => {
                let service: ServiceAddr = service.parse()?;
                if affinity.affinity.is_none() {
                    return Err(CliError::SetAffinityWithoutMode);
                }
                let a = affinity.to_proto()?.expect("--affinity was given");
                Request::SetAffinity(service, a)
            }
            Command::Service(ServiceCmd::SetCheck { service, check }) => {
                let service: ServiceAddr = service.parse()?;
                if check.check.is_none() {
                    return Err(CliError::SetCheckWithoutKind);
                }
                Request::SetCheck(service, check.to_proto(&service)?)
            }
            Command::Service(ServiceCmd::Remove { service }) => {
                Request::RemoveService(service.parse()?)
            }
            Command::Service(ServiceCmd::List { json }) => Request::ListServices { json },
            Command::Backend(BackendCmd::Add {
                service,
                backend,
                weight,
            }) => {
                let (s, b) = pair(&service, &backend)?;
                b.check_host()?;
                Request::AddBackend(s, b, weight)
            }
            Command::Backend(BackendCmd::Remove {
                service,
                backend,
                force,
            }) => {
                let (s, b) = pair(&service, &backend)?;
                Request::RemoveBackend(s, b, force)
            }
            Command::Backend(BackendCmd::SetWeight {
                service,
                backend,
                weight,
            }) => {
                let (s, b) = pair(&service, &backend)?;
                Request::SetWeight(s, b, weight)
            }
            Command::Backend(BackendCmd::Drain { service, backend }) => {
                let (s, b) = pair(&service, &backend)?;
                Request::SetWeight(s, b, 0)
            }
            Command::Backend(BackendCmd::List { service, json }) => {
                let service = service.map(|s| s.parse()).transpose()?;
                Request::ListBackends(service, json)
            }
            Command::Status { json } => Request::Status {
                json,
                counters_only: false,
            },
            Command::Stats { json } => Request::Status {
                json,
                counters_only: true,
            },
            Command::Apply {
                file,
                dry_run,
                prune,
                force,
                json,
            } => {
                let opts = crate::config::ApplyOptions {
                    prune,
                    force,
                    dry_run,
                };
                Request::Apply(Box::new(apply::Apply::read(&file, opts, json)?))
            }
            Command::Config(ConfigCmd::Dump) => Request::Dump,
            Command::Node(NodeCmd::Drain) => Request::NodeDrain(true),
            Command::Node(NodeCmd::Undrain) => Request::NodeDrain(false),
            Command::Node(NodeCmd::Status { json }) => Request::NodeStatus { json },
            Command::Top { interval } => {
                Request::Top(interval.unwrap_or(crate::top::DEFAULT_INTERVAL))
            }
        })
    }
}

/// A clap usage error as one line, e.g. `unexpected argument '--wieght' found (try --help)`:
/// the message without clap's usage and tip paragraphs, the values it echoes cut and
/// escaped as every other message does ([`limits::cut`]). A value refused by one of our
/// own parsers gets our message alone, the one the daemon gives too, e.g. `weight -1 out
/// of range (0-65535)`.
pub fn usage_error_line(mut e: clap::Error) -> String {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if e.kind() == ErrorKind::ValueValidation
        && let Some(ours) =
            std::error::Error::source(&e).and_then(|s| s.downcast_ref::<LimitError>())
    {
        return ours.to_string();
    }
    if e.kind() == ErrorKind::ValueValidation
        && let Some(ours) =
            std::error::Error::source(&e).and_then(|s| s.downcast_ref::<CheckError>())
    {
        return ours.to_string();
    }
    if e.kind() == ErrorKind::ValueValidation
        && let Some(ours) = std::error::Error::source(&e)
            .and_then(|s| s.downcast_ref::<crate::announce::TableError>())
    {
        return ours.to_string();
    }
    for kind in [
        ContextKind::InvalidArg,
        ContextKind::InvalidSubcommand,
        ContextKind::InvalidValue,
        ContextKind::SuggestedArg,
        ContextKind::SuggestedSubcommand,
        ContextKind::SuggestedValue,
        ContextKind::ValidValue,
        ContextKind::PriorArg,
    ] {
        let shown = match e.get(kind) {
            Some(ContextValue::String(v)) => ContextValue::String(limits::cut(v)),
            Some(ContextValue::Strings(vs)) => {
                ContextValue::Strings(vs.iter().map(|v| limits::cut(v)).collect())
            }
            _ => continue,
        };
        e.insert(kind, shown);
    }
    let text = e.render().to_string();
    let message: Vec<&str> = text
        .lines()
        .map(str::trim)
        .take_while(|l| !l.is_empty())
        .map(|l| l.strip_prefix("error: ").unwrap_or(l))
        .collect();
    format!("{} (try --help)", message.join(" "))
}

/// A service and one of its backends, of the same address family.
fn pair(service: &str, backend: &str) -> Result<(ServiceAddr, BackendAddr), AddrError> {
    let s: ServiceAddr = service.parse()?;
    let b: BackendAddr = backend.parse()?;
    s.check_backend(&b)?;
    Ok((s, b))
}

/// The daemon's one-line message, or why it could not answer.
fn daemon_error(socket: &std::path::Path, e: tonic::Status) -> CliError {
    if e.code() == Code::Unavailable {
        let reason = std::error::Error::source(&e)
            .map(client::innermost)
            .unwrap_or_else(|| e.message().to_string());
        return CliError::Unreachable(Unreachable {
            path: socket.to_path_buf(),
            reason,
        });
    }
    CliError::Daemon(e.message().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Request, CliError> {
        let cli = Cli::try_parse_from(std::iter::once("xlb").chain(args.iter().copied()))
            .expect("clap accepts the arguments");
        Request::from_command(cli.command)
    }

    /// The line `xlb` prints for `args` (after `xlb: error: `), whether clap or the
    /// command refuses them.
    fn err(args: &[&str]) -> String {
        match Cli::try_parse_from(std::iter::once("xlb").chain(args.iter().copied())) {
            Err(e) => usage_error_line(e),
            Ok(cli) => match Request::from_command(cli.command) {
                Err(e) => e.to_string(),
                Ok(_) => panic!("{args:?} was accepted"),
            },
        }
    }

    #[test]
    fn arguments_are_checked_before_contacting_the_daemon() {
        assert_eq!(
            err(&["service", "add", "198.18.0.10:99999/tcp"]),
            "invalid service \"198.18.0.10:99999/tcp\": port 99999 out of range (1-65535)"
        );
        assert_eq!(
            err(&[
                "service",
                "add",
                "198.18.0.10:80/tcp",
                "--table-size",
                "100"
            ]),
            "table size 100 out of range (101-4294967295)"
        );
        assert!(err(&["backend", "add", "198.18.0.10:80/tcp", "[2001:2::2]:80"]).contains("IPv6"));
        assert!(err(&["backend", "add", "198.18.0.10:80/tcp", "198.19.0.2"]).contains("ADDR:PORT"));
        assert_eq!(
            err(&[
                "backend",
                "set-weight",
                "198.18.0.10:80/tcp",
                "198.19.0.2:80",
                "70000"
            ]),
            "weight 70000 out of range (0-65535)"
        );
        assert!(err(&["backend", "list", "nope"]).starts_with("invalid service \"nope\""));
    }

    /// Every nonsense input of issue 16, and the one line that names its rule.
    #[test]
    fn nonsense_is_refused_with_the_rule() {
        const S: &str = "198.18.0.10:80/tcp";
        const B: &str = "198.19.0.2:8080";
        const UNICAST: &str = "a VIP or backend must be a unicast address";
        let long = "7".repeat(10_000);
        let long_service = format!("198.18.0.{long}:80/tcp");
        let cases: Vec<(Vec<&str>, String)> = vec![
            (vec!["service", "add", "0.0.0.0:80/tcp"], format!("invalid service \"0.0.0.0:80/tcp\": 0.0.0.0 is the unspecified address; {UNICAST}")),
            (vec!["service", "add", "[::]:80/tcp"], format!("invalid service \"[::]:80/tcp\": :: is the unspecified address; {UNICAST}")),
            (vec!["service", "add", "255.255.255.255:80/udp"], format!("invalid service \"255.255.255.255:80/udp\": 255.255.255.255 is the broadcast address; {UNICAST}")),
            (vec!["service", "add", "224.0.0.1:80/udp"], format!("invalid service \"224.0.0.1:80/udp\": 224.0.0.1 is a multicast address (224.0.0.0/4, ff00::/8); {UNICAST}")),
            (vec!["service", "add", "[ff02::1]:80/udp"], format!("invalid service \"[ff02::1]:80/udp\": ff02::1 is a multicast address (224.0.0.0/4, ff00::/8); {UNICAST}")),
            (vec!["service", "add", "[::ffff:198.18.0.20]:80/tcp"], "invalid service \"[::ffff:198.18.0.20]:80/tcp\": ::ffff:198.18.0.20 is an IPv4-mapped IPv6 address (::ffff:0:0/96); write the IPv4 address 198.18.0.20".into()),
            (vec!["backend", "add", S, "0.0.0.0:8080"], format!("invalid backend \"0.0.0.0:8080\": 0.0.0.0 is the unspecified address; {UNICAST}")),
            (vec!["backend", "add", "[2001:2::10]:80/tcp", "[::]:8080"], format!("invalid backend \"[::]:8080\": :: is the unspecified address; {UNICAST}")),
            (vec!["backend", "add", S, "255.255.255.255:8080"], format!("invalid backend \"255.255.255.255:8080\": 255.255.255.255 is the broadcast address; {UNICAST}")),
            (vec!["backend", "add", S, "239.1.1.1:8080"], format!("invalid backend \"239.1.1.1:8080\": 239.1.1.1 is a multicast address (224.0.0.0/4, ff00::/8); {UNICAST}")),
            (vec!["backend", "add", S, "198.18.0.10:8080"], "backend 198.18.0.10:8080 has the address of service 198.18.0.10:80/tcp: a backend cannot be a VIP (its packets would come back to the load balancer)".into()),
            (vec!["service", "add", S, "--table-size", "3"], "table size 3 out of range (101-4294967295)".into()),
            (vec!["service", "add", S, "--table-size", "-3"], "table size -3 out of range (101-4294967295)".into()),
            (vec!["service", "add", S, "--table-size", "65536"], "table size 65536 is not a prime number (Maglev needs a prime)".into()),
            (vec!["backend", "add", S, B, "--weight", "4294967296"], "weight 4294967296 out of range (0-65535)".into()),
            (vec!["backend", "add", S, B, "--weight", "-1"], "weight -1 out of range (0-65535)".into()),
            (vec!["backend", "add", S, B, "--weight", "65536"], "weight 65536 out of range (0-65535)".into()),
            (vec!["backend", "add", S, B, "--weight", "x"], "weight \"x\" is not a whole number".into()),
            (vec!["backend", "set-weight", S, B, "-1"], "weight -1 out of range (0-65535)".into()),
            (vec!["backend", "set-weight", S, B, "4294967296"], "weight 4294967296 out of range (0-65535)".into()),
            (vec!["service", "add", "198.18.0.20:80/tcp\n"], "invalid service \"198.18.0.20:80/tcp\\n\": protocol \"tcp\\n\" is not tcp or udp".into()),
            (vec!["service", "add", &long_service], format!("invalid service \"198.18.0.{}…\": \"198.18.0.{}…\" is not an IP address", "7".repeat(55), "7".repeat(55))),
        ];
        for (args, want) in &cases {
            let got = err(args);
            assert_eq!(&got, want, "xlb {}", limits::cut(&args.join(" ")));
            assert!(!got.contains('\n'), "{got}");
        }
    }

    #[test]
    fn affinity_flags_are_parsed_and_checked() {
        const S: &str = "198.18.0.10:80/tcp";
        match parse(&[
            "service",
            "add",
            S,
            "--affinity",
            "client-ip",
            "--affinity-timeout",
            "30",
        ]) {
            Ok(Request::AddService(_, None, None, Some(a), _)) => {
                assert_eq!((a.mode.as_str(), a.timeout_s), ("client-ip", Some(30)));
            }
            _ => panic!("service add --affinity client-ip was not parsed"),
        }
        match parse(&["service", "set-affinity", S, "--affinity", "client-ip"]) {
            Ok(Request::SetAffinity(_, a)) => {
                assert_eq!((a.mode.as_str(), a.timeout_s), ("client-ip", Some(10800)));
            }
            _ => panic!("service set-affinity was not parsed"),
        }
        match parse(&["service", "set-affinity", S, "--affinity", "none"]) {
            Ok(Request::SetAffinity(_, a)) => {
                assert_eq!((a.mode.as_str(), a.timeout_s), ("none", None))
            }
            _ => panic!("set-affinity none was not parsed"),
        }
        let cases: Vec<(Vec<&str>, &str)> = vec![
            (
                vec!["service", "add", S, "--affinity", "sticky"],
                "affinity \"sticky\" is not one of none, client-ip",
            ),
            (
                vec!["service", "add", S, "--affinity-timeout", "30"],
                "an affinity timeout needs affinity client-ip",
            ),
            (
                vec![
                    "service",
                    "add",
                    S,
                    "--affinity",
                    "client-ip",
                    "--affinity-timeout",
                    "0",
                ],
                "affinity timeout 0 out of range (1-86400)",
            ),
            (
                vec![
                    "service",
                    "add",
                    S,
                    "--affinity",
                    "client-ip",
                    "--affinity-timeout",
                    "-5",
                ],
                "affinity timeout -5 out of range (1-86400)",
            ),
            (
                vec!["service", "set-affinity", S, "--affinity-timeout", "30"],
                "set-affinity needs --affinity MODE (none or client-ip)",
            ),
        ];
        for (args, want) in &cases {
            let got = err(args);
            assert!(got.contains(want), "xlb {}: {got}", args.join(" "));
            assert!(!got.contains('\n'), "{got}");
        }
    }

    #[test]
    fn check_flags_are_checked_before_contacting_the_daemon() {
        const S: &str = "198.18.0.10:80/tcp";
        let cases: Vec<(Vec<&str>, &str)> = vec![
            (
                vec!["service", "add", S, "--interval", "200ms"],
                "--interval needs --check tcp, http or grpc",
            ),
            (
                vec!["service", "add", S, "--check", "tcp", "--http-path", "/x"],
                "--http-path needs --check http",
            ),
            (
                vec![
                    "service",
                    "add",
                    S,
                    "--check",
                    "http",
                    "--grpc-service",
                    "x",
                ],
                "--grpc-service needs --check grpc",
            ),
            (
                vec!["service", "set-check", S, "--interval", "1s"],
                "set-check needs --check KIND (none, tcp, http or grpc)",
            ),
            (
                vec!["service", "add", S, "--check", "tcp", "--interval", "200"],
                "interval \"200\" is not a duration (e.g. 200ms, 2s, 1m)",
            ),
            (
                vec![
                    "service",
                    "add",
                    S,
                    "--check",
                    "tcp",
                    "--interval",
                    "100ms",
                    "--timeout",
                    "200ms",
                ],
                "timeout 200ms is longer than the interval 100ms",
            ),
            (
                vec!["service", "add", S, "--check", "tcp", "--rise", "0"],
                "rise 0 out of range (1-100)",
            ),
            (
                vec!["service", "add", S, "--check", "tcp", "--fall", "101"],
                "fall 101 out of range (1-100)",
            ),
            (
                vec![
                    "service",
                    "add",
                    S,
                    "--check",
                    "tcp",
                    "--check-addr",
                    "2001:2::1",
                ],
                "check address \"2001:2::1\": not of the address family of service 198.18.0.10:80/tcp",
            ),
            (
                vec![
                    "service",
                    "add",
                    S,
                    "--check",
                    "http",
                    "--http-status",
                    "500-200",
                ],
                "HTTP status range \"500-200\" is not N or N-M with 100 <= N <= M <= 599",
            ),
            (
                vec![
                    "service",
                    "set-check",
                    S,
                    "--check",
                    "http",
                    "--http-path",
                    "no-slash",
                ],
                "HTTP path \"no-slash\" does not start with /",
            ),
        ];
        for (args, want) in &cases {
            assert_eq!(err(args), *want, "xlb {}", args.join(" "));
        }
        let e = err(&["service", "add", S, "--check", "icmp"]);
        assert!(e.contains("icmp") && !e.contains('\n'), "{e}");
        match parse(&[
            "service",
            "add",
            S,
            "--check",
            "http",
            "--http-path",
            "/healthz",
            "--interval",
            "200ms",
            "--rise",
            "2",
            "--fall",
            "2",
            "--all-down",
            "drop",
        ]) {
            Ok(Request::AddService(_, None, Some(m), None, _)) => {
                assert_eq!(
                    (
                        m.kind.as_str(),
                        m.http_path.as_str(),
                        m.interval_ms,
                        m.all_down.as_str()
                    ),
                    ("http", "/healthz", 200, "drop")
                );
            }
            _ => panic!("service add with an http check was not parsed"),
        }
        assert!(matches!(
            parse(&["service", "set-check", S, "--check", "none"]),
            Ok(Request::SetCheck(_, m)) if m.kind == "none"
        ));
    }

    #[tokio::test]
    async fn a_long_socket_path_is_cut_too() {
        let long = format!("/tmp/{}", "s".repeat(10_000));
        let cli = Cli::try_parse_from(["xlb", "--socket", &long, "status"]).unwrap();
        let e = run(cli).await.unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("cannot reach xlbd at /tmp/{}…: ", "s".repeat(59))),
            "{e}"
        );
        assert!(e.chars().count() < 200, "{e}");
    }

    #[test]
    fn clap_echoes_are_cut_and_escaped_too() {
        let long = "z".repeat(10_000);
        let cases: Vec<(Vec<&str>, &str)> = vec![
            (vec![&long], "unrecognized subcommand 'zzzz"),
            (vec!["service", "list", &long], "unexpected argument 'zzzz"),
            (
                vec!["service", "list", "--json\nx"],
                "unexpected argument '--json\\nx' found",
            ),
            (
                vec!["status", "--sock\u{1b}et"],
                "unexpected argument '--sock\\u{1b}et' found",
            ),
        ];
        for (args, starts) in cases {
            let e = Cli::try_parse_from(std::iter::once("xlb").chain(args.iter().copied()))
                .unwrap_err();
            let line = usage_error_line(e);
            assert!(line.starts_with(starts), "{line}");
            assert!(!line.contains('\n') && !line.contains('\u{1b}'), "{line}");
            assert!(line.chars().count() < 200, "{line}");
        }
    }

    #[test]
    fn commands_parse() {
        assert!(matches!(
            parse(&["backend", "drain", "198.18.0.10:80/tcp", "198.19.0.2:80"]),
            Ok(Request::SetWeight(_, _, 0))
        ));
        assert!(matches!(
            parse(&[
                "backend",
                "add",
                "198.18.0.10:80/tcp",
                "198.19.0.2:80",
                "--weight",
                "0"
            ]),
            Ok(Request::AddBackend(_, _, Some(0)))
        ));
        assert!(matches!(
            parse(&[
                "service",
                "add",
                "[2001:2::10]:53/udp",
                "--table-size",
                "251"
            ]),
            Ok(Request::AddService(_, Some(251), None, None, _))
        ));
        assert!(matches!(
            parse(&["stats", "--json"]),
            Ok(Request::Status {
                json: true,
                counters_only: true
            })
        ));
        assert!(matches!(
            parse(&["backend", "list", "--json"]),
            Ok(Request::ListBackends(None, true))
        ));
        let cli = Cli::try_parse_from(["xlb", "--socket", "/tmp/x.sock", "status"]).unwrap();
        assert_eq!(cli.socket, PathBuf::from("/tmp/x.sock"));
        let cli = Cli::try_parse_from(["xlb", "status", "--socket", "/tmp/y.sock"]).unwrap();
        assert_eq!(cli.socket, PathBuf::from("/tmp/y.sock"));
    }

    #[test]
    fn apply_reads_the_file_before_contacting_the_daemon() {
        let tmp = crate::testing::TempDir::new();
        let path = tmp.0.join("xlb.toml");
        let file = path.to_str().unwrap();
        assert!(err(&["apply", "-f", file]).starts_with(&format!("cannot read {file}: ")));
        std::fs::write(
            &path,
            "[[service]]\naddress = \"198.18.0.10:80/tcp\"\nweight = 1\n",
        )
        .unwrap();
        assert_eq!(
            err(&["apply", "-f", file, "--dry-run"]),
            format!(
                "{file}:3: service \"198.18.0.10:80/tcp\": unknown field `weight`, expected one of `address`, `table_size`, `check`, `backend`, `affinity`, `affinity_timeout`, `forwarding`"
            )
        );
        std::fs::write(&path, "[[service]]\naddress = \"198.18.0.10:80/tcp\"\n").unwrap();
        match parse(&["apply", "--file", file, "--prune", "--force", "--json"]) {
            Ok(Request::Apply(a)) => {
                assert!(a.opts.prune && a.opts.force && !a.opts.dry_run && a.json);
                assert_eq!(a.config.services.len(), 1);
            }
            _ => panic!("not an apply"),
        }
        // --force only with --prune.
        assert!(Cli::try_parse_from(["xlb", "apply", "-f", file, "--force"]).is_err());
        assert!(matches!(parse(&["config", "dump"]), Ok(Request::Dump)));
    }

    #[test]
    fn node_commands_parse() {
        assert!(matches!(
            parse(&["node", "drain"]),
            Ok(Request::NodeDrain(true))
        ));
        assert!(matches!(
            parse(&["node", "undrain"]),
            Ok(Request::NodeDrain(false))
        ));
        assert!(matches!(
            parse(&["node", "status", "--json"]),
            Ok(Request::NodeStatus { json: true })
        ));
        let e = Cli::try_parse_from(["xlb", "node", "drain", "now"]).unwrap_err();
        assert!(!usage_error_line(e).contains('\n'));
    }

    #[test]
    fn usage_errors_fit_on_one_line() {
        let e = Cli::try_parse_from([
            "xlb",
            "backend",
            "add",
            "198.18.0.10:80/tcp",
            "198.19.0.2:80",
            "--weight",
            "x",
        ])
        .unwrap_err();
        assert_eq!(usage_error_line(e), "weight \"x\" is not a whole number");
        let e =
            Cli::try_parse_from(["xlb", "backend", "remove", "198.18.0.10:80/tcp"]).unwrap_err();
        assert_eq!(
            usage_error_line(e),
            "the following required arguments were not provided: <BACKEND> (try --help)"
        );
        let e = Cli::try_parse_from(["xlb", "sevice", "list"]).unwrap_err();
        assert!(!usage_error_line(e).contains('\n'));
    }

    #[test]
    fn every_command_has_help() {
        use clap::CommandFactory;
        let cmd = Cli::command();
        cmd.clone().debug_assert();
        fn walk(c: &clap::Command) {
            assert!(c.get_about().is_some(), "{} has no help", c.get_name());
            for sub in c.get_subcommands() {
                if sub.get_name() != "help" {
                    walk(sub);
                }
            }
        }
        walk(&cmd);
    }
}

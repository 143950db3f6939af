//! `xlb apply` and `xlb config dump`: a configuration file to the daemon and back.

use std::path::Path;

use tonic::transport::Channel;

use super::{CliError, daemon_error};
use crate::addr::{BackendAddr, ServiceAddr};
use crate::check::CheckSettings;
use crate::config::{self, ApplyOptions, Change, Config, DaemonSettings, ServiceSpec, Services};
use crate::control::proto::control_client::ControlClient;
use crate::control::{META_BACKEND, META_SERVICE, proto};

/// `xlb apply`: a parsed file and what to do with it.
#[derive(Debug)]
pub struct Apply {
    /// The file's name as given, for errors.
    pub file: String,
    pub config: Config,
    pub opts: ApplyOptions,
    pub json: bool,
}

impl Apply {
    /// Reads and parses `path`; a bad file is refused before the daemon is contacted.
    pub fn read(path: &Path, opts: ApplyOptions, json: bool) -> Result<Apply, CliError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| CliError::Config(format!("cannot read {file}: {e}")))?;
        let config = config::parse(&file, &text).map_err(|e| CliError::Config(e.to_string()))?;
        Ok(Apply {
            file,
            config,
            opts,
            json,
        })
    }

    /// Sends the file's services to the daemon; prints the changes made (or, with
    /// `--dry-run`, that would be made).
    pub async fn run(
        self,
        client: &mut ControlClient<Channel>,
        socket: &Path,
    ) -> Result<String, CliError> {
        let req = proto::ApplyRequest {
            services: config::services_to_proto(&self.config.services),
            prune: self.opts.prune,
            force: self.opts.force,
            dry_run: self.opts.dry_run,
        };
        let reply = match client.apply(req).await {
            Ok(r) => r.into_inner(),
            Err(status) => return Err(self.locate(socket, status)),
        };
        let changes: Vec<Change> = reply
            .changes
            .iter()
            .map(|c| {
                Change::from_proto(c)
                    .ok_or_else(|| CliError::Daemon(format!("unknown change in reply: {c:?}")))
            })
            .collect::<Result<_, _>>()?;
        if self.json {
            return Ok(serde_json::to_string_pretty(&changes)? + "\n");
        }
        Ok(config::render_changes(&changes))
    }

    /// A daemon's refusal, as `FILE:LINE: message` when it names a service or backend of
    /// the file.
    fn locate(&self, socket: &Path, status: tonic::Status) -> CliError {
        let meta = |key: &str| {
            status
                .metadata()
                .get(key)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let service = meta(META_SERVICE).and_then(|s| s.parse::<ServiceAddr>().ok());
        let backend = meta(META_BACKEND).and_then(|b| b.parse::<BackendAddr>().ok());
        let line = service.and_then(|s| self.config.line_of(&s, backend.as_ref()));
        match (line, daemon_error(socket, status)) {
            (Some(line), CliError::Daemon(message)) => {
                CliError::Daemon(format!("{}:{line}: {message}", self.file))
            }
            (_, e) => e,
        }
    }
}

/// `xlb config dump`: the running daemon's settings and services as a configuration file.
pub async fn dump(client: &mut ControlClient<Channel>, socket: &Path) -> Result<String, CliError> {
    let rpc = |e: tonic::Status| daemon_error(socket, e);
    let status = client
        .status(proto::StatusRequest {})
        .await
        .map_err(rpc)?
        .into_inner();
    let services = client
        .list_services(proto::ListServicesRequest {})
        .await
        .map_err(rpc)?
        .into_inner()
        .services;
    let backends = client
        .list_backends(proto::ListBackendsRequest {
            service: String::new(),
        })
        .await
        .map_err(rpc)?
        .into_inner()
        .backends;
    let bad = |what: &str| CliError::Daemon(format!("the daemon listed an invalid {what}"));
    let mut running = Services::new();
    for s in services {
        let addr: ServiceAddr = s.service.parse().map_err(|_| bad("service"))?;
        let affinity = match &s.affinity {
            None => Default::default(),
            Some(a) => {
                crate::affinity::Affinity::new(&a.mode, a.timeout_s).map_err(|_| bad("affinity"))?
            }
        };
        let check = match &s.check {
            Some(m) => CheckSettings::parse_proto(m).map_err(|_| bad("health check"))?,
            None => CheckSettings::default(),
        };
        let forwarding = crate::forwarding::Forwarding::from_name_or_default(&s.forwarding)
            .map_err(|_| bad("forwarding mode"))?;
        let spec = ServiceSpec {
            table_size: s.table_size,
            backends: Default::default(),
            affinity,
            forwarding,
            check: config::running_check(&check),
        };
        running.insert(addr, spec);
    }
    for b in backends {
        let service: ServiceAddr = b.service.parse().map_err(|_| bad("service"))?;
        let backend: BackendAddr = b.backend.parse().map_err(|_| bad("backend"))?;
        // A service removed between the two lists is left out.
        if let Some(spec) = running.get_mut(&service) {
            spec.backends.insert(backend, b.weight);
        }
    }
    let daemon = DaemonSettings {
        interfaces: Some(status.interfaces).filter(|i| !i.is_empty()),
        mode: {
            use clap::ValueEnum as _;
            crate::bpf::AttachMode::from_str(&status.mode, false).ok()
        },
    };
    Ok(config::render(&Config::new(daemon, running)))
}

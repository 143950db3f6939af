//! The control API's server side: the `xlb.v1.Control` gRPC service over a
//! [`ControlState`], served on a Unix socket.

use std::future::Future;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use tokio::net::UnixListener;
use tokio::sync::Mutex;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::{Request, Response, Status};
use tracing::info;

use crate::addr::{BackendAddr, ServiceAddr};
use crate::affinity::Affinity;
use crate::announce::{self, Node};
use crate::bpf::AttachMode;
use crate::check::CheckSettings;
use crate::config::{self, ApplyOptions};
use crate::dataplane::Dataplane;
use crate::egress::Egress;
use crate::forwarding::Forwarding;
use crate::state::{ApplyError, BackendInfo, ControlState, ErrorKind, ServiceInfo, StateError};

/// The generated gRPC code (`proto/xlb.proto`).
pub mod proto {
    tonic::include_proto!("xlb.v1");
}

use proto::control_server::{Control, ControlServer};

/// The state, shared by the request handlers.
pub type SharedState<D> = Arc<Mutex<ControlState<D>>>;

/// What `Status` reports about the daemon itself.
#[derive(Debug, Clone)]
pub struct DaemonInfo {
    pub interfaces: Vec<String>,
    pub mode: AttachMode,
    pub started: Instant,
    /// The devices and their forwarding path, as the last sync found them.
    pub egress: Arc<Mutex<Egress>>,
    /// The node's drain flag and BGP announcements.
    pub node: Arc<Node>,
}

/// Implements `xlb.v1.Control`.
pub struct ControlService<D> {
    state: SharedState<D>,
    info: DaemonInfo,
}

impl<D: Dataplane> ControlService<D> {
    pub fn new(state: SharedState<D>, info: DaemonInfo) -> Self {
        ControlService { state, info }
    }
}

/// Serves `service` on `listener` until `shutdown` completes, then lets the requests in
/// flight finish.
pub async fn serve<D: Dataplane>(
    listener: UnixListener,
    service: ControlService<D>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    tonic::transport::Server::builder()
        .add_service(ControlServer::new(service))
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown)
        .await
}

/// `"native"` or `"skb"`, as the flag is spelled.
pub fn mode_name(mode: AttachMode) -> String {
    use clap::ValueEnum as _;
    mode.to_possible_value()
        .map(|v| v.get_name().to_string())
        .unwrap_or_default()
}

fn status(e: StateError) -> Status {
    let msg = e.to_string();
    match e.kind() {
        ErrorKind::InvalidArgument => Status::invalid_argument(msg),
        ErrorKind::NotFound => Status::not_found(msg),
        ErrorKind::AlreadyExists => Status::already_exists(msg),
        ErrorKind::ResourceExhausted => Status::resource_exhausted(msg),
        ErrorKind::FailedPrecondition => Status::failed_precondition(msg),
        ErrorKind::Internal => Status::internal(msg),
    }
}

/// An apply's refusal, with the service and backend at fault as metadata (`xlb-service`,
/// `xlb-backend`) so the CLI can name the file's line.
pub fn apply_status(e: ApplyError) -> Status {
    let mut metadata = tonic::metadata::MetadataMap::new();
    let mut put = |key: &'static str, value: String| {
        if let Ok(v) = value.parse() {
            metadata.insert(key, v);
        }
    };
    put(META_SERVICE, e.service.to_string());
    if let Some(b) = e.backend {
        put(META_BACKEND, b.to_string());
    }
    let message = e.to_string();
    let code = status(*e.source).code();
    Status::with_metadata(code, message, metadata)
}

/// Metadata keys of an `Apply` error: the service and backend at fault.
pub const META_SERVICE: &str = "xlb-service";
pub const META_BACKEND: &str = "xlb-backend";

fn parse_service(s: &str) -> Result<ServiceAddr, Status> {
    s.parse().map_err(|e| status(StateError::Addr(e)))
}

fn parse_backend(s: &str) -> Result<BackendAddr, Status> {
    s.parse().map_err(|e| status(StateError::Addr(e)))
}

fn service_msg(s: ServiceInfo) -> proto::Service {
    proto::Service {
        service: s.service.to_string(),
        id: s.id,
        table_size: s.table_size,
        table_offset: s.table_offset,
        generation: s.generation,
        backends: s.backends,
        check: Some(s.check.to_proto()),
        affinity: Some(affinity_msg(s.affinity)),
        forwarding: s.forwarding.to_string(),
    }
}

fn affinity_msg(a: Affinity) -> proto::Affinity {
    proto::Affinity {
        mode: a.mode().to_string(),
        timeout_s: (!a.is_none()).then(|| a.timeout_s()),
    }
}

/// The affinity of a request, checked (absent: none).
fn affinity_setting(a: Option<&proto::Affinity>) -> Result<Affinity, Status> {
    match a {
        None => Ok(Affinity::None),
        Some(m) => Affinity::new(&m.mode, m.timeout_s).map_err(|e| status(e.into())),
    }
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn backend_msg(b: BackendInfo) -> proto::BackendEntry {
    proto::BackendEntry {
        service: b.service.to_string(),
        backend: b.backend.to_string(),
        index: b.index,
        weight: b.weight,
        packets: b.packets,
        bytes: b.bytes,
        flows: b.flows,
        new_flows: b.new_flows,
        state: b.state.to_string(),
        health: b.health.state.name().to_string(),
        since_unix_ms: unix_ms(b.since),
        last_check: b.health.last.map(|r| proto::CheckResult {
            ok: r.ok,
            detail: r.detail,
            latency_us: r.latency.as_micros() as u64,
            at_unix_ms: unix_ms(r.at),
        }),
    }
}

/// The check settings of a request, checked (absent: none).
fn check_settings(
    check: Option<&proto::HealthCheck>,
    service: &ServiceAddr,
) -> Result<CheckSettings, Status> {
    match check {
        None => Ok(CheckSettings::default()),
        Some(m) => CheckSettings::from_proto(m, service).map_err(|e| status(e.into())),
    }
}

#[tonic::async_trait]
impl<D: Dataplane> Control for ControlService<D> {
    async fn add_service(
        &self,
        req: Request<proto::AddServiceRequest>,
    ) -> Result<Response<proto::Service>, Status> {
        let req = req.into_inner();
        let service = parse_service(&req.service)?;
        let check = check_settings(req.check.as_ref(), &service)?;
        let affinity = affinity_setting(req.affinity.as_ref())?;
        let forwarding =
            Forwarding::from_name_or_default(&req.forwarding).map_err(|e| status(e.into()))?;
        let mut state = self.state.lock().await;
        let mut info = state.add_service(service, req.table_size).map_err(status)?;
        if forwarding.is_dsr() {
            // Checked above, so only a failed save can refuse it (as with the check).
            info = state.set_forwarding(&service, forwarding).map_err(status)?;
        }
        if !affinity.is_none() {
            // Checked above, so only a failed save can refuse it (as with the check).
            info = state.set_affinity(&service, affinity).map_err(status)?;
        }
        if check.is_on() {
            // Checked above, so only a failed save can refuse it: the service stays, and
            // the error says the change was not saved.
            info = state.set_check(&service, check).map_err(status)?;
        }
        drop(state);
        info!(%service, id = info.id, table_size = info.table_size, check = %info.check, affinity = %info.affinity, forwarding = %info.forwarding, "service added");
        Ok(Response::new(service_msg(info)))
    }

    async fn remove_service(
        &self,
        req: Request<proto::RemoveServiceRequest>,
    ) -> Result<Response<proto::RemoveServiceReply>, Status> {
        let service = parse_service(&req.into_inner().service)?;
        self.state
            .lock()
            .await
            .remove_service(&service)
            .map_err(status)?;
        info!(%service, "service removed");
        Ok(Response::new(proto::RemoveServiceReply {}))
    }

    async fn list_services(
        &self,
        _req: Request<proto::ListServicesRequest>,
    ) -> Result<Response<proto::ListServicesReply>, Status> {
        let services = self.state.lock().await.services();
        Ok(Response::new(proto::ListServicesReply {
            services: services.into_iter().map(service_msg).collect(),
        }))
    }

    async fn add_backend(
        &self,
        req: Request<proto::AddBackendRequest>,
    ) -> Result<Response<proto::BackendEntry>, Status> {
        let req = req.into_inner();
        let service = parse_service(&req.service)?;
        let backend = parse_backend(&req.backend)?;
        let info = self
            .state
            .lock()
            .await
            .add_backend(&service, backend, req.weight)
            .map_err(status)?;
        info!(%service, %backend, index = info.index, weight = info.weight, "backend added");
        Ok(Response::new(backend_msg(info)))
    }

    async fn remove_backend(
        &self,
        req: Request<proto::RemoveBackendRequest>,
    ) -> Result<Response<proto::RemoveBackendReply>, Status> {
        let req = req.into_inner();
        let service = parse_service(&req.service)?;
        let backend = parse_backend(&req.backend)?;
        self.state
            .lock()
            .await
            .remove_backend(&service, &backend, req.force)
            .map_err(status)?;
        info!(%service, %backend, "backend removed");
        Ok(Response::new(proto::RemoveBackendReply {}))
    }

    async fn set_weight(
        &self,
        req: Request<proto::SetWeightRequest>,
    ) -> Result<Response<proto::BackendEntry>, Status> {
        let req = req.into_inner();
        let service = parse_service(&req.service)?;
        let backend = parse_backend(&req.backend)?;
        let info = self
            .state
            .lock()
            .await
            .set_weight(&service, &backend, req.weight)
            .map_err(status)?;
        info!(%service, %backend, weight = info.weight, "backend weight set");
        Ok(Response::new(backend_msg(info)))
    }

    async fn list_backends(
        &self,
        req: Request<proto::ListBackendsRequest>,
    ) -> Result<Response<proto::ListBackendsReply>, Status> {
        let req = req.into_inner();
        let service = match req.service.as_str() {
            "" => None,
            s => Some(parse_service(s)?),
        };
        let backends = self
            .state
            .lock()
            .await
            .backends(service.as_ref())
            .map_err(status)?;
        Ok(Response::new(proto::ListBackendsReply {
            backends: backends.into_iter().map(backend_msg).collect(),
        }))
    }

    async fn apply(
        &self,
        req: Request<proto::ApplyRequest>,
    ) -> Result<Response<proto::ApplyReply>, Status> {
        let req = req.into_inner();
        let desired =
            config::services_from_proto(&req.services).map_err(Status::invalid_argument)?;
        let opts = ApplyOptions {
            prune: req.prune,
            force: req.force,
            dry_run: req.dry_run,
        };
        let changes = self
            .state
            .lock()
            .await
            .apply(&desired, opts)
            .map_err(apply_status)?;
        if !opts.dry_run {
            for c in &changes {
                info!("apply: {c}");
            }
        }
        Ok(Response::new(proto::ApplyReply {
            changes: changes.iter().map(config::Change::to_proto).collect(),
        }))
    }

    async fn set_check(
        &self,
        req: Request<proto::SetCheckRequest>,
    ) -> Result<Response<proto::Service>, Status> {
        let req = req.into_inner();
        let service = parse_service(&req.service)?;
        let check = check_settings(req.check.as_ref(), &service)?;
        let info = self
            .state
            .lock()
            .await
            .set_check(&service, check)
            .map_err(status)?;
        info!(%service, check = %info.check, "health check set");
        Ok(Response::new(service_msg(info)))
    }

    async fn set_affinity(
        &self,
        req: Request<proto::SetAffinityRequest>,
    ) -> Result<Response<proto::Service>, Status> {
        let req = req.into_inner();
        let service = parse_service(&req.service)?;
        let affinity = affinity_setting(req.affinity.as_ref())?;
        let info = self
            .state
            .lock()
            .await
            .set_affinity(&service, affinity)
            .map_err(status)?;
        info!(%service, affinity = %info.affinity, "session affinity set");
        Ok(Response::new(service_msg(info)))
    }

    async fn status(
        &self,
        _req: Request<proto::StatusRequest>,
    ) -> Result<Response<proto::StatusReply>, Status> {
        let egress = self.info.egress.lock().await.devices();
        let state = self.state.lock().await;
        let counters = state.counters().map_err(status)?;
        let (services, backends) = state.counts();
        Ok(Response::new(proto::StatusReply {
            version: env!("CARGO_PKG_VERSION").to_string(),
            interfaces: self.info.interfaces.clone(),
            mode: mode_name(self.info.mode),
            uptime_seconds: self.info.started.elapsed().as_secs(),
            services,
            backends,
            table_area: state.dataplane().table_area(),
            counters: counters
                .into_iter()
                .map(|(name, c)| proto::Counter {
                    name: name.to_string(),
                    packets: c.packets,
                    bytes: c.bytes,
                })
                .collect(),
            egress: egress
                .into_iter()
                .map(|e| proto::Egress {
                    path: e.path.name().to_string(),
                    reason: e.path.reason().to_string(),
                    name: e.name,
                    ifindex: e.ifindex,
                    attached: e.attached,
                    kernel_packets: e.kernel_packets,
                })
                .collect(),
        }))
    }

    async fn set_node_drain(
        &self,
        req: Request<proto::SetNodeDrainRequest>,
    ) -> Result<Response<proto::NodeStatus>, Status> {
        let drain = req.into_inner().drain;
        let node = &self.info.node;
        node.set_draining(drain)
            .map_err(|e| Status::internal(format!("cannot record the drain: {e}")))?;
        info!(
            "{}",
            if drain {
                "node draining: every VIP is withdrawn"
            } else {
                "node drain ended"
            }
        );
        node.settle(std::time::Duration::from_secs(1)).await;
        Ok(Response::new(self.node_status().await))
    }

    async fn get_node_status(
        &self,
        _req: Request<proto::NodeStatusRequest>,
    ) -> Result<Response<proto::NodeStatus>, Status> {
        Ok(Response::new(self.node_status().await))
    }
}

impl<D: Dataplane> ControlService<D> {
    /// The node's status: the rule applied to the state now, and the routes of the last
    /// round.
    async fn node_status(&self) -> proto::NodeStatus {
        let node = &self.info.node;
        let view = self.state.lock().await.announce_view();
        let placed: std::collections::BTreeMap<_, _> =
            node.status().into_iter().map(|(v, _, a)| (v, a)).collect();
        proto::NodeStatus {
            draining: node.draining(),
            announce_table: node.table.map_or(0, |t| t.0),
            announcements: announce::decide(node.draining(), view)
                .into_iter()
                .map(|(vip, reason)| proto::Announcement {
                    vip: vip.to_string(),
                    wanted: reason.announced(),
                    announced: placed.get(&vip).copied().unwrap_or(false),
                    reason: reason.describe(),
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests;

//! `xlbd --metrics-addr`: the Prometheus endpoint, `GET /metrics` over HTTP/1.1.
//!
//! Nothing is kept between scrapes: each scrape takes the state lock once, reads the maps
//! ([`ControlState::usage`]: services, backend counters, global counters, one walk of the
//! connection table), lets go of the lock, and builds a fresh `prometheus-client` registry
//! from what it read. The exposition is `prometheus-client`'s OpenMetrics text, which
//! Prometheus scrapes as it does its own text format.
//!
//! Health: `xlb_backend_state{service, backend, state}` is 1 for the backend's state (up,
//! down, checking, draining) and 0 for the others; the last check's result and latency are
//! `xlb_backend_check_ok` and `xlb_backend_check_latency_seconds` (absent before the first
//! check, or when the service does not check).

use std::convert::Infallible;
use std::net::SocketAddr;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus_client::encoding::text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tracing::{debug, warn};

use crate::control::SharedState;
use crate::dataplane::Dataplane;
use crate::state::Usage;

/// What Prometheus is told the body is (`prometheus-client` writes OpenMetrics text).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Labels of one series, e.g. `[("service", "198.18.0.10:80/tcp"), ("backend", ...)]`.
type Labels = Vec<(&'static str, String)>;
type Counters = Family<Labels, Counter>;
type Gauges = Family<Labels, Gauge<u64, std::sync::atomic::AtomicU64>>;
type Seconds = Family<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>;

/// Every value of `xlb_backend_state`'s `state` label.
const STATES: [&str; 4] = ["up", "down", "checking", "draining"];

/// Why `--metrics-addr` was refused; one line.
#[derive(Debug, thiserror::Error)]
pub enum MetricsAddrError {
    #[error(
        "--metrics-addr {0} is not a loopback address: the metrics name every service and backend; add --metrics-public to serve them beyond this host"
    )]
    NotLoopback(SocketAddr),
}

/// Checks where the endpoint may listen: loopback only, unless `public`.
pub fn check_addr(addr: SocketAddr, public: bool) -> Result<SocketAddr, MetricsAddrError> {
    if addr.ip().is_loopback() || public {
        Ok(addr)
    } else {
        Err(MetricsAddrError::NotLoopback(addr))
    }
}

/// The exposition of one scrape. `flow_capacity` is the connection table's size.
pub fn encode(usage: &Usage, flow_capacity: u64) -> String {
    let mut reg = Registry::default();
    let counters = |reg: &mut Registry, name: &str, help: &str| {
        let f = Counters::default();
        reg.register(name, help, f.clone());
        f
    };
    let gauges = |reg: &mut Registry, name: &str, help: &str| {
        let f = Gauges::default();
        reg.register(name, help, f.clone());
        f
    };
    // Counters are registered without `_total`: the encoder adds it.
    let be_packets = counters(
        &mut reg,
        "xlb_backend_packets",
        "Request-direction packets forwarded to the backend",
    );
    let be_bytes = counters(
        &mut reg,
        "xlb_backend_bytes",
        "Bytes of the request-direction packets forwarded to the backend",
    );
    let be_flows = gauges(
        &mut reg,
        "xlb_backend_live_flows",
        "Live flows on the backend in the connection table",
    );
    let be_new_flows = counters(
        &mut reg,
        "xlb_backend_new_flows",
        "New flows the data path gave the backend",
    );
    let svc_new_flows = counters(
        &mut reg,
        "xlb_service_new_flows",
        "New flows the data path gave the service's backends",
    );
    let be_weight = gauges(
        &mut reg,
        "xlb_backend_weight",
        "The backend's weight (0: draining)",
    );
    let be_state = gauges(
        &mut reg,
        "xlb_backend_state",
        "1 for the backend's state (up, down, checking, draining), 0 for the others",
    );
    let be_check_ok = gauges(
        &mut reg,
        "xlb_backend_check_ok",
        "1 when the backend's last health check succeeded, else 0",
    );
    let be_check_latency = Seconds::default();
    reg.register(
        "xlb_backend_check_latency_seconds",
        "How long the backend's last health check took",
        be_check_latency.clone(),
    );
    let svc_backends = gauges(&mut reg, "xlb_service_backends", "Backends of the service");
    let svc_flows = gauges(
        &mut reg,
        "xlb_service_live_flows",
        "Live flows of the service in the connection table",
    );
    let svc_changes = counters(
        &mut reg,
        "xlb_service_table_changes",
        "Backend tables published for the service (its generation)",
    );
    let svc_slots = gauges(
        &mut reg,
        "xlb_service_table_slots",
        "Slots of the service's backend table",
    );
    let svc_forwarding = gauges(
        &mut reg,
        "xlb_service_forwarding",
        "1 for the service's forwarding mode (nat, dsr-l2 or dsr-ipip)",
    );
    let verdicts = counters(
        &mut reg,
        "xlb_packets",
        "Packets by the data path's verdict (forward, pass to the kernel, drop) and reason",
    );
    let verdict_bytes = counters(
        &mut reg,
        "xlb_bytes",
        "Bytes by verdict and reason, as xlb_packets",
    );
    let single = |reg: &mut Registry, name: &str, help: &str, v: u64| {
        let c = Counter::<u64>::default();
        c.inc_by(v);
        reg.register(name, help, c);
    };
    let single_gauge = |reg: &mut Registry, name: &str, help: &str, v: u64| {
        let g = Gauge::<u64, std::sync::atomic::AtomicU64>::default();
        g.set(v);
        reg.register(name, help, g);
    };

    for s in &usage.services {
        let l: Labels = vec![("service", s.service.to_string())];
        svc_backends.get_or_create(&l).set(u64::from(s.backends));
        svc_changes
            .get_or_create(&l)
            .inc_by(u64::from(s.generation));
        svc_slots.get_or_create(&l).set(u64::from(s.table_size));
        svc_forwarding
            .get_or_create(&vec![
                ("service", s.service.to_string()),
                ("forwarding", s.forwarding.to_string()),
            ])
            .set(1);
        svc_flows.get_or_create(&l).set(0);
        svc_new_flows.get_or_create(&l).inc_by(0);
    }
    for b in &usage.backends {
        let service = b.service.to_string();
        let l: Labels = vec![
            ("service", service.clone()),
            ("backend", b.backend.to_string()),
        ];
        be_packets.get_or_create(&l).inc_by(b.packets);
        be_bytes.get_or_create(&l).inc_by(b.bytes);
        be_flows.get_or_create(&l).set(b.flows);
        be_new_flows.get_or_create(&l).inc_by(b.new_flows);
        svc_new_flows
            .get_or_create(&vec![("service", service.clone())])
            .inc_by(b.new_flows);
        be_weight.get_or_create(&l).set(u64::from(b.weight));
        for state in STATES {
            let mut with_state = l.clone();
            with_state.push(("state", state.to_string()));
            be_state
                .get_or_create(&with_state)
                .set(u64::from(b.state == state));
        }
        if let Some(last) = &b.health.last {
            be_check_ok.get_or_create(&l).set(u64::from(last.ok));
            be_check_latency
                .get_or_create(&l)
                .set(last.latency.as_secs_f64());
        }
        svc_flows
            .get_or_create(&vec![("service", service)])
            .inc_by(b.flows);
    }
    for (name, c) in &usage.counters {
        match *name {
            "rx" => {
                single(
                    &mut reg,
                    "xlb_received_packets",
                    "Packets the XDP program saw",
                    c.packets,
                );
                single(
                    &mut reg,
                    "xlb_received_bytes",
                    "Bytes of the packets the XDP program saw",
                    c.bytes,
                );
            }
            "new_flow" => single(
                &mut reg,
                "xlb_new_flows",
                "New flows given a backend (first packets of flows not in the connection table)",
                c.packets,
            ),
            "new_flow_capped" => single(
                &mut reg,
                "xlb_new_flows_capped",
                "New flows forwarded without a connection-table entry: the per-CPU insert cap (xlbd --new-flow-cap) was reached",
                c.packets,
            ),
            _ => {
                let (verdict, reason) = verdict(name);
                let l: Labels = vec![
                    ("verdict", verdict.to_string()),
                    ("reason", reason.to_string()),
                ];
                verdicts.get_or_create(&l).inc_by(c.packets);
                verdict_bytes.get_or_create(&l).inc_by(c.bytes);
            }
        }
    }
    single_gauge(
        &mut reg,
        "xlb_flow_table_entries",
        "Entries in the connection table (two per flow)",
        usage.flow_entries,
    );
    single_gauge(
        &mut reg,
        "xlb_flow_table_capacity",
        "Entries each family's connection table holds (xlbd --flow-entries)",
        flow_capacity,
    );

    let mut out = String::new();
    text::encode(&mut out, &reg).expect("writing to a String does not fail");
    out
}

/// The verdict and reason of a global counter named as in `lb_common::stats::STAT_NAMES`:
/// `drop_no_backend` is (`drop`, `no_backend`), `pass_ttl` (`pass`, `ttl`), and the others
/// (`forward`, `reply`, `fragment`, `icmp_error`) are forwarded: (`forward`, name).
pub fn verdict(name: &str) -> (&'static str, &str) {
    if let Some(reason) = name.strip_prefix("drop_") {
        ("drop", reason)
    } else if let Some(reason) = name.strip_prefix("pass_") {
        ("pass", reason)
    } else {
        ("forward", name)
    }
}

/// Serves `GET /metrics` on `listener` for ever (the daemon aborts the task at shutdown;
/// connections are tasks of this one, so they go with it). Connections hold the state
/// weakly, taking it only for the length of a scrape: a scraper's idle keep-alive
/// connection does not keep the daemon from taking the data path back at exit.
pub async fn serve<D: Dataplane>(listener: TcpListener, state: SharedState<D>, flow_capacity: u64) {
    let weak = std::sync::Arc::downgrade(&state);
    drop(state);
    let state = weak;
    let mut conns = JoinSet::new();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    warn!("xlbd: metrics endpoint: accept: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
            Some(_) = conns.join_next() => continue,
        };
        let state = state.clone();
        conns.spawn(async move {
            let handler =
                hyper::service::service_fn(move |req| respond(req, state.clone(), flow_capacity));
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), handler)
                .await
            {
                debug!("xlbd: metrics connection from {peer}: {e}");
            }
        });
    }
}

async fn respond<D: Dataplane>(
    req: Request<Incoming>,
    state: std::sync::Weak<tokio::sync::Mutex<crate::state::ControlState<D>>>,
    flow_capacity: u64,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let reply = |status, content_type: &str, body: String| {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = status;
        r.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            content_type.parse().expect("a valid header"),
        );
        Ok(r)
    };
    const PLAIN: &str = "text/plain; charset=utf-8";
    if req.uri().path() != "/metrics" {
        return reply(
            StatusCode::NOT_FOUND,
            PLAIN,
            "not found: the metrics are at /metrics\n".into(),
        );
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return reply(StatusCode::METHOD_NOT_ALLOWED, PLAIN, "only GET\n".into());
    }
    let Some(state) = state.upgrade() else {
        return reply(
            StatusCode::SERVICE_UNAVAILABLE,
            PLAIN,
            "xlbd is stopping\n".into(),
        );
    };
    // One read under the lock; the encoding happens after it is released.
    let usage = state.lock().await.usage();
    drop(state);
    match usage {
        Ok(usage) => reply(StatusCode::OK, CONTENT_TYPE, encode(&usage, flow_capacity)),
        Err(e) => {
            warn!("xlbd: metrics scrape: {e}");
            reply(StatusCode::INTERNAL_SERVER_ERROR, PLAIN, format!("{e}\n"))
        }
    }
}

#[cfg(test)]
mod tests;

//! `cargo xtask demo grpc`: the gRPC experiments that motivated xlb, through xlb. Three gRPC
//! backends behind a VIP; from three client namespaces, unary clients (one HTTP/2
//! connection each), bidirectional streams and a pool of connections; which backends served
//! each client, the TCP connections each namespace holds while the pool is open (and, when
//! HAProxy is installed, the same through HAProxy `mode tcp`), then one summary line.

mod haproxy;

use std::net::SocketAddr;

use anyhow::Result;
use grpc_demo::{ClientConfig, Mode, Report};
use xlb_testbed::{Netns, Testbed, VIP, backend_id};

const CLIENTS: usize = 3;
const BACKENDS: usize = 3;
const PORT: u16 = 50051;
/// Calls of a unary client, messages of a stream.
const CALLS: usize = 12;
const UNARY_PER_CLIENT: usize = 4;
const STREAMS_PER_CLIENT: usize = 2;
/// Connections of the pooled client; it makes 3 calls on each.
const POOL: usize = 12;

#[derive(Default)]
struct Summary {
    unary_sticky: usize,
    unary: usize,
    stream_sticky: usize,
    streams: usize,
    pool_backends: usize,
    failed: usize,
}

pub fn demo() -> Result<()> {
    crate::demo::frame(
        "grpc-demo",
        run,
        |s: &Summary| {
            format!(
                "grpc-demo: unary_sticky={}/{} stream_sticky={}/{} pool_backends={}",
                s.unary_sticky, s.unary, s.stream_sticky, s.streams, s.pool_backends
            )
        },
        |s| {
            s.failed == 0
                && s.unary_sticky == s.unary
                && s.stream_sticky == s.streams
                && s.pool_backends == BACKENDS
        },
    )
}

fn run(s: &mut Summary) -> Result<()> {
    let mut tb = Testbed::new(CLIENTS, BACKENDS)?;
    println!(
        "testbed: lb ns {}, {CLIENTS} clients, {BACKENDS} backends",
        tb.lb().name()
    );
    let servers = tb.spawn_grpc_servers(PORT)?;
    for j in 0..BACKENDS {
        let addr = tb.backend(j).addr();
        println!(
            "backend {} at {addr}:{PORT}: DemoService + grpc.health.v1",
            backend_id(j)
        );
    }
    tb.start_xlbd(&[])?;
    println!("xlbd running on {}", tb.lb_ifaces().join(", "));
    tb.set_echo(true);
    let service = format!("{VIP}:{PORT}/tcp");
    tb.add_service_with_backends(&service, PORT)?;
    let vip = SocketAddr::new(VIP.into(), PORT);
    let health = tb.grpc_health(0, vip, grpc_demo::SERVICE)?;
    println!("health of {} through {vip}: {health}", grpc_demo::SERVICE);

    let mut plan = tb.grpc_plan(vip, Mode::Unary, UNARY_PER_CLIENT, CALLS, 20000);
    plan.extend(tb.grpc_plan(vip, Mode::Stream, STREAMS_PER_CLIENT, CALLS, 21000));
    println!(
        "\n{} unary clients and {} streams through {vip}, {CALLS} calls or messages each \
         (source ports fixed, so every run gives this table):",
        CLIENTS * UNARY_PER_CLIENT,
        CLIENTS * STREAMS_PER_CLIENT
    );
    print_header();
    for ((k, cfg), result) in plan.iter().zip(tb.grpc_clients(&plan)) {
        let (count, sticky) = match cfg.mode {
            Mode::Stream => (&mut s.streams, &mut s.stream_sticky),
            Mode::Unary | Mode::Pool(_) => (&mut s.unary, &mut s.unary_sticky),
        };
        *count += 1;
        match row(&tb, *k, cfg, result.as_ref()) {
            Some(r) => *sticky += usize::from(r.sticky()),
            None => s.failed += 1,
        }
    }

    println!("\none client with a pool of {POOL} connections, 3 calls on each:");
    print_header();
    let (cfg, pool, census) = pool_run(&tb, vip, 22000)?;
    match row(&tb, 0, &cfg, Ok(&pool)) {
        Some(r) => s.pool_backends = r.backends(),
        None => s.failed += 1,
    }
    census.print("xlb");
    tb.xlb_ok(&["backend", "list", &service])?; // the data path's own counters
    tb.set_echo(false);
    haproxy::compare(&tb, PORT)?;
    drop(servers);
    drop(tb);
    println!("testbed removed");
    Ok(())
}

fn print_header() {
    let (client, mode, conns, calls) = ("client", "mode", "conns", "calls");
    println!("  {client:<12} {mode:<8} {conns:>5} {calls:>5}  replies per backend");
}

/// Prints one client's line; returns its report when it got every reply.
fn row<'a>(
    tb: &Testbed,
    k: usize,
    cfg: &ClientConfig,
    result: Result<&'a Report, &anyhow::Error>,
) -> Option<&'a Report> {
    let (from, mode) = (tb.client(k).addr().to_string(), cfg.mode.to_string());
    let conns = cfg.mode.connections();
    let head = format!("  {from:<12} {mode:<8} {conns:>5} {:>5}", cfg.calls);
    match result {
        Ok(r) => {
            println!("{head}  {r}");
            (r.errors == 0).then_some(r)
        }
        Err(e) => {
            println!("{head}  FAILED: {e:#}");
            None
        }
    }
}

/// The pooled client, from client 0 to `addr`, and the connections counted while its pool
/// is open.
fn pool_run(
    tb: &Testbed,
    addr: SocketAddr,
    first_port: u16,
) -> Result<(ClientConfig, Report, Census)> {
    let cfg = ClientConfig {
        addr,
        mode: Mode::Pool(POOL),
        calls: 3 * POOL,
        source_port: Some(first_port),
    };
    let (report, census) = tb
        .client(0)
        .ns
        .run(|| grpc_demo::run_then(&cfg, || Census::take(tb)))??;
    Ok((cfg, report, census?))
}

/// Established TCP connections per namespace.
struct Census {
    client: usize,
    lb: usize,
    backends: Vec<usize>,
}

impl Census {
    fn take(tb: &Testbed) -> Result<Census> {
        let backends = tb.backends().iter().map(|b| established(&b.ns));
        Ok(Census {
            client: established(&tb.client(0).ns)?,
            lb: established(tb.lb())?,
            backends: backends.collect::<Result<_>>()?,
        })
    }

    fn print(&self, via: &str) {
        let per: Vec<String> = self.backends.iter().map(usize::to_string).collect();
        let total: usize = self.backends.iter().sum();
        println!(
            "  TCP connections while the pool is open through {via} (ss -tn state established): \
             client ns {}, LB ns {}, backend nss {} = {total}",
            self.client,
            self.lb,
            per.join("+")
        );
    }
}

/// `ss -Htn state established` in `ns`, counted.
fn established(ns: &Netns) -> Result<usize> {
    let out = ns.exec("ss", &["-Htn", "state", "established"])?;
    Ok(out.lines().filter(|l| !l.trim().is_empty()).count())
}

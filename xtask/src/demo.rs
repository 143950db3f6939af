//! `cargo xtask demo`: the project's main job in one command. Builds, makes a testbed with 3
//! clients and 3 backends, starts xlbd, configures a VIP through the CLI, drives 30 TCP
//! connections through it and shows which backend served each.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use anyhow::{Result, bail};
use xlb_testbed::{Flow, Proto, Testbed, VIP, backend_id, flows_per_backend};

const CLIENTS: usize = 3;
const BACKENDS: usize = 3;
const PER_CLIENT: usize = 10;
const LINES: usize = 5;
const VIP_PORT: u16 = 80;
const BACKEND_PORT: u16 = 8080;

#[derive(Default)]
struct Summary {
    connections: usize,
    backends_used: usize,
    sticky: usize,
    failed: usize,
}

pub fn demo() -> Result<()> {
    frame(
        "demo",
        run,
        |s: &Summary| {
            format!(
                "demo: connections={} backends_used={} sticky={}/{}",
                s.connections, s.backends_used, s.sticky, s.connections
            )
        },
        |s| s.failed == 0 && s.sticky == s.connections && s.backends_used == BACKENDS,
    )
}

/// What every demo does around its own part: setup, build, the root check, then `run`;
/// an error is reported, the summary's `last_line` is printed last (nothing after it),
/// and the exit status is non-zero unless `run` succeeded and `ok` holds.
pub fn frame<S: Default>(
    name: &str,
    run: impl FnOnce(&mut S) -> Result<()>,
    last_line: impl FnOnce(&S) -> String,
    ok: impl FnOnce(&S) -> bool,
) -> Result<()> {
    crate::setup::setup()?;
    crate::build_bins()?;
    if !crate::cmd::is_root() {
        bail!("the demo makes network namespaces: run it as root");
    }
    let mut summary = S::default();
    let result = run(&mut summary);
    if let Err(e) = &result {
        eprintln!("{name}: error: {e:#}");
    }
    println!("{}", last_line(&summary));
    if !(result.is_ok() && ok(&summary)) {
        std::process::exit(1);
    }
    Ok(())
}

fn run(summary: &mut Summary) -> Result<()> {
    let mut tb = Testbed::new(CLIENTS, BACKENDS)?;
    println!(
        "testbed: lb ns {}, {CLIENTS} clients, {BACKENDS} backends",
        tb.lb().name()
    );
    for j in 0..BACKENDS {
        tb.spawn_id_server(j, BACKEND_PORT)?;
        println!(
            "backend {} at {}:{BACKEND_PORT}",
            backend_id(j),
            tb.backend(j).addr()
        );
    }
    tb.start_xlbd(&[])?;
    println!("xlbd running on {}", tb.lb_ifaces().join(", "));
    tb.set_echo(true);
    let service = format!("{VIP}:{VIP_PORT}/tcp");
    tb.add_service_with_backends(&service, BACKEND_PORT)?;
    tb.xlb_ok(&["backend", "list", &service])?;

    let vip = SocketAddr::new(VIP.into(), VIP_PORT);
    println!(
        "{} TCP connections to {vip}, {LINES} lines each:",
        CLIENTS * PER_CLIENT
    );
    let mut flows: Vec<Flow> = Vec::new();
    for (k, result) in tb.flows(Proto::Tcp, vip, PER_CLIENT, LINES) {
        summary.connections += 1;
        match result {
            Ok(f) => {
                let served = f.backend().unwrap_or("SEVERAL BACKENDS");
                println!("  {} -> {served}  replies={}", f.local, f.ids.len());
                summary.sticky += usize::from(f.backend().is_some());
                flows.push(f);
            }
            Err(e) => {
                println!("  client {k}: FAILED: {e:#}");
                summary.failed += 1;
            }
        }
    }
    tb.xlb_ok(&["backend", "list", &service])?; // the data path's own counters
    let per_backend: BTreeMap<String, usize> = flows_per_backend(&flows);
    summary.backends_used = per_backend.len();
    println!("per backend:");
    for j in 0..BACKENDS {
        let id = backend_id(j);
        let n = per_backend.get(&id).copied().unwrap_or(0);
        println!(
            "  {id} ({}:{BACKEND_PORT}): {n} connections",
            tb.backend(j).addr()
        );
    }
    drop(tb);
    println!("testbed removed");
    Ok(())
}

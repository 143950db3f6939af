//! `cargo xtask demo`: the project's main job in one command. Builds, makes a testbed with 3
//! clients and 3 backends, starts xlbd, configures a VIP with a tcp health check through
//! the CLI, drives 30 TCP connections through it and shows which backend served each; then
//! stops one backend's server, shows when xlb took that backend out, and drives 15 more
//! connections, none of which may fail or reach it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use xlb_testbed::{Flow, IdServer, Proto, Testbed, VIP, backend_id, flows_per_backend};

const CLIENTS: usize = 3;
const BACKENDS: usize = 3;
const PER_CLIENT: usize = 10;
const LINES: usize = 5;
const VIP_PORT: u16 = 80;
const BACKEND_PORT: u16 = 8080;
/// The health check: every 200 ms, 2 in a row to go down or up (the settings).
const CHECK: [&str; 10] = [
    "--check",
    "tcp",
    "--interval",
    "200ms",
    "--timeout",
    "100ms",
    "--rise",
    "2",
    "--fall",
    "2",
];
/// The backend whose server is stopped mid-demo.
const STOPPED: usize = 1;
/// Connections per client after it was taken out.
const PER_CLIENT_AFTER: usize = 5;
/// How long the backends may take to be found up, and the stopped one down (the check
/// needs about interval x fall, 400-600 ms).
const BOUND: Duration = Duration::from_secs(5);

#[derive(Default)]
struct Summary {
    connections: usize,
    backends_used: usize,
    sticky: usize,
    failed: usize,
    /// How long after its server stopped xlb listed the stopped backend `down`.
    down_after_ms: Option<u128>,
    /// Connections started after that which failed, and which reached it.
    failed_after_down: usize,
    on_stopped_after_down: usize,
}

pub fn demo() -> Result<()> {
    frame(
        "demo",
        run,
        |s: &Summary| {
            let down = s
                .down_after_ms
                .map_or_else(|| "never".into(), |ms| ms.to_string());
            format!(
                "demo: connections={} backends_used={} sticky={}/{} failed_after_down={} \
                 on_stopped_after_down={} down_after_ms={down}",
                s.connections,
                s.backends_used,
                s.sticky,
                s.connections,
                s.failed_after_down,
                s.on_stopped_after_down
            )
        },
        |s| {
            s.failed == 0
                && s.sticky == s.connections
                && s.backends_used == BACKENDS
                && s.down_after_ms.is_some()
                && s.failed_after_down == 0
                && s.on_stopped_after_down == 0
        },
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
    let mut servers: Vec<Option<IdServer>> = Vec::new();
    for j in 0..BACKENDS {
        servers.push(Some(tb.start_id_server(j, BACKEND_PORT)?));
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
    let mut add = vec!["service", "add", service.as_str()];
    add.extend_from_slice(&CHECK);
    tb.xlb_ok(&add)?;
    for j in 0..BACKENDS {
        tb.xlb_ok(&[
            "backend",
            "add",
            &service,
            &tb.backend_addr(j, BACKEND_PORT),
        ])?;
    }
    tb.set_echo(false);
    let (up_after, _) = wait_until(&tb, &service, |states| states.iter().all(|s| s == "up"))
        .context("the backends were not all up")?;
    println!(
        "all backends up after {} ms of checks",
        up_after.as_millis()
    );
    tb.set_echo(true);
    tb.xlb_ok(&["backend", "list", &service])?;

    let vip = SocketAddr::new(VIP.into(), VIP_PORT);
    println!(
        "{} TCP connections to {vip}, {LINES} lines each:",
        CLIENTS * PER_CLIENT
    );
    let mut flows: Vec<Flow> = Vec::new();
    let failed = connect(&tb, vip, PER_CLIENT, summary, &mut flows);
    summary.failed += failed;
    tb.xlb_ok(&["backend", "list", &service])?; // the data path's own counters

    let stopped = backend_id(STOPPED);
    println!("stopping the server of {stopped}");
    if let Some(server) = servers[STOPPED].take() {
        server.stop();
    }
    let stop = Instant::now();
    tb.set_echo(false);
    let (_, states) = wait_until(&tb, &service, |states| states[STOPPED] == "down")
        .with_context(|| format!("xlb did not take {stopped} out"))?;
    let down_after = stop.elapsed().as_millis();
    summary.down_after_ms = Some(down_after);
    println!(
        "xlb took {stopped} out {down_after} ms after its server stopped (states: {})",
        states.join(", ")
    );
    tb.set_echo(true);
    tb.xlb_ok(&["backend", "list", &service])?;
    println!(
        "{} more TCP connections to {vip}, {LINES} lines each:",
        CLIENTS * PER_CLIENT_AFTER
    );
    let before = flows.len();
    let failed = connect(&tb, vip, PER_CLIENT_AFTER, summary, &mut flows);
    summary.failed_after_down += failed;
    summary.on_stopped_after_down = flows[before..]
        .iter()
        .filter(|f| f.ids.contains(&stopped))
        .count();

    let per_backend: BTreeMap<String, usize> = flows_per_backend(&flows);
    let after: BTreeMap<String, usize> = flows_per_backend(&flows[before..]);
    summary.backends_used = per_backend.len();
    println!("per backend (before the stop + after xlb took {stopped} out):");
    for j in 0..BACKENDS {
        let id = backend_id(j);
        let n = per_backend.get(&id).copied().unwrap_or(0);
        let late = after.get(&id).copied().unwrap_or(0);
        println!(
            "  {id} ({}:{BACKEND_PORT}): {} + {late} connections",
            tb.backend(j).addr(),
            n - late
        );
    }
    drop(servers);
    drop(tb);
    println!("testbed removed");
    Ok(())
}

/// `per_client` connections from every client to `vip`, each printed; the served ones go
/// into `flows`, the counts into `summary`. Returns how many failed.
fn connect(
    tb: &Testbed,
    vip: SocketAddr,
    per_client: usize,
    summary: &mut Summary,
    flows: &mut Vec<Flow>,
) -> usize {
    let mut failed = 0;
    for (k, result) in tb.flows(Proto::Tcp, vip, per_client, LINES) {
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
                failed += 1;
            }
        }
    }
    failed
}

/// Reads the backends' states (`xlb backend list --json`, in backend order) until `done`
/// holds of them, at most [`BOUND`]: how long it took and the states.
fn wait_until(
    tb: &Testbed,
    service: &str,
    done: impl Fn(&[String]) -> bool,
) -> Result<(Duration, Vec<String>)> {
    let start = Instant::now();
    let addrs: Vec<String> = (0..BACKENDS)
        .map(|j| tb.backend_addr(j, BACKEND_PORT))
        .collect();
    loop {
        let rows = tb.backend_rows(service)?;
        let states: Vec<String> = addrs
            .iter()
            .map(|a| {
                rows.iter()
                    .find(|r| r.backend == *a)
                    .map_or_else(|| "absent".into(), |r| r.state.clone())
            })
            .collect();
        if done(&states) {
            return Ok((start.elapsed(), states));
        }
        if start.elapsed() >= BOUND {
            bail!("after {BOUND:?} the states are {}", states.join(", "));
        }
        thread::sleep(Duration::from_millis(20));
    }
}

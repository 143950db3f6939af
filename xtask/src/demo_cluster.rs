//! `cargo xtask demo cluster`: several xlb nodes behind an ECMP router that agree. The
//! cluster testbed (tests/src/cluster.rs): 3 LB nodes, each with its own xlbd and BIRD,
//! announce the VIP over BGP to a router that spreads flows over them by the 5-tuple; the
//! backends answer the clients directly (DSR). 60 long-lived connections from 3 clients,
//! which node carried each one's first packet and which backend served it; then one node
//! is killed (kill -9 of its xlbd and its BIRD) while they stream, and none breaks.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use xlb_testbed::VIP;
use xlb_testbed::cluster::{
    ANNOUNCE_TABLE, BFD_MS, BFD_MULT, Cluster, HOLD_S, NODE_AS, PORT, ROUTER_AS, Stream,
    backend_addr, node_front, stream_rounds,
};

const CLIENTS: usize = 3;
const NODES: usize = 3;
const BACKENDS: usize = 3;
const CONNECTIONS: usize = 60;
/// Rounds of one line per connection, 100 ms apart, after the first answer; the node is
/// killed before round `KILL_AT`.
const ROUNDS: usize = 30;
const KILL_AT: usize = 5;
const GAP: Duration = Duration::from_millis(100);
/// The forwarding mode of the VIP's service.
pub const FORWARDING: &str = "dsr-l2";

#[derive(Default)]
struct Summary {
    connections: usize,
    nodes_used: usize,
    broken: usize,
    sticky: usize,
}

pub fn demo() -> Result<()> {
    crate::demo::frame(
        "cluster-demo",
        run,
        |s: &Summary| {
            format!(
                "cluster-demo: connections={} nodes_used={} broken={} sticky={}/{}",
                s.connections, s.nodes_used, s.broken, s.sticky, s.connections
            )
        },
        |s| {
            s.connections == CONNECTIONS
                && s.broken == 0
                && s.sticky == s.connections
                && s.nodes_used == NODES
        },
    )
}

fn run(summary: &mut Summary) -> Result<()> {
    let mut c = Cluster::new(CLIENTS, NODES, BACKENDS)?;
    println!(
        "cluster: router ns {}, {CLIENTS} clients, {NODES} LB nodes (xlbd + BIRD each), {BACKENDS} backends on a shared segment",
        c.router.name()
    );
    println!(
        "BGP: router AS {ROUTER_AS}, nodes AS {NODE_AS}; each xlbd announces {VIP}/32 into routing table {ANNOUNCE_TABLE}, \
         which its BIRD exports; BFD {BFD_MS} ms x {BFD_MULT}, hold time {HOLD_S} s; the router installs the paths as ECMP, \
         hashed on the 5-tuple (fib_multipath_hash_policy=1)"
    );
    c.start_backends()?;
    for j in 0..BACKENDS {
        println!(
            "backend-{j} at {}:{PORT}, {VIP} on its lo (ARP for it off), replies go straight to the router",
            backend_addr(j)
        );
    }
    let config = c.write_services(Some(FORWARDING))?;
    println!(
        "every node loads the same file ({}):\n{}",
        config.display(),
        std::fs::read_to_string(&config)?.trim_end()
    );
    for i in 0..NODES {
        c.start_node(i, &config)?;
        let (xlbd, bird) = c.node_pids(i);
        println!(
            "node {i} ({}): xlbd pid {}, bird pid {}",
            node_front(i),
            xlbd.unwrap_or(0),
            bird.unwrap_or(0)
        );
    }
    let t = Instant::now();
    c.wait_paths(&[0, 1, 2], Duration::from_secs(20))
        .context("the router did not learn the VIP from all 3 nodes")?;
    println!(
        "the router's route, {} ms after the nodes started:\n{}",
        t.elapsed().as_millis(),
        c.vip_route()?.trim_end()
    );
    print!(
        "$ xlb node status   (node 0)\n{}",
        c.xlb_ok(0, &["node", "status"])?
    );
    c.wait_bfd(NODES, Duration::from_secs(20))?;
    print!(
        "$ birdc show bfd sessions   (router)\n{}",
        c.router_birdc(&["show", "bfd", "sessions"])?
    );

    let mut streams = c.open_streams(CONNECTIONS, VIP.into())?;
    summary.connections = streams.len();
    println!("\n{CONNECTIONS} connections to {VIP}:{PORT}:");
    println!("conn  client                node     backend");
    for (n, s) in streams.iter().enumerate() {
        println!(
            "{n:>4}  {:<21} node {:<3} {}",
            format!("{}:{}", c.clients[s.client].addr, s.local_port()),
            s.first_node,
            s.backend()
        );
    }
    let per_node = count(streams.iter().map(|s| s.first_node));
    summary.nodes_used = per_node.len();
    for i in 0..NODES {
        println!(
            "node {i}: carried the first packets of {} connections (its xlb's new-flow counter: {})",
            per_node.get(&i).copied().unwrap_or(0),
            c.new_flows(i)?
        );
    }
    for (b, n) in count(streams.iter().map(|s| s.backend().to_string())) {
        println!("{b}: {n} connections");
    }
    let victim = (0..NODES)
        .max_by_key(|i| per_node.get(i).copied().unwrap_or(0))
        .unwrap_or(0);
    let (xlbd, bird) = c.node_pids(victim);
    println!(
        "\nstreaming a line per connection every {} ms; before round {KILL_AT} of {ROUNDS}: kill -9 of node {victim}'s xlbd (pid {}) and bird (pid {})",
        GAP.as_millis(),
        xlbd.unwrap_or(0),
        bird.unwrap_or(0)
    );
    let rest: Vec<usize> = (0..NODES).filter(|&i| i != victim).collect();
    let mut withdrawn = None;
    stream_rounds(&mut streams, ROUNDS, GAP, |r| {
        if r == KILL_AT {
            c.kill_node(victim)?;
            let t = Instant::now();
            c.wait_paths(&rest, Duration::from_secs(HOLD_S as u64 + 1))?;
            withdrawn = Some(t.elapsed());
        }
        Ok(())
    })?;
    println!(
        "node {victim}'s path left the router {} ms after the kill; the route now:\n{}",
        withdrawn.map_or(0, |t| t.as_millis()),
        c.vip_route()?.trim_end()
    );
    println!("the router's BIRD log:\n{}", c.router_log_tail(6));
    report(&streams, victim);
    summary.broken = streams.iter().filter(|s| s.broken()).count();
    summary.sticky = streams.iter().filter(|s| !s.broken() && s.sticky()).count();
    for s in &mut streams {
        s.close();
    }
    Ok(())
}

fn count<T: Ord>(items: impl Iterator<Item = T>) -> BTreeMap<T, usize> {
    let mut m = BTreeMap::new();
    for i in items {
        *m.entry(i).or_insert(0) += 1;
    }
    m
}

fn report(streams: &[Stream], victim: usize) {
    let moved: Vec<&Stream> = streams.iter().filter(|s| s.first_node == victim).collect();
    let answers: BTreeSet<usize> = streams.iter().map(|s| s.answers).collect();
    println!(
        "{} connections had node {victim} carry their first packet; after the kill the router hashed them onto the other nodes, \
         which sent them to the same backend from the same Maglev table: {} of them broke, {} changed backend",
        moved.len(),
        moved.iter().filter(|s| s.broken()).count(),
        moved.iter().filter(|s| !s.sticky()).count()
    );
    println!("answers per connection: {answers:?} (1 + {ROUNDS} rounds)");
    for s in streams.iter().filter(|s| s.broken() || !s.sticky()) {
        println!(
            "  client {} port {}: backends {:?}, {}",
            s.client,
            s.local_port(),
            s.backends,
            s.error.as_deref().unwrap_or("not broken")
        );
    }
}

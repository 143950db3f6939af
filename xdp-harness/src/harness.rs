//! The loaded XDP program with its maps filled as [`crate::plan`] says, and one call to
//! run a packet through it.

use anyhow::{Context as _, Result, ensure};
use std::time::Duration;

use aya::programs::{TestRun as _, TestRunOptions, Xdp};
use lb_common::{
    AFFINITY_CLIENT_IP, AFFINITY_NONE, AffinityKey, AffinityValue, Backend, DataplaneConfig,
    FORWARD_DSR_IPIP, FORWARD_DSR_L2, FlowKey, FlowValue, NO_BACKEND, PROTO_TCP, PROTO_UDP,
    ServiceKey, ServiceValue, stats::Counter,
};
use lb_userspace::{bpf::BpfDataplane, dataplane::Dataplane};

use crate::fixture::Side;
use crate::netns::{self, BACKEND_IF, BRIDGE_IF, CLIENT_IF};
use crate::pkt::Ip;
use crate::plan::{
    AFFINITY_EXPIRED_PORT, AFFINITY_PORT, AFFINITY_STALE_PORT, DSR_IPIP_PORT, DSR_L2_PORT,
    NO_AFFINITY_PORT, PLANS, Plan, SECOND_BACKEND_PORT, TCP_BACKEND_PORT, TCP_PORT,
    UDP_BACKEND_PORT, UDP_PORT, V4, affinity_slot_port,
};

/// Slots of each service's backend table.
pub const TABLE_SIZE: u32 = 7;
/// The first `BACKENDS` index of the affinity services' two backends (two per plan).
const AFFINITY_BACKEND_INDEX: u32 = 100;

pub struct Harness {
    dp: BpfDataplane,
    client_if: u32,
    backend_if: u32,
    bridge_if: u32,
}

impl Harness {
    /// Makes the links, loads the program (connection table of `flow_entries` entries) and
    /// fills its maps. Call inside [`netns::in_private_netns`]; needs root.
    pub fn new(flow_entries: u32) -> Result<Harness> {
        let mut h = Harness::bare(flow_entries, 1024)?;
        fill_maps(&mut h.dp)?;
        Ok(h)
    }

    /// Makes the links and loads the program (connection table of `flow_entries` entries,
    /// `table_area` table slots), its maps left empty for the caller to fill through
    /// [`Harness::dataplane_mut`] (the benchmark's own services). Call inside
    /// [`netns::in_private_netns`]; needs root.
    pub fn bare(flow_entries: u32, table_area: u32) -> Result<Harness> {
        netns::make_links()?;
        let mut dp =
            BpfDataplane::load_detached(flow_entries, table_area).context("loading xlb")?;
        let client_if = netns::ifindex(CLIENT_IF)?;
        let backend_if = netns::ifindex(BACKEND_IF)?;
        // As xlbd would: the veths can take redirects, the bridge cannot.
        dp.allow_egress(client_if)?;
        dp.allow_egress(backend_if)?;
        Ok(Harness {
            dp,
            client_if,
            backend_if,
            bridge_if: netns::ifindex(BRIDGE_IF)?,
        })
    }

    /// The loaded data path, for map writes and reads beyond the ones below.
    pub fn dataplane_mut(&mut self) -> &mut BpfDataplane {
        &mut self.dp
    }

    /// The ifindex of `side`'s link on the LB.
    pub fn ifindex(&self, side: Side) -> u32 {
        match side {
            Side::Client => self.client_if,
            Side::Backend => self.backend_if,
        }
    }

    /// Runs `input` through the program as if received on `side`'s link; returns the
    /// verdict and the frame as the program left it.
    pub fn run(&mut self, input: &[u8], side: Side) -> Result<(u32, Vec<u8>)> {
        self.run_repeat(input, side, 1)
            .map(|r| (r.verdict, r.frame))
    }

    /// [`Harness::run`] with `repeat` repetitions on the same buffer (see [`test_run`]).
    pub fn run_repeat(&mut self, input: &[u8], side: Side, repeat: u32) -> Result<TestRun> {
        let ingress = self.ifindex(side);
        test_run(self.dp.program(), input, ingress, repeat)
    }

    /// Runs `input` through the decapsulation program (`xlb_decap`, a dsr-ipip
    /// backend's); returns the verdict and the frame as it left it.
    pub fn run_decap(&mut self, input: &[u8]) -> Result<(u32, Vec<u8>)> {
        let prog = self.dp.load_program(lb_userspace::decap::DECAP_PROGRAM)?;
        test_run(prog, input, self.backend_if, 1).map(|r| (r.verdict, r.frame))
    }

    /// The connection-table entry of one flow direction.
    pub fn flow(&self, key: &FlowKey) -> Option<FlowValue> {
        self.dp.flow(key)
    }

    /// Writes the data path's settings (e.g. a cap on new flows per CPU per second).
    pub fn set_config(&mut self, config: &DataplaneConfig) -> Result<()> {
        Ok(self.dp.set_config(config)?)
    }

    /// Bumps the FIB cache's generation, as the daemon does when a backend changes.
    pub fn invalidate_fib_cache(&mut self) -> Result<()> {
        Ok(self.dp.invalidate_fib_cache()?)
    }

    /// The affinity entry of one client of one service.
    pub fn affinity(&self, key: &AffinityKey) -> Option<AffinityValue> {
        self.dp.affinity(key)
    }

    /// Entries in the connection table.
    pub fn flow_count(&self) -> Result<usize> {
        Ok(self.dp.flows()?.len())
    }

    /// Global counters, indexed by `lb_common::stats::STAT_*`.
    pub fn stats(&self) -> Result<Vec<Counter>> {
        Ok(self.dp.stats()?)
    }

    /// Packets passed to the kernel because the FIB chose the bridge.
    pub fn bridge_passes(&self) -> Result<u64> {
        let misses = self.dp.egress_misses()?;
        Ok(misses
            .iter()
            .find(|(i, _)| *i == self.bridge_if)
            .map_or(0, |m| m.1))
    }
}

/// What one BPF_PROG_TEST_RUN gave.
#[derive(Debug)]
pub struct TestRun {
    /// The verdict of the last repetition.
    pub verdict: u32,
    /// The frame as the last repetition left it.
    pub frame: Vec<u8>,
    /// The kernel's average time per repetition.
    pub per_repetition: Duration,
}

/// One BPF_PROG_TEST_RUN of `prog` on `input`, received on `ifindex`, `repeat` times on
/// the same buffer (the kernel resets nothing between repetitions): the one test-run call
/// of the fixtures, the fuzzer and the benchmark.
pub fn test_run(prog: &mut Xdp, input: &[u8], ifindex: u32, repeat: u32) -> Result<TestRun> {
    let mut out = vec![0u8; input.len() + 256];
    let md = xdp_md(input.len(), ifindex);
    let mut opts = TestRunOptions::new();
    opts.data_in = Some(input);
    opts.data_out = Some(&mut out);
    opts.ctx_in = Some(&md);
    opts.repeat = repeat;
    let r = prog
        .test_run(opts)
        .with_context(|| format!("test_run of {} bytes, repeat {repeat}", input.len()))?;
    out.truncate(r.data_size_out as usize);
    Ok(TestRun {
        verdict: r.return_value,
        frame: out,
        per_repetition: r.duration,
    })
}

/// Pins the calling thread to the CPU it runs on, so that every test run that follows sees
/// one CPU's state (caches, the per-CPU maps and insert budget, the connection table's
/// per-CPU LRU lists): the CPU's number.
pub fn pin_to_this_cpu() -> Result<usize> {
    // SAFETY: sched_getcpu(3) has no preconditions.
    let cpu = unsafe { libc::sched_getcpu() };
    ensure!(
        cpu >= 0,
        "sched_getcpu: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: a zeroed cpu_set_t is the empty set; CPU_SET writes inside it; the call
    // reads the set of the size given and changes only this thread's affinity.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu as usize, &mut set);
        libc::sched_setaffinity(0, size_of_val(&set), &set)
    };
    ensure!(
        rc == 0,
        "sched_setaffinity: {}",
        std::io::Error::last_os_error()
    );
    Ok(cpu as usize)
}

/// `struct xdp_md` for test_run: the packet arrives on `ifindex`.
fn xdp_md(len: usize, ifindex: u32) -> [u8; 24] {
    let mut md = [0u8; 24];
    md[4..8].copy_from_slice(&(len as u32).to_ne_bytes());
    md[12..16].copy_from_slice(&ifindex.to_ne_bytes());
    md
}

fn service(vip: Ip, port: u16, proto: u8) -> ServiceKey {
    ServiceKey {
        vip: vip.addr(),
        port_be: port.to_be(),
        proto,
        family: vip.family(),
    }
}

fn backend(addr: Ip, port: u16) -> Backend {
    Backend {
        addr: addr.addr(),
        port_be: port.to_be(),
        family: addr.family(),
        _pad: 0,
    }
}

/// The services of one family and the backend each table's slots all hold.
fn services(plan: &Plan) -> [(ServiceKey, Option<Backend>); SERVICES_PER_PLAN] {
    [
        (
            service(plan.vip, TCP_PORT, PROTO_TCP),
            Some(backend(plan.backend, TCP_BACKEND_PORT)),
        ),
        (
            service(plan.vip, UDP_PORT, PROTO_UDP),
            Some(backend(plan.backend, UDP_BACKEND_PORT)),
        ),
        (service(plan.vip_empty, TCP_PORT, PROTO_TCP), None),
        (
            service(plan.vip_no_neigh, TCP_PORT, PROTO_TCP),
            Some(backend(plan.backend_no_neigh, TCP_BACKEND_PORT)),
        ),
        (
            service(plan.vip_bridged, TCP_PORT, PROTO_TCP),
            Some(backend(plan.backend_bridged, TCP_BACKEND_PORT)),
        ),
    ]
}

const SERVICES_PER_PLAN: usize = 5;

/// The index in `BACKENDS` of `plan`'s backend for the TCP service (each plan's services
/// take consecutive ids, the TCP service first).
pub fn tcp_backend_index(plan: &Plan) -> u32 {
    if plan.is_v6() {
        SERVICES_PER_PLAN as u32
    } else {
        0
    }
}

fn fill_maps(dp: &mut BpfDataplane) -> Result<()> {
    let all = PLANS.iter().flat_map(|p| services(p));
    for (id, (key, be)) in all.enumerate() {
        let id = id as u32;
        let slot = match be {
            Some(be) => {
                dp.put_backend(id, &be)?;
                id
            }
            None => NO_BACKEND,
        };
        let offset = id * TABLE_SIZE;
        dp.write_table(offset, &[slot; TABLE_SIZE as usize])?;
        let value = ServiceValue {
            id,
            table_offset: offset,
            table_size: TABLE_SIZE,
            generation: 1,
            ..Default::default()
        };
        dp.put_service(&key, &value)?;
    }
    fill_affinity(dp, (PLANS.len() * SERVICES_PER_PLAN) as u32)?;
    fill_dsr(dp, dsr_service_id(&V4, DSR_L2_PORT))
}

/// The DSR services (`DSR_L2_PORT`, `DSR_IPIP_PORT` on the TCP VIP, ids from `first_id`),
/// every slot holding the plan's TCP backend, and the outer sources of `dsr-ipip`.
fn fill_dsr(dp: &mut BpfDataplane, first_id: u32) -> Result<()> {
    let mut id = first_id;
    for plan in PLANS {
        for (port, forwarding) in [
            (DSR_L2_PORT, FORWARD_DSR_L2),
            (DSR_IPIP_PORT, FORWARD_DSR_IPIP),
        ] {
            let offset = id * TABLE_SIZE;
            dp.write_table(offset, &[tcp_backend_index(plan); TABLE_SIZE as usize])?;
            let value = ServiceValue {
                id,
                table_offset: offset,
                table_size: TABLE_SIZE,
                generation: 1,
                forwarding,
                ..Default::default()
            };
            dp.put_service(&service(plan.vip, port, PROTO_TCP), &value)?;
            id += 1;
        }
    }
    dp.set_encap(&encap_config())?;
    Ok(())
}

/// The outer-source prefixes the harness gives `dsr-ipip` (xlbd's defaults).
pub fn encap_config() -> lb_common::EncapConfig {
    lb_userspace::forwarding::encap_config(
        lb_userspace::forwarding::DEFAULT_ENCAP_SOURCE_V4,
        lb_userspace::forwarding::DEFAULT_ENCAP_SOURCE_V6,
    )
    .expect("the default prefixes parse")
}

/// The id of `plan`'s DSR service on `port` (`DSR_L2_PORT` or `DSR_IPIP_PORT`).
pub fn dsr_service_id(plan: &Plan, port: u16) -> u32 {
    let per_plan = u32::from(AFFINITY_STALE_PORT - AFFINITY_PORT) + 1;
    let first = (PLANS.len() * SERVICES_PER_PLAN) as u32 + per_plan * PLANS.len() as u32;
    first + 2 * u32::from(plan.is_v6()) + u32::from(port == DSR_IPIP_PORT)
}

/// The affinity services of `crate::plan::AFFINITY_PORT` and its neighbours, with ids from
/// `first_id`, and their clients' entries.
fn fill_affinity(dp: &mut BpfDataplane, first_id: u32) -> Result<()> {
    let mut id = first_id;
    for plan in PLANS {
        for port in [TCP_BACKEND_PORT, SECOND_BACKEND_PORT] {
            dp.put_backend(
                affinity_backend_index(plan, port),
                &backend(plan.backend, port),
            )?;
        }
        let table: Vec<u32> = (0..TABLE_SIZE)
            .map(|s| affinity_backend_index(plan, affinity_slot_port(s)))
            .collect();
        let services = [
            (AFFINITY_PORT, AFFINITY_CLIENT_IP, 3600),
            (AFFINITY_EXPIRED_PORT, AFFINITY_CLIENT_IP, 1),
            (NO_AFFINITY_PORT, AFFINITY_NONE, 3600),
            (AFFINITY_STALE_PORT, AFFINITY_CLIENT_IP, 3600),
        ];
        for (port, affinity, affinity_timeout_s) in services {
            let offset = id * TABLE_SIZE;
            dp.write_table(offset, &table)?;
            let value = ServiceValue {
                id,
                table_offset: offset,
                table_size: TABLE_SIZE,
                generation: 1,
                affinity,
                affinity_timeout_s,
                ..Default::default()
            };
            dp.put_service(&service(plan.vip, port, PROTO_TCP), &value)?;
            // An entry naming the second backend: expired (made at boot) for the 1 s
            // service, fresh for the others; at slot 1 (which holds it), or slot 0 (which
            // does not) for the stale one.
            let now = lb_userspace::conntrack::monotonic_ns();
            let (last_seen_ns, slot) = match port {
                AFFINITY_EXPIRED_PORT => (0, 1),
                NO_AFFINITY_PORT => (now, 1),
                AFFINITY_STALE_PORT => (now, 0),
                _ => (u64::MAX, 0),
            };
            if last_seen_ns != u64::MAX {
                let key = affinity_key(plan, id);
                let entry = AffinityValue {
                    backend: affinity_backend_index(plan, SECOND_BACKEND_PORT),
                    slot,
                    last_seen_ns,
                };
                dp.put_affinity(&key, &entry)?;
            }
            id += 1;
        }
    }
    Ok(())
}

/// The id of `plan`'s affinity service on `port` (`AFFINITY_PORT` to
/// `AFFINITY_STALE_PORT`).
pub fn affinity_service_id(plan: &Plan, port: u16) -> u32 {
    let p = u32::from(plan.is_v6());
    let per_plan = u32::from(AFFINITY_STALE_PORT - AFFINITY_PORT) + 1;
    (PLANS.len() * SERVICES_PER_PLAN) as u32 + per_plan * p + u32::from(port - AFFINITY_PORT)
}

/// The `BACKENDS` index of `plan`'s affinity backend on `port` (`TCP_BACKEND_PORT` or
/// `SECOND_BACKEND_PORT`), the one the table slots of [`affinity_slot_port`] name.
pub fn affinity_backend_index(plan: &Plan, port: u16) -> u32 {
    AFFINITY_BACKEND_INDEX + 2 * u32::from(plan.is_v6()) + u32::from(port != TCP_BACKEND_PORT)
}

/// The affinity-map key of `plan`'s client for service `id`.
pub fn affinity_key(plan: &Plan, id: u32) -> AffinityKey {
    AffinityKey {
        client: plan.client.addr(),
        service: id,
        family: plan.client.family(),
        _pad: [0; 3],
    }
}

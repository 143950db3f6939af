//! Packet fixtures, Katran-style: crafted packets run through the real XDP program with
//! BPF_PROG_TEST_RUN, each compared with its expected verdict and its expected output
//! packet (built with etherparse, so its checksums are computed from scratch: byte
//! equality proves the program's incremental updates right; every rewritten output is
//! also parsed and its checksums recomputed). The table is in `fixtures/`, by topic, for
//! IPv4 and IPv6; the harness is the `xlb-xdp-harness` crate.

mod fixtures;

use lb_common::{
    DIR_REPLY, DIR_REQUEST, DataplaneConfig, FlowKey, PROTO_TCP,
    stats::{STAT_NEW_FLOW_CAPPED, STAT_PASS_EGRESS, STAT_RX},
};
use xlb_xdp_harness::{
    Harness, Plan, fixture,
    harness::{self, affinity_backend_index, affinity_key, affinity_service_id, tcp_backend_index},
    netns::{self, in_private_netns},
    plan::{
        AFFINITY_EXPIRED_PORT, AFFINITY_PORT, DSR_L2_PORT, PLANS, SECOND_BACKEND_PORT,
        TCP_BACKEND_PORT, TCP_PORT, affinity_slot_port,
    },
    require_root,
};

/// The first fixture of each family (a SYN from port 40000) made both directions of its flow.
fn check_flow_entries(h: &Harness, plan: &Plan) -> Result<(), String> {
    let request = FlowKey {
        src: plan.client.addr(),
        dst: plan.vip.addr(),
        src_port_be: 40000u16.to_be(),
        dst_port_be: TCP_PORT.to_be(),
        proto: PROTO_TCP,
        family: plan.vip.family(),
        _pad: [0; 2],
    };
    let reply = FlowKey {
        src: plan.backend.addr(),
        dst: plan.client.addr(),
        src_port_be: TCP_BACKEND_PORT.to_be(),
        dst_port_be: 40000u16.to_be(),
        ..request
    };
    let req = h
        .flow(&request)
        .ok_or(format!("{}: no request entry", plan.name))?;
    let got = (req.direction, req.backend, req.nat_addr, req.nat_port_be);
    let want = (
        DIR_REQUEST,
        tcp_backend_index(plan),
        plan.backend.addr(),
        TCP_BACKEND_PORT.to_be(),
    );
    if got != want {
        return Err(format!(
            "{}: request entry {got:?}, want {want:?}",
            plan.name
        ));
    }
    let rep = h
        .flow(&reply)
        .ok_or(format!("{}: no reply entry", plan.name))?;
    let got = (rep.direction, rep.nat_addr, rep.nat_port_be);
    let want = (DIR_REPLY, plan.vip.addr(), TCP_PORT.to_be());
    if got != want {
        return Err(format!("{}: reply entry {got:?}, want {want:?}", plan.name));
    }
    Ok(())
}

/// The affinity fixtures left entries naming the first backend (port 8080) for the
/// client-ip services, the expired one rewritten.
fn check_affinity_entries(h: &Harness, plan: &Plan) -> Result<(), String> {
    for port in [AFFINITY_PORT, AFFINITY_EXPIRED_PORT] {
        let key = affinity_key(plan, affinity_service_id(plan, port));
        let v = h
            .affinity(&key)
            .ok_or(format!("{}: no affinity entry for port {port}", plan.name))?;
        if affinity_slot_port(v.slot) != TCP_BACKEND_PORT || v.last_seen_ns == 0 {
            return Err(format!(
                "{}: affinity entry for port {port}: {v:?}",
                plan.name
            ));
        }
    }
    Ok(())
}

/// DSR flows keep the request direction only: the dsr-l2 SYN from port 41000 made a
/// request entry naming the backend, and no reply entry.
fn check_dsr_entries(h: &Harness, plan: &Plan) -> Result<(), String> {
    let request = FlowKey {
        src: plan.client.addr(),
        dst: plan.vip.addr(),
        src_port_be: 41000u16.to_be(),
        dst_port_be: DSR_L2_PORT.to_be(),
        proto: PROTO_TCP,
        family: plan.vip.family(),
        _pad: [0; 2],
    };
    let req = h
        .flow(&request)
        .ok_or(format!("{}: no dsr-l2 request entry", plan.name))?;
    if (req.direction, req.backend) != (DIR_REQUEST, tcp_backend_index(plan)) {
        return Err(format!("{}: dsr-l2 request entry {req:?}", plan.name));
    }
    let reply = FlowKey {
        src: plan.backend.addr(),
        dst: plan.client.addr(),
        src_port_be: TCP_BACKEND_PORT.to_be(),
        dst_port_be: 41000u16.to_be(),
        ..request
    };
    if let Some(v) = h.flow(&reply) {
        return Err(format!(
            "{}: dsr-l2 flow has a reply entry {v:?}",
            plan.name
        ));
    }
    Ok(())
}

#[test]
fn xdp_packet_fixtures() {
    if !require_root("xdp_packet_fixtures") {
        return;
    }
    let (report, flows) = in_private_netns(|| {
        let mut h = Harness::new(1024).expect("harness");
        let table = fixtures::all();
        let report = fixture::run_all(&mut h, &table).expect("test_run");
        let mut flows: Vec<String> = PLANS
            .iter()
            .flat_map(|p| {
                [
                    check_flow_entries(&h, p),
                    check_affinity_entries(&h, p),
                    check_dsr_entries(&h, p),
                ]
            })
            .filter_map(Result::err)
            .collect();
        // Every packet xlb ran ended in exactly one outcome counter: their sum (`rx`) is
        // the number of packets run (the decap program's have counters of their own).
        let stats = h.stats().expect("stats");
        let ran: usize = table
            .iter()
            .filter(|f| !f.decap)
            .map(|f| f.before.len() + 1)
            .sum();
        if stats[STAT_RX as usize].packets != ran as u64 {
            flows.push(format!(
                "rx {} (the sum of the outcome counters), {ran} packets run",
                stats[STAT_RX as usize].packets
            ));
        }
        // One bridged SYN per family went to the kernel: counted, the bridge recorded.
        let passed = stats[STAT_PASS_EGRESS as usize].packets;
        let recorded = h.bridge_passes().expect("egress misses");
        if (passed, recorded) != (2, 2) {
            flows.push(format!(
                "pass_egress {passed}, bridge recorded {recorded}: want 2 and 2"
            ));
        }
        (report, flows)
    });
    eprintln!("{}", report.summary());
    let total: usize = report.per_category.values().sum();
    assert!(total >= 60, "only {total} fixtures");
    assert!(
        report.failures.is_empty() && flows.is_empty(),
        "\n{}\n{}\n{}",
        report.failures.join("\n"),
        flows.join("\n"),
        report.summary()
    );
}

#[test]
fn new_flow_cap_forwards_without_an_entry() {
    if !require_root("new_flow_cap_forwards_without_an_entry") {
        return;
    }
    let (reports, capped) = in_private_netns(|| {
        harness::pin_to_this_cpu().expect("pin to this CPU");
        let mut h = Harness::new(1024).expect("harness");
        h.set_config(&DataplaneConfig {
            new_flow_cap: 1,
            fib_generation: 0,
        })
        .expect("config");
        let mut reports = Vec::new();
        for (i, plan) in PLANS.iter().enumerate() {
            if i > 0 {
                // The next family starts a new one-second window.
                std::thread::sleep(std::time::Duration::from_millis(1100));
            }
            let table = fixtures::fastpath::capped(plan);
            reports.push(fixture::run_all(&mut h, &table).expect("test_run"));
        }
        let capped = h.stats().expect("stats")[STAT_NEW_FLOW_CAPPED as usize].packets;
        (reports, capped)
    });
    for r in &reports {
        eprintln!("{}", r.summary());
        assert!(r.failures.is_empty(), "\n{}", r.failures.join("\n"));
    }
    assert_eq!(capped, PLANS.len() as u64, "new_flow_capped");
}

#[test]
fn fib_cache_follows_generation_and_lifetime() {
    if !require_root("fib_cache_follows_generation_and_lifetime") {
        return;
    }
    use fixtures::fastpath::CacheStep;
    let failures = in_private_netns(|| {
        harness::pin_to_this_cpu().expect("pin to this CPU");
        let mut h = Harness::new(1024).expect("harness");
        let mut failures = Vec::new();
        for (plan, reply) in PLANS.iter().flat_map(|p| [(p, false), (p, true)]) {
            let sport = if reply { 44201 } else { 44200 };
            let host = if reply { plan.client } else { plan.backend };
            for (step, fixture) in fixtures::fastpath::fib_cache_steps(plan, sport, reply) {
                match step {
                    CacheStep::Run => {}
                    CacheStep::Neighbour(mac) => {
                        netns::replace_neighbour(host, mac, reply).expect("neighbour")
                    }
                    CacheStep::Invalidate => h.invalidate_fib_cache().expect("invalidate"),
                    CacheStep::Expire => std::thread::sleep(std::time::Duration::from_nanos(
                        lb_common::FIB_CACHE_TTL_NS + 100_000_000,
                    )),
                }
                let r = fixture::run_all(&mut h, std::slice::from_ref(&fixture)).expect("test_run");
                failures.extend(r.failures);
            }
        }
        failures
    });
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

/// Each CPU caches its clock once per jiffy, so an affinity entry another CPU stamped in
/// the same jiffy can be ahead of this CPU's time: the entry must hold, not count as
/// expired (it did, and the affinity test through xlbd sent one client's connections to
/// two backends). The entry is written 10 ms ahead of the real clock and the SYN runs
/// right after; the data path's time is never ahead of the real clock.
#[test]
fn affinity_stamped_ahead_of_this_cpus_clock_holds() {
    if !require_root("affinity_stamped_ahead_of_this_cpus_clock_holds") {
        return;
    }
    let failures = in_private_netns(|| {
        let mut h = Harness::new(1024).expect("harness");
        let mut failures = Vec::new();
        for plan in PLANS {
            let fixture = fixtures::affinity::clock_ahead(plan);
            let key = affinity_key(plan, affinity_service_id(plan, AFFINITY_PORT));
            let entry = lb_common::AffinityValue {
                backend: affinity_backend_index(plan, SECOND_BACKEND_PORT),
                slot: 1,
                last_seen_ns: lb_userspace::conntrack::monotonic_ns() + 10_000_000,
            };
            assert_eq!(affinity_slot_port(entry.slot), SECOND_BACKEND_PORT);
            h.dataplane_mut()
                .put_affinity(&key, &entry)
                .expect("affinity entry");
            let r = fixture::run_all(&mut h, std::slice::from_ref(&fixture)).expect("test_run");
            failures.extend(r.failures);
        }
        failures
    });
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

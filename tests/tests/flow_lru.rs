//! The connection tables with per-CPU LRU lists (`xlbd --flow-lru per-cpu`, the default):
//! a flow whose request is handled on one CPU and whose replies on another still works
//! and stays on its backend. The hash table is one table for all CPUs, so the reply
//! entry the request's CPU inserted is found from the reply's CPU; only eviction is per CPU.
//!
//! The client sends from a thread pinned to CPU 0 and the backends answer from threads
//! pinned to CPU 1; XDP on a veth runs on the sending CPU, so requests are balanced on
//! CPU 0 and replies translated on CPU 1, which the per-CPU counters confirm.

use std::net::{Ipv6Addr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use aya::maps::{MapData, MapInfo, PerCpuArray};
use lb_common::stats::{Counter, STAT_FORWARD, STAT_REPLY};
use xlb_testbed::{Testbed, UdpConn, VIP, VIP6, backend_id, require_root};

const PORT: u16 = 5300;
const BACKEND_PORT: u16 = 5353;
const FLOWS: usize = 8;
const ASKS: usize = 5;
/// `BPF_F_NO_COMMON_LRU`.
const NO_COMMON_LRU: u32 = 1 << 1;

/// Pins the calling thread to `cpu`.
fn pin_to(cpu: usize) {
    // SAFETY: a plain bit mask written with the libc macros; sched_setaffinity(0) affects
    // the calling thread only.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        assert_eq!(
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set),
            0,
            "sched_setaffinity({cpu}): {}",
            std::io::Error::last_os_error()
        );
    }
}

/// A UDP server in backend `j`'s namespace on [::]:BACKEND_PORT (IPv4 and IPv6), answering
/// every datagram with the backend's id from a thread pinned to CPU 1, until `stop`.
fn pinned_server(tb: &Testbed, j: usize, stop: &Arc<AtomicBool>) -> thread::JoinHandle<()> {
    let sock = tb
        .backend(j)
        .ns
        .run(|| UdpSocket::bind((Ipv6Addr::UNSPECIFIED, BACKEND_PORT)));
    let sock = sock.expect("netns").expect("bind the backend's UDP server");
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("read timeout");
    let (id, stop) = (backend_id(j), stop.clone());
    thread::spawn(move || {
        pin_to(1);
        let mut buf = [0u8; 2048];
        while !stop.load(Ordering::Relaxed) {
            if let Ok((_, from)) = sock.recv_from(&mut buf) {
                let _ = sock.send_to(id.as_bytes(), from);
            }
        }
    })
}

/// The per-CPU values of global counter `stat` in the pinned `STATS` map.
fn per_cpu(tb: &Testbed, stat: u32) -> Vec<Counter> {
    let map = MapData::from_pin(tb.pin_dir().join("stats")).expect("pinned stats");
    let stats: PerCpuArray<_, Counter> =
        PerCpuArray::try_from(aya::maps::Map::PerCpuArray(map)).expect("per-CPU array");
    stats
        .get(&stat, 0)
        .expect("counter")
        .iter()
        .copied()
        .collect()
}

#[test]
fn replies_on_another_cpu_find_their_flow() {
    if !require_root("replies_on_another_cpu_find_their_flow") {
        return;
    }
    if aya::util::nr_cpus().expect("possible CPUs") < 2 {
        eprintln!("replies_on_another_cpu_find_their_flow: skipped, fewer than 2 CPUs");
        return;
    }
    let mut tb = Testbed::new(1, 2).expect("testbed");
    tb.start_xlbd(&["--flow-lru", "per-cpu"])
        .expect("start xlbd");
    for service in [format!("{VIP}:{PORT}/udp"), format!("[{VIP6}]:{PORT}/udp")] {
        tb.add_service_with_backends(&service, BACKEND_PORT)
            .expect("service with backends");
    }
    for table in ["flows4", "flows6"] {
        let info = MapInfo::from_pin(tb.pin_dir().join(table)).expect("pinned table");
        assert_eq!(
            info.map_flags() & NO_COMMON_LRU,
            NO_COMMON_LRU,
            "{table} flags"
        );
        assert_eq!(
            info.max_entries() % 2,
            0,
            "{table} entries a multiple of the CPUs"
        );
    }
    let stop = Arc::new(AtomicBool::new(false));
    let servers: Vec<_> = (0..2).map(|j| pinned_server(&tb, j, &stop)).collect();
    let (fwd0, rep1) = (
        per_cpu(&tb, STAT_FORWARD)[0].packets,
        per_cpu(&tb, STAT_REPLY)[1].packets,
    );

    let answers = thread::scope(|s| {
        s.spawn(|| {
            pin_to(0);
            let mut all = Vec::new();
            for vip in [
                SocketAddr::new(VIP.into(), PORT),
                SocketAddr::new(VIP6.into(), PORT),
            ] {
                for _ in 0..FLOWS {
                    let mut c = UdpConn::connect(&tb.client(0).ns, vip).expect("client socket");
                    let ids: Vec<String> = (0..ASKS)
                        .map(|i| c.ask().unwrap_or_else(|e| panic!("{vip} ask {i}: {e:#}")))
                        .collect();
                    all.push((c.local(), ids));
                }
            }
            all
        })
        .join()
        .expect("client thread")
    });
    stop.store(true, Ordering::Relaxed);
    for t in servers {
        t.join().expect("server thread");
    }

    let mut used = std::collections::BTreeSet::new();
    for (local, ids) in &answers {
        assert!(
            ids.iter().all(|id| id == &ids[0]),
            "flow {local} moved between backends: {ids:?}"
        );
        used.insert(ids[0].clone());
    }
    eprintln!("{} flows, backends used: {used:?}", answers.len());
    let datagrams = (2 * FLOWS * ASKS) as u64;
    let fwd0 = per_cpu(&tb, STAT_FORWARD)[0].packets - fwd0;
    let rep1 = per_cpu(&tb, STAT_REPLY)[1].packets - rep1;
    eprintln!("forwarded on CPU 0: {fwd0}, replies translated on CPU 1: {rep1}");
    assert!(
        fwd0 >= datagrams && rep1 >= datagrams,
        "requests on CPU 0 {fwd0}, replies on CPU 1 {rep1}: want at least {datagrams} each"
    );
}

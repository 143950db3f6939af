//! `latest.md`: the tables, the ratios, the machine and how each figure was measured.

use std::fmt::Write as _;

use crate::report::{self, Results};

pub fn document(r: &Results) -> String {
    let m = &r.machine;
    let d = &r.durations;
    let p = &r.per_packet_detail;
    let mut s = String::from("# xlb benchmark results\n\n");
    let _ = writeln!(
        s,
        "Machine: {} CPUs ({}), kernel {}, {}. {}. Every end-to-end figure is the median of {} \
         runs; the machine is shared, so read the figures as ratios within this one run.\n",
        m.cpus,
        m.cpu_model,
        m.kernel,
        m.date_utc,
        m.versions.join("; "),
        r.runs
    );
    s.push_str("## Targets (issue 11)\n\n");
    s.push_str(&crate::targets::table(&r.targets));
    s.push_str(
        "\nEach target against this run's figures (the sections below say how each was \
         measured); \"not measured\": this run had no such load (e.g. `--only`).\n\n",
    );
    s.push_str("## Per packet (BPF_PROG_TEST_RUN)\n\n");
    s.push_str(&report::per_packet_table(&r.per_packet_ns));
    let spread = |key: &str| {
        p.spread
            .iter()
            .find(|(k, _)| k == key)
            .map_or(String::from("n/a"), |(_, s)| {
                format!("p10 {:.0}, p90 {:.0}, IQM {:.1}", s.p10, s.p90, s.iqm)
            })
    };
    let _ = writeln!(
        s,
        "\nHow: BPF_PROG_TEST_RUN runs a program `repeat` times on one buffer and reports the \
         average ns per repetition; the buffer is not reset between repetitions, so every case \
         is built as a fixed point of the program, and checked to be one. Each call runs \
         repeat={rep}. A run of a case is one warm-up call (discarded: caches, TLB and branch \
         predictors warm) and {calls} calls back to back, its figure their mean; {runs} runs \
         per case, in rounds that take every case in turn (so the shared machine's noise \
         falls on all alike), on one pinned CPU (CPU {cpu}). Each figure is the median over \
         runs, each ratio divides by a yardstick measured in the same rounds. \
         Every forwarded frame starts with TTL 255 and each forwarding repetition decrements \
         it: a call whose frame does not come back with TTL 255-{rep} fails the benchmark, \
         so every repetition forwarded. A call's fixed cost (timer, bh disable, run context) \
         is spread over the {rep} repetitions; as a check, the two cases that never change \
         the frame also ran at repeat={large}: the MAC swap took {l:.1} ns there ({ls:.1} at \
         repeat={rep}), the pass case {pl:.1} ({ps:.1}): differences within the shared \
         machine's noise between the two measurements.\n\n\
         - **MAC-swap yardstick**: swaps the Ethernet addresses and returns XDP_TX (the \
         figure Katran's \"3.3x XDP_TX\" is measured against). ({s_limit})\n\
         - **forward-only yardstick** (`lb-ebpf/src/yardstick.rs`): IPv4 and TTL checks, \
         `bpf_fib_lookup`, TTL decrement with the checksum update, both MACs written, \
         redirect through its own devmap: what any XDP router does, without service lookup, \
         NAT or connection table. The same frame as xlb's established case. ({s_fwd})\n\
         - **established TCP / UDP**: a segment (ACK, 15-byte payload) or datagram of a flow \
         already in the connection table, to VIP:80 whose one backend is VIP:80 itself \
         (routed through the backend-side link, permanent neighbour): the whole request \
         path as the program runs it, parse, its map lookups (connection table, services), \
         DNAT (addresses and port rewritten to the same values, checksums updated), the next \
         hop (FIB lookup, or xlb's own cache of it where it has one), TTL, MACs, redirect. \
         A run of xlb's own counters checks it: {rep} forwarded, 0 new flows. (TCP: \
         {s_est}; UDP: {s_udp})\n\
         - **new flow**: a SYN|FIN of its own flow. A SYN on a flow whose entry carries a \
         close flag starts a new flow, and the entry it writes carries FIN again, so every \
         repetition takes the miss path: connection-table lookup (a hit on a closed entry, \
         where a real SYN misses), service lookup, flow hash, table slot, backend, both \
         entries written (replacing the existing ones, where a real SYN inserts), then DNAT \
         and forward as above. Checked: \
         {rep} new flows per call. ({s_new})\n\
         - **table miss writing no entry**: a SYN|RST of a flow the table never had: the \
         same miss path as a new flow (connection-table lookup, here a real miss; service \
         lookup, flow hash, table slot, backend; the entries built in the scratch area), \
         then DNAT and forward, but an RST of no known flow writes no entry (Katran's rule), \
         so the flow stays unknown. Checked: {rep} forwarded, 0 new flows, and no entry of \
         the flow in the table. The new-flow figure minus this one is what writing the \
         flow's two entries (request and reply) into the kernel's LRU hash map costs. \
         ({s_miss})\n\
         - **reply**: VIP:80 -> client from the backend side, matched by the flow's reply \
         entry and rewritten back to VIP:80 (the same values), then forwarded to the \
         client. Checked: {rep} replies per call. ({s_reply})\n\
         - **pass**: TCP to the LB's own address (not a service): parse, the lookups that \
         miss, counters, XDP_PASS; the frame is not changed. ({s_pass})\n\n\
         xlb and both yardsticks come from the same object, loaded side by side in a \
         private network namespace.\n",
        rep = p.repeat,
        runs = p.runs,
        calls = p.calls_per_run,
        cpu = p.cpu,
        large = p.large_repeat,
        l = p.xdp_tx_limit_large_repeat_ns,
        ls = r.per_packet_ns.xdp_tx_limit,
        pl = p.xlb_pass_large_repeat_ns,
        ps = r.per_packet_ns.xlb_pass,
        s_limit = spread("xdp_tx_limit"),
        s_fwd = spread("fwd_yardstick"),
        s_est = spread("xlb_established"),
        s_udp = spread("xlb_established_udp"),
        s_new = spread("xlb_new_flow"),
        s_miss = spread("xlb_miss_no_entry"),
        s_reply = spread("xlb_reply"),
        s_pass = spread("xlb_pass"),
    );
    s.push_str("![ns per packet](per_packet.png)\n\n");
    s.push_str("## End to end (netns testbed: 3 clients, LB, 3 backends)\n\n");
    s.push_str(&report::e2e_table(r));
    s.push('\n');
    s.push_str(&report::ratios(r));
    s.push_str("\n![end-to-end figures](e2e.png)\n\n");
    s.push_str("## Per packet under real traffic (bpf_stats)\n\n");
    s.push_str(&report::bpf_table(r));
    let _ = writeln!(
        s,
        "\nHow: during the end-to-end runs of xlb and of the forward-only yardstick, the \
         kernel's BPF run-time statistics are on (the `kernel.bpf_stats_enabled` switch, taken \
         with BPF_ENABLE_STATS, so it is released when the benchmark exits, even if killed; \
         off for the other balancers' runs). Before and after each load the benchmark reads \
         the program's `run_time_ns` and `run_cnt` (BPF_OBJ_GET_INFO_BY_FD, what `bpftool prog \
         show` prints); the figure is the difference of the first over the difference of the \
         second, median of the runs. One program is attached to every LB veth, so a load's \
         figure covers both directions: requests, replies (the backends' ACKs and answers), \
         and for connections the SYNs that take the miss path. The yardstick (IPv4 and TTL \
         checks, `bpf_fib_lookup`, TTL, MACs, redirect; no NAT) is attached natively to the \
         same veths in the same topology instead of xlb, and the same loads are aimed at \
         backend 0 itself, since it does not balance. The statistics add two clock reads to \
         each program run, for both alike.\n"
    );
    s.push_str("## UDP small packets from a packet generator (trafgen)\n\n");
    s.push_str(&report::generator_table(r));
    let _ = writeln!(
        s,
        "\nHow: trafgen (netsniff-ng) in client 0 writes ready-made 60-byte frames (18-byte UDP \
         payload) from {flows} source ports through a PACKET_MMAP socket to its veth, one \
         process, for {udp} s, to VIP:80 (the yardstick: backend 0:8080); the LB forwards \
         them to the three backends (the yardstick to one). Two runs: **max rate** (as fast \
         as trafgen goes) and **{fixed} kpps** (trafgen's rate limit, meant to be below what \
         every balancer carries, so that only their CPU differs; where the offered load is \
         below it, trafgen itself did not get the CPU on the shared machine). \
         **Offered** is what trafgen handed to its interface per second: at max rate it \
         shares the 2 CPUs with everything else, so it rises as the LB leaves it more CPU, \
         and when the backends receive all of it the generator, not the LB, was the limit. \
         **At backends** is the sum of \
         the backends' veth RX counters over the run (packets that crossed the LB), **read by \
         sinks** the datagrams the backends' UDP sockets read. **CPU per Mpkt** is the \
         machine's softirq time from /proc/stat during the run (plus nginx's processes), per \
         million packets at the backends: it includes the LB's forwarding (XDP, or netfilter \
         and the IP stack), the veth hand-offs and the backends' receive path up to the \
         socket, the same for every balancer; the **XDP program** column is xlb's (or the \
         yardstick's) own run time from bpf_stats per million packets it ran on. **IPVS** is \
         not available here: this kernel has no `ip_vs` (no module support, `modprobe ip_vs` \
         finds nothing, no /proc/net/ip_vs), so the IPVS-like setting measured is iptables \
         DNAT with conntrack, as kube-proxy's iptables mode.\n",
        flows = crate::e2e::GEN_FLOWS,
        udp = d.udp_secs,
        fixed = crate::e2e::GEN_FIXED_PPS / 1000,
    );
    let _ = writeln!(
        s,
        "How: each run builds a fresh testbed per balancer (same names, addresses and veths; \
         nothing of one balancer's state, such as conntrack or the VIP on `lo`, reaches the \
         next), balancers interleaved run by run. The LB namespace runs one of: **xlb** (xlbd, \
         native XDP on every LB veth); **iptables DNAT** as kube-proxy writes it (KUBE-SERVICES \
         -> KUBE-SVC-* with `statistic --mode random` rules -> KUBE-SEP-* DNAT, conntrack, \
         iptables-restore); **HAProxy** `mode tcp`, `balance roundrobin`, three servers; \
         **nginx** `stream`, the same three upstreams, `worker_processes auto`. The proxies \
         bind the VIP on the LB's `lo`. Services: VIP:80 over TCP and UDP on the three \
         backends, VIP:5201 on backend 0 only (iperf3's control and data connections must \
         reach one server).\n\n\
         - **TCP throughput**: iperf3 -P {streams} -t {tcp} from client 0 through the VIP to \
         backend 0, received Gbit/s.\n\
         - **UDP**: every client sends 18-byte datagrams (60-byte frames) from {udpf} sockets \
         as fast as it can for {udp} s; the figure is datagrams counted by the backends' sinks \
         per second. HAProxy has no UDP proxying: n/a.\n\
         - **Connections/s**: 4 threads per client (12 in all) for {conn} s: connect, send 16 \
         bytes, read the 16-byte echo, close. Client, proxy and backend namespaces use the \
         whole port range and `tcp_tw_reuse`.\n\
         - **Latency**: one persistent connection per client for {lat} s, 16-byte request, \
         16-byte echo, one at a time; p50 and p99 over all exchanges of the run.\n\
         - **CPU per Gbit**: during the TCP run, the machine's softirq time from /proc/stat \
         (where XDP, netfilter, veth and every namespace's TCP/IP receive work run: \
         machine-wide, so it includes the client's and backend's stacks, the same for every \
         balancer) plus the proxy processes' utime+stime, divided by the Gbit moved.\n\
         - All veths have TX checksum offload off (xlb needs full checksums; the same for \
         every balancer). Client, LB and backends share the machine's {cpus} CPUs, so a \
         balancer that needs less CPU leaves more to the load generators and servers: that \
         is part of what the figures show.\n",
        streams = d.iperf_streams,
        tcp = d.tcp_secs,
        udpf = 4,
        udp = d.udp_secs,
        conn = d.conn_secs,
        lat = d.latency_secs,
        cpus = m.cpus,
    );
    s
}

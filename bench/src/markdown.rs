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
    s.push_str("## Per packet (BPF_PROG_TEST_RUN)\n\n");
    s.push_str(&report::per_packet_table(&r.per_packet_ns));
    let _ = writeln!(
        s,
        "\nHow: BPF_PROG_TEST_RUN runs a program `repeat` times on one buffer, which each run \
         leaves rewritten (after DNAT the frame is no longer for the VIP), so xlb's forwarding \
         cases run with repeat=1, {rounds} interleaved rounds, one call per case each, and the \
         median is kept. What a single call adds ({oh:.1} ns: the harness's timer, bh disable \
         and run context, and the first touch of the maps) is subtracted: it is xlb's pass \
         case at repeat=1 ({p1:.1} ns) minus the same case with repeat={rep} ({pl:.1} ns; a \
         packet that passes is not rewritten, so every repeat is the same work). The yardstick \
         swaps MACs, the same work on every repeat, so it runs with repeat={rep} (at repeat=1 \
         it took {l1:.1} ns). **New flow**: the connection table is emptied from user space \
         (both entries of the flow) before each SYN, so every SYN takes the miss path: flow \
         hash, table slot, backend, two inserts; the next segment of the same flow is the \
         **established** case, the backend's answer the **reply** case. **Pass**: TCP to the \
         LB's own address (not a service). Both programs come from the same object, loaded \
         side by side in a private network namespace with permanent neighbours, so \
         `bpf_fib_lookup` succeeds.\n",
        rounds = p.rounds,
        oh = p.harness_overhead_ns,
        p1 = p.xlb_pass_repeat1_ns,
        rep = p.repeat,
        pl = p.xlb_pass_large_repeat_ns,
        l1 = p.xdp_tx_limit_repeat1_ns,
    );
    s.push_str("![ns per packet](per_packet.png)\n\n");
    s.push_str("## End to end (netns testbed: 3 clients, LB, 3 backends)\n\n");
    s.push_str(&report::e2e_table(r));
    s.push('\n');
    s.push_str(&report::ratios(r));
    s.push_str("\n![end-to-end figures](e2e.png)\n\n");
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

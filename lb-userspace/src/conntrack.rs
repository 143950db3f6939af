//! The connection table seen from userspace: live flows per backend, what a sweep deletes,
//! and which entries a forced backend removal drops. The per-entry rules are
//! `lb_common::conntrack`; here the two directions of a flow are judged together, so a
//! FIN or RST seen in either direction closes the flow.

use std::collections::HashMap;

use lb_common::conntrack::{FlowState, Timeouts, classify};
use lb_common::{DIR_REPLY, DIR_REQUEST, FlowKey, FlowValue};

/// Defaults, as `xlbd` documents them.
pub const DEFAULT_TIMEOUTS: Timeouts = Timeouts {
    tcp_idle_ns: 3600 * NS,
    tcp_closed_ns: 10 * NS,
    udp_idle_ns: 30 * NS,
};
const NS: u64 = 1_000_000_000;

/// `CLOCK_MONOTONIC` in ns: the clock of the data path's `bpf_ktime_get_ns`.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * NS + ts.tv_nsec as u64
}

/// The request-direction key of the flow an entry belongs to.
fn request_key(key: &FlowKey, v: &FlowValue) -> FlowKey {
    if v.direction == DIR_REPLY {
        // Reply: backend -> client, rewritten to VIP -> client. The request is the mirror.
        FlowKey {
            src: key.dst,
            dst: v.nat_addr,
            src_port_be: key.dst_port_be,
            dst_port_be: v.nat_port_be,
            ..*key
        }
    } else {
        *key
    }
}

/// Each entry with its state, judged with the close flags of both its flow's directions.
pub fn states<'a>(
    flows: &'a [(FlowKey, FlowValue)],
    now_ns: u64,
    t: &'a Timeouts,
) -> impl Iterator<Item = (&'a FlowKey, &'a FlowValue, FlowState)> + 'a {
    let mut flow_flags: HashMap<FlowKey, u8> = HashMap::new();
    for (k, v) in flows {
        *flow_flags.entry(request_key(k, v)).or_default() |= v.flags;
    }
    flows.iter().map(move |(k, v)| {
        let both = FlowValue {
            flags: flow_flags[&request_key(k, v)],
            ..*v
        };
        (k, v, classify(k.proto, &both, now_ns, t))
    })
}

/// Live flows by backend index (request-direction entries, one per flow).
pub fn live_counts(flows: &[(FlowKey, FlowValue)], now_ns: u64, t: &Timeouts) -> HashMap<u32, u64> {
    let mut counts = HashMap::new();
    for (_, v, state) in states(flows, now_ns, t) {
        if v.direction == DIR_REQUEST && state == FlowState::Live {
            *counts.entry(v.backend).or_insert(0) += 1;
        }
    }
    counts
}

/// Entries a sweep deletes.
pub fn expired(flows: &[(FlowKey, FlowValue)], now_ns: u64, t: &Timeouts) -> Vec<FlowKey> {
    states(flows, now_ns, t)
        .filter(|(_, _, s)| *s == FlowState::Expired)
        .map(|(k, _, _)| *k)
        .collect()
}

/// Both directions' entries of every flow on backend `index`.
pub fn of_backend(flows: &[(FlowKey, FlowValue)], index: u32) -> Vec<FlowKey> {
    keys_where(flows, |v| v.backend == index)
}

/// Both directions' entries of every flow of the service with id `service`.
pub fn of_service(flows: &[(FlowKey, FlowValue)], service: u32) -> Vec<FlowKey> {
    keys_where(flows, |v| v.service == service)
}

fn keys_where(flows: &[(FlowKey, FlowValue)], f: impl Fn(&FlowValue) -> bool) -> Vec<FlowKey> {
    flows
        .iter()
        .filter(|(_, v)| f(v))
        .map(|(k, _)| *k)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use lb_common::{Addr, FAMILY_V4, FLOW_FIN, FLOW_RST, PROTO_TCP, PROTO_UDP};

    const T: Timeouts = DEFAULT_TIMEOUTS;

    /// Both entries of a flow from client port `port` to VIP:80 on backend `backend`.
    fn flow(
        port: u16,
        backend: u32,
        proto: u8,
        req_flags: u8,
        rep_flags: u8,
        seen: u64,
    ) -> [(FlowKey, FlowValue); 2] {
        let client = Addr::from_v4_octets([198, 18, 10, 2]);
        let vip = Addr::from_v4_octets([198, 18, 0, 10]);
        let be = Addr::from_v4_octets([198, 19, backend as u8, 2]);
        let req = FlowKey {
            src: client,
            dst: vip,
            src_port_be: port.to_be(),
            dst_port_be: 80u16.to_be(),
            proto,
            family: FAMILY_V4,
            _pad: [0; 2],
        };
        let rep = FlowKey {
            src: be,
            dst: client,
            src_port_be: 8080u16.to_be(),
            dst_port_be: port.to_be(),
            ..req
        };
        let v = FlowValue {
            nat_addr: be,
            nat_port_be: 8080u16.to_be(),
            direction: DIR_REQUEST,
            flags: req_flags,
            backend,
            last_seen_ns: seen,
            ..Default::default()
        };
        let r = FlowValue {
            nat_addr: vip,
            nat_port_be: 80u16.to_be(),
            direction: DIR_REPLY,
            flags: rep_flags,
            ..v
        };
        [(req, v), (rep, r)]
    }

    #[test]
    fn a_close_seen_in_either_direction_ends_the_flow() {
        let now = 100 * NS;
        let mut flows = Vec::new();
        flows.extend(flow(1, 0, PROTO_TCP, 0, 0, now)); // live
        flows.extend(flow(2, 0, PROTO_TCP, 0, FLOW_FIN, now)); // backend closed
        flows.extend(flow(3, 1, PROTO_TCP, FLOW_RST, 0, now)); // client reset
        flows.extend(flow(4, 1, PROTO_UDP, 0, 0, now)); // live UDP
        let counts = live_counts(&flows, now, &T);
        assert_eq!(counts.get(&0), Some(&1));
        assert_eq!(counts.get(&1), Some(&1));
        assert!(expired(&flows, now, &T).is_empty());
        // Past the closed timeout both entries of each closed flow go, and nothing else.
        let later = now + 11 * NS;
        let gone = expired(&flows, later, &T);
        assert_eq!(gone.len(), 4);
        let mut want: Vec<FlowKey> = flows[2..6].iter().map(|(k, _)| *k).collect();
        let mut gone = gone;
        gone.sort_by_key(|k| (k.src, k.src_port_be));
        want.sort_by_key(|k| (k.src, k.src_port_be));
        assert_eq!(gone, want);
    }

    #[test]
    fn idle_udp_expires_and_forced_removal_takes_both_directions() {
        let flows: Vec<_> = flow(5, 2, PROTO_UDP, 0, 0, 0).into_iter().collect();
        assert_eq!(expired(&flows, 31 * NS, &T).len(), 2);
        assert_eq!(of_backend(&flows, 2).len(), 2);
        assert!(of_backend(&flows, 3).is_empty());
    }
}

//! Map names, sizes, keys and values shared by `lb-ebpf` and `lb-userspace`.

/// IP protocol numbers xlb balances.
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;

/// Address families, as stored in the `family` fields.
pub const FAMILY_V4: u8 = 4;
pub const FAMILY_V6: u8 = 6;

/// Map names: the XDP object's symbols, and the file names under the pin directory.
pub const MAP_SERVICES: &str = "SERVICES";
pub const MAP_BACKENDS: &str = "BACKENDS";
pub const MAP_TABLES: &str = "TABLES";
/// The connection table, one map per family (`FlowKey4` and `FlowKey` keys).
pub const MAP_FLOWS4: &str = "FLOWS4";
pub const MAP_FLOWS6: &str = "FLOWS6";
pub const MAP_STATS: &str = "STATS";
pub const MAP_BACKEND_STATS: &str = "BACKEND_STATS";
pub const MAP_FRAGS: &str = "FRAGS";
pub const MAP_EGRESS: &str = "EGRESS";
pub const MAP_EGRESS_MISS: &str = "EGRESS_MISS";
pub const MAP_AFFINITY: &str = "AFFINITY";
pub const MAP_ENCAP: &str = "ENCAP";
pub const MAP_DECAP_STATS: &str = "DECAP_STATS";
pub const MAP_CONFIG: &str = "CONFIG";

/// Default sizes; userspace may change the resizable ones at load time.
pub const MAX_SERVICES: u32 = 256;
pub const MAX_BACKENDS: u32 = 4096;
/// `BACKEND_STATS` holds two counters per backend index `i`: the packets and bytes
/// forwarded to it at slot `i`, and the new flows given to it (packets: flows; bytes: their
/// first packets) at slot `NEW_FLOWS_BASE + i`.
pub const NEW_FLOWS_BASE: u32 = MAX_BACKENDS;
/// Slots of `BACKEND_STATS`.
pub const BACKEND_STATS_SLOTS: u32 = 2 * MAX_BACKENDS;
/// Slots of the backend-table area (both halves of the double buffer together).
pub const DEFAULT_TABLE_AREA: u32 = 1 << 20;
/// `TABLES` is created with `BPF_F_MMAPABLE` (the kernel's value, stable UAPI since 5.5):
/// userspace maps it and writes changed slots with plain stores instead of one syscall
/// each. The data path reads it as any array; the flag changes nothing for the verifier.
pub const TABLES_MAP_FLAGS: u32 = 1 << 10;
/// Bytes a slot of `TABLES` takes in its memory mapping: the kernel rounds an array's
/// values up to 8 bytes.
pub const TABLES_MMAP_STRIDE: usize = 8;
/// Connection-table entries of each family's map (one per direction of each flow).
pub const DEFAULT_FLOW_ENTRIES: u32 = 1 << 18;
/// Datagrams whose later fragments can be followed at once.
pub const FRAG_ENTRIES: u32 = 8192;
/// Egress devices the data path may redirect to (`EGRESS`), and FIB egresses outside it
/// that it has seen (`EGRESS_MISS`).
pub const MAX_EGRESS: u32 = 1024;
/// Client-affinity entries (one per client address and service with `client-ip`
/// affinity); least recently used ones make room, as in the connection table.
pub const AFFINITY_ENTRIES: u32 = 1 << 16;

/// `ServiceValue::affinity`: every new flow takes the backend its hash picks.
pub const AFFINITY_NONE: u32 = 0;
/// `ServiceValue::affinity`: new flows of a client address go to the backend its last
/// flow went to, unless `affinity_timeout_s` passed since that flow began.
pub const AFFINITY_CLIENT_IP: u32 = 1;

/// `ServiceValue::forwarding`: the destination is rewritten to the backend (and replies,
/// routed back through the LB, rewritten back to the VIP).
pub const FORWARD_NAT: u32 = 0;
/// `ServiceValue::forwarding`: direct server return on one L2 segment (IPVS "DR"): only
/// the destination MAC becomes the backend's; the backend holds the VIP and replies to
/// the client directly.
pub const FORWARD_DSR_L2: u32 = 1;
/// `ServiceValue::forwarding`: direct server return through an IP-in-IP tunnel (Katran):
/// the packet is encapsulated to the backend, which decapsulates it and replies directly.
pub const FORWARD_DSR_IPIP: u32 = 2;

/// A slot in a backend table that holds no backend (an empty service).
pub const NO_BACKEND: u32 = u32::MAX;

/// An IPv4 or IPv6 address as its 16 wire bytes, in four words (native-endian loads of
/// network-order bytes, so no byte swapping is ever needed to compare or copy them).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Addr {
    pub words: [u32; 4],
}

impl Addr {
    pub const fn from_v4_octets(o: [u8; 4]) -> Self {
        Addr {
            words: [u32::from_ne_bytes(o), 0, 0, 0],
        }
    }

    pub const fn from_v6_octets(o: [u8; 16]) -> Self {
        Addr {
            words: [
                u32::from_ne_bytes([o[0], o[1], o[2], o[3]]),
                u32::from_ne_bytes([o[4], o[5], o[6], o[7]]),
                u32::from_ne_bytes([o[8], o[9], o[10], o[11]]),
                u32::from_ne_bytes([o[12], o[13], o[14], o[15]]),
            ],
        }
    }

    pub const fn v4_octets(&self) -> [u8; 4] {
        self.words[0].to_ne_bytes()
    }

    pub fn v6_octets(&self) -> [u8; 16] {
        let mut o = [0u8; 16];
        let mut i = 0;
        while i < 4 {
            let w = self.words[i].to_ne_bytes();
            o[i * 4..i * 4 + 4].copy_from_slice(&w);
            i += 1;
        }
        o
    }
}

/// Key of the `SERVICES` hash map: a virtual service `VIP:port/proto`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ServiceKey {
    pub vip: Addr,
    /// Network byte order.
    pub port_be: u16,
    pub proto: u8,
    pub family: u8,
}

/// Value of the `SERVICES` map. The service's backend table is the `table_size` slots of
/// `TABLES` starting at `table_offset`; userspace writes a new table into the other half
/// of the double buffer and then replaces this value in one map update (the flip).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServiceValue {
    /// Index into per-service counters; stable for the service's life.
    pub id: u32,
    pub table_offset: u32,
    pub table_size: u32,
    /// Bumped on every flip, so userspace and tests can see which table is live.
    pub generation: u32,
    /// `AFFINITY_NONE` or `AFFINITY_CLIENT_IP`.
    pub affinity: u32,
    /// Seconds an affinity entry lasts after the last new flow that used it (0 with
    /// `AFFINITY_NONE`).
    pub affinity_timeout_s: u32,
    /// `FORWARD_NAT`, `FORWARD_DSR_L2` or `FORWARD_DSR_IPIP`.
    pub forwarding: u32,
    pub _pad: u32,
}

/// The one value of the `ENCAP` array: how `dsr-ipip` chooses the outer source address
/// (see `encap::outer_source`): the prefix's bits where the host mask is 0, the flow
/// hash's where it is 1.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EncapConfig {
    pub src_v4: Addr,
    pub host_mask_v4: Addr,
    pub src_v6: Addr,
    pub host_mask_v6: Addr,
}

/// Counters of the decapsulation program (`DECAP_STATS`, per CPU).
pub const DECAP_STAT_RX: u32 = 0;
/// Outer header stripped, inner packet passed on to the stack.
pub const DECAP_STAT_STRIPPED: u32 = 1;
/// Not encapsulated (or a fragment of an encapsulated packet): passed untouched.
pub const DECAP_STAT_PASS: u32 = 2;
/// Encapsulated but malformed: dropped.
pub const DECAP_STAT_DROP_MALFORMED: u32 = 3;
pub const DECAP_STAT_COUNT: u32 = 4;
pub const DECAP_STAT_NAMES: [&str; DECAP_STAT_COUNT as usize] =
    ["rx", "stripped", "pass", "drop_malformed"];

/// Value of the `BACKENDS` array, indexed by backend index (what table slots hold).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Backend {
    pub addr: Addr,
    /// Network byte order.
    pub port_be: u16,
    pub family: u8,
    pub _pad: u8,
}

/// One flow direction as seen on the wire, either family: what the data path parses and
/// userspace lists. It is the key of the IPv6 connection table `FLOWS6` as it is (family
/// always `FAMILY_V6`); IPv4 flows are keyed by the narrower [`FlowKey4`] in `FLOWS4`.
///
/// A client's flow is stored twice: the request direction `client -> VIP`, whose value
/// names the backend, and the reply direction `backend -> client`, whose value names the
/// VIP that replies are rewritten back to.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub src: Addr,
    pub dst: Addr,
    /// Network byte order.
    pub src_port_be: u16,
    /// Network byte order.
    pub dst_port_be: u16,
    pub proto: u8,
    pub family: u8,
    pub _pad: [u8; 2],
}

/// Key of the IPv4 connection table `FLOWS4`: a [`FlowKey`] of family `FAMILY_V4` in 16
/// bytes instead of 40 (the kernel hashes and compares every key byte; Cilium's IPv4
/// conntrack key is 14 bytes for the same reason).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey4 {
    /// The IPv4 addresses as their wire bytes (`Addr::words[0]`).
    pub src: u32,
    pub dst: u32,
    /// Network byte order.
    pub src_port_be: u16,
    /// Network byte order.
    pub dst_port_be: u16,
    pub proto: u8,
    pub _pad: [u8; 3],
}

/// A connection-table map's key type: the one place that says how a [`FlowKey`] of its
/// family maps to it and back, so code over the tables is written once for both families.
pub trait FlowMapKey: Copy {
    /// The map's name.
    const MAP: &'static str;
    /// The family of the flows it holds.
    const FAMILY: u8;
    /// The key of `k` (of family `FAMILY`).
    fn from_flow(k: &FlowKey) -> Self;
    /// The flow this key is of.
    fn to_flow(&self) -> FlowKey;
}

impl FlowMapKey for FlowKey4 {
    const MAP: &'static str = MAP_FLOWS4;
    const FAMILY: u8 = FAMILY_V4;

    #[inline(always)]
    fn from_flow(k: &FlowKey) -> Self {
        FlowKey4 {
            src: k.src.words[0],
            dst: k.dst.words[0],
            src_port_be: k.src_port_be,
            dst_port_be: k.dst_port_be,
            proto: k.proto,
            _pad: [0; 3],
        }
    }

    fn to_flow(&self) -> FlowKey {
        FlowKey {
            src: Addr {
                words: [self.src, 0, 0, 0],
            },
            dst: Addr {
                words: [self.dst, 0, 0, 0],
            },
            src_port_be: self.src_port_be,
            dst_port_be: self.dst_port_be,
            proto: self.proto,
            family: FAMILY_V4,
            _pad: [0; 2],
        }
    }
}

impl FlowMapKey for FlowKey {
    const MAP: &'static str = MAP_FLOWS6;
    const FAMILY: u8 = FAMILY_V6;

    #[inline(always)]
    fn from_flow(k: &FlowKey) -> Self {
        *k
    }

    fn to_flow(&self) -> FlowKey {
        *self
    }
}

/// `FlowValue::direction` of a request-direction entry (client to VIP).
pub const DIR_REQUEST: u8 = 0;
/// `FlowValue::direction` of a reply-direction entry (backend to client).
pub const DIR_REPLY: u8 = 1;

/// `FlowValue::flags`: a TCP FIN was seen in this entry's direction.
pub const FLOW_FIN: u8 = 1;
/// `FlowValue::flags`: a TCP RST was seen in this entry's direction.
pub const FLOW_RST: u8 = 2;

/// Value of the `FLOWS4` and `FLOWS6` maps: what the matching packets are rewritten to, and the little
/// state userspace needs to expire the entry (see `conntrack`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowValue {
    /// Request direction: the backend's address. Reply direction: the VIP.
    pub nat_addr: Addr,
    /// Network byte order; the backend's port or the VIP's port.
    pub nat_port_be: u16,
    pub direction: u8,
    /// `FLOW_FIN` | `FLOW_RST` as seen in this direction.
    pub flags: u8,
    /// Index of the backend in `BACKENDS` when the flow was made.
    pub backend: u32,
    /// `SERVICES` id of the flow's service.
    pub service: u32,
    /// The service's `FORWARD_*` when the flow was made. A `dsr-*` flow has its request
    /// entry only: the backend answers the client directly.
    pub forwarding: u32,
    /// `CLOCK_MONOTONIC` time of the last packet, in ns, kept to within a second (the data
    /// path writes it at most once a second per entry).
    pub last_seen_ns: u64,
}

/// The one value of the `CONFIG` array: settings of the data path that userspace writes
/// (at load, and whenever they change) and the program reads on its slow paths only.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DataplaneConfig {
    /// Connection-table inserts (new flows) each CPU may make per second; 0: no limit.
    /// New flows over it are forwarded by the service's table without an entry and
    /// counted under `STAT_NEW_FLOW_CAPPED`.
    pub new_flow_cap: u32,
    /// The FIB cache's generation: entries made under another one are not used. Userspace
    /// bumps it when a backend index gets a new address.
    pub fib_generation: u32,
}

/// How long a cached FIB answer is used before the FIB is asked again (ns): a neighbour
/// or route change reaches the data path within this time even if nobody bumps the
/// generation.
pub const FIB_CACHE_TTL_NS: u64 = 1_000_000_000;

/// The FIB's answer for packets to one destination, so a packet of an established flow
/// does not call `bpf_fib_lookup` each time: a slot of the per-CPU `FIB_CACHE` array by
/// backend index (requests), or a value of the per-CPU LRU `REPLY_FIB` by client address
/// (replies: one answer per client address, which a slot per backend cannot hold).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FibCacheEntry {
    /// `CLOCK_MONOTONIC` ns the answer was given at; 0: empty.
    pub at_ns: u64,
    /// `DataplaneConfig::fib_generation` at that time.
    pub generation: u32,
    /// The egress device.
    pub ifindex: u32,
    /// The egress MTU: a larger packet asks the FIB again (which refuses it, so the
    /// kernel sends "fragmentation needed").
    pub mtu: u16,
    pub smac: [u8; 6],
    pub dmac: [u8; 6],
    pub _pad: [u8; 2],
}

/// Key of the `REPLY_FIB` per-CPU LRU map: a client address replies go to.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FibKey {
    pub addr: Addr,
    pub family: u8,
    pub _pad: [u8; 3],
}

/// Client addresses whose FIB answer each CPU keeps for replies; the least recently used
/// make room.
pub const REPLY_FIB_ENTRIES: u32 = 8192;

impl FibCacheEntry {
    /// Whether the entry may be used at `now_ns` under `generation` for an IP packet of
    /// `ip_len` bytes.
    #[inline(always)]
    pub const fn usable(&self, generation: u32, now_ns: u64, ip_len: u16) -> bool {
        self.at_ns != 0
            && self.generation == generation
            && now_ns >= self.at_ns
            && now_ns - self.at_ns < FIB_CACHE_TTL_NS
            && ip_len <= self.mtu
    }
}

/// Key of the `FRAGS` LRU map: one fragmented datagram as its fragments arrive (addresses
/// before rewriting, the IPv4 or IPv6 identification).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FragKey {
    pub src: Addr,
    pub dst: Addr,
    pub id: u32,
    pub proto: u8,
    pub family: u8,
    pub _pad: [u8; 2],
}

/// Value of the `FRAGS` map: the rewrite the datagram's first fragment got, which its
/// later fragments (carrying no L4 header) get too: the address only.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FragValue {
    pub nat_addr: Addr,
    /// `DIR_REQUEST`: the destination is rewritten; `DIR_REPLY`: the source.
    pub direction: u8,
    pub _pad: [u8; 3],
    pub backend: u32,
}

/// How far apart two CPUs' data-path times can be: each CPU caches its ns time once per
/// jiffy (`clock::now` in lb-ebpf), and a jiffy is at most 10 ms (`HZ=100`); twice that.
pub const CLOCK_SKEW_NS: u64 = 20_000_000;

/// Key of the `AFFINITY` LRU map: one client address of one service.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct AffinityKey {
    pub client: Addr,
    /// `ServiceValue::id` of the service.
    pub service: u32,
    pub family: u8,
    pub _pad: [u8; 3],
}

/// Value of the `AFFINITY` map: where the client's last new flow went.
///
/// The entry is used only while slot `slot` of the service's live table still holds
/// `backend`: a table holds only backends that take new flows (weight > 0, not down), so
/// one array read proves the backend is still live in the service, whatever changed since.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AffinityValue {
    /// Index of the backend in `BACKENDS`.
    pub backend: u32,
    /// Position in the service's table (from its start) the backend was taken from.
    pub slot: u32,
    /// `CLOCK_MONOTONIC` time of the last new flow that used the entry, in ns.
    pub last_seen_ns: u64,
}

impl AffinityValue {
    /// Whether the entry still holds at `now_ns` (same clock) for a timeout of
    /// `timeout_s` seconds.
    ///
    /// A `now_ns` up to [`CLOCK_SKEW_NS`] before `last_seen_ns` counts as fresh: the data
    /// path's time is each CPU's cached read (`clock::now`), so an entry another CPU
    /// stamped in the same jiffy may be ahead of this CPU's time. Anything further ahead
    /// is not of this clock and counts as expired.
    #[inline(always)]
    pub const fn fresh(&self, now_ns: u64, timeout_s: u32) -> bool {
        if now_ns < self.last_seen_ns {
            return self.last_seen_ns - now_ns <= CLOCK_SKEW_NS;
        }
        now_ns - self.last_seen_ns <= timeout_s as u64 * 1_000_000_000
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are repr(C), Copy, with explicit padding and every bit pattern valid.
    unsafe impl aya::Pod for super::Addr {}
    unsafe impl aya::Pod for super::ServiceKey {}
    unsafe impl aya::Pod for super::ServiceValue {}
    unsafe impl aya::Pod for super::Backend {}
    unsafe impl aya::Pod for super::FlowKey {}
    unsafe impl aya::Pod for super::FlowKey4 {}
    unsafe impl aya::Pod for super::FlowValue {}
    unsafe impl aya::Pod for super::FragKey {}
    unsafe impl aya::Pod for super::FragValue {}
    unsafe impl aya::Pod for super::AffinityKey {}
    unsafe impl aya::Pod for super::AffinityValue {}
    unsafe impl aya::Pod for super::EncapConfig {}
    unsafe impl aya::Pod for super::DataplaneConfig {}
    unsafe impl aya::Pod for super::FibCacheEntry {}
    unsafe impl aya::Pod for super::FibKey {}
    unsafe impl aya::Pod for crate::stats::Counter {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{align_of, size_of};

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(size_of::<Addr>(), 16);
        assert_eq!(size_of::<ServiceKey>(), 20);
        assert_eq!(size_of::<ServiceValue>(), 32);
        assert_eq!(size_of::<EncapConfig>(), 64);
        assert_eq!(size_of::<Backend>(), 20);
        assert_eq!(size_of::<FlowKey>(), 40);
        assert_eq!(size_of::<FlowKey4>(), 16);
        assert_eq!(size_of::<FlowValue>(), 40);
        assert_eq!(align_of::<FlowValue>(), 8);
        assert_eq!(align_of::<FlowKey>(), 4);
        assert_eq!(size_of::<FragKey>(), 40);
        assert_eq!(size_of::<FragValue>(), 24);
        assert_eq!(size_of::<AffinityKey>(), 24);
        assert_eq!(size_of::<AffinityValue>(), 16);
        assert_eq!(align_of::<AffinityValue>(), 8);
        assert_eq!(size_of::<DataplaneConfig>(), 8);
        assert_eq!(size_of::<FibCacheEntry>(), 32);
        assert_eq!(size_of::<FibKey>(), 20);
        // MACs at even offsets: the data path copies them 16 bits at a time.
        assert_eq!(core::mem::offset_of!(FibCacheEntry, smac) % 2, 0);
        assert_eq!(core::mem::offset_of!(FibCacheEntry, dmac) % 2, 0);
        assert_eq!(size_of::<crate::conntrack::InsertBudget>(), 16);
    }

    #[test]
    fn affinity_expires_after_its_timeout() {
        let v = AffinityValue {
            backend: 3,
            slot: 7,
            last_seen_ns: 5_000_000_000,
        };
        assert!(v.fresh(5_000_000_000, 2));
        assert!(v.fresh(7_000_000_000, 2));
        assert!(!v.fresh(7_000_000_001, 2));
        assert!(v.fresh(5_000_000_000 + 86_400 * 1_000_000_000, 86_400));
    }

    #[test]
    fn affinity_stamped_by_a_cpu_whose_clock_is_ahead_holds() {
        // Another CPU read its time later in the same jiffy: this CPU's time is behind the
        // entry's by up to a jiffy, and the entry holds (it made the affinity test flaky).
        let v = AffinityValue {
            backend: 3,
            slot: 7,
            last_seen_ns: 5_000_000_000,
        };
        assert!(v.fresh(5_000_000_000 - 1, 2));
        assert!(v.fresh(5_000_000_000 - 4_000_000, 2));
        assert!(v.fresh(5_000_000_000 - CLOCK_SKEW_NS, 2));
        // Further ahead than any two CPUs' caches differ: not this clock's time.
        assert!(!v.fresh(5_000_000_000 - CLOCK_SKEW_NS - 1, 2));
        assert!(!v.fresh(0, 2));
    }

    #[test]
    fn fib_cache_entries_hold_for_their_generation_ttl_and_mtu() {
        let e = FibCacheEntry {
            at_ns: 10_000_000_000,
            generation: 3,
            ifindex: 7,
            mtu: 1500,
            ..Default::default()
        };
        assert!(e.usable(3, 10_000_000_000, 1500));
        assert!(e.usable(3, 10_000_000_000 + FIB_CACHE_TTL_NS - 1, 60));
        assert!(
            !e.usable(3, 10_000_000_000 + FIB_CACHE_TTL_NS, 60),
            "expired"
        );
        assert!(!e.usable(4, 10_000_000_001, 60), "another generation");
        assert!(!e.usable(3, 10_000_000_001, 1501), "over the MTU");
        assert!(!e.usable(3, 9_999_999_999, 60), "a time before the answer");
        assert!(!FibCacheEntry::default().usable(0, 5, 60), "empty");
    }

    #[test]
    fn flow_keys_round_trip_through_their_family_map_keys() {
        let v4 = FlowKey {
            src: Addr::from_v4_octets([198, 18, 0, 1]),
            dst: Addr::from_v4_octets([198, 18, 0, 10]),
            src_port_be: 40000u16.to_be(),
            dst_port_be: 80u16.to_be(),
            proto: PROTO_TCP,
            family: FAMILY_V4,
            _pad: [0; 2],
        };
        let k4 = FlowKey4::from_flow(&v4);
        assert_eq!(k4.to_flow(), v4);
        // The wire bytes as the kernel hashes them: addresses, ports, proto, zero padding.
        let bytes: [u8; 16] = unsafe { core::mem::transmute(k4) };
        assert_eq!(
            bytes,
            [198, 18, 0, 1, 198, 18, 0, 10, 0x9c, 0x40, 0, 80, 6, 0, 0, 0]
        );
        let v6 = FlowKey {
            src: Addr::from_v6_octets([0x20, 1, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]),
            family: FAMILY_V6,
            ..v4
        };
        assert_eq!(<FlowKey as FlowMapKey>::from_flow(&v6).to_flow(), v6);
        assert_eq!(FlowKey4::FAMILY, FAMILY_V4);
        assert_eq!(<FlowKey as FlowMapKey>::MAP, MAP_FLOWS6);
    }

    #[test]
    fn addr_round_trips_wire_bytes() {
        let v4 = Addr::from_v4_octets([198, 18, 0, 10]);
        assert_eq!(v4.v4_octets(), [198, 18, 0, 10]);
        assert_eq!(&v4.v6_octets()[..4], &[198, 18, 0, 10]);
        assert_eq!(v4.words[1..], [0, 0, 0]);
        let o = [0x20, 1, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10];
        assert_eq!(Addr::from_v6_octets(o).v6_octets(), o);
    }

    #[test]
    fn service_key_field_offsets() {
        let k = ServiceKey {
            vip: Addr::from_v4_octets([1, 2, 3, 4]),
            port_be: 80u16.to_be(),
            proto: PROTO_TCP,
            family: FAMILY_V4,
        };
        // The bytes as the kernel hashes them: address, port (wire order), proto, family.
        let bytes: [u8; 20] = unsafe { core::mem::transmute(k) };
        assert_eq!(&bytes[..4], &[1, 2, 3, 4]);
        assert_eq!(&bytes[16..20], &[0, 80, 6, 4]);
    }
}

//! The boundary between the control plane and the kernel: everything the daemon does to
//! the BPF maps goes through [`Dataplane`]. `bpf::BpfDataplane` implements it over the
//! loaded XDP object; [`FakeDataplane`] keeps the same state in memory for host tests.

use std::collections::{BTreeSet, HashMap};

use lb_common::{Backend, FlowKey, FlowValue, ServiceKey, ServiceValue, stats::Counter};

#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    #[error("BPF map {map}: {source}")]
    Map {
        map: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("index {index} is outside BPF map {map} ({size} entries)")]
    OutOfRange {
        map: &'static str,
        index: u32,
        size: u32,
    },
    #[error("cannot detach: {0}")]
    Detach(String),
    #[error("waiting for running XDP programs to finish: {0}")]
    GracePeriod(String),
}

/// A wait for running data-path programs, started by [`Dataplane::start_grace_period`].
/// Tickets grow; waiting for one also waits for every smaller one.
pub type GraceTicket = u64;

/// Map operations the control plane needs. Each call is one or a few map updates; the
/// caller orders them so the data path never sees a half-made state (write the backend
/// entries and the new table first, then flip the service to it, then start a grace
/// period that must end before the old table is written again).
pub trait Dataplane: Send + 'static {
    /// Inserts or replaces a service. Replacing is atomic for the data path.
    fn put_service(&mut self, key: &ServiceKey, value: &ServiceValue)
    -> Result<(), DataplaneError>;
    /// Removes a service; packets to it pass to the kernel from then on.
    fn remove_service(&mut self, key: &ServiceKey) -> Result<(), DataplaneError>;
    /// Whether the maps were adopted from an earlier daemon (they hold live state).
    fn adopted(&self) -> bool;
    /// Takes the data path down: detaches the program and removes the pins.
    fn detach(self) -> Result<(), DataplaneError>
    where
        Self: Sized;
    /// Every entry of `SERVICES` (what an adopted data path holds).
    fn service_entries(&self) -> Result<Vec<(ServiceKey, ServiceValue)>, DataplaneError>;
    /// Writes a backend at `index` of `BACKENDS` (what table slots refer to).
    fn put_backend(&mut self, index: u32, backend: &Backend) -> Result<(), DataplaneError>;
    /// Reads `len` slots of `TABLES` from `offset`: what the map holds now (also what an
    /// earlier daemon left there).
    fn read_table(&self, offset: u32, len: u32) -> Result<Vec<u32>, DataplaneError>;
    /// Writes each `(slot, value)` of `slots` into `TABLES`, all in one batch; slots not
    /// named keep their values. Either every slot is in range and all are written, or
    /// nothing is.
    fn write_slots(&mut self, slots: &[(u32, u32)]) -> Result<(), DataplaneError>;
    /// Writes `slots` into `TABLES` starting at `offset` (all of them, changed or not).
    fn write_table(&mut self, offset: u32, slots: &[u32]) -> Result<(), DataplaneError> {
        let all: Vec<(u32, u32)> = (offset..).zip(slots.iter().copied()).collect();
        self.write_slots(&all)
    }
    /// Size of the `TABLES` area (both halves of the double buffer together).
    fn table_area(&self) -> u32;
    /// Starts, without blocking, a wait for every data-path program running now to
    /// finish (an RCU grace period). What those programs may still read (a table half a
    /// flip has just retired) may be rewritten once [`Dataplane::wait_grace_period`]
    /// with this ticket has returned.
    fn start_grace_period(&mut self) -> GraceTicket;
    /// Blocks until the grace period of `ticket` (and every earlier one) has ended;
    /// returns at once when it already has.
    fn wait_grace_period(&mut self, ticket: GraceTicket) -> Result<(), DataplaneError>;
    /// Global counters, summed over CPUs, indexed by `lb_common::stats::STAT_*`.
    fn stats(&self) -> Result<Vec<Counter>, DataplaneError>;
    /// Packets and bytes forwarded to the backend at `index`, summed over CPUs.
    fn backend_stats(&self, index: u32) -> Result<Counter, DataplaneError>;
    /// Every entry of the connection table (both directions of each flow).
    fn flows(&self) -> Result<Vec<(FlowKey, FlowValue)>, DataplaneError>;
    /// Deletes connection-table entries (absent ones are skipped); returns how many went.
    fn remove_flows(&mut self, keys: &[FlowKey]) -> Result<usize, DataplaneError>;
    /// Lets the data path redirect to device `ifindex` (puts it in the `EGRESS` devmap).
    fn allow_egress(&mut self, ifindex: u32) -> Result<(), DataplaneError>;
    /// Takes device `ifindex` out of `EGRESS` (absent is fine): packets the FIB sends to
    /// it are passed to the kernel.
    fn deny_egress(&mut self, ifindex: u32) -> Result<(), DataplaneError>;
    /// The devices in `EGRESS`, ascending.
    fn egress(&self) -> Result<Vec<u32>, DataplaneError>;
    /// FIB egress devices outside `EGRESS` that packets were passed to the kernel for,
    /// with how many.
    fn egress_misses(&self) -> Result<Vec<(u32, u64)>, DataplaneError>;
}

/// An in-memory [`Dataplane`] for tests of the control plane on the host.
#[derive(Debug, Default)]
pub struct FakeDataplane {
    pub services: HashMap<ServiceKey, ServiceValue>,
    pub backends: HashMap<u32, Backend>,
    pub tables: Vec<u32>,
    pub flows: HashMap<FlowKey, FlowValue>,
    pub egress: BTreeSet<u32>,
    pub egress_miss: HashMap<u32, u64>,
    /// Grace periods started; all of them end at once (no program runs here).
    pub grace_periods: GraceTicket,
}

impl FakeDataplane {
    /// A table area of `table_area` slots, all 0 as a new BPF array is.
    pub fn new(table_area: u32) -> Self {
        FakeDataplane {
            tables: vec![0; table_area as usize],
            ..Default::default()
        }
    }

    /// Adds `n` live TCP flows on backend `index` (both directions), as the data path would
    /// for new connections now.
    pub fn add_live_flows(&mut self, index: u32, n: u16) {
        use lb_common::{Addr, DIR_REPLY, DIR_REQUEST, FAMILY_V4, PROTO_TCP};
        let now = crate::conntrack::monotonic_ns();
        let base = self.flows.len() as u16;
        for i in 0..n {
            let port = (10_000 + base + 2 * i).to_be();
            let client = Addr::from_v4_octets([198, 18, 10, 2]);
            let backend = Addr::from_v4_octets([198, 19, 0, index as u8]);
            let request = FlowKey {
                src: client,
                dst: Addr::from_v4_octets([198, 18, 0, 10]),
                src_port_be: port,
                dst_port_be: 80u16.to_be(),
                proto: PROTO_TCP,
                family: FAMILY_V4,
                _pad: [0; 2],
            };
            let value = FlowValue {
                nat_addr: backend,
                nat_port_be: 8080u16.to_be(),
                direction: DIR_REQUEST,
                backend: index,
                last_seen_ns: now,
                ..Default::default()
            };
            let reply = FlowKey {
                src: backend,
                dst: client,
                src_port_be: 8080u16.to_be(),
                dst_port_be: port,
                ..request
            };
            self.flows.insert(request, value);
            self.flows.insert(
                reply,
                FlowValue {
                    nat_addr: request.dst,
                    nat_port_be: request.dst_port_be,
                    direction: DIR_REPLY,
                    ..value
                },
            );
        }
    }

    /// The live table of a service, as the data path would read it.
    pub fn live_table(&self, key: &ServiceKey) -> Option<&[u32]> {
        let v = self.services.get(key)?;
        let start = v.table_offset as usize;
        Some(&self.tables[start..start + v.table_size as usize])
    }
}

impl Dataplane for FakeDataplane {
    fn put_service(
        &mut self,
        key: &ServiceKey,
        value: &ServiceValue,
    ) -> Result<(), DataplaneError> {
        self.services.insert(*key, *value);
        Ok(())
    }

    fn remove_service(&mut self, key: &ServiceKey) -> Result<(), DataplaneError> {
        self.services.remove(key);
        Ok(())
    }

    fn adopted(&self) -> bool {
        !self.services.is_empty()
    }

    fn detach(self) -> Result<(), DataplaneError> {
        Ok(())
    }

    fn service_entries(&self) -> Result<Vec<(ServiceKey, ServiceValue)>, DataplaneError> {
        Ok(self.services.iter().map(|(k, v)| (*k, *v)).collect())
    }

    fn put_backend(&mut self, index: u32, backend: &Backend) -> Result<(), DataplaneError> {
        if index >= lb_common::MAX_BACKENDS {
            return Err(DataplaneError::OutOfRange {
                map: lb_common::MAP_BACKENDS,
                index,
                size: lb_common::MAX_BACKENDS,
            });
        }
        self.backends.insert(index, *backend);
        Ok(())
    }

    fn read_table(&self, offset: u32, len: u32) -> Result<Vec<u32>, DataplaneError> {
        let end = offset as usize + len as usize;
        if end > self.tables.len() {
            return Err(DataplaneError::OutOfRange {
                map: lb_common::MAP_TABLES,
                index: end as u32 - 1,
                size: self.tables.len() as u32,
            });
        }
        Ok(self.tables[offset as usize..end].to_vec())
    }

    fn write_slots(&mut self, slots: &[(u32, u32)]) -> Result<(), DataplaneError> {
        if let Some(&(index, _)) = slots.iter().find(|(i, _)| *i as usize >= self.tables.len()) {
            return Err(DataplaneError::OutOfRange {
                map: lb_common::MAP_TABLES,
                index,
                size: self.tables.len() as u32,
            });
        }
        for &(i, v) in slots {
            self.tables[i as usize] = v;
        }
        Ok(())
    }

    fn start_grace_period(&mut self) -> GraceTicket {
        self.grace_periods += 1;
        self.grace_periods
    }

    fn wait_grace_period(&mut self, _ticket: GraceTicket) -> Result<(), DataplaneError> {
        Ok(())
    }

    fn table_area(&self) -> u32 {
        self.tables.len() as u32
    }

    fn stats(&self) -> Result<Vec<Counter>, DataplaneError> {
        Ok(vec![
            Counter::default();
            lb_common::stats::STAT_COUNT as usize
        ])
    }

    fn backend_stats(&self, _index: u32) -> Result<Counter, DataplaneError> {
        Ok(Counter::default())
    }

    fn flows(&self) -> Result<Vec<(FlowKey, FlowValue)>, DataplaneError> {
        Ok(self.flows.iter().map(|(k, v)| (*k, *v)).collect())
    }

    fn remove_flows(&mut self, keys: &[FlowKey]) -> Result<usize, DataplaneError> {
        Ok(keys
            .iter()
            .filter(|k| self.flows.remove(k).is_some())
            .count())
    }

    fn allow_egress(&mut self, ifindex: u32) -> Result<(), DataplaneError> {
        self.egress.insert(ifindex);
        Ok(())
    }

    fn deny_egress(&mut self, ifindex: u32) -> Result<(), DataplaneError> {
        self.egress.remove(&ifindex);
        Ok(())
    }

    fn egress(&self) -> Result<Vec<u32>, DataplaneError> {
        Ok(self.egress.iter().copied().collect())
    }

    fn egress_misses(&self) -> Result<Vec<(u32, u64)>, DataplaneError> {
        Ok(self.egress_miss.iter().map(|(k, v)| (*k, *v)).collect())
    }
}

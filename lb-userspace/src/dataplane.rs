//! The boundary between the control plane and the kernel: everything the daemon does to
//! the BPF maps goes through [`Dataplane`]. `bpf::BpfDataplane` implements it over the
//! loaded XDP object; [`FakeDataplane`] keeps the same state in memory for host tests.

use std::collections::HashMap;

use lb_common::{Backend, ServiceKey, ServiceValue, stats::Counter};

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
}

/// Map operations the control plane needs. Each call is one or a few map updates; the
/// caller orders them so the data path never sees a half-made state (write the backend
/// entries and the new table first, then flip the service to it).
pub trait Dataplane: Send + 'static {
    /// Inserts or replaces a service. Replacing is atomic for the data path.
    fn put_service(&mut self, key: &ServiceKey, value: &ServiceValue)
    -> Result<(), DataplaneError>;
    /// Removes a service; packets to it pass to the kernel from then on.
    fn remove_service(&mut self, key: &ServiceKey) -> Result<(), DataplaneError>;
    /// Writes a backend at `index` of `BACKENDS` (what table slots refer to).
    fn put_backend(&mut self, index: u32, backend: &Backend) -> Result<(), DataplaneError>;
    /// Writes `slots` into `TABLES` starting at `offset`.
    fn write_table(&mut self, offset: u32, slots: &[u32]) -> Result<(), DataplaneError>;
    /// Size of the `TABLES` area (both halves of the double buffer together).
    fn table_area(&self) -> u32;
    /// Global counters, summed over CPUs, indexed by `lb_common::stats::STAT_*`.
    fn stats(&self) -> Result<Vec<Counter>, DataplaneError>;
    /// Packets and bytes forwarded to the backend at `index`, summed over CPUs.
    fn backend_stats(&self, index: u32) -> Result<Counter, DataplaneError>;
    /// Live request-direction flows in the connection table, by backend index.
    fn flow_counts(&self) -> Result<HashMap<u32, u64>, DataplaneError>;
}

/// An in-memory [`Dataplane`] for tests of the control plane on the host.
#[derive(Debug, Default)]
pub struct FakeDataplane {
    pub services: HashMap<ServiceKey, ServiceValue>,
    pub backends: HashMap<u32, Backend>,
    pub tables: Vec<u32>,
    pub flows: HashMap<u32, u64>,
}

impl FakeDataplane {
    pub fn new(table_area: u32) -> Self {
        FakeDataplane {
            tables: vec![lb_common::NO_BACKEND; table_area as usize],
            ..Default::default()
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

    fn write_table(&mut self, offset: u32, slots: &[u32]) -> Result<(), DataplaneError> {
        let end = offset as usize + slots.len();
        if end > self.tables.len() {
            return Err(DataplaneError::OutOfRange {
                map: lb_common::MAP_TABLES,
                index: end as u32 - 1,
                size: self.tables.len() as u32,
            });
        }
        self.tables[offset as usize..end].copy_from_slice(slots);
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

    fn flow_counts(&self) -> Result<HashMap<u32, u64>, DataplaneError> {
        Ok(self.flows.clone())
    }
}

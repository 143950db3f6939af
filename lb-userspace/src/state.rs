//! The control plane's state: services, their backends and weights, and where each
//! service's table lives. Every change goes to the data path through [`Dataplane`] in an
//! order that never shows it a half-made state:
//!
//! 1. a new backend's `BACKENDS` entry is written before any table names it;
//! 2. the service's new table is written into the INACTIVE half of its region (the table
//!    area is split into two halves; a service owns the same `table_size` slots at the
//!    same offset in each);
//! 3. the `SERVICES` entry is replaced in one update that points at the new half and bumps
//!    `generation` (the flip).
//!
//! A request is validated in full before anything is written; if the data path refuses a
//! write half way, the in-memory state is left as it was (what was written is unreferenced).
//! Backend indexes are global (one per service/backend pair); a freed index is reused only
//! after every never-used one, and then oldest-freed first (see [`Reuse::Oldest`]).

use std::collections::BTreeMap;

use lb_common::conntrack::Timeouts;
use lb_common::stats::{Counter, STAT_NAMES};
use lb_common::{MAX_BACKENDS, MAX_SERVICES, ServiceValue};

use crate::addr::{AddrError, BackendAddr, ServiceAddr};
use crate::alloc::{IdPool, Regions, Reuse};
use crate::conntrack::{self, DEFAULT_TIMEOUTS, monotonic_ns};
use crate::dataplane::{Dataplane, DataplaneError};
use crate::table::{TableEntry, build_table};

mod apply;
pub use apply::ApplyError;

/// Table size when none is given: a prime, as Maglev needs.
pub const DEFAULT_TABLE_SIZE: u32 = 65537;
/// Weight when none is given.
pub const DEFAULT_WEIGHT: u32 = 100;
/// Largest weight accepted.
pub const MAX_WEIGHT: u32 = 65535;

/// Why a request was refused. The `Display` is one line for the operator.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error(transparent)]
    Addr(#[from] AddrError),
    #[error("service {0} already exists")]
    ServiceExists(ServiceAddr),
    #[error("no such service: {0}")]
    NoSuchService(ServiceAddr),
    #[error("backend {backend} is already in service {service}")]
    BackendExists {
        service: ServiceAddr,
        backend: BackendAddr,
    },
    #[error("backend {backend} is not in service {service}")]
    NoSuchBackend {
        service: ServiceAddr,
        backend: BackendAddr,
    },
    #[error("table size {0} is not a prime number")]
    TableSizeNotPrime(u32),
    #[error(
        "table size {size} does not fit in half the table area ({half} slots; see xlbd --table-area)"
    )]
    TableSizeTooLarge { size: u32, half: u32 },
    #[error("weight {0} out of range (0-{MAX_WEIGHT})")]
    Weight(u32),
    #[error(
        "backend {backend} has {flows} live flows: drain it (xlb backend drain) and remove it when they are gone, or remove it with --force to re-hash them"
    )]
    LiveFlows { backend: BackendAddr, flows: u64 },
    #[error("all {MAX_SERVICES} service ids are in use")]
    TooManyServices,
    #[error("all {MAX_BACKENDS} backend indexes are in use")]
    TooManyBackends,
    #[error(
        "no room for a table of {size} slots (largest free region: {largest} slots; remove a service or raise xlbd --table-area)"
    )]
    TableAreaFull { size: u32, largest: u32 },
    #[error("data path: {0}")]
    Dataplane(#[from] DataplaneError),
}

/// The class of a [`StateError`], for mapping to an RPC status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    InvalidArgument,
    NotFound,
    AlreadyExists,
    ResourceExhausted,
    FailedPrecondition,
    Internal,
}

impl StateError {
    pub fn kind(&self) -> ErrorKind {
        use StateError::*;
        match self {
            Addr(_) | TableSizeNotPrime(_) | TableSizeTooLarge { .. } | Weight(_) => {
                ErrorKind::InvalidArgument
            }
            NoSuchService(_) | NoSuchBackend { .. } => ErrorKind::NotFound,
            ServiceExists(_) | BackendExists { .. } => ErrorKind::AlreadyExists,
            TooManyServices | TooManyBackends | TableAreaFull { .. } => {
                ErrorKind::ResourceExhausted
            }
            LiveFlows { .. } => ErrorKind::FailedPrecondition,
            Dataplane(_) => ErrorKind::Internal,
        }
    }
}

/// A service as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceInfo {
    pub service: ServiceAddr,
    pub id: u32,
    pub table_size: u32,
    /// Offset of the live table in `TABLES`.
    pub table_offset: u32,
    pub generation: u32,
    pub backends: u32,
}

/// A backend of a service, with its data-path counters when listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendInfo {
    pub service: ServiceAddr,
    pub backend: BackendAddr,
    pub index: u32,
    pub weight: u32,
    pub packets: u64,
    pub bytes: u64,
    /// Live request-direction flows in the connection table.
    pub flows: u64,
}

#[derive(Debug, Clone, Copy)]
struct BackendSlot {
    index: u32,
    weight: u32,
}

#[derive(Debug, Clone)]
struct Service {
    id: u32,
    table_size: u32,
    /// Offset of the service's region within each half of the table area.
    region: u32,
    /// Generation of the live table; 0 before the first publish.
    generation: u32,
    backends: BTreeMap<BackendAddr, BackendSlot>,
}

/// Services, backends and table regions, over a [`Dataplane`].
pub struct ControlState<D> {
    dp: D,
    /// Slots in each half of the table area.
    half: u32,
    services: BTreeMap<ServiceAddr, Service>,
    service_ids: IdPool,
    backend_indexes: IdPool,
    regions: Regions,
    timeouts: Timeouts,
}

impl<D: Dataplane> ControlState<D> {
    pub fn new(dp: D) -> Self {
        let half = dp.table_area() / 2;
        ControlState {
            dp,
            half,
            services: BTreeMap::new(),
            service_ids: IdPool::new(MAX_SERVICES, Reuse::Lowest),
            backend_indexes: IdPool::new(MAX_BACKENDS, Reuse::Oldest),
            regions: Regions::new(half),
            timeouts: DEFAULT_TIMEOUTS,
        }
    }

    /// Sets how long connection-table entries live (see `lb_common::conntrack`).
    pub fn with_timeouts(mut self, timeouts: Timeouts) -> Self {
        self.timeouts = timeouts;
        self
    }

    /// Deletes the connection-table entries that have expired; returns how many.
    pub fn sweep(&mut self) -> Result<usize, StateError> {
        let flows = self.dp.flows()?;
        let gone = conntrack::expired(&flows, monotonic_ns(), &self.timeouts);
        Ok(self.dp.remove_flows(&gone)?)
    }

    /// Live flows by backend index.
    fn live_flows(&self) -> Result<std::collections::HashMap<u32, u64>, StateError> {
        let flows = self.dp.flows()?;
        Ok(conntrack::live_counts(
            &flows,
            monotonic_ns(),
            &self.timeouts,
        ))
    }

    pub fn dataplane(&self) -> &D {
        &self.dp
    }

    /// The data path, for what lies outside services and backends (the egress devices).
    /// Service and backend maps must only be changed through this type's methods.
    pub fn dataplane_mut(&mut self) -> &mut D {
        &mut self.dp
    }

    /// Gives the data path back (dropping it detaches the XDP program).
    pub fn into_dataplane(self) -> D {
        self.dp
    }

    /// Adds a service with no backends (its table is all `NO_BACKEND`: packets to it are
    /// dropped and counted until a backend is added).
    pub fn add_service(
        &mut self,
        service: ServiceAddr,
        table_size: Option<u32>,
    ) -> Result<ServiceInfo, StateError> {
        let size = table_size.unwrap_or(DEFAULT_TABLE_SIZE);
        if self.services.contains_key(&service) {
            return Err(StateError::ServiceExists(service));
        }
        check_table_size(size)?;
        if size > self.half {
            return Err(StateError::TableSizeTooLarge {
                size,
                half: self.half,
            });
        }
        let id = self.service_ids.peek().ok_or(StateError::TooManyServices)?;
        let region = self.regions.find(size).ok_or(StateError::TableAreaFull {
            size,
            largest: self.regions.largest_free(),
        })?;
        let mut new = Service {
            id,
            table_size: size,
            region,
            generation: 0,
            backends: BTreeMap::new(),
        };
        new.generation = publish(&mut self.dp, self.half, &service, &new)?;
        self.service_ids.take();
        self.regions.take(size);
        self.services.insert(service, new);
        Ok(self.info(&service))
    }

    /// Removes a service and all its backends; its packets pass to the kernel from then on.
    pub fn remove_service(&mut self, service: &ServiceAddr) -> Result<(), StateError> {
        if !self.services.contains_key(service) {
            return Err(StateError::NoSuchService(*service));
        }
        self.dp.remove_service(&service.key())?;
        let s = self.services.remove(service).expect("checked above");
        self.regions.free(s.region, s.table_size);
        self.service_ids.free(s.id);
        for b in s.backends.values() {
            self.backend_indexes.free(b.index);
        }
        Ok(())
    }

    /// All services, in address order.
    pub fn services(&self) -> Vec<ServiceInfo> {
        self.services.keys().map(|s| self.info(s)).collect()
    }

    /// Adds a backend to a service (`weight` defaults to [`DEFAULT_WEIGHT`]).
    pub fn add_backend(
        &mut self,
        service: &ServiceAddr,
        backend: BackendAddr,
        weight: Option<u32>,
    ) -> Result<BackendInfo, StateError> {
        let weight = check_weight(weight.unwrap_or(DEFAULT_WEIGHT))?;
        let mut next = self.get(service)?;
        service.check_backend(&backend)?;
        if next.backends.contains_key(&backend) {
            return Err(StateError::BackendExists {
                service: *service,
                backend,
            });
        }
        let index = self
            .backend_indexes
            .peek()
            .ok_or(StateError::TooManyBackends)?;
        self.dp.put_backend(index, &backend.backend())?;
        next.backends.insert(backend, BackendSlot { index, weight });
        self.commit(service, next)?;
        self.backend_indexes.take();
        Ok(self.backend_info(service, &backend))
    }

    /// Removes a backend. Refused while it has live flows, unless `force`: then its
    /// connection-table entries are deleted once no table names it, and its flows re-hash
    /// to the remaining backends (their TCP connections break; UDP flows move).
    pub fn remove_backend(
        &mut self,
        service: &ServiceAddr,
        backend: &BackendAddr,
        force: bool,
    ) -> Result<(), StateError> {
        let mut next = self.get(service)?;
        let slot = next
            .backends
            .remove(backend)
            .ok_or(StateError::NoSuchBackend {
                service: *service,
                backend: *backend,
            })?;
        let live = self.live_flows()?.get(&slot.index).copied().unwrap_or(0);
        if live > 0 && !force {
            return Err(StateError::LiveFlows {
                backend: *backend,
                flows: live,
            });
        }
        self.commit(service, next)?;
        self.backend_indexes.free(slot.index);
        if force {
            let flows = self.dp.flows()?;
            self.dp
                .remove_flows(&conntrack::of_backend(&flows, slot.index))?;
        }
        Ok(())
    }

    /// Changes a backend's weight; 0 drains it (no new flows, existing ones stay).
    pub fn set_weight(
        &mut self,
        service: &ServiceAddr,
        backend: &BackendAddr,
        weight: u32,
    ) -> Result<BackendInfo, StateError> {
        let weight = check_weight(weight)?;
        let mut next = self.get(service)?;
        let slot = next
            .backends
            .get_mut(backend)
            .ok_or(StateError::NoSuchBackend {
                service: *service,
                backend: *backend,
            })?;
        slot.weight = weight;
        self.commit(service, next)?;
        Ok(self.backend_info(service, backend))
    }

    /// Backends of one service, or of all, with their counters and live flows.
    pub fn backends(&self, service: Option<&ServiceAddr>) -> Result<Vec<BackendInfo>, StateError> {
        let services: Vec<&ServiceAddr> = match service {
            Some(s) => {
                self.get(s)?;
                vec![s]
            }
            None => self.services.keys().collect(),
        };
        let flows = self.live_flows()?;
        let mut out = Vec::new();
        for s in services {
            for b in self.services[s].backends.keys() {
                let mut info = self.backend_info(s, b);
                let c = self.dp.backend_stats(info.index)?;
                info.packets = c.packets;
                info.bytes = c.bytes;
                info.flows = flows.get(&info.index).copied().unwrap_or(0);
                out.push(info);
            }
        }
        Ok(out)
    }

    /// Global counters by name (`lb_common::stats::STAT_NAMES`).
    pub fn counters(&self) -> Result<Vec<(&'static str, Counter)>, StateError> {
        let stats = self.dp.stats()?;
        Ok(STAT_NAMES.iter().copied().zip(stats).collect())
    }

    /// Number of services and of backends (over all services).
    pub fn counts(&self) -> (u32, u32) {
        let backends = self
            .services
            .values()
            .map(|s| s.backends.len())
            .sum::<usize>();
        (self.services.len() as u32, backends as u32)
    }

    fn get(&self, service: &ServiceAddr) -> Result<Service, StateError> {
        self.services
            .get(service)
            .cloned()
            .ok_or(StateError::NoSuchService(*service))
    }

    /// Publishes `next` as the service's new state and keeps it once the flip is done.
    fn commit(&mut self, service: &ServiceAddr, mut next: Service) -> Result<(), StateError> {
        next.generation = publish(&mut self.dp, self.half, service, &next)?;
        self.services.insert(*service, next);
        Ok(())
    }

    fn info(&self, service: &ServiceAddr) -> ServiceInfo {
        let s = &self.services[service];
        ServiceInfo {
            service: *service,
            id: s.id,
            table_size: s.table_size,
            table_offset: table_offset(self.half, s.region, s.generation),
            generation: s.generation,
            backends: s.backends.len() as u32,
        }
    }

    fn backend_info(&self, service: &ServiceAddr, backend: &BackendAddr) -> BackendInfo {
        let slot = self.services[service].backends[backend];
        BackendInfo {
            service: *service,
            backend: *backend,
            index: slot.index,
            weight: slot.weight,
            packets: 0,
            bytes: 0,
            flows: 0,
        }
    }
}

/// Writes the table of `s` into the half its next generation uses, then flips the service
/// to it. Returns the new generation.
fn publish<D: Dataplane>(
    dp: &mut D,
    half: u32,
    service: &ServiceAddr,
    s: &Service,
) -> Result<u32, DataplaneError> {
    let generation = s.generation.wrapping_add(1);
    let table_offset = table_offset(half, s.region, generation);
    let entries: Vec<TableEntry> = s
        .backends
        .iter()
        .map(|(addr, b)| TableEntry {
            addr: *addr,
            index: b.index,
            weight: b.weight,
        })
        .collect();
    dp.write_table(table_offset, &build_table(&entries, s.table_size))?;
    let value = ServiceValue {
        id: s.id,
        table_offset,
        table_size: s.table_size,
        generation,
    };
    dp.put_service(&service.key(), &value)?;
    Ok(generation)
}

/// Where generation `generation` of a table lives: odd generations in the first half,
/// even ones in the second (so consecutive generations alternate, also across wrap-around).
fn table_offset(half: u32, region: u32, generation: u32) -> u32 {
    if generation % 2 == 1 {
        region
    } else {
        half + region
    }
}

/// Checks a weight (0 drains).
pub fn check_weight(weight: u32) -> Result<u32, StateError> {
    if weight > MAX_WEIGHT {
        return Err(StateError::Weight(weight));
    }
    Ok(weight)
}

/// Checks what can be known of a table size without the table area: it is a prime.
pub fn check_table_size(size: u32) -> Result<u32, StateError> {
    if !is_prime(size) {
        return Err(StateError::TableSizeNotPrime(size));
    }
    Ok(size)
}

/// Trial division; table sizes are at most a few million.
pub fn is_prime(n: u32) -> bool {
    if n < 2 {
        return false;
    }
    let n = u64::from(n);
    (2..).take_while(|d| d * d <= n).all(|d| n % d != 0)
}

#[cfg(test)]
mod tests;

//! The control plane's state: services, their backends and weights, and where each
//! service's table lives. Every change goes to the data path through [`Dataplane`] in an
//! order that never shows it a half-made state:
//!
//! 1. a new backend's `BACKENDS` entry is written before any table names it;
//! 2. the service's new table is written into the INACTIVE half of its region (the table
//!    area is split into two halves; a service owns the same `table_size` slots at the
//!    same offset in each);
//! 3. the `SERVICES` entry is replaced in one update that points at the new half and bumps
//!    `generation` (the flip);
//! 4. a grace period starts: once it has ended, no program that read the old `SERVICES`
//!    entry is still running, so nothing reads the half the flip retired. The next change
//!    of the service waits for it (at once, when it has already ended) before step 2.
//!
//! Step 2 writes only the slots in which the new table differs from what that half holds
//! now (its table of two changes ago), read back from the map, in one batch: a weight
//! change of one backend in 100 writes about 1% of the slots.
//!
//! A request is validated in full before anything is written; if the data path refuses a
//! write half way, the in-memory state is left as it was (what was written is unreferenced).
//! Backend indexes are global (one per service/backend pair); a freed index is reused only
//! after every never-used one, and then oldest-freed first (see [`Reuse::Oldest`]), and its
//! `BACKENDS` entry is rewritten only after the grace period of the change that freed it,
//! as a removed service's region is reused only after the grace period of its removal.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use lb_common::conntrack::Timeouts;
use lb_common::stats::{Counter, STAT_NAMES};
use lb_common::{MAX_BACKENDS, MAX_SERVICES, ServiceValue};

use crate::addr::{AddrError, BackendAddr, ServiceAddr};
use crate::affinity::{Affinity, AffinityError};
use crate::alloc::{IdPool, Regions, Reuse};
use crate::check::{AllDown, CheckError, CheckSettings};
use crate::conntrack::{self, DEFAULT_TIMEOUTS, monotonic_ns};
use crate::dataplane::{Dataplane, DataplaneError, GraceTicket};
use crate::forwarding::{Forwarding, ForwardingError};
use crate::health::{CheckResult, Health, HealthState};
use crate::limits::{self, LimitError, SLOTS_PER_BACKEND, WEIGHT};
use crate::table::{TableEntry, build_table};

mod apply;
mod persist;
pub use apply::ApplyError;
pub use persist::{ControlSnapshot, DaemonSettings, PersistError, STATE_FILE, Saved, Store};

pub use crate::limits::{DEFAULT_TABLE_SIZE, DEFAULT_WEIGHT, MAX_WEIGHT, is_prime};

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
    #[error(transparent)]
    Limit(#[from] LimitError),
    #[error(transparent)]
    Check(#[from] CheckError),
    #[error(transparent)]
    Affinity(#[from] AffinityError),
    #[error(transparent)]
    Forwarding(#[from] ForwardingError),
    #[error(
        "table size {size} does not fit in half the table area ({half} slots; see xlbd --table-area)"
    )]
    TableSizeTooLarge { size: u32, half: u32 },
    #[error(
        "service {service} has no room for a backend more: its table of {size} slots takes {room} at {per} slots per backend, as Maglev needs (re-create it with --table-size {need} or more)"
    )]
    TableFull {
        service: ServiceAddr,
        size: u32,
        room: u32,
        per: u32,
        /// The smallest table with room for one backend more, as text (it may not exist).
        need: String,
    },
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
    #[error("the saved state cannot be restored: {0}")]
    Restore(String),
    #[error("the change was made but not saved: {0}")]
    Persist(#[from] PersistError),
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
            Addr(_)
            | Limit(_)
            | Check(_)
            | Affinity(_)
            | Forwarding(_)
            | TableSizeTooLarge { .. } => ErrorKind::InvalidArgument,
            NoSuchService(_) | NoSuchBackend { .. } => ErrorKind::NotFound,
            ServiceExists(_) | BackendExists { .. } => ErrorKind::AlreadyExists,
            TooManyServices | TooManyBackends | TableAreaFull { .. } => {
                ErrorKind::ResourceExhausted
            }
            LiveFlows { .. } | TableFull { .. } | Restore(_) => ErrorKind::FailedPrecondition,
            Dataplane(_) | Persist(_) => ErrorKind::Internal,
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
    pub check: CheckSettings,
    pub affinity: Affinity,
    pub forwarding: Forwarding,
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
    /// New flows the data path has given the backend.
    pub new_flows: u64,
    /// What `backend list` shows: `draining` (weight 0), else the health verdict.
    pub state: &'static str,
    /// When `state` last changed (or the daemon started).
    pub since: SystemTime,
    pub health: Health,
}

/// Everything a metrics scrape reports, read at once (see [`ControlState::usage`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Usage {
    pub services: Vec<ServiceInfo>,
    pub backends: Vec<BackendInfo>,
    /// Global counters by name, in `STAT_NAMES` order.
    pub counters: Vec<(&'static str, Counter)>,
    /// Entries in the connection table (both directions of every flow, expired ones until
    /// the next sweep).
    pub flow_entries: u64,
}

#[derive(Debug, Clone)]
struct BackendSlot {
    index: u32,
    weight: u32,
    health: Health,
    /// When the shown state (see [`shown_state`]) last changed.
    since: SystemTime,
    /// Bumped whenever the backend's checks start anew, so that a result of an older
    /// check (settings since changed, or the backend removed and added again) is ignored.
    epoch: u64,
}

/// `draining` for a backend of weight 0 (whatever its health: a drained backend stays
/// drained), else its health verdict.
pub fn shown_state(weight: u32, health: HealthState) -> &'static str {
    if weight == 0 {
        "draining"
    } else {
        health.name()
    }
}

/// A backend to check, as the checker needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckTarget {
    pub service: ServiceAddr,
    pub backend: BackendAddr,
    /// Where the probe goes: the backend, or the check address/port.
    pub target: SocketAddr,
    pub settings: CheckSettings,
    pub epoch: u64,
}

/// What one check result changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub from: HealthState,
    pub to: HealthState,
    /// Whether the service now fails open (every backend that is not drained is down);
    /// `None` when that did not change.
    pub fail_open: Option<bool>,
    /// Whether every backend that is not drained is down now.
    pub all_down: bool,
}

#[derive(Debug, Clone)]
struct Service {
    id: u32,
    table_size: u32,
    /// Offset of the service's region within each half of the table area.
    region: u32,
    /// Generation of the live table; 0 before the first publish.
    generation: u32,
    /// The grace period that must end before the inactive half is written: the one
    /// started after the last flip (or, for a new service, after the last removal).
    retired: Option<GraceTicket>,
    backends: BTreeMap<BackendAddr, BackendSlot>,
    check: CheckSettings,
    affinity: Affinity,
    forwarding: Forwarding,
}

/// What the last table change cost, for benchmarks and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableWrite {
    /// Slots written (those that differed from what the half held).
    pub slots_written: usize,
    /// Building the Maglev table.
    pub build: Duration,
    /// Waiting for the grace period of the previous flip (zero when it had ended, or when
    /// no slot changed).
    pub wait: Duration,
    /// Reading the half back, writing the changed slots and flipping the service.
    pub write: Duration,
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
    /// Where every accepted change is saved (none in tests that do not persist).
    store: Option<Store>,
    /// Slots a table needs per backend: [`SLOTS_PER_BACKEND`] (see `limits`).
    slots_per_backend: u32,
    /// The grace period started after the last service removal: a freed region is
    /// written again only after it.
    last_removal: Option<GraceTicket>,
    /// Freed backend indexes and the grace period after which their `BACKENDS` entry may
    /// be rewritten.
    freed_indexes: HashMap<u32, GraceTicket>,
    last_write: Option<TableWrite>,
    /// The last check epoch given out (see `BackendSlot::epoch`).
    epochs: u64,
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
            store: None,
            slots_per_backend: SLOTS_PER_BACKEND,
            last_removal: None,
            freed_indexes: HashMap::new(),
            last_write: None,
            epochs: 0,
        }
    }

    /// Saves the state to `store` now and after every accepted change from then on.
    pub fn with_store(mut self, store: Store) -> Result<Self, StateError> {
        store.save(self.snapshot())?;
        self.store = Some(store);
        Ok(self)
    }

    /// Saves the state after an accepted change.
    fn save(&self) -> Result<(), StateError> {
        if let Some(store) = &self.store {
            store.save(self.snapshot())?;
        }
        Ok(())
    }

    /// Lets tables have fewer slots per backend than Maglev needs (0: any number of
    /// backends), so unit tests about other things can use tables of a few slots.
    #[cfg(test)]
    pub(crate) fn with_slots_per_backend(mut self, slots: u32) -> Self {
        self.slots_per_backend = slots;
        self
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

    /// What the last table change cost (`None` before the first).
    pub fn last_table_write(&self) -> Option<TableWrite> {
        self.last_write
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

    /// Adds a service. Refused when its VIP does not name one host or is
    /// the address of a backend, or its table size is not a prime with room for one backend.
    /// The service starts with no backends (its table is all `NO_BACKEND`: packets to it are
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
        service.check_vip()?;
        for s in self.services.values() {
            for backend in s.backends.keys() {
                service.check_not_vip_of(backend)?;
            }
        }
        limits::check_table_size_with(size, self.slots_per_backend)?;
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
        let new = Service {
            id,
            table_size: size,
            region,
            generation: 0,
            // The region may have been a removed service's, whose packets may still read it.
            retired: self.last_removal,
            backends: BTreeMap::new(),
            check: CheckSettings::default(),
            affinity: Affinity::None,
            forwarding: Forwarding::Nat,
        };
        self.commit(&service, new)?;
        self.service_ids.take();
        self.regions.take(size);
        self.save()?;
        Ok(self.info(&service))
    }

    /// Removes a service and all its backends, and its flows' connection-table entries; its
    /// packets pass to the kernel from then on.
    pub fn remove_service(&mut self, service: &ServiceAddr) -> Result<(), StateError> {
        if !self.services.contains_key(service) {
            return Err(StateError::NoSuchService(*service));
        }
        self.dp.remove_service(&service.key())?;
        let ticket = self.dp.start_grace_period();
        self.last_removal = Some(ticket);
        let s = self.services.remove(service).expect("checked above");
        self.regions.free(s.region, s.table_size);
        self.service_ids.free(s.id);
        for b in s.backends.values() {
            self.backend_indexes.free(b.index);
            self.freed_indexes.insert(b.index, ticket);
        }
        self.save()?;
        // The data path looks a packet's flow up before the services map, so the service's
        // entries would go on forwarding its connections until they expire. Deleted once
        // no program run can still have found the service (and be adding an entry); the
        // id is not reused before then, as this runs under the state's lock.
        self.dp.wait_grace_period(ticket)?;
        let flows = self.dp.flows()?;
        self.dp.remove_flows(&conntrack::of_service(&flows, s.id))?;
        Ok(())
    }

    /// All services, in address order.
    pub fn services(&self) -> Vec<ServiceInfo> {
        self.services.keys().map(|s| self.info(s)).collect()
    }

    /// Adds a backend to a service (`weight` defaults to [`DEFAULT_WEIGHT`]). Refused when it
    /// does not name one host, has the address of any service's VIP, or the service's table
    /// has no room for it ([`SLOTS_PER_BACKEND`] slots per backend, drained ones included).
    pub fn add_backend(
        &mut self,
        service: &ServiceAddr,
        backend: BackendAddr,
        weight: Option<u32>,
    ) -> Result<BackendInfo, StateError> {
        let weight = check_weight(weight.unwrap_or(DEFAULT_WEIGHT))?;
        let mut next = self.get(service)?;
        backend.check_host()?;
        service.check_backend(&backend)?;
        for other in self.services.keys() {
            other.check_not_vip_of(&backend)?;
        }
        if next.backends.contains_key(&backend) {
            return Err(StateError::BackendExists {
                service: *service,
                backend,
            });
        }
        let room = limits::backends_room(next.table_size, self.slots_per_backend);
        if next.backends.len() as u64 >= u64::from(room) {
            let more = next.backends.len() as u32 + 1;
            return Err(StateError::TableFull {
                service: *service,
                size: next.table_size,
                room,
                per: self.slots_per_backend,
                need: limits::table_size_for(more, self.slots_per_backend)
                    .map_or_else(|| "(none fits)".into(), |n| n.to_string()),
            });
        }
        let index = self
            .backend_indexes
            .peek()
            .ok_or(StateError::TooManyBackends)?;
        // A reused index: packets that read the table that last named it may still run.
        if let Some(&ticket) = self.freed_indexes.get(&index) {
            self.dp.wait_grace_period(ticket)?;
        }
        self.dp.put_backend(index, &backend.backend())?;
        let slot = BackendSlot {
            index,
            weight,
            health: Health::new(next.check.is_on()),
            since: SystemTime::now(),
            epoch: self.epochs + 1,
        };
        next.backends.insert(backend, slot);
        self.commit(service, next)?;
        self.epochs += 1;
        self.backend_indexes.take();
        self.save()?;
        self.freed_indexes.remove(&index);
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
        let ticket = self.commit(service, next)?;
        self.backend_indexes.free(slot.index);
        self.save()?;
        self.freed_indexes.insert(slot.index, ticket);
        if force {
            // After the grace period no running program can still take the backend from
            // the old table and add a flow for it behind our back.
            self.dp.wait_grace_period(ticket)?;
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
        if (slot.weight == 0) != (weight == 0) {
            slot.since = SystemTime::now();
        }
        slot.weight = weight;
        self.commit(service, next)?;
        self.save()?;
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
        self.backends_with(services, &flows)
    }

    /// `services`' backends with their counters and live flows (from `flows`).
    fn backends_with(
        &self,
        services: Vec<&ServiceAddr>,
        flows: &std::collections::HashMap<u32, u64>,
    ) -> Result<Vec<BackendInfo>, StateError> {
        let mut out = Vec::new();
        for s in services {
            for b in self.services[s].backends.keys() {
                let mut info = self.backend_info(s, b);
                let c = self.dp.backend_stats(info.index)?;
                info.packets = c.packets;
                info.bytes = c.bytes;
                info.flows = flows.get(&info.index).copied().unwrap_or(0);
                info.new_flows = self
                    .dp
                    .backend_stats(lb_common::NEW_FLOWS_BASE + info.index)?
                    .packets;
                out.push(info);
            }
        }
        Ok(out)
    }

    /// What a metrics scrape reports: services, every backend with its counters and live
    /// flows, the global counters and the connection table's entries, read with one walk
    /// of the connection table (as `backends` does).
    pub fn usage(&self) -> Result<Usage, StateError> {
        let flows = self.dp.flows()?;
        let live = conntrack::live_counts(&flows, monotonic_ns(), &self.timeouts);
        Ok(Usage {
            services: self.services(),
            backends: self.backends_with(self.services.keys().collect(), &live)?,
            counters: self.counters()?,
            flow_entries: flows.len() as u64,
        })
    }

    /// Sets how the backends of `service` are checked. Their verdicts start anew: all
    /// `checking` when the service did not check before, all `up` with `--check none`,
    /// else each keeps its verdict and counts from 0 with the new settings. The table is
    /// published again only when what it holds changes (e.g. down backends return with
    /// `none`).
    pub fn set_check(
        &mut self,
        service: &ServiceAddr,
        check: CheckSettings,
    ) -> Result<ServiceInfo, StateError> {
        let mut next = self.get(service)?;
        check.validate(service)?;
        let was_on = next.check.is_on();
        let epoch = self.epochs + 1;
        let now = SystemTime::now();
        for b in next.backends.values_mut() {
            let before = shown_state(b.weight, b.health.state);
            b.health = if !check.is_on() || !was_on {
                Health::new(check.is_on())
            } else {
                Health {
                    successes: 0,
                    failures: 0,
                    ..b.health.clone()
                }
            };
            b.epoch = epoch;
            if shown_state(b.weight, b.health.state) != before {
                b.since = now;
            }
        }
        next.check = check;
        if table_entries(&self.services[service]) != table_entries(&next) {
            self.commit(service, next)?;
        } else {
            self.services.insert(*service, next);
        }
        self.epochs = epoch;
        self.save()?;
        Ok(self.info(service))
    }

    /// Sets the session affinity of `service`. The new setting reaches the data path in
    /// one update of the service's entry (its table stays as it is); affinity entries
    /// made before it are used again only under `client-ip` and only while they are
    /// younger than the new timeout.
    pub fn set_affinity(
        &mut self,
        service: &ServiceAddr,
        affinity: Affinity,
    ) -> Result<ServiceInfo, StateError> {
        let mut next = self.get(service)?;
        if next.affinity != affinity {
            next.affinity = affinity;
            self.commit(service, next)?;
            self.save()?;
        }
        Ok(self.info(service))
    }

    /// Sets how `service`'s packets reach its backends, in one update of its entry (its
    /// table stays as it is). The connection table's entries carry over: a request entry
    /// names the backend in every mode; NAT's reply entries expire unused under DSR.
    pub fn set_forwarding(
        &mut self,
        service: &ServiceAddr,
        forwarding: Forwarding,
    ) -> Result<ServiceInfo, StateError> {
        let mut next = self.get(service)?;
        if next.forwarding != forwarding {
            next.forwarding = forwarding;
            self.commit(service, next)?;
            self.save()?;
        }
        Ok(self.info(service))
    }

    /// Every backend of a service that checks, and where its probe goes.
    pub fn check_targets(&self) -> Vec<CheckTarget> {
        let mut out = Vec::new();
        for (addr, s) in self.services.iter().filter(|(_, s)| s.check.is_on()) {
            for (b, slot) in &s.backends {
                let target = SocketAddr::new(
                    s.check.addr.unwrap_or(b.ip()),
                    s.check.port.unwrap_or(b.0.port()),
                );
                out.push(CheckTarget {
                    service: *addr,
                    backend: *b,
                    target,
                    settings: s.check.clone(),
                    epoch: slot.epoch,
                });
            }
        }
        out
    }

    /// Counts one check result of `backend` in (ignored when it belongs to an older
    /// epoch, or the backend is gone). When the verdict changes, the service's table is
    /// published again if what it holds changed, and the state is saved (a down backend
    /// stays down across a restart). Returns the change, if any.
    pub fn record_check(
        &mut self,
        service: &ServiceAddr,
        backend: &BackendAddr,
        epoch: u64,
        result: CheckResult,
    ) -> Result<Option<Transition>, StateError> {
        let Some(s) = self.services.get(service) else {
            return Ok(None);
        };
        let Some(slot) = s.backends.get(backend).filter(|b| b.epoch == epoch) else {
            return Ok(None);
        };
        if !s.check.is_on() {
            return Ok(None);
        }
        let from = slot.health.state;
        let mut health = slot.health.clone();
        let Some(to) = health.record(result, s.check.rise, s.check.fall) else {
            let s = self.services.get_mut(service).expect("checked above");
            s.backends.get_mut(backend).expect("checked above").health = health;
            return Ok(None);
        };
        let mut next = s.clone();
        let slot = next.backends.get_mut(backend).expect("checked above");
        slot.health = health;
        if slot.weight > 0 {
            slot.since = SystemTime::now();
        }
        let open_before = fails_open(s);
        let (open, all) = (fails_open(&next), all_down(&next));
        if table_entries(s) != table_entries(&next) {
            self.commit(service, next)?;
        } else {
            self.services.insert(*service, next);
        }
        self.save()?;
        Ok(Some(Transition {
            from,
            to,
            fail_open: (open != open_before).then_some(open),
            all_down: all,
        }))
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

    /// The addresses of every backend of a `dsr-l2` service (whose MACs the data path
    /// takes from the kernel's neighbour table; see `neigh`). Reads no map.
    pub fn dsr_l2_backends(&self) -> std::collections::BTreeSet<std::net::IpAddr> {
        self.services
            .values()
            .filter(|s| s.forwarding == Forwarding::DsrL2)
            .flat_map(|s| s.backends.keys().map(|b| b.ip()))
            .collect()
    }

    /// Every backend of every service as the announcer sees it (`crate::announce`):
    /// `(VIP, weight, health)`; a service without backends as `(VIP, 0, down)`. Reads no
    /// map, so it is cheap to call often.
    pub fn announce_view(&self) -> Vec<(std::net::IpAddr, u32, HealthState)> {
        let mut out = Vec::new();
        for (addr, s) in &self.services {
            if s.backends.is_empty() {
                out.push((addr.ip, 0, HealthState::Down));
            }
            for slot in s.backends.values() {
                out.push((addr.ip, slot.weight, slot.health.state));
            }
        }
        out
    }

    fn get(&self, service: &ServiceAddr) -> Result<Service, StateError> {
        self.services
            .get(service)
            .cloned()
            .ok_or(StateError::NoSuchService(*service))
    }

    /// Publishes `next` as the service's new state and keeps it once the flip is done;
    /// returns the grace period that retires the old half.
    fn commit(
        &mut self,
        service: &ServiceAddr,
        mut next: Service,
    ) -> Result<GraceTicket, StateError> {
        let (generation, ticket, cost) = publish(&mut self.dp, self.half, service, &next)?;
        tracing::debug!(
            "{service}: table generation {generation}, {} slots written in {:?} (waited {:?}, built in {:?})",
            cost.slots_written,
            cost.write,
            cost.wait,
            cost.build
        );
        next.generation = generation;
        next.retired = Some(ticket);
        self.services.insert(*service, next);
        self.last_write = Some(cost);
        Ok(ticket)
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
            check: s.check.clone(),
            affinity: s.affinity,
            forwarding: s.forwarding,
        }
    }

    fn backend_info(&self, service: &ServiceAddr, backend: &BackendAddr) -> BackendInfo {
        let slot = &self.services[service].backends[backend];
        BackendInfo {
            service: *service,
            backend: *backend,
            index: slot.index,
            weight: slot.weight,
            packets: 0,
            bytes: 0,
            flows: 0,
            new_flows: 0,
            state: shown_state(slot.weight, slot.health.state),
            since: slot.since,
            health: slot.health.clone(),
        }
    }
}

/// Writes the table of `s` into the half its next generation uses, then flips the service
/// to it. Returns the new generation, the grace period that retires the old half, and
/// what it cost.
///
/// Why no packet reads a half while it is written: a packet reads the `SERVICES` entry and
/// then a slot of the half it names, all within one run of the XDP program, and XDP
/// programs run inside an RCU read-side critical section (driver NAPI poll, generic XDP
/// and BPF_PROG_TEST_RUN all hold it). The half written here was last live before the
/// previous flip; `s.retired` is the grace period started right after that flip, and an
/// RCU grace period ends only after every read-side section that was running when it
/// began. So once it has ended, every program that could have read the old entry has
/// returned, and later runs read the new entry, which names the other half.
fn publish<D: Dataplane>(
    dp: &mut D,
    half: u32,
    service: &ServiceAddr,
    s: &Service,
) -> Result<(u32, GraceTicket, TableWrite), DataplaneError> {
    let generation = s.generation.wrapping_add(1);
    let table_offset = table_offset(half, s.region, generation);
    let entries = table_entries(s);
    let t = Instant::now();
    let table = build_table(&entries, s.table_size);
    let build = t.elapsed();

    // Reading the retired half is harmless while packets may still read it too; only a
    // write must wait, so a change that finds its table already there does not.
    let t = Instant::now();
    let held = dp.read_table(table_offset, s.table_size)?;
    let changed = changed_slots(table_offset, &held, &table);
    let mut wait = Duration::ZERO;
    if !changed.is_empty() {
        if let Some(ticket) = s.retired {
            let w = Instant::now();
            dp.wait_grace_period(ticket)?;
            wait = w.elapsed();
        }
        dp.write_slots(&changed)?;
    }
    let (affinity, affinity_timeout_s) = s.affinity.to_value();
    let value = ServiceValue {
        id: s.id,
        table_offset,
        table_size: s.table_size,
        generation,
        affinity,
        affinity_timeout_s,
        forwarding: s.forwarding.to_value(),
        _pad: 0,
    };
    dp.put_service(&service.key(), &value)?;
    let write = t.elapsed() - wait;
    let ticket = dp.start_grace_period();
    Ok((
        generation,
        ticket,
        TableWrite {
            slots_written: changed.len(),
            build,
            wait,
            write,
        },
    ))
}

/// The `(slot, value)` pairs where `new` differs from `held`, slots counted from `offset`.
fn changed_slots(offset: u32, held: &[u32], new: &[u32]) -> Vec<(u32, u32)> {
    (offset..)
        .zip(held.iter().zip(new))
        .filter(|(_, (h, n))| h != n)
        .map(|(i, (_, n))| (i, *n))
        .collect()
}

/// What the table of `s` is built from: every backend with its weight, except that a down
/// backend (of a service that checks) counts as weight 0, unless every backend that is not
/// drained is down and the service fails open (see [`AllDown`]).
fn table_entries(s: &Service) -> Vec<TableEntry> {
    let fail_open = fails_open(s);
    s.backends
        .iter()
        .map(|(addr, b)| TableEntry {
            addr: *addr,
            index: b.index,
            weight: if fail_open || serves(s, b) {
                b.weight
            } else {
                0
            },
        })
        .collect()
}

/// Whether `b` gets table slots by its own weight and health.
fn serves(s: &Service, b: &BackendSlot) -> bool {
    b.weight > 0 && !(s.check.is_on() && b.health.state == HealthState::Down)
}

/// Whether every backend of `s` that is not drained is down (and there is one).
fn all_down(s: &Service) -> bool {
    s.check.is_on()
        && s.backends.values().any(|b| b.weight > 0)
        && !s.backends.values().any(|b| serves(s, b))
}

/// Whether the table of `s` holds its down backends: all are down and it fails open.
fn fails_open(s: &Service) -> bool {
    all_down(s) && s.check.all_down == AllDown::FailOpen
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
    Ok(WEIGHT.check(u64::from(weight))?)
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod health_tests;

//! `xlb apply` on the daemon side: bringing the running services to a configuration's with
//! the fewest table writes (one per changed service, none for an unchanged one).
//!
//! All or nothing for every error an operator can make: the plan is first run in full over
//! a copy of the bookkeeping (ids, indexes, table regions, a snapshot of the connection
//! table) on a [`Scratch`] data path that writes nothing, through the same code as the real
//! run. Only when every service of the plan passes is it run over the maps. The real run
//! can then only fail on a refused map write (an internal error): the services before the
//! failing one are applied, each of them atomically (one flip), and the error says so.
//! Doing this in the daemon, under the state's lock, is what makes the check hold: a
//! client-side plan of several RPCs could be overtaken by another client between them.

use std::collections::HashMap;

use lb_common::{Backend, FlowKey, FlowValue, ServiceKey, ServiceValue, stats::Counter};

use super::*;
use crate::config::{self, ApplyOptions, Change, ServicePlan, ServiceSpec, Services};

/// Why an apply was refused: the service (and backend) at fault and the reason.
#[derive(Debug, thiserror::Error)]
#[error("service \"{service}\": {source}")]
pub struct ApplyError {
    pub service: ServiceAddr,
    /// The backend at fault, when one is.
    pub backend: Option<BackendAddr>,
    /// Boxed: a `Result` of it stays small.
    #[source]
    pub source: Box<StateError>,
}

impl<D: Dataplane> ControlState<D> {
    /// The running services as a configuration's (what `xlb config dump` writes).
    pub fn running(&self) -> Services {
        self.services
            .iter()
            .map(|(addr, s)| {
                let backends = s.backends.iter().map(|(b, x)| (*b, x.weight)).collect();
                let spec = ServiceSpec {
                    table_size: s.table_size,
                    backends,
                    affinity: s.affinity,
                    forwarding: s.forwarding,
                    check: config::running_check(&s.check),
                };
                (*addr, spec)
            })
            .collect()
    }

    /// Makes the running services `desired` (see [`config::plan`] for what happens to the
    /// services and backends absent from it) and returns the changes, in the order made.
    /// With `opts.dry_run`, validates the same way and changes nothing.
    ///
    /// A changed service gets one table write and one flip, whatever changed in it (backends
    /// added, removed, re-weighted, its table size); a new service's backends are in its
    /// first table. A table-size change keeps the service's id, counters and backend
    /// indexes (so its established flows stay): the new table goes into a new region of
    /// the inactive half, then the flip.
    ///
    /// # Errors
    ///
    /// The first service that cannot be applied (no table room, no id or index left, a
    /// pruned backend with live flows without `force`, ...): nothing is changed.
    pub fn apply(
        &mut self,
        desired: &Services,
        opts: ApplyOptions,
    ) -> Result<Vec<Change>, ApplyError> {
        let plans = config::plan(&self.running(), desired, opts);
        if plans.is_empty() {
            return Ok(Vec::new());
        }
        let removes = plans.iter().any(|p| match (&p.before, &p.after) {
            (Some(b), Some(a)) => b.backends.keys().any(|k| !a.backends.contains_key(k)),
            (Some(_), None) => true,
            _ => false,
        });
        let flows = if removes {
            self.dp.flows().map_err(|e| ApplyError {
                service: plans[0].service,
                backend: None,
                source: Box::new(e.into()),
            })?
        } else {
            Vec::new()
        };
        let mut scratch = ControlState::new(Scratch::new(self.dp.table_area(), flows))
            .with_timeouts(self.timeouts);
        scratch.services = self.services.clone();
        scratch.service_ids = self.service_ids.clone();
        scratch.backend_indexes = self.backend_indexes.clone();
        scratch.regions = self.regions.clone();
        scratch.slots_per_backend = self.slots_per_backend;
        scratch.execute(&plans, opts.force, true)?;
        if !opts.dry_run {
            // Validated: the live-flow checks are not repeated (a flow that started since
            // is cut only with `force`, as it would be by `xlb backend remove`).
            let done = self.execute(&plans, opts.force, false);
            // What was applied is saved, also when a map write failed half way.
            let saved = self.save().map_err(|e| ApplyError {
                service: plans[0].service,
                backend: None,
                source: Box::new(e),
            });
            done?;
            saved?;
        }
        Ok(config::changes(&plans))
    }

    fn execute(
        &mut self,
        plans: &[ServicePlan],
        force: bool,
        check_live: bool,
    ) -> Result<(), ApplyError> {
        for p in plans {
            match &p.after {
                Some(after) => {
                    // A change of the check alone writes no table here (set_check writes
                    // one only if the check changes what it holds); an affinity change is
                    // in the service entry put_spec writes.
                    let same_table = p.before.as_ref().is_some_and(|b| {
                        b.table_size == after.table_size
                            && b.backends == after.backends
                            && b.affinity == after.affinity
                    });
                    if !same_table {
                        self.put_spec(&p.service, after, force, check_live)?;
                    }
                    self.put_check(&p.service, &after.check)?;
                }
                None => self.remove_spec(&p.service, force, check_live)?,
            }
        }
        Ok(())
    }

    /// Gives `service` the health check `want` when it differs, as `xlb service set-check`
    /// does (after its backends are in place, so they start `checking` with it).
    fn put_check(&mut self, service: &ServiceAddr, want: &CheckSettings) -> Result<(), ApplyError> {
        let current = self
            .services
            .get(service)
            .map(|s| config::running_check(&s.check));
        if current.as_ref() == Some(want) {
            return Ok(());
        }
        self.set_check(service, want.clone())
            .map(drop)
            .map_err(|e| ApplyError {
                service: *service,
                backend: None,
                source: Box::new(e),
            })
    }

    /// Gives `service` (new or not) the table size and the backend set of `want` in one
    /// table write and one flip. Backends not in `want` are removed (their flows deleted
    /// when `force`); with `check_live` and without `force`, refused while one has live
    /// flows. New backends never take the index of one removed here (indexes are freed
    /// after the flip).
    fn put_spec(
        &mut self,
        service: &ServiceAddr,
        want: &ServiceSpec,
        force: bool,
        check_live: bool,
    ) -> Result<(), ApplyError> {
        let err = |backend: Option<BackendAddr>, source: StateError| ApplyError {
            service: *service,
            backend,
            source: Box::new(source),
        };
        let size = limits::check_table_size_with(want.table_size, self.slots_per_backend)
            .map_err(|e| err(None, e.into()))?;
        if size > self.half {
            let half = self.half;
            return Err(err(None, StateError::TableSizeTooLarge { size, half }));
        }
        let current = self.services.get(service).cloned();
        if current.is_none() {
            service.check_vip().map_err(|e| err(None, e.into()))?;
            for backend in self.services.values().flat_map(|s| s.backends.keys()) {
                service
                    .check_not_vip_of(backend)
                    .map_err(|e| err(Some(*backend), e.into()))?;
            }
        }
        let mut regions = self.regions.clone();
        let mut indexes = self.backend_indexes.clone();
        let mut next = match &current {
            Some(s) => s.clone(),
            None => Service {
                id: self
                    .service_ids
                    .peek()
                    .ok_or(err(None, StateError::TooManyServices))?,
                table_size: 0,
                region: 0,
                generation: 0,
                retired: self.last_removal,
                check: CheckSettings::default(),
                affinity: crate::affinity::Affinity::None,
                forwarding: crate::forwarding::Forwarding::Nat,
                backends: BTreeMap::new(),
            },
        };
        if next.table_size != size {
            // The old region's slots in the inactive half are free to reuse: the live
            // table is in the other half until the flip.
            if current.is_some() {
                regions.free(next.region, next.table_size);
            }
            next.region = regions.take(size).ok_or_else(|| {
                let largest = regions.largest_free();
                err(None, StateError::TableAreaFull { size, largest })
            })?;
            next.table_size = size;
        }
        next.affinity = want.affinity;
        next.forwarding = want.forwarding;
        let removed: Vec<(BackendAddr, BackendSlot)> = next
            .backends
            .iter()
            .filter(|(b, _)| !want.backends.contains_key(b))
            .map(|(b, slot)| (*b, slot.clone()))
            .collect();
        if check_live && !force && !removed.is_empty() {
            let live = self.live_flows().map_err(|e| err(None, e))?;
            for (backend, slot) in &removed {
                let flows = live.get(&slot.index).copied().unwrap_or(0);
                if flows > 0 {
                    let backend = *backend;
                    return Err(err(Some(backend), StateError::LiveFlows { backend, flows }));
                }
            }
        }
        for (backend, _) in &removed {
            next.backends.remove(backend);
        }
        let mut added = Vec::new();
        for (&backend, &weight) in &want.backends {
            let weight = check_weight(weight).map_err(|e| err(Some(backend), e))?;
            service
                .check_backend(&backend)
                .map_err(|e| err(Some(backend), e.into()))?;
            backend
                .check_host()
                .map_err(|e| err(Some(backend), e.into()))?;
            for other in self.services.keys() {
                other
                    .check_not_vip_of(&backend)
                    .map_err(|e| err(Some(backend), e.into()))?;
            }
            if let Some(slot) = next.backends.get_mut(&backend) {
                slot.weight = weight;
                continue;
            }
            let index = indexes
                .take()
                .ok_or(err(Some(backend), StateError::TooManyBackends))?;
            let slot = BackendSlot {
                index,
                weight,
                health: Health::new(next.check.is_on()),
                since: SystemTime::now(),
                epoch: self.epochs + 1,
            };
            next.backends.insert(backend, slot);
            added.push((index, backend));
        }
        let room = limits::backends_room(size, self.slots_per_backend);
        if next.backends.len() as u64 > u64::from(room) {
            let need = limits::table_size_for(next.backends.len() as u32, self.slots_per_backend)
                .map_or_else(|| "(none fits)".into(), |n| n.to_string());
            let full = StateError::TableFull {
                service: *service,
                size,
                room,
                per: self.slots_per_backend,
                need,
            };
            return Err(err(None, full));
        }
        for (index, backend) in &added {
            // A reused index: packets that read the table that last named it may still run.
            if let Some(&ticket) = self.freed_indexes.get(index) {
                self.dp
                    .wait_grace_period(ticket)
                    .map_err(|e| err(Some(*backend), e.into()))?;
            }
            self.dp
                .put_backend(*index, &backend.backend())
                .map_err(|e| err(Some(*backend), e.into()))?;
        }
        let resized = current.as_ref().is_some_and(|c| c.region != next.region);
        let ticket = self.commit(service, next).map_err(|e| err(None, e))?;
        if resized {
            // The old region is free, and packets may still read its live half.
            self.last_removal = Some(ticket);
        }
        if current.is_none() {
            self.service_ids.take();
        }
        self.regions = regions;
        self.backend_indexes = indexes;
        if !added.is_empty() {
            self.epochs += 1;
        }
        for (index, _) in &added {
            self.freed_indexes.remove(index);
        }
        for (_, slot) in &removed {
            self.backend_indexes.free(slot.index);
            self.freed_indexes.insert(slot.index, ticket);
        }
        if force && !removed.is_empty() {
            // After the grace period no running program can still take a removed backend
            // from the old table and add a flow for it behind our back.
            self.dp
                .wait_grace_period(ticket)
                .map_err(|e| err(None, e.into()))?;
            let slots: Vec<u32> = removed.iter().map(|(_, s)| s.index).collect();
            self.forget_flows(&slots).map_err(|e| err(None, e))?;
        }
        Ok(())
    }

    /// Removes `service` and its flows' entries; refused while one of its backends has
    /// live flows (with `check_live`), unless `force`.
    fn remove_spec(
        &mut self,
        service: &ServiceAddr,
        force: bool,
        check_live: bool,
    ) -> Result<(), ApplyError> {
        let err = |backend: Option<BackendAddr>, source: StateError| ApplyError {
            service: *service,
            backend,
            source: Box::new(source),
        };
        let slots: Vec<(BackendAddr, u32)> = match self.services.get(service) {
            Some(s) => s.backends.iter().map(|(b, x)| (*b, x.index)).collect(),
            None => return Err(err(None, StateError::NoSuchService(*service))),
        };
        if check_live && !force {
            let live = self.live_flows().map_err(|e| err(None, e))?;
            for (backend, index) in &slots {
                let flows = live.get(index).copied().unwrap_or(0);
                if flows > 0 {
                    let backend = *backend;
                    return Err(err(Some(backend), StateError::LiveFlows { backend, flows }));
                }
            }
        }
        // Its flows' entries go with it (see `remove_service`).
        self.remove_service(service).map_err(|e| err(None, e))
    }

    /// Deletes the connection-table entries of the backends at `indexes`.
    fn forget_flows(&mut self, indexes: &[u32]) -> Result<(), StateError> {
        let flows = self.dp.flows()?;
        let mut keys = Vec::new();
        for &i in indexes {
            keys.extend(conntrack::of_backend(&flows, i));
        }
        self.dp.remove_flows(&keys)?;
        Ok(())
    }
}

/// The data path of an apply's trial run: writes go nowhere (bounds are checked as the
/// maps would), reads see a snapshot of the connection table.
struct Scratch {
    table_area: u32,
    flows: HashMap<FlowKey, FlowValue>,
}

impl Scratch {
    fn new(table_area: u32, flows: Vec<(FlowKey, FlowValue)>) -> Self {
        Scratch {
            table_area,
            flows: flows.into_iter().collect(),
        }
    }
}

impl Scratch {
    /// Whether slots up to (not including) `end` lie in the table area, as the map checks.
    fn in_area(&self, end: u64) -> Result<(), DataplaneError> {
        if end > u64::from(self.table_area) {
            return Err(DataplaneError::OutOfRange {
                map: lb_common::MAP_TABLES,
                index: (end - 1).min(u64::from(u32::MAX)) as u32,
                size: self.table_area,
            });
        }
        Ok(())
    }
}

impl Dataplane for Scratch {
    fn put_service(&mut self, _: &ServiceKey, _: &ServiceValue) -> Result<(), DataplaneError> {
        Ok(())
    }

    fn remove_service(&mut self, _: &ServiceKey) -> Result<(), DataplaneError> {
        Ok(())
    }

    fn put_backend(&mut self, index: u32, _: &Backend) -> Result<(), DataplaneError> {
        if index >= MAX_BACKENDS {
            return Err(DataplaneError::OutOfRange {
                map: lb_common::MAP_BACKENDS,
                index,
                size: MAX_BACKENDS,
            });
        }
        Ok(())
    }

    fn adopted(&self) -> bool {
        false
    }

    fn detach(self) -> Result<(), DataplaneError> {
        Ok(())
    }

    fn service_entries(&self) -> Result<Vec<(ServiceKey, ServiceValue)>, DataplaneError> {
        Ok(Vec::new())
    }

    fn read_table(&self, offset: u32, len: u32) -> Result<Vec<u32>, DataplaneError> {
        self.in_area(u64::from(offset) + u64::from(len))?;
        Ok(vec![0; len as usize])
    }

    fn write_slots(&mut self, slots: &[(u32, u32)]) -> Result<(), DataplaneError> {
        match slots.iter().map(|s| s.0).max() {
            Some(last) => self.in_area(u64::from(last) + 1),
            None => Ok(()),
        }
    }

    fn start_grace_period(&mut self) -> GraceTicket {
        0
    }

    fn wait_grace_period(&mut self, _: GraceTicket) -> Result<(), DataplaneError> {
        Ok(())
    }

    fn table_area(&self) -> u32 {
        self.table_area
    }

    fn stats(&self) -> Result<Vec<Counter>, DataplaneError> {
        Ok(vec![
            Counter::default();
            lb_common::stats::STAT_COUNT as usize
        ])
    }

    fn backend_stats(&self, _: u32) -> Result<Counter, DataplaneError> {
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

    fn allow_egress(&mut self, _: u32) -> Result<(), DataplaneError> {
        Ok(())
    }

    fn deny_egress(&mut self, _: u32) -> Result<(), DataplaneError> {
        Ok(())
    }

    fn egress(&self) -> Result<Vec<u32>, DataplaneError> {
        Ok(Vec::new())
    }

    fn egress_misses(&self) -> Result<Vec<(u32, u64)>, DataplaneError> {
        Ok(Vec::new())
    }
}

#[cfg(test)]
mod tests;

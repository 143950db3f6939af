//! Test support: a [`Dataplane`] over [`FakeDataplane`] that records every write in
//! order, can be told to fail a kind of write, and serves set counters.

use std::collections::HashMap;

use lb_common::stats::{Counter, STAT_COUNT};
use lb_common::{Backend, FlowKey, FlowValue, MAP_TABLES, ServiceKey, ServiceValue};

use crate::dataplane::{Dataplane, DataplaneError, FakeDataplane, GraceTicket};

/// One write to the data path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    PutService(ServiceKey, ServiceValue),
    RemoveService(ServiceKey),
    PutBackend(u32, Backend),
    /// One batch of table slots: the lowest and highest slot written, and how many.
    WriteSlots {
        first: u32,
        last: u32,
        count: usize,
    },
    /// A grace period started after a flip or removal, by its ticket.
    StartGrace(GraceTicket),
    /// A wait for the grace period of this ticket, before a table half is reused.
    WaitGrace(GraceTicket),
}

/// Which kind of write to refuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fail {
    PutService,
    RemoveService,
    PutBackend,
    WriteSlots,
    WaitGrace,
}

#[derive(Debug)]
pub struct Recorder {
    pub fake: FakeDataplane,
    pub ops: Vec<Op>,
    pub fail: Option<Fail>,
    pub counters: Vec<Counter>,
    pub backend_counters: HashMap<u32, Counter>,
}

impl Recorder {
    pub fn new(table_area: u32) -> Self {
        Recorder {
            fake: FakeDataplane::new(table_area),
            ops: Vec::new(),
            fail: None,
            counters: vec![Counter::default(); STAT_COUNT as usize],
            backend_counters: HashMap::new(),
        }
    }

    fn check(&self, what: Fail) -> Result<(), DataplaneError> {
        if self.fail == Some(what) {
            return Err(DataplaneError::OutOfRange {
                map: MAP_TABLES,
                index: u32::MAX,
                size: 0,
            });
        }
        Ok(())
    }
}

impl Dataplane for Recorder {
    fn put_service(
        &mut self,
        key: &ServiceKey,
        value: &ServiceValue,
    ) -> Result<(), DataplaneError> {
        self.check(Fail::PutService)?;
        self.ops.push(Op::PutService(*key, *value));
        self.fake.put_service(key, value)
    }

    fn remove_service(&mut self, key: &ServiceKey) -> Result<(), DataplaneError> {
        self.check(Fail::RemoveService)?;
        self.ops.push(Op::RemoveService(*key));
        self.fake.remove_service(key)
    }

    fn adopted(&self) -> bool {
        self.fake.adopted()
    }

    fn detach(self) -> Result<(), DataplaneError> {
        self.fake.detach()
    }

    fn service_entries(&self) -> Result<Vec<(ServiceKey, ServiceValue)>, DataplaneError> {
        self.fake.service_entries()
    }

    fn put_backend(&mut self, index: u32, backend: &Backend) -> Result<(), DataplaneError> {
        self.check(Fail::PutBackend)?;
        self.ops.push(Op::PutBackend(index, *backend));
        self.fake.put_backend(index, backend)
    }

    fn read_table(&self, offset: u32, len: u32) -> Result<Vec<u32>, DataplaneError> {
        self.fake.read_table(offset, len)
    }

    fn write_slots(&mut self, slots: &[(u32, u32)]) -> Result<(), DataplaneError> {
        self.check(Fail::WriteSlots)?;
        self.ops.push(Op::WriteSlots {
            first: slots.iter().map(|s| s.0).min().unwrap_or(0),
            last: slots.iter().map(|s| s.0).max().unwrap_or(0),
            count: slots.len(),
        });
        self.fake.write_slots(slots)
    }

    fn start_grace_period(&mut self) -> GraceTicket {
        let ticket = self.fake.start_grace_period();
        self.ops.push(Op::StartGrace(ticket));
        ticket
    }

    fn wait_grace_period(&mut self, ticket: GraceTicket) -> Result<(), DataplaneError> {
        if self.fail == Some(Fail::WaitGrace) {
            return Err(DataplaneError::GracePeriod("refused by the test".into()));
        }
        self.ops.push(Op::WaitGrace(ticket));
        self.fake.wait_grace_period(ticket)
    }

    fn table_area(&self) -> u32 {
        self.fake.table_area()
    }

    fn stats(&self) -> Result<Vec<Counter>, DataplaneError> {
        Ok(self.counters.clone())
    }

    fn backend_stats(&self, index: u32) -> Result<Counter, DataplaneError> {
        Ok(self
            .backend_counters
            .get(&index)
            .copied()
            .unwrap_or_default())
    }

    fn flows(&self) -> Result<Vec<(FlowKey, FlowValue)>, DataplaneError> {
        self.fake.flows()
    }

    fn remove_flows(&mut self, keys: &[FlowKey]) -> Result<usize, DataplaneError> {
        self.fake.remove_flows(keys)
    }

    fn allow_egress(&mut self, ifindex: u32) -> Result<(), DataplaneError> {
        self.fake.allow_egress(ifindex)
    }

    fn deny_egress(&mut self, ifindex: u32) -> Result<(), DataplaneError> {
        self.fake.deny_egress(ifindex)
    }

    fn egress(&self) -> Result<Vec<u32>, DataplaneError> {
        self.fake.egress()
    }

    fn egress_misses(&self) -> Result<Vec<(u32, u64)>, DataplaneError> {
        self.fake.egress_misses()
    }
}

/// A directory under the system temp dir, removed with everything in it on drop.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new() -> Self {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("xlb-test-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("creating a temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

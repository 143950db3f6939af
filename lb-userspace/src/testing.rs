//! Test support: a [`Dataplane`] over [`FakeDataplane`] that records every write in
//! order, can be told to fail a kind of write, and serves set counters.

use std::collections::HashMap;

use lb_common::stats::{Counter, STAT_COUNT};
use lb_common::{Backend, FlowKey, FlowValue, MAP_TABLES, ServiceKey, ServiceValue};

use crate::dataplane::{Dataplane, DataplaneError, FakeDataplane};

/// One write to the data path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    PutService(ServiceKey, ServiceValue),
    RemoveService(ServiceKey),
    PutBackend(u32, Backend),
    /// Offset and length of the table written.
    WriteTable(u32, usize),
}

/// Which kind of write to refuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fail {
    PutService,
    RemoveService,
    PutBackend,
    WriteTable,
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

    fn write_table(&mut self, offset: u32, slots: &[u32]) -> Result<(), DataplaneError> {
        self.check(Fail::WriteTable)?;
        self.ops.push(Op::WriteTable(offset, slots.len()));
        self.fake.write_table(offset, slots)
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

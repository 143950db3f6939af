//! The maps. Keys and values come from `lb-common`, the one definition both sides use.
//! Sizes marked resizable are set by the loader at load time.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray},
};
use lb_common::{
    Backend, DEFAULT_FLOW_ENTRIES, DEFAULT_TABLE_AREA, FlowKey, FlowValue, MAX_BACKENDS,
    MAX_SERVICES, ServiceKey, ServiceValue,
    stats::{Counter, STAT_COUNT},
};

/// Virtual services: `VIP:port/proto` to the service's live table.
#[map]
pub static SERVICES: HashMap<ServiceKey, ServiceValue> = HashMap::with_max_entries(MAX_SERVICES, 0);

/// Backends by index; table slots hold these indexes.
#[map]
pub static BACKENDS: Array<Backend> = Array::with_max_entries(MAX_BACKENDS, 0);

/// Every service's backend table, both halves of the double buffer (resizable).
#[map]
pub static TABLES: Array<u32> = Array::with_max_entries(DEFAULT_TABLE_AREA, 0);

/// The connection table: both directions of every balanced flow (resizable).
#[map]
pub static FLOWS: LruHashMap<FlowKey, FlowValue> =
    LruHashMap::with_max_entries(DEFAULT_FLOW_ENTRIES, 0);

/// Global counters, indexed by `STAT_*`.
#[map]
pub static STATS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(STAT_COUNT, 0);

/// Packets and bytes forwarded to each backend, by backend index.
#[map]
pub static BACKEND_STATS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(MAX_BACKENDS, 0);

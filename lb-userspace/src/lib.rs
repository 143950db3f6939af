//! xlb's userspace: the daemon's and the CLI's shared library.
//!
//! - [`announce`]: which VIPs the node announces to BGP, `xlb node drain`;
//! - [`addr`]: parsing `VIP:PORT/PROTO` and `ADDR:PORT`, conversion to the map types;
//! - [`limits`]: weights, table sizes, map sizes and echoed input, for the CLI and the daemon;
//! - [`table`] and [`maglev`]: the backend-table builder; [`alloc`]: ids and table regions;
//! - [`state`]: services and backends over a [`dataplane::Dataplane`] (the control logic);
//! - [`control`]: the gRPC server on a Unix socket; [`client`]: its client;
//! - [`config`]: the declarative configuration file (`xlb apply`, `xlbd --config`);
//! - [`check`]: a service's health-check settings; [`health`]: the checker in xlbd;
//! - [`daemon`]: `xlbd`; [`metrics`]: its Prometheus endpoint; [`cli`] and [`output`]: `xlb`,
//!   [`top`]: `xlb top`;
//! - [`bpf`]: the XDP loader, `BpfDataplane`; [`link`]: what xlbd says of its interfaces;
//!   [`egress`] and [`netdev`]: which devices the program may redirect to;
//!   [`table_mem`]: `TABLES` through its memory mapping; [`grace`]: waits for running XDP
//!   programs before a table half is reused.

pub mod addr;
pub mod affinity;
pub mod alloc;
pub mod announce;
pub mod bpf;
pub mod check;
pub mod cli;
pub mod client;
pub mod config;
pub mod conntrack;
pub mod control;
pub mod daemon;
pub mod dataplane;
pub mod decap;
pub mod egress;
pub mod flow_lru;
pub mod forwarding;
pub mod grace;
pub mod health;
pub mod limits;
pub mod link;
pub mod maglev;
pub mod metrics;
pub mod neigh;
pub mod netdev;
pub mod output;
pub mod state;
pub mod table;
pub mod table_mem;
pub mod top;

#[cfg(test)]
mod testing;

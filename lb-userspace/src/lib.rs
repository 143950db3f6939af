//! xlb's userspace: the daemon's and the CLI's shared library.
//!
//! - [`addr`]: parsing `VIP:PORT/PROTO` and `ADDR:PORT`, conversion to the map types;
//! - [`table`] and [`maglev`]: the backend-table builder; [`alloc`]: ids and table regions;
//! - [`state`]: services and backends over a [`dataplane::Dataplane`] (the control logic);
//! - [`control`]: the gRPC server on a Unix socket; [`client`]: its client;
//! - [`daemon`]: `xlbd`; [`cli`] and [`output`]: `xlb`;
//! - [`bpf`]: the XDP loader, `BpfDataplane`; [`table_mem`]: `TABLES` through its memory
//!   mapping; [`grace`]: waits for running XDP programs before a table half is reused.

pub mod addr;
pub mod alloc;
pub mod bpf;
pub mod cli;
pub mod client;
pub mod conntrack;
pub mod control;
pub mod daemon;
pub mod dataplane;
pub mod grace;
pub mod maglev;
pub mod output;
pub mod state;
pub mod table;
pub mod table_mem;

#[cfg(test)]
mod testing;

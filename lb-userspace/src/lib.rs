//! xlb's userspace: the daemon's and the CLI's shared library.
//!
//! - [`addr`]: parsing `VIP:PORT/PROTO` and `ADDR:PORT`, conversion to the map types;
//! - [`table`] and [`maglev`]: the backend-table builder; [`alloc`]: ids and table regions;
//! - [`state`]: services and backends over a [`dataplane::Dataplane`] (the control logic);
//! - [`control`]: the gRPC server on a Unix socket; [`client`]: its client;
//! - [`config`]: the declarative configuration file (`xlb apply`, `xlbd --config`);
//! - [`daemon`]: `xlbd`; [`cli`] and [`output`]: `xlb`;
//! - [`bpf`]: the XDP loader, `BpfDataplane`; [`egress`] and [`netdev`]: which devices it
//!   may redirect to.

pub mod addr;
pub mod alloc;
pub mod bpf;
pub mod cli;
pub mod client;
pub mod config;
pub mod conntrack;
pub mod control;
pub mod daemon;
pub mod dataplane;
pub mod egress;
pub mod maglev;
pub mod netdev;
pub mod output;
pub mod state;
pub mod table;

#[cfg(test)]
mod testing;

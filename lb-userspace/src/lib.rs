//! xlb's userspace: the daemon's and the CLI's shared library.

pub mod addr;
pub mod alloc;
pub mod bpf;
pub mod client;
pub mod control;
pub mod dataplane;
pub mod state;
pub mod table;

#[cfg(test)]
mod testing;

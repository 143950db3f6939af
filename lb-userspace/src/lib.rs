//! xlb's userspace: the daemon's and the CLI's shared library.

pub mod bpf;
pub mod dataplane;

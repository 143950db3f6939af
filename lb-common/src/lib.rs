//! Everything that crosses the kernel/user boundary, and the pure logic both sides share.
//!
//! Map keys and values are `#[repr(C)]` with explicit padding and no `bool`, `Option` or
//! `enum` fields, so the layout the XDP program reads is the layout userspace writes.
//! Addresses are stored as they appear on the wire: an IPv4 address fills the first 4 of
//! the 16 address bytes (the rest are zero); ports are kept in network byte order.
//! The pure functions (flow hashing, checksum arithmetic) are unit-tested on the host.
#![cfg_attr(not(test), no_std)]

pub mod conntrack;
pub mod csum;
pub mod encap;
pub mod hash;
pub mod maps;
pub mod stats;

pub use maps::*;

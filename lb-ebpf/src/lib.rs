#![no_std]
// The library target lets lb-userspace name this crate as a build-dependency (see its build.rs).

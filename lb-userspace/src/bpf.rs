//! Loads the XDP object, attaches it to interfaces and implements [`Dataplane`] over its
//! maps. (Work in progress: the loader is being written.)

use std::path::PathBuf;

/// Attach mode: `native` (driver XDP) or `skb` (generic XDP, works on any interface).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum AttachMode {
    Native,
    Skb,
}

/// What `xlbd` asks of the loader.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    pub ifaces: Vec<String>,
    pub mode: AttachMode,
    /// Where maps are pinned (`/sys/fs/bpf/xlb`); its parent must be a bpffs mount.
    pub pin_dir: PathBuf,
    /// Connection-table entries (each flow takes two: request and reply direction).
    pub flow_entries: u32,
    /// Slots of the backend-table area, both halves of the double buffer together.
    pub table_area: u32,
}

/// Why the loader could not start; each one is one line an operator can act on.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("xlbd must run as root (or with CAP_BPF and CAP_NET_ADMIN)")]
    NotRoot,
    #[error("no such interface: {0}")]
    NoSuchInterface(String),
    #[error("bpffs is not mounted at {0} (mount it: mount -t bpf bpf {0})")]
    BpffsMissing(PathBuf),
    #[error("the kernel rejected the XDP program: {0}")]
    Rejected(String),
    #[error("cannot attach XDP to {iface} in {mode:?} mode: {reason}")]
    Attach {
        iface: String,
        mode: AttachMode,
        reason: String,
    },
    #[error("cannot pin maps under {path}: {reason}")]
    Pin { path: PathBuf, reason: String },
}

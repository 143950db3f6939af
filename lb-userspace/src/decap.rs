//! `xlbd --decap --iface X`: a `dsr-ipip` backend's side. Loads the XDP object and attaches
//! only its `xlb_decap` program (see `lb-ebpf/src/decap.rs`), which strips the outer
//! header of IPv4-in-IPv4 and IPv6-in-IPv6 packets before the stack sees them (this
//! kernel has no ipip/ip6_tunnel module). Runs until SIGTERM/SIGINT, then prints the
//! program's counters and detaches (the links are not pinned: the program lives as long
//! as the process).

use aya::{
    EbpfLoader,
    maps::PerCpuArray,
    programs::{ProgramError, Xdp},
};
use lb_common::{
    DECAP_STAT_COUNT, DECAP_STAT_NAMES, MAP_AFFINITY, MAP_DECAP_STATS, MAP_FLOWS4, MAP_FLOWS6,
    MAP_TABLES, stats::Counter,
};
use tokio::signal::unix::{SignalKind, signal};

use crate::bpf::{AttachMode, LoadError, if_index_of};

/// The decapsulation program's name in the object.
pub const DECAP_PROGRAM: &str = "xlb_decap";
/// The object's program that passes every packet (`--pass-only`).
pub const PASS_PROGRAM: &str = "xlb_pass";

/// Attaches the decapsulation program to `ifaces` in `mode`, waits for SIGTERM/SIGINT,
/// prints its counters (one `decap: ...` line) and returns, which detaches it.
///
/// # Errors
/// Not root, no such interface, the kernel refused the program or the attachment.
pub async fn run(
    ifaces: &[String],
    mode: AttachMode,
    object: Option<&std::path::Path>,
    pass_only: bool,
) -> anyhow::Result<()> {
    let name = if pass_only {
        PASS_PROGRAM
    } else {
        DECAP_PROGRAM
    };
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(LoadError::NotRoot.into());
    }
    for iface in ifaces {
        if_index_of(iface)?;
    }
    let file;
    let bytes = match object {
        None => crate::bpf::xdp_object(),
        Some(p) => {
            file = std::fs::read(p)
                .map_err(|e| LoadError::Rejected(format!("cannot read {}: {e}", p.display())))?;
            &file[..]
        }
    };
    // The balancer's maps come with the object; the decapsulation program uses none of
    // them, so they are made as small as the kernel allows.
    let mut ebpf = EbpfLoader::new()
        .map_max_entries(MAP_FLOWS4, 2)
        .map_max_entries(MAP_FLOWS6, 2)
        .map_max_entries(MAP_TABLES, 2)
        .map_max_entries(MAP_AFFINITY, 2)
        .load(bytes)
        .map_err(|e| LoadError::Rejected(e.to_string()))?;
    let program: &mut Xdp = ebpf
        .program_mut(name)
        .ok_or_else(|| LoadError::Rejected(format!("no program {name} in the object")))?
        .try_into()
        .map_err(|e: ProgramError| LoadError::Rejected(e.to_string()))?;
    program
        .load()
        .map_err(|e| LoadError::Rejected(e.to_string()))?;
    for iface in ifaces {
        program
            .attach(iface, mode.xdp_mode())
            .map_err(|e| LoadError::Attach {
                iface: iface.clone(),
                mode,
                reason: e.to_string(),
            })?;
        tracing::info!("xlbd --decap: {name} attached to {iface} ({mode})");
    }
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = sigterm.recv() => {}
        _ = sigint.recv() => {}
    }
    let stats: PerCpuArray<_, Counter> = PerCpuArray::try_from(
        ebpf.map(MAP_DECAP_STATS)
            .ok_or_else(|| LoadError::Rejected(format!("no map {MAP_DECAP_STATS}")))?,
    )?;
    let mut line = String::from("decap:");
    for i in 0..DECAP_STAT_COUNT {
        let packets: u64 = stats.get(&i, 0)?.iter().map(|c| c.packets).sum();
        line.push_str(&format!(" {}={packets}", DECAP_STAT_NAMES[i as usize]));
    }
    println!("{line}");
    Ok(())
}

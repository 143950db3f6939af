//! `xlbd --config FILE`: the file read before anything starts (a bad file starts nothing),
//! and its services applied once the control state exists.

use tokio::sync::Mutex;
use tracing::info;

use super::{Args, DaemonError};
use crate::config::{self, ApplyOptions, Config};
use crate::dataplane::Dataplane;
use crate::state::ControlState;

/// The file of `--config`, parsed and with its name; fills in the interfaces and the mode
/// that the command line did not give.
pub struct StartConfig {
    file: String,
    config: Config,
}

/// Reads `args.config` (if any) and completes `args` from its `[daemon]` table.
///
/// # Errors
///
/// An unreadable or invalid file (`FILE:LINE: ...`), or no interface at all.
pub fn read_config(args: &mut Args) -> Result<Option<StartConfig>, DaemonError> {
    let Some(path) = &args.config else {
        return Ok(None);
    };
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| DaemonError::Config(format!("cannot read {file}: {e}")))?;
    let config = config::parse(&file, &text).map_err(|e| DaemonError::Config(e.to_string()))?;
    if args.ifaces.is_empty() {
        args.ifaces = config.daemon.interfaces.clone().unwrap_or_default();
    }
    if args.ifaces.is_empty() {
        return Err(DaemonError::Config(format!(
            "no interface to attach to: give --iface, or interfaces in the [daemon] table of {file}"
        )));
    }
    if args.mode.is_none() {
        args.mode = config.daemon.mode;
    }
    Ok(Some(StartConfig { file, config }))
}

/// Applies the file's services over the running state (empty, or restored), as `xlb apply
/// -f FILE` without `--prune` would.
///
/// # Errors
///
/// What the daemon refused (no table room, ...), at the file's line: nothing is applied.
pub async fn apply_config<D: Dataplane>(
    state: &Mutex<ControlState<D>>,
    start: Option<&StartConfig>,
) -> Result<(), DaemonError> {
    let Some(StartConfig { file, config }) = start else {
        return Ok(());
    };
    let changes = state
        .lock()
        .await
        .apply(&config.services, ApplyOptions::default())
        .map_err(|e| {
            let line = config.line_of(&e.service, e.backend.as_ref()).unwrap_or(1);
            DaemonError::Config(format!("{file}:{line}: {e}"))
        })?;
    for c in &changes {
        info!("xlbd: {file}: {c}");
    }
    info!("xlbd: applied {file}: {} changes", changes.len());
    Ok(())
}

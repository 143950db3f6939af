//! The control API's client side: a gRPC channel to xlbd over its Unix socket.

use std::path::{Path, PathBuf};

use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};
use tower::service_fn;

use crate::control::proto::control_client::ControlClient;

/// Where xlbd listens unless told otherwise (`--socket`, `XLB_SOCKET`).
pub const DEFAULT_SOCKET: &str = "/run/xlb/xlbd.sock";

/// The daemon could not be reached.
#[derive(Debug, thiserror::Error)]
#[error("cannot reach xlbd at {}: {reason}", crate::limits::shown_path(path))]
pub struct Unreachable {
    pub path: PathBuf,
    pub reason: String,
}

/// Connects to the daemon's control socket at `path`.
pub async fn connect(path: &Path) -> Result<ControlClient<Channel>, Unreachable> {
    let socket = path.to_path_buf();
    // The URI is required by the HTTP/2 layer but unused: the connector ignores it.
    let channel = Endpoint::from_static("http://xlbd.sock")
        .connect_with_connector(service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(socket).await?)) }
        }))
        .await
        .map_err(|e| Unreachable {
            path: path.to_path_buf(),
            reason: innermost(&e),
        })?;
    Ok(ControlClient::new(channel))
}

/// The innermost cause of an error chain (transport errors wrap the useful `io::Error`).
pub fn innermost(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

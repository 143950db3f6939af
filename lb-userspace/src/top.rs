//! `xlb top`: a live view of services and backends, redrawn every interval like `top`.
//!
//! Each refresh asks the daemon for its services, backends and global counters
//! ([`Poll`]); rates (packets/s, bit/s, new flows/s) are the difference between two polls
//! over the time between them ([`rate`]). The screen is plain ANSI: the alternate screen,
//! the cursor home, each line rewritten; the terminal is put in raw mode (libc termios)
//! so `q` quits without Enter, and restored on every way out ([`RawTerminal`]'s `Drop`).

use std::io::{self, IsTerminal as _, Read as _, Write as _};
use std::time::{Duration, Instant};

use tonic::transport::Channel;

use crate::control::proto::{self, control_client::ControlClient};

/// Default refresh interval.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);
/// Why `xlb top` stopped.
#[derive(Debug, thiserror::Error)]
pub enum TopError {
    #[error("xlb top needs a terminal (for scripts: xlb backend list --json, xlb stats --json)")]
    NotATerminal,
    #[error("terminal: {0}")]
    Terminal(#[from] io::Error),
    #[error("{0}")]
    Rpc(#[from] tonic::Status),
}

/// What one refresh read from the daemon.
#[derive(Debug, Clone)]
pub struct Poll {
    pub at: Instant,
    pub services: Vec<proto::Service>,
    pub backends: Vec<proto::BackendEntry>,
    pub counters: Vec<proto::Counter>,
}

impl Poll {
    fn counter(&self, name: &str) -> Option<u64> {
        self.counters
            .iter()
            .find(|c| c.name == name)
            .map(|c| c.packets)
    }

    /// Packets of every `drop_*` counter.
    fn drops(&self) -> u64 {
        self.counters
            .iter()
            .filter(|c| c.name.starts_with("drop_"))
            .map(|c| c.packets)
            .sum()
    }
}

/// Per second, from two readings of a counter `secs` apart; `None` without a time between
/// them or when the counter went back (the daemon restarted, an index was reused).
pub fn rate(prev: u64, cur: u64, secs: f64) -> Option<f64> {
    (secs > 0.0 && cur >= prev).then(|| (cur - prev) as f64 / secs)
}

/// `950`, `1.2k`, `3.4M`, `5.6G`: a rate in three or four characters.
pub fn si(v: f64) -> String {
    const UNITS: [(f64, &str); 3] = [(1e9, "G"), (1e6, "M"), (1e3, "k")];
    for (scale, unit) in UNITS {
        if v >= scale {
            return format!("{:.1}{unit}", v / scale);
        }
    }
    format!("{v:.0}")
}

/// A rate cell: `-` when it is not known yet.
fn cell(v: Option<f64>, unit: &str) -> String {
    v.map_or_else(|| "-".to_string(), |v| format!("{}{unit}", si(v)))
}

/// The screen for `cur` (rates against `prev`), at most `height` lines of at most
/// `width` characters.
pub fn render(
    prev: Option<&Poll>,
    cur: &Poll,
    interval: Duration,
    width: usize,
    height: usize,
) -> Vec<String> {
    let secs = prev.map_or(0.0, |p| cur.at.duration_since(p.at).as_secs_f64());
    let global = |name: &str| -> Option<f64> {
        let p = prev?;
        rate(p.counter(name)?, cur.counter(name)?, secs)
    };
    let drops = prev.and_then(|p| rate(p.drops(), cur.drops(), secs));
    let mut lines = vec![
        format!(
            "xlb top - every {:.1}s - q quits   {} services  {} backends",
            interval.as_secs_f64(),
            cur.services.len(),
            cur.backends.len()
        ),
        format!(
            "rx {} pps   forward {} pps   reply {} pps   new flows {}/s   drops {}/s",
            cell(global("rx"), ""),
            cell(global("forward"), ""),
            cell(global("reply"), ""),
            cell(global("new_flow"), ""),
            cell(drops, ""),
        ),
        String::new(),
    ];
    let rows = rows(prev, cur, secs);
    let name_w = rows.iter().map(|r| r[0].len()).max().unwrap_or(0).max(17);
    let header = [
        "SERVICE / BACKEND",
        "WEIGHT",
        "PPS",
        "BIT/S",
        "NEW/S",
        "FLOWS",
        "HEALTH",
    ];
    for row in std::iter::once(header.map(String::from).to_vec()).chain(rows) {
        lines.push(
            format!(
                "{:<name_w$}  {:>6}  {:>7}  {:>11}  {:>6}  {:>7}  {:>6}",
                row[0], row[1], row[2], row[3], row[4], row[5], row[6]
            )
            .trim_end()
            .to_string(),
        );
    }
    if cur.services.is_empty() {
        lines.push("(no services: xlb service add VIP:PORT/PROTO)".into());
    }
    lines.truncate(height);
    for l in &mut lines {
        if let Some((cut, _)) = l.char_indices().nth(width) {
            l.truncate(cut);
        }
    }
    lines
}

/// A service row, then its backends' rows (indented), for every service.
fn rows(prev: Option<&Poll>, cur: &Poll, secs: f64) -> Vec<Vec<String>> {
    let before = |b: &proto::BackendEntry| {
        prev?
            .backends
            .iter()
            .find(|p| p.service == b.service && p.backend == b.backend && p.index == b.index)
    };
    let mut out = Vec::new();
    for s in &cur.services {
        let backends: Vec<&proto::BackendEntry> = cur
            .backends
            .iter()
            .filter(|b| b.service == s.service)
            .collect();
        let mut b_rows = Vec::new();
        let (mut pps, mut bps, mut nps, mut known) = (0.0, 0.0, 0.0, true);
        for b in &backends {
            let p = before(b);
            let b_pps = p.and_then(|p| rate(p.packets, b.packets, secs));
            let b_bps = p
                .and_then(|p| rate(p.bytes, b.bytes, secs))
                .map(|v| v * 8.0);
            let b_nps = p.and_then(|p| rate(p.new_flows, b.new_flows, secs));
            match (b_pps, b_bps, b_nps) {
                (Some(a), Some(c), Some(n)) => (pps, bps, nps) = (pps + a, bps + c, nps + n),
                _ => known = false,
            }
            b_rows.push(vec![
                format!("  {}", b.backend),
                if b.weight == 0 {
                    "drain".to_string()
                } else {
                    b.weight.to_string()
                },
                cell(b_pps, ""),
                cell(b_bps, "bit/s"),
                cell(b_nps, ""),
                b.flows.to_string(),
                if b.state.is_empty() {
                    "-".to_string()
                } else {
                    b.state.clone()
                },
            ]);
        }
        let known = known && prev.is_some();
        out.push(vec![
            s.service.clone(),
            String::new(),
            cell(known.then_some(pps), ""),
            cell(known.then_some(bps), "bit/s"),
            cell(known.then_some(nps), ""),
            backends.iter().map(|b| b.flows).sum::<u64>().to_string(),
            String::new(),
        ]);
        out.extend(b_rows);
    }
    out
}

/// Reads what one refresh shows.
async fn poll(client: &mut ControlClient<Channel>) -> Result<Poll, tonic::Status> {
    let services = client
        .list_services(proto::ListServicesRequest {})
        .await?
        .into_inner()
        .services;
    let backends = client
        .list_backends(proto::ListBackendsRequest::default())
        .await?
        .into_inner()
        .backends;
    let counters = client
        .status(proto::StatusRequest {})
        .await?
        .into_inner()
        .counters;
    Ok(Poll {
        at: Instant::now(),
        services,
        backends,
        counters,
    })
}

/// Runs the view until `q` (or Ctrl-C) is pressed or the daemon stops answering.
pub async fn run(client: &mut ControlClient<Channel>, interval: Duration) -> Result<(), TopError> {
    if !io::stdin().is_terminal() || !io::stdout().is_terminal() {
        return Err(TopError::NotATerminal);
    }
    let term = RawTerminal::enter()?;
    let mut keys = keys();
    let mut prev: Option<Poll> = None;
    loop {
        let cur = poll(client).await?;
        let (width, height) = term.size();
        term.draw(&render(prev.as_ref(), &cur, interval, width, height))?;
        prev = Some(cur);
        let next = tokio::time::Instant::now() + interval;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(next) => break,
                key = keys.recv() => match key {
                    // q, Q, Ctrl-C (raw mode: no SIGINT), or stdin closed.
                    Some(b'q' | b'Q' | 0x03) | None => return Ok(()),
                    Some(_) => {}
                },
            }
        }
    }
}

/// Bytes typed on stdin, read by a thread (a blocked read there keeps nothing waiting:
/// the process exits when `run` returns).
fn keys() -> tokio::sync::mpsc::UnboundedReceiver<u8> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        let mut stdin = io::stdin().lock();
        let mut byte = [0u8; 1];
        while let Ok(1) = stdin.read(&mut byte) {
            if tx.send(byte[0]).is_err() {
                break;
            }
        }
    });
    rx
}

/// The terminal in raw mode on the alternate screen; `Drop` puts back what it found.
struct RawTerminal {
    saved: libc::termios,
}

impl RawTerminal {
    fn enter() -> io::Result<RawTerminal> {
        // SAFETY: an all-zero termios is a valid out-value for tcgetattr.
        let mut saved: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: fd 0 is a terminal (checked by the caller); `saved` is a valid pointer.
        if unsafe { libc::tcgetattr(libc::STDIN_FILENO, &mut saved) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let mut raw = saved;
        // Keys arrive one by one, unechoed; Ctrl-C is a key (0x03), not a signal, so the
        // terminal is always restored. Output processing stays (\n is a new line).
        raw.c_lflag &= !(libc::ICANON | libc::ECHO | libc::ISIG | libc::IEXTEN);
        raw.c_iflag &= !(libc::IXON | libc::ICRNL);
        raw.c_cc[libc::VMIN] = 1;
        raw.c_cc[libc::VTIME] = 0;
        // SAFETY: fd 0 is a terminal; `raw` is a valid termios.
        if unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &raw) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let term = RawTerminal { saved };
        // Alternate screen, cursor hidden.
        let mut out = io::stdout().lock();
        out.write_all(b"\x1b[?1049h\x1b[?25l")?;
        out.flush()?;
        Ok(term)
    }

    /// Columns and rows (80x24 when the terminal does not say).
    fn size(&self) -> (usize, usize) {
        // SAFETY: an all-zero winsize is a valid out-value.
        let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
        // SAFETY: TIOCGWINSZ writes a winsize through the valid pointer.
        let ok = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut ws) } == 0;
        if ok && ws.ws_col > 0 && ws.ws_row > 0 {
            (usize::from(ws.ws_col), usize::from(ws.ws_row))
        } else {
            (80, 24)
        }
    }

    /// Rewrites the screen from the top: each line, then clears what is left.
    fn draw(&self, lines: &[String]) -> io::Result<()> {
        let mut frame = String::from("\x1b[H");
        for (i, line) in lines.iter().enumerate() {
            if i > 0 {
                frame.push('\n');
            }
            frame += line;
            frame += "\x1b[K";
        }
        frame += "\x1b[J";
        let mut out = io::stdout().lock();
        out.write_all(frame.as_bytes())?;
        out.flush()
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        let mut out = io::stdout().lock();
        let _ = out.write_all(b"\x1b[?25h\x1b[?1049l");
        let _ = out.flush();
        // SAFETY: restores the settings read in `enter` on the same terminal.
        unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &self.saved) };
    }
}

#[cfg(test)]
mod tests;

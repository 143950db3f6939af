//! Runs `cargo test`, passing its output through, and closes with one line that totals
//! every test binary: `tests: N passed, N failed, N skipped`. Tests that skipped
//! themselves for want of root (they print `SKIPPED (needs root)`) count as skipped, not
//! passed, and so do `#[ignore]`d ones.

use std::io::{BufRead as _, BufReader, Read, Write as _};
use std::process::{Command, Stdio};
use std::thread;

use anyhow::{Context as _, Result, bail};

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub passed: u64,
    pub failed: u64,
    pub skipped: u64,
    root_skips: u64,
}

impl Totals {
    /// Tests that really passed: cargo counts a root skip as passed.
    pub fn passed(&self) -> u64 {
        self.passed.saturating_sub(self.root_skips)
    }

    /// Adds one line of cargo test's output.
    pub fn add_line(&mut self, line: &str) {
        if line.contains("SKIPPED (needs root)") {
            // Its binary reports it as passed (maybe only later): move it over at the end.
            self.skipped += 1;
            self.root_skips += 1;
        }
        let Some(rest) = line.trim().strip_prefix("test result: ") else {
            return;
        };
        for part in rest.split(';') {
            let mut words = part
                .split_whitespace()
                .skip_while(|w| w.parse::<u64>().is_err());
            let (Some(n), Some(what)) = (words.next(), words.next()) else {
                continue;
            };
            let n: u64 = n.parse().unwrap_or(0);
            match what {
                "passed" => self.passed += n,
                "failed" => self.failed += n,
                "ignored" => self.skipped += n,
                _ => {}
            }
        }
    }
}

/// Copies `from` to our stdout or stderr line by line, sending each line to `tx`.
fn pump(
    from: impl Read + Send + 'static,
    to_stderr: bool,
    tx: std::sync::mpsc::Sender<String>,
) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        for line in BufReader::new(from).lines().map_while(Result::ok) {
            if to_stderr {
                eprintln!("{line}");
            } else {
                println!("{line}");
                let _ = std::io::stdout().flush();
            }
            let _ = tx.send(line);
        }
    })
}

/// Runs `cmd` (a `cargo test`), prints its output as it comes and then the totals line;
/// fails when the command fails or no test ran.
pub fn run_tests(cmd: &mut Command) -> Result<Totals> {
    eprintln!("xtask: $ {}", crate::cmd::describe(cmd));
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run cargo test")?;
    let (tx, rx) = std::sync::mpsc::channel();
    let out = pump(child.stdout.take().expect("piped"), false, tx.clone());
    let err = pump(child.stderr.take().expect("piped"), true, tx);
    let mut totals = Totals::default();
    for line in rx {
        totals.add_line(&line);
    }
    let _ = (out.join(), err.join());
    let status = child.wait()?;
    println!(
        "tests: {} passed, {} failed, {} skipped",
        totals.passed(),
        totals.failed,
        totals.skipped
    );
    if !status.success() {
        bail!("cargo test failed ({status})");
    }
    if totals.passed() == 0 {
        bail!("no test ran");
    }
    Ok(totals)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_sum_binaries_and_count_root_skips_as_skipped() {
        let mut t = Totals::default();
        for line in [
            "test result: ok. 54 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.45s",
            "SKIPPED (needs root): xdp_packet_fixtures",
            "SKIPPED (needs root): nat",
            "test result: ok. 2 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.1s",
            "test result: FAILED. 3 passed; 2 failed; 1 ignored; 0 measured; 0 filtered out; finished in 1s",
            "test result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s",
            "unrelated line with 5 passed",
        ] {
            t.add_line(line);
        }
        assert_eq!((t.passed(), t.failed, t.skipped), (57, 2, 3));
    }
}

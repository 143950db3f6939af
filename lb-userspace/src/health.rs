//! Health checks run by xlbd: each backend's verdict (checking, up, down) moved by check
//! results with HAProxy's rise/fall rule, and the checker that probes the backends.
//!
//! - A backend starts in `checking` and keeps its table slots meanwhile (so a restarted
//!   daemon or a new check moves no flow); `rise` consecutive successes make it `up`,
//!   `fall` consecutive failures make it `down`. A `down` backend gets no table slots (new
//!   flows avoid it; established ones keep going, as with a drain) until `rise` successes
//!   in a row bring it back.
//! - [`step`] is that rule as a pure function; [`Health`] keeps a backend's verdict, its
//!   counters and its last result. The table effect is in `crate::state`.
//! - [`checker`] runs one probe loop per checked backend (tokio), never holding the control
//!   state's lock while a probe waits on the network; [`probe`] holds the probes (tcp
//!   connect, an HTTP/1.1 request, `grpc.health.v1.Health/Check`).

use std::fmt;
use std::time::{Duration, SystemTime};

pub mod checker;
pub mod probe;

pub use checker::run;

/// A backend's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthState {
    /// Not yet `rise` successes nor `fall` failures: keeps its table slots.
    Checking,
    Up,
    /// `fall` failures in a row: no table slots.
    Down,
}

impl HealthState {
    pub fn name(self) -> &'static str {
        match self {
            HealthState::Checking => "checking",
            HealthState::Up => "up",
            HealthState::Down => "down",
        }
    }
}

impl fmt::Display for HealthState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One check's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckResult {
    pub ok: bool,
    /// `ok`, or why it failed (e.g. `connect: Connection refused`, `status 503`).
    pub detail: String,
    pub latency: Duration,
    pub at: SystemTime,
}

/// A verdict, the run of equal results behind it, and the last result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    pub state: HealthState,
    /// Consecutive successes (0 after a failure).
    pub successes: u32,
    /// Consecutive failures (0 after a success).
    pub failures: u32,
    pub last: Option<CheckResult>,
}

impl Health {
    /// A backend not yet checked: `checking` when its service checks, else `up`.
    pub fn new(checked: bool) -> Health {
        Health::with_state(if checked {
            HealthState::Checking
        } else {
            HealthState::Up
        })
    }

    pub fn with_state(state: HealthState) -> Health {
        Health {
            state,
            successes: 0,
            failures: 0,
            last: None,
        }
    }

    /// Counts `result` in; returns the new state when it changed.
    pub fn record(&mut self, result: CheckResult, rise: u32, fall: u32) -> Option<HealthState> {
        let (state, successes, failures) = step(
            self.state,
            self.successes,
            self.failures,
            result.ok,
            rise,
            fall,
        );
        let changed = (state != self.state).then_some(state);
        (self.state, self.successes, self.failures) = (state, successes, failures);
        self.last = Some(result);
        changed
    }
}

/// The rise/fall rule: from `state` with `successes` and `failures` in a row so far, one
/// result `ok` gives the next state and counts. A success clears the failures and a failure
/// the successes; `rise` successes make any state `up`, `fall` failures make it `down`.
pub fn step(
    state: HealthState,
    successes: u32,
    failures: u32,
    ok: bool,
    rise: u32,
    fall: u32,
) -> (HealthState, u32, u32) {
    if ok {
        let successes = successes.saturating_add(1);
        let next = if successes >= rise {
            HealthState::Up
        } else {
            state
        };
        (next, successes, 0)
    } else {
        let failures = failures.saturating_add(1);
        let next = if failures >= fall {
            HealthState::Down
        } else {
            state
        };
        (next, 0, failures)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use HealthState::*;

    /// The states after each result of `results` ('+' success, '-' failure) from `start`.
    fn run(start: HealthState, results: &str, rise: u32, fall: u32) -> Vec<HealthState> {
        let (mut state, mut s, mut f) = (start, 0, 0);
        results
            .chars()
            .map(|c| {
                (state, s, f) = step(state, s, f, c == '+', rise, fall);
                state
            })
            .collect()
    }

    #[test]
    fn rise_successes_make_up_and_fall_failures_make_down() {
        assert_eq!(run(Checking, "++", 2, 3), [Checking, Up]);
        assert_eq!(run(Checking, "---", 2, 3), [Checking, Checking, Down]);
        assert_eq!(run(Up, "--+---", 2, 3), [Up, Up, Up, Up, Up, Down]);
        assert_eq!(run(Down, "+-++", 2, 2), [Down, Down, Down, Up]);
        assert_eq!(run(Down, "+", 1, 1), [Up]);
        assert_eq!(run(Up, "-", 1, 1), [Down]);
    }

    #[test]
    fn only_consecutive_results_count() {
        // Alternating results never reach a rise or fall of 2.
        assert_eq!(run(Checking, "+-+-+-", 2, 2), [Checking; 6]);
        assert_eq!(run(Up, "-+-+-+", 2, 2), [Up; 6]);
        assert_eq!(run(Down, "+-+-+-", 2, 2), [Down; 6]);
    }

    #[test]
    fn record_reports_changes_and_keeps_the_last_result() {
        let mut h = Health::new(true);
        let result = |ok| CheckResult {
            ok,
            detail: if ok { "ok" } else { "connect: refused" }.into(),
            latency: Duration::from_micros(300),
            at: SystemTime::UNIX_EPOCH,
        };
        assert_eq!(h.record(result(false), 2, 2), None);
        assert_eq!(h.record(result(false), 2, 2), Some(Down));
        assert_eq!(h.record(result(false), 2, 2), None);
        assert_eq!((h.state, h.failures), (Down, 3));
        assert_eq!(h.record(result(true), 2, 2), None);
        assert_eq!(h.record(result(true), 2, 2), Some(Up));
        assert_eq!(h.last.as_ref().map(|r| r.ok), Some(true));
        assert_eq!(Health::new(false).state, Up);
    }
}

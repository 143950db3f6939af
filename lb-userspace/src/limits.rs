//! Limits and defaults that the CLI and the daemon share, each defined once: weights,
//! table sizes and the Maglev rule between a table and its backends, the daemon's map
//! sizes, and how much of an operator's input an error message echoes back.
//!
//! The CLI's argument parsers and the daemon's checks call the same functions here, so a
//! limit has one range and one message wherever it is enforced.

use std::fmt;

/// Weight of a backend when none is given.
pub const DEFAULT_WEIGHT: u32 = 100;
/// Largest weight accepted (0 drains a backend).
pub const MAX_WEIGHT: u32 = 65535;
/// Table size of a service when none is given: a prime, as Maglev needs.
pub const DEFAULT_TABLE_SIZE: u32 = 65537;
/// Slots a service's table needs per backend. Maglev gives every backend of equal weight
/// either `M / N` slots or one more, so shares differ by at most `N / M`: with 100 slots per
/// backend, by at most 1% (Eisenbud et al., NSDI 2016, section 3.4, choose M > 100 N).
/// The default table (65537 slots) has room for 655 backends.
pub const SLOTS_PER_BACKEND: u32 = 100;
/// Seconds a `client-ip` affinity lasts after a client's last new flow when none is
/// given: kube-proxy's `ClientIP` default (3 hours).
pub const DEFAULT_AFFINITY_TIMEOUT_S: u32 = 10800;
/// Bytes of an interface name: Linux's `IFNAMSIZ` less the terminating NUL.
pub const IFACE_NAME_BYTES: usize = 15;
/// Characters of an operator's input an error message shows before cutting it with `…`.
pub const ECHO_CHARS: usize = 64;

/// Backend weights.
pub const WEIGHT: Limit = Limit {
    name: "weight",
    min: 0,
    max: MAX_WEIGHT,
};
/// Table sizes: room for at least one backend, and what a `u32` holds. Whether it also fits
/// the daemon's table area only the daemon knows (`xlbd --table-area`).
pub const TABLE_SIZE: Limit = table_size_limit(SLOTS_PER_BACKEND);
/// Connection-table entries (`xlbd --flow-entries`): each flow takes two.
pub const FLOW_ENTRIES: Limit = Limit {
    name: "flow entries",
    min: 2,
    max: u32::MAX,
};
/// Slots of the table area (`xlbd --table-area`): each half holds at least the smallest table.
pub const TABLE_AREA: Limit = Limit {
    name: "table area",
    min: 2 * TABLE_SIZE.min,
    max: u32::MAX,
};

/// Affinity timeouts, in seconds: kube-proxy's range (1 s to a day).
pub const AFFINITY_TIMEOUT: Limit = Limit {
    name: "affinity timeout",
    min: 1,
    max: 86400,
};

/// An inclusive range of whole numbers with the name the operator knows it by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub name: &'static str,
    pub min: u32,
    pub max: u32,
}

/// Why a number was refused. The `Display` is one line for the operator.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    /// `value` is the number as given (cut to [`ECHO_CHARS`]), so `-1` and `4294967296`
    /// are shown as typed.
    #[error("{name} {value} out of range ({min}-{max})")]
    OutOfRange {
        name: &'static str,
        value: String,
        min: u32,
        max: u32,
    },
    #[error("{name} {} is not a whole number", quoted(value))]
    NotANumber { name: &'static str, value: String },
    #[error("table size {0} is not a prime number (Maglev needs a prime)")]
    NotPrime(u32),
    #[error("interface name {} {why}", quoted(name))]
    IfaceName { name: String, why: &'static str },
    /// `value` as given, cut to [`ECHO_CHARS`].
    #[error("interval {value} out of range ({}-{} seconds)", INTERVAL_SECS.0, INTERVAL_SECS.1)]
    Interval { value: String },
}

/// `xlb top --interval` bounds, in seconds.
pub const INTERVAL_SECS: (f64, f64) = (0.1, 3600.0);

/// `xlb top --interval SECS` (decimals allowed).
pub fn parse_interval(s: &str) -> Result<std::time::Duration, LimitError> {
    let (lo, hi) = INTERVAL_SECS;
    match s.trim().parse::<f64>() {
        Ok(secs) if (lo..=hi).contains(&secs) => Ok(std::time::Duration::from_secs_f64(secs)),
        _ => Err(LimitError::Interval { value: cut(s) }),
    }
}

impl Limit {
    /// Checks a number the daemon received.
    pub fn check(&self, value: u64) -> Result<u32, LimitError> {
        match u32::try_from(value) {
            Ok(v) if (self.min..=self.max).contains(&v) => Ok(v),
            _ => Err(self.out_of_range(value.to_string())),
        }
    }

    /// Parses a number as the operator typed it: negative and too-large numbers get the
    /// range message, like any other number outside the range.
    pub fn parse(&self, s: &str) -> Result<u32, LimitError> {
        let digits = s.strip_prefix('-').unwrap_or(s);
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(LimitError::NotANumber {
                name: self.name,
                value: s.to_string(),
            });
        }
        let zero = digits.bytes().all(|b| b == b'0');
        if s.starts_with('-') && !zero {
            return Err(self.out_of_range(cut(s)));
        }
        // All digits: only overflow can fail, and that is out of range too.
        match digits.parse::<u64>() {
            Ok(n) => self.check(n).map_err(|_| self.out_of_range(cut(s))),
            Err(_) => Err(self.out_of_range(cut(s))),
        }
    }

    fn out_of_range(&self, value: String) -> LimitError {
        LimitError::OutOfRange {
            name: self.name,
            value,
            min: self.min,
            max: self.max,
        }
    }
}

/// The table-size limit when every backend needs `slots_per_backend` slots: at least the
/// smallest prime with room for one backend.
pub const fn table_size_limit(slots_per_backend: u32) -> Limit {
    Limit {
        name: "table size",
        min: next_prime(slots_per_backend),
        max: u32::MAX,
    }
}

/// Checks a table size: within [`TABLE_SIZE`] and a prime.
pub fn check_table_size(size: u32) -> Result<u32, LimitError> {
    check_table_size_with(size, SLOTS_PER_BACKEND)
}

/// [`check_table_size`] with another number of slots per backend (the daemon's unit tests
/// use tiny tables).
pub fn check_table_size_with(size: u32, slots_per_backend: u32) -> Result<u32, LimitError> {
    table_size_limit(slots_per_backend).check(u64::from(size))?;
    if !is_prime(size) {
        return Err(LimitError::NotPrime(size));
    }
    Ok(size)
}

/// How many backends a table of `size` slots has room for.
pub fn backends_room(size: u32, slots_per_backend: u32) -> u32 {
    size.checked_div(slots_per_backend).unwrap_or(u32::MAX)
}

/// The smallest table size (a prime) with room for `backends` backends, if a `u32` holds it.
pub fn table_size_for(backends: u32, slots_per_backend: u32) -> Option<u32> {
    let need = backends.checked_mul(slots_per_backend)?;
    let p = next_prime(need);
    (p >= need).then_some(p)
}

/// `--weight` and `set-weight`'s argument.
pub fn parse_weight(s: &str) -> Result<u32, LimitError> {
    WEIGHT.parse(s)
}

/// `--table-size`.
pub fn parse_affinity_timeout(s: &str) -> Result<u32, LimitError> {
    AFFINITY_TIMEOUT.parse(s)
}

pub fn parse_table_size(s: &str) -> Result<u32, LimitError> {
    check_table_size(TABLE_SIZE.parse(s)?)
}

/// `xlbd --flow-entries`.
pub fn parse_flow_entries(s: &str) -> Result<u32, LimitError> {
    FLOW_ENTRIES.parse(s)
}

/// `xlbd --table-area`.
pub fn parse_table_area(s: &str) -> Result<u32, LimitError> {
    TABLE_AREA.parse(s)
}

/// `xlbd --iface`: a name Linux could give an interface (not empty, at most
/// [`IFACE_NAME_BYTES`], no `/`, `:`, whitespace or control character, not `.` or `..`).
pub fn parse_iface(s: &str) -> Result<String, LimitError> {
    let why = if s.is_empty() {
        "is empty"
    } else if s.len() > IFACE_NAME_BYTES {
        "is longer than 15 bytes (Linux's IFNAMSIZ)"
    } else if s == "." || s == ".." {
        "is not allowed by Linux"
    } else if s
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
    {
        "has a '/', ':', space or control character (Linux does not allow them)"
    } else {
        return Ok(s.to_string());
    };
    Err(LimitError::IfaceName {
        name: s.to_string(),
        why,
    })
}

/// Trial division; table sizes are at most a few million.
pub const fn is_prime(n: u32) -> bool {
    if n < 2 {
        return false;
    }
    let n = n as u64;
    let mut d = 2u64;
    while d * d <= n {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 1;
    }
    true
}

/// The smallest prime at least `n` (at least 2); `u32::MAX` when there is none below it.
pub const fn next_prime(n: u32) -> u32 {
    let mut p = if n < 2 { 2 } else { n };
    while !is_prime(p) {
        if p == u32::MAX {
            return u32::MAX;
        }
        p += 1;
    }
    p
}

/// Operator input as an error message shows it: at most [`ECHO_CHARS`] characters (then
/// `…`), control characters, quotes and backslashes escaped as in Rust (`\n`, `\"`,
/// `\u{1b}`), so the message stays one readable line. With double quotes around.
pub fn quoted(s: &str) -> Quoted<'_> {
    Quoted(s)
}

/// Like [`quoted`] but without the quotes, for text that is quoted already (clap's
/// `'...'`) or that is shown bare (a number, an interface name).
pub fn cut(s: &str) -> String {
    let q = quoted(s).to_string();
    q[1..q.len() - 1].to_string()
}

/// A path as an error message shows it: [`cut`] of its text.
pub fn shown_path(path: &std::path::Path) -> String {
    cut(&path.to_string_lossy())
}

/// See [`quoted`].
pub struct Quoted<'a>(&'a str);

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (head, more) = match self.0.char_indices().nth(ECHO_CHARS) {
            Some((at, _)) => (&self.0[..at], true),
            None => (self.0, false),
        };
        let escaped = format!("{head:?}");
        if more {
            write!(f, "{}…\"", &escaped[..escaped.len() - 1])
        } else {
            f.write_str(&escaped)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_range_message_per_limit_whatever_the_number() {
        let cases: &[(&str, &str)] = &[
            ("65536", "weight 65536 out of range (0-65535)"),
            ("4294967296", "weight 4294967296 out of range (0-65535)"),
            ("-1", "weight -1 out of range (0-65535)"),
            (
                "99999999999999999999999",
                "weight 99999999999999999999999 out of range (0-65535)",
            ),
            ("x", "weight \"x\" is not a whole number"),
            ("", "weight \"\" is not a whole number"),
            ("-", "weight \"-\" is not a whole number"),
            ("+5", "weight \"+5\" is not a whole number"),
            ("1.5", "weight \"1.5\" is not a whole number"),
            (" 5", "weight \" 5\" is not a whole number"),
        ];
        for (input, message) in cases {
            assert_eq!(
                parse_weight(input).unwrap_err().to_string(),
                *message,
                "{input:?}"
            );
        }
        // The daemon's check of a number it received says the same.
        assert_eq!(
            WEIGHT.check(70000).unwrap_err().to_string(),
            "weight 70000 out of range (0-65535)"
        );
        assert_eq!(
            WEIGHT.check(4294967296).unwrap_err().to_string(),
            "weight 4294967296 out of range (0-65535)"
        );
        for (input, value) in [("0", 0), ("-0", 0), ("65535", 65535), ("007", 7)] {
            assert_eq!(parse_weight(input), Ok(value), "{input:?}");
        }
        assert_eq!(WEIGHT.check(65535), Ok(65535));
    }

    #[test]
    fn table_sizes_need_a_prime_with_room_for_one_backend() {
        assert_eq!(TABLE_SIZE.min, 101);
        assert_eq!(TABLE_AREA.min, 202);
        assert_eq!(FLOW_ENTRIES.min, 2);
        let cases: &[(&str, Result<u32, &str>)] = &[
            ("65537", Ok(65537)),
            ("101", Ok(101)),
            ("3", Err("table size 3 out of range (101-4294967295)")),
            ("100", Err("table size 100 out of range (101-4294967295)")),
            ("-7", Err("table size -7 out of range (101-4294967295)")),
            (
                "4294967296",
                Err("table size 4294967296 out of range (101-4294967295)"),
            ),
            (
                "65536",
                Err("table size 65536 is not a prime number (Maglev needs a prime)"),
            ),
            ("big", Err("table size \"big\" is not a whole number")),
        ];
        for (input, want) in cases {
            let got = parse_table_size(input).map_err(|e| e.to_string());
            assert_eq!(got, want.map_err(str::to_string), "{input:?}");
        }
        assert_eq!(
            check_table_size(7).unwrap_err(),
            parse_table_size("7").unwrap_err()
        );
        assert_eq!(check_table_size_with(7, 0), Ok(7));
        assert_eq!(check_table_size_with(2, 1), Ok(2));
    }

    #[test]
    fn room_and_the_size_that_makes_room() {
        let cases = [
            // (size, slots per backend, room)
            (65537, 100, 655),
            (101, 100, 1),
            (211, 100, 2),
            (7, 0, u32::MAX),
            (7, 1, 7),
        ];
        for (size, per, room) in cases {
            assert_eq!(backends_room(size, per), room, "{size}/{per}");
        }
        assert_eq!(table_size_for(1, 100), Some(101));
        assert_eq!(table_size_for(3, 100), Some(307));
        assert_eq!(table_size_for(656, 100), Some(65609));
        assert_eq!(table_size_for(4096, 100), Some(409609));
        assert_eq!(table_size_for(u32::MAX, 100), None);
        assert!(is_prime(65609) && is_prime(409609) && is_prime(307));
    }

    #[test]
    fn interface_names_follow_linux() {
        let cases: &[(&str, Option<&str>)] = &[
            ("eth0", None),
            ("xlbL1234567890a", None),
            ("veth-lb.10", None),
            ("", Some("interface name \"\" is empty")),
            (
                "xlbL1234567890ab",
                Some(
                    "interface name \"xlbL1234567890ab\" is longer than 15 bytes (Linux's IFNAMSIZ)",
                ),
            ),
            (".", Some("interface name \".\" is not allowed by Linux")),
            (
                "eth0\n",
                Some(
                    "interface name \"eth0\\n\" has a '/', ':', space or control character (Linux does not allow them)",
                ),
            ),
            ("a b", Some("has a '/'")),
            ("eth0:1", Some("has a '/'")),
            ("a/b", Some("has a '/'")),
        ];
        for (name, want) in cases {
            match (parse_iface(name), want) {
                (Ok(n), None) => assert_eq!(&n, name),
                (Err(e), Some(w)) => assert!(e.to_string().contains(w), "{e} / {w}"),
                (got, _) => panic!("{name:?}: {got:?}"),
            }
        }
        let e = parse_iface(&"e".repeat(10_000)).unwrap_err().to_string();
        assert!(e.chars().count() < 140, "{e}");
    }

    #[test]
    fn primes() {
        let primes: Vec<u32> = (0..30).filter(|&n| is_prime(n)).collect();
        assert_eq!(primes, [2, 3, 5, 7, 11, 13, 17, 19, 23, 29]);
        assert!(is_prime(65537));
        assert!(!is_prime(65536));
        assert!(is_prime(4_294_967_291));
        assert!(!is_prime(u32::MAX));
        assert_eq!(next_prime(0), 2);
        assert_eq!(next_prime(100), 101);
        assert_eq!(next_prime(4_294_967_292), u32::MAX);
    }

    #[test]
    fn echoed_input_is_cut_and_escaped() {
        let long = "a".repeat(10_000);
        let cases: &[(&str, &str)] = &[
            ("198.18.0.20:80/tcp", "\"198.18.0.20:80/tcp\""),
            ("198.18.0.20:80/tcp\n", "\"198.18.0.20:80/tcp\\n\""),
            ("a\tb\r\x1b[31m", "\"a\\tb\\r\\u{1b}[31m\""),
            ("say \"hi\"\\", "\"say \\\"hi\\\"\\\\\""),
            ("", "\"\""),
        ];
        for (input, shown) in cases {
            assert_eq!(quoted(input).to_string(), *shown, "{input:?}");
        }
        let shown = quoted(&long).to_string();
        assert_eq!(shown, format!("\"{}…\"", "a".repeat(ECHO_CHARS)));
        assert_eq!(quoted(&"é".repeat(65)).to_string().chars().count(), 67);
        assert_eq!(
            quoted(&"é".repeat(64)).to_string(),
            format!("\"{}\"", "é".repeat(64))
        );
        assert_eq!(cut("eth0\n"), "eth0\\n");
        assert_eq!(
            shown_path(std::path::Path::new("/run/xlb/xlbd.sock")),
            "/run/xlb/xlbd.sock"
        );
        let p = std::path::PathBuf::from(format!("/tmp/{long}\n"));
        assert_eq!(
            shown_path(&p),
            format!("/tmp/{}…", "a".repeat(ECHO_CHARS - 5))
        );
        assert_eq!(cut(&long).chars().count(), ECHO_CHARS + 1);
    }
}

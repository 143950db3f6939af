//! Fixtures: a description, the packets that set the maps up (earlier packets of the same
//! flow), the input packet, and what the program must do with it. [`run_all`] runs a table
//! of them and reports each failure with the input, the expected and the actual output
//! (hex) and the header fields that differ.

use std::collections::BTreeMap;

use anyhow::Result;
use etherparse::PacketHeaders;

use crate::harness::Harness;
use crate::plan::BACKEND_MAC;
use crate::validate::validate;
use crate::{XDP_ABORTED, XDP_REDIRECT, XDP_TX, hex, verdict_name};

/// The link a packet arrives on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Client,
    Backend,
}

impl Side {
    /// Frames from the backend's MAC arrive on the backend link, all others on the client link.
    pub fn of(frame: &[u8]) -> Side {
        if frame.get(6..12) == Some(&BACKEND_MAC[..]) {
            Side::Backend
        } else {
            Side::Client
        }
    }
}

/// What a fixture expects of the program.
#[derive(Clone, Debug)]
pub enum Expect {
    /// This verdict, and the packet leaves exactly as given.
    Out(u32, Vec<u8>),
    /// This verdict, and the packet is untouched.
    Unchanged(u32),
}

#[derive(Clone, Debug)]
pub struct Fixture {
    /// The topic, for the summary (e.g. "fragments").
    pub category: &'static str,
    pub desc: String,
    /// Packets run first, in order (their results are not checked beyond never ABORTED).
    pub before: Vec<Vec<u8>>,
    pub input: Vec<u8>,
    pub expect: Expect,
    /// Run through the decapsulation program (`xlb_decap`) instead of the balancer.
    pub decap: bool,
}

impl Fixture {
    pub fn new(
        category: &'static str,
        desc: impl Into<String>,
        input: Vec<u8>,
        expect: Expect,
    ) -> Self {
        Fixture {
            category,
            desc: desc.into(),
            before: Vec::new(),
            input,
            expect,
            decap: false,
        }
    }

    /// The same fixture, for the decapsulation program.
    pub fn decap(mut self) -> Self {
        self.decap = true;
        self
    }

    /// The same fixture, run after `packets` (e.g. the packet that makes the flow).
    pub fn after(mut self, packets: impl IntoIterator<Item = Vec<u8>>) -> Self {
        self.before.extend(packets);
        self
    }
}

/// The outcome of a table.
#[derive(Debug, Default)]
pub struct Report {
    /// Fixtures per category.
    pub per_category: BTreeMap<&'static str, usize>,
    pub failures: Vec<String>,
}

impl Report {
    pub fn summary(&self) -> String {
        let total: usize = self.per_category.values().sum();
        let cats: Vec<String> = self
            .per_category
            .iter()
            .map(|(c, n)| format!("{c} {n}"))
            .collect();
        format!(
            "{total} fixtures ({}), {} failed",
            cats.join(", "),
            self.failures.len()
        )
    }
}

/// Runs every fixture, in order, on one harness.
pub fn run_all(h: &mut Harness, fixtures: &[Fixture]) -> Result<Report> {
    let mut report = Report::default();
    for f in fixtures {
        *report.per_category.entry(f.category).or_default() += 1;
        if let Some(problem) = run_one(h, f)? {
            report
                .failures
                .push(format!("[{}] {}:\n{problem}", f.category, f.desc));
        }
    }
    Ok(report)
}

/// Runs one fixture; `Some(why)` when it fails.
fn run_one(h: &mut Harness, f: &Fixture) -> Result<Option<String>> {
    for p in &f.before {
        let (verdict, _) = h.run(p, Side::of(p))?;
        if verdict == XDP_ABORTED {
            return Ok(Some(format!("  setup packet was ABORTED: {}", hex(p))));
        }
    }
    let (verdict, out) = if f.decap {
        h.run_decap(&f.input)?
    } else {
        h.run(&f.input, Side::of(&f.input))?
    };
    let (want_verdict, want_out) = match &f.expect {
        Expect::Out(v, p) => (*v, p),
        Expect::Unchanged(v) => (*v, &f.input),
    };
    let mut problems = Vec::new();
    if verdict != want_verdict {
        problems.push(format!(
            "  verdict {} (want {})",
            verdict_name(verdict),
            verdict_name(want_verdict)
        ));
    }
    if &out != want_out {
        problems.push(format!(
            "  output differs: {}\n  got  {}\n  want {}",
            field_diff(&out, want_out),
            hex(&out),
            hex(want_out)
        ));
    }
    let forwarded = verdict == XDP_TX || verdict == XDP_REDIRECT;
    if (forwarded || out != f.input)
        && let Err(e) = validate(&out)
    {
        problems.push(format!("  output invalid: {e}"));
    }
    if problems.is_empty() {
        return Ok(None);
    }
    Ok(Some(format!(
        "  input {}\n{}",
        hex(&f.input),
        problems.join("\n")
    )))
}

/// The headers that differ between two frames, as etherparse decodes them.
pub fn field_diff(got: &[u8], want: &[u8]) -> String {
    let (g, w) = match (
        PacketHeaders::from_ethernet_slice(got),
        PacketHeaders::from_ethernet_slice(want),
    ) {
        (Ok(g), Ok(w)) => (g, w),
        (Err(e), _) => return format!("the output does not parse ({e})"),
        (_, Err(e)) => return format!("the expected frame does not parse ({e})"),
    };
    let mut diffs = Vec::new();
    let mut cmp = |name: &str, a: String, b: String| {
        if a != b {
            diffs.push(format!("\n    {name}: got {a}\n    {name}: want {b}"));
        }
    };
    cmp("link", format!("{:?}", g.link), format!("{:?}", w.link));
    cmp(
        "vlan",
        format!("{:?}", g.link_exts),
        format!("{:?}", w.link_exts),
    );
    cmp("net", format!("{:?}", g.net), format!("{:?}", w.net));
    cmp(
        "transport",
        format!("{:?}", g.transport),
        format!("{:?}", w.transport),
    );
    cmp(
        "payload",
        format!("{:02x?}", g.payload.slice()),
        format!("{:02x?}", w.payload.slice()),
    );
    if diffs.is_empty() {
        "(same headers; the bytes differ)".into()
    } else {
        diffs.concat()
    }
}

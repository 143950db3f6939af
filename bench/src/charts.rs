//! PNG bar charts of the results (plotters, bitmap backend, DejaVu Sans through ab_glyph).

use std::path::Path;

use anyhow::{Context as _, Result, anyhow};
use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;
use plotters::style::FontStyle;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::balancers::Kind;
use crate::report::{self, Results};

/// From the Debian package fonts-dejavu-core (installed by `cargo xtask setup`).
const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";
const COLORS: [RGBColor; 5] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x94, 0x67, 0xbd),
];

/// A bar chart's data: a title and one labelled value (or none) per bar.
struct Bars<'a> {
    title: &'a str,
    bars: Vec<(&'a str, Option<f64>)>,
    /// Colour by pairs (the first two colours, alternating) rather than bar by bar.
    pairs: bool,
}

/// Registers the font once per process.
fn font() -> Result<()> {
    static ONCE: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    ONCE.get_or_init(|| {
        let bytes = std::fs::read(FONT).map_err(|e| format!("{FONT}: {e}"))?;
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
            .map_err(|_| format!("{FONT} is not a font"))
    })
    .clone()
    .map_err(|e| anyhow!(e))
}

/// `per_packet.png`, `e2e.png` and `bpf_stats.png` in `dir`.
pub fn draw(r: &Results, dir: &Path) -> Result<()> {
    font()?;
    let p = &r.per_packet_ns;
    let per_packet = Bars {
        title: "ns per packet (BPF_PROG_TEST_RUN), lower is better",
        bars: vec![
            ("MAC swap", Some(p.xdp_tx_limit)),
            ("fwd only", Some(p.fwd_yardstick)),
            ("est. TCP", Some(p.xlb_established)),
            ("est. UDP", Some(p.xlb_established_udp)),
            ("new flow", Some(p.xlb_new_flow)),
            ("miss, no entry", Some(p.xlb_miss_no_entry)),
            ("reply", Some(p.xlb_reply)),
            ("pass", Some(p.xlb_pass)),
        ],
        pairs: false,
    };
    let path = dir.join("per_packet.png");
    let root = BitMapBackend::new(&path, (1000, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    bar_chart(&root, &per_packet)?;
    root.present().map_err(plot_err)?;

    let path = dir.join("e2e.png");
    let root = BitMapBackend::new(&path, (2000, 820)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    for (area, f) in root.split_evenly((2, 4)).iter().zip(&report::FIGURES) {
        let bars = Bars {
            title: f.chart,
            bars: r
                .e2e
                .0
                .iter()
                .map(|(k, s)| (short(*k), (f.get)(s)))
                .collect(),
            pairs: false,
        };
        bar_chart(area, &bars)?;
    }
    root.present().map_err(plot_err)?;

    // bpf_stats: xlb and the yardstick, load by load.
    let x = r.e2e.get(Kind::Xlb).and_then(|s| s.bpf_ns);
    let y = r.e2e.get(Kind::Yardstick).and_then(|s| s.bpf_ns);
    let path = dir.join("bpf_stats.png");
    let root = BitMapBackend::new(&path, (1300, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let (x, y) = (x.unwrap_or_default(), y.unwrap_or_default());
    let mut bars = Vec::new();
    for ((key, _, a), (_, _, b)) in x.rows().into_iter().zip(y.rows()) {
        bars.push((key, a));
        bars.push(("fwd", b));
    }
    bar_chart(
        &root,
        &Bars {
            title: "ns per packet under real traffic (bpf_stats): xlb (blue), forward-only yardstick (red)",
            bars,
            pairs: true,
        },
    )?;
    root.present().map_err(plot_err)?;
    Ok(())
}

fn short(k: Kind) -> &'static str {
    match k {
        Kind::Xlb => "xlb",
        Kind::IptablesDnat => "iptables",
        Kind::Haproxy => "HAProxy",
        Kind::Nginx => "nginx",
        Kind::Yardstick => "XDP fwd only",
    }
}

fn bar_chart<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    b: &Bars,
) -> Result<()> {
    if b.bars.is_empty() {
        // Nothing measured (e.g. `--only` named no balancer): an empty panel.
        return Ok(());
    }
    let max = b.bars.iter().filter_map(|(_, v)| *v).fold(0.0, f64::max);
    let top = if max > 0.0 { max * 1.2 } else { 1.0 };
    let n = b.bars.len() as u32;
    let mut chart = ChartBuilder::on(area)
        .caption(b.title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d((0..n - 1).into_segmented(), 0.0..top)
        .map_err(plot_err)?;
    let names: Vec<&str> = b.bars.iter().map(|(name, _)| *name).collect();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .light_line_style(WHITE)
        .y_label_formatter(&|v| report::num(*v))
        .x_labels(b.bars.len())
        .x_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) => names.get(*i as usize).copied().unwrap_or("").into(),
            _ => String::new(),
        })
        .label_style(("sans-serif", 15))
        .draw()
        .map_err(plot_err)?;
    let label = ("sans-serif", 15)
        .into_font()
        .into_text_style(area)
        .pos(Pos::new(HPos::Center, VPos::Bottom));
    for (i, (_, v)) in b.bars.iter().enumerate() {
        let i = i as u32;
        let (text, height) = match v {
            Some(v) => (report::num(*v), *v),
            None => ("n/a".to_string(), 0.0),
        };
        let color = if b.pairs {
            COLORS[i as usize % 2]
        } else {
            COLORS[i as usize % COLORS.len()]
        };
        chart
            .draw_series([Rectangle::new(
                [
                    (SegmentValue::Exact(i), 0.0),
                    (SegmentValue::Exact(i + 1), height),
                ],
                color.mix(0.85).filled(),
            )])
            .map_err(plot_err)?;
        chart
            .draw_series([Text::new(
                text,
                (SegmentValue::CenterOf(i), height + top * 0.02),
                label.clone(),
            )])
            .map_err(plot_err)?;
    }
    Ok(())
}

fn plot_err<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow!("drawing a chart: {e}")
}

/// One panel of [`panels`]: its title and its labelled bars (a missing value: n/a).
pub type Panel<'a> = (&'a str, Vec<(&'a str, Option<f64>)>);

/// A grid of `grid.0` rows by `grid.1` columns of bar charts under one `title`, each panel
/// a (title, labelled bars) pair, into the PNG at `path`.
pub fn panels(path: &Path, title: &str, grid: (usize, usize), data: &[Panel<'_>]) -> Result<()> {
    font()?;
    let (w, h) = (500 * grid.1 as u32, 410 * grid.0 as u32 + 40);
    let root = BitMapBackend::new(path, (w, h)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let root = root.titled(title, ("sans-serif", 24)).map_err(plot_err)?;
    for (area, (t, bars)) in root.split_evenly(grid).iter().zip(data) {
        let b = Bars {
            title: t,
            bars: bars.clone(),
            pairs: false,
        };
        bar_chart(area, &b)?;
    }
    root.present().map_err(plot_err)?;
    Ok(())
}

/// For callers that want to check the font before a long run.
pub fn check_font() -> Result<()> {
    font().context("charts need the DejaVu Sans font (run `cargo xtask setup`)")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Draws one chart with a missing bar (as HAProxy's UDP) to a file under /tmp.
    #[test]
    fn draws_a_bar_chart() {
        if font().is_err() {
            eprintln!("SKIPPED: no {FONT}");
            return;
        }
        let path = std::env::temp_dir().join(format!("xlb-chart-{}.png", std::process::id()));
        {
            let root = BitMapBackend::new(&path, (500, 300)).into_drawing_area();
            root.fill(&WHITE).unwrap();
            let bars = Bars {
                title: "test",
                bars: vec![("a", Some(3.0)), ("b", None), ("c", Some(1234.0))],
                pairs: false,
            };
            bar_chart(&root, &bars).unwrap();
            root.present().unwrap();
        }
        assert!(std::fs::metadata(&path).unwrap().len() > 1000);
        if std::env::var_os("XLB_KEEP_CHART").is_none() {
            std::fs::remove_file(&path).unwrap();
        }
    }
}

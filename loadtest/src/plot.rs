//! PNG plots of a run's timeline: latency percentiles and deliveries per
//! second, second by second.

use crate::report::Report;
use plotters::prelude::*;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Where a TrueType font is looked for (`HERALD_LOADTEST_FONT` first);
/// Debian's `fonts-dejavu-core` provides the first.
const FONTS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/System/Library/Fonts/Supplemental/Arial.ttf",
];

/// Registers a font for the plots' text, once per process.
fn font() -> Result<(), String> {
    static LOADED: OnceLock<Result<(), String>> = OnceLock::new();
    LOADED
        .get_or_init(|| {
            let candidates = std::env::var("HERALD_LOADTEST_FONT")
                .ok()
                .into_iter()
                .chain(FONTS.iter().map(|s| (*s).to_owned()));
            for path in candidates {
                if let Ok(bytes) = std::fs::read(&path) {
                    // Plotters keeps fonts for the life of the process.
                    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                    if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
                        .is_ok()
                    {
                        return Ok(());
                    }
                }
            }
            Err(
                "no TrueType font found for the plots: install fonts-dejavu-core \
                 or set HERALD_LOADTEST_FONT to a .ttf file"
                    .to_owned(),
            )
        })
        .clone()
}

/// Writes `<stem>-latency.png` and `<stem>-deliveries.png` beside `json`
/// (the result file), when the run has a timeline.
pub fn write(report: &Report, json: &Path) -> Result<Vec<PathBuf>, String> {
    if report.timeline.is_empty() {
        return Ok(Vec::new());
    }
    font()?;
    let stem = json.with_extension("");
    let stem = stem.to_string_lossy();
    let latency = PathBuf::from(format!("{stem}-latency.png"));
    let deliveries = PathBuf::from(format!("{stem}-deliveries.png"));
    latency_plot(report, &latency).map_err(|e| format!("{}: {e}", latency.display()))?;
    deliveries_plot(report, &deliveries).map_err(|e| format!("{}: {e}", deliveries.display()))?;
    Ok(vec![latency, deliveries])
}

type PlotResult = Result<(), Box<dyn std::error::Error>>;
/// A latency line: its name, colour and which percentile it draws.
type Line = (&'static str, RGBColor, fn(&crate::report::Latency) -> f64);

/// "fanout: subscribers_per_channel 1000, rate 200, ..." without the URLs.
fn title(report: &Report) -> String {
    let mut parts = Vec::new();
    if let Some(map) = report.parameters.as_object() {
        for (key, value) in map {
            match key.as_str() {
                "urls" => parts.push(format!(
                    "{} gateway URL(s)",
                    value.as_array().map_or(0, Vec::len)
                )),
                _ => parts.push(format!("{key} {value}")),
            }
        }
    }
    format!("{}: {}", report.scenario, parts.join(", "))
}

fn latency_plot(report: &Report, path: &Path) -> PlotResult {
    let seconds = &report.timeline;
    let root = BitMapBackend::new(path, (1000, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let top = seconds
        .iter()
        .map(|s| s.latency_ms.max)
        .fold(0.0f64, f64::max)
        .max(1.0);
    let bottom = seconds
        .iter()
        .filter(|s| s.deliveries > 0)
        .map(|s| s.latency_ms.p50)
        .fold(f64::MAX, f64::min)
        .clamp(0.01, top)
        / 2.0;
    // Log scale: a run's median and its worst case are often three
    // orders of magnitude apart.
    let mut chart = ChartBuilder::on(&root)
        .caption(title(report), ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(64)
        .build_cartesian_2d(
            0f64..seconds.len().max(1) as f64,
            (bottom..top * 1.5).log_scale(),
        )?;
    chart
        .configure_mesh()
        .x_desc("second of the run (by delivery time)")
        .y_desc("publish-to-delivery latency, ms")
        .draw()?;
    let series: [Line; 5] = [
        ("p50", RGBColor(31, 119, 180), |l| l.p50),
        ("p90", RGBColor(44, 160, 44), |l| l.p90),
        ("p99", RGBColor(255, 127, 14), |l| l.p99),
        ("p99.9", RGBColor(214, 39, 40), |l| l.p999),
        ("max", RGBColor(110, 110, 110), |l| l.max),
    ];
    for (name, color, pick) in series {
        let points: Vec<(f64, f64)> = seconds
            .iter()
            .filter(|s| s.deliveries > 0)
            .map(|s| (s.second as f64 + 0.5, pick(&s.latency_ms).max(bottom)))
            .collect();
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))?
            .label(name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()?;
    root.present()?;
    Ok(())
}

fn deliveries_plot(report: &Report, path: &Path) -> PlotResult {
    let seconds = &report.timeline;
    let root = BitMapBackend::new(path, (1000, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let top = seconds
        .iter()
        .map(|s| s.deliveries)
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let mut chart = ChartBuilder::on(&root)
        .caption(title(report), ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(80)
        .build_cartesian_2d(0f64..seconds.len().max(1) as f64, 0f64..top * 1.1)?;
    chart
        .configure_mesh()
        .x_desc("second of the run (by delivery time)")
        .y_desc("deliveries per second")
        .y_label_formatter(&|v| format!("{v:.0}"))
        .draw()?;
    let points: Vec<(f64, f64)> = seconds
        .iter()
        .map(|s| (s.second as f64 + 0.5, s.deliveries as f64))
        .collect();
    chart.draw_series(LineSeries::new(
        points,
        RGBColor(31, 119, 180).stroke_width(2),
    ))?;
    root.present()?;
    Ok(())
}

//! `OUT/losses.png`: every loss term of `metrics.jsonl` against the step (log scale), beside
//! the codebook usage and AR top-1 accuracy (0–1), redrawn with each sample grid.
//!
//! Text needs a TTF font (DejaVu Sans from Debian's fonts-dejavu-core, or `EOSTOK_FONT=path`);
//! without one the curves are drawn unlabelled rather than failing the run.

use anyhow::{anyhow, Context, Result};
use plotters::prelude::*;
use std::collections::BTreeMap;
use std::path::Path;

/// Keys of a metrics line that are not loss terms.
const NOT_LOSSES: &[&str] = &["step", "lr", "grad_norm", "phase", "images_per_s", "codebook_usage", "perplexity", "ar_top1", "nan_skipped", "disc_real_logit", "disc_fake_logit"];
/// Plotted on the right panel, in [0, 1].
const RATES: &[&str] = &["codebook_usage", "ar_top1"];

type Series = BTreeMap<String, Vec<(f64, f64)>>;

/// (loss terms, rates) series from metrics.jsonl; unparsable lines are skipped.
pub fn read_series(metrics: &Path) -> Result<(Series, Series)> {
    let text = std::fs::read_to_string(metrics).with_context(|| format!("{}: cannot read", metrics.display()))?;
    let (mut losses, mut rates) = (Series::new(), Series::new());
    for line in text.lines() {
        let Ok(serde_json::Value::Object(rec)) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        let Some(step) = rec.get("step").and_then(|v| v.as_f64()) else { continue };
        for (k, v) in &rec {
            let Some(v) = v.as_f64().filter(|v| v.is_finite()) else { continue };
            if RATES.contains(&k.as_str()) {
                rates.entry(k.clone()).or_default().push((step, v));
            } else if !NOT_LOSSES.contains(&k.as_str()) {
                losses.entry(k.clone()).or_default().push((step, v));
            }
        }
    }
    Ok((losses, rates))
}

fn register_font() -> bool {
    static DONE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *DONE.get_or_init(|| {
        let path = std::env::var("EOSTOK_FONT").unwrap_or_else(|_| "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf".into());
        match std::fs::read(&path) {
            Ok(bytes) => plotters::style::register_font("sans-serif", FontStyle::Normal, Box::leak(bytes.into_boxed_slice())).is_ok(),
            Err(_) => false,
        }
    })
}

const COLORS: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// Draws `out` (written to a temp file, then renamed) from `metrics`.
pub fn plot_losses(metrics: &Path, out: &Path) -> Result<()> {
    let (losses, rates) = read_series(metrics)?;
    if losses.is_empty() {
        return Ok(());
    }
    let text = register_font();
    let tmp = out.with_extension("tmp.png");
    {
        let root = BitMapBackend::new(&tmp, (1200, 500)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| anyhow!("plot: {e}"))?;
        let (left, right) = root.split_horizontally(800);
        let max_step = losses.values().flatten().map(|p| p.0).fold(1.0, f64::max);
        // Log scale of |value| (the entropy term is negative by construction).
        let mags = losses.values().flatten().map(|p| p.1.abs().max(1e-6));
        let (lo, hi) = mags.fold((f64::MAX, f64::MIN), |(a, b), v| (a.min(v), b.max(v)));
        let mut chart = ChartBuilder::on(&left);
        chart.margin(10).x_label_area_size(if text { 30 } else { 0 }).y_label_area_size(if text { 50 } else { 0 });
        if text {
            chart.caption("loss terms (|value|, log scale)", ("sans-serif", 18));
        }
        let mut chart = chart.build_cartesian_2d(0f64..max_step, (lo * 0.8..hi * 1.25).log_scale()).map_err(|e| anyhow!("plot: {e}"))?;
        if text {
            chart.configure_mesh().x_desc("step").draw().map_err(|e| anyhow!("plot: {e}"))?;
        }
        for (i, (name, pts)) in losses.iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            let negative = pts.iter().all(|p| p.1 < 0.0);
            let series = chart
                .draw_series(LineSeries::new(pts.iter().map(|&(s, v)| (s, v.abs().max(1e-6))), color.stroke_width(2)))
                .map_err(|e| anyhow!("plot: {e}"))?;
            if text {
                let label = if negative { format!("{name} (negative)") } else { name.clone() };
                series.label(label).legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2)));
            }
        }
        if text {
            chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw().map_err(|e| anyhow!("plot: {e}"))?;
        }
        let mut chart = ChartBuilder::on(&right);
        chart.margin(10).x_label_area_size(if text { 30 } else { 0 }).y_label_area_size(if text { 40 } else { 0 });
        if text {
            chart.caption("codebook usage, AR top-1", ("sans-serif", 18));
        }
        let mut chart = chart.build_cartesian_2d(0f64..max_step, 0f64..1.0).map_err(|e| anyhow!("plot: {e}"))?;
        if text {
            chart.configure_mesh().x_desc("step").draw().map_err(|e| anyhow!("plot: {e}"))?;
        }
        for (i, (name, pts)) in rates.iter().enumerate() {
            let color = COLORS[(i + 3) % COLORS.len()];
            let series = chart.draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2))).map_err(|e| anyhow!("plot: {e}"))?;
            if text {
                series.label(name.clone()).legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2)));
            }
        }
        if text {
            chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw().map_err(|e| anyhow!("plot: {e}"))?;
        }
        root.present().map_err(|e| anyhow!("plot: {e}"))?;
    }
    std::fs::rename(&tmp, out).with_context(|| format!("{}: cannot write", out.display()))?;
    Ok(())
}

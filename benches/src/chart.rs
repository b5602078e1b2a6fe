//! The PNG chart of `vs-llama`: tokens/s per file and type for us, llama.cpp and candle
//! (median bars, min–max whiskers). Text needs a TTF font (DejaVu Sans by default,
//! `EOSTOK_BENCH_FONT=path` to choose).

use crate::util::Stats;
use crate::vs::VsRow;
use anyhow::{anyhow, Context, Result};
use plotters::prelude::*;
use std::path::Path;

fn register_font() -> Result<()> {
    let path = std::env::var("EOSTOK_BENCH_FONT")
        .unwrap_or_else(|_| "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf".into());
    let bytes = std::fs::read(&path).with_context(|| {
        format!("{path}: cannot read a font for the chart (set EOSTOK_BENCH_FONT)")
    })?;
    plotters::style::register_font(
        "sans-serif",
        FontStyle::Normal,
        Box::leak(bytes.into_boxed_slice()),
    )
    .map_err(|_| anyhow!("{path}: not a usable font"))
}

pub fn tokens_chart(path: &Path, rows: &[VsRow], threads: usize) -> Result<()> {
    register_font()?;
    let series: [(&str, RGBColor, fn(&VsRow) -> Option<Stats>); 3] = [
        ("eostok-run (ours)", RGBColor(31, 119, 180), |r| {
            Some(r.ours)
        }),
        ("llama.cpp", RGBColor(255, 127, 14), |r| r.llama),
        ("candle", RGBColor(44, 160, 44), |r| r.candle),
    ];
    let top = rows
        .iter()
        .flat_map(|r| series.iter().filter_map(move |s| (s.2)(r).map(|x| x.max)))
        .fold(1.0, f64::max)
        * 1.15;
    let tmp = path.with_extension("png.tmp.png");
    {
        let root = BitMapBackend::new(&tmp, (1000, 560)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
        let n = rows.len().max(1);
        let mut chart = ChartBuilder::on(&root)
            .caption(
                format!("AR decode tokens/s, same GGUF file, {threads} threads (median, min–max)"),
                ("sans-serif", 22),
            )
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..n as f64, 0f64..top)
            .map_err(|e| anyhow!("{e}"))?;
        let labels: Vec<String> = rows
            .iter()
            .map(|r| format!("{} {}", r.config, r.ty))
            .collect();
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(n * 2 + 1)
            .x_label_formatter(&|x| {
                let i = x.floor() as usize;
                if (x - x.floor() - 0.5).abs() < 0.01 && i < labels.len() {
                    format!("llama-{}", labels[i])
                } else {
                    String::new()
                }
            })
            .y_desc("tokens/s")
            .label_style(("sans-serif", 15))
            .draw()
            .map_err(|e| anyhow!("{e}"))?;
        let w = 0.8 / series.len() as f64;
        for (k, (name, color, get)) in series.iter().enumerate() {
            let bars: Vec<(f64, Stats)> = rows
                .iter()
                .enumerate()
                .filter_map(|(i, r)| get(r).map(|s| (i as f64 + 0.1 + k as f64 * w, s)))
                .collect();
            chart
                .draw_series(bars.iter().map(|(x, s)| {
                    Rectangle::new([(*x, 0.0), (*x + w * 0.92, s.median)], color.filled())
                }))
                .map_err(|e| anyhow!("{e}"))?
                .label(*name)
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 6), (x + 14, y + 6)], color.filled())
                });
            chart
                .draw_series(bars.iter().map(|(x, s)| {
                    PathElement::new(
                        vec![(*x + w * 0.46, s.min), (*x + w * 0.46, s.max)],
                        BLACK.stroke_width(2),
                    )
                }))
                .map_err(|e| anyhow!("{e}"))?;
            chart
                .draw_series(bars.iter().map(|(x, s)| {
                    Text::new(
                        format!("{:.0}", s.median),
                        (*x + w * 0.05, s.max + top * 0.01),
                        ("sans-serif", 13)
                            .into_font()
                            .transform(FontTransform::None),
                    )
                }))
                .map_err(|e| anyhow!("{e}"))?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .label_font(("sans-serif", 15))
            .draw()
            .map_err(|e| anyhow!("{e}"))?;
        root.present().map_err(|e| anyhow!("{e}"))?;
    }
    std::fs::rename(&tmp, path)?;
    Ok(())
}

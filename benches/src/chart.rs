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

/// A bar series of the tokens chart: its legend, colour and value per row.
type Series = (&'static str, RGBColor, fn(&VsRow) -> Option<Stats>);

pub fn tokens_chart(path: &Path, rows: &[VsRow], threads: usize) -> Result<()> {
    register_font()?;
    let series: [Series; 3] = [
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

/// One precision of `eostok-bench precision`: its label, bits per weight of the matrices,
/// file size and one Fréchet distance per feature net.
pub struct PrecisionPoint {
    pub label: String,
    pub bpw: f64,
    pub mib: f64,
    pub fd: Vec<f64>,
}

/// An x coordinate of a precision point.
type XOf = fn(&PrecisionPoint) -> f64;

/// `docs/precision.png`: each feature net's FD against bits per weight (left) and file
/// size (right), points labelled by type, the real floor as a dashed line. Without a font
/// the chart is drawn without text rather than failing a long run at its end.
pub fn precision_chart(
    path: &Path,
    points: &[PrecisionPoint],
    nets: &[eostok_train::eval::features::FeatureNet],
    floor: Option<&[f64]>,
    config: &str,
    n: usize,
) -> Result<()> {
    let text = match register_font() {
        Ok(()) => true,
        Err(e) => {
            eprintln!("warning: {e:#}; the chart has no text");
            false
        }
    };
    let tmp = path.with_file_name(format!(
        ".{}.tmp-{}.png",
        path.file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default(),
        std::process::id()
    ));
    let rows = nets.len().max(1);
    {
        let root = BitMapBackend::new(&tmp, (1200, 60 + 420 * rows as u32)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
        let root = if text {
            root.titled(
                &format!("Fréchet distance vs precision ({config}, n={n}; not FID)"),
                ("sans-serif", 24),
            )
            .map_err(|e| anyhow!("{e}"))?
        } else {
            root.margin(30, 0, 0, 0)
        };
        let panels = root.split_evenly((rows, 2));
        let xs: [(&str, XOf); 2] = [
            ("bits per weight (weight matrices)", |p| p.bpw),
            ("file size (MiB)", |p| p.mib),
        ];
        for (k, net) in nets.iter().enumerate() {
            let floor_v = floor.and_then(|f| f.get(k)).copied();
            let ys: Vec<f64> = points
                .iter()
                .filter_map(|p| p.fd.get(k).copied())
                .chain(floor_v)
                .filter(|v| v.is_finite())
                .collect();
            let (ylo, yhi) = ys
                .iter()
                .fold((f64::MAX, f64::MIN), |(a, b), &v| (a.min(v), b.max(v)));
            let pad = ((yhi - ylo) * 0.12).max(yhi.abs() * 0.02).max(1e-3);
            let (ylo, yhi) = ((ylo - pad).max(0.0), yhi + pad);
            for (c, (xname, xf)) in xs.iter().enumerate() {
                let area = &panels[k * 2 + c];
                let xv: Vec<f64> = points.iter().map(xf).collect();
                let (xlo, xhi) = xv
                    .iter()
                    .fold((f64::MAX, f64::MIN), |(a, b), &v| (a.min(v), b.max(v)));
                // Log x (bits per weight run 4..32; sizes likewise): multiplicative padding.
                let (xlo, xhi) = (xlo.max(1e-6) / 1.12, xhi.max(1e-6) * 1.12);
                let mut cb = ChartBuilder::on(area);
                cb.margin(14);
                if text {
                    cb.caption(
                        format!("{} vs {}", net.fd_name(), xname),
                        ("sans-serif", 18),
                    )
                    .x_label_area_size(40)
                    .y_label_area_size(60);
                }
                let mut chart = cb
                    .build_cartesian_2d(
                        (xlo..xhi).log_scale().with_key_points(log_ticks(xlo, xhi)),
                        ylo..yhi,
                    )
                    .map_err(|e| anyhow!("{e}"))?;
                if text {
                    chart
                        .configure_mesh()
                        .x_desc(*xname)
                        .x_label_formatter(&|x| {
                            format!("{x:.3}")
                                .trim_end_matches('0')
                                .trim_end_matches('.')
                                .to_string()
                        })
                        .y_desc(net.fd_name())
                        .label_style(("sans-serif", 14))
                        .draw()
                        .map_err(|e| anyhow!("{e}"))?;
                } else {
                    chart
                        .configure_mesh()
                        .disable_x_mesh()
                        .disable_y_mesh()
                        .draw()
                        .map_err(|e| anyhow!("{e}"))?;
                }
                if let Some(fv) = floor_v {
                    let (a, b) = (xlo.ln(), xhi.ln());
                    let steps = 40;
                    // Dashed: every other segment (even in log x).
                    chart
                        .draw_series((0..steps).step_by(2).map(|i| {
                            let x0 = (a + (b - a) * i as f64 / steps as f64).exp();
                            let x1 = (a + (b - a) * (i + 1) as f64 / steps as f64).exp();
                            PathElement::new(
                                vec![(x0, fv), (x1, fv)],
                                RGBColor(120, 120, 120).stroke_width(2),
                            )
                        }))
                        .map_err(|e| anyhow!("{e}"))?;
                    if text {
                        chart
                            .draw_series(std::iter::once(Text::new(
                                format!("real floor {fv:.2}"),
                                ((a + (b - a) * 0.02).exp(), fv + (yhi - ylo) * 0.045),
                                ("sans-serif", 13).into_font().color(&RGBColor(90, 90, 90)),
                            )))
                            .map_err(|e| anyhow!("{e}"))?;
                    }
                }
                let color = if k == 0 {
                    RGBColor(31, 119, 180)
                } else {
                    RGBColor(214, 39, 40)
                };
                let finite: Vec<(f64, f64, &str)> = points
                    .iter()
                    .filter_map(|p| {
                        p.fd.get(k)
                            .filter(|y| y.is_finite())
                            .map(|&y| (xf(p), y, p.label.as_str()))
                    })
                    .collect();
                if text {
                    let font = ("sans-serif", 14).into_font();
                    let pixels: Vec<(i32, i32)> = finite
                        .iter()
                        .map(|&(x, y, _)| chart.backend_coord(&(x, y)))
                        .collect();
                    let offsets =
                        label_offsets(&pixels, &finite.iter().map(|p| p.2).collect::<Vec<_>>());
                    chart
                        .draw_series(finite.iter().zip(offsets).map(|(&(x, y, label), off)| {
                            // A leader line from the point to a label moved off its usual spot.
                            let w = 8 * label.chars().count() as i32;
                            let end = if off == (7, -18) {
                                (0, 0)
                            } else {
                                (if off.0 < 0 { off.0 + w } else { off.0 }, off.1 + 7)
                            };
                            EmptyElement::at((x, y))
                                + PathElement::new(vec![(0, 0), end], RGBColor(150, 150, 150))
                                + Circle::new((0, 0), 5, color.filled())
                                + Text::new(label.to_string(), off, font.clone())
                        }))
                        .map_err(|e| anyhow!("{e}"))?;
                } else {
                    chart
                        .draw_series(
                            finite
                                .iter()
                                .map(|&(x, y, _)| Circle::new((x, y), 5, color.filled())),
                        )
                        .map_err(|e| anyhow!("{e}"))?;
                }
            }
        }
        root.present().map_err(|e| anyhow!("{e}"))?;
    }
    std::fs::rename(&tmp, path).with_context(|| format!("{}: cannot write", path.display()))?;
    Ok(())
}

/// Pixel offsets for point labels (about 8 px per character, 14 px high) so that no two
/// labels and no label and another point overlap where a free spot exists nearby.
fn label_offsets(points: &[(i32, i32)], labels: &[&str]) -> Vec<(i32, i32)> {
    const CANDIDATES: [(i32, i32); 10] = [
        (7, -18),
        (7, 4),
        (7, -34),
        (7, 20),
        (7, -50),
        (7, 36),
        (-7, -18),
        (-7, 4),
        (-7, -34),
        (-7, 20),
    ];
    let mut placed: Vec<(i32, i32, i32, i32)> = vec![];
    let mut out = vec![(7, -18); points.len()];
    let mut order: Vec<usize> = (0..points.len()).collect();
    order.sort_by_key(|&i| (points[i].0, points[i].1));
    let overlaps = |a: (i32, i32, i32, i32), b: (i32, i32, i32, i32)| {
        a.0 < b.2 && b.0 < a.2 && a.1 < b.3 && b.1 < a.3
    };
    for i in order {
        let (px, py) = points[i];
        let w = 8 * labels[i].chars().count() as i32;
        let boxed = |(dx, dy): (i32, i32)| {
            // A negative dx puts the label's right end at the point.
            let x0 = if dx < 0 { px + dx - w } else { px + dx };
            (x0, py + dy, x0 + w, py + dy + 14)
        };
        let free = |b: (i32, i32, i32, i32)| {
            !placed.iter().any(|&p| overlaps(p, b))
                && !points
                    .iter()
                    .any(|&(qx, qy)| overlaps(b, (qx - 5, qy - 5, qx + 5, qy + 5)))
        };
        let pick = CANDIDATES
            .iter()
            .copied()
            .find(|&c| free(boxed(c)))
            .unwrap_or(CANDIDATES[0]);
        placed.push(boxed(pick));
        out[i] = if pick.0 < 0 {
            (pick.0 - w, pick.1)
        } else {
            pick
        };
    }
    out
}

/// Tick values for a log axis over [lo, hi]: 1, 1.5, 2, 3, 4, 5, 6, 8 times powers of ten.
fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let mut v = vec![];
    let mut p = 10f64.powi(lo.log10().floor() as i32);
    while p <= hi {
        v.extend(
            [1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0]
                .iter()
                .map(|m| m * p)
                .filter(|x| (lo..=hi).contains(x)),
        );
        p *= 10.0;
    }
    v
}

/// The rows of a `vs-llama` table as printed (`benches/results.sh` and `scripts/device-bench`
/// keep the text), and its thread count from the preamble line: the chart can then be drawn
/// on another machine than the one that measured (the GPU host has no fonts).
pub fn rows_from_table(text: &str) -> Result<(Vec<VsRow>, usize)> {
    let threads = text
        .lines()
        .filter(|l| l.starts_with('#'))
        .find_map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            let i = words
                .iter()
                .position(|w| w.trim_end_matches(',') == "threads")?;
            words.get(i.checked_sub(1)?)?.parse().ok()
        })
        .context("no '# ... N threads' preamble line")?;
    let stats = |cell: &str| -> Result<Option<Stats>> {
        if cell == "-" {
            return Ok(None);
        }
        // "56.4 (54.2–63.6)" or a single "56.4"
        let mut parts = cell
            .split(['(', '–', ')'])
            .map(str::trim)
            .filter(|s| !s.is_empty());
        let median: f64 = parts.next().context("empty cell")?.parse()?;
        let (min, max, n) = match (parts.next(), parts.next()) {
            (Some(a), Some(b)) => (a.parse()?, b.parse()?, 2),
            _ => (median, median, 1),
        };
        Ok(Some(Stats {
            median,
            min,
            max,
            n,
        }))
    };
    let mut rows = vec![];
    for line in text.lines() {
        // Cells are separated by runs of 2+ spaces after the three leading words.
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.len() < 4
            || words[0] == "model"
            || line.starts_with(['#', '$'])
            || words[2].parse::<f64>().is_err()
        {
            continue;
        }
        // The text after the third word (model, type, MB/token).
        let mut rest = line;
        for _ in 0..3 {
            rest = rest.trim_start();
            rest = &rest[rest.find(char::is_whitespace).unwrap_or(rest.len())..];
        }
        let cells: Vec<String> = rest
            .split("  ")
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        if cells.len() != 5 {
            continue;
        }
        let ours = stats(&cells[0])?.with_context(|| format!("no tokens/s of ours in '{line}'"))?;
        rows.push(VsRow {
            config: words[0].to_string(),
            ty: words[1].to_string(),
            ours,
            llama: stats(&cells[1])?,
            candle: stats(&cells[2])?,
            ratio_llama: stats(&cells[3])?,
            ratio_candle: stats(&cells[4])?,
        });
    }
    if rows.is_empty() {
        return Err(anyhow!("no vs-llama table rows found"));
    }
    Ok((rows, threads))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vs_llama_table_parses_back_into_rows() {
        let text = "$ eostok-bench vs-llama --threads 2\n\
# 2026-11-26T06:20:59Z, load average 1.51 1.18 0.53, taskset -c 0,1\n\
# Intel(R) Xeon(R) Processor [fma], 2 cores, 2 threads, kernels: q4_0 avx2\n\
 model  type MB/token           ours tok/s      llama.cpp tok/s         candle tok/s       ours/llama.cpp          ours/candle\n\
     B   f16      317     56.4 (54.2–63.6)     50.6 (46.9–55.4)     17.6 (16.4–17.7)     1.07 (1.02–1.36)     3.18 (3.09–3.89)\n\
     B  q4_0       89    93.0 (83.4–102.5)  168.2 (122.0–214.4)                    -     0.58 (0.48–0.68)                    -\n\
# exit 0\n";
        let (rows, threads) = rows_from_table(text).unwrap();
        assert_eq!(threads, 2);
        assert_eq!(rows.len(), 2);
        assert_eq!((rows[0].config.as_str(), rows[0].ty.as_str()), ("B", "f16"));
        assert_eq!(rows[0].ours.median, 56.4);
        assert_eq!(rows[0].llama.unwrap().max, 55.4);
        assert_eq!(rows[0].candle.unwrap().min, 16.4);
        assert_eq!(rows[1].ours.min, 83.4);
        assert!(rows[1].candle.is_none() && rows[1].ratio_candle.is_none());
        assert_eq!(rows[1].llama.unwrap().median, 168.2);
        assert!(rows_from_table("# 2 cores, 2 threads\nnothing here\n").is_err());
    }
}

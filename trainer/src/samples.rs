//! Sample grids written during training: one row each of inputs,
//! reconstructions, APR images (the AR model's own predictions decoded) and
//! class-conditional samples, so a user sees every part of the model at once.

use anyhow::{Context, Result};
use candle_core::{DType, Tensor};
use image::{Rgb, RgbImage};
use std::path::Path;

/// [N, C, H, W] in [-1, 1] -> N RGB images.
fn to_images(t: &Tensor) -> Result<Vec<RgbImage>> {
    let t = t.to_dtype(DType::F32)?;
    let (n, c, h, w) = t.dims4()?;
    let v: Vec<f32> = t.flatten_all()?.to_vec1()?;
    Ok((0..n)
        .map(|i| {
            RgbImage::from_fn(w as u32, h as u32, |x, y| {
                let px = |ch: usize| {
                    let val = v[((i * c + ch.min(c - 1)) * h + y as usize) * w + x as usize];
                    (((val + 1.0) * 0.5).clamp(0.0, 1.0) * 255.0).round() as u8
                };
                Rgb([px(0), px(1), px(2)])
            })
        })
        .collect())
}

/// Write rows of image batches as one PNG (2 px white gaps), atomically.
pub fn write_grid(rows: &[&Tensor], path: &Path) -> Result<()> {
    let rows: Vec<Vec<RgbImage>> = rows.iter().map(|t| to_images(t)).collect::<Result<_>>()?;
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0).max(1) as u32;
    let (w, h) = rows.iter().flatten().next().map(|i| (i.width(), i.height())).unwrap_or((1, 1));
    let gap = 2;
    let mut out = RgbImage::from_pixel(cols * (w + gap) - gap, rows.len().max(1) as u32 * (h + gap) - gap, Rgb([255, 255, 255]));
    for (r, row) in rows.iter().enumerate() {
        for (c, img) in row.iter().enumerate() {
            image::imageops::replace(&mut out, img, (c as u32 * (w + gap)) as i64, (r as u32 * (h + gap)) as i64);
        }
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("{}: cannot create", dir.display()))?;
    }
    let tmp = path.with_extension("png.tmp");
    out.save_with_format(&tmp, image::ImageFormat::Png).with_context(|| format!("{}: cannot write", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("{}: cannot rename", path.display()))?;
    Ok(())
}

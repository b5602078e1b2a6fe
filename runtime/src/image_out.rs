//! Decoded images to PNG: [-1, 1] floats to 8-bit RGB, single images or a
//! grid, written to a temporary file and renamed.

use anyhow::{Context, Result};
use eostok_models::exit::bad_input;
use std::path::Path;

/// Image `i` of a [B, C, H, W] batch as 8-bit RGB (grayscale repeated).
pub fn to_rgb8(images: &[f32], i: usize, channels: usize, size: usize) -> image::RgbImage {
    let plane = size * size;
    let base = i * channels * plane;
    let px = |c: usize, y: usize, x: usize| {
        let v = images[base + c.min(channels - 1) * plane + y * size + x];
        (((v + 1.0) * 0.5).clamp(0.0, 1.0) * 255.0).round() as u8
    };
    image::RgbImage::from_fn(size as u32, size as u32, |x, y| image::Rgb([px(0, y as usize, x as usize), px(1, y as usize, x as usize), px(2, y as usize, x as usize)]))
}

/// All images of a batch side by side in a near-square grid (2 px gaps).
pub fn grid(images: &[image::RgbImage]) -> image::RgbImage {
    let n = images.len().max(1);
    let cols = (n as f64).sqrt().ceil() as u32;
    let rows = (n as u32).div_ceil(cols);
    let (w, h) = images.first().map(|i| (i.width(), i.height())).unwrap_or((1, 1));
    let gap = 2;
    let mut out = image::RgbImage::from_pixel(cols * (w + gap) - gap, rows * (h + gap) - gap, image::Rgb([255, 255, 255]));
    for (k, img) in images.iter().enumerate() {
        let (r, c) = (k as u32 / cols, k as u32 % cols);
        image::imageops::replace(&mut out, img, (c * (w + gap)) as i64, (r * (h + gap)) as i64);
    }
    out
}

/// Write a PNG atomically. Unwritable paths are bad input (exit 2).
pub fn save_png(img: &image::RgbImage, path: &Path) -> Result<()> {
    if path.is_dir() {
        return Err(bad_input(format!("{}: is a directory; give a file name such as out.png", path.display())));
    }
    let name = path.file_name().ok_or_else(|| bad_input(format!("{}: not a file name", path.display())))?;
    let tmp = path.with_file_name(format!(".{}.tmp-{}", name.to_string_lossy(), std::process::id()));
    let result = (|| -> Result<()> {
        let file = std::fs::File::create(&tmp).map_err(|e| bad_input(format!("{}: cannot write: {e}", path.display())))?;
        let mut w = std::io::BufWriter::new(file);
        img.write_to(&mut w, image::ImageFormat::Png).with_context(|| format!("{}: cannot encode PNG", path.display()))?;
        let file = w.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        std::fs::rename(&tmp, path).map_err(|e| bad_input(format!("{}: cannot write: {e}", path.display())))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

//! Per-image preprocessing, the same for every dataset.
//!
//! 1. centre crop to the largest square (the shorter side; an odd excess
//!    leaves the extra pixel on the right/bottom),
//! 2. resize to `resolution` x `resolution` with `image`'s `CatmullRom`
//!    filter: bicubic (a = -0.5, as PIL's BICUBIC) whose support widens on
//!    downscaling, so large images are antialiased rather than aliased.
//!    Skipped when the crop already has the target size,
//! 3. optional horizontal flip,
//! 4. [`to_chw_pm1`]: u8 -> f32 `v / 127.5 - 1`, channel-major.
//!
//! Greyscale sources are replicated to three channels and alpha is
//! composited on white by the loaders, before this step.

use image::imageops::{self, FilterType};
use image::{DynamicImage, Rgb, RgbImage, RgbaImage};

/// The resize filter (documented above).
pub const RESIZE_FILTER: FilterType = FilterType::CatmullRom;

/// Centre crop + resize to `resolution`², then mirror when `flip`.
pub fn prepare(img: RgbImage, resolution: usize, flip: bool) -> RgbImage {
    let (w, h) = img.dimensions();
    let s = w.min(h);
    let square = if w == h { img } else { imageops::crop_imm(&img, (w - s) / 2, (h - s) / 2, s, s).to_image() };
    let res = resolution as u32;
    let mut out = if s == res { square } else { imageops::resize(&square, res, res, RESIZE_FILTER) };
    if flip {
        imageops::flip_horizontal_in_place(&mut out);
    }
    out
}

/// HxWx3 u8 -> CHW f32 in [-1, 1].
pub fn to_chw_pm1(img: &RgbImage) -> Vec<f32> {
    let (w, h) = img.dimensions();
    let plane = (w * h) as usize;
    let mut out = vec![0f32; 3 * plane];
    for (k, px) in img.pixels().enumerate() {
        for c in 0..3 {
            out[c * plane + k] = px[c] as f32 / 127.5 - 1.0;
        }
    }
    out
}

/// RGBA -> RGB over a white background, rounded: `(c a + 255 (255 - a)) / 255`.
pub fn composite_on_white(img: &RgbaImage) -> RgbImage {
    let (w, h) = img.dimensions();
    let mut out = RgbImage::new(w, h);
    for (dst, src) in out.pixels_mut().zip(img.pixels()) {
        let a = src[3] as u32;
        let mix = |c: u8| ((c as u32 * a + 255 * (255 - a) + 127) / 255) as u8;
        *dst = Rgb([mix(src[0]), mix(src[1]), mix(src[2])]);
    }
    out
}

/// Any decoded image -> 8-bit RGB: grey replicated, alpha composited on white.
pub fn to_rgb8_on_white(img: DynamicImage) -> RgbImage {
    if img.color().has_alpha() {
        composite_on_white(&img.to_rgba8())
    } else {
        img.into_rgb8()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crop_resize_flip() {
        // 4x2 image: the centre square is columns 1..3.
        let img = RgbImage::from_fn(4, 2, |x, _| Rgb([x as u8 * 10, 0, 0]));
        let out = prepare(img.clone(), 2, false);
        assert_eq!(out.dimensions(), (2, 2));
        assert_eq!(out.get_pixel(0, 0)[0], 10);
        assert_eq!(out.get_pixel(1, 0)[0], 20);
        let out = prepare(img, 2, true);
        assert_eq!(out.get_pixel(0, 0)[0], 20);
        let chw = to_chw_pm1(&RgbImage::from_pixel(1, 1, Rgb([0, 255, 51])));
        assert_eq!(chw, vec![-1.0, 1.0, 51.0 / 127.5 - 1.0]);
    }

    #[test]
    fn alpha_on_white() {
        let img = RgbaImage::from_fn(3, 1, |x, _| image::Rgba([0, 100, 200, [0u8, 255, 128][x as usize]]));
        let out = composite_on_white(&img);
        assert_eq!(out.get_pixel(0, 0).0, [255, 255, 255]);
        assert_eq!(out.get_pixel(1, 0).0, [0, 100, 200]);
        assert_eq!(out.get_pixel(2, 0).0, [127, 177, 227]);
    }
}

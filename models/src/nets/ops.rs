//! Small tensor ops the pretrained nets need and candle lacks, written from
//! primitives that have backward passes (narrow, reshape, matmul, maximum).
//!
//! * torch-compatible bicubic resize (DINOv2 position grid, VFM inputs);
//! * strided slices, max pooling with any kernel/stride (candle's
//!   `max_pool2d` backward is wrong, see [`max_pool2d`]);
//! * the spatial mean.
//!
//! Convolutions are in [`super::conv`].

use candle_core::{Device, Result, Tensor, D};

/// Keys cubic convolution weights for taps at -1, 0, 1, 2 around a sample
/// at fractional offset `t` in [0, 1).
fn cubic_weights(t: f64, a: f64) -> [f64; 4] {
    let w1 = |d: f64| ((a + 2.0) * d - (a + 3.0)) * d * d + 1.0; // |d| <= 1
    let w2 = |d: f64| ((a * d - 5.0 * a) * d + 8.0 * a) * d - 4.0 * a; // 1 < |d| < 2
    [w2(t + 1.0), w1(t), w1(1.0 - t), w2(2.0 - t)]
}

/// The `[out, in]` matrix of torch `interpolate(mode="bicubic",
/// align_corners=False)` without antialias (also ONNX Resize cubic,
/// half_pixel, a = -0.75): source `(o + 0.5) * in/out - 0.5`, taps clamped
/// to the border. Port of `scripts/assets/nn_numpy.py::bicubic_resize_torch`.
pub fn bicubic_matrix(insz: usize, outsz: usize) -> Vec<f64> {
    let scale = insz as f64 / outsz as f64;
    let mut m = vec![0f64; outsz * insz];
    for o in 0..outsz {
        let src = (o as f64 + 0.5) * scale - 0.5;
        let i0 = src.floor();
        let w = cubic_weights(src - i0, -0.75);
        for (k, wt) in w.iter().enumerate() {
            let i = (i0 as i64 + k as i64 - 1).clamp(0, insz as i64 - 1) as usize;
            m[o * insz + i] += wt;
        }
    }
    m
}

/// [`bicubic_matrix`] as an f32 tensor `[out, in]`.
pub fn bicubic_matrix_tensor(insz: usize, outsz: usize, dev: &Device) -> Result<Tensor> {
    let m: Vec<f32> = bicubic_matrix(insz, outsz).into_iter().map(|v| v as f32).collect();
    Tensor::from_vec(m, (outsz, insz), dev)
}

/// Resize `[B,C,H,W]` to `[B,C,oh,ow]` with torch's bicubic (no antialias):
/// two matrix products, so gradients flow to `x`.
pub fn resize_bicubic(x: &Tensor, oh: usize, ow: usize) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    if (h, w) == (oh, ow) {
        return Ok(x.clone());
    }
    let mw = bicubic_matrix_tensor(w, ow, x.device())?.to_dtype(x.dtype())?;
    let mh = bicubic_matrix_tensor(h, oh, x.device())?.to_dtype(x.dtype())?;
    // Along W: [B*C*H, W] x [W, ow].
    let y = x.reshape((b * c * h, w))?.matmul(&mw.t()?)?;
    // Along H: bring H last, [B*C*ow, H] x [H, oh], and back.
    let y = y.reshape((b * c, h, ow))?.transpose(1, 2)?.reshape((b * c * ow, h))?.matmul(&mh.t()?)?;
    y.reshape((b * c, ow, oh))?.transpose(1, 2)?.reshape((b, c, oh, ow))
}

/// `x[.., start + k * stride, ..]` for `k < count` along `dim`.
pub fn strided(x: &Tensor, dim: usize, start: usize, count: usize, stride: usize) -> Result<Tensor> {
    if stride == 1 {
        return x.narrow(dim, start, count);
    }
    let size = x.dim(dim)?;
    let need = start + count * stride;
    // Room for a full last (count, stride) row; the padding is never selected.
    let x = if need > size { x.pad_with_zeros(dim, 0, need - size)? } else { x.clone() };
    let y = x.narrow(dim, start, count * stride)?;
    let mut shape = y.dims().to_vec();
    shape[dim] = count;
    shape.insert(dim + 1, stride);
    y.reshape(shape)?.narrow(dim + 1, 0, 1)?.squeeze(dim + 1)
}

/// Output length of a window op without padding (floor, as torch).
pub fn out_len(size: usize, k: usize, s: usize) -> usize {
    if size < k {
        0
    } else {
        (size - k) / s + 1
    }
}

/// Max pooling of `[B,C,H,W]`, `k`x`k` windows, stride `s`, no padding,
/// floor; differentiable (the gradient goes to every maximum of a window).
/// candle 0.11.1's own `max_pool2d` backward scales the gradient by
/// (number of maxima) / k² instead of passing it through (0.25 for 2x2
/// windows), and refuses k != s.
pub fn max_pool2d(x: &Tensor, k: usize, s: usize) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    let (oh, ow) = (out_len(h, k, s), out_len(w, k, s));
    if oh == 0 || ow == 0 {
        candle_core::bail!("max_pool2d: input {h}x{w} is smaller than the {k}x{k} window");
    }
    if k == s {
        // Non-overlapping windows: crop to whole windows, reshape, reduce.
        let (b, c, _, _) = x.dims4()?;
        let x = x.narrow(2, 0, oh * k)?.narrow(3, 0, ow * k)?;
        return x.reshape(vec![b, c, oh, k, ow, k])?.max(5)?.max(3);
    }
    let mut m = strided(x, 3, 0, ow, s)?;
    for j in 1..k {
        m = m.maximum(&strided(x, 3, j, ow, s)?)?;
    }
    let mut out = strided(&m, 2, 0, oh, s)?;
    for i in 1..k {
        out = out.maximum(&strided(&m, 2, i, oh, s)?)?;
    }
    Ok(out)
}

/// Mean over the two spatial dims of `[B,C,H,W]` -> `[B,C]`.
pub fn spatial_mean(x: &Tensor) -> Result<Tensor> {
    x.mean(D::Minus1)?.mean(D::Minus1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bicubic_rows_sum_to_one_and_identity() {
        for (i, o) in [(37, 16), (16, 37), (5, 5), (28, 224)] {
            let m = bicubic_matrix(i, o);
            for r in 0..o {
                let s: f64 = m[r * i..(r + 1) * i].iter().sum();
                assert!((s - 1.0).abs() < 1e-12, "{i}->{o} row {r}: {s}");
            }
        }
        let m = bicubic_matrix(5, 5);
        for r in 0..5 {
            for c in 0..5 {
                assert!((m[r * 5 + c] - if r == c { 1.0 } else { 0.0 }).abs() < 1e-12);
            }
        }
    }

    #[test]
    fn strided_and_pool() -> Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::arange(0f32, 35., &dev)?.reshape((1, 1, 5, 7))?;
        let s = strided(&x, 3, 1, 3, 2)?; // columns 1, 3, 5
        assert_eq!(s.flatten_all()?.to_vec1::<f32>()?[..3], [1., 3., 5.]);
        let p = max_pool2d(&x, 3, 2)?; // 2x3 windows, max at bottom-right
        assert_eq!(p.dims(), &[1, 1, 2, 3]);
        assert_eq!(p.flatten_all()?.to_vec1::<f32>()?, vec![16., 18., 20., 30., 32., 34.]);
        let p = max_pool2d(&x, 2, 2)?;
        assert_eq!(p.flatten_all()?.to_vec1::<f32>()?, vec![8., 10., 12., 22., 24., 26.]);
        Ok(())
    }
}

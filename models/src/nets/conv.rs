//! Convolutions for frozen nets, faster on the CPU than candle's defaults.
//!
//! * [`frozen_conv2d`]: a stride-1 conv whose kernel is a constant. candle's
//!   own conv2d backward computes the input gradient with a naive CPU
//!   `conv_transpose2d` (8x slower than the forward conv on VGG layers) and
//!   always computes a kernel gradient as well. Here, on the CPU, the
//!   input gradient is a forward conv with the flipped, transposed kernel
//!   (itself differentiable), and no kernel gradient is made. Other
//!   devices use candle's conv2d unchanged.
//! * [`depthwise_conv2d`]: candle's grouped conv runs one conv per group; a
//!   direct CPU kernel (rayon over channel planes) does EfficientNet's
//!   depthwise layers, with a tensor-op fallback elsewhere. Forward only.
//! * TensorFlow "SAME" padding.

use super::ops::{out_len, strided};
use candle_core::{CpuStorage, CustomOp1, DType, Device, Layout, Result, Shape, Storage, Tensor, WithDType};
use rayon::prelude::*;

/// A contiguous CPU storage as a fresh CPU tensor (one copy).
fn cpu_tensor(s: &CpuStorage, l: &Layout) -> Result<Tensor> {
    let (start, end) = l.contiguous_offsets().ok_or_else(|| candle_core::Error::Msg("custom conv: non-contiguous input".into()))?;
    match s {
        CpuStorage::F32(v) => Tensor::from_slice(&v[start..end], l.shape(), &Device::Cpu),
        CpuStorage::F64(v) => Tensor::from_slice(&v[start..end], l.shape(), &Device::Cpu),
        _ => candle_core::bail!("custom conv: f32 or f64 only"),
    }
}

/// A CPU tensor's storage (one copy) and shape.
fn cpu_storage(t: &Tensor) -> Result<(CpuStorage, Shape)> {
    let t = t.contiguous()?;
    let (guard, layout) = t.storage_and_layout();
    let (start, end) = layout.contiguous_offsets().ok_or_else(|| candle_core::Error::Msg("custom conv: non-contiguous output".into()))?;
    let out = match &*guard {
        Storage::Cpu(CpuStorage::F32(v)) => CpuStorage::F32(v[start..end].to_vec()),
        Storage::Cpu(CpuStorage::F64(v)) => CpuStorage::F64(v[start..end].to_vec()),
        _ => candle_core::bail!("custom conv: expected an f32/f64 CPU tensor"),
    };
    Ok((out, t.shape().clone()))
}

/// Stride-1 conv with a constant kernel (see the module docs).
struct FrozenConv {
    w: Tensor,
    /// `w` flipped in both spatial dims, in and out channels swapped.
    w_back: Tensor,
    pad: usize,
}

impl CustomOp1 for FrozenConv {
    fn name(&self) -> &'static str {
        "frozen-conv2d"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = cpu_tensor(s, l)?;
        cpu_storage(&x.conv2d(&self.w, self.pad, 1, 1, 1)?)
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        // d/dx of a stride-1 conv = full correlation of the gradient with the
        // flipped, transposed kernel: padding k - 1 - p gives back H x W.
        let k = self.w.dim(2)?;
        Ok(Some(frozen_conv2d(grad, &self.w_back, &self.w, k - 1 - self.pad)?))
    }
}

/// Flip `[O,C,k,k]` spatially and swap O and C -> `[C,O,k,k]`.
pub fn flip_kernel(w: &Tensor) -> Result<Tensor> {
    let (_, _, kh, kw) = w.dims4()?;
    let rev = |n: usize| Tensor::from_vec((0..n as u32).rev().collect::<Vec<u32>>(), n, w.device());
    let w = w.index_select(&rev(kh)?, 2)?.index_select(&rev(kw)?, 3)?;
    w.transpose(0, 1)?.contiguous()
}

/// Conv (stride 1, symmetric `pad`) with the constant kernel `w` and its
/// [`flip_kernel`] `w_back`. Gradients flow to `x` only.
pub fn frozen_conv2d(x: &Tensor, w: &Tensor, w_back: &Tensor, pad: usize) -> Result<Tensor> {
    let k = w.dim(2)?;
    if !x.device().is_cpu() || !matches!(x.dtype(), DType::F32 | DType::F64) || pad >= k {
        return x.conv2d(&w.detach(), pad, 1, 1, 1);
    }
    x.contiguous()?.apply_op1(FrozenConv { w: w.detach(), w_back: w_back.detach(), pad })
}

/// Zero padding (top, bottom, left, right).
pub type Pads = (usize, usize, usize, usize);

/// Depthwise conv of `[B,C,H,W]` with `w` `[C,1,k,k]`, zero padding `pads`,
/// no bias. On the CPU a direct kernel (forward only, padding implicit);
/// differentiable tensor ops on other devices.
pub fn depthwise_conv2d(x: &Tensor, w: &Tensor, stride: usize, pads: Pads) -> Result<Tensor> {
    let (_, c, _, _) = x.dims4()?;
    let (wc, one, _, _) = w.dims4()?;
    if wc != c || one != 1 {
        candle_core::bail!("depthwise_conv2d: weight {:?} for {c} channels", w.dims());
    }
    if x.device().is_cpu() && matches!(x.dtype(), DType::F32 | DType::F64) && x.dtype() == w.dtype() {
        return x.contiguous()?.apply_op1_no_bwd(&DepthwiseCpu { w: w.contiguous()?, stride, pads });
    }
    let (t, b, l, r) = pads;
    let x = x.pad_with_zeros(2, t, b)?.pad_with_zeros(3, l, r)?;
    depthwise_by_taps(&x, w, stride)
}

/// One multiply-add per tap over the whole (padded) tensor: any device,
/// differentiable, but many strided copies.
pub fn depthwise_by_taps(x: &Tensor, w: &Tensor, stride: usize) -> Result<Tensor> {
    let (_, c, h, wd) = x.dims4()?;
    let (_, _, kh, kw) = w.dims4()?;
    let (oh, ow) = (out_len(h, kh, stride), out_len(wd, kw, stride));
    let mut acc: Option<Tensor> = None;
    for i in 0..kh {
        let rows = strided(x, 2, i, oh, stride)?;
        for j in 0..kw {
            let tap = strided(&rows, 3, j, ow, stride)?;
            let wij = w.narrow(2, i, 1)?.narrow(3, j, 1)?.reshape((1, c, 1, 1))?;
            let term = tap.broadcast_mul(&wij)?;
            acc = Some(match acc {
                None => term,
                Some(a) => (a + term)?,
            });
        }
    }
    acc.ok_or_else(|| candle_core::Error::Msg("depthwise_conv2d: empty kernel".into()))
}

struct DepthwiseCpu {
    w: Tensor,
    stride: usize,
    pads: Pads,
}

/// Geometry of one depthwise call.
#[derive(Clone, Copy)]
struct Geom {
    h: usize,
    w: usize,
    kh: usize,
    kw: usize,
    oh: usize,
    ow: usize,
    stride: usize,
    top: usize,
    left: usize,
}

/// One channel plane: `dst[y][x] = sum_ij ker[i][j] * src[y s + i - top][x s + j - left]`
/// (zero outside `src`).
fn depthwise_plane<T: WithDType>(src: &[T], ker: &[T], dst: &mut [T], g: Geom) {
    let s = g.stride;
    for i in 0..g.kh {
        for j in 0..g.kw {
            let wv = ker[i * g.kw + j];
            // Output columns whose input column x s + j - left lies in 0..w.
            let x0 = g.left.saturating_sub(j).div_ceil(s);
            let x1 = ((g.w + g.left).saturating_sub(j)).div_ceil(s).min(g.ow);
            if x0 >= x1 {
                continue;
            }
            for y in 0..g.oh {
                let iy = y * s + i;
                if iy < g.top || iy - g.top >= g.h {
                    continue;
                }
                let row = &src[(iy - g.top) * g.w..(iy - g.top + 1) * g.w];
                let start = x0 * s + j - g.left;
                let d = &mut dst[y * g.ow + x0..y * g.ow + x1];
                if s == 1 {
                    // The common case, kept simple so it vectorises.
                    for (dv, &xv) in d.iter_mut().zip(&row[start..]) {
                        *dv += xv * wv;
                    }
                } else {
                    for (dv, &xv) in d.iter_mut().zip(row[start..].iter().step_by(s)) {
                        *dv += xv * wv;
                    }
                }
            }
        }
    }
}

impl DepthwiseCpu {
    fn geom(&self, h: usize, w: usize) -> Result<Geom> {
        let (_, _, kh, kw) = self.w.dims4()?;
        let (t, b, l, r) = self.pads;
        let (oh, ow) = (out_len(h + t + b, kh, self.stride), out_len(w + l + r, kw, self.stride));
        Ok(Geom { h, w, kh, kw, oh, ow, stride: self.stride, top: t, left: l })
    }

    fn run<T: WithDType>(&self, x: &[T], w: &[T], c: usize, g: Geom) -> Vec<T> {
        let planes = x.len() / (g.h * g.w);
        let mut out = vec![T::zero(); planes * g.oh * g.ow];
        out.par_chunks_mut(g.oh * g.ow).enumerate().for_each(|(p, dst)| {
            let ch = p % c;
            let src = &x[p * g.h * g.w..(p + 1) * g.h * g.w];
            depthwise_plane(src, &w[ch * g.kh * g.kw..(ch + 1) * g.kh * g.kw], dst, g);
        });
        out
    }
}

impl CustomOp1 for DepthwiseCpu {
    fn name(&self) -> &'static str {
        "depthwise-conv2d"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (b, c, h, w) = l.shape().dims4()?;
        let g = self.geom(h, w)?;
        let (start, end) = l.contiguous_offsets().ok_or_else(|| candle_core::Error::Msg("depthwise: non-contiguous input".into()))?;
        let (wg, wl) = self.w.storage_and_layout();
        let (ws, we) = wl.contiguous_offsets().ok_or_else(|| candle_core::Error::Msg("depthwise: non-contiguous weight".into()))?;
        let out = match (s, &*wg) {
            (CpuStorage::F32(x), Storage::Cpu(CpuStorage::F32(k))) => CpuStorage::F32(self.run(&x[start..end], &k[ws..we], c, g)),
            (CpuStorage::F64(x), Storage::Cpu(CpuStorage::F64(k))) => CpuStorage::F64(self.run(&x[start..end], &k[ws..we], c, g)),
            _ => candle_core::bail!("depthwise: input and weight must both be f32 or f64 on the CPU"),
        };
        Ok((out, Shape::from((b, c, g.oh, g.ow))))
    }
}

/// A bias-free conv followed by inference batch norm, folded into one conv at load time:
/// the kernel `conv_weight` (`shape` = `[O, I/groups, kh, kw]`, Kaiming-normal where the
/// builder initialises) scaled per output channel, and a bias `[1, O, 1, 1]`, from
/// `bn.{weight, bias, running_mean, running_var}` with `eps`. Shared by the frozen nets.
pub fn conv_bn_folded(vb: &candle_nn::VarBuilder, conv_weight: &str, bn: &str, shape: (usize, usize, usize, usize), eps: f64) -> Result<(Tensor, Tensor)> {
    use candle_nn::Init;
    let (cout, per_group, kh, kw) = shape;
    let std = (2.0 / (per_group * kh * kw) as f64).sqrt();
    let w = vb.get_with_hints(shape, conv_weight, Init::Randn { mean: 0.0, stdev: std })?;
    let gamma = vb.get_with_hints(cout, &format!("{bn}.weight"), Init::Const(1.0))?;
    let beta = vb.get_with_hints(cout, &format!("{bn}.bias"), Init::Const(0.0))?;
    let mean = vb.get_with_hints(cout, &format!("{bn}.running_mean"), Init::Const(0.0))?;
    let var = vb.get_with_hints(cout, &format!("{bn}.running_var"), Init::Const(1.0))?;
    // BN(conv(x)) = conv(x) · s + (beta − mean · s), s = gamma / sqrt(var + eps).
    let s = gamma.broadcast_div(&(var + eps)?.sqrt()?)?;
    let w = w.broadcast_mul(&s.reshape((cout, 1, 1, 1))?)?;
    let b = (beta - mean.mul(&s)?)?.reshape((1, cout, 1, 1))?;
    Ok((w, b))
}

/// TensorFlow "SAME" padding (before, after) for one axis: the output has
/// `ceil(size / s)` positions and the extra pixel goes after.
pub fn same_pad(size: usize, k: usize, s: usize) -> (usize, usize) {
    let out = size.div_ceil(s);
    let total = ((out - 1) * s + k).saturating_sub(size);
    (total / 2, total - total / 2)
}

/// Zero-pad `[B,C,H,W]` for a SAME convolution with kernel `k`, stride `s`.
pub fn pad_same(x: &Tensor, k: usize, s: usize) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    let (t, b) = same_pad(h, k, s);
    let (l, r) = same_pad(w, k, s);
    let x = if t + b > 0 { x.pad_with_zeros(2, t, b)? } else { x.clone() };
    if l + r > 0 {
        x.pad_with_zeros(3, l, r)
    } else {
        Ok(x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Var;

    fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
        (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap()
    }

    #[test]
    fn same_padding() {
        assert_eq!(same_pad(224, 3, 2), (0, 1));
        assert_eq!(same_pad(112, 5, 1), (2, 2));
        assert_eq!(same_pad(14, 5, 2), (1, 2));
    }

    #[test]
    fn depthwise_matches_grouped_conv() -> Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1., (2, 3, 9, 8), &dev)?;
        for (k, s, pads) in [(3, 1, (1, 1, 1, 1)), (3, 2, (0, 1, 0, 1)), (5, 2, (1, 2, 2, 1)), (5, 1, (0, 0, 0, 0))] {
            let w = Tensor::randn(0f32, 1., (3, 1, k, k), &dev)?;
            let (t, b, l, r) = pads;
            let xp = x.pad_with_zeros(2, t, b)?.pad_with_zeros(3, l, r)?;
            let want = xp.conv2d(&w, 0, s, 1, 3)?;
            let fallback = depthwise_by_taps(&xp, &w, s)?;
            for got in [depthwise_conv2d(&x, &w, s, pads)?, fallback] {
                assert_eq!(got.dims(), want.dims());
                assert!(max_diff(&got, &want) < 1e-5, "k {k} stride {s} pads {pads:?}");
            }
        }
        Ok(())
    }

    #[test]
    fn frozen_conv_matches_candle_forward_and_backward() -> Result<()> {
        let dev = Device::Cpu;
        for (k, pad) in [(3, 1), (5, 2), (3, 0)] {
            let x = Var::from_tensor(&Tensor::randn(0f64, 1., (2, 4, 7, 6), &dev)?)?;
            let w = Tensor::randn(0f64, 1., (5, 4, k, k), &dev)?;
            let probe = Tensor::randn(0f64, 1., x.conv2d(&w, pad, 1, 1, 1)?.dims(), &dev)?;
            let ours = frozen_conv2d(x.as_tensor(), &w, &flip_kernel(&w)?, pad)?;
            let theirs = x.conv2d(&w, pad, 1, 1, 1)?;
            assert!(max_diff(&ours, &theirs) < 1e-12);
            let g1 = (ours * &probe)?.sum_all()?.backward()?.get(x.as_tensor()).cloned().expect("grad");
            let g2 = (theirs * &probe)?.sum_all()?.backward()?.get(x.as_tensor()).cloned().expect("grad");
            assert!(max_diff(&g1, &g2) < 1e-10, "k {k} pad {pad}");
        }
        Ok(())
    }
}

//! Fused CPU training ops with hand-written backward passes.
//!
//! candle's fast fused ops (`layer_norm`, `rms_norm`, `softmax_last_dim`) have no backward,
//! and the same ops built from primitives cost 5–12 full passes and temporaries each (a
//! tanh-GELU backward alone is ~10 element-wise ops with two `powf`). Each op here is one
//! pass forward and one pass backward, as a candle `CustomOp` whose `bwd` calls a second
//! custom op; every one is checked against the primitive version and by f64 finite
//! differences (`tests/gradcheck.rs`, `tests/fused.rs`).
//!
//! Used on CPU for f32/f64; other devices and dtypes (CUDA, bf16) and `EOSTOK_FUSED=0` take
//! the primitive path in `layers.rs`. No second-order gradients: the backward ops have none.

use candle_core::{bail, CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor, WithDType};
use num_traits::Float;
use rayon::prelude::*;

/// Whether the fused ops apply to `x` (CPU, f32/f64, not switched off by `EOSTOK_FUSED=0`).
pub fn applies(x: &Tensor) -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let on = *ON.get_or_init(|| std::env::var("EOSTOK_FUSED").map(|v| v != "0").unwrap_or(true));
    on && x.device().is_cpu() && matches!(x.dtype(), candle_core::DType::F32 | candle_core::DType::F64)
}

trait Real: WithDType + Float + Send + Sync {}
impl Real for f32 {}
impl Real for f64 {}

fn real<T: Real>(v: f64) -> T {
    T::from(v).expect("constant fits the float type")
}

/// The contiguous data of an input; every caller passes contiguous tensors.
fn data<'a, T: Real>(s: &'a CpuStorage, l: &Layout, op: &str) -> Result<&'a [T]> {
    let all = s.as_slice::<T>()?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&all[a..b]),
        None => bail!("{op}: input must be contiguous"),
    }
}

/// Rows per parallel task: enough work (~32k values) to pay for the task.
fn rows_per_task(width: usize) -> usize {
    (32 * 1024 / width.max(1)).max(1)
}

/// Runs `f(first_row, out_rows)` over `out` in row chunks, in parallel when large.
fn for_rows<T: Send>(out: &mut [T], width: usize, f: impl Fn(usize, &mut [T]) + Sync) {
    let per = rows_per_task(width);
    if out.len() <= per * width {
        f(0, out);
    } else {
        out.par_chunks_mut(per * width).enumerate().for_each(|(i, chunk)| f(i * per, chunk));
    }
}

/// Row-chunked map-reduce of per-chunk partial vectors of `width` (for weight gradients).
fn rows_partial_sums<T: Real>(rows: usize, width: usize, parts: usize, f: impl Fn(std::ops::Range<usize>, &mut [T]) + Sync) -> Vec<T> {
    let per = rows_per_task(width);
    let chunks: Vec<std::ops::Range<usize>> = (0..rows).step_by(per).map(|a| a..(a + per).min(rows)).collect();
    let partials: Vec<Vec<T>> = chunks
        .into_par_iter()
        .map(|r| {
            let mut acc = vec![T::zero(); parts * width];
            f(r, &mut acc);
            acc
        })
        .collect();
    let mut total = vec![T::zero(); parts * width];
    for p in &partials {
        for (t, v) in total.iter_mut().zip(p) {
            *t += *v;
        }
    }
    total
}

macro_rules! by_dtype {
    ($s:expr, $op:expr, $f:ident($($arg:expr),*)) => {
        match $s {
            CpuStorage::F32(_) => $f::<f32>($($arg),*),
            CpuStorage::F64(_) => $f::<f64>($($arg),*),
            _ => bail!("{}: only f32 and f64", $op),
        }
    };
}

// ---------------------------------------------------------------- GELU (tanh approximation)

const SQRT_2_OVER_PI: f64 = 0.797_884_560_802_865_4;
const GELU_C: f64 = 0.044715;

/// `0.5 x (1 + tanh(√(2/π) (x + 0.044715 x³)))`, as candle's `gelu`.
pub fn gelu(x: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op1(Gelu)
}

struct Gelu;
struct GeluBackward;

fn gelu_fwd<T: Real>(s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
    let x = data::<T>(s, l, "gelu")?;
    let (half, one, k, c) = (real::<T>(0.5), T::one(), real::<T>(SQRT_2_OVER_PI), real::<T>(GELU_C));
    let mut y = vec![T::zero(); x.len()];
    for_rows(&mut y, 1, |r0, out| {
        for (o, &v) in out.iter_mut().zip(&x[r0..]) {
            *o = half * v * (one + (k * v * (one + c * v * v)).tanh());
        }
    });
    Ok((T::to_cpu_storage_owned(y), l.shape().clone()))
}

fn gelu_bwd<T: Real>(sx: &CpuStorage, lx: &Layout, sg: &CpuStorage, lg: &Layout) -> Result<(CpuStorage, Shape)> {
    let x = data::<T>(sx, lx, "gelu backward")?;
    let g = data::<T>(sg, lg, "gelu backward")?;
    let (half, one, k, c, c3) = (real::<T>(0.5), T::one(), real::<T>(SQRT_2_OVER_PI), real::<T>(GELU_C), real::<T>(3.0 * GELU_C));
    let mut dx = vec![T::zero(); x.len()];
    for_rows(&mut dx, 1, |r0, out| {
        for ((o, &v), &gv) in out.iter_mut().zip(&x[r0..]).zip(&g[r0..]) {
            let t = (k * v * (one + c * v * v)).tanh();
            let d = half * (one + t) + half * v * (one - t * t) * k * (one + c3 * v * v);
            *o = gv * d;
        }
    });
    Ok((T::to_cpu_storage_owned(dx), lx.shape().clone()))
}

impl CustomOp1 for Gelu {
    fn name(&self) -> &'static str {
        "fused-gelu"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        by_dtype!(s, self.name(), gelu_fwd(s, l))
    }
    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(arg.contiguous()?.apply_op2_no_bwd(&grad.contiguous()?, &GeluBackward)?))
    }
}

impl CustomOp2 for GeluBackward {
    fn name(&self) -> &'static str {
        "fused-gelu-backward"
    }
    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        by_dtype!(s1, self.name(), gelu_bwd(s1, l1, s2, l2))
    }
}

// ---------------------------------------------------------------- softmax over the last dim

/// Softmax over the last dim (max-subtracted).
pub fn softmax(x: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op1(Softmax)
}

struct Softmax;
struct SoftmaxBackward;

fn last_dim(l: &Layout) -> usize {
    l.dims().last().copied().unwrap_or(1)
}

fn softmax_fwd<T: Real>(s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
    let x = data::<T>(s, l, "softmax")?;
    let w = last_dim(l);
    let mut y = vec![T::zero(); x.len()];
    for_rows(&mut y, w, |r0, out| {
        for (orow, xrow) in out.chunks_mut(w).zip(x[r0 * w..].chunks(w)) {
            let max = xrow.iter().fold(T::neg_infinity(), |m, &v| Float::max(m, v));
            let mut sum = T::zero();
            for (o, &v) in orow.iter_mut().zip(xrow) {
                *o = (v - max).exp();
                sum += *o;
            }
            let inv = T::one() / sum;
            orow.iter_mut().for_each(|o| *o *= inv);
        }
    });
    Ok((T::to_cpu_storage_owned(y), l.shape().clone()))
}

/// dx = y ⊙ (g − Σ g⊙y) per row.
fn softmax_bwd<T: Real>(sy: &CpuStorage, ly: &Layout, sg: &CpuStorage, lg: &Layout) -> Result<(CpuStorage, Shape)> {
    let y = data::<T>(sy, ly, "softmax backward")?;
    let g = data::<T>(sg, lg, "softmax backward")?;
    let w = last_dim(ly);
    let mut dx = vec![T::zero(); y.len()];
    for_rows(&mut dx, w, |r0, out| {
        for ((orow, yrow), grow) in out.chunks_mut(w).zip(y[r0 * w..].chunks(w)).zip(g[r0 * w..].chunks(w)) {
            let dot = yrow.iter().zip(grow).fold(T::zero(), |a, (&yv, &gv)| a + yv * gv);
            for ((o, &yv), &gv) in orow.iter_mut().zip(yrow).zip(grow) {
                *o = yv * (gv - dot);
            }
        }
    });
    Ok((T::to_cpu_storage_owned(dx), ly.shape().clone()))
}

impl CustomOp1 for Softmax {
    fn name(&self) -> &'static str {
        "fused-softmax"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        by_dtype!(s, self.name(), softmax_fwd(s, l))
    }
    fn bwd(&self, _arg: &Tensor, res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(res.contiguous()?.apply_op2_no_bwd(&grad.contiguous()?, &SoftmaxBackward)?))
    }
}

impl CustomOp2 for SoftmaxBackward {
    fn name(&self) -> &'static str {
        "fused-softmax-backward"
    }
    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        by_dtype!(s1, self.name(), softmax_bwd(s1, l1, s2, l2))
    }
}

// ---------------------------------------------------------------- LayerNorm and RMSNorm

/// LayerNorm over the last dim: `(x − mean)/√(var + eps) · w + b`.
pub fn layer_norm(x: &Tensor, w: &Tensor, b: &Tensor, eps: f64) -> Result<Tensor> {
    x.contiguous()?.apply_op3(&w.contiguous()?, &b.contiguous()?, Norm { eps, centered: true })
}

/// RMSNorm over the last dim: `x/√(mean(x²) + eps) · w`. The bias slot carries `w` again
/// (ignored) so both norms share one op.
pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor> {
    let w = w.contiguous()?;
    x.contiguous()?.apply_op3(&w, &w.detach(), Norm { eps, centered: false })
}

#[derive(Clone, Copy)]
struct Norm {
    eps: f64,
    /// LayerNorm (subtract the mean, add a bias) or RMSNorm.
    centered: bool,
}

/// The row statistics: (mean, 1/√(var + eps)); mean 0 for RMSNorm.
fn norm_stats<T: Real>(row: &[T], eps: T, centered: bool) -> (T, T) {
    let n = T::from(row.len()).expect("row length fits");
    let mean = if centered { row.iter().fold(T::zero(), |a, &v| a + v) / n } else { T::zero() };
    let var = row.iter().fold(T::zero(), |a, &v| a + (v - mean) * (v - mean)) / n;
    (mean, T::one() / (var + eps).sqrt())
}

fn norm_fwd<T: Real>(op: Norm, sx: &CpuStorage, lx: &Layout, sw: &CpuStorage, lw: &Layout, sb: &CpuStorage, lb: &Layout) -> Result<(CpuStorage, Shape)> {
    let x = data::<T>(sx, lx, "norm")?;
    let w = data::<T>(sw, lw, "norm weight")?;
    let b = data::<T>(sb, lb, "norm bias")?;
    let d = last_dim(lx);
    if w.len() != d || b.len() != d {
        bail!("norm: weight/bias of {} / {} values for rows of {d}", w.len(), b.len());
    }
    let eps = real::<T>(op.eps);
    let mut y = vec![T::zero(); x.len()];
    for_rows(&mut y, d, |r0, out| {
        for (orow, xrow) in out.chunks_mut(d).zip(x[r0 * d..].chunks(d)) {
            let (mean, rstd) = norm_stats(xrow, eps, op.centered);
            for i in 0..d {
                let xn = (xrow[i] - mean) * rstd * w[i];
                orow[i] = if op.centered { xn + b[i] } else { xn };
            }
        }
    });
    Ok((T::to_cpu_storage_owned(y), lx.shape().clone()))
}

/// Output rows: `[dx (rows × d); dw (1 × d); db (1 × d)]`.
fn norm_bwd<T: Real>(op: Norm, sx: &CpuStorage, lx: &Layout, sw: &CpuStorage, lw: &Layout, sg: &CpuStorage, lg: &Layout) -> Result<(CpuStorage, Shape)> {
    let x = data::<T>(sx, lx, "norm backward")?;
    let w = data::<T>(sw, lw, "norm backward")?;
    let g = data::<T>(sg, lg, "norm backward")?;
    let d = last_dim(lx);
    let rows = x.len() / d.max(1);
    let (eps, n) = (real::<T>(op.eps), T::from(d).expect("width fits"));
    let mut out = vec![T::zero(); (rows + 2) * d];
    let (dx, _) = out.split_at_mut(rows * d);
    for_rows(dx, d, |r0, o| {
        for (r, orow) in o.chunks_mut(d).enumerate() {
            let (xrow, grow) = (&x[(r0 + r) * d..][..d], &g[(r0 + r) * d..][..d]);
            let (mean, rstd) = norm_stats(xrow, eps, op.centered);
            let (mut sum_gw, mut sum_gwx) = (T::zero(), T::zero());
            for i in 0..d {
                let gw = grow[i] * w[i];
                sum_gw += gw;
                sum_gwx += gw * (xrow[i] - mean) * rstd;
            }
            let (mean_gw, mean_gwx) = (if op.centered { sum_gw / n } else { T::zero() }, sum_gwx / n);
            for i in 0..d {
                let xhat = (xrow[i] - mean) * rstd;
                orow[i] = rstd * (grow[i] * w[i] - mean_gw - xhat * mean_gwx);
            }
        }
    });
    let sums = rows_partial_sums::<T>(rows, d, 2, |range, acc| {
        for r in range {
            let (xrow, grow) = (&x[r * d..][..d], &g[r * d..][..d]);
            let (mean, rstd) = norm_stats(xrow, eps, op.centered);
            for i in 0..d {
                acc[i] += grow[i] * (xrow[i] - mean) * rstd;
                acc[d + i] += grow[i];
            }
        }
    });
    out[rows * d..].copy_from_slice(&sums);
    Ok((T::to_cpu_storage_owned(out), Shape::from((rows + 2, d))))
}

impl CustomOp3 for Norm {
    fn name(&self) -> &'static str {
        if self.centered {
            "fused-layer-norm"
        } else {
            "fused-rms-norm"
        }
    }
    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout, s3: &CpuStorage, l3: &Layout) -> Result<(CpuStorage, Shape)> {
        by_dtype!(s1, self.name(), norm_fwd(*self, s1, l1, s2, l2, s3, l3))
    }
    fn bwd(&self, x: &Tensor, w: &Tensor, _b: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let all = x.apply_op3_no_bwd(w, &grad.contiguous()?, &NormBackward(*self))?;
        let rows = all.dim(0)? - 2;
        let dx = all.narrow(0, 0, rows)?.reshape(x.shape())?;
        let dw = all.narrow(0, rows, 1)?.reshape(w.shape())?;
        let db = if self.centered { Some(all.narrow(0, rows + 1, 1)?.reshape(w.shape())?) } else { None };
        Ok((Some(dx), Some(dw), db))
    }
}

struct NormBackward(Norm);

impl CustomOp3 for NormBackward {
    fn name(&self) -> &'static str {
        "fused-norm-backward"
    }
    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout, s3: &CpuStorage, l3: &Layout) -> Result<(CpuStorage, Shape)> {
        by_dtype!(s1, self.name(), norm_bwd(self.0, s1, l1, s2, l2, s3, l3))
    }
}

// ---------------------------------------------------------------- SwiGLU gate: silu(a) ⊙ b

/// `silu(a) ⊙ b` (the SwiGLU product), a and b of one shape.
pub fn silu_mul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if a.shape() != b.shape() {
        bail!("silu_mul: shapes {:?} and {:?} differ", a.shape(), b.shape());
    }
    a.contiguous()?.apply_op2(&b.contiguous()?, SiluMul)
}

struct SiluMul;
struct SiluMulBackward;

fn sigmoid<T: Real>(v: T) -> T {
    T::one() / (T::one() + (-v).exp())
}

fn silu_mul_fwd<T: Real>(sa: &CpuStorage, la: &Layout, sb: &CpuStorage, lb: &Layout) -> Result<(CpuStorage, Shape)> {
    let a = data::<T>(sa, la, "silu_mul")?;
    let b = data::<T>(sb, lb, "silu_mul")?;
    let mut y = vec![T::zero(); a.len()];
    for_rows(&mut y, 1, |r0, out| {
        for ((o, &av), &bv) in out.iter_mut().zip(&a[r0..]).zip(&b[r0..]) {
            *o = av * sigmoid(av) * bv;
        }
    });
    Ok((T::to_cpu_storage_owned(y), la.shape().clone()))
}

/// Output: `[da; db]` stacked along a new leading dim of 2.
fn silu_mul_bwd<T: Real>(sa: &CpuStorage, la: &Layout, sb: &CpuStorage, lb: &Layout, sg: &CpuStorage, lg: &Layout) -> Result<(CpuStorage, Shape)> {
    let a = data::<T>(sa, la, "silu_mul backward")?;
    let b = data::<T>(sb, lb, "silu_mul backward")?;
    let g = data::<T>(sg, lg, "silu_mul backward")?;
    let n = a.len();
    let mut out = vec![T::zero(); 2 * n];
    let (da, db) = out.split_at_mut(n);
    let one = T::one();
    let grads = |r0: usize, o: &mut [T], want_da: bool| {
        for (i, ov) in o.iter_mut().enumerate() {
            let (av, bv, gv) = (a[r0 + i], b[r0 + i], g[r0 + i]);
            let s = sigmoid(av);
            *ov = if want_da { gv * bv * s * (one + av * (one - s)) } else { gv * av * s };
        }
    };
    for_rows(da, 1, |r0, o| grads(r0, o, true));
    for_rows(db, 1, |r0, o| grads(r0, o, false));
    let mut dims = vec![2];
    dims.extend_from_slice(la.dims());
    Ok((T::to_cpu_storage_owned(out), Shape::from(dims)))
}

impl CustomOp2 for SiluMul {
    fn name(&self) -> &'static str {
        "fused-silu-mul"
    }
    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        by_dtype!(s1, self.name(), silu_mul_fwd(s1, l1, s2, l2))
    }
    fn bwd(&self, a: &Tensor, b: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let both = a.apply_op3_no_bwd(b, &grad.contiguous()?, &SiluMulBackward)?;
        Ok((Some(both.get(0)?), Some(both.get(1)?)))
    }
}

impl CustomOp3 for SiluMulBackward {
    fn name(&self) -> &'static str {
        "fused-silu-mul-backward"
    }
    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout, s3: &CpuStorage, l3: &Layout) -> Result<(CpuStorage, Shape)> {
        by_dtype!(s1, self.name(), silu_mul_bwd(s1, l1, s2, l2, s3, l3))
    }
}

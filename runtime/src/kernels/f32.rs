//! F32 weights × f32 activations. Reference: `quant::fp32::vec_dot_f32` (f64 accumulation).
//! The kernels here dot one weight row against each activation row (matrix × vector and
//! small batches); from `gemm::MIN_BATCH` rows the SIMD levels use `gemm` instead.

use super::act::Acts;
use super::{Kernel, Weight};
use crate::quant::fp32;
use std::ops::Range;

pub(super) fn select() -> Option<Kernel> {
    #[cfg(target_arch = "x86_64")]
    if super::cpu::has_avx2() {
        return Some(Kernel::simd("avx2+fma", avx2::rows).with_gemm(super::gemm::x86_rows()));
    }
    #[cfg(target_arch = "aarch64")]
    if let Some(k) = super::neon_float::select_f32() {
        return Some(k);
    }
    Some(Kernel::simd("wide", rows_wide))
}

pub(super) fn rows_reference(
    w: &Weight,
    acts: &Acts,
    rows: Range<usize>,
    out: &mut [f32],
    stride: usize,
) {
    for (r, out) in rows.zip(out.chunks_mut(stride)) {
        let out = &mut out[..acts.batch];
        let wr = w.row(r);
        for (b, o) in out.iter_mut().enumerate() {
            *o = fp32::vec_dot_f32(wr, acts.x_row(b));
        }
    }
}

/// Portable path: decode a slice of the row once (bytes may be unaligned in the mmap), then
/// `wide` dots against every activation row.
fn rows_wide(w: &Weight, acts: &Acts, rows: Range<usize>, out: &mut [f32], stride: usize) {
    super::f16::rows_decoded(w, acts, rows, out, stride, super::gemm::decode_f32);
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::super::act::Acts;
    use super::super::x86::{hsum, prefetch_ahead};
    use super::super::Weight;
    use std::arch::x86_64::*;
    use std::ops::Range;

    pub(super) fn rows(
        w: &Weight,
        acts: &Acts,
        rows: Range<usize>,
        out: &mut [f32],
        stride: usize,
    ) {
        // SAFETY: `select` returns this kernel only after detecting AVX2+FMA+F16C.
        unsafe { rows_impl(w, acts, rows, out, stride) }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn rows_impl(
        w: &Weight,
        acts: &Acts,
        rows: Range<usize>,
        out: &mut [f32],
        stride: usize,
    ) {
        for (r, out) in rows.zip(out.chunks_mut(stride)) {
            let out = &mut out[..acts.batch];
            let wr = w.row(r);
            for_groups!(acts.batch, out, dot, [], (wr, acts));
        }
    }

    /// One weight row (little-endian f32 bytes, any alignment) · N activation rows, 16
    /// columns per step with two accumulators per activation row.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn dot<const N: usize>(w: &[u8], acts: &Acts, b0: usize) -> [f32; N] {
        let n = w.len() / 4;
        let mut x: [&[f32]; N] = [&[]; N];
        for k in 0..N {
            x[k] = acts.x_row(b0 + k);
            // The raw-pointer reads below rely on this.
            assert_eq!(x[k].len(), n);
        }
        let wp = w.as_ptr().cast::<f32>();
        let mut acc = [[_mm256_setzero_ps(); 2]; N];
        let mut c = 0;
        while c + 16 <= n {
            prefetch_ahead(wp.add(c).cast(), 1);
            let w0 = _mm256_loadu_ps(wp.add(c));
            let w1 = _mm256_loadu_ps(wp.add(c + 8));
            for k in 0..N {
                let xp = x[k].as_ptr().add(c);
                acc[k][0] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(xp), acc[k][0]);
                acc[k][1] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(xp.add(8)), acc[k][1]);
            }
            c += 16;
        }
        let mut out = [0f32; N];
        for k in 0..N {
            let mut s = hsum(_mm256_add_ps(acc[k][0], acc[k][1]));
            for j in c..n {
                s += wp.add(j).read_unaligned() * x[k][j];
            }
            out[k] = s;
        }
        out
    }
}

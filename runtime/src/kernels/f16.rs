//! F16 weights × f32 activations, converted on the fly (F16C `vcvtph2ps` on x86) and
//! accumulated with f32 FMA. Reference: `quant::fp16::vec_dot_f32` (f64 accumulation).
//! The kernels here dot one weight row against each activation row (matrix × vector and
//! small batches); from `gemm::MIN_BATCH` rows the SIMD levels use `gemm` instead.

use super::act::Acts;
use super::{vec, Kernel, Weight};
use crate::quant::fp16;
use half::f16;
use std::ops::Range;

pub(super) fn select() -> Option<Kernel> {
    #[cfg(target_arch = "x86_64")]
    if super::cpu::has_avx2() {
        return Some(
            Kernel::simd("avx2+fma+f16c", avx2::rows).with_gemm(super::gemm::x86_rows()),
        );
    }
    #[cfg(target_arch = "aarch64")]
    if let Some(k) = super::neon_float::select_f16() {
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
            *o = fp16::vec_dot_f32(wr, acts.x_row(b));
        }
    }
}

fn rows_wide(w: &Weight, acts: &Acts, rows: Range<usize>, out: &mut [f32], stride: usize) {
    rows_decoded(w, acts, rows, out, stride, |src, dst| {
        for (d, b) in dst.iter_mut().zip(src.chunks_exact(2)) {
            *d = f16::from_le_bytes([b[0], b[1]]).to_f32();
        }
    });
}

/// Values decoded per slice of a weight row: 1 KB of f32 stays in L1 while every
/// activation row is dotted against it.
const SLICE: usize = 256;

/// The portable F16/F32 path: decode `SLICE` weights at a time with `decode(bytes, f32s)`,
/// then [`vec::dot_f32`] them against each activation row.
pub(super) fn rows_decoded(
    w: &Weight,
    acts: &Acts,
    rows: Range<usize>,
    out: &mut [f32],
    stride: usize,
    decode: impl Fn(&[u8], &mut [f32]),
) {
    let elem = w.ty.type_size();
    let mut buf = [0f32; SLICE];
    for (r, out) in rows.zip(out.chunks_mut(stride)) {
        let out = &mut out[..acts.batch];
        out.fill(0.0);
        let wr = w.row(r);
        for (s, bytes) in wr.chunks(SLICE * elem).enumerate() {
            let n = bytes.len() / elem;
            decode(bytes, &mut buf[..n]);
            for (b, o) in out.iter_mut().enumerate() {
                let x = &acts.x_row(b)[s * SLICE..s * SLICE + n];
                *o += vec::dot_f32(&buf[..n], x);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::super::act::Acts;
    use super::super::x86::{f16, hsum, prefetch_ahead};
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

    /// One weight row (f16 bytes, any alignment) · N activation rows: each 8 weights are
    /// converted once and used N times; two accumulators per activation row.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn dot<const N: usize>(w: &[u8], acts: &Acts, b0: usize) -> [f32; N] {
        let n = w.len() / 2;
        let mut x: [&[f32]; N] = [&[]; N];
        for k in 0..N {
            x[k] = acts.x_row(b0 + k);
            // The raw-pointer reads below rely on this.
            assert_eq!(x[k].len(), n);
        }
        let wp = w.as_ptr();
        let mut acc = [[_mm256_setzero_ps(); 2]; N];
        let mut c = 0;
        while c + 16 <= n {
            if c % 32 == 0 {
                prefetch_ahead(wp.add(2 * c), 1);
            }
            let w0 = _mm256_cvtph_ps(_mm_loadu_si128(wp.add(2 * c).cast()));
            let w1 = _mm256_cvtph_ps(_mm_loadu_si128(wp.add(2 * c + 16).cast()));
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
                s += f16([*wp.add(2 * j), *wp.add(2 * j + 1)]) * x[k][j];
            }
            out[k] = s;
        }
        out
    }
}

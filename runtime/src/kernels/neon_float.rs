//! F32 and F16 weights × f32 activations on aarch64: `fmla` (`vfmaq_f32`) in 4 accumulators
//! of 4 lanes per activation row, F16 weights widened with `fcvtl`/`fcvtl2` (ARMv8.0, no
//! FP16 arithmetic needed). References: `quant::fp32::vec_dot_f32`, `quant::fp16::vec_dot_f32`.
//! From `gemm::MIN_BATCH` activation rows both types use the blocked `gemm::neon` kernel.

use super::aarch64::{f16, f16x4, f16x4_high};
use super::act::Acts;
use super::{Kernel, Weight};
use std::arch::aarch64::*;
use std::ops::Range;

pub(super) fn select_f32() -> Option<Kernel> {
    super::cpu::has_neon()
        .then(|| Kernel::simd("neon", rows_f32).with_gemm(super::gemm::rows_for::<super::gemm::neon::Neon>))
}

pub(super) fn select_f16() -> Option<Kernel> {
    super::cpu::has_neon()
        .then(|| Kernel::simd("neon+fcvtl", rows_f16).with_gemm(super::gemm::rows_for::<super::gemm::neon::Neon>))
}

fn rows_f32(w: &Weight, acts: &Acts, rows: Range<usize>, out: &mut [f32], stride: usize) {
    for (r, out) in rows.zip(out.chunks_mut(stride)) {
        let out = &mut out[..acts.batch];
        let wr = w.row(r);
        // SAFETY: Advanced SIMD is baseline on aarch64; lengths are asserted in `dot`.
        unsafe { for_groups!(acts.batch, out, dot, [F32], (wr, acts)) };
    }
}

fn rows_f16(w: &Weight, acts: &Acts, rows: Range<usize>, out: &mut [f32], stride: usize) {
    for (r, out) in rows.zip(out.chunks_mut(stride)) {
        let out = &mut out[..acts.batch];
        let wr = w.row(r);
        // SAFETY: as above.
        unsafe { for_groups!(acts.batch, out, dot, [F16], (wr, acts)) };
    }
}

/// How a weight type's bytes become f32 lanes.
trait Decode {
    const SIZE: usize;
    /// 16 weights starting at byte `p` (any alignment).
    unsafe fn load16(p: *const u8) -> [float32x4_t; 4];
    /// The weight at byte `p`.
    unsafe fn one(p: *const u8) -> f32;
}

struct F32;
impl Decode for F32 {
    const SIZE: usize = 4;
    #[inline(always)]
    unsafe fn load16(p: *const u8) -> [float32x4_t; 4] {
        let p = p.cast::<f32>();
        [
            vld1q_f32(p),
            vld1q_f32(p.add(4)),
            vld1q_f32(p.add(8)),
            vld1q_f32(p.add(12)),
        ]
    }
    #[inline(always)]
    unsafe fn one(p: *const u8) -> f32 {
        p.cast::<f32>().read_unaligned()
    }
}

struct F16;
impl Decode for F16 {
    const SIZE: usize = 2;
    #[inline(always)]
    unsafe fn load16(p: *const u8) -> [float32x4_t; 4] {
        let p = p.cast::<u16>();
        let (a, b) = (vld1q_u16(p), vld1q_u16(p.add(8)));
        [
            f16x4(vget_low_u16(a)),
            f16x4_high(a),
            f16x4(vget_low_u16(b)),
            f16x4_high(b),
        ]
    }
    #[inline(always)]
    unsafe fn one(p: *const u8) -> f32 {
        f16([*p, *p.add(1)])
    }
}

/// One weight row (bytes, any alignment) · N activation rows: each 16 weights are decoded
/// once and used N times.
#[inline(always)]
unsafe fn dot<const N: usize, T: Decode>(w: &[u8], acts: &Acts, b0: usize) -> [f32; N] {
    let n = w.len() / T::SIZE;
    let mut x: [&[f32]; N] = [&[]; N];
    for k in 0..N {
        x[k] = acts.x_row(b0 + k);
        // The raw-pointer reads below rely on this.
        assert_eq!(x[k].len(), n);
    }
    let wp = w.as_ptr();
    let mut acc = [[vdupq_n_f32(0.0); 4]; N];
    let mut c = 0;
    while c + 16 <= n {
        let wv = T::load16(wp.add(c * T::SIZE));
        for k in 0..N {
            let xp = x[k].as_ptr().add(c);
            for l in 0..4 {
                acc[k][l] = vfmaq_f32(acc[k][l], wv[l], vld1q_f32(xp.add(4 * l)));
            }
        }
        c += 16;
    }
    let mut out = [0f32; N];
    for k in 0..N {
        let s = vaddq_f32(
            vaddq_f32(acc[k][0], acc[k][1]),
            vaddq_f32(acc[k][2], acc[k][3]),
        );
        let mut s = vaddvq_f32(s);
        for j in c..n {
            s += T::one(wp.add(j * T::SIZE)) * x[k][j];
        }
        out[k] = s;
    }
    out
}

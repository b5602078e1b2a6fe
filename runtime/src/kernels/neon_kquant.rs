//! Q4_K and Q6_K weights × Q8_K activations on aarch64, the NEON counterparts of the AVX2
//! kernels in `q4_k.rs` / `q6_k.rs`. The integer dot is a [`Dot`] parameter: `neon`
//! (widening multiplies, Cortex-A72) or `neon+dotprod` (`sdot`, Cortex-A76/A78AE). At the
//! i8mm level these types keep the `sdot` kernel: their per-sub-block scales differ between
//! weight rows, so a 2×2 `smmla` tile would need a per-lane scale multiply per 32 values
//! (ggml does that; not done here yet).
//!
//! Per super-block of 256 the weights are unpacked once into 16 registers of signed i8
//! (Q6_K: `q - 32`; Q4_K: nibbles 0..15) and dotted against N activation rows; each
//! sub-block's i32 dot is scaled by its integer scale with `mla`, and the super-block's sum
//! converted to f32 once.

use super::aarch64::*;
use super::act::Acts;
use super::{Kernel, Weight};
use crate::quant::as_blocks;
use crate::quant::q4_k::BlockQ4K;
use crate::quant::q6_k::BlockQ6K;
use crate::quant::q8_k::BlockQ8K;
use std::arch::aarch64::*;
use std::ops::Range;

pub(super) fn select_q4_k() -> Option<Kernel> {
    if super::cpu::has_dotprod() {
        return Some(Kernel::simd("neon+dotprod", q4k_dotprod));
    }
    if super::cpu::has_neon() {
        return Some(Kernel::simd("neon", q4k_neon));
    }
    None
}

pub(super) fn select_q6_k() -> Option<Kernel> {
    if super::cpu::has_dotprod() {
        return Some(Kernel::simd("neon+dotprod", q6k_dotprod));
    }
    if super::cpu::has_neon() {
        return Some(Kernel::simd("neon", q6k_neon));
    }
    None
}

fn q4k_neon(w: &Weight, acts: &Acts, rows: Range<usize>, out: &mut [f32], stride: usize) {
    // SAFETY: Advanced SIMD is baseline on aarch64; lengths are asserted in `dot_q4k`.
    unsafe { q4k_body::<Widen>(w, acts, rows, out, stride) }
}

fn q4k_dotprod(w: &Weight, acts: &Acts, rows: Range<usize>, out: &mut [f32], stride: usize) {
    // SAFETY: `select_q4_k` returns this kernel only after detecting dotprod.
    unsafe { q4k_dotprod_impl(w, acts, rows, out, stride) }
}

#[target_feature(enable = "neon,dotprod")]
unsafe fn q4k_dotprod_impl(
    w: &Weight,
    acts: &Acts,
    rows: Range<usize>,
    out: &mut [f32],
    stride: usize,
) {
    q4k_body::<Sdot>(w, acts, rows, out, stride)
}

fn q6k_neon(w: &Weight, acts: &Acts, rows: Range<usize>, out: &mut [f32], stride: usize) {
    // SAFETY: Advanced SIMD is baseline on aarch64; lengths are asserted in `dot_q6k`.
    unsafe { q6k_body::<Widen>(w, acts, rows, out, stride) }
}

fn q6k_dotprod(w: &Weight, acts: &Acts, rows: Range<usize>, out: &mut [f32], stride: usize) {
    // SAFETY: `select_q6_k` returns this kernel only after detecting dotprod.
    unsafe { q6k_dotprod_impl(w, acts, rows, out, stride) }
}

#[target_feature(enable = "neon,dotprod")]
unsafe fn q6k_dotprod_impl(
    w: &Weight,
    acts: &Acts,
    rows: Range<usize>,
    out: &mut [f32],
    stride: usize,
) {
    q6k_body::<Sdot>(w, acts, rows, out, stride)
}

#[inline(always)]
unsafe fn q4k_body<D: Dot>(
    w: &Weight,
    acts: &Acts,
    rows: Range<usize>,
    out: &mut [f32],
    stride: usize,
) {
    for (r, out) in rows.zip(out.chunks_mut(stride)) {
        let out = &mut out[..acts.batch];
        let wr = as_blocks::<BlockQ4K>(w.row(r));
        for_groups!(acts.batch, out, dot_q4k, [D], (wr, acts));
    }
}

#[inline(always)]
unsafe fn q6k_body<D: Dot>(
    w: &Weight,
    acts: &Acts,
    rows: Range<usize>,
    out: &mut [f32],
    stride: usize,
) {
    for (r, out) in rows.zip(out.chunks_mut(stride)) {
        let out = &mut out[..acts.batch];
        let wr = as_blocks::<BlockQ6K>(w.row(r));
        for_groups!(acts.batch, out, dot_q6k, [D], (wr, acts));
    }
}

/// Activation rows `b0 .. b0 + N` as Q8_K blocks and their f32 scales.
#[inline(always)]
unsafe fn q8k_rows<'a, const N: usize>(
    acts: &Acts<'a>,
    b0: usize,
    nb: usize,
) -> ([&'a [BlockQ8K]; N], [&'a [f32]; N]) {
    let mut y: [&[BlockQ8K]; N] = [&[]; N];
    let mut d: [&[f32]; N] = [&[]; N];
    for k in 0..N {
        y[k] = as_blocks(acts.q_row(b0 + k));
        d[k] = acts.d_row(b0 + k);
        // The unchecked reads below rely on these.
        assert!(y[k].len() == nb && d[k].len() == nb);
    }
    (y, d)
}

/// The 16 `bsums` of a Q8_K block (sums of 16 quants each).
#[inline(always)]
unsafe fn bsums(yb: &BlockQ8K) -> [int16x8_t; 2] {
    let p = yb.bsums.as_ptr().cast::<i16>();
    // Little-endian i16 fields, 2-byte aligned or not: `ld1` has no alignment requirement.
    [vld1q_s16(p), vld1q_s16(p.add(8))]
}

/// One Q4_K weight row · N activation rows.
#[inline(always)]
unsafe fn dot_q4k<const N: usize, D: Dot>(w: &[BlockQ4K], acts: &Acts, b0: usize) -> [f32; N] {
    let nb = w.len();
    let (y, d) = q8k_rows::<N>(acts, b0, nb);
    let m4 = vdupq_n_u8(0x0F);
    let mut acc = [vdupq_n_f32(0.0); N];
    let mut acc_m = [0f32; N];
    for i in 0..nb {
        let wb = w.get_unchecked(i);
        let (dw, dmin) = (f16(wb.d), f16(wb.dmin));
        let (sc, mins) = super::q4_k::scales_mins(&wb.scales);
        let mins16 = vreinterpretq_s16_u16(vmovl_u8(vld1_u8(mins.as_ptr())));
        // Register 2j + h: sub-block j's values 16h .. 16h + 16 (sub-block 2c: low nibbles of
        // the 32 bytes of chunk c, sub-block 2c + 1: their high nibbles).
        let mut q = [vdupq_n_s8(0); 16];
        for c in 0..4 {
            for h in 0..2 {
                let bits = vld1q_u8(wb.qs.as_ptr().add(32 * c + 16 * h));
                q[4 * c + h] = vreinterpretq_s8_u8(vandq_u8(bits, m4));
                q[4 * c + 2 + h] = vreinterpretq_s8_u8(vshrq_n_u8::<4>(bits));
            }
        }
        for k in 0..N {
            let yb = y[k].get_unchecked(i);
            let dy = *d[k].get_unchecked(i);
            // Mins: Σ_j m_j · (sum of sub-block j's 32 activations), from bsums.
            let [b0, b1] = bsums(yb);
            let pair = vpaddq_s16(b0, b1);
            let pm = vmull_s16(vget_low_s16(mins16), vget_low_s16(pair));
            let pm = vmlal_high_s16(pm, mins16, pair);
            acc_m[k] += dmin * dy * vaddvq_s32(pm) as f32;
            let mut sumi = vdupq_n_s32(0);
            for j in 0..8 {
                let a = load_i8x32(yb.qs.as_ptr().add(32 * j));
                let p = D::dot(D::dot(vdupq_n_s32(0), q[2 * j], a[0]), q[2 * j + 1], a[1]);
                sumi = vmlaq_n_s32(sumi, p, sc[j] as i32);
            }
            acc[k] = vfmaq_f32(acc[k], vcvtq_f32_s32(sumi), vdupq_n_f32(dw * dy));
        }
    }
    let mut out = [0f32; N];
    for k in 0..N {
        out[k] = vaddvq_f32(acc[k]) - acc_m[k];
    }
    out
}

/// One Q6_K weight row · N activation rows.
#[inline(always)]
unsafe fn dot_q6k<const N: usize, D: Dot>(w: &[BlockQ6K], acts: &Acts, b0: usize) -> [f32; N] {
    let nb = w.len();
    let (y, d) = q8k_rows::<N>(acts, b0, nb);
    let m4 = vdupq_n_u8(0x0F);
    let m30 = vdupq_n_u8(0x30);
    let off = vdupq_n_s8(32);
    let mut acc = [vdupq_n_f32(0.0); N];
    for i in 0..nb {
        let wb = w.get_unchecked(i);
        let dw = f16(wb.d);
        // Register g: values 16g .. 16g + 16, which share scale g.
        let mut q = [vdupq_n_s8(0); 16];
        for h in 0..2 {
            for t in 0..2 {
                let ql0 = vld1q_u8(wb.ql.as_ptr().add(64 * h + 16 * t));
                let ql1 = vld1q_u8(wb.ql.as_ptr().add(64 * h + 32 + 16 * t));
                let qh = vld1q_u8(wb.qh.as_ptr().add(32 * h + 16 * t));
                let v = [
                    vorrq_u8(vandq_u8(ql0, m4), vandq_u8(vshlq_n_u8::<4>(qh), m30)),
                    vorrq_u8(vandq_u8(ql1, m4), vandq_u8(vshlq_n_u8::<2>(qh), m30)),
                    vorrq_u8(vshrq_n_u8::<4>(ql0), vandq_u8(qh, m30)),
                    vorrq_u8(vshrq_n_u8::<4>(ql1), vandq_u8(vshrq_n_u8::<2>(qh), m30)),
                ];
                for (j, v) in v.into_iter().enumerate() {
                    q[8 * h + 2 * j + t] = vsubq_s8(vreinterpretq_s8_u8(v), off);
                }
            }
        }
        for k in 0..N {
            let yb = y[k].get_unchecked(i);
            let mut sumi = vdupq_n_s32(0);
            for g in 0..16 {
                let a = vld1q_s8(yb.qs.as_ptr().add(16 * g));
                let p = D::dot(vdupq_n_s32(0), q[g], a);
                sumi = vmlaq_n_s32(sumi, p, *wb.scales.get_unchecked(g) as i32);
            }
            let dy = *d[k].get_unchecked(i);
            acc[k] = vfmaq_f32(acc[k], vcvtq_f32_s32(sumi), vdupq_n_f32(dw * dy));
        }
    }
    let mut out = [0f32; N];
    for k in 0..N {
        out[k] = vaddvq_f32(acc[k]);
    }
    out
}

//! Q4_K and Q6_K weights × Q8_K activations on aarch64, the NEON counterparts of the AVX2
//! kernels in `q4_k.rs` / `q6_k.rs`. The integer dot is a [`Dot`] parameter: `neon`
//! (widening multiplies, Cortex-A72) or `neon+dotprod` (`sdot`, Cortex-A76/A78AE). With
//! i8mm and batch > 1, 2 weight rows × 2 activation rows go through `smmla`, each 16-value
//! group's 2×2 i32 tile scaled by `[s0, s0, s1, s1]` (the two weight rows' group scales).
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
    if super::cpu::has_i8mm() {
        return Some(Kernel::simd("neon+i8mm", rows_i8mm::<Q4K>));
    }
    if super::cpu::has_dotprod() {
        return Some(Kernel::simd("neon+dotprod", q4k_dotprod));
    }
    if super::cpu::has_neon() {
        return Some(Kernel::simd("neon", q4k_neon));
    }
    None
}

pub(super) fn select_q6_k() -> Option<Kernel> {
    if super::cpu::has_i8mm() {
        return Some(Kernel::simd("neon+i8mm", rows_i8mm::<Q6K>));
    }
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

/// A super-block unpacked for the `smmla` kernel: register `g` holds values 16g .. 16g + 16
/// as i8, `sc[g]` their integer scale.
struct Unpacked {
    q: [int8x16_t; 16],
    sc: [i32; 16],
    d: f32,
    /// Q4_K only: `dmin` and the 8 sub-block mins.
    dmin: f32,
    mins: int16x8_t,
}

/// A k-quant type's part of the `smmla` kernel.
trait KQuant {
    type W: crate::quant::Block;
    /// Whether the `- dmin · m` term applies (Q4_K).
    const MINS: bool;
    unsafe fn unpack(w: &Self::W) -> Unpacked;
    /// The `sdot` kernel, for rows the 2×2 tiles leave over.
    unsafe fn rows_sdot(
        w: &Weight,
        acts: &Acts,
        rows: Range<usize>,
        out: &mut [f32],
        stride: usize,
    );
    unsafe fn dot1(w: &[Self::W], acts: &Acts, b: usize) -> f32;
}

struct Q4K;
impl KQuant for Q4K {
    type W = BlockQ4K;
    const MINS: bool = true;
    #[inline(always)]
    unsafe fn unpack(wb: &BlockQ4K) -> Unpacked {
        let m4 = vdupq_n_u8(0x0F);
        let (sc, mins) = super::q4_k::scales_mins(&wb.scales);
        let mut u = Unpacked {
            q: [vdupq_n_s8(0); 16],
            sc: [0; 16],
            d: f16(wb.d),
            dmin: f16(wb.dmin),
            mins: vreinterpretq_s16_u16(vmovl_u8(vld1_u8(mins.as_ptr()))),
        };
        for c in 0..4 {
            for h in 0..2 {
                let bits = vld1q_u8(wb.qs.as_ptr().add(32 * c + 16 * h));
                u.q[4 * c + h] = vreinterpretq_s8_u8(vandq_u8(bits, m4));
                u.q[4 * c + 2 + h] = vreinterpretq_s8_u8(vshrq_n_u8::<4>(bits));
            }
        }
        for (g, s) in u.sc.iter_mut().enumerate() {
            *s = sc[g / 2] as i32;
        }
        u
    }
    #[inline(always)]
    unsafe fn rows_sdot(
        w: &Weight,
        acts: &Acts,
        rows: Range<usize>,
        out: &mut [f32],
        stride: usize,
    ) {
        q4k_body::<Sdot>(w, acts, rows, out, stride)
    }
    #[inline(always)]
    unsafe fn dot1(w: &[BlockQ4K], acts: &Acts, b: usize) -> f32 {
        dot_q4k::<1, Sdot>(w, acts, b)[0]
    }
}

struct Q6K;
impl KQuant for Q6K {
    type W = BlockQ6K;
    const MINS: bool = false;
    #[inline(always)]
    unsafe fn unpack(wb: &BlockQ6K) -> Unpacked {
        let (m4, m30, off) = (vdupq_n_u8(0x0F), vdupq_n_u8(0x30), vdupq_n_s8(32));
        let mut u = Unpacked {
            q: [vdupq_n_s8(0); 16],
            sc: [0; 16],
            d: f16(wb.d),
            dmin: 0.0,
            mins: vdupq_n_s16(0),
        };
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
                    u.q[8 * h + 2 * j + t] = vsubq_s8(vreinterpretq_s8_u8(v), off);
                }
            }
        }
        for (g, s) in u.sc.iter_mut().enumerate() {
            *s = wb.scales[g] as i32;
        }
        u
    }
    #[inline(always)]
    unsafe fn rows_sdot(
        w: &Weight,
        acts: &Acts,
        rows: Range<usize>,
        out: &mut [f32],
        stride: usize,
    ) {
        q6k_body::<Sdot>(w, acts, rows, out, stride)
    }
    #[inline(always)]
    unsafe fn dot1(w: &[BlockQ6K], acts: &Acts, b: usize) -> f32 {
        dot_q6k::<1, Sdot>(w, acts, b)[0]
    }
}

fn rows_i8mm<K: KQuant>(
    w: &Weight,
    acts: &Acts,
    rows: Range<usize>,
    out: &mut [f32],
    stride: usize,
) {
    // SAFETY: the selects return this kernel only after detecting dotprod and i8mm.
    unsafe { rows_i8mm_impl::<K>(w, acts, rows, out, stride) }
}

/// Weight rows in pairs × activation rows in pairs through `smmla`; an odd last weight row
/// or activation row (and batch 1) through the `sdot` kernel.
#[target_feature(enable = "neon,dotprod,i8mm")]
unsafe fn rows_i8mm_impl<K: KQuant>(
    w: &Weight,
    acts: &Acts,
    rows: Range<usize>,
    out: &mut [f32],
    stride: usize,
) {
    let batch = acts.batch;
    if batch < 2 {
        return K::rows_sdot(w, acts, rows, out, stride);
    }
    let (start, end) = (rows.start, rows.end);
    let mut r = start;
    while r + 2 <= end {
        let w0 = as_blocks::<K::W>(w.row(r));
        let w1 = as_blocks::<K::W>(w.row(r + 1));
        let (o0, o1) = ((r - start) * stride, (r + 1 - start) * stride);
        let mut b = 0;
        while b + 2 <= batch {
            let v = dot2x2::<K>(w0, w1, acts, b);
            out[o0 + b] = v[0];
            out[o0 + b + 1] = v[1];
            out[o1 + b] = v[2];
            out[o1 + b + 1] = v[3];
            b += 2;
        }
        if b < batch {
            out[o0 + b] = K::dot1(w0, acts, b);
            out[o1 + b] = K::dot1(w1, acts, b);
        }
        r += 2;
    }
    if r < end {
        let o = (r - start) * stride;
        K::rows_sdot(w, acts, r..end, &mut out[o..], stride);
    }
}

/// `Σ_j mins[j] · (bsum[2j] + bsum[2j+1])`: a Q4_K row's mins against a Q8_K block's sums.
#[inline(always)]
unsafe fn mins_dot(mins: int16x8_t, yb: &BlockQ8K) -> i32 {
    let [b0, b1] = bsums(yb);
    let pair = vpaddq_s16(b0, b1);
    let p = vmull_s16(vget_low_s16(mins), vget_low_s16(pair));
    vaddvq_s32(vmlal_high_s16(p, mins, pair))
}

/// Weight rows `w0`, `w1` · activation rows `b`, `b + 1` as `[w0·y0, w0·y1, w1·y0, w1·y1]`.
#[inline(always)]
unsafe fn dot2x2<K: KQuant>(w0: &[K::W], w1: &[K::W], acts: &Acts, b: usize) -> [f32; 4] {
    let nb = w0.len();
    assert_eq!(w1.len(), nb);
    let (y, d) = q8k_rows::<2>(acts, b, nb);
    let mut acc = vdupq_n_f32(0.0);
    let mut acc_m = vdupq_n_f32(0.0);
    for i in 0..nb {
        let u0 = K::unpack(w0.get_unchecked(i));
        let u1 = K::unpack(w1.get_unchecked(i));
        let (ya, yb) = (y[0].get_unchecked(i), y[1].get_unchecked(i));
        let mut isum = vdupq_n_s32(0);
        for g in 0..16 {
            let a = vreinterpretq_s64_s8(vld1q_s8(ya.qs.as_ptr().add(16 * g)));
            let c = vreinterpretq_s64_s8(vld1q_s8(yb.qs.as_ptr().add(16 * g)));
            let (q0, q1) = (vreinterpretq_s64_s8(u0.q[g]), vreinterpretq_s64_s8(u1.q[g]));
            let wl = vreinterpretq_s8_s64(vzip1q_s64(q0, q1));
            let wh = vreinterpretq_s8_s64(vzip2q_s64(q0, q1));
            let yl = vreinterpretq_s8_s64(vzip1q_s64(a, c));
            let yh = vreinterpretq_s8_s64(vzip2q_s64(a, c));
            let p = smmla(smmla(vdupq_n_s32(0), wl, yl), wh, yh);
            let sc = [u0.sc[g], u0.sc[g], u1.sc[g], u1.sc[g]];
            isum = vmlaq_s32(isum, p, vld1q_s32(sc.as_ptr()));
        }
        let (da, db) = (*d[0].get_unchecked(i), *d[1].get_unchecked(i));
        let dv = [u0.d * da, u0.d * db, u1.d * da, u1.d * db];
        acc = vfmaq_f32(acc, vcvtq_f32_s32(isum), vld1q_f32(dv.as_ptr()));
        if K::MINS {
            let m = [
                u0.dmin * da * mins_dot(u0.mins, ya) as f32,
                u0.dmin * db * mins_dot(u0.mins, yb) as f32,
                u1.dmin * da * mins_dot(u1.mins, ya) as f32,
                u1.dmin * db * mins_dot(u1.mins, yb) as f32,
            ];
            acc_m = vaddq_f32(acc_m, vld1q_f32(m.as_ptr()));
        }
    }
    let mut out = [0f32; 4];
    vst1q_f32(out.as_mut_ptr(), vsubq_f32(acc, acc_m));
    out
}

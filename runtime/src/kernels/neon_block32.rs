//! The aarch64 kernel shared by the 32-value block types (Q8_0, Q4_0, Q4_1 weights against
//! Q8_0/Q8_1 activations), the NEON counterpart of `block32.rs`: each type supplies a
//! [`Kind`] (how to turn its block into 32 signed i8); the integer dot is a [`Dot`]
//! parameter, so one body serves the three levels:
//!
//! - `neon`: widening multiplies (`smull` + `sadalp`), any ARMv8-A core (Cortex-A72);
//! - `neon+dotprod`: `sdot` (Cortex-A76, A78AE);
//! - `neon+i8mm`: for batch > 1, `smmla` on 2 weight rows × 2 activation rows per
//!   instruction (the rest, and batch 1, as `neon+dotprod`).
//!
//! Per group of 8 blocks the f16 weight scales are converted together and multiplied by the
//! activation scales; per block the weight is unpacked once and dotted against N activation
//! rows; two accumulator sets hide the FMA latency.

use super::aarch64::*;
use super::act::{Acts, Qs32};
use super::{Kernel, Weight};
use crate::quant::{as_blocks, Block};
use std::arch::aarch64::*;
use std::mem::size_of;
use std::ops::Range;

/// A block type's part of the kernel.
pub(super) trait Kind {
    /// The weight block.
    type W: Block;
    /// Byte offset of the f16 scale `d` in the weight block.
    const D: usize;
    /// Byte offset of Q4_1's f16 `m`, whose `m · Σx` term comes from the activation `s`.
    const M: Option<usize> = None;
    /// The block's 32 quants as i8, elements 0..16 and 16..32 (the activation order).
    unsafe fn unpack(w: &Self::W) -> [int8x16_t; 2];
}

/// The three levels' kernels for a kind; `select` picks by `cpu::level`.
pub(super) fn select<K: Kind>() -> Option<Kernel> {
    if super::cpu::has_i8mm() {
        return Some(Kernel::simd("neon+i8mm", rows_i8mm::<K>));
    }
    if super::cpu::has_dotprod() {
        return Some(Kernel::simd("neon+dotprod", rows_dotprod::<K>));
    }
    if super::cpu::has_neon() {
        return Some(Kernel::simd("neon", rows_neon::<K>));
    }
    None
}

fn rows_neon<K: Kind>(w: &Weight, acts: &Acts, rows: Range<usize>, out: &mut [f32], stride: usize) {
    // SAFETY: Advanced SIMD is baseline on aarch64; lengths are asserted in `dot`.
    unsafe { rows_body::<K, Widen>(w, acts, rows, out, stride) }
}

fn rows_dotprod<K: Kind>(
    w: &Weight,
    acts: &Acts,
    rows: Range<usize>,
    out: &mut [f32],
    stride: usize,
) {
    // SAFETY: `select` returns this kernel only after detecting dotprod.
    unsafe { rows_dotprod_impl::<K>(w, acts, rows, out, stride) }
}

#[target_feature(enable = "neon,dotprod")]
unsafe fn rows_dotprod_impl<K: Kind>(
    w: &Weight,
    acts: &Acts,
    rows: Range<usize>,
    out: &mut [f32],
    stride: usize,
) {
    rows_body::<K, Sdot>(w, acts, rows, out, stride)
}

fn rows_i8mm<K: Kind>(w: &Weight, acts: &Acts, rows: Range<usize>, out: &mut [f32], stride: usize) {
    // SAFETY: `select` returns this kernel only after detecting dotprod and i8mm.
    unsafe { rows_i8mm_impl::<K>(w, acts, rows, out, stride) }
}

/// Weight rows in pairs × activation rows in pairs through `smmla`; an odd last weight row
/// or activation row (and batch 1) through the `sdot` kernel.
#[target_feature(enable = "neon,dotprod,i8mm")]
unsafe fn rows_i8mm_impl<K: Kind>(
    w: &Weight,
    acts: &Acts,
    rows: Range<usize>,
    out: &mut [f32],
    stride: usize,
) {
    let batch = acts.batch;
    if batch < 2 {
        return rows_body::<K, Sdot>(w, acts, rows, out, stride);
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
            out[o0 + b] = dot::<1, K, Sdot>(w0, acts, b)[0];
            out[o1 + b] = dot::<1, K, Sdot>(w1, acts, b)[0];
        }
        r += 2;
    }
    if r < end {
        let o = (r - start) * stride;
        rows_body::<K, Sdot>(w, acts, r..end, &mut out[o..], stride);
    }
}

#[inline(always)]
unsafe fn rows_body<K: Kind, D: Dot>(
    w: &Weight,
    acts: &Acts,
    rows: Range<usize>,
    out: &mut [f32],
    stride: usize,
) {
    for (r, out) in rows.zip(out.chunks_mut(stride)) {
        let out = &mut out[..acts.batch];
        let wr = as_blocks::<K::W>(w.row(r));
        for_groups!(acts.batch, out, dot, [K, D], (wr, acts));
    }
}

/// Activation rows `b0 .. b0 + N`, as slices of the side arrays.
struct Rows<'a, const N: usize> {
    qs: [&'a [Qs32]; N],
    d: [&'a [f32]; N],
    s: [&'a [f32]; N],
}

#[inline(always)]
unsafe fn rows_of<'a, const N: usize, K: Kind>(
    acts: &Acts<'a>,
    b0: usize,
    nb: usize,
) -> Rows<'a, N> {
    let mut y = Rows::<N> {
        qs: [&[]; N],
        d: [&[]; N],
        s: [&[]; N],
    };
    for k in 0..N {
        y.qs[k] = acts.qs_row(b0 + k);
        y.d[k] = acts.d_row(b0 + k);
        // The unchecked reads below rely on these lengths.
        assert!(y.qs[k].len() == nb && y.d[k].len() == nb);
        if K::M.is_some() {
            y.s[k] = acts.s_row(b0 + k);
            assert_eq!(y.s[k].len(), nb);
        }
    }
    y
}

/// One weight row · N activation rows.
#[inline(always)]
unsafe fn dot<const N: usize, K: Kind, D: Dot>(w: &[K::W], acts: &Acts, b0: usize) -> [f32; N] {
    let nb = w.len();
    let y = rows_of::<N, K>(acts, b0, nb);
    // Indexed only by the unrolled `k`, so they stay in registers.
    let mut acc0 = [vdupq_n_f32(0.0); N];
    let mut acc1 = [vdupq_n_f32(0.0); N];
    let mut macc = [0f32; N];
    let mut i = 0;
    while i < nb {
        let g = (nb - i).min(8);
        let base = w.as_ptr().add(i).cast::<u8>();
        let dw = f16x8(base.add(K::D), size_of::<K::W>(), g);
        let mut sc = [[0f32; 8]; N];
        for k in 0..N {
            sc[k] = mul8(&dw, y.d[k].get_unchecked(i..i + g), g);
        }
        if let Some(m) = K::M {
            // Σ m_w · s_y for the group.
            let mw = f16x8(base.add(m), size_of::<K::W>(), g);
            for k in 0..N {
                let p = mul8(&mw, y.s[k].get_unchecked(i..i + g), g);
                let v = vaddq_f32(vld1q_f32(p.as_ptr()), vld1q_f32(p.as_ptr().add(4)));
                macc[k] += vaddvq_f32(v);
            }
        }
        let mut j = 0;
        while j + 2 <= g {
            block::<N, K, D>(w, &y, &sc, i, j, &mut acc0);
            block::<N, K, D>(w, &y, &sc, i, j + 1, &mut acc1);
            j += 2;
        }
        if j < g {
            block::<N, K, D>(w, &y, &sc, i, j, &mut acc0);
        }
        i += g;
    }
    let mut out = [0f32; N];
    for k in 0..N {
        out[k] = vaddvq_f32(vaddq_f32(acc0[k], acc1[k])) + macc[k];
    }
    out
}

/// Block `i + j` against the N activation rows, scales from `sc[k][j]`.
#[inline(always)]
unsafe fn block<const N: usize, K: Kind, D: Dot>(
    w: &[K::W],
    y: &Rows<N>,
    sc: &[[f32; 8]; N],
    i: usize,
    j: usize,
    acc: &mut [float32x4_t; N],
) {
    let b = i + j;
    let wq = K::unpack(w.get_unchecked(b));
    for k in 0..N {
        let yq = load_i8x32(y.qs[k].get_unchecked(b).0.as_ptr());
        let p = D::dot(D::dot(vdupq_n_s32(0), wq[0], yq[0]), wq[1], yq[1]);
        let scale = vdupq_n_f32(*sc[k].get_unchecked(j));
        acc[k] = vfmaq_f32(acc[k], vcvtq_f32_s32(p), scale);
    }
}

/// Weight rows `w0`, `w1` · activation rows `b`, `b + 1` as `[w0·y0, w0·y1, w1·y0, w1·y1]`:
/// per block, 4 `smmla` on the 8-byte halves interleaved by `zip1`/`zip2`.
#[inline(always)]
unsafe fn dot2x2<K: Kind>(w0: &[K::W], w1: &[K::W], acts: &Acts, b: usize) -> [f32; 4] {
    let nb = w0.len();
    assert_eq!(w1.len(), nb);
    let y = rows_of::<2, K>(acts, b, nb);
    let mut acc = [vdupq_n_f32(0.0); 2];
    let mut macc = vdupq_n_f32(0.0);
    let mut i = 0;
    while i < nb {
        let g = (nb - i).min(8);
        let (p0, p1) = (
            w0.as_ptr().add(i).cast::<u8>(),
            w1.as_ptr().add(i).cast::<u8>(),
        );
        let d0 = f16x8(p0.add(K::D), size_of::<K::W>(), g);
        let d1 = f16x8(p1.add(K::D), size_of::<K::W>(), g);
        let (m0, m1) = match K::M {
            Some(m) => (
                f16x8(p0.add(m), size_of::<K::W>(), g),
                f16x8(p1.add(m), size_of::<K::W>(), g),
            ),
            None => ([0f32; 8], [0f32; 8]),
        };
        for j in 0..g {
            let bi = i + j;
            let a = K::unpack(w0.get_unchecked(bi));
            let c = K::unpack(w1.get_unchecked(bi));
            let ya = load_i8x32(y.qs[0].get_unchecked(bi).0.as_ptr());
            let yb = load_i8x32(y.qs[1].get_unchecked(bi).0.as_ptr());
            let mut p = vdupq_n_s32(0);
            for h in 0..2 {
                let (a64, c64) = (vreinterpretq_s64_s8(a[h]), vreinterpretq_s64_s8(c[h]));
                let (ya64, yb64) = (vreinterpretq_s64_s8(ya[h]), vreinterpretq_s64_s8(yb[h]));
                let wl = vreinterpretq_s8_s64(vzip1q_s64(a64, c64));
                let wh = vreinterpretq_s8_s64(vzip2q_s64(a64, c64));
                let yl = vreinterpretq_s8_s64(vzip1q_s64(ya64, yb64));
                let yh = vreinterpretq_s8_s64(vzip2q_s64(ya64, yb64));
                p = smmla(smmla(p, wl, yl), wh, yh);
            }
            let (da, db) = (*y.d[0].get_unchecked(bi), *y.d[1].get_unchecked(bi));
            let dy = [da, db, da, db];
            let dw = [d0[j], d0[j], d1[j], d1[j]];
            let scale = vmulq_f32(vld1q_f32(dw.as_ptr()), vld1q_f32(dy.as_ptr()));
            acc[j & 1] = vfmaq_f32(acc[j & 1], vcvtq_f32_s32(p), scale);
            if K::M.is_some() {
                let (sa, sb) = (*y.s[0].get_unchecked(bi), *y.s[1].get_unchecked(bi));
                let sy = [sa, sb, sa, sb];
                let mw = [m0[j], m0[j], m1[j], m1[j]];
                macc = vfmaq_f32(macc, vld1q_f32(mw.as_ptr()), vld1q_f32(sy.as_ptr()));
            }
        }
        i += g;
    }
    let mut out = [0f32; 4];
    vst1q_f32(out.as_mut_ptr(), vaddq_f32(vaddq_f32(acc[0], acc[1]), macc));
    out
}

/// Q4_0/Q4_1 nibbles in element order: low nibbles of `qs` are elements 0..16, high 16..32.
#[inline(always)]
pub(super) unsafe fn nibbles(qs: &[u8; 16]) -> [uint8x16_t; 2] {
    let v = vld1q_u8(qs.as_ptr());
    [vandq_u8(v, vdupq_n_u8(0x0F)), vshrq_n_u8::<4>(v)]
}

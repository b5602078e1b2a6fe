//! The activation quantizer on aarch64: Q8_0, Q8_1 and Q8_K rows with NEON, bit-identical to
//! the references in `crate::quant` (checked by `tests/kernels_helpers.rs`). Rounding maps
//! directly: `fcvtas` (`vcvtaq_s32_f32`) is `roundf` (half away from zero) for Q8_0/Q8_1,
//! `fcvtns` (`vcvtnq_s32_f32`) is ggml's `nearest_int` (half to even) for Q8_K; narrowing
//! saturates like Rust's `as i8`. Blocks with NaN/inf fall back to the reference.

use crate::quant::q8_k::QK_K;
use std::arch::aarch64::*;

/// Whether any of these |values| is NaN or infinite.
#[inline(always)]
unsafe fn any_nonfinite(abs: &[float32x4_t]) -> bool {
    let inf = vdupq_n_f32(f32::INFINITY);
    let mut finite = vdupq_n_u32(u32::MAX);
    for &a in abs {
        // `a < inf` is false for inf and NaN.
        finite = vandq_u32(finite, vcltq_f32(a, inf));
    }
    vminvq_u32(finite) == 0
}

/// 16 i32 (values 0..16 in order) → 16 i8, saturating.
#[inline(always)]
unsafe fn narrow16(q: &[int32x4_t]) -> int8x16_t {
    let a = vcombine_s16(vqmovn_s32(q[0]), vqmovn_s32(q[1]));
    let b = vcombine_s16(vqmovn_s32(q[2]), vqmovn_s32(q[3]));
    vcombine_s8(vqmovn_s16(a), vqmovn_s16(b))
}

/// Q8_0 (or Q8_1 with `with_sum`) blocks of 34 (36) bytes, as `quantize_row_q8_0_ref`.
///
/// # Safety
/// `out` holds `x.len() / 32` blocks (checked by the callers).
pub(super) unsafe fn quantize_q8_0(x: &[f32], out: &mut [u8], with_sum: bool) {
    let bsize = if with_sum { 36 } else { 34 };
    for (xb, ob) in x.chunks_exact(32).zip(out.chunks_exact_mut(bsize)) {
        let p = xb.as_ptr();
        let mut v = [vdupq_n_f32(0.0); 8];
        for (l, v) in v.iter_mut().enumerate() {
            *v = vld1q_f32(p.add(4 * l));
        }
        let a = v.map(|v| vabsq_f32(v));
        if any_nonfinite(&a) {
            if with_sum {
                crate::quant::q8_1::quantize_row(xb, ob);
            } else {
                crate::quant::q8_0::quantize_row(xb, ob);
            }
            continue;
        }
        let m = vmaxq_f32(
            vmaxq_f32(vmaxq_f32(a[0], a[1]), vmaxq_f32(a[2], a[3])),
            vmaxq_f32(vmaxq_f32(a[4], a[5]), vmaxq_f32(a[6], a[7])),
        );
        let amax = vmaxvq_f32(m);
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let idv = vdupq_n_f32(id);
        let q = v.map(|v| vcvtaq_s32_f32(vmulq_f32(v, idv)));
        ob[0..2].copy_from_slice(&half::f16::from_f32(d).to_le_bytes());
        let qs_off = if with_sum { 4 } else { 2 };
        let dst = ob.as_mut_ptr().add(qs_off).cast::<i8>();
        let (lo, hi) = (narrow16(&q[..4]), narrow16(&q[4..]));
        vst1q_s8(dst, lo);
        vst1q_s8(dst.add(16), hi);
        if with_sum {
            // Sum of the stored (saturated) quants, as the reference sums its i8 values.
            let s = vaddq_s32(vpaddlq_s16(vpaddlq_s8(lo)), vpaddlq_s16(vpaddlq_s8(hi)));
            let sum = vaddvq_s32(s);
            // ggml multiplies by the f32 `d`, not the rounded f16 one.
            ob[2..4].copy_from_slice(&half::f16::from_f32(sum as f32 * d).to_le_bytes());
        }
    }
}

/// Q8_K blocks of 292 bytes, as `quantize_row_q8_K_ref`: `iscale = -127 / max` with `max`
/// the first value of largest magnitude, round half to even, capped at 127.
///
/// # Safety
/// `out` holds `x.len() / 256` blocks (checked by the callers).
pub(super) unsafe fn quantize_q8_k(x: &[f32], out: &mut [u8]) {
    for (xb, ob) in x.chunks_exact(QK_K).zip(out.chunks_exact_mut(292)) {
        let p = xb.as_ptr();
        let mut m = vdupq_n_f32(0.0);
        let mut bad = false;
        for i in 0..QK_K / 16 {
            let a = [0, 1, 2, 3].map(|k| vabsq_f32(vld1q_f32(p.add(16 * i + 4 * k))));
            bad |= any_nonfinite(&a);
            m = vmaxq_f32(m, vmaxq_f32(vmaxq_f32(a[0], a[1]), vmaxq_f32(a[2], a[3])));
        }
        let amax = vmaxvq_f32(m);
        if bad || amax == 0.0 {
            // NaN/inf, or all zeros (the reference's zeroed block).
            crate::quant::q8_k::quantize_row(xb, ob);
            continue;
        }
        let max = xb.iter().copied().find(|v| v.abs() == amax).unwrap_or(amax);
        let iscale = -127.0 / max;
        let is = vdupq_n_f32(iscale);
        let cap = vdupq_n_s32(127);
        let (d, rest) = ob.split_at_mut(4);
        let (qs, bsums) = rest.split_at_mut(QK_K);
        for j in 0..QK_K / 16 {
            let q = [0, 1, 2, 3].map(|k| {
                let v = vmulq_f32(is, vld1q_f32(p.add(16 * j + 4 * k)));
                vminq_s32(vcvtnq_s32_f32(v), cap)
            });
            let q8 = narrow16(&q);
            vst1q_s8(qs.as_mut_ptr().add(16 * j).cast(), q8);
            // Σ of 16 quants (|Σ| ≤ 16·128 fits i16).
            let s = vaddvq_s16(vpaddlq_s8(q8));
            bsums[2 * j..2 * j + 2].copy_from_slice(&s.to_le_bytes());
        }
        d.copy_from_slice(&(1.0 / iscale).to_le_bytes());
    }
}

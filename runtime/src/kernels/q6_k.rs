//! Q6_K weights × Q8_K activations. Reference: `quant::q6_k::vec_dot`.
//!
//! The 6-bit quants are used unsigned (0..63) in `maddubs`; the `- 32` comes back once per
//! super-block as `32 · Σ scale_g · bsum_g` from the activation group sums (as ggml does).
//! No VNNI variant, for the same reason as Q4_K: the 8-bit group scales go through
//! `madd_epi16`.

use super::Kernel;

pub(super) fn select() -> Option<Kernel> {
    #[cfg(target_arch = "x86_64")]
    if super::cpu::has_avx2() {
        return Some(Kernel::simd("avx2+fma", avx2::rows));
    }
    #[cfg(target_arch = "aarch64")]
    if let Some(k) = super::neon_kquant::select_q6_k() {
        return Some(k);
    }
    None
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::super::act::Acts;
    use super::super::x86::*;
    use super::super::Weight;
    use crate::quant::as_blocks;
    use crate::quant::q6_k::BlockQ6K;
    use crate::quant::q8_k::BlockQ8K;
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
            let wr = as_blocks::<BlockQ6K>(w.row(r));
            for_groups!(acts.batch, out, dot, [], (wr, acts));
        }
    }

    /// One weight row · N activation rows; each super-block is unpacked once.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn dot<const N: usize>(w: &[BlockQ6K], acts: &Acts, b0: usize) -> [f32; N] {
        let nb = w.len();
        let mut y: [&[BlockQ8K]; N] = [&[]; N];
        let mut d: [&[f32]; N] = [&[]; N];
        for k in 0..N {
            y[k] = as_blocks(acts.q_row(b0 + k));
            d[k] = acts.d_row(b0 + k);
            // The unchecked reads below rely on these.
            assert!(y[k].len() == nb && d[k].len() == nb);
        }
        let m4 = _mm256_set1_epi8(0x0F);
        let m30 = _mm256_set1_epi8(0x30);
        let mut acc = [_mm256_setzero_ps(); N];
        for i in 0..nb {
            let wb = w.get_unchecked(i);
            prefetch_ahead((wb as *const BlockQ6K).cast(), 4);
            let dw = f16(wb.d);
            let scales8 = _mm_loadu_si128(wb.scales.as_ptr().cast());
            let scales16 = _mm256_cvtepi8_epi16(scales8);
            // Vector 4h+j holds values 128h + 32j .. +32 (groups 8h+2j and 8h+2j+1).
            let mut q = [_mm256_setzero_si256(); 8];
            let mut scale = [_mm256_setzero_si256(); 8];
            for h in 0..2 {
                let ql0 = _mm256_loadu_si256(wb.ql.as_ptr().add(64 * h).cast());
                let ql1 = _mm256_loadu_si256(wb.ql.as_ptr().add(64 * h + 32).cast());
                let qh = _mm256_loadu_si256(wb.qh.as_ptr().add(32 * h).cast());
                // 16-bit shifts move bits across bytes; the 0x30 / 0x0F masks drop them.
                let hi = [
                    _mm256_and_si256(_mm256_slli_epi16(qh, 4), m30),
                    _mm256_and_si256(_mm256_slli_epi16(qh, 2), m30),
                    _mm256_and_si256(qh, m30),
                    _mm256_and_si256(_mm256_srli_epi16(qh, 2), m30),
                ];
                let lo = [
                    _mm256_and_si256(ql0, m4),
                    _mm256_and_si256(ql1, m4),
                    _mm256_and_si256(_mm256_srli_epi16(ql0, 4), m4),
                    _mm256_and_si256(_mm256_srli_epi16(ql1, 4), m4),
                ];
                for j in 0..4 {
                    q[4 * h + j] = _mm256_or_si256(lo[j], hi[j]);
                    let g = (8 * h + 2 * j) as i8;
                    let pick = _mm_setr_epi8(
                        g,
                        g,
                        g,
                        g,
                        g,
                        g,
                        g,
                        g,
                        g + 1,
                        g + 1,
                        g + 1,
                        g + 1,
                        g + 1,
                        g + 1,
                        g + 1,
                        g + 1,
                    );
                    scale[4 * h + j] = _mm256_cvtepi8_epi16(_mm_shuffle_epi8(scales8, pick));
                }
            }
            for k in 0..N {
                let yb = y[k].get_unchecked(i);
                let bs = _mm256_loadu_si256(yb.bsums.as_ptr().cast());
                // 32 · Σ_g scale_g · bsum_g, the unsigned-offset correction.
                let mut sumi = _mm256_sub_epi32(
                    _mm256_setzero_si256(),
                    _mm256_slli_epi32(_mm256_madd_epi16(scales16, bs), 5),
                );
                for j in 0..8 {
                    let a = _mm256_loadu_si256(yb.qs.as_ptr().add(32 * j).cast());
                    // 0..63 × i8: pair sums ≤ 2·63·127 fit i16; × i8 scale into i32.
                    let p = _mm256_madd_epi16(_mm256_maddubs_epi16(q[j], a), scale[j]);
                    sumi = _mm256_add_epi32(sumi, p);
                }
                let dy = *d[k].get_unchecked(i);
                acc[k] = _mm256_fmadd_ps(_mm256_set1_ps(dw * dy), _mm256_cvtepi32_ps(sumi), acc[k]);
            }
        }
        let mut out = [0f32; N];
        for k in 0..N {
            out[k] = hsum(acc[k]);
        }
        out
    }
}

//! Q4_K weights × Q8_K activations. Reference: `quant::q4_k::vec_dot`.
//!
//! No VNNI variant: the per-sub-block 6-bit scales are applied by `madd_epi16` on the i16
//! pair sums, which `vpdpbusd` (i32 sums of 4) cannot feed without an extra multiply.

use super::Kernel;

pub(super) fn select() -> Option<Kernel> {
    #[cfg(target_arch = "x86_64")]
    if super::cpu::has_avx2() {
        return Some(Kernel::simd("avx2+fma", avx2::rows));
    }
    #[cfg(target_arch = "aarch64")]
    if let Some(k) = super::neon_kquant::select_q4_k() {
        return Some(k);
    }
    None
}

/// Scales and mins of the 8 sub-blocks, unpacked from the 12 packed bytes with ggml's
/// 32-bit mask trick (same result as `quant::q4_k::BlockQ4K::scale_min`).
#[cfg_attr(
    not(any(target_arch = "x86_64", target_arch = "aarch64")),
    allow(dead_code)
)]
pub(super) fn scales_mins(packed: &[u8; 12]) -> ([u8; 8], [u8; 8]) {
    const KMASK1: u32 = 0x3f3f_3f3f;
    const KMASK2: u32 = 0x0f0f_0f0f;
    const KMASK3: u32 = 0x0303_0303;
    let word = |i: usize| {
        u32::from_le_bytes([
            packed[4 * i],
            packed[4 * i + 1],
            packed[4 * i + 2],
            packed[4 * i + 3],
        ])
    };
    let (u0, u1, u2) = (word(0), word(1), word(2));
    let sc_lo = u0 & KMASK1;
    let sc_hi = (u2 & KMASK2) | (((u0 >> 6) & KMASK3) << 4);
    let m_lo = u1 & KMASK1;
    let m_hi = ((u2 >> 4) & KMASK2) | (((u1 >> 6) & KMASK3) << 4);
    let mut sc = [0u8; 8];
    let mut m = [0u8; 8];
    sc[..4].copy_from_slice(&sc_lo.to_le_bytes());
    sc[4..].copy_from_slice(&sc_hi.to_le_bytes());
    m[..4].copy_from_slice(&m_lo.to_le_bytes());
    m[4..].copy_from_slice(&m_hi.to_le_bytes());
    (sc, m)
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::super::act::Acts;
    use super::super::x86::*;
    use super::super::Weight;
    use super::scales_mins;
    use crate::quant::as_blocks;
    use crate::quant::q4_k::BlockQ4K;
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
            let wr = as_blocks::<BlockQ4K>(w.row(r));
            for_groups!(acts.batch, out, dot, [], (wr, acts));
        }
    }

    /// One weight row · N activation rows; each super-block's nibbles and scales are
    /// unpacked once and used N times.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn dot<const N: usize>(w: &[BlockQ4K], acts: &Acts, b0: usize) -> [f32; N] {
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
        let mut acc = [_mm256_setzero_ps(); N];
        let mut acc_m = [_mm_setzero_ps(); N];
        for i in 0..nb {
            let wb = w.get_unchecked(i);
            prefetch_ahead((wb as *const BlockQ4K).cast(), 3);
            let (dw, dmin) = (f16(wb.d), f16(wb.dmin));
            let (sc, mins) = scales_mins(&wb.scales);
            let mins16 = _mm_cvtepu8_epi16(_mm_loadl_epi64(mins.as_ptr().cast()));
            // Sub-block j: 32 nibbles (low nibbles of chunk j/2 for even j, high for odd).
            let mut q = [_mm256_setzero_si256(); 8];
            let mut scale = [_mm256_setzero_si256(); 8];
            for c in 0..4 {
                let bits = _mm256_loadu_si256(wb.qs.as_ptr().add(32 * c).cast());
                q[2 * c] = _mm256_and_si256(bits, m4);
                q[2 * c + 1] = _mm256_and_si256(_mm256_srli_epi16(bits, 4), m4);
                scale[2 * c] = _mm256_set1_epi16(sc[2 * c] as i16);
                scale[2 * c + 1] = _mm256_set1_epi16(sc[2 * c + 1] as i16);
            }
            for k in 0..N {
                let yb = y[k].get_unchecked(i);
                // Mins: Σ_j m_j · (sum of the 32 activations of sub-block j), from bsums.
                let bs = _mm256_loadu_si256(yb.bsums.as_ptr().cast());
                let pair =
                    _mm_hadd_epi16(_mm256_castsi256_si128(bs), _mm256_extracti128_si256(bs, 1));
                let prod = _mm_madd_epi16(mins16, pair);
                let dy = *d[k].get_unchecked(i);
                acc_m[k] = _mm_fmadd_ps(_mm_set1_ps(dmin * dy), _mm_cvtepi32_ps(prod), acc_m[k]);
                // Nibbles 0..15 × i8: pair sums ≤ 2·15·127, then × 6-bit scale into i32.
                let mut sumi = _mm256_setzero_si256();
                for j in 0..8 {
                    let a = _mm256_loadu_si256(yb.qs.as_ptr().add(32 * j).cast());
                    let p = _mm256_madd_epi16(_mm256_maddubs_epi16(q[j], a), scale[j]);
                    sumi = _mm256_add_epi32(sumi, p);
                }
                acc[k] = _mm256_fmadd_ps(_mm256_set1_ps(dw * dy), _mm256_cvtepi32_ps(sumi), acc[k]);
            }
        }
        let mut out = [0f32; N];
        for k in 0..N {
            out[k] = hsum(acc[k]) - hsum128(acc_m[k]);
        }
        out
    }
}

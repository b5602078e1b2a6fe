//! Quantized weights for the blocked matrix × matrix kernel (`gemm`): the [`Decode`]
//! functions that dequantize a slice of whole blocks of a weight row into the f32 panel, and
//! the f64 reference that `matmul_reference` uses for quantized weights from
//! `gemm::MIN_BATCH` activation rows on.
//!
//! Every decoder here gives the same f32 bits as the type's scalar `dequantize_row` in
//! [`crate::quant`] (same operations in the same order: `q · d`, `d · q - m`,
//! `(d · sc) · q`, no FMA contraction), so the blocked kernel's error bound against an f64
//! product of the dequantized weights is the F32 one (see `gemm`), whatever decoder ran.
//! AVX2 has its own for Q8_0, Q4_0, Q4_1, Q4_K and Q6_K; other levels use the scalar ones.

use super::act::Acts;
use super::gemm::Decode;
use super::Weight;
use crate::quant::{self, GgmlType};
use std::ops::Range;

/// Bytes of weight-row columns `k0..k0 + kc`: `k0` and `kc` whole blocks of `ty` (F32/F16:
/// blocks of one value), which the blocked kernel's `KC`-column slices are for every type
/// [`super::Weight::new`] admits (`KC` = 256 is a multiple of 32 and 256, and a row is whole
/// blocks).
#[inline]
pub(super) fn byte_range(ty: GgmlType, k0: usize, kc: usize) -> Range<usize> {
    let (bs, ts) = (ty.block_size(), ty.type_size());
    debug_assert!(
        k0.is_multiple_of(bs) && kc.is_multiple_of(bs),
        "{ty}: {k0}+{kc} not whole blocks"
    );
    k0 / bs * ts..(k0 + kc) / bs * ts
}

/// The scalar decoder of a quantized type (the reference `dequantize_row`).
pub(super) fn scalar(ty: GgmlType) -> Decode {
    match ty {
        GgmlType::Q8_0 => quant::q8_0::dequantize_row,
        GgmlType::Q4_0 => quant::q4_0::dequantize_row,
        GgmlType::Q4_1 => quant::q4_1::dequantize_row,
        GgmlType::Q4_K => quant::q4_k::dequantize_row,
        GgmlType::Q6_K => quant::q6_k::dequantize_row,
        ty => unreachable!("no dequantizing decode for {ty}"),
    }
}

/// Whether the blocked kernel takes this weight type with a dequantizing decode.
pub(super) fn is_quantized(ty: GgmlType) -> bool {
    matches!(
        ty,
        GgmlType::Q8_0 | GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q4_K | GgmlType::Q6_K
    )
}

/// `matmul_reference` for quantized weights from `gemm::MIN_BATCH` activation rows on: each
/// weight row dequantized by the scalar reference, dotted with every f32 activation row in
/// f64 and rounded once, the exact product of the dequantized weights up to that rounding
/// (what the blocked kernel approximates; the integer dots quantize the activations).
pub(super) fn rows_reference(
    w: &Weight,
    acts: &Acts,
    rows: Range<usize>,
    out: &mut [f32],
    stride: usize,
) {
    let mut wr = vec![0f32; w.cols];
    for (r, out) in rows.zip(out.chunks_mut(stride)) {
        scalar(w.ty)(w.row(r), &mut wr);
        for (b, o) in out[..acts.batch].iter_mut().enumerate() {
            let x = acts.x_row(b);
            *o = wr
                .iter()
                .zip(x)
                .map(|(&w, &x)| w as f64 * x as f64)
                .sum::<f64>() as f32;
        }
    }
}

#[cfg(target_arch = "x86_64")]
pub(super) mod avx2 {
    use super::super::x86::f16;
    use super::Decode;
    use crate::quant::GgmlType;
    use std::arch::x86_64::*;

    /// The AVX2 decoder of a quantized type. Only for kernels selected after detecting
    /// AVX2+FMA+F16C.
    pub(in crate::kernels) fn decoder(ty: GgmlType) -> Decode {
        match ty {
            GgmlType::Q8_0 => q8_0,
            GgmlType::Q4_0 => q4_0,
            GgmlType::Q4_1 => q4_1,
            GgmlType::Q4_K => q4_k,
            GgmlType::Q6_K => q6_k,
            ty => super::scalar(ty),
        }
    }

    /// Checks `src` is exactly the blocks of `dst` (what the unsafe loops below rely on).
    fn blocks(src: &[u8], dst: &[f32], elems: usize, bytes: usize) -> usize {
        let n = dst.len() / elems;
        assert!(
            dst.len().is_multiple_of(elems) && src.len() == n * bytes,
            "dequant: {} bytes for {} values",
            src.len(),
            dst.len()
        );
        n
    }

    /// 8 i8 at `p` → f32 × `d`.
    #[inline(always)]
    unsafe fn i8x8_mul(p: __m128i, d: __m256) -> __m256 {
        _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(p)), d)
    }

    /// 32 i8 (one ymm) × `d` (per 8-value quarter: `d[0..4]`) → `y[0..32]`.
    #[inline(always)]
    unsafe fn store_i8x32(q: __m256i, d: [__m256; 4], y: *mut f32) {
        let lo = _mm256_castsi256_si128(q);
        let hi = _mm256_extracti128_si256::<1>(q);
        _mm256_storeu_ps(y, i8x8_mul(lo, d[0]));
        _mm256_storeu_ps(y.add(8), i8x8_mul(_mm_srli_si128::<8>(lo), d[1]));
        _mm256_storeu_ps(y.add(16), i8x8_mul(hi, d[2]));
        _mm256_storeu_ps(y.add(24), i8x8_mul(_mm_srli_si128::<8>(hi), d[3]));
    }

    /// 8 u8 → f32 · `d` − `m` (mul, then sub: the scalar order).
    #[inline(always)]
    unsafe fn u8x8_mul_sub(p: __m128i, d: __m256, m: __m256) -> __m256 {
        let v = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(p));
        _mm256_sub_ps(_mm256_mul_ps(d, v), m)
    }

    /// 8 u8 → f32 · `d` + `m`.
    #[inline(always)]
    unsafe fn u8x8_mul_add(p: __m128i, d: __m256, m: __m256) -> __m256 {
        let v = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(p));
        _mm256_add_ps(_mm256_mul_ps(v, d), m)
    }

    fn q8_0(src: &[u8], dst: &mut [f32]) {
        let n = blocks(src, dst, 32, 34);
        // SAFETY: AVX2 detected (see `decoder`); `n` blocks of 34 bytes in `src`, 32 f32
        // each in `dst` (checked by `blocks`).
        unsafe { q8_0_impl(src.as_ptr(), dst.as_mut_ptr(), n) }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn q8_0_impl(s: *const u8, y: *mut f32, n: usize) {
        for i in 0..n {
            let b = s.add(34 * i);
            let d = _mm256_set1_ps(f16([*b, *b.add(1)]));
            let q = _mm256_loadu_si256(b.add(2).cast());
            store_i8x32(q, [d; 4], y.add(32 * i));
        }
    }

    fn q4_0(src: &[u8], dst: &mut [f32]) {
        let n = blocks(src, dst, 32, 18);
        // SAFETY: as in `q8_0`, blocks of 18 bytes.
        unsafe { q4_0_impl(src.as_ptr(), dst.as_mut_ptr(), n) }
    }

    /// `y[j] = (lo(q[j]) - 8) · d`, `y[16 + j] = (hi(q[j]) - 8) · d`.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn q4_0_impl(s: *const u8, y: *mut f32, n: usize) {
        let (mask, eight) = (_mm_set1_epi8(0x0F), _mm_set1_epi8(8));
        for i in 0..n {
            let b = s.add(18 * i);
            let d = _mm256_set1_ps(f16([*b, *b.add(1)]));
            let q = _mm_loadu_si128(b.add(2).cast());
            let lo = _mm_sub_epi8(_mm_and_si128(q, mask), eight);
            let hi = _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16::<4>(q), mask), eight);
            store_i8x32(_mm256_set_m128i(hi, lo), [d; 4], y.add(32 * i));
        }
    }

    fn q4_1(src: &[u8], dst: &mut [f32]) {
        let n = blocks(src, dst, 32, 20);
        // SAFETY: as in `q8_0`, blocks of 20 bytes.
        unsafe { q4_1_impl(src.as_ptr(), dst.as_mut_ptr(), n) }
    }

    /// `y[j] = lo(q[j]) · d + m`, `y[16 + j] = hi(q[j]) · d + m`.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn q4_1_impl(s: *const u8, y: *mut f32, n: usize) {
        let mask = _mm_set1_epi8(0x0F);
        for i in 0..n {
            let b = s.add(20 * i);
            let d = _mm256_set1_ps(f16([*b, *b.add(1)]));
            let m = _mm256_set1_ps(f16([*b.add(2), *b.add(3)]));
            let q = _mm_loadu_si128(b.add(4).cast());
            let lo = _mm_and_si128(q, mask);
            let hi = _mm_and_si128(_mm_srli_epi16::<4>(q), mask);
            let y = y.add(32 * i);
            _mm256_storeu_ps(y, u8x8_mul_add(lo, d, m));
            _mm256_storeu_ps(y.add(8), u8x8_mul_add(_mm_srli_si128::<8>(lo), d, m));
            _mm256_storeu_ps(y.add(16), u8x8_mul_add(hi, d, m));
            _mm256_storeu_ps(y.add(24), u8x8_mul_add(_mm_srli_si128::<8>(hi), d, m));
        }
    }

    fn q4_k(src: &[u8], dst: &mut [f32]) {
        let n = blocks(src, dst, 256, 144);
        // SAFETY: as in `q8_0`, blocks of 144 bytes.
        unsafe { q4_k_impl(src.as_ptr(), dst.as_mut_ptr(), n) }
    }

    /// Per 64 values `c`: `y[64c + j] = d·sc[2c] · lo(q[32c + j]) - dmin·m[2c]`, the high
    /// nibbles with sub-block `2c + 1`.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn q4_k_impl(s: *const u8, y: *mut f32, n: usize) {
        let mask = _mm256_set1_epi8(0x0F);
        for i in 0..n {
            let b = s.add(144 * i);
            let d = f16([*b, *b.add(1)]);
            let dmin = f16([*b.add(2), *b.add(3)]);
            let scales: &[u8; 12] = &*b.add(4).cast();
            let (sc, mn) = super::super::q4_k::scales_mins(scales);
            let y = y.add(256 * i);
            for c in 0..4 {
                let q = _mm256_loadu_si256(b.add(16 + 32 * c).cast());
                let nib = [
                    _mm256_and_si256(q, mask),
                    _mm256_and_si256(_mm256_srli_epi16::<4>(q), mask),
                ];
                for (h, &v) in nib.iter().enumerate() {
                    let j = 2 * c + h;
                    let dv = _mm256_set1_ps(d * sc[j] as f32);
                    let mv = _mm256_set1_ps(dmin * mn[j] as f32);
                    let (lo, hi) = (_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
                    let y = y.add(64 * c + 32 * h);
                    _mm256_storeu_ps(y, u8x8_mul_sub(lo, dv, mv));
                    _mm256_storeu_ps(y.add(8), u8x8_mul_sub(_mm_srli_si128::<8>(lo), dv, mv));
                    _mm256_storeu_ps(y.add(16), u8x8_mul_sub(hi, dv, mv));
                    _mm256_storeu_ps(y.add(24), u8x8_mul_sub(_mm_srli_si128::<8>(hi), dv, mv));
                }
            }
        }
    }

    /// Bits `S..S + 2` of each byte of `hb`, moved to bits 4..6.
    #[inline(always)]
    unsafe fn high<const S: i32>(hb: __m256i, m3: __m256i) -> __m256i {
        _mm256_slli_epi16::<4>(_mm256_and_si256(_mm256_srli_epi16::<S>(hb), m3))
    }

    fn q6_k(src: &[u8], dst: &mut [f32]) {
        let n = blocks(src, dst, 256, 210);
        // SAFETY: as in `q8_0`, blocks of 210 bytes.
        unsafe { q6_k_impl(src.as_ptr(), dst.as_mut_ptr(), n) }
    }

    /// Per half `h` (128 values), 4 × 32 quants from `ql[64h..]` nibbles and 2-bit fields of
    /// `qh[32h..]` (the order of `BlockQ6K::quants`), minus 32; each 16 times
    /// `d · scales[i / 16]`.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn q6_k_impl(s: *const u8, y: *mut f32, n: usize) {
        let (m4, m3, m32) = (
            _mm256_set1_epi8(0x0F),
            _mm256_set1_epi8(3),
            _mm256_set1_epi8(32),
        );
        for i in 0..n {
            let b = s.add(210 * i);
            let (ql, qh, scales) = (b, b.add(128), b.add(192).cast::<i8>());
            let d = f16([*b.add(208), *b.add(209)]);
            let y = y.add(256 * i);
            for h in 0..2 {
                let l0 = _mm256_loadu_si256(ql.add(64 * h).cast());
                let l1 = _mm256_loadu_si256(ql.add(64 * h + 32).cast());
                let hb = _mm256_loadu_si256(qh.add(32 * h).cast());
                let q = [
                    _mm256_or_si256(_mm256_and_si256(l0, m4), high::<0>(hb, m3)),
                    _mm256_or_si256(_mm256_and_si256(l1, m4), high::<2>(hb, m3)),
                    _mm256_or_si256(
                        _mm256_and_si256(_mm256_srli_epi16::<4>(l0), m4),
                        high::<4>(hb, m3),
                    ),
                    _mm256_or_si256(
                        _mm256_and_si256(_mm256_srli_epi16::<4>(l1), m4),
                        high::<6>(hb, m3),
                    ),
                ];
                for (j, &q) in q.iter().enumerate() {
                    let g = 8 * h + 2 * j; // scale group of the first 16 values
                    let d0 = _mm256_set1_ps(d * *scales.add(g) as f32);
                    let d1 = _mm256_set1_ps(d * *scales.add(g + 1) as f32);
                    let q = _mm256_sub_epi8(q, m32);
                    store_i8x32(q, [d0, d0, d1, d1], y.add(128 * h + 32 * j));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    // The random blocks feed the AVX2 comparison only.
    #![cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    use super::super::test_rng::Rng;
    use super::*;

    const TYPES: [GgmlType; 5] = [
        GgmlType::Q8_0,
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q4_K,
        GgmlType::Q6_K,
    ];

    /// Random bytes in every field (every quant code, 6-bit scale and min, i8 scale), with
    /// finite f16 scales of both signs including subnormals.
    fn random_blocks(rng: &mut Rng, ty: GgmlType, n: usize) -> Vec<u8> {
        let mut data: Vec<u8> = (0..n * ty.type_size()).map(|_| rng.next() as u8).collect();
        let scale_offsets: &[usize] = match ty {
            GgmlType::Q8_0 | GgmlType::Q4_0 | GgmlType::Q4_K | GgmlType::Q4_1 => &[0, 2],
            GgmlType::Q6_K => &[208],
            _ => unreachable!(),
        };
        let scale_offsets = if ty == GgmlType::Q4_0 || ty == GgmlType::Q8_0 {
            &scale_offsets[..1]
        } else {
            scale_offsets
        };
        for block in data.chunks_exact_mut(ty.type_size()) {
            for &o in scale_offsets {
                // Exponent below 31 (finite), any sign and mantissa.
                let bits = (rng.next() as u16) & 0xFBFF;
                block[o..o + 2].copy_from_slice(&bits.to_le_bytes());
            }
        }
        data
    }

    #[test]
    fn byte_range_is_whole_blocks() {
        assert_eq!(byte_range(GgmlType::Q8_0, 256, 256), 8 * 34..16 * 34);
        assert_eq!(byte_range(GgmlType::Q4_K, 512, 256), 2 * 144..3 * 144);
        assert_eq!(byte_range(GgmlType::Q6_K, 0, 512), 0..2 * 210);
        assert_eq!(byte_range(GgmlType::F16, 256, 100), 512..712);
        assert_eq!(byte_range(GgmlType::F32, 3, 5), 12..32);
    }

    /// The AVX2 decoders give the scalar reference's bits, on 1..9 blocks.
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn avx2_decoders_match_the_scalar_bits() {
        if !crate::kernels::cpu::has_avx2() {
            println!("no AVX2 here");
            return;
        }
        let mut rng = Rng(0xdec0_0001);
        for ty in TYPES {
            for n in 1..=9 {
                let data = random_blocks(&mut rng, ty, n);
                let len = n * ty.block_size();
                let (mut want, mut got) = (vec![0f32; len], vec![f32::NAN; len]);
                scalar(ty)(&data, &mut want);
                avx2::decoder(ty)(&data, &mut got);
                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                    assert_eq!(g.to_bits(), w.to_bits(), "{ty} {n} blocks, value {i}");
                }
            }
        }
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    #[should_panic(expected = "dequant: 33 bytes for 32 values")]
    fn avx2_decoder_rejects_a_partial_block() {
        if !crate::kernels::cpu::has_avx2() {
            panic!("dequant: 33 bytes for 32 values (no AVX2 here)");
        }
        avx2::decoder(GgmlType::Q8_0)(&[0; 33], &mut [0.0; 32]);
    }
}

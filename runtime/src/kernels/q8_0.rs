//! Q8_0 weights × Q8_0 activations. Reference: `quant::q8_0::vec_dot`.

use super::Kernel;

pub(super) fn select() -> Option<Kernel> {
    #[cfg(target_arch = "x86_64")]
    {
        use super::block32::kernel;
        if super::cpu::has_avx_vnni() {
            return Some(kernel::<x86::Vnni>("avx2+avx-vnni"));
        }
        if super::cpu::has_avx2() {
            return Some(kernel::<x86::Avx2>("avx2+fma"));
        }
    }
    #[cfg(target_arch = "aarch64")]
    if let Some(k) = super::neon_block32::select::<neon::Neon>() {
        return Some(k);
    }
    None
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::super::block32::Kind;
    use super::super::x86::{dot_u8i8, dot_u8i8_vnni};
    use crate::quant::q8_0::BlockQ8_0;
    use std::arch::x86_64::*;

    /// ggml's sign trick: `|x|` (as u8) times `y` with x's sign moved onto it. `maddubs`
    /// rules out the offset trick below: `(x + 128)·y` pairs overflow its i16 sums.
    pub struct Avx2;
    impl Kind for Avx2 {
        type W = BlockQ8_0;
        const D: usize = 0;
        unsafe fn unpack(w: &BlockQ8_0) -> [__m256i; 2] {
            let x = _mm256_loadu_si256(w.qs.as_ptr().cast());
            [_mm256_sign_epi8(x, x), x]
        }
        unsafe fn dot(w: &[__m256i; 2], y: __m256i, _bias: __m256i) -> __m256i {
            dot_u8i8(w[0], _mm256_sign_epi8(y, w[1]))
        }
    }

    /// `x + 128` as u8 (one XOR per weight block, nothing per activation row); the `- 128`
    /// comes back through the bias lanes `-128 · Σy`.
    pub struct Vnni;
    impl Kind for Vnni {
        type W = BlockQ8_0;
        const D: usize = 0;
        const BIAS: Option<[i32; 8]> = Some([128; 8]);
        unsafe fn unpack(w: &BlockQ8_0) -> [__m256i; 2] {
            let x = _mm256_loadu_si256(w.qs.as_ptr().cast());
            [
                _mm256_xor_si256(x, _mm256_set1_epi8(-128)),
                _mm256_setzero_si256(),
            ]
        }
        unsafe fn dot(w: &[__m256i; 2], y: __m256i, bias: __m256i) -> __m256i {
            dot_u8i8_vnni(bias, w[0], y)
        }
        const ZMM: bool = true;
        #[inline]
        unsafe fn unpack2(w0: &BlockQ8_0, w1: &BlockQ8_0) -> __m512i {
            unpack2(w0, w1)
        }
    }

    /// Both blocks' quants + 128 (XOR), `w0` in the low half.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn unpack2(w0: &BlockQ8_0, w1: &BlockQ8_0) -> __m512i {
        let x0 = _mm256_loadu_si256(w0.qs.as_ptr().cast());
        let x1 = _mm256_loadu_si256(w1.qs.as_ptr().cast());
        let x = _mm512_inserti64x4(_mm512_castsi256_si512(x0), x1, 1);
        _mm512_xor_si512(x, _mm512_set1_epi8(-128))
    }
}

#[cfg(target_arch = "aarch64")]
mod neon {
    use super::super::aarch64::load_i8x32;
    use super::super::neon_block32::Kind;
    use crate::quant::q8_0::BlockQ8_0;
    use std::arch::aarch64::*;

    pub struct Neon;
    impl Kind for Neon {
        type W = BlockQ8_0;
        const D: usize = 0;
        unsafe fn unpack(w: &BlockQ8_0) -> [int8x16_t; 2] {
            load_i8x32(w.qs.as_ptr())
        }
    }
}

//! Q4_1 weights × Q8_1 activations. Reference: `quant::q4_1::vec_dot`. The `m · Σx` term
//! uses the activation block's `s = d · Σq`, accumulated 8 blocks at a time.

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
    use super::super::block32::{nibbles_in_place, nibbles_shifted, Kind};
    use super::super::x86::{dot_u8i8, dot_u8i8_vnni};
    use crate::quant::q4_1::BlockQ4_1;
    use std::arch::x86_64::*;

    pub struct Avx2;
    impl Kind for Avx2 {
        type W = BlockQ4_1;
        const D: usize = 0;
        const M: Option<usize> = Some(2);
        unsafe fn unpack(w: &BlockQ4_1) -> [__m256i; 2] {
            [nibbles_shifted(&w.qs), _mm256_setzero_si256()]
        }
        unsafe fn dot(w: &[__m256i; 2], y: __m256i, _bias: __m256i) -> __m256i {
            dot_u8i8(w[0], y)
        }
    }

    /// High nibbles ×16 in place, undone by `HI`.
    pub struct Vnni;
    impl Kind for Vnni {
        type W = BlockQ4_1;
        const D: usize = 0;
        const M: Option<usize> = Some(2);
        const HI: f32 = 1.0 / 16.0;
        unsafe fn unpack(w: &BlockQ4_1) -> [__m256i; 2] {
            [nibbles_in_place(&w.qs), _mm256_setzero_si256()]
        }
        unsafe fn dot(w: &[__m256i; 2], y: __m256i, bias: __m256i) -> __m256i {
            dot_u8i8_vnni(bias, w[0], y)
        }
    }
}

#[cfg(target_arch = "aarch64")]
mod neon {
    use super::super::neon_block32::nibbles;
    use super::super::neon_block32::Kind;
    use crate::quant::q4_1::BlockQ4_1;
    use std::arch::aarch64::*;

    pub struct Neon;
    impl Kind for Neon {
        type W = BlockQ4_1;
        const D: usize = 0;
        const M: Option<usize> = Some(2);
        /// Nibbles 0..15, already valid as i8.
        unsafe fn unpack(w: &BlockQ4_1) -> [int8x16_t; 2] {
            let [lo, hi] = nibbles(&w.qs);
            [vreinterpretq_s8_u8(lo), vreinterpretq_s8_u8(hi)]
        }
    }
}

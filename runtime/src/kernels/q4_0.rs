//! Q4_0 weights × Q8_0 activations. Reference: `quant::q4_0::vec_dot`.
//!
//! The nibbles are used raw (0..15, unsigned as the u8×i8 dot wants); the `- 8` comes back
//! through the activation bias lanes `-8 · Σy`, instead of ggml's subtract and two sign ops.

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
    use crate::quant::q4_0::BlockQ4_0;
    use std::arch::x86_64::*;

    pub struct Avx2;
    impl Kind for Avx2 {
        type W = BlockQ4_0;
        const D: usize = 0;
        const BIAS: Option<[i32; 8]> = Some([8; 8]);
        unsafe fn unpack(w: &BlockQ4_0) -> [__m256i; 2] {
            [nibbles_shifted(&w.qs), _mm256_setzero_si256()]
        }
        unsafe fn dot(w: &[__m256i; 2], y: __m256i, bias: __m256i) -> __m256i {
            _mm256_add_epi32(bias, dot_u8i8(w[0], y))
        }
    }

    /// High nibbles ×16 in place; their bias lanes are ×16 too (`-128 · Σy`).
    /// No `ZMM` (`block32::matvec512`): the two-block 512-bit form measured slower here
    /// (interleaved, B q4_0 decode at 2 threads 270-302 against 291-301 tok/s; matrix ×
    /// vector from L2 40 against 45 GB/s): building its operand costs a cross-lane
    /// broadcast per block where this one needs an in-lane one.
    pub struct Vnni;
    impl Kind for Vnni {
        type W = BlockQ4_0;
        const D: usize = 0;
        const BIAS: Option<[i32; 8]> = Some([8, 8, 8, 8, 128, 128, 128, 128]);
        const HI: f32 = 1.0 / 16.0;
        unsafe fn unpack(w: &BlockQ4_0) -> [__m256i; 2] {
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
    use crate::quant::q4_0::BlockQ4_0;
    use std::arch::aarch64::*;

    pub struct Neon;
    impl Kind for Neon {
        type W = BlockQ4_0;
        const D: usize = 0;
        /// Nibbles − 8: signed, as `sdot`/`smmla` want (no bias lanes needed here).
        unsafe fn unpack(w: &BlockQ4_0) -> [int8x16_t; 2] {
            let [lo, hi] = nibbles(&w.qs);
            let eight = vdupq_n_s8(8);
            [
                vsubq_s8(vreinterpretq_s8_u8(lo), eight),
                vsubq_s8(vreinterpretq_s8_u8(hi), eight),
            ]
        }
    }
}

//! The x86 kernel shared by the 32-value block types (Q4_0, Q4_1, Q8_0 weights against
//! Q8_0/Q8_1 activations); each type supplies a [`Kind`]: how to unpack its block and which
//! integer dot to run.
//!
//! Per group of 8 blocks the f16 weight scales are converted together and multiplied by the
//! activation scales (one broadcast load per block afterwards); per block the weight is
//! unpacked once and dotted against N activation rows; two accumulator sets hide the FMA
//! latency.

use super::act::{Acts, Qs32};
use super::x86::*;
use super::Weight;
use crate::quant::{as_blocks, Block};
use std::arch::x86_64::*;
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
    /// Multipliers `c` of the activation bias lanes (`Acts::bias`) this kind starts its dot
    /// from, if any.
    const BIAS: Option<[i32; 8]> = None;
    /// Factor for accumulator lanes 4..8 at the end (1/16 when the high nibbles are used
    /// unshifted, i.e. ×16).
    const HI: f32 = 1.0;
    /// The weight block as the kernel's u8 operand (plus a second vector if needed).
    unsafe fn unpack(w: &Self::W) -> [__m256i; 2];
    /// The integer dot of the unpacked block with activation quants `y`, started from the
    /// block's bias lanes (zero when the kind uses none), as 8 i32 lanes.
    unsafe fn dot(w: &[__m256i; 2], y: __m256i, bias: __m256i) -> __m256i;
}

/// The kernel for a kind.
pub(super) fn kernel<K: Kind>(name: &'static str) -> super::Kernel {
    super::Kernel {
        name,
        rows: rows::<K>,
        fast_quantizer: true,
        bias: K::BIAS,
        gemm: None,
    }
}

fn rows<K: Kind>(w: &Weight, acts: &Acts, rows: Range<usize>, out: &mut [f32], stride: usize) {
    // SAFETY: every `select` returns a block-32 kernel only after detecting AVX2+FMA+F16C
    // (and AVX-VNNI for the VNNI kinds).
    unsafe { rows_impl::<K>(w, acts, rows, out, stride) }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn rows_impl<K: Kind>(
    w: &Weight,
    acts: &Acts,
    rows: Range<usize>,
    out: &mut [f32],
    stride: usize,
) {
    for (r, out) in rows.zip(out.chunks_mut(stride)) {
        let out = &mut out[..acts.batch];
        let wr = as_blocks::<K::W>(w.row(r));
        for_groups!(acts.batch, out, dot, [K], (wr, acts));
    }
}

/// Activation rows `b0 .. b0 + N`, as slices of the side arrays.
struct Rows<'a, const N: usize> {
    qs: [&'a [Qs32]; N],
    d: [&'a [f32]; N],
    s: [&'a [f32]; N],
    bias: [&'a [[i32; 8]]; N],
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot<const N: usize, K: Kind>(w: &[K::W], acts: &Acts, b0: usize) -> [f32; N] {
    let nb = w.len();
    let mut y = Rows::<N> {
        qs: [&[]; N],
        d: [&[]; N],
        s: [&[]; N],
        bias: [&[]; N],
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
        if K::BIAS.is_some() {
            y.bias[k] = acts.bias_row(b0 + k);
            assert_eq!(y.bias[k].len(), nb);
        }
    }
    // Indexed only by the unrolled `k`, so they stay in registers.
    let mut acc0 = [_mm256_setzero_ps(); N];
    let mut acc1 = [_mm256_setzero_ps(); N];
    let mut macc = [_mm256_setzero_ps(); N];
    let mut i = 0;
    while i < nb {
        let g = (nb - i).min(8);
        let base = w.as_ptr().add(i).cast::<u8>();
        prefetch_ahead(base, 3);
        let dw = f16x8(base.add(K::D), size_of::<K::W>(), g);
        let mut sc = [[0f32; 8]; N];
        for k in 0..N {
            let dy = f32x8(y.d[k].get_unchecked(i..i + g));
            _mm256_storeu_ps(sc[k].as_mut_ptr(), _mm256_mul_ps(dw, dy));
        }
        if let Some(m) = K::M {
            // Σ m_w · s_y for the group, with zero lanes past `g`.
            let mw = f16x8(base.add(m), size_of::<K::W>(), g);
            for k in 0..N {
                macc[k] = _mm256_fmadd_ps(mw, f32x8(y.s[k].get_unchecked(i..i + g)), macc[k]);
            }
        }
        let mut j = 0;
        while j + 2 <= g {
            block::<N, K>(w, &y, &sc, i, j, &mut acc0);
            block::<N, K>(w, &y, &sc, i, j + 1, &mut acc1);
            j += 2;
        }
        if j < g {
            block::<N, K>(w, &y, &sc, i, j, &mut acc0);
        }
        i += g;
    }
    let hi = _mm256_setr_ps(1.0, 1.0, 1.0, 1.0, K::HI, K::HI, K::HI, K::HI);
    let mut out = [0f32; N];
    for k in 0..N {
        out[k] = hsum(_mm256_mul_ps(_mm256_add_ps(acc0[k], acc1[k]), hi)) + hsum(macc[k]);
    }
    out
}

/// Block `i + j` against the N activation rows, scales from `sc[k][j]`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn block<const N: usize, K: Kind>(
    w: &[K::W],
    y: &Rows<N>,
    sc: &[[f32; 8]; N],
    i: usize,
    j: usize,
    acc: &mut [__m256; N],
) {
    let b = i + j;
    let wq = K::unpack(w.get_unchecked(b));
    for k in 0..N {
        let yq = _mm256_load_si256(y.qs[k].get_unchecked(b).0.as_ptr().cast());
        let bias = if K::BIAS.is_some() {
            _mm256_loadu_si256(y.bias[k].get_unchecked(b).as_ptr().cast())
        } else {
            _mm256_setzero_si256()
        };
        let p = K::dot(&wq, yq, bias);
        let scale = _mm256_set1_ps(*sc[k].get_unchecked(j));
        acc[k] = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(p), acc[k]);
    }
}

/// Q4_0/Q4_1 nibbles for the AVX2 dot: byte `j` of the low 128 bits = low nibble of `qs[j]`
/// (element j), of the high 128 bits = its high nibble (element j + 16). One broadcast load
/// and a per-lane variable shift instead of ggml's shift + insert.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn nibbles_shifted(qs: &[u8; 16]) -> __m256i {
    let b = _mm256_broadcastsi128_si256(_mm_loadu_si128(qs.as_ptr().cast()));
    let shifted = _mm256_srlv_epi32(b, _mm256_setr_epi32(0, 0, 0, 0, 4, 4, 4, 4));
    _mm256_and_si256(shifted, _mm256_set1_epi8(0x0F))
}

/// The same nibbles for the VNNI dot, high nibbles left in place (= 16 × nibble): one AND.
/// `vpdpbusd` has no i16 stage to saturate, and the kind's `HI = 1/16` undoes the factor.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn nibbles_in_place(qs: &[u8; 16]) -> __m256i {
    let b = _mm256_broadcastsi128_si256(_mm_loadu_si128(qs.as_ptr().cast()));
    let (lo, hi) = (0x0F0F_0F0F_0F0F_0F0F_i64, 0xF0F0_F0F0_F0F0_F0F0_u64 as i64);
    let mask = _mm256_setr_epi64x(lo, lo, hi, hi);
    _mm256_and_si256(b, mask)
}

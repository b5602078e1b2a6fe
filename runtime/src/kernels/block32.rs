//! The x86 kernel shared by the 32-value block types (Q4_0, Q4_1, Q8_0 weights against
//! Q8_0/Q8_1 activations); each type supplies a [`Kind`]: how to unpack its block and which
//! integer dot to run.
//!
//! The weights are read in place (no repacking): a pass dots R consecutive weight rows
//! against N activation rows (the batch tile, 1..=4): R = 4 for N = 1, 2 (batch-1 decoding
//! is matrix × vector), R = 2 for N = 3, 4; leftover rows go one at a time. Per block the
//! N activation quants and bias lanes are loaded once for the R rows and each weight block
//! is unpacked once for the N activation rows, into R · N accumulators (two sets, for even
//! and odd blocks, while R · N < 4 chains would leave the FMA latency exposed). Per group
//! of 8 blocks each row's f16 scales are converted together and multiplied by the N
//! activation scales into a small stack array (one broadcast load per block afterwards).
//! Every row prefetches its own columns whole passes (≥ `PREFETCH` bytes) ahead, so no
//! prefetch lands in the rows being read however long they are. The lengths the unchecked
//! reads rely on are asserted once per call, and a 4-row pass ends in one transposing
//! horizontal sum (`hsum4`).

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

    /// Whether the kind has [`Kind::unpack2`]: its `dot` is `vpdpbusd(bias, unpack[0], y)`
    /// (no `M` term), so two blocks fit one 512-bit `vpdpbusd` (see [`matvec512`]).
    const ZMM: bool = false;
    /// Blocks `w0`, `w1` as one 512-bit u8 operand: `unpack(w0)[0]` in the low half,
    /// `unpack(w1)[0]` in the high half.
    ///
    /// # Safety
    /// AVX-512 F/BW present.
    unsafe fn unpack2(_w0: &Self::W, _w1: &Self::W) -> __m512i {
        unreachable!("unpack2 without ZMM")
    }
}

/// The kernel for a kind.
pub(super) fn kernel<K: Kind>(name: &'static str) -> super::Kernel {
    super::Kernel {
        name,
        rows: rows::<K>,
        fast_quantizer: true,
        bias: K::BIAS,
        gemm: None,
        int8_gemm: false,
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
    let blocks = as_blocks::<K::W>(w.data);
    let nb = w.row_size() / size_of::<K::W>();
    assert!(rows.end <= w.rows && blocks.len() == w.rows * nb);
    // The unchecked reads in `dot` rely on these lengths; checked once per call.
    let batch = acts.batch;
    assert!(acts.qs.len() == batch * nb && acts.d.len() == batch * nb);
    if K::M.is_some() {
        assert_eq!(acts.s.len(), batch * nb);
    }
    if K::BIAS.is_some() {
        assert_eq!(acts.bias.len(), batch * nb);
    }
    // One activation row (AR decoding) on AVX-512 VNNI: two blocks per `vpdpbusd`.
    if batch == 1 && K::ZMM && super::gemm_i8::available() {
        let y = Rows::<1>::new::<K>(acts, 0);
        let row = |r: usize| blocks.as_ptr().add(r * nb);
        let mut r = rows.start;
        let mut o = 0;
        while r + 4 <= rows.end {
            let v = matvec512::<4, K>(std::array::from_fn(|i| row(r + i)), &y, nb);
            for (i, v) in v.iter().enumerate() {
                out[o + i * stride] = *v;
            }
            r += 4;
            o += 4 * stride;
        }
        while r < rows.end {
            out[o] = matvec512::<1, K>([row(r)], &y, nb)[0];
            r += 1;
            o += stride;
        }
        return;
    }
    // The caller tiles the batch by `BATCH_TILE` = 4; larger batches run in groups of 4.
    let mut b0 = 0;
    while b0 < batch {
        let n = (batch - b0).min(4);
        let p = Pass {
            blocks,
            nb,
            acts,
            b0,
        };
        let out = &mut out[b0..];
        match n {
            1 => p.run::<4, 1, K>(rows.clone(), out, stride),
            2 => p.run::<4, 2, K>(rows.clone(), out, stride),
            3 => p.run::<2, 3, K>(rows.clone(), out, stride),
            _ => p.run::<2, 4, K>(rows.clone(), out, stride),
        }
        b0 += n;
    }
}

/// One kernel call's weights and activation rows `b0 ..`.
struct Pass<'a, W> {
    blocks: &'a [W],
    nb: usize,
    acts: &'a Acts<'a>,
    b0: usize,
}

impl<W> Pass<'_, W> {
    /// Weight rows `rows` against activation rows `b0 .. b0 + N`, `R` weight rows at a time
    /// (then one at a time for the rest); output `out[(r - rows.start) · stride + b]`.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn run<const R: usize, const N: usize, K: Kind<W = W>>(
        &self,
        rows: Range<usize>,
        out: &mut [f32],
        stride: usize,
    ) {
        let y = Rows::<N>::new::<K>(self.acts, self.b0);
        let row = |r: usize| self.blocks.as_ptr().add(r * self.nb);
        let mut r = rows.start;
        let mut o = 0;
        while r + R <= rows.end {
            let v = dot::<R, N, K>(std::array::from_fn(|i| row(r + i)), &y, self.nb);
            for (i, v) in v.iter().enumerate() {
                out[o + i * stride..][..N].copy_from_slice(v);
            }
            r += R;
            o += R * stride;
        }
        while r < rows.end {
            let [v] = dot::<1, N, K>([row(r)], &y, self.nb);
            out[o..][..N].copy_from_slice(&v);
            r += 1;
            o += stride;
        }
    }
}

/// Activation rows `b0 .. b0 + N`: pointers to their side arrays (`nb` blocks each, lengths
/// checked by `rows_impl`).
struct Rows<const N: usize> {
    qs: [*const Qs32; N],
    d: [*const f32; N],
    s: [*const f32; N],
    bias: [*const [i32; 8]; N],
}

impl<const N: usize> Rows<N> {
    fn new<K: Kind>(acts: &Acts, b0: usize) -> Self {
        let none = std::ptr::null();
        Rows {
            qs: std::array::from_fn(|k| acts.qs_row(b0 + k).as_ptr()),
            d: std::array::from_fn(|k| acts.d_row(b0 + k).as_ptr()),
            s: std::array::from_fn(|k| match K::M {
                Some(_) => acts.s_row(b0 + k).as_ptr(),
                None => none,
            }),
            bias: std::array::from_fn(|k| match K::BIAS {
                Some(_) => acts.bias_row(b0 + k).as_ptr(),
                None => std::ptr::null(),
            }),
        }
    }
}

/// Bytes (at least) that the weight streams are prefetched ahead.
const PREFETCH: usize = 4096;

/// Prefetches (into L2) `lines` cache lines from `p`; never faults, even past the end.
/// Into L2, not L1: an L1 prefetch holds one of the core's few fill buffers until its line
/// arrives, and the demand loads then wait for buffers (matvec from memory, 1 thread,
/// interleaved: q8_0 17.4-18.9 GB/s with T1 against 14.3-17.4 with T0, q4_0 +10-15%).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn prefetch(p: *const u8, lines: usize) {
    for l in 0..lines {
        _mm_prefetch::<_MM_HINT_T1>(p.wrapping_add(64 * l).cast());
    }
}

/// Cache lines of weights a row streams per group of 8 blocks.
const fn group_lines<W>() -> usize {
    (8 * size_of::<W>()).div_ceil(64)
}

/// R weight rows (`nb` blocks each from `w[r]`) against N activation rows.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot<const R: usize, const N: usize, K: Kind>(
    w: [*const K::W; R],
    y: &Rows<N>,
    nb: usize,
) -> [[f32; N]; R] {
    // Two accumulator sets (even/odd blocks) only while R · N chains are too few to hide
    // the FMA latency; indexed only by the unrolled `r`, `k`, so they stay in registers.
    let two = R * N < 4;
    let mut acc0 = [[_mm256_setzero_ps(); N]; R];
    let mut acc1 = [[_mm256_setzero_ps(); N]; R];
    let mut macc = [[_mm256_setzero_ps(); N]; R];
    // Each row prefetches the same columns whole passes (of R rows) ahead: never inside
    // the rows being read now, however long they are, and at least PREFETCH bytes ahead.
    let pass = R * nb * size_of::<K::W>();
    let ahead = pass * PREFETCH.div_ceil(pass.max(1));
    let mut i = 0;
    while i < nb {
        let g = (nb - i).min(8);
        let mut sc = [[[0f32; 8]; N]; R];
        let dy: [__m256; N] =
            std::array::from_fn(|k| f32x8(std::slice::from_raw_parts(y.d[k].add(i), g)));
        for r in 0..R {
            let base = w[r].add(i).cast::<u8>();
            prefetch(base.wrapping_add(ahead), group_lines::<K::W>());
            let dw = f16x8(base.add(K::D), size_of::<K::W>(), g);
            for k in 0..N {
                _mm256_storeu_ps(sc[r][k].as_mut_ptr(), _mm256_mul_ps(dw, dy[k]));
            }
        }
        if let Some(m) = K::M {
            // Σ m_w · s_y for the group, with zero lanes past `g`.
            let sy: [__m256; N] =
                std::array::from_fn(|k| f32x8(std::slice::from_raw_parts(y.s[k].add(i), g)));
            for r in 0..R {
                let mw = f16x8(w[r].add(i).cast::<u8>().add(m), size_of::<K::W>(), g);
                for k in 0..N {
                    macc[r][k] = _mm256_fmadd_ps(mw, sy[k], macc[r][k]);
                }
            }
        }
        let mut j = 0;
        while j + 2 <= g {
            block::<R, N, K>(&w, y, &sc, i, j, &mut acc0);
            block::<R, N, K>(
                &w,
                y,
                &sc,
                i,
                j + 1,
                if two { &mut acc1 } else { &mut acc0 },
            );
            j += 2;
        }
        if j < g {
            block::<R, N, K>(&w, y, &sc, i, j, &mut acc0);
        }
        i += g;
    }
    let hi = _mm256_setr_ps(1.0, 1.0, 1.0, 1.0, K::HI, K::HI, K::HI, K::HI);
    let mut v = [[_mm256_setzero_ps(); N]; R];
    for r in 0..R {
        for k in 0..N {
            let a = if two {
                _mm256_add_ps(acc0[r][k], acc1[r][k])
            } else {
                acc0[r][k]
            };
            v[r][k] = if K::M.is_some() {
                _mm256_fmadd_ps(a, hi, macc[r][k])
            } else {
                _mm256_mul_ps(a, hi)
            };
        }
    }
    let mut out = [[0f32; N]; R];
    let mut r = 0;
    while r + 4 <= R {
        for k in 0..N {
            let s = hsum4(v[r][k], v[r + 1][k], v[r + 2][k], v[r + 3][k]);
            let mut t = [0f32; 4];
            _mm_storeu_ps(t.as_mut_ptr(), s);
            for q in 0..4 {
                out[r + q][k] = t[q];
            }
        }
        r += 4;
    }
    while r < R {
        for k in 0..N {
            out[r][k] = hsum(v[r][k]);
        }
        r += 1;
    }
    out
}

/// Lane indices that spread scales 2p and 2p + 1 of a group over the low and high 8 lanes.
const PAIR_IDX: [[i32; 16]; 4] = {
    let mut t = [[0i32; 16]; 4];
    let mut p = 0;
    while p < 4 {
        let mut l = 0;
        while l < 16 {
            t[p][l] = (2 * p + l / 8) as i32;
            l += 1;
        }
        p += 1;
    }
    t
};

/// R weight rows against one activation row with 512-bit VNNI: blocks in pairs, the pair's
/// weights as one operand ([`Kind::unpack2`]), the two activation blocks and their bias
/// lanes as one load each, one `vpdpbusd`, and the pair's scales spread over the halves by
/// one permute: about 8 µops per pair and row where the 256-bit `dot` spends about 12.
/// The f16 scales, prefetch and group structure are `dot`'s; an odd last block runs with
/// a zero high half. Sums in another order than `dot` (even and odd blocks in separate halves until the end),
/// within the same error bound; every row of a call meets the same path. Used for Q8_0
/// (interleaved, B q8_0 decode at 2 threads 133-141 against 126-133 tok/s; matrix × vector
/// from L2 62-69 against 55-63 GB/s); Q4_0 measured slower this way (see `q4_0::Vnni`).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
unsafe fn matvec512<const R: usize, K: Kind>(w: [*const K::W; R], y: &Rows<1>, nb: usize) -> [f32; R] {
    let mut acc = [_mm512_setzero_ps(); R];
    let pass = R * nb * size_of::<K::W>();
    let ahead = pass * PREFETCH.div_ceil(pass.max(1));
    let idx: [__m512i; 4] = std::array::from_fn(|p| _mm512_loadu_si512(PAIR_IDX[p].as_ptr().cast()));
    let mut i = 0;
    while i < nb {
        let g = (nb - i).min(8);
        let dy = f32x8(std::slice::from_raw_parts(y.d[0].add(i), g));
        let mut sc = [_mm512_setzero_ps(); R];
        for r in 0..R {
            let base = w[r].add(i).cast::<u8>();
            prefetch(base.wrapping_add(ahead), group_lines::<K::W>());
            let dw = f16x8(base.add(K::D), size_of::<K::W>(), g);
            sc[r] = _mm512_castps256_ps512(_mm256_mul_ps(dw, dy));
        }
        let mut j = 0;
        while j < g {
            let b = i + j;
            let (yq, bias, w1) = if j + 1 < g {
                (
                    _mm512_loadu_si512(y.qs[0].add(b).cast()),
                    _mm512_loadu_si512(y.bias[0].add(b).cast()),
                    1,
                )
            } else {
                // Odd last block: zero activations and bias in the high half.
                (
                    _mm512_zextsi256_si512(_mm256_load_si256(y.qs[0].add(b).cast())),
                    _mm512_zextsi256_si512(_mm256_loadu_si256(y.bias[0].add(b).cast())),
                    0,
                )
            };
            for r in 0..R {
                let wq = K::unpack2(&*w[r].add(b), &*w[r].add(b + w1));
                let p = _mm512_dpbusd_epi32(bias, wq, yq);
                let scale = _mm512_permutexvar_ps(idx[j / 2], sc[r]);
                acc[r] = _mm512_fmadd_ps(scale, _mm512_cvtepi32_ps(p), acc[r]);
            }
            j += 2;
        }
        i += g;
    }
    let h = K::HI;
    let hi = _mm512_setr_ps(1.0, 1.0, 1.0, 1.0, h, h, h, h, 1.0, 1.0, 1.0, 1.0, h, h, h, h);
    std::array::from_fn(|r| _mm512_reduce_add_ps(_mm512_mul_ps(acc[r], hi)))
}

/// Block `i + j` of the R weight rows against the N activation rows, scales from
/// `sc[r][k][j]`: the activation quants and bias lanes are loaded once for all R rows, each
/// weight block is unpacked once for all N.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn block<const R: usize, const N: usize, K: Kind>(
    w: &[*const K::W; R],
    y: &Rows<N>,
    sc: &[[[f32; 8]; N]; R],
    i: usize,
    j: usize,
    acc: &mut [[__m256; N]; R],
) {
    let b = i + j;
    let yq: [__m256i; N] = std::array::from_fn(|k| _mm256_load_si256(y.qs[k].add(b).cast()));
    let bias: [__m256i; N] = std::array::from_fn(|k| {
        if K::BIAS.is_some() {
            _mm256_loadu_si256(y.bias[k].add(b).cast())
        } else {
            _mm256_setzero_si256()
        }
    });
    for r in 0..R {
        let wq = K::unpack(&*w[r].add(b));
        for k in 0..N {
            let p = K::dot(&wq, yq[k], bias[k]);
            let scale = _mm256_set1_ps(*sc[r][k].get_unchecked(j));
            acc[r][k] = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(p), acc[r][k]);
        }
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

//! Weights of every type × f32 activations with many activation rows (the decoder's token
//! rows and its attention products, AR steps over 12 or more sequences): a register-blocked
//! matrix × matrix kernel in the GotoBLAS/BLIS layout, instead of one dot product per
//! (weight row, activation row) pair. `matmul` takes it from [`MIN_BATCH`] rows on, at the
//! AVX2+FMA+F16C level on x86_64 and the NEON level on aarch64 (both detected at run time,
//! `kernels::cpu`); other levels and smaller batches keep the per-row dots (for quantized
//! weights the integer dots on quantized activations). Where the CPU has AVX-512 VNNI,
//! Q8_0/Q4_0/Q4_1/Q4_K weights take the int8 kernel in `gemm_i8` instead.
//!
//! `C[r, b] = Σ_k W[r, k] · X[b, k]`, written to `out[(r - rows.start) · stride + b]`.
//!
//! - Activations are packed once per call ([`pack_acts`], from `ActBuf::prepare`) into
//!   panels of [`NR`] rows, transposed to `[k][NR]` and 64-byte aligned, zeros past the
//!   batch: per `k`, `NR / 8` (AVX2) or `NR / 4` (NEON) aligned vector loads feed the
//!   accumulators of every weight row of a tile.
//! - Weights: per block of [`MC`] rows × [`KC`] columns, each row is decoded (f16 → f32
//!   with F16C / `fcvtl`, or copied: the mmap bytes may be unaligned; Q8_0, Q4_0, Q4_1,
//!   Q4_K, Q6_K dequantized, `kernels::dequant`: AVX2 decoders on x86_64, the scalar
//!   `dequantize_row`s on aarch64, both bit-identical to the scalar ones) once into a
//!   per-thread f32 panel, then used for every activation panel. A `KC`-column slice is
//!   whole blocks of every quantized type (`KC` is a multiple of 32 and 256, rows are whole
//!   blocks), so its bytes are `k0 / block · block_bytes ..` (`dequant::byte_range`). Each
//!   weight is decoded once per call (against `batch` FMAs), so at the decoder's 512 rows
//!   quantized weights run at the F32 kernel's speed (B preset, 1 thread of
//!   a loaded 2-core Xeon, best of 5: Q8_0 768 × 768 × 512 7.96 → 5.90 ms, 768 × 3072 × 512
//!   37.2 → 23.7 ms against the integer dots on Q8 activations).
//! - Micro-kernel ([`Micro`]): `MR` weight rows × `NR` activation lanes in `MR · NR / lanes`
//!   accumulator registers, one broadcast weight per row and `k` (AVX2: 6 × 16 in 12 ymm,
//!   2 loads + 6 broadcasts per 12 FMAs; NEON: 6 × 16 in 24 q registers, 4 loads + 6
//!   `ld1r` per 24 `fmla`; AVX-512: 12 × 16 in 12 zmm, and where two activation panels
//!   remain 12 × 32 in 24 zmm, 2 loads + 12 broadcasts per 24 FMAs, since the single
//!   tile's 13 loads per 12 FMAs kept it at the load ports: B decoder shapes 1.12-1.25×
//!   faster, 59-72% of the 16-lane FMA peak at 2 threads).
//!   The `KC × NR` activation slice (16 KB) stays in L1 while the block's weight tiles
//!   come from L2; partial sums of later `KC` blocks are added to `out`.
//!
//! Per call, tasks of up to `MC` rows ([`chunk_rows`]) compute into a per-thread
//! `[rows, batch]` buffer that `run_gemm` (in `kernels`) transposes into `y`. The packed
//! activations' allocation is kept per calling thread for the next call ([`recycle`]).
//!
//! Remainders: the last tile of a block computes `MR` rows and stores the valid ones; the
//! last activation panel computes whole vectors (zero lanes included) and stores the valid
//! lanes (masked); `k` needs no multiple of anything (the `k` loop is scalar per step).
//!
//! Rounding: each output is one f32 FMA chain over at most [`KC`] terms plus one add per
//! `KC` block (with quantized weights: of the dequantized weights, exactly the scalar
//! `dequantize_row`'s values), so `|error| ≤ (min(cols, KC) + ⌈cols / KC⌉ + 1) · 2⁻²⁴ · Σ|W·x|` (first order;
//! the per-row dots: `(cols / 8 + 16) · 2⁻²⁴ · Σ|W·x|`). The result does not depend on the
//! task split or the thread count.
//!
//! Only the AVX2 kernel has been timed on hardware (here: 2 busy cores); the NEON one has
//! been run under qemu only, and uses the AVX2 threshold.

use super::act::Acts;
use super::Weight;
use crate::quant::GgmlType;
use rayon::prelude::*;
use std::cell::RefCell;
use std::ops::Range;

/// Activation rows per packed panel (lanes of one micro-kernel tile).
pub(super) const NR: usize = 16;
/// Columns per block: a `KC × NR` activation slice is 16 KB, which stays in L1.
const KC: usize = 256;
/// Weight rows per decoded block (`MC × KC` f32 = 96 KB, in L2), a multiple of every `MR`.
const MC: usize = 96;

/// Batch from which every weight type uses this kernel instead of the per-row dots (see
/// `Kernel::gemm`). Measured for F32/F16 on AVX2 (768 × 768, weights in cache): the dots are
/// faster up to 8 rows (a panel of 8 or fewer lanes fills only 6 accumulators, and packing
/// costs as much as it saves), the two about even at 12, and this kernel 1.2-1.8× faster
/// from 16 on. With fewer rows the weights stream from memory once per call either way.
/// Quantized types use the same threshold (not measured separately near it; at 512 rows
/// this kernel is 1.3-1.6× their integer dots).
pub(super) const MIN_BATCH: usize = 12;

/// One `k` of an activation panel: `NR` lanes (activation rows), aligned so the vector
/// loads never split a cache line.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
pub(crate) struct Lanes(pub [f32; NR]);

/// Packs `x` (`[batch, cols]`) into `⌈batch / NR⌉` panels of `cols` [`Lanes`]: panel `p`,
/// column `k`, lane `l` holds `x[(p · NR + l) · cols + k]`, zero past the batch.
pub(super) fn pack_acts(x: &[f32], batch: usize, cols: usize, parallel: bool) -> Vec<Lanes> {
    assert_eq!(x.len(), batch * cols, "pack_acts: x is not [batch, cols]");
    let panels = batch.div_ceil(NR);
    if cols == 0 {
        return Vec::new();
    }
    let mut xp = PACKED.with(|c| std::mem::take(&mut *c.borrow_mut()));
    xp.clear();
    xp.resize(panels * cols, Lanes([0.0; NR]));
    // Columns done with AVX2 8 × 8 transposes (x86 with AVX2), the rest by the loop below.
    #[cfg(target_arch = "x86_64")]
    let simd_cols = if super::cpu::has_avx2() {
        cols - cols % 8
    } else {
        0
    };
    #[cfg(not(target_arch = "x86_64"))]
    let simd_cols = 0;
    let pack = |(p, dst): (usize, &mut [Lanes])| {
        let b0 = p * NR;
        let lanes = NR.min(batch - b0);
        let rows = &x[b0 * cols..(b0 + lanes) * cols];
        #[cfg(target_arch = "x86_64")]
        for k0 in (0..simd_cols).step_by(8) {
            // Rows l0..l0 + 8, columns k0..k0 + 8 → lanes l0..l0 + 8 of columns k0..k0 + 8.
            for l0 in (0..lanes - lanes % 8).step_by(8) {
                // SAFETY: AVX2 detected (`simd_cols` is 0 otherwise); reads 8 rows × 8
                // columns inside `rows`, writes 8 lanes of 8 columns inside `dst`.
                unsafe {
                    super::x86::transpose8x8(
                        rows.as_ptr().add(l0 * cols + k0),
                        cols,
                        dst[k0..].as_mut_ptr().cast::<f32>().add(l0),
                        NR,
                    )
                };
            }
            for l in lanes - lanes % 8..lanes {
                for (d, &v) in dst[k0..k0 + 8].iter_mut().zip(&rows[l * cols + k0..]) {
                    d.0[l] = v;
                }
            }
        }
        // 32 columns at a time: the panel's lines being written and the rows' lines being
        // read stay in L1 through the transpose.
        for k0 in (simd_cols..cols).step_by(32) {
            let k1 = (k0 + 32).min(cols);
            for (l, row) in rows.chunks_exact(cols).enumerate() {
                for (d, &v) in dst[k0..k1].iter_mut().zip(&row[k0..k1]) {
                    d.0[l] = v;
                }
            }
        }
    };
    if parallel && panels > 1 {
        xp.par_chunks_mut(cols).enumerate().for_each(pack);
    } else {
        xp.chunks_mut(cols).enumerate().for_each(pack);
    }
    xp
}

thread_local! {
    /// The last packed activations of the calling thread, returned by `ActBuf`'s drop: the
    /// next call reuses the allocation (a fresh one of a few MB costs page faults each time).
    static PACKED: RefCell<Vec<Lanes>> = const { RefCell::new(Vec::new()) };
}

/// Keeps `xp` (from [`pack_acts`]) for the calling thread's next call.
pub(super) fn recycle(xp: Vec<Lanes>) {
    if xp.capacity() > 0 {
        PACKED.with(|c| {
            let mut c = c.borrow_mut();
            if xp.capacity() > c.capacity() {
                *c = xp;
            }
        });
    }
}

/// A micro-kernel for one instruction set.
pub(super) trait Micro {
    /// Weight rows per tile.
    const MR: usize;
    /// `c[i · cs + l] (+)= Σ_{k < kc} w[i · KC + k] · x[k · NR + l]` for `i < rows ≤ MR` and
    /// `l < lanes ≤ NR`; `add` accumulates into `c`, otherwise overwrites it.
    ///
    /// # Safety
    /// The instruction set is present; `w` holds `MR` rows of `KC` f32 (at least `kc` of
    /// each read), `x` `kc` rows of `NR` f32, and `c` is valid for the written elements.
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile(
        kc: usize,
        w: *const f32,
        x: *const f32,
        c: *mut f32,
        cs: usize,
        rows: usize,
        lanes: usize,
        add: bool,
    );

    /// Whether [`Micro::tile_pair`] is implemented.
    const PAIR: bool = false;

    /// [`Micro::tile`] over two activation panels at once (`x0` full, `x1` with `lanes1`
    /// lanes; outputs `c[i · cs + l]` for `l < NR + lanes1`), each output the same FMA chain
    /// as in `tile`: one weight broadcast feeds both panels.
    ///
    /// # Safety
    /// As [`Micro::tile`], for both panels.
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile_pair(
        _kc: usize,
        _w: *const f32,
        _x0: *const f32,
        _x1: *const f32,
        _c: *mut f32,
        _cs: usize,
        _rows: usize,
        _lanes1: usize,
        _add: bool,
    ) {
        unreachable!("tile_pair without PAIR")
    }

    /// Asks for the cache line at `p` in L2 (never faults); a no-op where not implemented.
    #[inline]
    fn prefetch(_p: *const u8) {}

    /// This instruction set's decoder of `ty`'s weight bytes into the f32 panel.
    fn decoder(ty: GgmlType) -> Decode;
}

/// The blocked kernel as a `RowsFn` for micro-kernel `M`: every weight type it takes (F32,
/// F16, and the quantized ones via `dequant`) goes through [`rows`] with `M`'s decoder.
pub(super) fn rows_for<M: Micro>(
    w: &Weight,
    acts: &Acts,
    rows: Range<usize>,
    out: &mut [f32],
    stride: usize,
) {
    self::rows::<M>(w, acts, rows, out, stride, M::decoder(w.ty));
}

/// Decodes one weight row slice (little-endian bytes, any alignment) into f32.
pub(super) type Decode = fn(&[u8], &mut [f32]);

/// F32 bytes → f32 (a copy; the bytes may be unaligned).
pub(super) fn decode_f32(src: &[u8], dst: &mut [f32]) {
    for (d, b) in dst.iter_mut().zip(src.chunks_exact(4)) {
        *d = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    }
}

thread_local! {
    /// The decoded weight block of the calling thread: `MC` rows of `KC` f32.
    static PANEL: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// A task's `[rows, batch]` outputs before they are transposed into `y`.
    static OUT: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// `f` with a per-thread scratch buffer of `n` f32 (contents unspecified).
pub(super) fn with_buffer<R>(n: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    OUT.with(|buf| match buf.try_borrow_mut() {
        Ok(mut v) => {
            if v.len() < n {
                v.resize(n, 0.0);
            }
            f(&mut v[..n])
        }
        // Re-entered (never from the kernels themselves): a fresh buffer.
        Err(_) => f(&mut vec![0.0; n]),
    })
}

/// Output rows per task: a few tasks per thread for load balance, whole tiles, and at most
/// one weight block so each task's decoded rows stay in L2.
pub(super) fn chunk_rows(rows: usize) -> usize {
    let threads = rayon::current_num_threads().max(1);
    rows.div_ceil(4 * threads)
        .next_multiple_of(MR_ALIGN)
        .clamp(MR_ALIGN, MC)
}

/// A multiple of every micro-kernel's `MR` (tasks split rows on whole tiles).
const MR_ALIGN: usize = 24;

/// Weight rows `rows` × every activation row of `acts` (packed by [`pack_acts`]) into
/// `out[(r - rows.start) · stride + b]`.
pub(super) fn rows<M: Micro>(
    w: &Weight,
    acts: &Acts,
    rows: Range<usize>,
    out: &mut [f32],
    stride: usize,
    decode: Decode,
) {
    let (cols, batch) = (w.cols, acts.batch);
    if rows.is_empty() || batch == 0 {
        return;
    }
    assert!(stride >= batch, "gemm: stride {stride} < batch {batch}");
    assert!(
        out.len() >= (rows.len() - 1) * stride + batch,
        "gemm: out too short"
    );
    assert!(rows.end <= w.rows, "gemm: rows past the weight matrix");
    if cols == 0 {
        for o in out.chunks_mut(stride).take(rows.len()) {
            o[..batch].fill(0.0);
        }
        return;
    }
    let panels = batch.div_ceil(NR);
    let xp = acts.xp;
    assert_eq!(xp.len(), panels * cols, "gemm: activations not packed");
    assert!(MC.is_multiple_of(M::MR) && MR_ALIGN.is_multiple_of(M::MR));
    let bytes = |k0: usize, kc: usize| super::dequant::byte_range(w.ty, k0, kc);
    PANEL.with(|panel| {
        let mut panel = panel.borrow_mut();
        if panel.len() < MC * KC {
            panel.resize(MC * KC, 0.0);
        }
        let panel = &mut panel[..MC * KC];
        for m0 in rows.clone().step_by(MC) {
            let m1 = (m0 + MC).min(rows.end);
            for k0 in (0..cols).step_by(KC) {
                let kc = KC.min(cols - k0);
                for (r, dst) in (m0..m1).zip(panel.chunks_exact_mut(KC)) {
                    decode(&w.row(r)[bytes(k0, kc)], &mut dst[..kc]);
                }
                // The next block's weights come from memory (or L3) while this one is
                // computed, a few rows per activation panel so they are still in L2 when
                // it is decoded, instead of stalling its decode.
                let (next_rows, nk0) = if k0 + KC < cols {
                    (m0..m1, k0 + KC)
                } else {
                    (m1..(m1 + MC).min(rows.end), 0)
                };
                let nkc = KC.min(cols - nk0);
                let mut p = 0;
                while p < panels {
                    // Two panels per tile where the micro-kernel has a pair tile: the first
                    // of the two is always full (only the last panel is partial).
                    let step = if M::PAIR && p + 1 < panels { 2 } else { 1 };
                    let (n0, n1) = (
                        next_rows.len() * p / panels,
                        next_rows.len() * (p + step) / panels,
                    );
                    for r in next_rows.start + n0..next_rows.start + n1 {
                        for line in w.row(r)[bytes(nk0, nkc)].chunks(64) {
                            M::prefetch(line.as_ptr());
                        }
                    }
                    let lanes = NR.min(batch - (p + step - 1) * NR);
                    let x = xp[p * cols + k0..].as_ptr().cast::<f32>();
                    for t in (0..m1 - m0).step_by(M::MR) {
                        let n = M::MR.min(m1 - m0 - t);
                        let c0 = (m0 - rows.start + t) * stride + p * NR;
                        // In bounds: the last written element is at c0 + (n - 1) · stride +
                        // (step - 1) · NR + lanes - 1 < (rows.len() - 1) · stride + batch.
                        let c = out[c0..].as_mut_ptr();
                        let wt = panel[t * KC..].as_ptr();
                        // SAFETY: the tile reads MR rows of the panel (MC is a multiple of
                        // MR), kc of each; kc rows of the packed panel(s) from column k0 (the
                        // second `cols` Lanes after the first); and writes n rows × (step - 1)
                        // · NR + lanes of `out`, checked above.
                        unsafe {
                            if step == 2 {
                                let x1 = xp[(p + 1) * cols + k0..].as_ptr().cast::<f32>();
                                M::tile_pair(kc, wt, x, x1, c, stride, n, lanes, k0 > 0)
                            } else {
                                M::tile(kc, wt, x, c, stride, n, lanes, k0 > 0)
                            }
                        };
                    }
                    p += step;
                }
            }
        }
    });
}

#[cfg(target_arch = "x86_64")]
pub(super) mod avx2 {
    use super::{Decode, Micro, KC, NR};
    use crate::quant::GgmlType;
    use std::arch::x86_64::*;

    /// 6 weight rows × 16 lanes: 12 accumulators, 2 activation loads and 6 broadcasts per
    /// 12 FMAs, 15 of the 16 ymm registers.
    pub(in crate::kernels) struct Avx2;

    impl Micro for Avx2 {
        const MR: usize = 6;
        #[inline]
        unsafe fn tile(
            kc: usize,
            w: *const f32,
            x: *const f32,
            c: *mut f32,
            cs: usize,
            rows: usize,
            lanes: usize,
            add: bool,
        ) {
            if lanes > 8 {
                tile::<2>(kc, w, x, c, cs, rows, lanes, add)
            } else {
                tile::<1>(kc, w, x, c, cs, rows, lanes, add)
            }
        }

        #[inline]
        fn prefetch(p: *const u8) {
            // SAFETY: SSE is baseline on x86_64; a prefetch never faults.
            unsafe { _mm_prefetch::<_MM_HINT_T1>(p.cast()) }
        }

        /// F16 through F16C; quantized types by the AVX2 decoders (`dequant::avx2`).
        fn decoder(ty: GgmlType) -> Decode {
            match ty {
                GgmlType::F32 => super::decode_f32,
                GgmlType::F16 => decode_f16,
                _ => crate::kernels::dequant::avx2::decoder(ty),
            }
        }
    }

    const MR: usize = 6;

    #[target_feature(enable = "avx2,fma,f16c")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile<const NV: usize>(
        kc: usize,
        w: *const f32,
        x: *const f32,
        c: *mut f32,
        cs: usize,
        rows: usize,
        lanes: usize,
        add: bool,
    ) {
        let mut acc = [[_mm256_setzero_ps(); NV]; MR];
        let (mut wp, mut xq) = (w, x);
        for _ in 0..kc {
            let mut xv = [_mm256_setzero_ps(); NV];
            for j in 0..NV {
                xv[j] = _mm256_load_ps(xq.add(8 * j));
            }
            for i in 0..MR {
                let b = _mm256_set1_ps(*wp.add(i * KC));
                for j in 0..NV {
                    acc[i][j] = _mm256_fmadd_ps(b, xv[j], acc[i][j]);
                }
            }
            wp = wp.add(1);
            xq = xq.add(NR);
        }
        let idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        for i in 0..MR {
            if i >= rows {
                break;
            }
            let cp = c.add(i * cs);
            for j in 0..NV {
                let n = lanes.saturating_sub(8 * j).min(8);
                let p = cp.add(8 * j);
                if n == 8 {
                    let v = if add {
                        _mm256_add_ps(acc[i][j], _mm256_loadu_ps(p))
                    } else {
                        acc[i][j]
                    };
                    _mm256_storeu_ps(p, v);
                } else if n > 0 {
                    let mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(n as i32), idx);
                    let v = if add {
                        _mm256_add_ps(acc[i][j], _mm256_maskload_ps(p, mask))
                    } else {
                        acc[i][j]
                    };
                    _mm256_maskstore_ps(p, mask, v);
                }
            }
        }
    }

    /// F16 bytes (any alignment) → f32 with F16C, 8 at a time.
    fn decode_f16(src: &[u8], dst: &mut [f32]) {
        assert!(src.len() >= 2 * dst.len());
        // SAFETY: only reached from kernels selected after detecting AVX2+FMA+F16C; the
        // reads stay inside `src` (asserted).
        unsafe { decode_f16_impl(src, dst) }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn decode_f16_impl(src: &[u8], dst: &mut [f32]) {
        let n = dst.len();
        let (s, d) = (src.as_ptr(), dst.as_mut_ptr());
        let mut i = 0;
        while i + 8 <= n {
            _mm256_storeu_ps(
                d.add(i),
                _mm256_cvtph_ps(_mm_loadu_si128(s.add(2 * i).cast())),
            );
            i += 8;
        }
        for j in i..n {
            dst[j] = super::super::x86::f16([src[2 * j], src[2 * j + 1]]);
        }
    }
}

/// The blocked kernel's entry point on x86_64 (AVX2+FMA+F16C detected): the 16-lane
/// AVX-512 tile where the CPU has AVX-512F, else the AVX2 tile. Both give the same bits.
#[cfg(target_arch = "x86_64")]
pub(super) fn x86_rows() -> super::RowsFn {
    if super::cpu::has_avx512() {
        rows_for::<avx512::Avx512>
    } else {
        rows_for::<avx2::Avx2>
    }
}

#[cfg(target_arch = "x86_64")]
pub(super) mod avx512 {
    use super::{Decode, Micro, KC, NR};
    use crate::quant::GgmlType;
    use std::arch::x86_64::*;

    /// 12 weight rows × 16 lanes, one zmm per row: 12 accumulators, 1 activation load and
    /// 12 broadcasts per 12 FMAs of 16 lanes (the AVX2 tile: 8 lanes). Every output is
    /// the same FMA chain, in the same order, as in the AVX2 tile, so the two agree bit
    /// for bit; the weights are decoded by the AVX2 decoders.
    pub(in crate::kernels) struct Avx512;

    const MR: usize = 12;

    impl Micro for Avx512 {
        const MR: usize = MR;
        #[inline]
        unsafe fn tile(
            kc: usize,
            w: *const f32,
            x: *const f32,
            c: *mut f32,
            cs: usize,
            rows: usize,
            lanes: usize,
            add: bool,
        ) {
            tile(kc, w, x, c, cs, rows, lanes, add)
        }

        const PAIR: bool = true;

        #[inline]
        unsafe fn tile_pair(
            kc: usize,
            w: *const f32,
            x0: *const f32,
            x1: *const f32,
            c: *mut f32,
            cs: usize,
            rows: usize,
            lanes1: usize,
            add: bool,
        ) {
            tile_pair(kc, w, x0, x1, c, cs, rows, lanes1, add)
        }

        #[inline]
        fn prefetch(p: *const u8) {
            <super::avx2::Avx2 as Micro>::prefetch(p)
        }

        fn decoder(ty: GgmlType) -> Decode {
            <super::avx2::Avx2 as Micro>::decoder(ty)
        }
    }

    #[target_feature(enable = "avx512f,avx2,fma,f16c")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile(
        kc: usize,
        w: *const f32,
        x: *const f32,
        c: *mut f32,
        cs: usize,
        rows: usize,
        lanes: usize,
        add: bool,
    ) {
        let mut acc = [_mm512_setzero_ps(); MR];
        let (mut wp, mut xq) = (w, x);
        for _ in 0..kc {
            let xv = _mm512_load_ps(xq);
            for (i, a) in acc.iter_mut().enumerate() {
                *a = _mm512_fmadd_ps(_mm512_set1_ps(*wp.add(i * KC)), xv, *a);
            }
            wp = wp.add(1);
            xq = xq.add(NR);
        }
        // Lanes past the batch are neither read nor written (masked).
        for (i, &a) in acc.iter().enumerate().take(rows) {
            store(c.add(i * cs), a, lanes, add);
        }
    }

    /// `lanes` of `a` into `p` (plus what is there when `add`), masked.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn store(p: *mut f32, a: __m512, lanes: usize, add: bool) {
        let mask: __mmask16 = if lanes >= NR { !0 } else { (1u16 << lanes) - 1 };
        let v = if add {
            _mm512_add_ps(a, _mm512_maskz_loadu_ps(mask, p))
        } else {
            a
        };
        _mm512_mask_storeu_ps(p, mask, v);
    }

    /// 12 weight rows × 2 panels of 16 lanes: 24 accumulators, 2 activation loads and 12
    /// broadcasts per 24 FMAs (the single tile: 13 loads per 12), so the FMA ports, not the
    /// load ports, bound it.
    #[target_feature(enable = "avx512f,avx2,fma,f16c")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile_pair(
        kc: usize,
        w: *const f32,
        x0: *const f32,
        x1: *const f32,
        c: *mut f32,
        cs: usize,
        rows: usize,
        lanes1: usize,
        add: bool,
    ) {
        let mut acc = [[_mm512_setzero_ps(); 2]; MR];
        let (mut wp, mut xq0, mut xq1) = (w, x0, x1);
        for _ in 0..kc {
            let (a0, a1) = (_mm512_load_ps(xq0), _mm512_load_ps(xq1));
            for (i, a) in acc.iter_mut().enumerate() {
                let b = _mm512_set1_ps(*wp.add(i * KC));
                a[0] = _mm512_fmadd_ps(b, a0, a[0]);
                a[1] = _mm512_fmadd_ps(b, a1, a[1]);
            }
            wp = wp.add(1);
            xq0 = xq0.add(NR);
            xq1 = xq1.add(NR);
        }
        for (i, a) in acc.iter().enumerate().take(rows) {
            let p = c.add(i * cs);
            store(p, a[0], NR, add);
            store(p.add(NR), a[1], lanes1, add);
        }
    }
}

#[cfg(target_arch = "aarch64")]
pub(super) mod neon {
    use super::super::aarch64::{f16, f16x4, f16x4_high};
    use super::{Decode, Micro, KC, NR};
    use crate::quant::GgmlType;
    use std::arch::aarch64::*;

    /// 6 weight rows × 16 lanes: 24 accumulators of 4 lanes, 4 activation loads and 6
    /// broadcast loads (`ld1r`) per 24 `fmla`, 29 of the 32 q registers.
    pub(in crate::kernels) struct Neon;

    const MR: usize = 6;

    impl Micro for Neon {
        const MR: usize = MR;
        #[inline]
        unsafe fn tile(
            kc: usize,
            w: *const f32,
            x: *const f32,
            c: *mut f32,
            cs: usize,
            rows: usize,
            lanes: usize,
            add: bool,
        ) {
            match lanes.div_ceil(4) {
                4 => tile::<4>(kc, w, x, c, cs, rows, lanes, add),
                3 => tile::<3>(kc, w, x, c, cs, rows, lanes, add),
                2 => tile::<2>(kc, w, x, c, cs, rows, lanes, add),
                _ => tile::<1>(kc, w, x, c, cs, rows, lanes, add),
            }
        }

        /// F16 through `fcvtl`; quantized types by the scalar reference decoders.
        fn decoder(ty: GgmlType) -> Decode {
            match ty {
                GgmlType::F32 => super::decode_f32,
                GgmlType::F16 => decode_f16,
                _ => crate::kernels::dequant::scalar(ty),
            }
        }
    }

    /// Advanced SIMD is baseline on aarch64: no `target_feature` needed.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile<const NV: usize>(
        kc: usize,
        w: *const f32,
        x: *const f32,
        c: *mut f32,
        cs: usize,
        rows: usize,
        lanes: usize,
        add: bool,
    ) {
        let mut acc = [[vdupq_n_f32(0.0); NV]; MR];
        let (mut wp, mut xq) = (w, x);
        for _ in 0..kc {
            let mut xv = [vdupq_n_f32(0.0); NV];
            for j in 0..NV {
                xv[j] = vld1q_f32(xq.add(4 * j));
            }
            for i in 0..MR {
                let b = vld1q_dup_f32(wp.add(i * KC));
                for j in 0..NV {
                    acc[i][j] = vfmaq_f32(acc[i][j], b, xv[j]);
                }
            }
            wp = wp.add(1);
            xq = xq.add(NR);
        }
        for i in 0..MR {
            if i >= rows {
                break;
            }
            let cp = c.add(i * cs);
            for j in 0..NV {
                let n = lanes.saturating_sub(4 * j).min(4);
                let p = cp.add(4 * j);
                if n == 4 {
                    let v = if add {
                        vaddq_f32(acc[i][j], vld1q_f32(p))
                    } else {
                        acc[i][j]
                    };
                    vst1q_f32(p, v);
                } else if n > 0 {
                    let mut t = [0f32; 4];
                    vst1q_f32(t.as_mut_ptr(), acc[i][j]);
                    for (l, &v) in t.iter().enumerate().take(n) {
                        *p.add(l) = if add { *p.add(l) + v } else { v };
                    }
                }
            }
        }
    }

    /// F16 bytes (any alignment) → f32 with `fcvtl`, 8 at a time.
    fn decode_f16(src: &[u8], dst: &mut [f32]) {
        assert!(src.len() >= 2 * dst.len());
        let n = dst.len();
        let mut i = 0;
        // SAFETY: NEON is baseline; with i + 8 ≤ n the 16 bytes read end at
        // 2·i + 16 ≤ 2·n ≤ src.len() and the 8 f32 written at i + 8 ≤ n.
        unsafe {
            while i + 8 <= n {
                let v = vld1q_u16(src.as_ptr().add(2 * i).cast());
                vst1q_f32(dst.as_mut_ptr().add(i), f16x4(vget_low_u16(v)));
                vst1q_f32(dst.as_mut_ptr().add(i + 4), f16x4_high(v));
                i += 8;
            }
            for j in i..n {
                dst[j] = f16([src[2 * j], src[2 * j + 1]]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! The matrix × matrix kernel against an f64 dot on ragged shapes: batch 1..70 (panel
    //! remainders on both sides of 8 lanes), rows around the tile and block sizes, odd
    //! column counts on both sides of `KC`, unaligned weight bytes, serial and threaded.
    //! Forced on at every batch, and through `matmul` with its batch threshold.

    use super::super::{matmul, matmul_reference, run, select, Gemm, Kernel};
    use super::{pack_acts, Weight, KC, MC, MIN_BATCH, NR};
    use super::super::test_rng::Rng;
    use crate::quant::GgmlType;

    /// (rows, cols, batch): batches 1, 2, 3, 5, 7 (under one 8-lane vector), 8, 9, 13, 16,
    /// 17, 24, 33, 64, 70 (whole and partial panels), `MIN_BATCH - 1` and `MIN_BATCH` (where
    /// `matmul` switches kernels); rows not multiples of the tile (6) or of the block
    /// (`MC` = 96: 97, 200); cols under 8 (1, 3, 4, 5, 7), odd, under and over `KC` = 256
    /// (40, 72, 257, 261, 264, 300, 520, 1000), none at all.
    const SHAPES: [(usize, usize, usize); 23] = [
        (1, 1, 1),
        (5, 3, 2),
        (6, 40, 3),
        (7, 72, 5),
        (13, 264, 7),
        (130, 40, 8),
        (3, 512, 9),
        (11, 264, 13),
        (97, 40, 13),
        (25, 257, 16),
        (200, 72, 17),
        (19, 520, 24),
        (31, 7, 33),
        (50, 264, 64),
        (7, 1, 64),
        (101, 300, 70),
        (1, 264, 64),
        (96, 256, 4),
        (9, 1000, 6),
        (2, 0, 5),
        (23, 5, MIN_BATCH - 1),
        (37, 261, MIN_BATCH),
        (8, 4, MIN_BATCH),
    ];

    fn weights(ty: GgmlType, rng: &mut Rng, rows: usize, cols: usize, offset: usize) -> Vec<u8> {
        let mut data = vec![0u8; offset];
        for _ in 0..rows * cols {
            let v = 0.2 * rng.uniform();
            match ty {
                GgmlType::F32 => data.extend_from_slice(&v.to_le_bytes()),
                _ => data.extend_from_slice(&half::f16::from_f32(v).to_le_bytes()),
            }
        }
        data
    }

    fn decoded(ty: GgmlType, data: &[u8]) -> Vec<f64> {
        match ty {
            GgmlType::F32 => data
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64)
                .collect(),
            _ => data
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f64())
                .collect(),
        }
    }

    /// Activations with a different scale per row and a few large values.
    fn activations(rng: &mut Rng, batch: usize, cols: usize) -> Vec<f32> {
        let mut x = vec![0f32; batch * cols];
        for (b, row) in x.chunks_exact_mut(cols.max(1)).enumerate() {
            for v in row.iter_mut() {
                *v = (0.5 + b as f32) * rng.uniform();
                if rng.next().is_multiple_of(61) {
                    *v *= 30.0;
                }
            }
        }
        x
    }

    /// Checks `y` (`[batch, rows]`) against the f64 product: every element written and
    /// finite, within `terms · 2⁻²⁴ · Σ|W·x|` (`terms(cols)`: the length of the longest f32
    /// rounding chain of the kernel that produced it).
    fn check(
        what: &str,
        wd: &[f64],
        x: &[f32],
        shape: (usize, usize, usize),
        y: &[f32],
        terms: f64,
    ) {
        check_every(what, wd, x, shape, y, terms, 1);
    }

    /// [`check`] on every `step`-th element of `y`.
    fn check_every(
        what: &str,
        wd: &[f64],
        x: &[f32],
        (rows, cols, batch): (usize, usize, usize),
        y: &[f32],
        terms: f64,
        step: usize,
    ) {
        for i in (0..batch * rows).step_by(step) {
            let (b, r) = (i / rows, i % rows);
            let (mut exact, mut s) = (0f64, 0f64);
            for k in 0..cols {
                let p = wd[r * cols + k] * x[b * cols + k] as f64;
                exact += p;
                s += p.abs();
            }
            let got = y[b * rows + r] as f64;
            let bound = terms * 2f64.powi(-24) * s;
            assert!(
                got.is_finite() && (got - exact).abs() <= bound,
                "{what} rows={rows} cols={cols} batch={batch} (r={r}, b={b}): \
                 {got} vs f64 {exact}, bound {bound}"
            );
        }
    }

    /// Rounding chain of the blocked kernel: one FMA chain per `KC` block, one add per block.
    fn gemm_terms(cols: usize) -> f64 {
        (cols.min(KC) + cols.div_ceil(KC) + 1) as f64
    }

    /// Rounding chain of the per-row dots: 16 lanes of `cols / 16` terms, the horizontal
    /// sum and the leftover columns (`tests/kernels_matmul.rs`: `(cols/16 + 8) · 2⁻²³`).
    fn dots_terms(cols: usize) -> f64 {
        cols as f64 / 8.0 + 16.0
    }

    #[test]
    fn kernels_gemm_matches_f64_on_ragged_shapes() {
        let mut rng = Rng(0x6e44_0001);
        for ty in [GgmlType::F32, GgmlType::F16] {
            let kernel = select(ty);
            let Some(g) = kernel.gemm else {
                // `wide`/scalar levels have no matrix × matrix kernel.
                println!("{ty}: {} has no gemm", kernel.name);
                continue;
            };
            let forced = Kernel {
                gemm: Some(Gemm { min_batch: 1, ..g }),
                int8_gemm: false,
                ..kernel
            };
            for (i, &(rows, cols, batch)) in SHAPES.iter().enumerate() {
                let offset = i % 4; // unaligned weight bytes
                let bytes = weights(ty, &mut rng, rows, cols, offset);
                let data = &bytes[offset..];
                let wd = decoded(ty, data);
                let w = Weight::new(ty, rows, cols, data).unwrap();
                let x = activations(&mut rng, batch, cols);
                let shape = (rows, cols, batch);
                for parallel in [false, true] {
                    let mut y = vec![f32::NAN; batch * rows];
                    run(&w, &x, batch, &mut y, forced, parallel);
                    let what = format!("{ty} gemm (parallel {parallel})");
                    check(&what, &wd, &x, shape, &y, gemm_terms(cols));
                }
                // The public entry point: gemm from its batch threshold, per-row dots below
                // (16 lanes of cols/16 terms, then the horizontal sum).
                let mut y = vec![f32::NAN; batch * rows];
                matmul(&w, &x, batch, &mut y);
                let terms = gemm_terms(cols).max(dots_terms(cols));
                check(&format!("{ty} matmul"), &wd, &x, shape, &y, terms);
                let mut y_ref = vec![f32::NAN; batch * rows];
                matmul_reference(&w, &x, batch, &mut y_ref);
                check(&format!("{ty} reference"), &wd, &x, shape, &y_ref, 1.0);
            }
        }
    }

    /// The AVX-512 tile against the AVX2 tile, bit for bit (the same FMA chain per output),
    /// on every ragged shape, for F32, F16 and quantized weights (Q8_0 and Q4_K rows from
    /// the scalar quantizers), serial and threaded. Skipped where the CPU has no AVX-512F.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx512_tile_equals_avx2_tile() {
        use super::{avx2::Avx2, avx512::Avx512, rows_for};
        if !(crate::kernels::cpu::has_avx2() && std::arch::is_x86_feature_detected!("avx512f")) {
            println!("no AVX-512F here: skipped");
            return;
        }
        let mut rng = Rng(0x6e44_0003);
        for ty in [GgmlType::F32, GgmlType::F16, GgmlType::Q8_0, GgmlType::Q4_K] {
            let kernel = select(ty);
            let with = |rows: super::super::RowsFn| Kernel {
                gemm: Some(Gemm { rows, min_batch: 1 }),
                int8_gemm: false,
                ..kernel
            };
            let (k2, k512) = (with(rows_for::<Avx2>), with(rows_for::<Avx512>));
            for &(rows, cols, batch) in SHAPES.iter().chain(&[(300, 1024, 40), (97, 512, 70)]) {
                let blk = ty.block_size();
                let cols = match ty {
                    GgmlType::F32 | GgmlType::F16 => cols,
                    _ => cols.div_ceil(blk).max(1) * blk,
                };
                let data = match ty {
                    GgmlType::F32 | GgmlType::F16 => weights(ty, &mut rng, rows, cols, 0),
                    _ => {
                        let rb = ty.row_size(cols).unwrap();
                        let mut d = vec![0u8; rows * rb];
                        for row in d.chunks_exact_mut(rb) {
                            let v: Vec<f32> = (0..cols).map(|_| rng.uniform() - 0.5).collect();
                            crate::quant::quantize_row(ty, &v, row).unwrap();
                        }
                        d
                    }
                };
                let w = Weight::new(ty, rows, cols, &data).unwrap();
                let x = activations(&mut rng, batch, cols);
                for parallel in [false, true] {
                    let mut y2 = vec![f32::NAN; batch * rows];
                    let mut y512 = vec![f32::NAN; batch * rows];
                    run(&w, &x, batch, &mut y2, k2, parallel);
                    run(&w, &x, batch, &mut y512, k512, parallel);
                    let same = y2.iter().zip(&y512).all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(same, "{ty} {rows}x{cols}x{batch} (parallel {parallel}): AVX-512 tile differs from AVX2");
                }
            }
        }
    }

    /// Larger shapes on the threaded path, with several tasks and blocks per task.
    #[test]
    fn kernels_gemm_matches_reference_threaded() {
        let mut rng = Rng(0x6e44_0002);
        for ty in [GgmlType::F32, GgmlType::F16] {
            for (rows, cols, batch) in [(2 * MC + 7, 2 * KC + 40, 37), (300, 72, 130)] {
                let bytes = weights(ty, &mut rng, rows, cols, 0);
                let wd = decoded(ty, &bytes);
                let w = Weight::new(ty, rows, cols, &bytes).unwrap();
                let x = activations(&mut rng, batch, cols);
                let mut y = vec![f32::NAN; batch * rows];
                matmul(&w, &x, batch, &mut y);
                check(
                    &format!("{ty} matmul"),
                    &wd,
                    &x,
                    (rows, cols, batch),
                    &y,
                    gemm_terms(cols),
                );
            }
        }
    }

    #[test]
    fn kernels_gemm_pack_acts_transposes_into_zero_padded_panels() {
        // Panels with 16 and 3 lanes (or 16 and 11: SIMD 8 × 8 blocks plus lanes and
        // columns left over), columns under 8, a multiple of 8 and not.
        for (batch, cols, parallel) in [
            (NR + 3, 5, false),
            (2 * NR + 11, 13, true),
            (2 * NR + 11, 13, false),
            (7, 16, false),
            (NR, 24, true),
        ] {
            let x: Vec<f32> = (0..batch * cols).map(|i| i as f32 + 1.0).collect();
            let xp = pack_acts(&x, batch, cols, parallel);
            assert_eq!(xp.len(), batch.div_ceil(NR) * cols);
            for (p, panel) in xp.chunks_exact(cols).enumerate() {
                for (k, lanes) in panel.iter().enumerate() {
                    for (l, &v) in lanes.0.iter().enumerate() {
                        let b = p * NR + l;
                        let want = if b < batch { x[b * cols + k] } else { 0.0 };
                        assert_eq!(v, want, "{batch}×{cols}: panel {p} k {k} lane {l}");
                    }
                }
            }
        }
        assert!(pack_acts(&[], 3, 0, false).is_empty());
    }

    /// Where the CPU has the SIMD level, F32/F16 must actually get the blocked kernel.
    #[test]
    fn kernels_gemm_is_selected_with_simd() {
        for ty in [GgmlType::F32, GgmlType::F16] {
            let k = select(ty);
            let simd = k.name != "wide" && k.name != "scalar";
            assert_eq!(k.gemm.is_some(), simd, "{ty}: {}", k.name);
        }
    }

    /// Bits of an output, for exact comparisons.
    fn bits(y: &[f32]) -> Vec<u32> {
        y.iter().map(|v| v.to_bits()).collect()
    }

    /// The kernel `matmul` takes on both sides of `MIN_BATCH`: from it on, bit for bit the
    /// blocked kernel's output (forced on at every batch); below it, bit for bit the per-row
    /// dots' (the same level without the blocked kernel). Both are deterministic (neither
    /// depends on the task split) and they round differently, so a threshold off by one or
    /// a blocked kernel that is never taken fails here. Tiles, panels and `k` blocks left
    /// over, cols under 8.
    #[test]
    fn kernels_gemm_takes_over_from_min_batch() {
        let mut rng = Rng(0x6e44_0003);
        for ty in [GgmlType::F32, GgmlType::F16] {
            let kernel = select(ty);
            let Some(g) = kernel.gemm else {
                println!("{ty}: {} has no gemm", kernel.name);
                continue;
            };
            assert_eq!(g.min_batch, MIN_BATCH, "{ty}");
            let forced = Kernel {
                gemm: Some(Gemm { min_batch: 1, ..g }),
                int8_gemm: false,
                ..kernel
            };
            let dots = Kernel {
                gemm: None,
                int8_gemm: false,
                ..kernel
            };
            let mut differ = 0;
            for (rows, cols) in [(5, 7), (13, 300), (100, 40), (31, 3)] {
                let bytes = weights(ty, &mut rng, rows, cols, 1);
                let data = &bytes[1..];
                let wd = decoded(ty, data);
                let w = Weight::new(ty, rows, cols, data).unwrap();
                for batch in [MIN_BATCH - 1, MIN_BATCH, MIN_BATCH + NR + 1] {
                    let x = activations(&mut rng, batch, cols);
                    let out = |k: Option<Kernel>| {
                        let mut y = vec![f32::NAN; batch * rows];
                        match k {
                            Some(k) => run(&w, &x, batch, &mut y, k, true),
                            None => matmul(&w, &x, batch, &mut y),
                        }
                        y
                    };
                    let (y, y_gemm, y_dots) = (out(None), out(Some(forced)), out(Some(dots)));
                    let shape = (rows, cols, batch);
                    check(
                        &format!("{ty} gemm"),
                        &wd,
                        &x,
                        shape,
                        &y_gemm,
                        gemm_terms(cols),
                    );
                    check(
                        &format!("{ty} dots"),
                        &wd,
                        &x,
                        shape,
                        &y_dots,
                        dots_terms(cols),
                    );
                    let (want, other) = if batch >= MIN_BATCH {
                        ("gemm", &y_gemm)
                    } else {
                        ("dots", &y_dots)
                    };
                    assert!(
                        bits(&y) == bits(other),
                        "{ty} {rows}x{cols}x{batch}: matmul did not take the {want}"
                    );
                    differ += usize::from(bits(&y_gemm) != bits(&y_dots));
                }
            }
            // Else the comparisons above could not tell the two kernels apart.
            assert!(
                differ > 0,
                "{ty}: gemm and dots agree bit for bit everywhere"
            );
        }
    }

    /// Rows per matrix in the decoder-shape tests: two row blocks, the second ending in a
    /// one-row tile.
    const DECODER_ROWS: usize = MC + 13;

    /// The decoder's matrices at its token rows (the S/B/L presets' decoder: qkv, attn_out,
    /// ffn_up, ffn_down, pixel_out; for F32 also attention's `q·kᵀ` and `p·v`, which run as
    /// F32 "weights" in every model) through `matmul`, against the per-row dots that served
    /// them before the blocked kernel (this level with `gemm` off): everywhere within the
    /// sum of the two kernels' bounds of each other, with `Σ|W·x|` bounded by
    /// `max_k |W[r, k]| · Σ_k |x[b, k]|`; on every 61st output each within its own bound of
    /// the f64 product. Rows are cut to `DECODER_ROWS` (the row count only sets how many row
    /// blocks and tasks a call has; cols and batch set the blocking the shape exercises) so
    /// the test stays fast in a debug build.
    fn decoder_shapes_match_the_dots(ty: GgmlType, seed: u64) {
        let kernel = select(ty);
        if kernel.gemm.is_none() {
            println!("{ty}: {} has no gemm", kernel.name);
            return;
        }
        let dots = Kernel {
            gemm: None,
            int8_gemm: false,
            ..kernel
        };
        let cfg = eostok_models::Config::preset("B").unwrap();
        let dec = &cfg.decoder;
        let (d, dh, hd) = (dec.width, dec.mlp_hidden(), dec.head_dim());
        let batch = cfg.latent_tokens + cfg.num_patches();
        assert!(batch >= MIN_BATCH);
        let mut shapes = vec![(3 * d, d), (d, d), (dh, d), (d, dh), (cfg.patch_dim(), d)];
        if ty == GgmlType::F32 {
            shapes.extend([(batch, hd), (hd, batch)]);
        }
        let mut rng = Rng(seed);
        for (rows, cols) in shapes {
            let rows = rows.min(DECODER_ROWS);
            let shape = (rows, cols, batch);
            let bytes = weights(ty, &mut rng, rows, cols, 0);
            let wd = decoded(ty, &bytes);
            let w = Weight::new(ty, rows, cols, &bytes).unwrap();
            let x = activations(&mut rng, batch, cols);
            let mut y = vec![f32::NAN; batch * rows];
            matmul(&w, &x, batch, &mut y);
            let mut y_dots = vec![f32::NAN; batch * rows];
            run(&w, &x, batch, &mut y_dots, dots, true);

            let wmax: Vec<f64> = wd
                .chunks_exact(cols)
                .map(|r| r.iter().fold(0f64, |m, v| m.max(v.abs())))
                .collect();
            let xsum: Vec<f64> = x
                .chunks_exact(cols)
                .map(|r| r.iter().map(|v| v.abs() as f64).sum())
                .collect();
            let terms = gemm_terms(cols) + dots_terms(cols);
            for b in 0..batch {
                for r in 0..rows {
                    let (got, old) = (y[b * rows + r] as f64, y_dots[b * rows + r] as f64);
                    let bound = terms * 2f64.powi(-24) * wmax[r] * xsum[b];
                    assert!(
                        got.is_finite() && (got - old).abs() <= bound,
                        "{ty} {rows}x{cols}x{batch} (r={r}, b={b}): matmul {got} vs dots \
                         {old}, bound {bound}"
                    );
                }
            }
            check_every(
                &format!("{ty} matmul"),
                &wd,
                &x,
                shape,
                &y,
                gemm_terms(cols),
                61,
            );
            check_every(
                &format!("{ty} dots"),
                &wd,
                &x,
                shape,
                &y_dots,
                dots_terms(cols),
                61,
            );
        }
    }

    #[test]
    fn kernels_gemm_f32_decoder_shapes_match_the_dots() {
        decoder_shapes_match_the_dots(GgmlType::F32, 0x6e44_0004);
    }

    #[test]
    fn kernels_gemm_f16_decoder_shapes_match_the_dots() {
        decoder_shapes_match_the_dots(GgmlType::F16, 0x6e44_0005);
    }
}

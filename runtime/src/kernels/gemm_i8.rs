//! Quantized weights × many activation rows in int8, on AVX-512 VNNI (Ice Lake, Sapphire
//! Rapids, Zen 4 on): the decoder's matmuls at Q8_0, Q4_0, Q4_1 and Q4_K. The f32 blocked
//! GEMM (`gemm.rs`) dequantizes these weights and multiplies in f32 at 16 multiply-adds per
//! instruction; `vpdpbusd` does 64, and the weights stay one byte per value.
//!
//! Every 32-value weight block is brought to `w = s · u + o` with `u` in 0..=255 (one
//! unsigned byte per value) and per-block f32 `s`, `o`:
//!
//! | type | `u` | `s` | `o` |
//! |---|---|---|---|
//! | Q8_0 | `q + 128` | `d` | `−128 d` |
//! | Q4_0 | the nibble | `d` | `−8 d` |
//! | Q4_1 | the nibble | `d` | `m` |
//! | Q4_K (sub-block `j`) | the nibble | `d · sc_j` | `−dmin · m_j` |
//!
//! Activations are quantized per row and 32-block to `a ≈ sa · qa` (`qa` in −127..=127,
//! `sa = max|a| / 127`, round half to even; a block with a NaN or infinity gets `sa` = NaN,
//! so its outputs are NaN as in f32), with `sq = sa · Σ qa`. Then per block
//! `Σ a·w ≈ sa · s · Σ qa·u + o · sq`, and each output is the f32 chain, over blocks,
//! `acc = fma(Σ qa·u, s·sa, acc); acc = fma(o, sq, acc)` (the integer sum exact). The only
//! error besides f32 rounding is the activations' 8-bit rounding, as in the integer dots
//! the runtime (and ggml) use below the blocked kernel's batch.
//!
//! Layout: per task, 32 weight rows (two 16-lane vectors of outputs) are packed once for
//! all of `cols`: block `kb` holds 8 groups of 4 columns, each `[32 rows][4 bytes]` (one
//! 128-byte pair of vectors per `vpdpbusd` step), then the rows' `s` and `o`. A tile of
//! [`MB`] activation rows × 32 weight rows keeps 8 integer and 8 float accumulators; per
//! 4 columns it loads 2 weight vectors and broadcasts 4 activation words into 8
//! `vpdpbusd`. Outputs go straight to `y[b · rows + r]`, 16 contiguous floats per store.
//!
//! [`reference`] computes the same operations in scalar code, bit for bit (tested), and
//! the error against the exact product is tested against the activation rounding bound.

use super::Weight;
use crate::quant::q4_0::BlockQ4_0;
use crate::quant::q4_1::BlockQ4_1;
use crate::quant::q4_k::BlockQ4K;
use crate::quant::q8_0::BlockQ8_0;
use crate::quant::{as_blocks, GgmlType};
use std::cell::RefCell;

/// Values per block (of every type served; Q4_K's sub-blocks).
const QK: usize = 32;
/// Weight rows per packed panel: two 16-lane vectors.
const NC: usize = 32;
/// Activation rows per tile.
const MB: usize = 4;
/// Bytes of one block of a packed panel: 8 steps × 32 rows × 4 bytes.
const PANEL_BLOCK: usize = QK * NC;

/// Whether `ty` has a 32-block form `s · u + o` here.
pub(super) fn serves(ty: GgmlType) -> bool {
    matches!(ty, GgmlType::Q8_0 | GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q4_K)
}

/// AVX-512 F/BW/VNNI present and allowed (`EOSTOK_KERNELS` caps at `avx-vnni` or lower
/// turn it off, as they do the f32 GEMM's AVX-512 tile).
pub(super) fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *ON.get_or_init(|| {
            use std::arch::is_x86_feature_detected as has;
            super::cpu::has_avx512() && has!("avx512bw") && has!("avx512vnni")
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Block `kb` of a weight row as `(s, o, u)`.
fn decode_block(ty: GgmlType, row: &[u8], kb: usize) -> (f32, f32, [u8; QK]) {
    let mut u = [0u8; QK];
    let nibbles = |qs: &[u8; 16], u: &mut [u8; QK]| {
        for (j, &q) in qs.iter().enumerate() {
            u[j] = q & 0xF;
            u[j + 16] = q >> 4;
        }
    };
    match ty {
        GgmlType::Q8_0 => {
            let b = &as_blocks::<BlockQ8_0>(row)[kb];
            for (u, &q) in u.iter_mut().zip(&b.qs) {
                *u = (q as u8) ^ 0x80;
            }
            (b.d(), -128.0 * b.d(), u)
        }
        GgmlType::Q4_0 => {
            let b = &as_blocks::<BlockQ4_0>(row)[kb];
            nibbles(&b.qs, &mut u);
            (b.d(), -8.0 * b.d(), u)
        }
        GgmlType::Q4_1 => {
            let b = &as_blocks::<BlockQ4_1>(row)[kb];
            nibbles(&b.qs, &mut u);
            (b.d(), b.m(), u)
        }
        GgmlType::Q4_K => {
            let b = &as_blocks::<BlockQ4K>(row)[kb / 8];
            let j = kb % 8;
            let (sc, m) = b.scale_min(j);
            let q = &b.qs[32 * (j / 2)..32 * (j / 2) + 32];
            for (u, &q) in u.iter_mut().zip(q) {
                *u = if j.is_multiple_of(2) { q & 0xF } else { q >> 4 };
            }
            (b.d() * sc as f32, -(b.dmin() * m as f32), u)
        }
        _ => unreachable!("gemm_i8 serves Q8_0, Q4_0, Q4_1, Q4_K"),
    }
}

/// Activation rows quantized per 32-block.
struct QuantActs {
    q: Vec<i8>,
    sa: Vec<f32>,
    sq: Vec<f32>,
}

/// One activation row: `q` = round-half-even(`x / sa`), `sa[kb]`, `sq[kb]` (module docs).
fn quantize_row_scalar(x: &[f32], q: &mut [i8], sa: &mut [f32], sq: &mut [f32]) {
    for (kb, (xb, qb)) in x.chunks_exact(QK).zip(q.chunks_exact_mut(QK)).enumerate() {
        let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
        let inv = if amax > 0.0 { 127.0 / amax } else { 0.0 };
        let mut sum = 0i32;
        for (q, &v) in qb.iter_mut().zip(xb) {
            *q = ((v * inv).round_ties_even() as i32).clamp(-128, 127) as i8;
            sum += *q as i32;
        }
        let finite = xb.iter().all(|v| v.is_finite());
        let s = if finite { amax / 127.0 } else { f32::NAN };
        sa[kb] = s;
        sq[kb] = s * sum as f32;
    }
}

/// The same in AVX-512, bit for bit (the rounding is the default MXCSR's, half to even).
///
/// # Safety
/// AVX-512 F is present; lengths as [`quantize_row_scalar`] (`x.len()` a multiple of 32).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn quantize_row_avx512(x: &[f32], q: &mut [i8], sa: &mut [f32], sq: &mut [f32]) {
    use std::arch::x86_64::*;
    for kb in 0..x.len() / QK {
        let p = x.as_ptr().add(kb * QK);
        let (v0, v1) = (_mm512_loadu_ps(p), _mm512_loadu_ps(p.add(16)));
        let amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1)));
        // x · 0 is NaN exactly for NaN and ±inf.
        let z = _mm512_setzero_ps();
        let bad = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(_mm512_mul_ps(v0, z), _mm512_mul_ps(v1, z));
        let inv = _mm512_set1_ps(if amax > 0.0 { 127.0 / amax } else { 0.0 });
        let q0 = _mm512_cvtps_epi32(_mm512_mul_ps(v0, inv));
        let q1 = _mm512_cvtps_epi32(_mm512_mul_ps(v1, inv));
        let out = q.as_mut_ptr().add(kb * QK);
        _mm_storeu_si128(out.cast(), _mm512_cvtsepi32_epi8(q0));
        _mm_storeu_si128(out.add(16).cast(), _mm512_cvtsepi32_epi8(q1));
        // The sum of the stored (saturated) values, as the scalar code sums them.
        let sum = _mm512_reduce_add_epi32(_mm512_add_epi32(
            _mm512_cvtepi8_epi32(_mm512_cvtsepi32_epi8(q0)),
            _mm512_cvtepi8_epi32(_mm512_cvtsepi32_epi8(q1)),
        ));
        let s = if bad == 0 { amax / 127.0 } else { f32::NAN };
        sa[kb] = s;
        sq[kb] = s * sum as f32;
    }
}

thread_local! {
    static ACTS: RefCell<Option<QuantActs>> = const { RefCell::new(None) };
    /// The calling thread's packed panel: bytes, then `s`, `o`.
    static PANEL: RefCell<(Vec<u8>, Vec<f32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new(), Vec::new())) };
}

#[derive(Clone, Copy)]
struct SendPtr<T>(*mut T);
// SAFETY: used for disjoint writes by the tasks of one call (see the uses).
unsafe impl<T> Send for SendPtr<T> {}
unsafe impl<T> Sync for SendPtr<T> {}
impl<T> SendPtr<T> {
    fn get(self) -> *mut T {
        self.0
    }
}

/// Quantizes `x` (`[batch, cols]`), rows split over the matmul threads when `parallel`.
fn quantize_acts(x: &[f32], batch: usize, cols: usize, simd: bool, parallel: bool) -> QuantActs {
    let nblk = cols / QK;
    let mut a = ACTS.with(|c| c.borrow_mut().take()).unwrap_or(QuantActs { q: Vec::new(), sa: Vec::new(), sq: Vec::new() });
    a.q.resize(batch * cols, 0);
    a.sa.resize(batch * nblk, 0.0);
    a.sq.resize(batch * nblk, 0.0);
    let (q, sa, sq) = (SendPtr(a.q.as_mut_ptr()), SendPtr(a.sa.as_mut_ptr()), SendPtr(a.sq.as_mut_ptr()));
    let rows_per_task = 8;
    let task = |t: usize| {
        for b in t * rows_per_task..((t + 1) * rows_per_task).min(batch) {
            // SAFETY: task t owns rows t·8.. of each buffer, sized above.
            let (q, sa, sq) = unsafe {
                (
                    std::slice::from_raw_parts_mut(q.get().add(b * cols), cols),
                    std::slice::from_raw_parts_mut(sa.get().add(b * nblk), nblk),
                    std::slice::from_raw_parts_mut(sq.get().add(b * nblk), nblk),
                )
            };
            let xr = &x[b * cols..(b + 1) * cols];
            #[cfg(target_arch = "x86_64")]
            if simd {
                // SAFETY: `simd` only when `available()` (AVX-512 F/BW).
                unsafe { quantize_row_avx512(xr, q, sa, sq) };
                continue;
            }
            let _ = simd;
            quantize_row_scalar(xr, q, sa, sq);
        }
    };
    let tasks = batch.div_ceil(rows_per_task);
    if parallel {
        super::parallel_for(tasks, &task);
    } else {
        (0..tasks).for_each(task);
    }
    a
}

/// Packs weight rows `r0..r0 + 32` (zeros past `w.rows`) into `u`, `s`, `o`.
fn pack_panel(w: &Weight, r0: usize, u: &mut Vec<u8>, s: &mut Vec<f32>, o: &mut Vec<f32>) {
    let nblk = w.cols / QK;
    u.clear();
    u.resize(nblk * PANEL_BLOCK, 0);
    s.clear();
    s.resize(nblk * NC, 0.0);
    o.clear();
    o.resize(nblk * NC, 0.0);
    for c in 0..NC.min(w.rows - r0) {
        let row = w.row(r0 + c);
        for kb in 0..nblk {
            let (sb, ob, ub) = decode_block(w.ty, row, kb);
            s[kb * NC + c] = sb;
            o[kb * NC + c] = ob;
            let dst = &mut u[kb * PANEL_BLOCK..];
            for t in 0..QK / 4 {
                dst[t * NC * 4 + c * 4..][..4].copy_from_slice(&ub[4 * t..4 * t + 4]);
            }
        }
    }
}

/// `y = W · x` (as `kernels::matmul`) through the AVX-512 VNNI kernel. Callers check
/// [`available`], [`serves`] and the lengths.
pub(super) fn matmul(w: &Weight, x: &[f32], batch: usize, y: &mut [f32], parallel: bool) {
    assert!(available() && serves(w.ty) && w.cols.is_multiple_of(QK));
    assert_eq!((x.len(), y.len()), (batch * w.cols, batch * w.rows), "gemm_i8: lengths");
    let acts = quantize_acts(x, batch, w.cols, true, parallel);
    let (rows, nblk) = (w.rows, w.cols / QK);
    let yp = SendPtr(y.as_mut_ptr());
    let task = |g: usize| {
        PANEL.with(|p| {
            let (u, s, o) = &mut *p.borrow_mut();
            pack_panel(w, g * NC, u, s, o);
            let ncols = NC.min(rows - g * NC);
            for b0 in (0..batch).step_by(MB) {
                let mb = MB.min(batch - b0);
                let args = TileArgs {
                    nblk,
                    u: u.as_ptr(),
                    s: s.as_ptr(),
                    o: o.as_ptr(),
                    qa: acts.q[b0 * w.cols..].as_ptr(),
                    qa_stride: w.cols,
                    sa: acts.sa[b0 * nblk..].as_ptr(),
                    sq: acts.sq[b0 * nblk..].as_ptr(),
                    // SAFETY (of the writes): group g writes columns g·32.. of rows b0..b0 + mb
                    // of y, disjoint from every other task's; in bounds by `ncols`, `mb`.
                    y: unsafe { yp.get().add(b0 * rows + g * NC) },
                    y_stride: rows,
                    ncols,
                };
                #[cfg(target_arch = "x86_64")]
                // SAFETY: `available()` asserted; the panel holds nblk blocks, the activation
                // buffers mb rows of cols / nblk entries from b0.
                unsafe {
                    match mb {
                        4 => avx512::tile::<4>(&args),
                        3 => avx512::tile::<3>(&args),
                        2 => avx512::tile::<2>(&args),
                        _ => avx512::tile::<1>(&args),
                    }
                }
                #[cfg(not(target_arch = "x86_64"))]
                let _ = (args, mb);
            }
        })
    };
    let groups = rows.div_ceil(NC);
    if parallel {
        super::parallel_for(groups, &task);
    } else {
        (0..groups).for_each(task);
    }
    ACTS.with(|c| *c.borrow_mut() = Some(acts));
}

/// One tile's operands (pointers into the packed panel, the quantized activations from
/// the tile's first row, and `y` at the tile's first output).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
struct TileArgs {
    nblk: usize,
    u: *const u8,
    s: *const f32,
    o: *const f32,
    qa: *const i8,
    qa_stride: usize,
    sa: *const f32,
    sq: *const f32,
    y: *mut f32,
    y_stride: usize,
    ncols: usize,
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{TileArgs, NC, PANEL_BLOCK, QK};
    use std::arch::x86_64::*;

    /// `M` activation rows × 32 weight rows over every block.
    ///
    /// # Safety
    /// AVX-512 F/BW/VNNI present; `a` points at `nblk` packed blocks, `M` activation rows of
    /// `qa_stride` quants and `nblk` scales each, and `M` rows of `y` with `ncols` writable
    /// values each.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) unsafe fn tile<const M: usize>(a: &TileArgs) {
        let mut facc = [[_mm512_setzero_ps(); 2]; M];
        for kb in 0..a.nblk {
            let mut iacc = [[_mm512_setzero_si512(); 2]; M];
            let ub = a.u.add(kb * PANEL_BLOCK);
            for t in 0..QK / 4 {
                let w0 = _mm512_loadu_si512(ub.add(t * NC * 4).cast());
                let w1 = _mm512_loadu_si512(ub.add(t * NC * 4 + 64).cast());
                for i in 0..M {
                    let q = a.qa.add(i * a.qa_stride + kb * QK + 4 * t).cast::<i32>().read_unaligned();
                    let q = _mm512_set1_epi32(q);
                    iacc[i][0] = _mm512_dpbusd_epi32(iacc[i][0], w0, q);
                    iacc[i][1] = _mm512_dpbusd_epi32(iacc[i][1], w1, q);
                }
            }
            let (s0, s1) = (_mm512_loadu_ps(a.s.add(kb * NC)), _mm512_loadu_ps(a.s.add(kb * NC + 16)));
            let (o0, o1) = (_mm512_loadu_ps(a.o.add(kb * NC)), _mm512_loadu_ps(a.o.add(kb * NC + 16)));
            for i in 0..M {
                let sa = _mm512_set1_ps(*a.sa.add(i * a.nblk + kb));
                let sq = _mm512_set1_ps(*a.sq.add(i * a.nblk + kb));
                let f0 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(iacc[i][0]), _mm512_mul_ps(s0, sa), facc[i][0]);
                let f1 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(iacc[i][1]), _mm512_mul_ps(s1, sa), facc[i][1]);
                facc[i][0] = _mm512_fmadd_ps(o0, sq, f0);
                facc[i][1] = _mm512_fmadd_ps(o1, sq, f1);
            }
        }
        for (i, f) in facc.iter().enumerate() {
            let y = a.y.add(i * a.y_stride);
            for (j, &v) in f.iter().enumerate() {
                let n = a.ncols.saturating_sub(16 * j).min(16);
                if n == 16 {
                    _mm512_storeu_ps(y.add(16 * j), v);
                } else if n > 0 {
                    _mm512_mask_storeu_ps(y.add(16 * j), ((1u32 << n) - 1) as u16, v);
                }
            }
        }
    }
}

/// The scalar reference of [`matmul`], bit for bit: same quantization, same per-block
/// `fma`s in the same order.
pub fn reference(w: &Weight, x: &[f32], batch: usize, y: &mut [f32]) {
    assert!(serves(w.ty) && w.cols.is_multiple_of(QK));
    assert_eq!((x.len(), y.len()), (batch * w.cols, batch * w.rows), "gemm_i8: lengths");
    let acts = quantize_acts(x, batch, w.cols, false, false);
    let nblk = w.cols / QK;
    for r in 0..w.rows {
        let blocks: Vec<(f32, f32, [u8; QK])> = (0..nblk).map(|kb| decode_block(w.ty, w.row(r), kb)).collect();
        for b in 0..batch {
            let mut acc = 0f32;
            for (kb, (s, o, u)) in blocks.iter().enumerate() {
                let qa = &acts.q[b * w.cols + kb * QK..][..QK];
                let dot: i32 = qa.iter().zip(u).map(|(&q, &u)| q as i32 * u as i32).sum();
                let (sa, sq) = (acts.sa[b * nblk + kb], acts.sq[b * nblk + kb]);
                acc = (dot as f32).mul_add(s * sa, acc);
                acc = o.mul_add(sq, acc);
            }
            y[b * w.rows + r] = acc;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_rng::Rng;
    use super::*;
    use crate::quant::{dequantize_row, quantize_row};

    const TYPES: [GgmlType; 4] = [GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q4_K];

    fn weights(rng: &mut Rng, ty: GgmlType, rows: usize, cols: usize) -> Vec<u8> {
        let f: Vec<f32> = (0..rows * cols).map(|_| rng.uniform()).collect();
        let row_bytes = cols / ty.block_size() * ty.type_size();
        let mut data = vec![0u8; rows * row_bytes];
        for (src, dst) in f.chunks_exact(cols).zip(data.chunks_exact_mut(row_bytes)) {
            quantize_row(ty, src, dst).unwrap();
        }
        data
    }

    fn same(a: f32, b: f32) -> bool {
        a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
    }

    #[test]
    fn decode_block_matches_the_dequantizer() {
        let mut rng = Rng(3);
        for ty in TYPES {
            let cols = 512;
            let data = weights(&mut rng, ty, 1, cols);
            let mut want = vec![0f32; cols];
            dequantize_row(ty, &data, &mut want).unwrap();
            for kb in 0..cols / QK {
                let (s, o, u) = decode_block(ty, &data, kb);
                for (j, &u) in u.iter().enumerate() {
                    let got = s * u as f32 + o;
                    let w = want[kb * QK + j];
                    assert!((got - w).abs() <= 1e-6 * (1.0 + w.abs()), "{ty:?} block {kb} value {j}: {got} vs {w}");
                }
            }
        }
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn simd_quantizer_matches_the_scalar_bits() {
        if !available() {
            eprintln!("skipped: no AVX-512 VNNI here");
            return;
        }
        let mut rng = Rng(5);
        let cols = 256;
        let mut x: Vec<f32> = (0..cols).map(|_| rng.uniform() * 3.0).collect();
        x[40] = f32::NAN;
        x[100] = f32::INFINITY;
        x[64..96].fill(0.0);
        x[200] = 0.5 / 127.0 * 3.0; // lands on a rounding tie in its block after scaling, often
        let nblk = cols / QK;
        let (mut q1, mut q2) = (vec![0i8; cols], vec![0i8; cols]);
        let (mut a1, mut a2, mut s1, mut s2) = (vec![0f32; nblk], vec![0f32; nblk], vec![0f32; nblk], vec![0f32; nblk]);
        quantize_row_scalar(&x, &mut q1, &mut a1, &mut s1);
        // SAFETY: `available()` checked AVX-512 F/BW.
        unsafe { quantize_row_avx512(&x, &mut q2, &mut a2, &mut s2) };
        for kb in 0..nblk {
            assert!(same(a1[kb], a2[kb]) && same(s1[kb], s2[kb]), "block {kb}");
            if a1[kb].is_finite() {
                assert_eq!(q1[kb * QK..][..QK], q2[kb * QK..][..QK], "block {kb}");
            }
        }
        assert!(a1[1].is_nan() && a1[3].is_nan(), "non-finite blocks get sa = NaN");
        assert_eq!(a1[2], 0.0);
    }

    #[test]
    fn simd_matches_the_reference_bits_on_ragged_shapes() {
        if !available() {
            eprintln!("skipped: no AVX-512 VNNI here");
            return;
        }
        let mut rng = Rng(7);
        for ty in TYPES {
            for &(rows, cols, batch) in &[(32, 256, 12), (40, 256, 13), (96, 512, 17), (7, 256, 14), (64, 768, 30)] {
                let data = weights(&mut rng, ty, rows, cols);
                let w = Weight::new(ty, rows, cols, &data).unwrap();
                let x: Vec<f32> = (0..batch * cols).map(|_| rng.uniform()).collect();
                let (mut y1, mut y2) = (vec![f32::NAN; batch * rows], vec![f32::NAN; batch * rows]);
                reference(&w, &x, batch, &mut y1);
                matmul(&w, &x, batch, &mut y2, true);
                for (i, (a, b)) in y1.iter().zip(&y2).enumerate() {
                    assert!(same(*a, *b), "{ty:?} {rows}×{cols}×{batch} at {i}: {a} vs {b}");
                }
            }
        }
    }

    #[test]
    fn reference_error_is_the_activation_rounding() {
        let mut rng = Rng(11);
        for ty in TYPES {
            let (rows, cols, batch) = (24, 512, 5);
            let data = weights(&mut rng, ty, rows, cols);
            let w = Weight::new(ty, rows, cols, &data).unwrap();
            let x: Vec<f32> = (0..batch * cols).map(|_| rng.uniform() * 2.0).collect();
            let mut y = vec![0f32; batch * rows];
            reference(&w, &x, batch, &mut y);
            let mut wf = vec![0f32; cols];
            for r in 0..rows {
                dequantize_row(ty, w.row(r), &mut wf).unwrap();
                for b in 0..batch {
                    let xr = &x[b * cols..(b + 1) * cols];
                    let exact: f64 = wf.iter().zip(xr).map(|(&w, &x)| w as f64 * x as f64).sum();
                    // |a − sa·qa| ≤ sa / 2 per value; plus f32 rounding of the chain.
                    let mut bound = 0f64;
                    let mut mag = 0f64;
                    for (wb, xb) in wf.chunks_exact(QK).zip(xr.chunks_exact(QK)) {
                        let sa = xb.iter().fold(0f32, |m, v| m.max(v.abs())) as f64 / 127.0;
                        bound += wb.iter().map(|w| w.abs() as f64).sum::<f64>() * sa / 2.0;
                        mag += wb.iter().zip(xb).map(|(w, x)| (w * x).abs() as f64).sum::<f64>();
                    }
                    let err = (y[b * rows + r] as f64 - exact).abs();
                    assert!(err <= bound * 1.01 + 1e-5 * mag + 1e-6, "{ty:?} r{r} b{b}: error {err} > bound {bound}");
                    // And the bound is not vacuous: well under the product's magnitude.
                    assert!(bound < 0.05 * mag.max(1e-3) + 1e-3, "{ty:?}: bound {bound} vs magnitude {mag}");
                }
            }
        }
    }

    #[test]
    fn a_non_finite_activation_poisons_only_its_row() {
        let mut rng = Rng(13);
        let (rows, cols, batch) = (8, 64, 3);
        let data = weights(&mut rng, GgmlType::Q8_0, rows, cols);
        let w = Weight::new(GgmlType::Q8_0, rows, cols, &data).unwrap();
        let mut x: Vec<f32> = (0..batch * cols).map(|_| rng.uniform()).collect();
        x[cols + 5] = f32::INFINITY;
        let mut y = vec![0f32; batch * rows];
        reference(&w, &x, batch, &mut y);
        assert!(y[rows..2 * rows].iter().all(|v| v.is_nan()));
        assert!(y[..rows].iter().chain(&y[2 * rows..]).all(|v| v.is_finite()));
    }
}

//! Activations for one matmul call: the f32 rows as given, or each row quantized once to the
//! weight type's `vec_dot_type`, plus per-block f32 side arrays so the SIMD kernels do not
//! re-decode f16 scales for every weight row.

use super::gemm::{self, Lanes};
use super::Kernel;
use crate::quant::q8_0::BlockQ8_0;
use crate::quant::q8_1::BlockQ8_1;
use crate::quant::q8_k::BlockQ8K;
use crate::quant::{self, as_blocks, GgmlType, QuantError};
use rayon::prelude::*;
use std::ops::Range;

/// The 32 quants of a Q8_0/Q8_1 block on their own, 32-byte aligned, so the block-32
/// SIMD kernels use aligned loads and one stride for both activation types.
#[derive(Clone, Copy)]
#[repr(C, align(32))]
pub(crate) struct Qs32(pub [i8; 32]);

/// Quantized activation rows and per-block side arrays, owned for one matmul call.
pub(crate) struct ActBuf {
    q: Vec<u8>,
    qs: Vec<Qs32>,
    d: Vec<f32>,
    s: Vec<f32>,
    bias: Vec<[i32; 8]>,
    xp: Vec<Lanes>,
    row_bytes: usize,
    nblk: usize,
}

impl ActBuf {
    /// Quantizes `x` (`[batch, cols]`) for weights of type `ty` (F32/F16: nothing, or with
    /// `pack` the panels of the matrix × matrix kernel, see [`gemm::pack_acts`]).
    /// A SIMD `kernel` gets the SIMD quantizer (bit-identical output) and the side arrays.
    pub fn prepare(
        ty: GgmlType,
        x: &[f32],
        batch: usize,
        cols: usize,
        kernel: &Kernel,
        pack: bool,
        parallel: bool,
    ) -> ActBuf {
        let fast = kernel.fast_quantizer;
        let mut buf = ActBuf {
            q: Vec::new(),
            qs: Vec::new(),
            d: Vec::new(),
            s: Vec::new(),
            bias: Vec::new(),
            xp: Vec::new(),
            row_bytes: 0,
            nblk: 0,
        };
        if pack {
            buf.xp = gemm::pack_acts(x, batch, cols, parallel);
        }
        let act_ty = match ty.vec_dot_type() {
            Some(t @ (GgmlType::Q8_0 | GgmlType::Q8_1 | GgmlType::Q8_K)) => t,
            _ => return buf,
        };
        // Whole blocks: `Weight::new` checked cols against the weight block, and every
        // vec_dot_type has the same block size as its weight type.
        let row_bytes = act_ty
            .row_size(cols)
            .expect("activation row of whole blocks");
        buf.row_bytes = row_bytes;
        buf.nblk = cols / act_ty.block_size();
        buf.q = vec![0u8; batch * row_bytes];
        let row = |(b, qrow): (usize, &mut [u8])| {
            let xr = &x[b * cols..(b + 1) * cols];
            if fast {
                quantize_row_fast(act_ty, xr, qrow);
            } else {
                reference_quantize(act_ty, xr, qrow);
            }
        };
        if row_bytes == 0 {
            return buf;
        }
        if parallel && batch >= 4 {
            buf.q.par_chunks_mut(row_bytes).enumerate().for_each(row);
        } else {
            buf.q.chunks_mut(row_bytes).enumerate().for_each(row);
        }
        if fast {
            buf.side_arrays(act_ty, kernel.bias);
        }
        buf
    }

    /// The view the kernels read.
    pub fn acts<'a>(&'a self, x: &'a [f32], batch: usize, cols: usize) -> Acts<'a> {
        Acts {
            batch,
            x,
            q: &self.q,
            row_bytes: self.row_bytes,
            d: &self.d,
            s: &self.s,
            qs: &self.qs,
            bias: &self.bias,
            xp: &self.xp,
            nblk: self.nblk,
            cols,
        }
    }
}

impl Drop for ActBuf {
    fn drop(&mut self) {
        gemm::recycle(std::mem::take(&mut self.xp));
    }
}

/// Activations prepared for a weight type; [`Acts::tile`] views a range of rows.
#[derive(Clone, Copy)]
pub(crate) struct Acts<'a> {
    pub batch: usize,
    /// `[batch, cols]` f32 rows.
    pub x: &'a [f32],
    /// `[batch, row_bytes]` blocks of the weight type's `vec_dot_type` (empty for F32/F16).
    pub q: &'a [u8],
    pub row_bytes: usize,
    /// Per activation block: its scale as f32 (SIMD kernels only).
    pub d: &'a [f32],
    /// Per Q8_1 activation block: its `s` field (`d · Σq`) as f32.
    pub s: &'a [f32],
    /// Per Q8_0/Q8_1 block: its quants, aligned.
    pub qs: &'a [Qs32],
    /// Per Q8_0 block, for kernels that use their weights unsigned (Q4_0 nibbles, Q8_0 + 128
    /// with VNNI): lane `l` holds `-c_l · Σ` of quants `4l .. 4l + 4`, the group the u8×i8
    /// dot sums into lane `l`. Starting the dot from it turns `Σ q·y` into `Σ (q - c)·y`
    /// with no extra instruction (VNNI) or one add, instead of ggml's subtract and sign ops.
    pub bias: &'a [[i32; 8]],
    /// F32/F16 with the matrix × matrix kernel: the rows packed into panels of
    /// [`gemm::NR`] lanes (`gemm::pack_acts`); empty otherwise.
    pub xp: &'a [Lanes],
    pub nblk: usize,
    pub cols: usize,
}

impl<'a> Acts<'a> {
    /// Quantized row `b`.
    pub fn q_row(&self, b: usize) -> &'a [u8] {
        &self.q[b * self.row_bytes..(b + 1) * self.row_bytes]
    }

    /// f32 row `b`.
    pub fn x_row(&self, b: usize) -> &'a [f32] {
        &self.x[b * self.cols..(b + 1) * self.cols]
    }

    /// Scales of row `b`'s blocks.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub fn d_row(&self, b: usize) -> &'a [f32] {
        &self.d[b * self.nblk..(b + 1) * self.nblk]
    }

    /// `s` values of row `b`'s blocks.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub fn s_row(&self, b: usize) -> &'a [f32] {
        &self.s[b * self.nblk..(b + 1) * self.nblk]
    }

    /// Aligned quants of row `b`'s blocks.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub fn qs_row(&self, b: usize) -> &'a [Qs32] {
        &self.qs[b * self.nblk..(b + 1) * self.nblk]
    }

    /// Bias lanes of row `b`'s blocks.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub fn bias_row(&self, b: usize) -> &'a [[i32; 8]] {
        &self.bias[b * self.nblk..(b + 1) * self.nblk]
    }

    /// A view of activation rows `rows`.
    pub fn tile(&self, rows: Range<usize>) -> Acts<'a> {
        fn part<'v, T>(v: &'v [T], rows: &Range<usize>, per_row: usize) -> &'v [T] {
            if v.is_empty() {
                v
            } else {
                &v[rows.start * per_row..rows.end * per_row]
            }
        }
        // The packed panels cover the whole batch: the kernel that reads them is never tiled.
        assert!(
            self.xp.is_empty() || rows == (0..self.batch),
            "Acts::tile: packed activations"
        );
        Acts {
            batch: rows.len(),
            x: part(self.x, &rows, self.cols),
            q: part(self.q, &rows, self.row_bytes),
            d: part(self.d, &rows, self.nblk),
            s: part(self.s, &rows, self.nblk),
            qs: part(self.qs, &rows, self.nblk),
            bias: part(self.bias, &rows, self.nblk),
            ..*self
        }
    }
}

fn reference_quantize(ty: GgmlType, x: &[f32], out: &mut [u8]) {
    if let Err(e) = quant::quantize_row(ty, x, out) {
        unreachable!("activation buffer sized for {ty}: {e}");
    }
}

impl ActBuf {
    /// Fills the per-block side arrays from the quantized rows.
    fn side_arrays(&mut self, ty: GgmlType, bias: Option<[i32; 8]>) {
        match ty {
            GgmlType::Q8_0 => {
                let blocks = as_blocks::<BlockQ8_0>(&self.q);
                self.d = blocks.iter().map(BlockQ8_0::d).collect();
                self.qs = blocks.iter().map(|b| Qs32(b.qs)).collect();
                if let Some(c) = bias {
                    self.bias = blocks.iter().map(|b| bias_lanes(&b.qs, c)).collect();
                }
            }
            GgmlType::Q8_1 => {
                let blocks = as_blocks::<BlockQ8_1>(&self.q);
                self.d = blocks.iter().map(BlockQ8_1::d).collect();
                self.s = blocks.iter().map(BlockQ8_1::s).collect();
                self.qs = blocks.iter().map(|b| Qs32(b.qs)).collect();
            }
            GgmlType::Q8_K => {
                self.d = as_blocks::<BlockQ8K>(&self.q)
                    .iter()
                    .map(BlockQ8K::d)
                    .collect();
            }
            _ => unreachable!("{ty} is not an activation type"),
        }
    }
}

fn bias_lanes(qs: &[i8; 32], c: [i32; 8]) -> [i32; 8] {
    let mut out = [0i32; 8];
    for ((o, g), c) in out.iter_mut().zip(qs.chunks_exact(4)).zip(c) {
        *o = -c * g.iter().map(|&v| v as i32).sum::<i32>();
    }
    out
}

/// The SIMD quantizer where there is one, else the reference.
fn quantize_row_fast(ty: GgmlType, x: &[f32], out: &mut [u8]) {
    #[cfg(target_arch = "x86_64")]
    if super::cpu::has_avx2() {
        // SAFETY: AVX2, FMA and F16C were detected; lengths match (checked by callers).
        unsafe {
            match ty {
                GgmlType::Q8_0 => return avx2::quantize_q8_0(x, out, false),
                GgmlType::Q8_1 => return avx2::quantize_q8_0(x, out, true),
                GgmlType::Q8_K => return avx2::quantize_q8_k(x, out),
                _ => {}
            }
        }
    }
    #[cfg(target_arch = "aarch64")]
    if super::cpu::has_neon() {
        // SAFETY: Advanced SIMD is baseline on aarch64; lengths match (checked by callers).
        unsafe {
            match ty {
                GgmlType::Q8_0 => return super::neon_act::quantize_q8_0(x, out, false),
                GgmlType::Q8_1 => return super::neon_act::quantize_q8_0(x, out, true),
                GgmlType::Q8_K => return super::neon_act::quantize_q8_k(x, out),
                _ => {}
            }
        }
    }
    reference_quantize(ty, x, out)
}

/// Quantizes one activation row to `ty`, bit-identical to [`quant::quantize_row`] but with
/// SIMD for Q8_0, Q8_1 and Q8_K on AVX2 machines (other types use the reference).
pub fn quantize_activations(ty: GgmlType, x: &[f32], out: &mut [u8]) -> Result<(), QuantError> {
    let expected = ty.row_size(x.len()).ok_or(QuantError::PartialBlock {
        ty,
        n: x.len(),
        block_size: ty.block_size(),
    })?;
    if !ty.is_supported() {
        return Err(QuantError::Unsupported(ty));
    }
    if expected != out.len() {
        return Err(QuantError::ByteLength {
            ty,
            n: x.len(),
            expected,
            found: out.len(),
        });
    }
    match ty {
        GgmlType::Q8_0 | GgmlType::Q8_1 | GgmlType::Q8_K => quantize_row_fast(ty, x, out),
        _ => quant::quantize_row(ty, x, out)?,
    }
    Ok(())
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use crate::quant::q8_k::QK_K;
    use std::arch::x86_64::*;

    /// Horizontal max of 8 lanes.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn hmax(v: __m256) -> f32 {
        let m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
        let m = _mm_max_ss(m, _mm_movehdup_ps(m));
        _mm_cvtss_f32(m)
    }

    /// Whether any of these |values| is NaN or infinite.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn any_nonfinite(abs: &[__m256; 4]) -> bool {
        let inf = _mm256_set1_ps(f32::INFINITY);
        let mut bad = _mm256_setzero_ps();
        for &a in abs {
            // "not less than infinity", true when unordered (NaN) too.
            bad = _mm256_or_ps(bad, _mm256_cmp_ps(a, inf, _CMP_NLT_UQ));
        }
        _mm256_movemask_ps(bad) != 0
    }

    /// `roundf` (half away from zero), as the reference's `f32::round`: `_mm256_round_ps`
    /// only rounds half to even.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn round_away(v: __m256) -> __m256 {
        let t = _mm256_round_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
        let frac = _mm256_sub_ps(v, t); // exact: |v| < 2^23 here
        let sign = _mm256_and_ps(v, _mm256_set1_ps(-0.0));
        let one = _mm256_or_ps(_mm256_set1_ps(1.0), sign);
        let abs_frac = _mm256_andnot_ps(_mm256_set1_ps(-0.0), frac);
        let up = _mm256_cmp_ps(abs_frac, _mm256_set1_ps(0.5), _CMP_GE_OQ);
        _mm256_add_ps(t, _mm256_and_ps(up, one))
    }

    /// Packs 4×8 i32 (values 0..32 in order) into 32 i8 in order, saturating.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn pack32(i: [__m256i; 4]) -> __m256i {
        let a = _mm256_packs_epi32(i[0], i[1]);
        let b = _mm256_packs_epi32(i[2], i[3]);
        let p = _mm256_packs_epi16(a, b);
        // packs interleave the 128-bit lanes: restore element order.
        _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7))
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn f32_to_f16_bits(v: f32) -> [u8; 2] {
        let h = _mm_cvtps_ph(_mm_set_ss(v), _MM_FROUND_TO_NEAREST_INT);
        (_mm_extract_epi16(h, 0) as u16).to_le_bytes()
    }

    /// Q8_0 (or Q8_1 with `with_sum`) blocks of 34 (36) bytes, as `quantize_row_q8_0_ref`:
    /// `d = amax / 127`, `q = roundf(x / d)`.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn quantize_q8_0(x: &[f32], out: &mut [u8], with_sum: bool) {
        let bsize = if with_sum { 36 } else { 34 };
        let abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
        for (xb, ob) in x.chunks_exact(32).zip(out.chunks_exact_mut(bsize)) {
            let p = xb.as_ptr();
            let v = [
                _mm256_loadu_ps(p),
                _mm256_loadu_ps(p.add(8)),
                _mm256_loadu_ps(p.add(16)),
                _mm256_loadu_ps(p.add(24)),
            ];
            let a = v.map(|v| _mm256_and_ps(v, abs_mask));
            if any_nonfinite(&a) {
                // NaN/inf: `max_ps` and the int conversion treat them unlike the reference.
                if with_sum {
                    crate::quant::q8_1::quantize_row(xb, ob);
                } else {
                    crate::quant::q8_0::quantize_row(xb, ob);
                }
                continue;
            }
            let m = _mm256_max_ps(_mm256_max_ps(a[0], a[1]), _mm256_max_ps(a[2], a[3]));
            let amax = hmax(m);
            let d = amax / 127.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            let idv = _mm256_set1_ps(id);
            let q = v.map(|v| _mm256_cvttps_epi32(round_away(_mm256_mul_ps(v, idv))));
            ob[0..2].copy_from_slice(&f32_to_f16_bits(d));
            let qs_off = if with_sum { 4 } else { 2 };
            _mm256_storeu_si256(ob.as_mut_ptr().add(qs_off).cast(), pack32(q));
            if with_sum {
                let s =
                    _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
                let s = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
                let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01_00_11_10));
                let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b10_11_00_01));
                let sum = _mm_cvtsi128_si32(s);
                // ggml multiplies by the f32 `d`, not the rounded f16 one.
                ob[2..4].copy_from_slice(&f32_to_f16_bits(sum as f32 * d));
            }
        }
    }

    /// Q8_K blocks of 292 bytes, as `quantize_row_q8_K_ref`: `iscale = -127 / max` with
    /// `max` the first value of largest magnitude, round half to even.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn quantize_q8_k(x: &[f32], out: &mut [u8]) {
        let abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
        for (xb, ob) in x.chunks_exact(QK_K).zip(out.chunks_exact_mut(292)) {
            let p = xb.as_ptr();
            let mut m = _mm256_setzero_ps();
            let mut bad = false;
            for i in 0..QK_K / 32 {
                let a = [0, 1, 2, 3]
                    .map(|k| _mm256_and_ps(_mm256_loadu_ps(p.add(32 * i + 8 * k)), abs_mask));
                bad |= any_nonfinite(&a);
                m = _mm256_max_ps(
                    m,
                    _mm256_max_ps(_mm256_max_ps(a[0], a[1]), _mm256_max_ps(a[2], a[3])),
                );
            }
            let amax = hmax(m);
            if bad || amax == 0.0 {
                // NaN/inf: handled unlike the reference by `max_ps` and the int conversion.
                // All zeros: the reference's zeroed block.
                crate::quant::q8_k::quantize_row(xb, ob);
                continue;
            }
            let max = xb.iter().copied().find(|v| v.abs() == amax).unwrap_or(amax);
            let iscale = -127.0 / max;
            let is = _mm256_set1_ps(iscale);
            let (d, rest) = ob.split_at_mut(4);
            let (qs, bsums) = rest.split_at_mut(QK_K);
            for j in 0..QK_K / 32 {
                let q = [0, 1, 2, 3].map(|k| {
                    let v = _mm256_mul_ps(is, _mm256_loadu_ps(p.add(32 * j + 8 * k)));
                    _mm256_cvtps_epi32(_mm256_round_ps(
                        v,
                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC,
                    ))
                });
                _mm256_storeu_si256(qs.as_mut_ptr().add(32 * j).cast(), pack32(q));
            }
            for (sum, group) in bsums.chunks_exact_mut(2).zip(qs.chunks_exact(16)) {
                let s: i16 = group.iter().map(|&q| q as i8 as i16).sum();
                sum.copy_from_slice(&s.to_le_bytes());
            }
            d.copy_from_slice(&(1.0 / iscale).to_le_bytes());
        }
    }
}

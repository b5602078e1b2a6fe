//! Q6_K: 256 values per 210-byte super-block of 16 sub-blocks of 16, each with a signed 8-bit
//! scale: `x = d * scales[s] * (q - 32)`, `q` 6 bits = 4 low bits in `ql` + 2 high bits in `qh`.
//!
//! Per 128-value half, for `l` in 0..32: `ql[l]` holds values `l` (low nibble) and `l + 64`
//! (high nibble), `ql[l + 32]` holds `l + 32` and `l + 96`, and `qh[l]` holds the high bits of
//! `l`, `l + 32`, `l + 64`, `l + 96` in bit pairs 0-1, 2-3, 4-5, 6-7.

use super::block::{
    as_blocks, as_blocks_mut, assert_row, f16_to_f32, f32_to_f16, nearest_int, Block,
};
use super::q8_k::{BlockQ8K, QK_K};
use super::GgmlType;

/// ggml's `GROUP_MAX_EPS`: below this a group counts as all zeros.
const GROUP_MAX_EPS: f32 = 1e-15;

/// `block_q6_K`: low 4 bits, high 2 bits, 16 scales, then the f16 super-scale (last!).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockQ6K {
    pub ql: [u8; QK_K / 2],
    pub qh: [u8; QK_K / 4],
    pub scales: [i8; QK_K / 16],
    pub d: [u8; 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ6K>() == 210);

// SAFETY: repr(C), only byte arrays, 210 bytes without padding.
unsafe impl Block for BlockQ6K {
    const TYPE: GgmlType = GgmlType::Q6_K;
    const ELEMS: usize = QK_K;
}

impl BlockQ6K {
    pub fn d(&self) -> f32 {
        f16_to_f32(self.d)
    }

    /// The 256 signed quants `q - 32` in value order (ggml's `aux8` in the generic dot).
    pub fn quants(&self) -> [i8; QK_K] {
        let mut out = [0i8; QK_K];
        for half in 0..2 {
            let ql = &self.ql[64 * half..64 * half + 64];
            let qh = &self.qh[32 * half..32 * half + 32];
            let out = &mut out[128 * half..128 * half + 128];
            for l in 0..32 {
                out[l] = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i8 - 32;
                out[l + 32] = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i8 - 32;
                out[l + 64] = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i8 - 32;
                out[l + 96] = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i8 - 32;
            }
        }
        out
    }
}

/// Scalar reference of ggml's `quantize_row_q6_K_ref`.
pub fn quantize_row(x: &[f32], out: &mut [u8]) {
    assert_row::<BlockQ6K>(out.len(), x.len());
    for (block, x) in as_blocks_mut::<BlockQ6K>(out)
        .iter_mut()
        .zip(x.chunks_exact(QK_K))
    {
        quantize_block(x, block);
    }
}

fn quantize_block(x: &[f32], y: &mut BlockQ6K) {
    let mut levels = [0i8; QK_K];
    let mut scales = [0f32; QK_K / 16];
    let mut max_scale = 0.0f32;
    let mut max_abs_scale = 0.0f32;
    for (ib, scale) in scales.iter_mut().enumerate() {
        *scale = make_qx_quants_rmse1(
            32,
            &x[16 * ib..16 * ib + 16],
            &mut levels[16 * ib..16 * ib + 16],
        );
        if scale.abs() > max_abs_scale {
            max_abs_scale = scale.abs();
            max_scale = *scale;
        }
    }
    if max_abs_scale < GROUP_MAX_EPS {
        *y = BlockQ6K {
            ql: [0; QK_K / 2],
            qh: [0; QK_K / 4],
            scales: [0; QK_K / 16],
            d: f32_to_f16(0.0),
        };
        return;
    }

    let iscale = -128.0 / max_scale;
    y.d = f32_to_f16(1.0 / iscale);
    for (stored, &scale) in y.scales.iter_mut().zip(&scales) {
        *stored = nearest_int(iscale * scale).min(127) as i8;
    }

    // Requantize against the rounded 8-bit scales actually stored.
    for j in 0..QK_K / 16 {
        let d = y.d() * y.scales[j] as f32;
        if d == 0.0 {
            continue;
        }
        for ii in 0..16 {
            let l = nearest_int(x[16 * j + ii] / d).clamp(-32, 31);
            levels[16 * j + ii] = (l + 32) as i8;
        }
    }

    for half in 0..2 {
        let l6 = &levels[128 * half..128 * half + 128];
        let ql = &mut y.ql[64 * half..64 * half + 64];
        for l in 0..32 {
            ql[l] = (l6[l] as u8 & 0xF) | ((l6[l + 64] as u8 & 0xF) << 4);
            ql[l + 32] = (l6[l + 32] as u8 & 0xF) | ((l6[l + 96] as u8 & 0xF) << 4);
        }
        let qh = &mut y.qh[32 * half..32 * half + 32];
        for l in 0..32 {
            qh[l] = (l6[l] as u8 >> 4)
                | ((l6[l + 32] as u8 >> 4) << 2)
                | ((l6[l + 64] as u8 >> 4) << 4)
                | ((l6[l + 96] as u8 >> 4) << 6);
        }
    }
}

/// ggml's `make_qx_quants` with `rmse_type = 1` and no importance weights: symmetric
/// quantization to `-nmax..nmax` weighted by `x^2`, searching 18 scales around `nmax / max`.
/// Writes `level + nmax` into `levels`, returns the scale.
fn make_qx_quants_rmse1(nmax: i32, x: &[f32], levels: &mut [i8]) -> f32 {
    let mut max = 0.0f32;
    let mut amax = 0.0f32;
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    if amax < GROUP_MAX_EPS {
        levels.fill(0);
        return 0.0;
    }
    let quant = |iscale: f32, v: f32| nearest_int(iscale * v).clamp(-nmax, nmax - 1);
    let mut iscale = -(nmax as f32) / max;
    let (mut sumlx, mut suml2) = (0.0f32, 0.0f32);
    for (level, &v) in levels.iter_mut().zip(x) {
        let l = quant(iscale, v);
        *level = (l + nmax) as i8;
        let w = v * v;
        sumlx += w * v * l as f32;
        suml2 += w * l as f32 * l as f32;
    }
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for is in -9..=9 {
        if is == 0 {
            continue;
        }
        iscale = -(nmax as f32 + 0.1 * is as f32) / max;
        sumlx = 0.0;
        suml2 = 0.0;
        for &v in x {
            let l = quant(iscale, v) as f32;
            let w = v * v;
            sumlx += w * v * l;
            suml2 += w * l * l;
        }
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            for (level, &v) in levels.iter_mut().zip(x) {
                *level = (quant(iscale, v) + nmax) as i8;
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

/// Scalar reference of ggml's `dequantize_row_q6_K`.
pub fn dequantize_row(src: &[u8], y: &mut [f32]) {
    assert_row::<BlockQ6K>(src.len(), y.len());
    for (block, y) in as_blocks::<BlockQ6K>(src)
        .iter()
        .zip(y.chunks_exact_mut(QK_K))
    {
        let d = block.d();
        for (i, (out, &q)) in y.iter_mut().zip(block.quants().iter()).enumerate() {
            *out = d * block.scales[i / 16] as f32 * q as f32;
        }
    }
}

/// Scalar reference of ggml's `ggml_vec_dot_q6_K_q8_K`: a Q6_K weight row · a Q8_K row.
pub fn vec_dot(weights: &[u8], activations: &[u8]) -> f32 {
    let x = as_blocks::<BlockQ6K>(weights);
    let y = as_blocks::<BlockQ8K>(activations);
    assert_eq!(
        x.len(),
        y.len(),
        "vec_dot: weight and activation rows differ in length"
    );
    let mut sum = 0.0f32;
    for (x, y) in x.iter().zip(y) {
        let q = x.quants();
        // Bounded by 256 * 128 * 32 * 128 < 2^31: no overflow even for hostile bytes.
        let mut sumi = 0i32;
        for (s, (q, a)) in q.chunks_exact(16).zip(y.qs.chunks_exact(16)).enumerate() {
            let dot: i32 = q.iter().zip(a).map(|(&q, &a)| q as i32 * a as i32).sum();
            sumi += x.scales[s] as i32 * dot;
        }
        sum += x.d() * y.d() * sumi as f32;
    }
    sum
}

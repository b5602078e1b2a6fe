//! Q4_K: 256 values per 144-byte super-block of 8 sub-blocks of 32. Each sub-block has a 6-bit
//! scale `sc` and a 6-bit min `m`: `x = d * sc * q - dmin * m`, `q` in 0..16.

use super::block::{
    as_blocks, as_blocks_mut, assert_row, f16_to_f32, f32_to_f16, nearest_int, Block,
};
use super::q8_k::{BlockQ8K, QK_K};
use super::GgmlType;

/// Bytes holding the eight 6-bit scales and eight 6-bit mins.
pub const K_SCALE_SIZE: usize = 12;

/// `block_q4_K`: f16 super-scale, f16 super-min, packed scales/mins, then 128 bytes of nibbles.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockQ4K {
    pub d: [u8; 2],
    pub dmin: [u8; 2],
    pub scales: [u8; K_SCALE_SIZE],
    pub qs: [u8; QK_K / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ4K>() == 144);

// SAFETY: repr(C), only byte arrays, 144 bytes without padding.
unsafe impl Block for BlockQ4K {
    const TYPE: GgmlType = GgmlType::Q4_K;
    const ELEMS: usize = QK_K;
}

impl BlockQ4K {
    pub fn d(&self) -> f32 {
        f16_to_f32(self.d)
    }
    pub fn dmin(&self) -> f32 {
        f16_to_f32(self.dmin)
    }
    /// (scale, min) of sub-block `j` (0..8): ggml's `get_scale_min_k4`. Sub-blocks 0..4 keep
    /// their 6 bits in bytes 0..8; sub-blocks 4..8 keep 4 low bits in bytes 8..12 and their 2
    /// high bits in the top of bytes 0..8.
    pub fn scale_min(&self, j: usize) -> (u8, u8) {
        scale_min_k4(j, &self.scales)
    }
}

pub(crate) fn scale_min_k4(j: usize, q: &[u8; K_SCALE_SIZE]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// Scalar reference of ggml's `quantize_row_q4_K_ref`.
pub fn quantize_row(x: &[f32], out: &mut [u8]) {
    assert_row::<BlockQ4K>(out.len(), x.len());
    for (block, x) in as_blocks_mut::<BlockQ4K>(out)
        .iter_mut()
        .zip(x.chunks_exact(QK_K))
    {
        quantize_block(x, block);
    }
}

fn quantize_block(x: &[f32], y: &mut BlockQ4K) {
    let mut levels = [0u8; QK_K];
    let mut scales = [0f32; QK_K / 32];
    let mut mins = [0f32; QK_K / 32];
    let mut max_scale = 0.0f32; // scales are positive: the min is subtracted first
    let mut max_min = 0.0f32;
    for j in 0..QK_K / 32 {
        let xs = &x[32 * j..32 * j + 32];
        let sum_x2: f32 = xs.iter().map(|v| v * v).sum();
        let av_x = (sum_x2 / 32.0).sqrt();
        let mut weights = [0f32; 32];
        for (w, v) in weights.iter_mut().zip(xs) {
            *w = av_x + v.abs();
        }
        let (scale, min) = make_qkx2_quants(
            15,
            xs,
            &weights,
            &mut levels[32 * j..32 * j + 32],
            -1.0,
            0.1,
            20,
        );
        scales[j] = scale;
        mins[j] = min;
        if scale > max_scale {
            max_scale = scale;
        }
        if min > max_min {
            max_min = min;
        }
    }

    let inv_scale = if max_scale > 0.0 {
        63.0 / max_scale
    } else {
        0.0
    };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    y.scales = [0; K_SCALE_SIZE];
    for j in 0..QK_K / 32 {
        // `uint8_t ls = nearest_int(..)` wraps before the MIN, exactly as here.
        let ls = (nearest_int(inv_scale * scales[j]) as u8).min(63);
        let lm = (nearest_int(inv_min * mins[j]) as u8).min(63);
        if j < 4 {
            y.scales[j] = ls;
            y.scales[j + 4] = lm;
        } else {
            y.scales[j + 4] = (ls & 0xF) | ((lm & 0xF) << 4);
            y.scales[j - 4] |= (ls >> 4) << 6;
            y.scales[j] |= (lm >> 4) << 6;
        }
    }
    y.d = f32_to_f16(max_scale / 63.0);
    y.dmin = f32_to_f16(max_min / 63.0);

    // Requantize against the rounded 6-bit scales actually stored.
    for j in 0..QK_K / 32 {
        let (sc, m) = y.scale_min(j);
        let d = y.d() * sc as f32;
        if d == 0.0 {
            continue;
        }
        let dm = y.dmin() * m as f32;
        for ii in 0..32 {
            let l = nearest_int((x[32 * j + ii] + dm) / d);
            levels[32 * j + ii] = l.clamp(0, 15) as u8;
        }
    }

    // Each 64-value chunk: low nibbles = first 32 values, high nibbles = next 32.
    for (chunk, q) in levels.chunks_exact(64).zip(y.qs.chunks_exact_mut(32)) {
        for l in 0..32 {
            q[l] = chunk[l] | (chunk[l + 32] << 4);
        }
    }
}

/// ggml's `make_qkx2_quants` with `use_mad = false`: fit `x ≈ scale * L + min` (min ≤ 0) with
/// `L` in `0..=nmax`, minimising the weighted squared error over a small grid of scales.
/// Returns `(scale, -min)`.
fn make_qkx2_quants(
    nmax: i32,
    x: &[f32],
    weights: &[f32],
    levels: &mut [u8],
    rmin: f32,
    rdelta: f32,
    nstep: i32,
) -> (f32, f32) {
    let n = x.len();
    let mut min = x[0];
    let mut max = x[0];
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..n {
        if x[i] < min {
            min = x[i];
        }
        if x[i] > max {
            max = x[i];
        }
        let w = weights[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        levels.fill(0);
        return (0.0, -min);
    }
    let mut iscale = nmax as f32 / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best_error = 0.0f32;
    for i in 0..n {
        let l = nearest_int(iscale * (x[i] - min));
        levels[i] = l.clamp(0, nmax) as u8;
        let diff = scale * levels[i] as f32 + min - x[i];
        best_error += weights[i] * (diff * diff);
    }
    if nstep < 1 {
        return (scale, -min);
    }
    let mut aux = [0u8; 32];
    let aux = &mut aux[..n];
    for is in 0..=nstep {
        iscale = (rmin + rdelta * is as f32 + nmax as f32) / (max - min);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0.0f32, 0.0f32, 0.0f32);
        for i in 0..n {
            let l = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
            aux[i] = l as u8;
            let w = weights[i];
            let l = l as f32;
            sum_l += w * l;
            sum_l2 += w * l * l;
            sum_xl += w * l * x[i];
        }
        let det = sum_w * sum_l2 - sum_l * sum_l;
        if det > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / det;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut cur_error = 0.0f32;
            for i in 0..n {
                let diff = this_scale * aux[i] as f32 + this_min - x[i];
                cur_error += weights[i] * (diff * diff);
            }
            if cur_error < best_error {
                levels.copy_from_slice(aux);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

/// Scalar reference of ggml's `dequantize_row_q4_K`.
pub fn dequantize_row(src: &[u8], y: &mut [f32]) {
    assert_row::<BlockQ4K>(src.len(), y.len());
    for (block, y) in as_blocks::<BlockQ4K>(src)
        .iter()
        .zip(y.chunks_exact_mut(QK_K))
    {
        let (d, dmin) = (block.d(), block.dmin());
        for (c, (q, y)) in block
            .qs
            .chunks_exact(32)
            .zip(y.chunks_exact_mut(64))
            .enumerate()
        {
            let (sc1, m1) = block.scale_min(2 * c);
            let (sc2, m2) = block.scale_min(2 * c + 1);
            let (d1, m1) = (d * sc1 as f32, dmin * m1 as f32);
            let (d2, m2) = (d * sc2 as f32, dmin * m2 as f32);
            let (lo, hi) = y.split_at_mut(32);
            for ((&q, y0), y1) in q.iter().zip(lo).zip(hi) {
                *y0 = d1 * (q & 0xF) as f32 - m1;
                *y1 = d2 * (q >> 4) as f32 - m2;
            }
        }
    }
}

/// Scalar reference of ggml's `ggml_vec_dot_q4_K_q8_K`: a Q4_K weight row · a Q8_K activation
/// row. `sum(d*sc*q*a) - sum(dmin*m*a)`, the second term from the activation group sums.
pub fn vec_dot(weights: &[u8], activations: &[u8]) -> f32 {
    let x = as_blocks::<BlockQ4K>(weights);
    let y = as_blocks::<BlockQ8K>(activations);
    assert_eq!(
        x.len(),
        y.len(),
        "vec_dot: weight and activation rows differ in length"
    );
    let mut sum = 0.0f32;
    for (x, y) in x.iter().zip(y) {
        // Bounded by 256 * 63 * 15 * 128 < 2^31: no overflow even for hostile bytes.
        let mut sumi = 0i32;
        let mut sum_mins = 0i32;
        for (c, q) in x.qs.chunks_exact(32).enumerate() {
            for half in 0..2 {
                let j = 2 * c + half;
                let (sc, m) = x.scale_min(j);
                let a = &y.qs[32 * j..32 * j + 32];
                let dot: i32 = q
                    .iter()
                    .zip(a)
                    .map(|(&q, &a)| ((q >> (4 * half)) & 0xF) as i32 * a as i32)
                    .sum();
                sumi += sc as i32 * dot;
                sum_mins += m as i32 * (y.bsum(2 * j) as i32 + y.bsum(2 * j + 1) as i32);
            }
        }
        sum += x.d() * y.d() * sumi as f32;
        sum -= x.dmin() * y.d() * sum_mins as f32;
    }
    sum
}

//! Q4_1: 32 values per 20-byte block, `x = q * d + m`, same nibble order as Q4_0.

use super::block::{as_blocks, as_blocks_mut, assert_row, f16_to_f32, f32_to_f16, Block};
use super::q8_1::BlockQ8_1;
use super::GgmlType;

pub const QK4_1: usize = 32;

/// `block_q4_1`: f16 scale, f16 minimum, then 16 bytes of nibbles.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockQ4_1 {
    pub d: [u8; 2],
    pub m: [u8; 2],
    pub qs: [u8; QK4_1 / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ4_1>() == 20);

// SAFETY: repr(C), only byte arrays, 20 bytes without padding.
unsafe impl Block for BlockQ4_1 {
    const TYPE: GgmlType = GgmlType::Q4_1;
    const ELEMS: usize = QK4_1;
}

impl BlockQ4_1 {
    pub fn d(&self) -> f32 {
        f16_to_f32(self.d)
    }
    pub fn m(&self) -> f32 {
        f16_to_f32(self.m)
    }
}

/// Scalar reference of ggml's `quantize_row_q4_1_ref`: `d = (max - min) / 15`, `m = min`.
pub fn quantize_row(x: &[f32], out: &mut [u8]) {
    assert_row::<BlockQ4_1>(out.len(), x.len());
    for (block, x) in as_blocks_mut::<BlockQ4_1>(out)
        .iter_mut()
        .zip(x.chunks_exact(QK4_1))
    {
        let mut min = f32::MAX;
        let mut max = -f32::MAX;
        for &v in x {
            if v < min {
                min = v;
            }
            if v > max {
                max = v;
            }
        }
        let d = (max - min) / 15.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        block.d = f32_to_f16(d);
        block.m = f32_to_f16(min);
        let (lo, hi) = x.split_at(QK4_1 / 2);
        let nibble = |v: f32| (((v - min) * id + 0.5) as i8).min(15) as u8;
        for ((q, &x0), &x1) in block.qs.iter_mut().zip(lo).zip(hi) {
            *q = nibble(x0) | (nibble(x1) << 4);
        }
    }
}

/// Scalar reference of ggml's `dequantize_row_q4_1`.
pub fn dequantize_row(src: &[u8], y: &mut [f32]) {
    assert_row::<BlockQ4_1>(src.len(), y.len());
    for (block, y) in as_blocks::<BlockQ4_1>(src)
        .iter()
        .zip(y.chunks_exact_mut(QK4_1))
    {
        let (d, m) = (block.d(), block.m());
        let (lo, hi) = y.split_at_mut(QK4_1 / 2);
        for ((&q, y0), y1) in block.qs.iter().zip(lo).zip(hi) {
            *y0 = (q & 0x0F) as f32 * d + m;
            *y1 = (q >> 4) as f32 * d + m;
        }
    }
}

/// Scalar reference of ggml's `ggml_vec_dot_q4_1_q8_1`: a Q4_1 weight row · a Q8_1 activation
/// row. The `m` term uses the activation block's precomputed `s = d_y * sum(q_y)`.
pub fn vec_dot(weights: &[u8], activations: &[u8]) -> f32 {
    let x = as_blocks::<BlockQ4_1>(weights);
    let y = as_blocks::<BlockQ8_1>(activations);
    assert_eq!(
        x.len(),
        y.len(),
        "vec_dot: weight and activation rows differ in length"
    );
    let mut sum = 0.0f32;
    for (x, y) in x.iter().zip(y) {
        let (y_lo, y_hi) = y.qs.split_at(QK4_1 / 2);
        let mut sumi = 0i32;
        for ((&q, &a), &b) in x.qs.iter().zip(y_lo).zip(y_hi) {
            sumi += (q & 0x0F) as i32 * a as i32 + (q >> 4) as i32 * b as i32;
        }
        sum += (x.d() * y.d()) * sumi as f32 + x.m() * y.s();
    }
    sum
}

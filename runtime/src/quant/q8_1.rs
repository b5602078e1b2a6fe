//! Q8_1: 32 values per 36-byte block, `x = qs[i] * d`, plus `s = d * sum(qs)`. Only used as
//! the activation format for Q4_1 rows: `s` folds Q4_1's `+ m` term into one multiply.

use super::block::{as_blocks, as_blocks_mut, assert_row, f16_to_f32, f32_to_f16, Block};
use super::GgmlType;

pub const QK8_1: usize = 32;

/// `block_q8_1`: f16 scale, f16 `d * sum(qs)`, then 32 signed 8-bit quants.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockQ8_1 {
    pub d: [u8; 2],
    pub s: [u8; 2],
    pub qs: [i8; QK8_1],
}
const _: () = assert!(std::mem::size_of::<BlockQ8_1>() == 36);

// SAFETY: repr(C), only byte arrays, 36 bytes without padding.
unsafe impl Block for BlockQ8_1 {
    const TYPE: GgmlType = GgmlType::Q8_1;
    const ELEMS: usize = QK8_1;
}

impl BlockQ8_1 {
    pub fn d(&self) -> f32 {
        f16_to_f32(self.d)
    }
    pub fn s(&self) -> f32 {
        f16_to_f32(self.s)
    }
}

/// Scalar reference of ggml's `quantize_row_q8_1_ref`.
pub fn quantize_row(x: &[f32], out: &mut [u8]) {
    assert_row::<BlockQ8_1>(out.len(), x.len());
    for (block, x) in as_blocks_mut::<BlockQ8_1>(out)
        .iter_mut()
        .zip(x.chunks_exact(QK8_1))
    {
        let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        block.d = f32_to_f16(d);
        let mut sum = 0i32;
        for (q, &v) in block.qs.iter_mut().zip(x) {
            *q = (v * id).round() as i8;
            sum += *q as i32;
        }
        // ggml multiplies by the f32 `d`, not the rounded f16 one.
        block.s = f32_to_f16(sum as f32 * d);
    }
}

/// Dequantizes a Q8_1 row (`x = qs[i] * d`; `s` is redundant).
pub fn dequantize_row(src: &[u8], y: &mut [f32]) {
    assert_row::<BlockQ8_1>(src.len(), y.len());
    for (block, y) in as_blocks::<BlockQ8_1>(src)
        .iter()
        .zip(y.chunks_exact_mut(QK8_1))
    {
        let d = block.d();
        for (out, &q) in y.iter_mut().zip(&block.qs) {
            *out = q as f32 * d;
        }
    }
}

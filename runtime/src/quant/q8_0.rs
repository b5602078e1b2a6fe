//! Q8_0: 32 values per 34-byte block, `x = qs[i] * d`. Also the activation format that
//! Q4_0 and Q8_0 weight rows are dotted against.

use super::block::{as_blocks, as_blocks_mut, assert_row, f16_to_f32, f32_to_f16, Block};
use super::GgmlType;

pub const QK8_0: usize = 32;

/// `block_q8_0`: f16 scale, then 32 signed 8-bit quants.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockQ8_0 {
    pub d: [u8; 2],
    pub qs: [i8; QK8_0],
}
const _: () = assert!(std::mem::size_of::<BlockQ8_0>() == 34);

// SAFETY: repr(C), only byte arrays, 34 bytes without padding.
unsafe impl Block for BlockQ8_0 {
    const TYPE: GgmlType = GgmlType::Q8_0;
    const ELEMS: usize = QK8_0;
}

impl BlockQ8_0 {
    pub fn d(&self) -> f32 {
        f16_to_f32(self.d)
    }
}

/// Scalar reference of ggml's `quantize_row_q8_0_ref`: `d = amax / 127`, `q = round(x / d)`.
pub fn quantize_row(x: &[f32], out: &mut [u8]) {
    assert_row::<BlockQ8_0>(out.len(), x.len());
    for (block, x) in as_blocks_mut::<BlockQ8_0>(out)
        .iter_mut()
        .zip(x.chunks_exact(QK8_0))
    {
        let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        block.d = f32_to_f16(d);
        for (q, &v) in block.qs.iter_mut().zip(x) {
            // roundf: half away from zero; `as` saturates like the C conversion of in-range values.
            *q = (v * id).round() as i8;
        }
    }
}

/// Scalar reference of ggml's `dequantize_row_q8_0`.
pub fn dequantize_row(src: &[u8], y: &mut [f32]) {
    assert_row::<BlockQ8_0>(src.len(), y.len());
    for (block, y) in as_blocks::<BlockQ8_0>(src)
        .iter()
        .zip(y.chunks_exact_mut(QK8_0))
    {
        let d = block.d();
        for (out, &q) in y.iter_mut().zip(&block.qs) {
            *out = q as f32 * d;
        }
    }
}

/// Scalar reference of ggml's `ggml_vec_dot_q8_0_q8_0`: a Q8_0 weight row · a Q8_0 activation
/// row of the same length. Integer sums per block, one float multiply-add per block.
pub fn vec_dot(weights: &[u8], activations: &[u8]) -> f32 {
    let x = as_blocks::<BlockQ8_0>(weights);
    let y = as_blocks::<BlockQ8_0>(activations);
    assert_eq!(
        x.len(),
        y.len(),
        "vec_dot: weight and activation rows differ in length"
    );
    let mut sum = 0.0f32;
    for (x, y) in x.iter().zip(y) {
        let sumi: i32 =
            x.qs.iter()
                .zip(&y.qs)
                .map(|(&a, &b)| a as i32 * b as i32)
                .sum();
        sum += sumi as f32 * (x.d() * y.d());
    }
    sum
}

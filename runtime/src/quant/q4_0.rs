//! Q4_0: 32 values per 18-byte block, `x = (q - 8) * d`. Byte `j` of `qs` holds element `j`
//! in its low nibble and element `j + 16` in its high nibble.

use super::block::{as_blocks, as_blocks_mut, assert_row, f16_to_f32, f32_to_f16, Block};
use super::q8_0::BlockQ8_0;
use super::GgmlType;

pub const QK4_0: usize = 32;

/// `block_q4_0`: f16 scale, then 16 bytes of nibbles.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockQ4_0 {
    pub d: [u8; 2],
    pub qs: [u8; QK4_0 / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ4_0>() == 18);

// SAFETY: repr(C), only byte arrays, 18 bytes without padding.
unsafe impl Block for BlockQ4_0 {
    const TYPE: GgmlType = GgmlType::Q4_0;
    const ELEMS: usize = QK4_0;
}

impl BlockQ4_0 {
    pub fn d(&self) -> f32 {
        f16_to_f32(self.d)
    }
}

/// Scalar reference of ggml's `quantize_row_q4_0_ref`. The *signed* extreme maps exactly onto
/// level -8 (`d = max / -8`), so the full 16 levels are used.
pub fn quantize_row(x: &[f32], out: &mut [u8]) {
    assert_row::<BlockQ4_0>(out.len(), x.len());
    for (block, x) in as_blocks_mut::<BlockQ4_0>(out)
        .iter_mut()
        .zip(x.chunks_exact(QK4_0))
    {
        let mut amax = 0.0f32;
        let mut max = 0.0f32;
        for &v in x {
            if amax < v.abs() {
                amax = v.abs();
                max = v;
            }
        }
        let d = max / -8.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        block.d = f32_to_f16(d);
        let (lo, hi) = x.split_at(QK4_0 / 2);
        for ((q, &x0), &x1) in block.qs.iter_mut().zip(lo).zip(hi) {
            *q = nibble(x0 * id) | (nibble(x1 * id) << 4);
        }
    }
}

/// `MIN(15, (int8_t)(v + 8.5f))`: truncation after +8.5 rounds half up around level 8.
fn nibble(scaled: f32) -> u8 {
    ((scaled + 8.5) as i8).min(15) as u8
}

/// Scalar reference of ggml's `dequantize_row_q4_0`.
pub fn dequantize_row(src: &[u8], y: &mut [f32]) {
    assert_row::<BlockQ4_0>(src.len(), y.len());
    for (block, y) in as_blocks::<BlockQ4_0>(src)
        .iter()
        .zip(y.chunks_exact_mut(QK4_0))
    {
        let d = block.d();
        let (lo, hi) = y.split_at_mut(QK4_0 / 2);
        for ((&q, y0), y1) in block.qs.iter().zip(lo).zip(hi) {
            *y0 = ((q & 0x0F) as i32 - 8) as f32 * d;
            *y1 = ((q >> 4) as i32 - 8) as f32 * d;
        }
    }
}

/// Scalar reference of ggml's `ggml_vec_dot_q4_0_q8_0`: a Q4_0 weight row · a Q8_0 activation
/// row of the same length.
pub fn vec_dot(weights: &[u8], activations: &[u8]) -> f32 {
    let x = as_blocks::<BlockQ4_0>(weights);
    let y = as_blocks::<BlockQ8_0>(activations);
    assert_eq!(
        x.len(),
        y.len(),
        "vec_dot: weight and activation rows differ in length"
    );
    let mut sum = 0.0f32;
    for (x, y) in x.iter().zip(y) {
        let (y_lo, y_hi) = y.qs.split_at(QK4_0 / 2);
        let mut sumi = 0i32;
        for ((&q, &a), &b) in x.qs.iter().zip(y_lo).zip(y_hi) {
            sumi += ((q & 0x0F) as i32 - 8) * a as i32 + ((q >> 4) as i32 - 8) * b as i32;
        }
        sum += sumi as f32 * x.d() * y.d();
    }
    sum
}

//! Q8_K: 256 values per 292-byte block, `x = qs[i] * d` with an f32 `d`, plus the sums of each
//! group of 16 quants. Activation format for the k-quant dots: the group sums let Q4_K apply
//! its `- dmin * m` term with 16 multiplies instead of 256.

use super::block::{as_blocks, as_blocks_mut, assert_row, nearest_int, Block};
use super::GgmlType;

pub const QK_K: usize = 256;

/// `block_q8_K`: f32 scale, 256 signed 8-bit quants, 16 little-endian i16 group sums.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockQ8K {
    pub d: [u8; 4],
    pub qs: [i8; QK_K],
    pub bsums: [[u8; 2]; QK_K / 16],
}
const _: () = assert!(std::mem::size_of::<BlockQ8K>() == 292);

// SAFETY: repr(C), only byte arrays, 292 bytes without padding.
unsafe impl Block for BlockQ8K {
    const TYPE: GgmlType = GgmlType::Q8_K;
    const ELEMS: usize = QK_K;
}

impl BlockQ8K {
    pub fn d(&self) -> f32 {
        f32::from_le_bytes(self.d)
    }
    /// Sum of `qs[16 * group .. 16 * group + 16]`.
    pub fn bsum(&self, group: usize) -> i16 {
        i16::from_le_bytes(self.bsums[group])
    }
}

/// Scalar reference of ggml's `quantize_row_q8_K_ref`: `iscale = -127 / max` with `max` the
/// signed extreme, round half to even.
pub fn quantize_row(x: &[f32], out: &mut [u8]) {
    assert_row::<BlockQ8K>(out.len(), x.len());
    for (block, x) in as_blocks_mut::<BlockQ8K>(out)
        .iter_mut()
        .zip(x.chunks_exact(QK_K))
    {
        let mut amax = 0.0f32;
        let mut max = 0.0f32;
        for &v in x {
            if v.abs() > amax {
                amax = v.abs();
                max = v;
            }
        }
        if amax == 0.0 {
            // ggml leaves bsums untouched here; zero them so output is deterministic.
            *block = BlockQ8K {
                d: [0; 4],
                qs: [0; QK_K],
                bsums: [[0; 2]; QK_K / 16],
            };
            continue;
        }
        let iscale = -127.0 / max;
        for (q, &v) in block.qs.iter_mut().zip(x) {
            *q = nearest_int(iscale * v).min(127) as i8;
        }
        for (sum, group) in block.bsums.iter_mut().zip(block.qs.chunks_exact(16)) {
            *sum = (group.iter().map(|&q| q as i16).sum::<i16>()).to_le_bytes();
        }
        block.d = (1.0 / iscale).to_le_bytes();
    }
}

/// Scalar reference of ggml's `dequantize_row_q8_K`.
pub fn dequantize_row(src: &[u8], y: &mut [f32]) {
    assert_row::<BlockQ8K>(src.len(), y.len());
    for (block, y) in as_blocks::<BlockQ8K>(src)
        .iter()
        .zip(y.chunks_exact_mut(QK_K))
    {
        let d = block.d();
        for (out, &q) in y.iter_mut().zip(&block.qs) {
            *out = d * q as f32;
        }
    }
}

//! F16 rows: little-endian IEEE half floats.

use super::block::{f16_to_f32, f32_to_f16};

fn values(src: &[u8]) -> impl Iterator<Item = f32> + '_ {
    src.chunks_exact(2).map(|b| f16_to_f32([b[0], b[1]]))
}

fn assert_len(bytes: usize, n: usize) {
    assert!(
        bytes == 2 * n,
        "{n} f16 values take {} bytes, got {bytes}",
        2 * n
    );
}

pub fn dequantize_row(src: &[u8], y: &mut [f32]) {
    assert_len(src.len(), y.len());
    for (out, v) in y.iter_mut().zip(values(src)) {
        *out = v;
    }
}

/// Round to nearest even, as `GGML_FP32_TO_FP16`.
pub fn quantize_row(x: &[f32], out: &mut [u8]) {
    assert_len(out.len(), x.len());
    for (b, &v) in out.chunks_exact_mut(2).zip(x) {
        b.copy_from_slice(&f32_to_f16(v));
    }
}

/// f16 · f16, as ggml's `ggml_vec_dot_f16` (its scalar path accumulates in double).
pub fn vec_dot(weights: &[u8], activations: &[u8]) -> f32 {
    assert_eq!(
        weights.len(),
        activations.len(),
        "vec_dot: rows differ in length"
    );
    assert!(weights.len().is_multiple_of(2), "f16 row of odd byte length");
    values(weights)
        .zip(values(activations))
        .map(|(a, b)| a as f64 * b as f64)
        .sum::<f64>() as f32
}

/// f16 weights · f32 activations, skipping the activation conversion.
pub fn vec_dot_f32(weights: &[u8], activations: &[f32]) -> f32 {
    assert_len(weights.len(), activations.len());
    values(weights)
        .zip(activations)
        .map(|(a, &b)| a as f64 * b as f64)
        .sum::<f64>() as f32
}

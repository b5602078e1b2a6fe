//! F32 rows: little-endian IEEE single floats, read from bytes so any alignment works.

fn values(src: &[u8]) -> impl Iterator<Item = f32> + '_ {
    src.chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

fn assert_len(bytes: usize, n: usize) {
    assert!(
        bytes == 4 * n,
        "{n} f32 values take {} bytes, got {bytes}",
        4 * n
    );
}

pub fn dequantize_row(src: &[u8], y: &mut [f32]) {
    assert_len(src.len(), y.len());
    for (out, v) in y.iter_mut().zip(values(src)) {
        *out = v;
    }
}

pub fn quantize_row(x: &[f32], out: &mut [u8]) {
    assert_len(out.len(), x.len());
    for (b, &v) in out.chunks_exact_mut(4).zip(x) {
        b.copy_from_slice(&v.to_le_bytes());
    }
}

/// f32 · f32 with a double accumulator, as ggml's scalar `ggml_vec_dot_f32`.
pub fn vec_dot(weights: &[u8], activations: &[u8]) -> f32 {
    assert_eq!(
        weights.len(),
        activations.len(),
        "vec_dot: rows differ in length"
    );
    assert!(
        weights.len().is_multiple_of(4),
        "f32 row length is not a multiple of 4 bytes"
    );
    values(weights)
        .zip(values(activations))
        .map(|(a, b)| a as f64 * b as f64)
        .sum::<f64>() as f32
}

/// f32 weights (bytes) · f32 activations.
pub fn vec_dot_f32(weights: &[u8], activations: &[f32]) -> f32 {
    assert_len(weights.len(), activations.len());
    values(weights)
        .zip(activations)
        .map(|(a, &b)| a as f64 * b as f64)
        .sum::<f64>() as f32
}

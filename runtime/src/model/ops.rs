//! The f32 vector operations of the model (norms, activations, softmax),
//! each one row at a time. Written as plain loops over slices that the
//! compiler vectorises; the matrix work is in `kernels`.

/// LayerNorm of `x` in place: (x - mean) / sqrt(var + eps) * w + b.
pub fn layer_norm(x: &mut [f32], w: &[f32], b: &[f32], eps: f32) {
    let n = x.len() as f32;
    let mean = x.iter().sum::<f32>() / n;
    let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
    let inv = 1.0 / (var + eps).sqrt();
    for ((v, w), b) in x.iter_mut().zip(w).zip(b) {
        *v = (*v - mean) * inv * w + b;
    }
}

/// RMSNorm of `x` in place: x / sqrt(mean(x²) + eps) * w.
pub fn rms_norm(x: &mut [f32], w: &[f32], eps: f32) {
    let ms = x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32;
    let inv = 1.0 / (ms + eps).sqrt();
    for (v, w) in x.iter_mut().zip(w) {
        *v *= inv * w;
    }
}

/// AdaLN: x * (1 + scale) + shift.
pub fn modulate(x: &mut [f32], shift: &[f32], scale: &[f32]) {
    for ((v, sh), sc) in x.iter_mut().zip(shift).zip(scale) {
        *v = *v * (1.0 + sc) + sh;
    }
}

/// tanh-approximated GELU (the model's activation), in place (`kernels::gelu_tanh`).
pub fn gelu(x: &mut [f32]) {
    crate::kernels::gelu_tanh(x);
}

/// SiLU in place (`kernels::silu`).
pub fn silu(x: &mut [f32]) {
    crate::kernels::silu(x);
}

/// Softmax in place (max-subtracted).
pub fn softmax(x: &mut [f32]) {
    let max = crate::kernels::max(x);
    let inv = 1.0 / crate::kernels::exp_sub_sum(x, max);
    crate::kernels::scale(x, inv);
}

/// y += a * x
pub fn add_scaled(y: &mut [f32], a: &[f32], x: &[f32]) {
    for ((y, a), x) in y.iter_mut().zip(a).zip(x) {
        *y += a * x;
    }
}

/// y += x
pub fn add(y: &mut [f32], x: &[f32]) {
    for (y, x) in y.iter_mut().zip(x) {
        *y += x;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn norms_and_softmax() {
        let mut x = [1.0f32, 2.0, 3.0, 4.0];
        layer_norm(&mut x, &[1.0; 4], &[0.0; 4], 0.0);
        assert!((x.iter().sum::<f32>()).abs() < 1e-6);
        assert!((x.iter().map(|v| v * v).sum::<f32>() / 4.0 - 1.0).abs() < 1e-5);
        let mut y = [3.0f32, 4.0];
        rms_norm(&mut y, &[1.0, 2.0], 0.0);
        let r = (12.5f32).sqrt();
        assert!((y[0] - 3.0 / r).abs() < 1e-6 && (y[1] - 8.0 / r).abs() < 1e-6);
        let mut s = [0.0f32, 3f32.ln()];
        softmax(&mut s);
        assert!((s[0] - 0.25).abs() < 1e-6 && (s[1] - 0.75).abs() < 1e-6);
        let mut g = [0.0f32, 10.0, -10.0];
        gelu(&mut g);
        assert!(g[0] == 0.0 && (g[1] - 10.0).abs() < 1e-4 && g[2].abs() < 1e-4);
    }
}

//! Small f32 vector helpers for the model's glue (norms, residuals, softmax), portable SIMD
//! with `wide`: NEON on aarch64, SSE2 on a default x86_64 build (wide picks its instruction
//! set at compile time). They are O(n) next to the O(n²) matmuls, so no run-time dispatch.
//! Every function panics if its slices differ in length (a caller bug).

use wide::{f32x8, CmpLt};

#[inline]
fn load(s: &[f32]) -> f32x8 {
    let lanes: [f32; 8] = s[..8].try_into().expect("8 lanes");
    f32x8::from(lanes)
}

#[inline]
fn store(v: f32x8, s: &mut [f32]) {
    s[..8].copy_from_slice(&v.to_array());
}

fn same_len(a: usize, b: usize, what: &str) {
    assert_eq!(a, b, "{what}: slices differ in length");
}

/// `Σ a[i]·b[i]`, f32 accumulation in 16 lanes. The one helper here with an AVX2+FMA path
/// picked at run time: attention calls it once per cached token and head, O(n·tokens),
/// where `wide`'s SSE2 build (no FMA) made scoring ~half of the attention time.
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    same_len(a.len(), b.len(), "dot_f32");
    #[cfg(target_arch = "x86_64")]
    if super::cpu::has_avx2() {
        // SAFETY: AVX2 and FMA detected; equal lengths checked above.
        return unsafe { super::x86::dot_f32(a, b) };
    }
    let (mut acc0, mut acc1) = (f32x8::ZERO, f32x8::ZERO);
    let mut ca = a.chunks_exact(16);
    let mut cb = b.chunks_exact(16);
    for (x, y) in (&mut ca).zip(&mut cb) {
        acc0 = load(x).mul_add(load(y), acc0);
        acc1 = load(&x[8..]).mul_add(load(&y[8..]), acc1);
    }
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    (acc0 + acc1).reduce_add() + tail
}

/// y += alpha · x (AVX2+FMA where the CPU has it: attention's value sums).
pub fn axpy(alpha: f32, x: &[f32], y: &mut [f32]) {
    same_len(x.len(), y.len(), "axpy");
    #[cfg(target_arch = "x86_64")]
    if super::cpu::has_avx2() {
        // SAFETY: AVX2 and FMA detected; equal lengths checked above.
        return unsafe { super::x86::axpy(alpha, x, y) };
    }
    let a = f32x8::splat(alpha);
    let mut cx = x.chunks_exact(8);
    let mut cy = y.chunks_exact_mut(8);
    for (x, y) in (&mut cx).zip(&mut cy) {
        store(a.mul_add(load(x), load(y)), y);
    }
    for (x, y) in cx.remainder().iter().zip(cy.into_remainder()) {
        *y += alpha * x;
    }
}

/// x *= alpha.
pub fn scale(x: &mut [f32], alpha: f32) {
    let a = f32x8::splat(alpha);
    let mut cx = x.chunks_exact_mut(8);
    for x in &mut cx {
        store(load(x) * a, x);
    }
    for x in cx.into_remainder() {
        *x *= alpha;
    }
}

/// dst += src (residual adds).
pub fn add(dst: &mut [f32], src: &[f32]) {
    same_len(dst.len(), src.len(), "add");
    let mut cd = dst.chunks_exact_mut(8);
    let mut cs = src.chunks_exact(8);
    for (d, s) in (&mut cd).zip(&mut cs) {
        store(load(d) + load(s), d);
    }
    for (d, s) in cd.into_remainder().iter_mut().zip(cs.remainder()) {
        *d += s;
    }
}

/// dst *= src, elementwise (norm weights, gates).
pub fn mul(dst: &mut [f32], src: &[f32]) {
    same_len(dst.len(), src.len(), "mul");
    let mut cd = dst.chunks_exact_mut(8);
    let mut cs = src.chunks_exact(8);
    for (d, s) in (&mut cd).zip(&mut cs) {
        store(load(d) * load(s), d);
    }
    for (d, s) in cd.into_remainder().iter_mut().zip(cs.remainder()) {
        *d *= s;
    }
}

/// `Σ x[i]`.
pub fn sum(x: &[f32]) -> f32 {
    let mut acc = f32x8::ZERO;
    let mut cx = x.chunks_exact(8);
    for c in &mut cx {
        acc += load(c);
    }
    acc.reduce_add() + cx.remainder().iter().sum::<f32>()
}

/// Largest element (`-inf` for an empty slice; NaNs are skipped), for softmax.
pub fn max(x: &[f32]) -> f32 {
    let mut acc = f32x8::splat(f32::NEG_INFINITY);
    let mut cx = x.chunks_exact(8);
    for c in &mut cx {
        acc = acc.max(load(c));
    }
    let lanes = acc
        .to_array()
        .into_iter()
        .chain(cx.remainder().iter().copied());
    lanes.fold(f32::NEG_INFINITY, f32::max)
}

/// Checks the rows `data[t · stride ..][..width]`, `t < len`, lie inside `data`.
fn rows_fit(data: usize, stride: usize, len: usize, width: usize, what: &str) {
    assert!(stride >= width, "{what}: stride {stride} < width {width}");
    assert!(len == 0 || (len - 1) * stride + width <= data, "{what}: rows past the slice");
}

/// `out[t] = q · keys[t · stride ..][..q.len()]` for `t < out.len()` (attention scores over
/// a KV cache of rows `stride` apart). AVX2: the query stays in registers and 4 keys share
/// one horizontal sum, for head sizes 16, 32, 64 and 128.
pub fn dot_rows(q: &[f32], keys: &[f32], stride: usize, out: &mut [f32]) {
    rows_fit(keys.len(), stride, out.len(), q.len(), "dot_rows");
    #[cfg(target_arch = "x86_64")]
    if super::cpu::has_avx2() {
        let (qp, kp, op, n) = (q.as_ptr(), keys.as_ptr(), out.as_mut_ptr(), out.len());
        // SAFETY: AVX2 and FMA detected; the rows fit (checked above), `q` has 8 · V floats.
        unsafe {
            match q.len() {
                16 => return super::x86::dot_rows::<2>(qp, kp, stride, n, op),
                32 => return super::x86::dot_rows::<4>(qp, kp, stride, n, op),
                64 => return super::x86::dot_rows::<8>(qp, kp, stride, n, op),
                128 => return super::x86::dot_rows::<16>(qp, kp, stride, n, op),
                _ => {}
            }
        }
    }
    for (t, o) in out.iter_mut().enumerate() {
        *o = dot_f32(q, &keys[t * stride..][..q.len()]);
    }
}

/// `out = Σ_t p[t] · values[t · stride ..][..out.len()]` (attention's weighted sum of a KV
/// cache). AVX2: `out` accumulates in registers, for head sizes 16, 32, 64 and 128.
pub fn weighted_rows(p: &[f32], values: &[f32], stride: usize, out: &mut [f32]) {
    rows_fit(values.len(), stride, p.len(), out.len(), "weighted_rows");
    #[cfg(target_arch = "x86_64")]
    if super::cpu::has_avx2() {
        let (pp, vp, op, n) = (p.as_ptr(), values.as_ptr(), out.as_mut_ptr(), p.len());
        // SAFETY: AVX2 and FMA detected; the rows fit (checked above), `out` has 8 · V floats.
        unsafe {
            match out.len() {
                16 => return super::x86::weighted_rows::<2>(pp, vp, stride, n, op),
                32 => return super::x86::weighted_rows::<4>(pp, vp, stride, n, op),
                64 => return super::x86::weighted_rows::<8>(pp, vp, stride, n, op),
                128 => return super::x86::weighted_rows::<16>(pp, vp, stride, n, op),
                _ => {}
            }
        }
    }
    out.iter_mut().for_each(|v| *v = 0.0);
    for (t, &w) in p.iter().enumerate() {
        axpy(w, &values[t * stride..][..out.len()], out);
    }
}

/// `x[i] = exp(x[i] − m)`, returning `Σ x[i]` (softmax's numerator and denominator), with
/// `wide`'s polynomial exp (a few ulp; the scalar libm `expf` made the decoder's s² exps per
/// head a third of its time). Arguments below about −87.3 and `−inf` give 0, as libm's; a
/// NaN anywhere makes every output NaN, as the scalar loop would.
pub fn exp_sub_sum(x: &mut [f32], m: f32) -> f32 {
    if m.is_nan() || x.iter().any(|v| v.is_nan()) {
        x.fill(f32::NAN);
        return f32::NAN;
    }
    let mv = f32x8::splat(m);
    let mut acc = f32x8::ZERO;
    let mut cx = x.chunks_exact_mut(8);
    for c in &mut cx {
        let e = (load(c) - mv).exp();
        acc += e;
        store(e, c);
    }
    let mut tail = 0.0;
    for v in cx.into_remainder() {
        *v = (*v - m).exp();
        tail += *v;
    }
    acc.reduce_add() + tail
}

/// tanh-approximated GELU in place, `0.5·u·(1 + tanh(√(2/π)·(u + 0.044715·u³)))`, with
/// `tanh(t) = 1 − 2 / (exp(2t) + 1)` on `wide`'s exp (`2t` clamped to ±80, where tanh is
/// ±1 in f32; the scalar `tanhf` was most of the decoder's non-matmul time). NaN stays NaN.
pub fn gelu_tanh(x: &mut [f32]) {
    const C: f32 = 0.797_884_6; // sqrt(2 / pi)
    let (c, k, half, one, two, lim) = (
        f32x8::splat(C),
        f32x8::splat(0.044_715),
        f32x8::splat(0.5),
        f32x8::ONE,
        f32x8::splat(2.0),
        f32x8::splat(80.0),
    );
    let mut cx = x.chunks_exact_mut(8);
    for ch in &mut cx {
        let u = load(ch);
        let t2 = (two * c * (u + k * u * u * u)).max(-lim).min(lim);
        let tanh = one - two / (t2.exp() + one);
        let g = half * u * (one + tanh);
        store(u.is_nan().blend(u, g), ch);
    }
    for v in cx.into_remainder() {
        let u = *v;
        *v = 0.5 * u * (1.0 + (C * (u + 0.044_715 * u * u * u)).tanh());
    }
}

/// SiLU in place, `u / (1 + exp(−u))`, on `wide`'s exp (0 below u = −80, where it is
/// under 2e-33), as softmax and GELU. B decoding at 2 threads did not move measurably
/// (interleaved, 245-259 against 245-266 tok/s: 2816 values per layer are little).
/// NaN stays NaN.
pub fn silu(x: &mut [f32]) {
    let (one, lim) = (f32x8::ONE, f32x8::splat(80.0));
    let mut cx = x.chunks_exact_mut(8);
    for ch in &mut cx {
        let u = load(ch);
        // Below −80, silu(u) = u·e^u is under 2e-33: 0 (the clamped quotient is not).
        let g = u / (one + (-u).min(lim).exp());
        store(u.cmp_lt(-lim).blend(f32x8::ZERO, g), ch);
    }
    for v in cx.into_remainder() {
        *v /= 1.0 + (-*v).exp();
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_rng::Rng;
    use super::*;

    #[test]
    fn silu_matches_f64() {
        let mut rng = Rng(23);
        let mut x: Vec<f32> = (0..1001).map(|_| rng.uniform() * 40.0).collect();
        x.extend([0.0, -0.0, 88.0, -88.0, 200.0, -200.0, 1e30, -1e30, 1e-20, -1e-20, 5.0, -5.0, 80.5, -80.5, 0.25, -0.25]);
        let mut y = x.clone();
        silu(&mut y);
        for (&u, &g) in x.iter().zip(&y) {
            let want = u as f64 / (1.0 + (-(u as f64)).exp());
            // Below u = −80 the result is 0 where it should be under 2e-33.
            assert!((g as f64 - want).abs() <= 3e-7 * want.abs() + 1e-30, "silu({u}) = {g}, want {want}");
        }
        let mut y = [f32::NAN; 9];
        silu(&mut y);
        assert!(y.iter().all(|v| v.is_nan()));
    }

    #[test]
    fn exp_sub_sum_matches_f64() {
        let mut rng = Rng(21);
        for n in [1, 7, 8, 9, 64, 515] {
            let x: Vec<f32> = (0..n).map(|_| rng.uniform() * 30.0).collect();
            let m = max(&x);
            let mut y = x.clone();
            let s = exp_sub_sum(&mut y, m);
            let mut want_sum = 0f64;
            for (&a, &b) in x.iter().zip(&y) {
                let want = ((a - m) as f64).exp();
                want_sum += want;
                assert!((b as f64 - want).abs() <= 4e-7 * want + 1e-38, "exp({}) = {b}, want {want}", a - m);
            }
            assert!((s as f64 - want_sum).abs() <= 1e-6 * want_sum, "{s} vs {want_sum}");
        }
        // Masked scores and far-below-max values give 0; NaN poisons the row.
        let mut y = [0.0, f32::NEG_INFINITY, -100.0, -1.0, 0.0, 0.0, 0.0, 0.0, 0.0];
        let s = exp_sub_sum(&mut y, 0.0);
        assert_eq!(&y[..3], &[1.0, 0.0, 0.0]);
        assert!((s - (6.0 + (-1f32).exp())).abs() < 1e-5, "{s}");
        let mut y = [0.0; 9];
        y[4] = f32::NAN;
        assert!(exp_sub_sum(&mut y, 0.0).is_nan() && y.iter().all(|v| v.is_nan()));
    }

    #[test]
    fn gelu_tanh_matches_f64() {
        let mut rng = Rng(22);
        let mut x: Vec<f32> = (0..1003).map(|_| rng.uniform() * 12.0).collect();
        x.extend([0.0, -0.0, 1e-30, -1e-30, 50.0, -50.0, 1e30, -1e30, 9.0, -9.0, 1e-4, -1e-4, 3.0, -3.0, 0.5, -0.5]);
        let mut y = x.clone();
        gelu_tanh(&mut y);
        for (&u, &g) in x.iter().zip(&y) {
            let u64_ = u as f64;
            let want = 0.5 * u64_ * (1.0 + (0.797_884_560_802_865_4 * (u64_ + 0.044_715 * u64_.powi(3))).tanh());
            // Absolute error of tanh near 0 is ~1e-7 (the 1 − 2/(e+1) form), so bound by |u|.
            assert!((g as f64 - want).abs() <= 3e-7 * u64_.abs() + 1e-37, "gelu({u}) = {g}, want {want}");
        }
        let mut y = [f32::NAN; 8];
        gelu_tanh(&mut y);
        assert!(y.iter().all(|v| v.is_nan()));
    }
}

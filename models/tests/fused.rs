//! The fused CPU ops (`nn::fused`) against the same maths from candle primitives: forward
//! values and every gradient, in f32 and f64, on shapes small enough for one task and large
//! enough for the parallel row chunks (with ragged last chunks). The f64 finite-difference
//! checks of the modules using them are in `gradcheck.rs`.

use candle_core::{DType, Device, Tensor, Var, D};
use eostok_models::nn::fused;
use eostok_models::sampling::SplitMix64;

fn randn(shape: &[usize], seed: u64, dtype: DType) -> Var {
    let mut rng = SplitMix64::new(seed);
    let n: usize = shape.iter().product();
    let t = Tensor::from_vec((0..n).map(|_| 1.5 * rng.normal()).collect::<Vec<f64>>(), shape, &Device::Cpu).unwrap();
    Var::from_tensor(&t.to_dtype(dtype).unwrap()).unwrap()
}

/// Largest |a - b| relative to max(1, |b|∞).
fn rel_diff(a: &Tensor, b: &Tensor) -> f64 {
    let a: Vec<f64> = a.to_dtype(DType::F64).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    let b: Vec<f64> = b.to_dtype(DType::F64).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(1.0f64, |m, v| m.max(v.abs()));
    a.iter().zip(&b).fold(0.0f64, |m, (x, y)| m.max((x - y).abs())) / scale
}

/// Runs `fused_f` and `reference_f` on the same vars, with the same random output weights,
/// and compares outputs and the gradients of every var.
fn compare(name: &str, vars: &[&Var], fused_f: &dyn Fn() -> Tensor, reference_f: &dyn Fn() -> Tensor, tol: f64) {
    let (yf, yr) = (fused_f(), reference_f());
    assert_eq!(yf.dims(), yr.dims(), "{name}: output shape");
    let d = rel_diff(&yf, &yr);
    assert!(d <= tol, "{name}: forward differs by {d:.2e}");
    let w = randn(yf.dims(), 77, yf.dtype());
    let gf = (&yf * w.as_tensor()).unwrap().sum_all().unwrap().backward().unwrap();
    let gr = (&yr * w.as_tensor()).unwrap().sum_all().unwrap().backward().unwrap();
    for (i, v) in vars.iter().enumerate() {
        let a = gf.get(v.as_tensor()).unwrap_or_else(|| panic!("{name}: fused op gave var {i} no gradient"));
        let b = gr.get(v.as_tensor()).unwrap();
        let d = rel_diff(a, b);
        assert!(d <= tol, "{name}: gradient of var {i} differs by {d:.2e}");
        let norm = a.to_dtype(DType::F64).unwrap().sqr().unwrap().sum_all().unwrap().to_scalar::<f64>().unwrap();
        assert!(norm > 0.0, "{name}: gradient of var {i} is zero");
    }
}

const SHAPES: &[&[usize]] = &[&[3, 5], &[2, 7, 64], &[2100, 96], &[3, 40_003]];

fn tolerance(dtype: DType) -> f64 {
    if dtype == DType::F64 {
        1e-12
    } else {
        2e-5
    }
}

#[test]
fn layer_norm_matches_primitives() {
    for dtype in [DType::F32, DType::F64] {
        for (s, shape) in SHAPES.iter().enumerate() {
            let d = *shape.last().unwrap();
            let (x, w, b) = (randn(shape, s as u64, dtype), randn(&[d], 100 + s as u64, dtype), randn(&[d], 200 + s as u64, dtype));
            let reference = || {
                let mean = x.mean_keepdim(D::Minus1).unwrap();
                let xc = x.broadcast_sub(&mean).unwrap();
                let var = xc.sqr().unwrap().mean_keepdim(D::Minus1).unwrap();
                let xn = xc.broadcast_div(&(var + 1e-6).unwrap().sqrt().unwrap()).unwrap();
                xn.broadcast_mul(&w).unwrap().broadcast_add(&b).unwrap()
            };
            let fused_f = || fused::layer_norm(&x, &w, &b, 1e-6).unwrap();
            compare(&format!("layer_norm {shape:?} {dtype:?}"), &[&x, &w, &b], &fused_f, &reference, tolerance(dtype));
        }
    }
}

#[test]
fn rms_norm_matches_primitives() {
    for dtype in [DType::F32, DType::F64] {
        for (s, shape) in SHAPES.iter().enumerate() {
            let d = *shape.last().unwrap();
            let (x, w) = (randn(shape, s as u64, dtype), randn(&[d], 100 + s as u64, dtype));
            let reference = || {
                let ms = x.sqr().unwrap().mean_keepdim(D::Minus1).unwrap();
                x.broadcast_div(&(ms + 1e-5).unwrap().sqrt().unwrap()).unwrap().broadcast_mul(&w).unwrap()
            };
            let fused_f = || fused::rms_norm(&x, &w, 1e-5).unwrap();
            compare(&format!("rms_norm {shape:?} {dtype:?}"), &[&x, &w], &fused_f, &reference, tolerance(dtype));
        }
    }
}

#[test]
fn softmax_matches_primitives() {
    for dtype in [DType::F32, DType::F64] {
        for (s, shape) in SHAPES.iter().enumerate() {
            let x = randn(shape, s as u64, dtype);
            let reference = || candle_nn::ops::softmax(&x, D::Minus1).unwrap();
            let fused_f = || fused::softmax(&x).unwrap();
            compare(&format!("softmax {shape:?} {dtype:?}"), &[&x], &fused_f, &reference, tolerance(dtype));
        }
    }
}

#[test]
fn softmax_of_masked_rows_is_exactly_zero_there() {
    let x = Tensor::new(&[[0.5f32, -1e9, 2.0, -1e9]], &Device::Cpu).unwrap();
    let y: Vec<Vec<f32>> = fused::softmax(&x).unwrap().to_vec2().unwrap();
    assert_eq!(y[0][1], 0.0);
    assert_eq!(y[0][3], 0.0);
    assert!((y[0][0] + y[0][2] - 1.0).abs() < 1e-6);
}

#[test]
fn gelu_matches_candle() {
    for dtype in [DType::F32, DType::F64] {
        for (s, shape) in SHAPES.iter().enumerate() {
            let x = randn(shape, s as u64, dtype);
            let reference = || x.gelu().unwrap();
            let fused_f = || fused::gelu(&x).unwrap();
            compare(&format!("gelu {shape:?} {dtype:?}"), &[&x], &fused_f, &reference, tolerance(dtype).max(1e-6));
        }
    }
}

#[test]
fn silu_mul_matches_primitives() {
    for dtype in [DType::F32, DType::F64] {
        for (s, shape) in SHAPES.iter().enumerate() {
            let (a, b) = (randn(shape, s as u64, dtype), randn(shape, 50 + s as u64, dtype));
            let reference = || (a.silu().unwrap() * b.as_tensor()).unwrap();
            let fused_f = || fused::silu_mul(&a, &b).unwrap();
            compare(&format!("silu_mul {shape:?} {dtype:?}"), &[&a, &b], &fused_f, &reference, tolerance(dtype).max(1e-6));
        }
    }
}

#[test]
fn fused_ops_take_strided_inputs() {
    // A transposed view must give the same result as its contiguous copy.
    let x = randn(&[16, 24], 5, DType::F32);
    let t = x.t().unwrap();
    let a = fused::softmax(&t).unwrap();
    let b = fused::softmax(&t.contiguous().unwrap()).unwrap();
    assert_eq!(rel_diff(&a, &b), 0.0);
}

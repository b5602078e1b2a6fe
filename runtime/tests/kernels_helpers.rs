//! The kernels' helpers through the public API: the SIMD activation quantizer is
//! bit-identical to the reference quantizers, and the `wide` f32 vector helpers match
//! scalar f64 loops on every tail length.

mod common;

use common::rng::Rng;
use eostok_runtime::kernels;
use eostok_runtime::quant::{self, GgmlType, QuantError};

fn awkward_row(rng: &mut Rng, n: usize, case: usize) -> Vec<f32> {
    let mut x: Vec<f32> = (0..n)
        .map(|_| rng.normal() * 10f32.powi(case as i32 % 5 - 2))
        .collect();
    match case % 6 {
        // An all-zero block.
        1 => x[..32].fill(0.0),
        // Exact ties: amax 127 makes d = 1, so every k + 0.5 is a tie for the rounding.
        2 => {
            for (i, v) in x.iter_mut().enumerate() {
                *v = if i % 32 == 0 {
                    127.0
                } else {
                    ((i * 7) % 253) as f32 - 126.5
                };
            }
        }
        // Equal and opposite extremes: the signed max decides Q8_K's sign.
        3 => {
            x[5] = -50.0;
            x[9] = 50.0;
            x[300 % n] = 50.0;
        }
        // Non-finite values: the reference's handling must be reproduced.
        4 => {
            x[3] = f32::NAN;
            x[40 % n] = f32::INFINITY;
            x[n - 1] = f32::NEG_INFINITY;
        }
        // Tiny values: f16 subnormal scales.
        5 => x.iter_mut().for_each(|v| *v *= 1e-6),
        _ => {}
    }
    x
}

#[test]
fn activation_quantizer_is_bit_identical_to_reference() {
    let mut rng = Rng::new(0xac7);
    for ty in [GgmlType::Q8_0, GgmlType::Q8_1, GgmlType::Q8_K] {
        for case in 0..24 {
            let n = 512 * (1 + case % 3);
            let x = awkward_row(&mut rng, n, case);
            let mut want = vec![0u8; ty.row_size(n).unwrap()];
            let mut got = vec![0xAAu8; want.len()];
            quant::quantize_row(ty, &x, &mut want).unwrap();
            kernels::quantize_activations(ty, &x, &mut got).unwrap();
            assert!(
                got == want,
                "{ty} case {case}: SIMD quantizer differs from the reference"
            );
        }
    }
}

#[test]
fn activation_quantizer_checks_lengths() {
    let x = vec![0f32; 64];
    assert!(matches!(
        kernels::quantize_activations(GgmlType::Q8_0, &x, &mut [0u8; 67]),
        Err(QuantError::ByteLength {
            expected: 68,
            found: 67,
            ..
        })
    ));
    assert!(matches!(
        kernels::quantize_activations(GgmlType::Q8_K, &x, &mut [0u8; 292]),
        Err(QuantError::PartialBlock { .. })
    ));
    assert!(matches!(
        kernels::quantize_activations(GgmlType::Q5_0, &x, &mut [0u8; 44]),
        Err(QuantError::Unsupported(GgmlType::Q5_0))
    ));
}

#[test]
fn vector_helpers_match_scalar_loops() {
    let mut rng = Rng::new(0x7ec);
    for n in 0..70 {
        let a: Vec<f32> = (0..n).map(|_| rng.normal()).collect();
        let b: Vec<f32> = (0..n).map(|_| rng.normal()).collect();
        let tol = |s: f64| 1e-6 * (1.0 + s);

        let want: f64 = a.iter().zip(&b).map(|(&x, &y)| x as f64 * y as f64).sum();
        let mag: f64 = a
            .iter()
            .zip(&b)
            .map(|(&x, &y)| (x as f64 * y as f64).abs())
            .sum();
        assert!(
            (kernels::dot_f32(&a, &b) as f64 - want).abs() <= tol(mag),
            "dot n={n}"
        );

        let want: f64 = a.iter().map(|&x| x as f64).sum();
        let mag: f64 = a.iter().map(|&x| (x as f64).abs()).sum();
        assert!(
            (kernels::sum(&a) as f64 - want).abs() <= tol(mag),
            "sum n={n}"
        );

        let want = a.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        assert_eq!(kernels::max(&a), want, "max n={n}");

        let mut y = b.clone();
        kernels::axpy(0.5, &a, &mut y);
        for i in 0..n {
            assert!(
                (y[i] - (b[i] + 0.5 * a[i])).abs() <= 1e-6 * (1.0 + b[i].abs() + a[i].abs()),
                "axpy n={n}"
            );
        }
        let mut y = a.clone();
        kernels::scale(&mut y, -3.0);
        assert!(y.iter().zip(&a).all(|(y, a)| *y == a * -3.0), "scale n={n}");
        let mut y = a.clone();
        kernels::add(&mut y, &b);
        assert!(
            y.iter()
                .zip(a.iter().zip(&b))
                .all(|(y, (a, b))| *y == a + b),
            "add n={n}"
        );
        let mut y = a.clone();
        kernels::mul(&mut y, &b);
        assert!(
            y.iter()
                .zip(a.iter().zip(&b))
                .all(|(y, (a, b))| *y == a * b),
            "mul n={n}"
        );
    }
    assert_eq!(kernels::max(&[1.0, f32::NAN, 3.0]), 3.0);
}

#[test]
#[should_panic(expected = "dot_f32: slices differ in length")]
fn vector_helpers_reject_mismatched_lengths() {
    kernels::dot_f32(&[1.0; 9], &[1.0; 8]);
}

/// `dot_rows` and `weighted_rows` (attention over a KV cache) against f64 loops: the head
/// sizes with AVX2 paths (16, 32, 64, 128) and others (8, 12, 72), cache lengths around
/// the 4-key passes, padded strides.
#[test]
fn cache_row_helpers_match_f64() {
    let mut rng = Rng::new(0x5eed_0101);
    for width in [8, 12, 16, 32, 64, 72, 128] {
        for len in [1, 3, 4, 5, 8, 31, 130] {
            let stride = width + 5;
            let q: Vec<f32> = (0..width).map(|_| rng.normal()).collect();
            let rows: Vec<f32> = (0..(len - 1) * stride + width).map(|_| rng.normal()).collect();
            let mut scores = vec![f32::NAN; len];
            kernels::dot_rows(&q, &rows, stride, &mut scores);
            for (t, &s) in scores.iter().enumerate() {
                let r = &rows[t * stride..][..width];
                let want: f64 = q.iter().zip(r).map(|(a, b)| *a as f64 * *b as f64).sum();
                let mag: f64 = q.iter().zip(r).map(|(a, b)| (*a as f64 * *b as f64).abs()).sum();
                assert!((s as f64 - want).abs() <= 1e-6 * (1.0 + mag), "dot_rows width {width} len {len} t {t}");
            }
            let p: Vec<f32> = (0..len).map(|_| rng.normal()).collect();
            let mut out = vec![f32::NAN; width];
            kernels::weighted_rows(&p, &rows, stride, &mut out);
            for (e, &o) in out.iter().enumerate() {
                let want: f64 = (0..len).map(|t| p[t] as f64 * rows[t * stride + e] as f64).sum();
                let mag: f64 = (0..len).map(|t| (p[t] as f64 * rows[t * stride + e] as f64).abs()).sum();
                assert!((o as f64 - want).abs() <= 1e-6 * (1.0 + mag), "weighted_rows width {width} len {len} e {e}");
            }
        }
    }
}

#[test]
#[should_panic(expected = "rows past the slice")]
fn cache_row_helpers_check_lengths() {
    let mut scores = vec![0f32; 3];
    // 3 rows of width 4 at stride 6 need 16 floats.
    kernels::dot_rows(&[1.0; 4], &[0.0; 15], 6, &mut scores);
}

/// `parallel_chunks` hands every element to exactly one task, with the chunk's index, the
/// last chunk short; on 1 and 3 threads.
#[test]
fn parallel_chunks_covers_every_element_once() {
    for threads in [1, 3] {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        for (len, chunk) in [(0, 4), (1, 4), (10, 4), (64, 8), (1000, 7)] {
            let mut data: Vec<f32> = (0..len).map(|i| i as f32).collect();
            pool.install(|| {
                kernels::parallel_chunks(&mut data, chunk, &|i, c| {
                    assert!(c.len() == chunk || (i + 1) * chunk >= len, "short chunk {i} of {len}");
                    for (j, v) in c.iter_mut().enumerate() {
                        assert_eq!(*v, (i * chunk + j) as f32, "chunk {i} starts at the wrong element");
                        *v = -*v - 1.0;
                    }
                })
            });
            assert!(data.iter().enumerate().all(|(i, &v)| v == -(i as f32) - 1.0), "len {len} chunk {chunk}");
        }
    }
}

//! Block formats: (a) hand-computed bytes, (b) quantize→dequantize error bounds, (c) vec_dot
//! against an f64 dot of the dequantized rows.

mod common;

use common::rng::Rng;
use eostok_runtime::quant::q4_0::BlockQ4_0;
use eostok_runtime::quant::q4_1::BlockQ4_1;
use eostok_runtime::quant::q4_k::BlockQ4K;
use eostok_runtime::quant::q6_k::BlockQ6K;
use eostok_runtime::quant::q8_0::BlockQ8_0;
use eostok_runtime::quant::q8_1::BlockQ8_1;
use eostok_runtime::quant::q8_k::BlockQ8K;
use eostok_runtime::quant::{
    self, as_blocks, fp16, fp32, q4_0, q4_1, q4_k, q6_k, q8_0, q8_1, q8_k, GgmlType, QuantError,
};
use std::mem::size_of;

const SUPPORTED: [GgmlType; 9] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q8_0,
    GgmlType::Q8_1,
    GgmlType::Q4_K,
    GgmlType::Q6_K,
    GgmlType::Q8_K,
];

fn quantize(ty: GgmlType, x: &[f32]) -> Vec<u8> {
    let mut out = vec![0u8; ty.row_size(x.len()).unwrap()];
    quant::quantize_row(ty, x, &mut out).unwrap();
    out
}

fn dequantize(ty: GgmlType, bytes: &[u8], n: usize) -> Vec<f32> {
    let mut out = vec![0f32; n];
    quant::dequantize_row(ty, bytes, &mut out).unwrap();
    out
}

fn f16_bits(v: f32) -> [u8; 2] {
    half::f16::from_f32(v).to_le_bytes()
}

// ---------------------------------------------------------------- (a) known bytes

#[test]
fn type_table_matches_block_structs() {
    assert_eq!(size_of::<BlockQ4_0>(), GgmlType::Q4_0.type_size());
    assert_eq!(size_of::<BlockQ4_1>(), GgmlType::Q4_1.type_size());
    assert_eq!(size_of::<BlockQ8_0>(), GgmlType::Q8_0.type_size());
    assert_eq!(size_of::<BlockQ8_1>(), GgmlType::Q8_1.type_size());
    assert_eq!(size_of::<BlockQ4K>(), GgmlType::Q4_K.type_size());
    assert_eq!(size_of::<BlockQ6K>(), GgmlType::Q6_K.type_size());
    assert_eq!(size_of::<BlockQ8K>(), GgmlType::Q8_K.type_size());
    let expected = [
        (0, 1, 4),
        (1, 1, 2),
        (2, 32, 18),
        (3, 32, 20),
        (8, 32, 34),
        (9, 32, 36),
        (12, 256, 144),
        (14, 256, 210),
        (15, 256, 292),
    ];
    for (id, block, size) in expected {
        let ty = GgmlType::from_id(id).unwrap();
        assert_eq!(
            (ty.id(), ty.block_size(), ty.type_size()),
            (id, block, size),
            "{ty}"
        );
        assert!(ty.is_supported());
    }
    for id in 0..64 {
        match GgmlType::from_id(id) {
            Some(ty) => {
                assert_eq!(ty.id(), id);
                assert!(ty.block_size() > 0 && ty.type_size() > 0);
                assert_eq!(ty.is_supported(), SUPPORTED.contains(&ty));
            }
            None => assert!(matches!(id, 4 | 5 | 31..=33 | 36..=38 | 43..), "id {id}"),
        }
    }
}

#[test]
fn q8_0_block_of_0_to_31() {
    let x: Vec<f32> = (0..32).map(|i| i as f32).collect();
    let bytes = quantize(GgmlType::Q8_0, &x);
    // d = 31/127 = 0.2440945 → f16 0x33D0 (0.24414062); q = round(i * 127/31).
    let mut expected = vec![0xD0, 0x33];
    let qs: [i8; 32] = [
        0, 4, 8, 12, 16, 20, 25, 29, 33, 37, 41, 45, 49, 53, 57, 61, 66, 70, 74, 78, 82, 86, 90,
        94, 98, 102, 107, 111, 115, 119, 123, 127,
    ];
    expected.extend(qs.iter().map(|&q| q as u8));
    assert_eq!(bytes, expected);
    let y = dequantize(GgmlType::Q8_0, &bytes, 32);
    for (i, &v) in y.iter().enumerate() {
        assert_eq!(v, qs[i] as f32 * 0.24414062, "element {i}");
    }
    // Negative extremes map to -127 and the sign survives.
    let neg: Vec<f32> = x.iter().map(|v| -v).collect();
    let bytes = quantize(GgmlType::Q8_0, &neg);
    assert_eq!(bytes[2 + 31] as i8, -127);
}

#[test]
fn q8_1_block_of_0_to_31_has_sum() {
    let x: Vec<f32> = (0..32).map(|i| i as f32).collect();
    let bytes = quantize(GgmlType::Q8_1, &x);
    let q8_0 = quantize(GgmlType::Q8_0, &x);
    assert_eq!(&bytes[..2], &q8_0[..2], "same d");
    assert_eq!(&bytes[4..], &q8_0[2..], "same quants");
    // s = f16(d * sum(q)) = f16(0.2440945 * 2032) = 496.0 = 0x5FC0.
    assert_eq!(&bytes[2..4], &[0xC0, 0x5F]);
}

#[test]
fn q4_0_nibble_order() {
    // First half: levels -8..7 rising; second half falling. The extreme -4.0 comes first, so
    // d = -4 / -8 = 0.5 and every value is exactly representable.
    let x: Vec<f32> = (0..32)
        .map(|i| {
            if i < 16 {
                (i as f32 - 8.0) * 0.5
            } else {
                (7.0 - (i - 16) as f32) * 0.5
            }
        })
        .collect();
    let bytes = quantize(GgmlType::Q4_0, &x);
    let mut expected = vec![0x00, 0x38]; // f16 0.5
                                         // Byte j: element j (q = j) in the low nibble, element j + 16 (q = 15 - j) in the high one.
    expected.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
    assert_eq!(bytes, expected);
    assert_eq!(bytes[2], 0xF0);
    assert_eq!(bytes[3], 0xE1);
    assert_eq!(dequantize(GgmlType::Q4_0, &bytes, 32), x);
}

#[test]
fn q4_0_uses_the_signed_extreme() {
    // Positive extreme: d = 2 / -8 = -0.25, so 2.0 maps to level -8 (nibble 0).
    let mut x = vec![0f32; 32];
    x[0] = 2.0;
    x[1] = -1.0;
    let bytes = quantize(GgmlType::Q4_0, &x);
    assert_eq!(&bytes[..2], &f16_bits(-0.25));
    assert_eq!(bytes[2] & 0xF, 0); // 2.0 → level -8
    assert_eq!(bytes[3] & 0xF, 12); // -1.0 / -0.25 = 4 → level 4 → nibble 12
    assert_eq!(bytes[4] & 0xF, 8); // 0.0 → nibble 8
    let y = dequantize(GgmlType::Q4_0, &bytes, 32);
    assert_eq!((y[0], y[1], y[2]), (2.0, -1.0, 0.0));
}

#[test]
fn q4_1_block() {
    // min = 1, max = 4.75 → d = 0.25, m = 1; values 1 + 0.25 q exactly.
    let q: Vec<u8> = (0..32)
        .map(|i| if i < 16 { i as u8 } else { 31 - i as u8 })
        .collect();
    let x: Vec<f32> = q.iter().map(|&q| 1.0 + 0.25 * q as f32).collect();
    let bytes = quantize(GgmlType::Q4_1, &x);
    let mut expected = vec![0x00, 0x34, 0x00, 0x3C]; // f16 0.25, f16 1.0
    expected.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
    assert_eq!(bytes, expected);
    assert_eq!(dequantize(GgmlType::Q4_1, &bytes, 32), x);
}

#[test]
fn q4_k_hand_packed_scales() {
    let sc: [u8; 8] = [1, 2, 3, 4, 17, 33, 49, 63];
    let m: [u8; 8] = [0, 5, 10, 63, 16, 32, 48, 1];
    // Sub-blocks 0..4 in the low 6 bits of bytes 0..8; 4..8 split: low 4 bits in bytes 8..12,
    // high 2 bits in the top of bytes 0..4 (scales) and 4..8 (mins).
    let scales = [
        0x41, 0x82, 0xC3, 0xC4, 0x40, 0x85, 0xCA, 0x3F, 0x01, 0x01, 0x01, 0x1F,
    ];
    let mut block = vec![0x00, 0x38, 0x00, 0x34]; // d = 0.5, dmin = 0.25
    block.extend_from_slice(&scales);
    // Chunk c, byte l: element 64c + l (low nibble), element 64c + 32 + l (high nibble).
    for _c in 0..4 {
        for l in 0..32u8 {
            block.push((l % 16) | ((15 - l % 16) << 4));
        }
    }
    assert_eq!(block.len(), 144);
    let b = &as_blocks::<BlockQ4K>(&block)[0];
    for j in 0..8 {
        assert_eq!(b.scale_min(j), (sc[j], m[j]), "sub-block {j}");
    }
    let y = dequantize(GgmlType::Q4_K, &block, 256);
    for (i, &v) in y.iter().enumerate() {
        let (c, r) = (i / 64, i % 64);
        let (sub, q) = if r < 32 {
            (2 * c, r % 16)
        } else {
            (2 * c + 1, 15 - (r - 32) % 16)
        };
        let expected = 0.5 * sc[sub] as f32 * q as f32 - 0.25 * m[sub] as f32;
        assert_eq!(v, expected, "element {i}");
    }
}

#[test]
fn q6_k_hand_set_bits() {
    let mut block = vec![0u8; 210];
    block[0] = 0x5A; // ql[0]: element 0 low bits 0xA, element 64 low bits 0x5
    block[32] = 0x3C; // ql[32]: element 32 low bits 0xC, element 96 low bits 0x3
    block[128] = 0b11_10_01_00; // qh[0]: high bits of elements 0, 32, 64, 96
    let scales: [i8; 16] = [1, 0, -2, 0, 3, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    for (i, s) in scales.iter().enumerate() {
        block[192 + i] = *s as u8;
    }
    block[208..210].copy_from_slice(&[0x00, 0x38]); // d = 0.5, stored last
    let y = dequantize(GgmlType::Q6_K, &block, 256);
    assert_eq!(y[0], 0.5 * 1.0 * (10 - 32) as f32); // -11
    assert_eq!(y[32], 0.5 * -2.0 * (12 + 16 - 32) as f32); // 4
    assert_eq!(y[64], 0.5 * 3.0 * (5 + 32 - 32) as f32); // 7.5
    assert_eq!(y[96], 0.5 * 4.0 * (3 + 48 - 32) as f32); // 38
    for i in 0..256 {
        if [0, 32, 64, 96].contains(&i) {
            continue;
        }
        assert_eq!(y[i], 0.5 * scales[i / 16] as f32 * -32.0, "element {i}");
    }
}

#[test]
fn q8_k_block() {
    // Signed extreme is +155 (at the end): iscale = -127/155, so values flip sign.
    let x: Vec<f32> = (0..256).map(|i| (i - 100) as f32).collect();
    let bytes = quantize(GgmlType::Q8_K, &x);
    let b = &as_blocks::<BlockQ8K>(&bytes)[0];
    assert_eq!(&bytes[..4], &[0x71, 0x38, 0x9C, 0xBF]); // d = -155/127 as f32
    assert_eq!(
        (b.qs[0], b.qs[100], b.qs[101], b.qs[255]),
        (82, 0, -1, -127)
    );
    let bsums: Vec<i16> = (0..16).map(|g| b.bsum(g)).collect();
    assert_eq!(
        bsums,
        [
            1212, 1003, 793, 584, 373, 164, -46, -255, -465, -676, -885, -1095, -1304, -1514,
            -1724, -1934
        ]
    );
    let y = dequantize(GgmlType::Q8_K, &bytes, 256);
    assert_eq!(y[255], -127.0 * b.d());
}

#[test]
fn float_rows() {
    let x = [1.0f32, -2.5, 65504.0, 1e-8];
    let bytes = quantize(GgmlType::F16, &x);
    assert_eq!(bytes, [0x00, 0x3C, 0x00, 0xC1, 0xFF, 0x7B, 0x00, 0x00]);
    assert_eq!(
        dequantize(GgmlType::F16, &bytes, 4),
        [1.0, -2.5, 65504.0, 0.0]
    );
    let bytes = quantize(GgmlType::F32, &x);
    assert_eq!(&bytes[..4], &1.0f32.to_le_bytes());
    assert_eq!(dequantize(GgmlType::F32, &bytes, 4), x);
}

// ---------------------------------------------------------------- (b) round-trip bounds

/// Rows of 1024 values from several distributions and magnitudes (10^-3 .. 10^1).
fn test_rows(rng: &mut Rng) -> Vec<Vec<f32>> {
    let mut rows = Vec::new();
    for dist in 0..5 {
        for _ in 0..40 {
            let scale = 10f32.powf(2.0 * rng.uniform() - 1.0);
            rows.push(
                (0..1024)
                    .map(|_| {
                        scale
                            * match dist {
                                0 => rng.normal(),
                                1 => rng.uniform(),
                                2 if rng.below(64) == 0 => 30.0 * rng.normal(), // outliers
                                2 => rng.normal(),
                                3 => 0.5 + rng.unit(), // one-signed
                                _ => -(rng.unit() * rng.unit()),
                            }
                    })
                    .collect(),
            );
        }
    }
    rows.push(vec![0.0; 1024]);
    rows.push(vec![0.75; 1024]);
    rows.push(vec![-3.0; 1024]);
    rows
}

/// Worst-case f16 rounding error of a positive value (2^-11 relative; 2^-25 absolute in the
/// subnormal range).
fn f16_err(v: f32) -> f32 {
    (v.abs() * 2f32.powi(-11)).max(2f32.powi(-25))
}

fn amax(x: &[f32]) -> f32 {
    x.iter().fold(0.0, |m, v| m.max(v.abs()))
}

#[test]
fn round_trip_zero_and_constant_rows_are_finite() {
    for ty in SUPPORTED {
        for value in [0.0f32, 1.0, -2.0] {
            let x = vec![value; 512];
            let y = dequantize(ty, &quantize(ty, &x), 512);
            for v in &y {
                assert!(v.is_finite(), "{ty}");
                assert!(
                    (v - value).abs() <= 0.02 * value.abs() + 1e-6,
                    "{ty}: {value} → {v}"
                );
            }
        }
    }
}

/// Q8_0 / Q8_1: |x − x̂| ≤ d/2 + 127·(f16 error of d), d = amax/127 per 32-block.
/// Q8_K: d stays f32, so |x − x̂| ≤ d/2 (plus float rounding).
#[test]
fn round_trip_bounds_8_bit() {
    let mut rng = Rng::new(10);
    for x in test_rows(&mut rng) {
        for ty in [GgmlType::Q8_0, GgmlType::Q8_1] {
            let y = dequantize(ty, &quantize(ty, &x), x.len());
            for (xb, yb) in x.chunks(32).zip(y.chunks(32)) {
                let d = amax(xb) / 127.0;
                let bound = 0.5 * d + 127.0 * f16_err(d) + 1e-6 * amax(xb);
                for (a, b) in xb.iter().zip(yb) {
                    assert!((a - b).abs() <= bound, "{ty}: {a} → {b}, bound {bound}");
                }
            }
        }
        let y = dequantize(GgmlType::Q8_K, &quantize(GgmlType::Q8_K, &x), x.len());
        for (xb, yb) in x.chunks(256).zip(y.chunks(256)) {
            let bound = amax(xb) / 254.0 * (1.0 + 1e-5);
            for (a, b) in xb.iter().zip(yb) {
                assert!((a - b).abs() <= bound, "q8_K: {a} → {b}, bound {bound}");
            }
        }
    }
}

/// Q8_1's `s` is `d · Σq` to f16 precision.
#[test]
fn q8_1_sum_field() {
    let mut rng = Rng::new(11);
    for x in test_rows(&mut rng) {
        let bytes = quantize(GgmlType::Q8_1, &x);
        for (b, xb) in as_blocks::<BlockQ8_1>(&bytes).iter().zip(x.chunks(32)) {
            let sum: i32 = b.qs.iter().map(|&q| q as i32).sum();
            let exact = sum as f32 * (amax(xb) / 127.0);
            assert!(
                (b.s() - exact).abs() <= f16_err(exact) + 1e-6 * exact.abs(),
                "{} vs {exact}",
                b.s()
            );
        }
    }
}

/// Q4_0: step |d| = amax/8. Values on the extreme's side round to the nearest level (≤ half a
/// step); values beyond +7.5 steps on the other side clip to level 7 (≤ one step).
/// Q4_1: step d = (max − min)/15, no clipping: ≤ half a step, plus f16 rounding of d and m.
#[test]
fn round_trip_bounds_4_bit() {
    let mut rng = Rng::new(12);
    for x in test_rows(&mut rng) {
        let y = dequantize(GgmlType::Q4_0, &quantize(GgmlType::Q4_0, &x), x.len());
        for (xb, yb) in x.chunks(32).zip(y.chunks(32)) {
            let max = xb
                .iter()
                .fold(0f32, |m, &v| if v.abs() > m.abs() { v } else { m });
            let d = max / -8.0;
            let slack = 8.0 * f16_err(d) + 1e-6 * d.abs();
            for (a, b) in xb.iter().zip(yb) {
                let err = (a - b).abs();
                let clipped = d != 0.0 && a / d > 7.5;
                let bound = if clipped { d.abs() } else { 0.5 * d.abs() } + slack;
                assert!(err <= bound, "q4_0: {a} → {b}, bound {bound}");
            }
        }

        let y = dequantize(GgmlType::Q4_1, &quantize(GgmlType::Q4_1, &x), x.len());
        for (xb, yb) in x.chunks(32).zip(y.chunks(32)) {
            let min = xb.iter().copied().fold(f32::MAX, f32::min);
            let max = xb.iter().copied().fold(f32::MIN, f32::max);
            let d = (max - min) / 15.0;
            let bound = 0.5 * d + 15.0 * f16_err(d) + f16_err(min) + 1e-6 * amax(xb);
            for (a, b) in xb.iter().zip(yb) {
                assert!((a - b).abs() <= bound, "q4_1: {a} → {b}, bound {bound}");
            }
        }
    }
}

/// Error from the f16 super-scales alone: small blocks push `d` into f16's subnormal range,
/// where its relative error grows (ggml behaves the same), times the largest `scale · q`.
fn f16_slack(ty: GgmlType, block: &[u8]) -> f32 {
    match ty {
        GgmlType::Q4_K => {
            let b = &as_blocks::<BlockQ4K>(block)[0];
            63.0 * 15.0 * f16_err(b.d()) + 63.0 * f16_err(b.dmin())
        }
        GgmlType::Q6_K => 128.0 * 32.0 * f16_err(as_blocks::<BlockQ6K>(block)[0].d()),
        _ => 0.0,
    }
}

/// K-quants store 6/8-bit sub-block scales relative to the block's largest one, so there is no
/// simple per-value bound; these are empirical bounds with margin over ggml's reference
/// algorithm on the test rows (observed: Q4_K max 0.098·amax, mean RMS 0.021·amax; Q6_K max
/// 0.021·amax, mean RMS 0.006·amax), per 256-value block, plus the f16 slack above.
#[test]
fn round_trip_bounds_k_quants() {
    let mut rng = Rng::new(13);
    for (ty, max_bound, rms_bound) in [
        (GgmlType::Q4_K, 0.125, 0.03),
        (GgmlType::Q6_K, 1.0 / 28.0, 0.008),
    ] {
        let (mut rms_sum, mut blocks) = (0.0f64, 0usize);
        for x in test_rows(&mut rng) {
            let bytes = quantize(ty, &x);
            let y = dequantize(ty, &bytes, x.len());
            for (i, (xb, yb)) in x.chunks(256).zip(y.chunks(256)).enumerate() {
                let a = amax(xb);
                let slack = f16_slack(ty, &bytes[i * ty.type_size()..(i + 1) * ty.type_size()]);
                let mut sq = 0.0f64;
                for (p, q) in xb.iter().zip(yb) {
                    assert!(
                        (p - q).abs() <= max_bound * a + slack + 1e-7,
                        "{ty}: {p} → {q}, amax {a}"
                    );
                    sq += ((p - q) as f64).powi(2);
                }
                if a > 0.0 {
                    rms_sum += (sq / 256.0).sqrt() / a as f64;
                    blocks += 1;
                }
            }
        }
        let mean_rms = rms_sum / blocks as f64;
        assert!(mean_rms <= rms_bound, "{ty}: mean RMS/amax {mean_rms}");
    }
}

#[test]
fn f16_round_trip() {
    let mut rng = Rng::new(14);
    for x in test_rows(&mut rng) {
        let y = dequantize(GgmlType::F16, &quantize(GgmlType::F16, &x), x.len());
        for (a, b) in x.iter().zip(&y) {
            assert!((a - b).abs() <= f16_err(*a), "{a} → {b}");
        }
    }
}

// ---------------------------------------------------------------- (c) vec_dot

/// The integer dot per block is exact, and every dequantized value here is an exact f32
/// product, so the kernels differ from an f64 dot of the dequantized rows only by f32
/// rounding of one multiply-add per block: ≤ 1e-6 of Σ|w·a|. Q4_1 adds one known deviation:
/// its `m` term uses Q8_1's f16-rounded `s` instead of d·Σq.
#[test]
fn vec_dot_matches_f64_dot_of_dequantized_rows() {
    let mut rng = Rng::new(20);
    for ty in [
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q8_0,
        GgmlType::Q4_K,
        GgmlType::Q6_K,
        GgmlType::F16,
        GgmlType::F32,
    ] {
        let act_ty = ty.vec_dot_type().unwrap();
        for trial in 0..30 {
            let n = 256 * (1 + trial % 8);
            let scale = 10f32.powf(rng.uniform());
            let w: Vec<f32> = (0..n).map(|_| rng.normal() * scale).collect();
            let a: Vec<f32> = (0..n)
                .map(|_| {
                    if trial % 3 == 0 {
                        rng.unit()
                    } else {
                        rng.normal()
                    }
                })
                .collect();
            let (wq, aq) = (quantize(ty, &w), quantize(act_ty, &a));
            let (wd, ad) = (dequantize(ty, &wq, n), dequantize(act_ty, &aq, n));
            let exact: f64 = wd.iter().zip(&ad).map(|(&x, &y)| x as f64 * y as f64).sum();
            let magnitude: f64 = wd
                .iter()
                .zip(&ad)
                .map(|(&x, &y)| (x as f64 * y as f64).abs())
                .sum();
            let mut tolerance = 1e-6 * magnitude + 1e-30;
            let mut reference = exact;
            if ty == GgmlType::Q4_1 {
                for (x, y) in as_blocks::<BlockQ4_1>(&wq)
                    .iter()
                    .zip(as_blocks::<BlockQ8_1>(&aq))
                {
                    let sum: i32 = y.qs.iter().map(|&q| q as i32).sum();
                    let s_error = y.s() as f64 - y.d() as f64 * sum as f64;
                    reference += x.m() as f64 * s_error;
                    tolerance += 1e-6 * (x.m() as f64 * y.s() as f64).abs();
                }
            }
            let got = quant::vec_dot(ty, n, &wq, act_ty, &aq).unwrap() as f64;
            assert!(
                (got - reference).abs() <= tolerance,
                "{ty} n={n}: {got} vs {reference} (tolerance {tolerance})"
            );
        }
    }
}

#[test]
fn per_format_vec_dots_agree_with_dispatch() {
    let mut rng = Rng::new(21);
    let n = 512;
    let w: Vec<f32> = (0..n).map(|_| rng.normal()).collect();
    let a: Vec<f32> = (0..n).map(|_| rng.normal()).collect();
    let q8 = quantize(GgmlType::Q8_0, &a);
    let q81 = quantize(GgmlType::Q8_1, &a);
    let q8k = quantize(GgmlType::Q8_K, &a);
    assert_eq!(
        q4_0::vec_dot(&quantize(GgmlType::Q4_0, &w), &q8),
        quant::vec_dot(
            GgmlType::Q4_0,
            n,
            &quantize(GgmlType::Q4_0, &w),
            GgmlType::Q8_0,
            &q8
        )
        .unwrap()
    );
    assert_eq!(
        q4_1::vec_dot(&quantize(GgmlType::Q4_1, &w), &q81),
        quant::vec_dot(
            GgmlType::Q4_1,
            n,
            &quantize(GgmlType::Q4_1, &w),
            GgmlType::Q8_1,
            &q81
        )
        .unwrap()
    );
    assert_eq!(
        q8_0::vec_dot(&quantize(GgmlType::Q8_0, &w), &q8),
        quant::vec_dot(
            GgmlType::Q8_0,
            n,
            &quantize(GgmlType::Q8_0, &w),
            GgmlType::Q8_0,
            &q8
        )
        .unwrap()
    );
    assert_eq!(
        q4_k::vec_dot(&quantize(GgmlType::Q4_K, &w), &q8k),
        quant::vec_dot(
            GgmlType::Q4_K,
            n,
            &quantize(GgmlType::Q4_K, &w),
            GgmlType::Q8_K,
            &q8k
        )
        .unwrap()
    );
    assert_eq!(
        q6_k::vec_dot(&quantize(GgmlType::Q6_K, &w), &q8k),
        quant::vec_dot(
            GgmlType::Q6_K,
            n,
            &quantize(GgmlType::Q6_K, &w),
            GgmlType::Q8_K,
            &q8k
        )
        .unwrap()
    );

    // Mixed-precision float dots against f32 activations.
    let exact: f64 = w.iter().zip(&a).map(|(&x, &y)| x as f64 * y as f64).sum();
    assert!((fp32::vec_dot_f32(&quantize(GgmlType::F32, &w), &a) as f64 - exact).abs() < 1e-5);
    let wh = dequantize(GgmlType::F16, &quantize(GgmlType::F16, &w), n);
    let exact_h: f64 = wh.iter().zip(&a).map(|(&x, &y)| x as f64 * y as f64).sum();
    assert!((fp16::vec_dot_f32(&quantize(GgmlType::F16, &w), &a) as f64 - exact_h).abs() < 1e-5);
    // Q8_K rows dequantize through the per-format function too.
    let mut y = vec![0f32; n];
    q8_k::dequantize_row(&q8k, &mut y);
    let mut y1 = vec![0f32; n];
    q8_1::dequantize_row(&q81, &mut y1);
    assert!(y.iter().zip(&a).all(|(p, q)| (p - q).abs() < 0.05));
    assert!(y1.iter().zip(&a).all(|(p, q)| (p - q).abs() < 0.05));
}

#[test]
fn dispatch_rejects_bad_calls() {
    let x = vec![0f32; 64];
    let mut out = vec![0u8; 36];
    assert!(quant::quantize_row(GgmlType::Q4_0, &x, &mut out).is_ok());
    assert_eq!(
        quant::quantize_row(GgmlType::Q8_0, &x, &mut out),
        Err(QuantError::ByteLength {
            ty: GgmlType::Q8_0,
            n: 64,
            expected: 68,
            found: 36
        })
    );
    assert_eq!(
        quant::quantize_row(GgmlType::Q4_K, &x, &mut out),
        Err(QuantError::PartialBlock {
            ty: GgmlType::Q4_K,
            n: 64,
            block_size: 256
        })
    );
    let mut y = vec![0f32; 32];
    assert_eq!(
        quant::dequantize_row(GgmlType::Q5_0, &[0; 22], &mut y),
        Err(QuantError::Unsupported(GgmlType::Q5_0))
    );
    let err = quant::vec_dot(GgmlType::Q4_0, 64, &out, GgmlType::Q8_1, &[0; 72]).unwrap_err();
    assert_eq!(
        err,
        QuantError::ActivationType {
            ty: GgmlType::Q4_0,
            expected: GgmlType::Q8_0,
            found: GgmlType::Q8_1
        }
    );
    assert!(err.to_string().contains("q8_0"));
    assert!(matches!(
        quant::vec_dot(GgmlType::Q8_K, 256, &[0; 292], GgmlType::Q8_K, &[0; 292]),
        Err(QuantError::Unsupported(_))
    ));
}

/// Kernels read hostile bytes (NaN/Inf scales, any quants) without panicking.
#[test]
fn kernels_tolerate_arbitrary_bytes() {
    let mut rng = Rng::new(22);
    for ty in [
        GgmlType::F16,
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q8_0,
        GgmlType::Q4_K,
        GgmlType::Q6_K,
    ] {
        let act_ty = ty.vec_dot_type().unwrap();
        for _ in 0..50 {
            let n = 512;
            let w = rng.bytes(ty.row_size(n).unwrap());
            let a = rng.bytes(act_ty.row_size(n).unwrap());
            let mut y = vec![0f32; n];
            quant::dequantize_row(ty, &w, &mut y).unwrap();
            let _ = quant::vec_dot(ty, n, &w, act_ty, &a).unwrap();
        }
    }
}

//! Matrix kernels through the public API: the run-time-selected (SIMD, threaded) `matmul`
//! against the scalar `matmul_reference`, both against an f64 dot of the dequantized
//! weights, `Weight::new` validation, and the variant names.
//!
//! Two paths, each checked against its own bounds: below `MIN_BATCH` = 12 activation rows
//! quantized weights meet activations quantized to the type's `vec_dot_type` (integer
//! dots, in `matmul` and `matmul_reference` alike); from 12 rows on they are dequantized
//! to f32 and take the blocked matrix × matrix kernel like F32/F16 (where the CPU has it;
//! `matmul_reference`, and with it the scalar level, then sums the dequantized products in
//! f64), so no activation quantization error is allowed there.
//!
//! Error bounds, with `S = Σ_c |W[r,c]|·|x[b,c]|` (f64, dequantized weights):
//! - SIMD vs reference, quantized, batch < 12: `|y - y_ref| ≤ 1e-5·S` — both dot the same
//!   quantized activations with exact integer block sums; only the f32 order of the
//!   per-block terms differs.
//! - vs f64, F32/F16: `max(cols/8 + 16, min(cols, 256) + ⌈cols/256⌉ + 1)·2⁻²⁴·S` — f32
//!   accumulation in 16 lanes (the per-row dots), or from 12 activation rows on (the
//!   blocked matrix × matrix kernel) one FMA chain per 256 columns plus one add per 256.
//! - vs f64, quantized, batch ≥ 12: the blocked kernel's `(min(cols, 256) + ⌈cols/256⌉ +
//!   1)·2⁻²⁴·S` (its decoders give the scalar dequantizers' bits, so the weights are exact).
//! - SIMD vs reference, F32/F16 and quantized at batch ≥ 12: the bound vs f64 plus `2⁻²⁴·S`
//!   (the reference sums in f64 and rounds once: itself within `(2⁻²⁴ + cols·2⁻⁵³)·S`).
//! - vs f64, quantized, batch < 12: activation quantization error, per element at most
//!   `e = amax_blk/127 · (1/2 + 127·2⁻¹¹)` for Q8_0/Q8_1 (rounding, plus the f16 scale) and
//!   `amax_blk/127 · 0.501` for Q8_K (f32 scale), giving `Σ_c |W|·e_c`; for Q4_1 also the f16
//!   roundings of Q8_1's `s` and `d` times `m`: `2⁻¹⁰·Σ_blk max|W_blk|·Σ_blk|x|`; plus
//!   `1e-5·S` for f32 arithmetic.
//! - Where the CPU has AVX-512 VNNI, Q8_0/Q4_0/Q4_1/Q4_K at batch ≥ 12 multiply in int8
//!   instead (`kernels::int8_gemm_available`, the runtime's `gemm_i8`), and
//!   `matmul_reference` is that kernel's scalar twin: vs f64 the activations' 8-bit
//!   rounding per 32-block with an f32 scale, `Σ_c |W|·amax_blk/127·0.5` (×1.001) plus
//!   `1e-5·S`; SIMD vs reference `1e-5·S` (they are bit-identical, tested in the crate).

mod common;

use common::rng::Rng;
use eostok_runtime::kernels::{self, matmul, matmul_reference, variant, KernelError, Weight};
use eostok_runtime::quant::{self, GgmlType};

const TYPES: [GgmlType; 7] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::Q8_0,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q4_K,
    GgmlType::Q6_K,
];

fn quantize_rows(ty: GgmlType, w: &[f32], rows: usize, cols: usize) -> Vec<u8> {
    let rb = ty.row_size(cols).unwrap();
    let mut out = vec![0u8; rows * rb];
    for (src, dst) in w.chunks_exact(cols).zip(out.chunks_exact_mut(rb)) {
        quant::quantize_row(ty, src, dst).unwrap();
    }
    out
}

fn dequantize_rows(ty: GgmlType, data: &[u8], rows: usize, cols: usize) -> Vec<f32> {
    let rb = ty.row_size(cols).unwrap();
    let mut out = vec![0f32; rows * cols];
    for (src, dst) in data.chunks_exact(rb).zip(out.chunks_exact_mut(cols)) {
        quant::dequantize_row(ty, src, dst).unwrap();
    }
    out
}

/// Activations with per-row scale changes, a few outliers and an all-zero block, as real
/// hidden states have.
fn activations(rng: &mut Rng, batch: usize, cols: usize) -> Vec<f32> {
    let mut x = vec![0f32; batch * cols];
    for (b, row) in x.chunks_exact_mut(cols).enumerate() {
        let scale = 0.1 + b as f32;
        for v in row.iter_mut() {
            *v = scale * rng.normal();
            if rng.below(97) == 0 {
                *v *= 20.0;
            }
        }
        if cols >= 64 && b % 2 == 1 {
            row[32..64].fill(0.0);
        }
    }
    x
}

struct Case {
    ty: GgmlType,
    rows: usize,
    cols: usize,
    batch: usize,
}

/// Ragged rows (not multiples of the task chunk or of 4), batch 1..5 plus a batch beyond
/// the kernels' 64-row activation tile, cols of several block counts (odd and even, for the
/// two-accumulator kernels), and shapes large enough to take the threaded path.
fn cases() -> Vec<Case> {
    let mut out = Vec::new();
    for ty in TYPES {
        let blk = if matches!(ty, GgmlType::Q4_K | GgmlType::Q6_K) {
            256
        } else {
            32
        };
        let cols_list = [blk, 3 * blk, 8 * blk + if blk == 32 { 32 } else { 256 }];
        let shapes = [
            (1, 0, 1),
            (3, 1, 2),
            (17, 2, 3),
            (67, 0, 4),
            (130, 1, 5),
            (5, 2, 1),
            (301, 2, 1),
            (1000, 1, 2),
            (41, 1, 70),
            (9, 0, 9),
        ];
        for (rows, ci, batch) in shapes {
            out.push(Case {
                ty,
                rows,
                cols: cols_list[ci],
                batch,
            });
        }
    }
    out
}

/// Batch from which every type takes the blocked kernel (`kernels::gemm::MIN_BATCH`).
const MIN_BATCH: usize = 12;

/// Whether quantized weights at this batch are dequantized (the blocked kernel) rather than
/// dotted against quantized activations.
fn dequantized(ty: GgmlType, batch: usize) -> bool {
    !matches!(ty, GgmlType::F32 | GgmlType::F16) && batch >= MIN_BATCH && !int8(ty, batch)
}

/// Whether `matmul` (and `matmul_reference`) take the int8 AVX-512 VNNI GEMM.
fn int8(ty: GgmlType, batch: usize) -> bool {
    kernels::int8_gemm_available()
        && matches!(ty, GgmlType::Q8_0 | GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q4_K)
        && batch >= MIN_BATCH
}

/// The bounds (see the module doc) for one output: `matmul` vs f64, `matmul` vs
/// `matmul_reference`, `matmul_reference` vs f64.
struct Bounds {
    exact: f64,
    vs_reference: f64,
    reference: f64,
}

/// `wr`: the weight row dequantized, `xr` the activation row, `s = Σ|w·x|`.
fn bounds(ty: GgmlType, cols: usize, batch: usize, wr: &[f32], xr: &[f32], s: f64) -> Bounds {
    let gemm = (cols.min(256) + cols.div_ceil(256) + 1) as f64 * 2f64.powi(-24) * s;
    let f64_sum = (2f64.powi(-24) + cols as f64 * 2f64.powi(-53)) * s + 1e-30;
    if matches!(ty, GgmlType::F32 | GgmlType::F16) {
        let dots = (cols as f64 / 8.0 + 16.0) * 2f64.powi(-24) * s;
        let exact = dots.max(gemm);
        return Bounds {
            exact,
            vs_reference: exact + 2f64.powi(-24) * s + 1e-30,
            reference: exact,
        };
    }
    if dequantized(ty, batch) {
        // No activation quantization: the F32 bounds of the blocked kernel, and the
        // reference is the f64 sum rounded once.
        return Bounds {
            exact: gemm + 1e-30,
            vs_reference: gemm + 2f64.powi(-24) * s + 1e-30,
            reference: f64_sum,
        };
    }
    if int8(ty, batch) {
        let mut e = 0.0;
        for (wb, xb) in wr.chunks(32).zip(xr.chunks(32)) {
            let amax = xb.iter().fold(0f64, |m, &v| m.max(v.abs() as f64));
            e += amax / 127.0 * 0.5 * 1.001 * wb.iter().map(|&v| (v as f64).abs()).sum::<f64>();
        }
        return Bounds {
            exact: e + 1e-5 * s,
            vs_reference: 1e-5 * s + 1e-30,
            reference: e + 1e-5 * s,
        };
    }
    let act_blk = match ty {
        GgmlType::Q4_K | GgmlType::Q6_K => 256,
        _ => 32,
    };
    let mut e = 0.0;
    for (wb, xb) in wr.chunks(act_blk).zip(xr.chunks(act_blk)) {
        let amax = xb.iter().fold(0f64, |m, &v| m.max(v.abs() as f64));
        let per = match ty {
            GgmlType::Q4_K | GgmlType::Q6_K => amax / 127.0 * 0.501,
            // + f16 subnormal scale rounding for tiny blocks
            _ => amax / 127.0 * (0.5 + 127.0 / 2048.0) + 127.0 * 2f64.powi(-25),
        };
        e += per * wb.iter().map(|&v| (v as f64).abs()).sum::<f64>();
        if ty == GgmlType::Q4_1 {
            let wmax = wb.iter().fold(0f64, |m, &v| m.max(v.abs() as f64));
            let xsum: f64 = xb.iter().map(|&v| (v as f64).abs()).sum();
            e += 2f64.powi(-10) * wmax * xsum;
        }
    }
    Bounds {
        exact: e + 1e-5 * s,
        vs_reference: 1e-5 * s + 1e-30,
        reference: e + 1e-5 * s,
    }
}

struct Stats {
    worst_vs_ref: f64,
    worst_vs_exact: f64,
}

fn check_case(c: &Case, rng: &mut Rng, stats: &mut Stats) {
    let Case {
        ty,
        rows,
        cols,
        batch,
    } = *c;
    let wf: Vec<f32> = (0..rows * cols).map(|_| rng.normal() * 0.05).collect();
    let data = quantize_rows(ty, &wf, rows, cols);
    let wd = dequantize_rows(ty, &data, rows, cols);
    let x = activations(rng, batch, cols);
    let w = Weight::new(ty, rows, cols, &data).unwrap();

    let mut y = vec![f32::NAN; batch * rows];
    let mut y_ref = vec![f32::NAN; batch * rows];
    matmul(&w, &x, batch, &mut y);
    matmul_reference(&w, &x, batch, &mut y_ref);

    for b in 0..batch {
        let xr = &x[b * cols..(b + 1) * cols];
        for r in 0..rows {
            let wr = &wd[r * cols..(r + 1) * cols];
            let exact: f64 = wr.iter().zip(xr).map(|(&w, &x)| w as f64 * x as f64).sum();
            let s: f64 = wr
                .iter()
                .zip(xr)
                .map(|(&w, &x)| (w as f64 * x as f64).abs())
                .sum();
            let bound = bounds(ty, cols, batch, wr, xr, s);
            let (bound_exact, bound_ref) = (bound.exact, bound.vs_reference);
            let (got, want) = (y[b * rows + r] as f64, y_ref[b * rows + r] as f64);
            let ctx = format!("{ty} rows={rows} cols={cols} batch={batch} (r={r}, b={b})");
            assert!(got.is_finite(), "{ctx}: non-finite {got}");
            assert!(
                (got - want).abs() <= bound_ref,
                "{ctx}: simd {got} vs reference {want}, bound {bound_ref}"
            );
            assert!(
                (got - exact).abs() <= bound_exact,
                "{ctx}: simd {got} vs f64 {exact}, bound {bound_exact}"
            );
            assert!(
                (want - exact).abs() <= bound.reference,
                "{ctx}: reference {want} vs f64 {exact}, bound {}",
                bound.reference
            );
            stats.worst_vs_ref = stats.worst_vs_ref.max((got - want).abs() / bound_ref);
            stats.worst_vs_exact = stats.worst_vs_exact.max((got - exact).abs() / bound_exact);
        }
    }
}

#[test]
fn matmul_matches_reference_and_f64_on_random_shapes() {
    let mut rng = Rng::new(0x5eed_0001);
    for ty in TYPES {
        let mut stats = Stats {
            worst_vs_ref: 0.0,
            worst_vs_exact: 0.0,
        };
        for c in cases().iter().filter(|c| c.ty == ty) {
            check_case(c, &mut rng, &mut stats);
        }
        // Printed with --nocapture: how much of each bound is used.
        println!(
            "{ty:>5} ({}): worst |simd-ref|/bound {:.3}, worst |simd-f64|/bound {:.3}",
            variant(ty),
            stats.worst_vs_ref,
            stats.worst_vs_exact
        );
    }
}

/// F32/F16 from 12 activation rows on take the blocked matrix × matrix kernel: shapes that
/// leave remainders at every level of its blocking (cols past one and two 256-column blocks
/// and not a multiple of 8; rows past the 96-row block and not a multiple of the 6-row
/// tile; batches on both sides of the 16-lane panel), plus one exactly aligned shape.
#[test]
fn blocked_f32_f16_kernel_matches_reference_and_f64_on_ragged_shapes() {
    let mut rng = Rng::new(0x5eed_0004);
    for ty in [GgmlType::F32, GgmlType::F16] {
        let mut stats = Stats {
            worst_vs_ref: 0.0,
            worst_vs_exact: 0.0,
        };
        for (rows, cols, batch) in [
            (1, 1, 12),
            (7, 5, 13),
            (6, 256, 16),
            (97, 300, 17),
            (13, 517, 31),
            (193, 777, 33),
            (192, 512, 48),
            (5, 64, 70),
        ] {
            let c = Case {
                ty,
                rows,
                cols,
                batch,
            };
            check_case(&c, &mut rng, &mut stats);
        }
        println!(
            "{ty:>5} ({}): blocked kernel, worst |simd-ref|/bound {:.3}, |simd-f64|/bound {:.3}",
            variant(ty),
            stats.worst_vs_ref,
            stats.worst_vs_exact
        );
    }
}

/// Quantized weights from `MIN_BATCH` activation rows on take the blocked kernel with a
/// dequantizing decode: batches 12, 17 and 33 (a partial 16-lane panel each), rows not
/// a multiple of the 6-row tile or the 96-row block, cols of 1, 2 and 3 256-column blocks
/// (for the 32-value types also ending inside one), and one shape from the threaded path.
/// Checked against the blocked kernel's F32 bound on the dequantized weights, far below
/// the activation quantization error the integer dots would make; batch 11 beside each,
/// which must still meet only the integer path's bounds.
#[test]
fn blocked_quantized_kernel_matches_reference_and_f64_on_ragged_shapes() {
    let mut rng = Rng::new(0x5eed_0005);
    for ty in TYPES.into_iter().skip(2) {
        let blk = ty.block_size();
        let cols_list: Vec<usize> = if blk == 256 {
            vec![256, 512, 768]
        } else {
            vec![32, 256, 288, 608, 768]
        };
        let mut stats = Stats {
            worst_vs_ref: 0.0,
            worst_vs_exact: 0.0,
        };
        let mut shapes = Vec::new();
        for (i, &cols) in cols_list.iter().enumerate() {
            for (j, rows) in [1, 7, 97, 193].into_iter().enumerate() {
                let batch = [MIN_BATCH, 17, 33][(i + j) % 3];
                shapes.push((rows, cols, batch));
            }
        }
        shapes.push((13, cols_list[1], MIN_BATCH - 1));
        shapes.push((301, cols_list[cols_list.len() - 1], 40));
        for (rows, cols, batch) in shapes {
            let c = Case {
                ty,
                rows,
                cols,
                batch,
            };
            let mut st = Stats {
                worst_vs_ref: 0.0,
                worst_vs_exact: 0.0,
            };
            check_case(&c, &mut rng, &mut st);
            if dequantized(ty, batch) {
                stats.worst_vs_ref = stats.worst_vs_ref.max(st.worst_vs_ref);
                stats.worst_vs_exact = stats.worst_vs_exact.max(st.worst_vs_exact);
            }
        }
        println!(
            "{ty:>5} ({}): dequantized blocked kernel, worst |simd-ref|/bound {:.3}, \
             |simd-f64|/bound {:.3}",
            variant(ty),
            stats.worst_vs_ref,
            stats.worst_vs_exact
        );
    }
}

/// Random bytes in the quant fields (every nibble / 6-bit / 8-bit code, including Q8_0's
/// -128 and the largest 6-bit scales and mins) with sane f16 scales: the SIMD integer paths
/// must neither saturate nor overflow where the scalar reference does not.
#[test]
fn matmul_matches_reference_on_random_quant_bytes() {
    let mut rng = Rng::new(0x5eed_0002);
    // (type, block bytes, offsets of f16 scale fields)
    let layouts: [(GgmlType, usize, &[usize]); 5] = [
        (GgmlType::Q4_0, 18, &[0]),
        (GgmlType::Q4_1, 20, &[0, 2]),
        (GgmlType::Q8_0, 34, &[0]),
        (GgmlType::Q4_K, 144, &[0, 2]),
        (GgmlType::Q6_K, 210, &[208]),
    ];
    for (ty, bsize, scale_offsets) in layouts {
        let (rows, cols) = (37, 2 * ty.block_size() * if bsize > 100 { 1 } else { 8 });
        let mut data = rng.bytes(rows * ty.row_size(cols).unwrap());
        for block in data.chunks_exact_mut(bsize) {
            for &o in scale_offsets {
                let v = half::f16::from_f32(rng.uniform() * 0.01);
                block[o..o + 2].copy_from_slice(&v.to_le_bytes());
            }
        }
        let w = Weight::new(ty, rows, cols, &data).unwrap();
        let wd = dequantize_rows(ty, &data, rows, cols);
        // The integer dots (6) and the dequantizing blocked kernel (13).
        for batch in [6, MIN_BATCH + 1] {
            // Extreme activations: every block has its ±amax, so quants reach ±127.
            let x: Vec<f32> = (0..batch * cols)
                .map(|i| {
                    if i % 7 == 0 {
                        -3.0
                    } else {
                        rng.uniform() * 3.0
                    }
                })
                .collect();
            let mut y = vec![0f32; batch * rows];
            let mut y_ref = vec![0f32; batch * rows];
            matmul(&w, &x, batch, &mut y);
            matmul_reference(&w, &x, batch, &mut y_ref);
            for b in 0..batch {
                for r in 0..rows {
                    let s: f64 = wd[r * cols..(r + 1) * cols]
                        .iter()
                        .zip(&x[b * cols..(b + 1) * cols])
                        .map(|(&w, &x)| (w as f64 * x as f64).abs())
                        .sum();
                    let (got, want) = (y[b * rows + r], y_ref[b * rows + r]);
                    let (wr, xr) = (&wd[r * cols..(r + 1) * cols], &x[b * cols..(b + 1) * cols]);
                    let bound = bounds(ty, cols, batch, wr, xr, s).vs_reference;
                    assert!(
                        ((got - want) as f64).abs() <= bound,
                        "{ty} r={r} b={b} batch={batch}: simd {got} vs reference {want} \
                     (bound {bound})"
                    );
                }
            }
        }
    }
}

#[test]
fn matmul_handles_empty_shapes() {
    for ty in TYPES {
        let w = Weight::new(ty, 0, ty.block_size() * 32, &[]).unwrap();
        let mut y: Vec<f32> = vec![];
        matmul(&w, &vec![1.0; 3 * 32 * ty.block_size()], 3, &mut y);
        let w = Weight::new(ty, 4, 0, &[]).unwrap();
        let mut y = vec![f32::NAN; 8];
        matmul(&w, &[], 2, &mut y);
        assert!(y.iter().all(|&v| v == 0.0), "{ty}: zero columns give zeros");
    }
}

#[test]
fn weight_new_checks_type_blocks_and_length() {
    let data = vec![0u8; 2 * 18];
    assert!(Weight::new(GgmlType::Q4_0, 2, 32, &data).is_ok());
    assert_eq!(
        Weight::new(GgmlType::Q4_0, 2, 48, &data).unwrap_err(),
        KernelError::PartialBlock {
            ty: GgmlType::Q4_0,
            cols: 48,
            block_size: 32
        }
    );
    assert_eq!(
        Weight::new(GgmlType::Q4_0, 3, 32, &data).unwrap_err(),
        KernelError::ByteLength {
            ty: GgmlType::Q4_0,
            rows: 3,
            cols: 32,
            expected: 54,
            found: 36
        }
    );
    for ty in [
        GgmlType::Q8_K,
        GgmlType::Q8_1,
        GgmlType::Q5_0,
        GgmlType::BF16,
    ] {
        assert_eq!(
            Weight::new(ty, 1, 256, &data).unwrap_err(),
            KernelError::Unsupported(ty)
        );
        assert_eq!(variant(ty), "unsupported");
    }
    assert!(matches!(
        Weight::new(GgmlType::F32, usize::MAX / 2, 4, &data),
        Err(KernelError::Overflow { .. })
    ));
}

#[test]
#[should_panic(expected = "x is not [batch, cols]")]
fn matmul_rejects_wrong_activation_length() {
    let data = vec![0u8; 2 * 18];
    let w = Weight::new(GgmlType::Q4_0, 2, 32, &data).unwrap();
    matmul(&w, &[0.0; 31], 1, &mut [0.0; 2]);
}

#[test]
#[should_panic(expected = "matmul: a 2x32 q4_0 matrix takes 36 bytes")]
fn matmul_rechecks_a_hand_built_weight() {
    let data = vec![0u8; 18];
    let w = Weight {
        ty: GgmlType::Q4_0,
        rows: 2,
        cols: 32,
        data: &data,
    };
    matmul(&w, &[0.0; 32], 1, &mut [0.0; 2]);
}

#[test]
#[cfg(not(target_arch = "aarch64"))]
fn variants_are_simd_where_the_cpu_has_avx2() {
    let features = kernels::cpu_features();
    println!("cpu features: {features:?}");
    for ty in TYPES {
        println!("{ty:>5}: {}", variant(ty));
    }
    let cap = std::env::var("EOSTOK_KERNELS").unwrap_or_default();
    let avx2 = ["avx2", "fma", "f16c"].iter().all(|f| features.contains(f));
    if !avx2 || cap == "scalar" {
        for ty in TYPES {
            let want = if matches!(ty, GgmlType::F32 | GgmlType::F16) {
                "wide"
            } else {
                "scalar"
            };
            assert_eq!(variant(ty), want, "{ty}");
        }
        return;
    }
    for ty in TYPES {
        let v = variant(ty);
        assert_ne!(
            v, "scalar",
            "{ty} fell back to the scalar kernel on an AVX2 machine"
        );
        assert!(v.starts_with("avx2"), "{ty}: {v}");
    }
    let vnni = features.contains(&"avxvnni") && cap != "avx2";
    for ty in [GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q8_0] {
        let want = if vnni { "avx2+avx-vnni" } else { "avx2+fma" };
        assert_eq!(variant(ty), want, "{ty}");
    }
}

/// aarch64: NEON for every type; `sdot` where the CPU has dotprod, `smmla` (batch > 1) for
/// the integer types where it also has i8mm; `EOSTOK_KERNELS` caps the level.
#[test]
#[cfg(target_arch = "aarch64")]
fn variants_are_neon_on_aarch64() {
    let features = kernels::cpu_features();
    println!("cpu features: {features:?}");
    for ty in TYPES {
        println!("{ty:>5}: {}", variant(ty));
    }
    let cap = std::env::var("EOSTOK_KERNELS").unwrap_or_default();
    let has = |f: &str| features.contains(&f);
    // 0 scalar, 1 neon, 2 dotprod, 3 i8mm
    let detected = if has("dotprod") && has("i8mm") {
        3
    } else if has("dotprod") {
        2
    } else {
        1
    };
    let level = detected.min(match cap.as_str() {
        "scalar" => 0,
        "neon" => 1,
        "dotprod" => 2,
        _ => 3,
    });
    for ty in TYPES {
        let want = match (level, ty) {
            (0, GgmlType::F32 | GgmlType::F16) => "wide",
            (0, _) => "scalar",
            (_, GgmlType::F32) => "neon",
            (_, GgmlType::F16) => "neon+fcvtl",
            (1, _) => "neon",
            (3, _) => "neon+i8mm",
            _ => "neon+dotprod",
        };
        assert_eq!(variant(ty), want, "{ty} at level {level} (cap {cap:?})");
    }
}

/// Every batch 1..=9 (the i8mm kernel's 2×2 tiles with odd tails, the 4-row groups with
/// 1..3 left over) on ragged row counts, for every type.
#[test]
fn matmul_matches_reference_for_every_batch_up_to_9() {
    let mut rng = Rng::new(0x5eed_0003);
    for ty in TYPES {
        let blk = ty.block_size();
        let mut stats = Stats {
            worst_vs_ref: 0.0,
            worst_vs_exact: 0.0,
        };
        for batch in 1..=9 {
            for (rows, nblk) in [(1, 1), (2, 3), (5, 2), (7, 9)] {
                let c = Case {
                    ty,
                    rows,
                    cols: nblk * blk,
                    batch,
                };
                check_case(&c, &mut rng, &mut stats);
            }
        }
        println!(
            "{ty:>5} ({}): batches 1..9, worst |simd-ref|/bound {:.3}",
            variant(ty),
            stats.worst_vs_ref
        );
    }
}

/// The levels `lower_kernel_levels_pass_the_same_tests` re-runs this binary at.
#[cfg(not(target_arch = "aarch64"))]
const LOWER_CAPS: [&str; 3] = ["avx-vnni", "avx2", "scalar"];
#[cfg(target_arch = "aarch64")]
const LOWER_CAPS: [&str; 3] = ["dotprod", "neon", "scalar"];

/// The variants below the best one this CPU has (the AVX2 GEMM tile without AVX-512, AVX2
/// without VNNI; the scalar and `wide` paths) are checked by re-running this binary's tests
/// with `EOSTOK_KERNELS` capping the level, since the choice is made once per process.
#[test]
fn lower_kernel_levels_pass_the_same_tests() {
    if std::env::var_os("EOSTOK_KERNELS").is_some() {
        return; // already the child
    }
    let exe = std::env::current_exe().unwrap();
    for cap in LOWER_CAPS {
        // Under qemu-user (scripts/cross-aarch64) the child needs the emulator too.
        let mut cmd = match std::env::var("EOSTOK_TEST_RUNNER") {
            Ok(runner) if !runner.trim().is_empty() => {
                let mut words = runner.split_whitespace();
                let mut c = std::process::Command::new(words.next().unwrap());
                c.args(words).arg(&exe);
                c
            }
            _ => std::process::Command::new(&exe),
        };
        let out = cmd
            .env("EOSTOK_KERNELS", cap)
            .args([
                "--test-threads",
                "2",
                "--nocapture",
                "--skip",
                "lower_kernel_levels",
            ])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        println!("EOSTOK_KERNELS={cap}:\n{text}");
        assert!(
            out.status.success(),
            "EOSTOK_KERNELS={cap} failed:\n{text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// `matmul_many` (one activation quantization, every weight's rows in one parallel job)
/// gives exactly the bits of one `matmul` per weight: for every type, batches 1..=5 and
/// 13 (the blocked kernel's fallback), shapes on both sides of the threaded threshold, and
/// a mix of types (the per-weight fallback).
#[test]
fn matmul_many_equals_one_matmul_per_weight() {
    let mut rng = Rng::new(0x5eed_0004);
    for ty in TYPES {
        let blk = ty.block_size();
        for batch in [1, 2, 3, 5, 13] {
            for (rows, nblk) in [([3, 1, 5], 2), ([300, 100, 257], 1024 / blk.min(1024))] {
                let cols = nblk * blk;
                let data: Vec<Vec<u8>> = rows
                    .iter()
                    .map(|&r| {
                        let w: Vec<f32> = (0..r * cols).map(|_| rng.normal()).collect();
                        quantize_rows(ty, &w, r, cols)
                    })
                    .collect();
                let ws: Vec<Weight> = rows
                    .iter()
                    .zip(&data)
                    .map(|(&r, d)| Weight::new(ty, r, cols, d).unwrap())
                    .collect();
                let x = activations(&mut rng, batch, cols);
                let mut many: Vec<Vec<f32>> = rows.iter().map(|&r| vec![f32::NAN; batch * r]).collect();
                let refs: Vec<&Weight> = ws.iter().collect();
                let mut outs: Vec<&mut [f32]> = many.iter_mut().map(|v| v.as_mut_slice()).collect();
                kernels::matmul_many(&refs, &x, batch, &mut outs);
                for (j, w) in ws.iter().enumerate() {
                    let mut one = vec![f32::NAN; batch * w.rows];
                    matmul(w, &x, batch, &mut one);
                    let same = one.iter().zip(&many[j]).all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(same, "{ty} batch {batch} weight {j} ({}x{cols}): matmul_many differs", w.rows);
                }
            }
        }
    }
    // Mixed types fall back to one matmul each.
    let a = quantize_rows(GgmlType::Q8_0, &[0.5; 4 * 64], 4, 64);
    let b = quantize_rows(GgmlType::F32, &[0.25; 2 * 64], 2, 64);
    let wa = Weight::new(GgmlType::Q8_0, 4, 64, &a).unwrap();
    let wb = Weight::new(GgmlType::F32, 2, 64, &b).unwrap();
    let (mut ya, mut yb) = (vec![0f32; 4], vec![0f32; 2]);
    kernels::matmul_many(&[&wa, &wb], &[1.0; 64], 1, &mut [&mut ya[..], &mut yb[..]]);
    assert!(ya.iter().all(|&v| (v - 32.0).abs() < 0.1), "{ya:?}");
    assert!(yb.iter().all(|&v| v == 16.0), "{yb:?}");
}

/// The row split follows the thread count, but every row meets the same kernel path
/// whatever the split, so the bits do not depend on the number of threads (an image drawn
/// on a 2-core laptop and on a 16-core server from the same seed is the same image).
#[test]
fn matmul_bits_do_not_depend_on_the_thread_count() {
    let mut rng = Rng::new(0x5eed_0005);
    for ty in TYPES {
        let cols = 1024;
        let rows = 301;
        let w: Vec<f32> = (0..rows * cols).map(|_| rng.normal()).collect();
        let data = quantize_rows(ty, &w, rows, cols);
        let weight = Weight::new(ty, rows, cols, &data).unwrap();
        for batch in [1, 2, 3] {
            let x = activations(&mut rng, batch, cols);
            let run = |threads: usize| {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                let mut y = vec![f32::NAN; batch * rows];
                pool.install(|| matmul(&weight, &x, batch, &mut y));
                y
            };
            let one = run(1);
            for threads in [2, 3, 5] {
                let y = run(threads);
                let same = one.iter().zip(&y).all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same, "{ty} batch {batch}: {threads} threads differ from 1");
            }
        }
    }
}

/// `variant_at` names the path a call of each batch takes: the per-row kernel's name below
/// the blocked kernels' batch (Q8_0 at batch 1 on AVX-512 VNNI: its 512-bit matrix × vector),
/// a GEMM from there on, the int8 one exactly where `int8_gemm_available` says.
#[test]
fn variant_at_names_the_path_taken() {
    let int8 = kernels::int8_gemm_available();
    for ty in TYPES {
        let (small, large) = (kernels::variant_at(ty, 4), kernels::variant_at(ty, MIN_BATCH));
        println!("{ty:>5}: batch 4 {small}, batch {MIN_BATCH} {large}, batch 1 {}", kernels::variant_at(ty, 1));
        assert_eq!(small, variant(ty), "{ty}: below the GEMM's batch the per-row kernel runs");
        let served = matches!(ty, GgmlType::Q8_0 | GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q4_K);
        assert_eq!(large == "avx512-vnni i8 gemm", int8 && served, "{ty}: {large}");
        if variant(ty) != "scalar" && variant(ty) != "wide" {
            assert!(large.ends_with("gemm"), "{ty}: a SIMD level has a GEMM from {MIN_BATCH} rows: {large}");
        }
    }
    assert_eq!(kernels::variant_at(GgmlType::Q8_0, 1) == "avx512-vnni", int8 && variant(GgmlType::Q8_0) == "avx2+avx-vnni");
}

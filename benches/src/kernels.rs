//! Every runtime kernel on the real shapes of the B and L presets: matrix × vector (the AR
//! step; weights cycled through copies far larger than the caches, so they come from
//! memory as in decoding) in GB/s and fraction of the measured bandwidth, and matrix ×
//! matrix (the decoder's token rows) in GFLOP/s and fraction of peak FMA — beside candle's
//! CPU matmul on the same shapes (`QMatMul` on the same bytes; f32 `Tensor::matmul` for the
//! decoder).

use crate::gen::{ggml_type, random_tensor, random_values};
use crate::roofline::Limits;
use crate::util::{Stats, Table};
use anyhow::Result;
use candle_core::quantized::{ggml_file::qtensor_from_ggml, GgmlDType, QMatMul};
use candle_core::{Device, Module, Tensor};
use eostok_models::Config;
use eostok_runtime::kernels::{matmul, variant_at, Weight};
use eostok_runtime::quant::GgmlType;
use std::time::Instant;

pub fn candle_dtype(t: GgmlType) -> Option<GgmlDType> {
    Some(match t {
        GgmlType::F32 => GgmlDType::F32,
        GgmlType::F16 => GgmlDType::F16,
        GgmlType::Q8_0 => GgmlDType::Q8_0,
        GgmlType::Q4_0 => GgmlDType::Q4_0,
        GgmlType::Q4_1 => GgmlDType::Q4_1,
        GgmlType::Q4_K => GgmlDType::Q4K,
        GgmlType::Q6_K => GgmlDType::Q6K,
        _ => return None,
    })
}

/// (part, rows, cols, batch) of a preset: the AR step's matrices at batch 1, the decoder's
/// at its token rows (latents + patches) for one image.
pub fn shapes(cfg: &Config) -> Vec<(String, usize, usize, usize)> {
    let (d, f, k) = (cfg.ar.width, cfg.ar.ffn_hidden, cfg.codebook_size);
    let (dd, dh) = (cfg.decoder.width, cfg.decoder.mlp_hidden());
    let s = cfg.latent_tokens + cfg.num_patches();
    vec![
        ("ar.attn_q/k/v/o".into(), d, d, 1),
        ("ar.ffn_gate/up".into(), f, d, 1),
        ("ar.ffn_down".into(), d, f, 1),
        ("ar.output".into(), k, d, 1),
        ("dec.qkv".into(), 3 * dd, dd, s),
        ("dec.attn_out".into(), dd, dd, s),
        ("dec.ffn_up".into(), dh, dd, s),
        ("dec.ffn_down".into(), dd, dh, s),
        ("dec.pixel_out".into(), cfg.patch_dim(), dd, s),
    ]
}

pub struct Row {
    pub config: String,
    pub ty: String,
    pub part: String,
    pub rows: usize,
    pub cols: usize,
    pub batch: usize,
    pub variant: String,
    pub ours_s: Stats,
    pub candle_s: Option<Stats>,
    pub weight_bytes: usize,
}

/// Times `f(i)` over `reps` rounds of `n` calls; seconds per call.
fn per_call(reps: usize, n: usize, mut f: impl FnMut(usize)) -> Stats {
    f(0);
    let xs: Vec<f64> = (0..reps)
        .map(|_| {
            let t = Instant::now();
            for i in 0..n {
                f(i);
            }
            t.elapsed().as_secs_f64() / n as f64
        })
        .collect();
    Stats::of(&xs)
}

pub fn run(
    configs: &[String],
    types: &[String],
    reps: usize,
    with_candle: bool,
    // Bytes of weight copies cycled through by the matrix × vector runs.
    cycle_bytes: usize,
    lim: &Limits,
    json: bool,
) -> Result<()> {
    let mut table = Table::new(
        json,
        &[
            ("config", 6),
            ("type", 5),
            ("part", 16),
            ("rows×cols×batch", 16),
            ("variant", 14),
            ("µs/call", 20),
            ("GB/s", 7),
            ("GFLOP/s", 8),
            ("%roof", 6),
            ("candle µs", 10),
            ("vs candle", 9),
        ],
    );
    let dev = Device::Cpu;
    let mut seen = std::collections::HashSet::new();
    for config in configs {
        let cfg = Config::load(config)
            .map_err(|e| eostok_models::exit::bad_input(format!("--configs: {e}")))?;
        for ty_name in types {
            let ty = ggml_type(ty_name)?;
            for (part, rows, cols, batch) in shapes(&cfg) {
                // B and L share the AR width and the decoder: report each shape once.
                let key = (ty_name.clone(), part.clone(), rows, cols, batch);
                let shared = !seen.insert(key);
                if shared {
                    continue;
                }
                if ty.row_size(cols).is_none() {
                    continue;
                }
                let one = random_tensor(
                    rows as u64 * 31 + cols as u64,
                    &[rows, cols],
                    ty,
                    0.0,
                    1.0 / (cols as f32).sqrt(),
                )?;
                let copies = if batch == 1 {
                    cycle_bytes.div_ceil(one.len()).max(1)
                } else {
                    1
                };
                let mats: Vec<Vec<u8>> = (0..copies).map(|_| one.clone()).collect();
                let ws: Vec<Weight> = mats
                    .iter()
                    .map(|m| Weight::new(ty, rows, cols, m))
                    .collect::<Result<_, _>>()?;
                let x = random_values(7, batch * cols, 0.0, 1.0);
                let mut y = vec![0f32; batch * rows];
                let calls = if batch == 1 { copies * 2 } else { 3 };
                let ours = per_call(reps, calls, |i| matmul(&ws[i % copies], &x, batch, &mut y));
                let candle = match (with_candle, candle_dtype(ty)) {
                    (true, Some(cd)) => {
                        let xt = Tensor::from_vec(x.clone(), (batch, cols), &dev)?;
                        if batch == 1 {
                            let qs: Vec<QMatMul> = mats
                                .iter()
                                .map(|m| {
                                    qtensor_from_ggml(cd, m, vec![rows, cols], &dev)
                                        .and_then(QMatMul::from_qtensor)
                                })
                                .collect::<candle_core::Result<_>>()?;
                            Some(per_call(reps, calls, |i| {
                                std::hint::black_box(qs[i % copies].forward(&xt).unwrap());
                            }))
                        } else if ty == GgmlType::F32 {
                            // candle's CPU matmul (gemm) on the same f32 weights.
                            let mut wf = vec![0f32; rows * cols];
                            eostok_runtime::quant::dequantize_row(ty, &mats[0], &mut wf)
                                .map_err(|e| anyhow::anyhow!("{e}"))?;
                            let wt = Tensor::from_vec(wf, (rows, cols), &dev)?.t()?;
                            Some(per_call(reps, calls, |_| {
                                std::hint::black_box(xt.matmul(&wt).unwrap());
                            }))
                        } else {
                            let q = QMatMul::from_qtensor(qtensor_from_ggml(
                                cd,
                                &mats[0],
                                vec![rows, cols],
                                &dev,
                            )?)?;
                            Some(per_call(reps, calls, |_| {
                                std::hint::black_box(q.forward(&xt).unwrap());
                            }))
                        }
                    }
                    _ => None,
                };
                let r = Row {
                    config: cfg.name.clone(),
                    ty: ty_name.clone(),
                    part,
                    rows,
                    cols,
                    batch,
                    variant: variant_at(ty, batch),
                    ours_s: ours,
                    candle_s: candle,
                    weight_bytes: one.len(),
                };
                emit(&mut table, &r, lim);
            }
        }
    }
    Ok(())
}

fn emit(table: &mut Table, r: &Row, lim: &Limits) {
    let t = r.ours_s.median;
    let gbs = r.weight_bytes as f64 / t / 1e9;
    let gflops = 2.0 * (r.rows * r.cols * r.batch) as f64 / t / 1e9;
    // Matrix × vector is bound by memory, matrix × matrix by FMA (f32/f16, and quantized
    // weights dequantized into the f32 GEMM) or by int8 dots (the AVX-512 VNNI GEMM).
    let quantized = !matches!(r.ty.as_str(), "f32" | "f16");
    let int8 = r.variant.contains("i8 gemm");
    let roof = if r.batch == 1 {
        gbs / lim.bandwidth_gbs
    } else if int8 {
        gflops / lim.int8_gops
    } else {
        gflops / lim.fma_gflops
    };
    let vs = r.candle_s.map(|c| c.median / t);
    table.row(
        &[
            r.config.clone(),
            r.ty.clone(),
            r.part.clone(),
            format!("{}×{}×{}", r.rows, r.cols, r.batch),
            r.variant.to_string(),
            Stats { median: r.ours_s.median * 1e6, min: r.ours_s.min * 1e6, max: r.ours_s.max * 1e6, n: r.ours_s.n }.show(1),
            format!("{gbs:.1}"),
            format!("{gflops:.1}"),
            format!("{:.0}%", 100.0 * roof),
            r.candle_s.map(|c| format!("{:.1}", c.median * 1e6)).unwrap_or_else(|| "-".into()),
            vs.map(|v| format!("{v:.2}×")).unwrap_or_else(|| "-".into()),
        ],
        serde_json::json!({
            "bench": "kernels", "config": r.config, "type": r.ty, "part": r.part, "rows": r.rows, "cols": r.cols, "batch": r.batch,
            "variant": r.variant, "us_per_call": r.ours_s.json(), "weight_bytes": r.weight_bytes, "gb_per_s": gbs, "gflop_per_s": gflops,
            "roofline": if r.batch == 1 { "bandwidth" } else if int8 { "int8" } else { "fma" }, "fraction_of_roofline": roof,
            "fraction_of_int8_peak": if quantized && r.batch > 1 { Some(gflops / lim.int8_gops) } else { None },
            "candle_us_per_call": r.candle_s.map(|c| c.median * 1e6), "speedup_vs_candle": vs,
        }),
    );
}

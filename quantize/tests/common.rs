//! Shared helpers: make checkpoints, run the binary, compare tensors.
#![allow(dead_code)]

use candle_core::{DType, Device, Tensor};
use eostok_models::checkpoint::{self, WeightSet};
use eostok_models::nn::Eostok;
use eostok_models::Config;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn make_checkpoint(dir: &Path, cfg: &Config, seed: u64) -> PathBuf {
    let ck = dir.join(format!("ck-{}-{seed}", cfg.name));
    let (_, store) = Eostok::random(cfg, seed, DType::F32, &Device::Cpu).unwrap();
    let weights: HashMap<String, Tensor> = store.vars().into_iter().map(|(k, v)| (k, v.as_tensor().clone())).collect();
    checkpoint::write_initial(&ck, cfg, &weights, false).unwrap();
    ck
}

pub fn ema_weights(ck: &Path) -> HashMap<String, Tensor> {
    let cfg = checkpoint::load_config(ck).unwrap();
    checkpoint::load_weights(ck, &cfg, WeightSet::Ema, &Device::Cpu).unwrap()
}

pub fn quantize(ck: &Path, out: &Path, ty: &str, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_eostok-quantize"))
        .arg(ck)
        .arg("-o")
        .arg(out)
        .args(["--type", ty, "--quiet"])
        .args(extra)
        .output()
        .unwrap()
}

pub fn f32s(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_dtype(DType::F32).unwrap().to_vec1().unwrap()
}

/// Largest error of `got` against `want`, per block of `block` elements,
/// relative to the block's scale (max |x|, or max - min for `range`).
pub fn worst_block_error(want: &[f32], got: &[f32], block: usize, range: bool) -> f64 {
    assert_eq!(want.len(), got.len());
    let mut worst = 0f64;
    for (w, g) in want.chunks(block).zip(got.chunks(block)) {
        let scale = if range {
            let (lo, hi) = w.iter().fold((f32::MAX, f32::MIN), |(a, b), &x| (a.min(x), b.max(x)));
            (hi - lo) as f64
        } else {
            w.iter().fold(0f32, |m, x| m.max(x.abs())) as f64
        };
        let err = w.iter().zip(g).map(|(a, b)| (*a as f64 - *b as f64).abs()).fold(0f64, f64::max);
        if scale > 0.0 {
            worst = worst.max(err / scale);
        }
    }
    worst
}

/// The relative bound each type must meet (error / block scale), with its block.
pub fn bound(ty: &str) -> (usize, bool, f64) {
    match ty {
        // half a step of amax/127, plus f16 rounding of the scale
        "q8_0" => (32, false, 0.5 / 127.0 + 0.004),
        // a step is amax/8; clipped extremes may be a full step off: 1/7 covers it
        "q4_0" => (32, false, 1.0 / 7.0),
        // half a step of (max - min)/15, plus f16 rounding of d and m
        "q4_1" => (32, true, 0.5 / 15.0 + 0.01),
        // 6-bit scales over 8 sub-blocks: empirical worst 0.098 of amax
        "q4_k" => (256, false, 0.125),
        "q6_k" => (256, false, 1.0 / 28.0),
        // relative to the block max: small values fall into f16 subnormals
        "f16" => (32, false, 1e-3),
        "f32" => (1, false, 0.0),
        other => panic!("no bound for {other}"),
    }
}

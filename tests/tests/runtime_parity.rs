//! The runtime's CPU path against the candle reference model on the same
//! weights: AR logits at every step, greedy token ids and decoded pixels.
//! f32 files must agree to 1e-4 relative; quantized files within the bounds
//! stated below.

use candle_core::{DType, Device, Tensor};
use eostok_models::checkpoint::{self, WeightSet};
use eostok_models::nn::{sample_tokens, Eostok, GenerateOptions as RefOptions};
use eostok_models::sampling::TokenSampling;
use eostok_models::Config;
use eostok_quantize::{quantize, Options, QuantType};
use eostok_runtime::generate::{generate, GenerateOptions};
use eostok_runtime::gguf::GgufFile;
use eostok_runtime::model::Model;
use std::path::{Path, PathBuf};

const GREEDY: TokenSampling = TokenSampling { temperature: 0.0, top_k: 0, top_p: 1.0 };

fn setup(dir: &Path, cfg: &Config, seed: u64) -> (Eostok, PathBuf) {
    let (model, store) = Eostok::random(cfg, seed, DType::F32, &Device::Cpu).unwrap();
    // Non-trivial norms, biases and modulation (init leaves them at 1 and 0).
    for (_, v) in store.vars() {
        let noise = Tensor::randn(0f32, 0.05, v.dims(), &Device::Cpu).unwrap();
        v.set(&(v.as_tensor() + noise).unwrap()).unwrap();
    }
    let weights = store.vars().into_iter().map(|(k, v)| (k, v.as_tensor().copy().unwrap())).collect();
    let ck = dir.join("ck");
    checkpoint::write_initial(&ck, cfg, &weights, false).unwrap();
    (model, ck)
}

fn gguf(ck: &Path, dir: &Path, ty: QuantType) -> PathBuf {
    let out = dir.join(format!("{}.gguf", ty.name()));
    let opts = Options { ty, weights: WeightSet::Ema, keep_f32: vec![], allow_requantize: false, with_encoder: false, progress: false };
    quantize(ck, &out, &opts).unwrap();
    out
}

fn rel_err(a: &[f32], b: &[f32]) -> f32 {
    let scale = a.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max) / scale
}

/// Compare runtime and candle: returns (worst logits rel err, ids equal, pixel rel err).
fn compare(reference: &Eostok, file: &Path, classes: &[u32], cfg_scale: f32) -> (f32, bool, f32) {
    let f = GgufFile::open(file).unwrap();
    let model = Model::load(&f).unwrap();
    let l = model.cfg.latent_tokens;
    let ours = generate(&model, classes, l, &GenerateOptions { sampling: GREEDY, cfg_scale, seed: 1 }, true, |_| {}).unwrap();
    let theirs = sample_tokens(&reference.ar, classes, l, &RefOptions { sampling: GREEDY, cfg_scale: cfg_scale as f64, seed: 1 }, true).unwrap();
    // Logits compared on the same prefixes (candle's tokens fed back), so a
    // token that flips under quantization does not change what is compared.
    let mut rows: Vec<u32> = classes.to_vec();
    if cfg_scale != 1.0 {
        rows.extend(std::iter::repeat_n(model.ar.null_class(), classes.len()));
    }
    let (mut st, mut inputs) = model.ar.start(&rows).unwrap();
    let (b, k) = (classes.len(), model.cfg.codebook_size);
    let mut worst = 0f32;
    for step in 0..l {
        let logits = model.ar.step(&mut st, &inputs).unwrap();
        for i in 0..b {
            let mut g = logits[i * k..(i + 1) * k].to_vec();
            if cfg_scale != 1.0 {
                eostok_models::sampling::guide(&mut g, &logits[(b + i) * k..(b + i + 1) * k], cfg_scale);
            }
            worst = worst.max(rel_err(&theirs.logits[step][i], &g));
        }
        let mut next: Vec<u32> = theirs.ids.iter().map(|r| r[step]).collect();
        if cfg_scale != 1.0 {
            next.extend(next.clone());
        }
        inputs = model.ar.embed_tokens(&next).unwrap();
    }
    // Pixels from the same (candle's) tokens.
    let ids = &theirs.ids;
    let img_ours = model.decoder.decode(ids).unwrap();
    let flat: Vec<u32> = ids.iter().flatten().copied().collect();
    let t = Tensor::from_vec(flat, (ids.len(), l), &Device::Cpu).unwrap();
    let img_ref: Vec<f32> = reference.decode_ids(&t).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    (worst, ours.ids == theirs.ids, rel_err(&img_ref, &img_ours))
}

#[test]
fn f32_runtime_matches_candle() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config::preset("tiny").unwrap();
    let (reference, ck) = setup(dir.path(), &cfg, 5);
    let file = gguf(&ck, dir.path(), QuantType::F32);
    for cfg_scale in [1.0, 3.0] {
        let (logits, same_ids, pixels) = compare(&reference, &file, &[0, 4, 9], cfg_scale);
        assert!(logits <= 1e-4, "cfg {cfg_scale}: logits differ by {logits:.2e} (relative)");
        assert!(same_ids, "cfg {cfg_scale}: greedy token ids differ");
        assert!(pixels <= 1e-4, "pixels differ by {pixels:.2e} (relative)");
    }
}

#[test]
fn decoding_a_prefix_matches_candle() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config::preset("tiny").unwrap();
    let (reference, ck) = setup(dir.path(), &cfg, 6);
    let f = GgufFile::open(gguf(&ck, dir.path(), QuantType::F32)).unwrap();
    let model = Model::load(&f).unwrap();
    for k in [1usize, 5, 16] {
        let ids: Vec<Vec<u32>> = vec![(0..k as u32).map(|i| (i * 37) % 256).collect(), (0..k as u32).map(|i| (i * 11 + 3) % 256).collect()];
        let ours = model.decoder.decode(&ids).unwrap();
        let t = Tensor::from_vec(ids.iter().flatten().copied().collect::<Vec<u32>>(), (2, k), &Device::Cpu).unwrap();
        let theirs: Vec<f32> = reference.decode_ids(&t).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        assert!(rel_err(&theirs, &ours) <= 1e-4, "k = {k}");
    }
}

#[test]
fn quantized_runtime_stays_close_to_candle() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config::preset("tiny").unwrap();
    let (reference, ck) = setup(dir.path(), &cfg, 7);
    // Stated bounds (relative to the largest |logit| / |pixel|), measured
    // with margin on random tiny weights: weights and activations both
    // quantized, errors compound over 2+2 blocks.
    for (ty, logit_bound, pixel_bound) in [(QuantType::F16, 2e-3, 2e-3), (QuantType::Q8_0, 0.05, 0.05), (QuantType::Q4_0, 0.3, 0.4)] {
        let file = gguf(&ck, dir.path(), ty);
        let (logits, _, pixels) = compare(&reference, &file, &[1, 2], 1.0);
        eprintln!("{}: logits rel err {logits:.2e}, pixels rel err {pixels:.2e}", ty.name());
        assert!(logits <= logit_bound, "{}: logits {logits:.3e} > {logit_bound}", ty.name());
        assert!(pixels <= pixel_bound, "{}: pixels {pixels:.3e} > {pixel_bound}", ty.name());
    }
}

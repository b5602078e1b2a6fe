//! The runtime's GPU path (`eostok_runtime::gpu::CandleModel`: candle
//! modules on weights dequantized from the GGUF) against its CPU path (our
//! kernels on the same file), same seed, classes and sampling options.
//!
//! Here the candle path runs on candle's CPU device: that checks the loading
//! (every tensor, f32 and quantized), the sampler wiring (seed, temperature,
//! top-k/top-p, CFG) and the decoder. `cuda_*` tests run the same parity on
//! `cuda:0` in a `--features cuda` build and skip, saying so, without a GPU.
//!
//! At f32 the two paths compute the same function with different kernels:
//! tokens must be identical, logits within 1e-4 relative, pixels within 1e-3.
//! On quantized files they differ by design — the CPU kernels quantize
//! activations to q8 blocks as ggml does, the candle path multiplies f32
//! activations by the dequantized weights — so the bounds there are the
//! activation-rounding ones measured in `runtime_parity.rs`.

use candle_core::{DType, Device, Tensor};
use eostok_models::checkpoint::{self, WeightSet};
use eostok_models::names::Group;
use eostok_models::nn::Eostok;
use eostok_models::sampling::TokenSampling;
use eostok_models::{tensor_specs, Config};
use eostok_quantize::{quantize, Options, QuantType};
use eostok_runtime::generate::{generate, GenerateOptions};
use eostok_runtime::gguf::GgufFile;
use eostok_runtime::gpu::CandleModel;
use eostok_runtime::model::Model;
use std::path::{Path, PathBuf};

/// A random `tiny` checkpoint with non-trivial norms, biases and modulation.
fn checkpoint(dir: &Path, seed: u64) -> PathBuf {
    let cfg = Config::preset("tiny").unwrap();
    let (_, store) = Eostok::random(&cfg, seed, DType::F32, &Device::Cpu).unwrap();
    for (_, v) in store.vars() {
        let noise = Tensor::randn(0f32, 0.05, v.dims(), &Device::Cpu).unwrap();
        v.set(&(v.as_tensor() + noise).unwrap()).unwrap();
    }
    let weights = store.vars().into_iter().map(|(k, v)| (k, v.as_tensor().copy().unwrap())).collect();
    let ck = dir.join("ck");
    checkpoint::write_initial(&ck, &cfg, &weights, false).unwrap();
    ck
}

fn gguf(ck: &Path, dir: &Path, ty: QuantType, with_encoder: bool) -> PathBuf {
    let out = dir.join(format!("{}{}.gguf", ty.name(), if with_encoder { "-enc" } else { "" }));
    let opts = Options { ty, weights: WeightSet::Ema, keep_f32: vec![], allow_requantize: false, with_encoder, progress: false };
    quantize(ck, &out, &opts).unwrap();
    out
}

fn rel_err(a: &[f32], b: &[f32]) -> f32 {
    let scale = a.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max) / scale
}

fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max)
}

#[derive(Debug)]
struct Parity {
    /// Token positions where both paths drew the same id, of `total`. Once a
    /// row's token differs, the rest of that row is conditioned on another
    /// prefix, so this counts a single flip many times.
    agree: usize,
    total: usize,
    /// Worst relative difference of the (guided) logits, over the steps
    /// before the first differing token (later prefixes differ).
    logits: f32,
    /// Teacher-forced, on the CPU path's tokens (so one flip does not change
    /// what is compared): worst relative logit difference, and positions
    /// whose argmax agrees (of `total`). Unguided runs only (else 0).
    forced_logits: f32,
    forced_argmax: usize,
    forced: bool,
    /// Largest |pixel difference| decoding the CPU path's tokens with both decoders.
    pixels: f32,
    cpu_ids: Vec<Vec<u32>>,
}

fn argmax(v: &[f32]) -> usize {
    v.iter().enumerate().fold(0, |best, (i, x)| if *x > v[best] { i } else { best })
}

fn parity(file: &Path, device: &Device, classes: &[u32], opts: &GenerateOptions) -> Parity {
    let f = GgufFile::open(file).unwrap();
    let cpu = Model::load(&f).unwrap();
    let gpu = CandleModel::load(&f, device).unwrap();
    let l = cpu.cfg.latent_tokens;
    let ours = generate(&cpu, classes, l, opts, true, |_| {}).unwrap();
    let theirs = gpu.generate(classes, l, opts, true).unwrap();
    assert_eq!(theirs.ids.len(), classes.len());
    assert!(theirs.ids.iter().all(|r| r.len() == l));
    let total = classes.len() * l;
    let agree = ours.ids.iter().flatten().zip(theirs.ids.iter().flatten()).filter(|(a, b)| a == b).count();
    let same_until = (0..l).find(|&s| ours.ids.iter().zip(&theirs.ids).any(|(a, b)| a[s] != b[s])).map_or(l, |s| s + 1);
    let mut logits = 0f32;
    for step in 0..same_until {
        for (a, b) in ours.logits[step].iter().zip(&theirs.logits[step]) {
            logits = logits.max(rel_err(a, b));
        }
    }
    // The candle AR model on the CPU path's tokens, all positions in one
    // uncached pass: logits [B, L, K] for tokens 0..L.
    let (mut forced_logits, mut forced_argmax) = (0f32, 0);
    if opts.cfg_scale == 1.0 {
        let flat: Vec<u32> = ours.ids.iter().flat_map(|r| r[..l - 1].iter().copied()).collect();
        let ids = Tensor::from_vec(flat, (classes.len(), l - 1), device).unwrap();
        let forced: Vec<Vec<Vec<f32>>> = gpu.ar.forward_ids(&ids, &Tensor::new(classes, device).unwrap()).unwrap().to_vec3().unwrap();
        for (b, rows) in forced.iter().enumerate() {
            for (step, row) in rows.iter().enumerate() {
                let cpu_row = &ours.logits[step][b];
                forced_logits = forced_logits.max(rel_err(cpu_row, row));
                forced_argmax += (argmax(cpu_row) == argmax(row)) as usize;
            }
        }
    }
    let img_cpu = cpu.decoder.decode(&ours.ids).unwrap();
    let img_gpu = gpu.decode(&ours.ids).unwrap();
    Parity { agree, total, logits, forced_logits, forced_argmax, forced: opts.cfg_scale == 1.0, pixels: max_abs(&img_cpu, &img_gpu), cpu_ids: ours.ids }
}

/// Plain sampling, and a guided one with top-k and top-p.
fn option_sets(seed: u64) -> [GenerateOptions; 2] {
    [
        GenerateOptions { sampling: TokenSampling { temperature: 1.0, top_k: 0, top_p: 1.0 }, cfg_scale: 1.0, seed },
        GenerateOptions { sampling: TokenSampling { temperature: 0.8, top_k: 40, top_p: 0.9 }, cfg_scale: 3.0, seed },
    ]
}

const CLASSES: &[u32] = &[0, 4, 9, 4];

fn report(p: &Parity, what: &str) {
    let forced = if p.forced { format!("teacher-forced logits rel err {:.2e}, argmax {}/{} agree", p.forced_logits, p.forced_argmax, p.total) } else { "teacher-forced: n/a (guided)".to_string() };
    eprintln!("{what}: sampled tokens {}/{} agree, logits rel err {:.2e} (before any differing token); {forced}; pixels max abs diff {:.2e}", p.agree, p.total, p.logits, p.pixels);
}

/// f32: the same tokens; logits and pixels equal up to float rounding.
fn check_f32(p: &Parity, what: &str, logit_bound: f32, pixel_bound: f32) {
    report(p, what);
    assert_eq!(p.agree, p.total, "{what}: tokens differ (logits differ by {:.2e} relative before the first differing token)", p.logits);
    assert!(p.logits <= logit_bound && p.forced_logits <= logit_bound, "{what}: logits differ by {:.2e} / {:.2e} (relative)", p.logits, p.forced_logits);
    assert!(p.pixels < pixel_bound, "{what}: pixels differ by {:.2e}", p.pixels);
}

#[test]
fn f32_candle_path_matches_cpu_path() {
    let dir = tempfile::tempdir().unwrap();
    let ck = checkpoint(dir.path(), 11);
    let file = gguf(&ck, dir.path(), QuantType::F32, false);
    for (i, opts) in option_sets(3).iter().enumerate() {
        let p = parity(&file, &Device::Cpu, CLASSES, opts);
        check_f32(&p, &format!("f32, options {i}"), 1e-4, 1e-3);
        if opts.cfg_scale == 1.0 {
            assert_eq!(p.forced_argmax, p.total);
        }
        // The seed matters (so equal tokens above are not an accident of the weights).
        let f = GgufFile::open(&file).unwrap();
        let other = CandleModel::load(&f, &Device::Cpu).unwrap().generate(CLASSES, 16, &GenerateOptions { seed: opts.seed + 1, ..opts.clone() }, false).unwrap();
        assert_ne!(other.ids, p.cpu_ids, "another seed should give other tokens");
    }
}

#[test]
fn quantized_candle_path_stays_close_to_cpu_path() {
    let dir = tempfile::tempdir().unwrap();
    let ck = checkpoint(dir.path(), 12);
    // f16: the CPU kernels widen f16 weights and keep f32 activations, like
    // the candle path, so f32's bounds hold. q8_0 and q4_k: the CPU kernels
    // also quantize activations (q8_0 / q8_K blocks), the candle path does
    // not, so logits differ by that rounding (bounds relative to the largest
    // |logit|, as runtime_parity.rs measures it at these sizes) and sampled
    // tokens may flip; after a flip a row goes on from another prefix, so
    // the argmax is compared teacher-forced on the CPU path's tokens.
    // Pixels: absolute, on [-1, 1] images, decoding the same tokens.
    // Measured on random tiny weights (the noise is unseeded): q8_0 and
    // q4_k logits ~8e-3, pixels ~2.5e-2, argmax 63-64 of 64.
    for (ty, logit_bound, pixel_bound, min_argmax) in [(QuantType::F16, 1e-4, 1e-3, 1.0), (QuantType::Q8_0, 0.03, 0.1, 0.9), (QuantType::Q4K, 0.05, 0.1, 0.9)] {
        let file = gguf(&ck, dir.path(), ty, false);
        let p = parity(&file, &Device::Cpu, CLASSES, &option_sets(5)[0]);
        if ty == QuantType::F16 {
            check_f32(&p, ty.name(), logit_bound, pixel_bound);
            continue;
        }
        report(&p, ty.name());
        assert!(p.forced_argmax as f64 >= min_argmax * p.total as f64, "{}: argmax agrees at only {}/{} positions", ty.name(), p.forced_argmax, p.total);
        assert!(p.logits <= logit_bound && p.forced_logits <= logit_bound, "{}: logits {:.3e} / {:.3e} > {logit_bound}", ty.name(), p.logits, p.forced_logits);
        assert!(p.pixels <= pixel_bound, "{}: pixels {:.3e} > {pixel_bound}", ty.name(), p.pixels);
        // The activation rounding is the whole difference: far below what
        // a wrong dequantization (a swapped scale, a misread block) gives.
        assert!(p.forced_logits > 0.0, "{}: bit-identical logits would mean the CPU path stopped quantizing activations", ty.name());
    }
}

#[test]
fn a_file_with_the_encoder_loads_only_what_generation_needs() {
    let dir = tempfile::tempdir().unwrap();
    let ck = checkpoint(dir.path(), 13);
    let file = gguf(&ck, dir.path(), QuantType::Q8_0, true);
    let f = GgufFile::open(&file).unwrap();
    assert!(f.tensors().iter().any(|t| t.name.starts_with("enc.")), "the file should hold the encoder");
    let m = CandleModel::load(&f, &Device::Cpu).unwrap();
    let cfg = Config::preset("tiny").unwrap();
    let needed: usize = tensor_specs(&cfg).iter().filter(|s| matches!(s.group, Group::Quantizer | Group::Decoder | Group::Ar)).map(|s| s.numel()).sum();
    assert_eq!(m.weight_bytes(), 4 * needed);
    // Same tokens as the file without the encoder.
    let opts = &option_sets(7)[0];
    let with = m.generate(&[1, 2], 16, opts, false).unwrap().ids;
    let plain = GgufFile::open(gguf(&ck, dir.path(), QuantType::Q8_0, false)).unwrap();
    let without = CandleModel::load(&plain, &Device::Cpu).unwrap().generate(&[1, 2], 16, opts, false).unwrap().ids;
    assert_eq!(with, without);
}

#[test]
fn decoding_refuses_bad_ids_as_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let ck = checkpoint(dir.path(), 14);
    let f = GgufFile::open(gguf(&ck, dir.path(), QuantType::F32, false)).unwrap();
    let m = CandleModel::load(&f, &Device::Cpu).unwrap();
    let bad_input = |e| eostok_models::exit::code_for(&e) == eostok_models::exit::BAD_INPUT;
    assert!(bad_input(m.decode(&[vec![256]]).unwrap_err()), "a code id past the codebook");
    assert!(bad_input(m.decode(&[vec![1, 2], vec![3]]).unwrap_err()), "ragged rows");
    assert!(bad_input(m.decode(&[vec![0; 17]]).unwrap_err()), "more than L ids");
    assert!(m.generate(&[11], 4, &option_sets(0)[0], false).err().is_some_and(bad_input), "a class past the null class");
    // A prefix decodes, as on the CPU path.
    let cpu = Model::load(&f).unwrap();
    let ids = vec![vec![5u32, 77, 3], vec![200, 1, 9]];
    assert!(max_abs(&cpu.decoder.decode(&ids).unwrap(), &m.decode(&ids).unwrap()) < 1e-3);
}

#[cfg(feature = "cuda")]
mod cuda {
    use super::*;

    fn cuda() -> Option<Device> {
        if !eostok_models::device::cuda_available() {
            eprintln!("skipped: no CUDA device could be opened (this test needs a GPU and its driver)");
            return None;
        }
        Some(Device::new_cuda(0).expect("cuda_available said yes"))
    }

    /// On a GPU the reductions run in another order (cuBLAS, candle's CUDA
    /// softmax and norm kernels), so f32 logits get a looser bound than on
    /// the CPU device (1e-4 relative there); sampled tokens must still be the
    /// same — a flip at these differences needs a uniform draw within ~1e-4
    /// of a cumulative-probability boundary, and the message says how large
    /// the difference was. Teacher-forced argmax: 99% of positions.
    #[test]
    fn cuda_candle_path_matches_cpu_path() {
        let Some(gpu) = cuda() else { return };
        let dir = tempfile::tempdir().unwrap();
        let ck = checkpoint(dir.path(), 21);
        for ty in [QuantType::F32, QuantType::Q8_0] {
            let file = gguf(&ck, dir.path(), ty, false);
            for (i, opts) in option_sets(4).iter().enumerate() {
                let p = parity(&file, &gpu, CLASSES, opts);
                let what = format!("cuda:0 {} options {i}", ty.name());
                if ty == QuantType::F32 {
                    check_f32(&p, &what, 1e-3, 1e-3);
                } else {
                    report(&p, &what);
                    assert!(p.logits <= 0.05 && p.forced_logits <= 0.05, "{what}: logits differ by {:.2e} / {:.2e}", p.logits, p.forced_logits);
                    assert!(p.pixels <= 0.05, "{what}: pixels differ by {:.2e}", p.pixels);
                }
                if opts.cfg_scale == 1.0 {
                    let min = if ty == QuantType::F32 { 0.99 } else { 0.9 };
                    assert!(p.forced_argmax as f64 >= min * p.total as f64, "{what}: argmax agrees at only {}/{} positions", p.forced_argmax, p.total);
                }
            }
        }
    }

    /// The weights and the KV cache are on the GPU: nothing in the model is on the host.
    #[test]
    fn cuda_weights_live_on_the_device() {
        let Some(gpu) = cuda() else { return };
        let dir = tempfile::tempdir().unwrap();
        let ck = checkpoint(dir.path(), 22);
        let f = GgufFile::open(gguf(&ck, dir.path(), QuantType::Q8_0, false)).unwrap();
        let m = CandleModel::load(&f, &gpu).unwrap();
        for t in [&m.ar.token_embd, &m.ar.pos_embd, &m.ibq.codebook, &m.decoder.pos_embd] {
            assert!(t.device().is_cuda(), "a weight is on {:?}", t.device());
        }
        let mut cache = eostok_models::nn::KvCache::new(m.ar.depth());
        let cls = m.ar.class_embedding(&Tensor::new(&[1u32, 2], &gpu).unwrap()).unwrap();
        m.ar.forward_embeddings(&cls.unsqueeze(1).unwrap(), &m.ar.modulation(&cls).unwrap(), Some(&mut cache)).unwrap();
        let (k, v) = cache.layers[0].as_ref().expect("layer 0 cached");
        assert!(k.device().is_cuda() && v.device().is_cuda(), "the KV cache left the device");
    }
}

//! CPU-vs-CUDA checks on the `tiny` config. Built only with `--features cuda`
//! (`scripts/check-cuda build` compiles them on a machine without a GPU); each
//! test prints why it skips when no CUDA device can be opened. None of these
//! has run in this repository's CI or on the machines that wrote them
//! (docs/gpu.md, "What is verified").
#![cfg(feature = "cuda")]

use candle_core::{DType, Device, Tensor};
use eostok_models::checkpoint;
use eostok_models::nn::Eostok;
use eostok_models::sampling::SplitMix64;
use eostok_models::Config;
use eostok_train::fit::{fit, FitOptions, Mode, Precision, TrainConfig};
use eostok_train::joint::{joint_forward, Batch, LossConfig};
use std::collections::HashMap;
use std::path::Path;

fn cuda() -> Option<Device> {
    if !eostok_models::device::cuda_available() {
        eprintln!("skipped: no CUDA device could be opened (this test needs a GPU and its driver)");
        return None;
    }
    Some(Device::new_cuda(0).expect("cuda_available said yes"))
}

fn fixture() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/fashion-mnist").to_string_lossy().into_owned()
}

fn max_rel(a: &Tensor, b: &Tensor) -> f32 {
    let a: Vec<f32> = a.to_device(&Device::Cpu).unwrap().to_dtype(DType::F32).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    let b: Vec<f32> = b.to_device(&Device::Cpu).unwrap().to_dtype(DType::F32).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    let scale = a.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
    a.iter().zip(&b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

#[test]
fn joint_forward_matches_cpu() {
    let Some(gpu) = cuda() else { return };
    let cfg = Config::preset("tiny").unwrap();
    let (cpu_model, _) = Eostok::random(&cfg, 5, DType::F32, &Device::Cpu).unwrap();
    let (gpu_model, _) = Eostok::random(&cfg, 5, DType::F32, &gpu).unwrap();
    let x = Tensor::rand(-1f32, 1.0, (4, cfg.channels, cfg.image_size, cfg.image_size), &Device::Cpu).unwrap();
    let classes = vec![0, 1, 2, 3];
    // Nested dropout and class dropout on (same seed on both devices: same draws).
    let w = LossConfig { lpips: 0.0, vfm_implicit: 0.0, vfm_decoder: 0.0, ..Default::default() };
    let cpu = joint_forward(&cpu_model, &Batch { images: x.clone(), classes: classes.clone(), vfm: None }, &w, None, &mut SplitMix64::new(9)).unwrap();
    let gpu_out = joint_forward(&gpu_model, &Batch { images: x.to_device(&gpu).unwrap(), classes, vfm: None }, &w, None, &mut SplitMix64::new(9)).unwrap();
    // The IBQ codes are an argmax: a near-tie may flip one code, so compare where it matters.
    let ids_cpu: Vec<u32> = cpu.ids.flatten_all().unwrap().to_vec1().unwrap();
    let ids_gpu: Vec<u32> = gpu_out.ids.to_device(&Device::Cpu).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    let same = ids_cpu.iter().zip(&ids_gpu).filter(|(a, b)| a == b).count();
    assert!(same * 100 >= ids_cpu.len() * 99, "codes differ: {same}/{}", ids_cpu.len());
    if same == ids_cpu.len() {
        let r = max_rel(&cpu.recon, &gpu_out.recon);
        assert!(r < 1e-3, "reconstruction differs by {r}");
        let l = max_rel(&cpu.loss, &gpu_out.loss);
        assert!(l < 1e-3, "loss differs by {l}");
    }
}

fn train(device_steps: u64) -> TrainConfig {
    TrainConfig {
        mode: Mode::E2e,
        data: fixture(),
        steps: device_steps,
        batch: 8,
        lr: 1e-3,
        min_lr: 1e-5,
        warmup: 1,
        grad_clip: 1.0,
        ema_decay: 0.9,
        tokenizer_beta2: 0.999,
        ar_beta2: 0.95,
        weight_decay: 0.0,
        seed: 3,
        hflip: false,
        save_every: 1000,
        keep: 0,
        log_every: 1,
        sample_every: 0,
        loss: Default::default(),
        lpips: "off".into(),
        vfm: "off".into(),
        accum: 1,
        tau: None,
        disc: Default::default(),
    }
}

fn opts(out: &Path, resume: Option<&Path>, steps: u64, device: Device, precision: Precision) -> FitOptions {
    FitOptions {
        config: "tiny".into(),
        out: out.to_path_buf(),
        resume: resume.map(Path::to_path_buf),
        train: train(steps),
        device,
        progress: false,
        signals: None,
        stop_at: None,
        max_nan_steps: 3,
        dist: None,
        bucket_mib: 25.0,
        precision,
    }
}

fn load(dir: &Path, file: &str) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(dir.join(file), &Device::Cpu).unwrap()
}

#[test]
fn one_training_step_matches_cpu_and_a_cpu_resume_continues_a_gpu_checkpoint() {
    let Some(gpu) = cuda() else { return };
    let d = tempfile::tempdir().unwrap();
    let (c, g) = (d.path().join("cpu"), d.path().join("gpu"));
    fit(opts(&c, None, 1, Device::Cpu, Precision::F32)).unwrap();
    fit(opts(&g, None, 1, gpu, Precision::F32)).unwrap();
    // Same checkpoint files, same tensors; values within a tenth of a learning-rate step
    // (an Adam update is ~lr per weight whatever the gradient's size).
    for file in [checkpoint::MODEL_FILE, checkpoint::EMA_FILE, checkpoint::OPTIMIZER_FILE] {
        let (a, b) = (load(&c, file), load(&g, file));
        assert_eq!(a.len(), b.len(), "{file}");
        for (k, t) in &a {
            let diff = (t - &b[k]).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
            let tol = if file == checkpoint::OPTIMIZER_FILE { 1e-3 } else { 1e-4 };
            assert!(diff < tol, "{file} {k}: CPU and CUDA differ by {diff}");
        }
    }
    // The GPU checkpoint is an ordinary checkpoint: a CPU process resumes it.
    let s = fit(opts(&g, Some(&g), 2, Device::Cpu, Precision::F32)).unwrap();
    assert_eq!(s.step, 2);
    assert!(s.last_loss.is_finite());
}

#[test]
fn bf16_autocast_trains_with_f32_master_weights() {
    let Some(gpu) = cuda() else { return };
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("bf16");
    let s = fit(opts(&out, None, 2, gpu, Precision::Bf16)).unwrap();
    assert!(s.last_loss.is_finite());
    for (k, t) in load(&out, checkpoint::MODEL_FILE) {
        assert_eq!(t.dtype(), DType::F32, "{k}: master weights must stay f32");
    }
}

#[test]
fn optimizer_and_ema_state_live_on_the_device() {
    let Some(gpu) = cuda() else { return };
    let w = candle_core::Var::from_tensor(&Tensor::ones(4, DType::F32, &gpu).unwrap()).unwrap();
    let cfg = eostok_train::optim::GroupConfig { beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0.0 };
    let mut opt = eostok_train::optim::Adam::new(vec![eostok_train::optim::Group { name: "g".into(), cfg, vars: vec![("w".into(), w.clone())] }]).unwrap();
    let grads = w.as_tensor().sqr().unwrap().sum_all().unwrap().backward().unwrap();
    opt.update(&grads, 0.1, 1.0).unwrap();
    assert!(opt.state().values().all(|t| t.device().is_cuda()), "Adam moments left the GPU");
    let vars = [("w".to_string(), w)].into_iter().collect();
    let mut ema = eostok_train::optim::Ema::new(0.9, &vars).unwrap();
    ema.update(&vars).unwrap();
    assert!(ema.weights.values().all(|t| t.device().is_cuda()), "EMA left the GPU");
}

//! The pretrained nets against the golden outputs that `scripts/fetch-assets`
//! writes to `$EOSTOK_ASSETS/reference/` (onnxruntime for DINOv2, the numpy
//! forward passes of `scripts/assets/nn_numpy.py` for LPIPS and
//! EfficientNet). Each test prints why it skips when the cache lacks a file,
//! so the suite passes on a fresh machine.
//!
//! Tolerances: DINOv2 max abs diff / max abs value <= 1e-3 over all 257x384
//! outputs; LPIPS totals and per-tap terms max abs diff <= 1e-4;
//! EfficientNet logits and features max abs diff / max abs value <= 1e-4.

use candle_core::{DType, Device, Tensor, Var};
use eostok_models::nets::assets::load_safetensors;
use eostok_models::nets::dinov2::normalize_imagenet;
use eostok_models::nets::{asset_dir, Dinov2, EfficientNetLite0, Lpips, LpipsNet};
use std::collections::HashMap;
use std::path::PathBuf;

const DEV: Device = Device::Cpu;

/// The cache files a test needs, or None (after saying why).
fn cached(files: &[&str]) -> Option<PathBuf> {
    let dir = asset_dir();
    for f in files {
        if !dir.join(f).is_file() {
            println!("skipping: {} not found (run scripts/fetch-assets or set EOSTOK_ASSETS)", dir.join(f).display());
            return None;
        }
    }
    Some(dir)
}

fn max_abs(t: &Tensor) -> f32 {
    t.abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    max_abs(&(a - b).unwrap())
}

fn top5(logits: &[f32]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..logits.len()).collect();
    idx.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
    idx.truncate(5);
    idx
}

fn reference(dir: &std::path::Path, name: &str) -> HashMap<String, Tensor> {
    load_safetensors(&dir.join("reference").join(name), &DEV).unwrap()
}

/// A photo as the references prepare it: whole image resized to 224x224
/// (aspect ratio not kept), here with `image`'s CatmullRom (bicubic,
/// antialiased on downscale like PIL's BICUBIC), as [-1,1] NCHW.
fn photo_pm1(path: &std::path::Path) -> Tensor {
    let img = image::open(path).unwrap().to_rgb8();
    let img = image::imageops::resize(&img, 224, 224, image::imageops::FilterType::CatmullRom);
    let v: Vec<f32> = img.as_raw().iter().map(|&p| p as f32 / 127.5 - 1.0).collect();
    Tensor::from_vec(v, (224, 224, 3), &DEV).unwrap().permute((2, 0, 1)).unwrap().unsqueeze(0).unwrap()
}

#[test]
fn effnet_matches_reference_and_sees_a_cat() {
    let Some(dir) = cached(&["efficientnet-lite0.safetensors", "reference/effnet-ref.safetensors", "reference/chelsea.png"]) else {
        return;
    };
    let net = EfficientNetLite0::load(&dir.join("efficientnet-lite0.safetensors"), &DEV).unwrap();
    let r = reference(&dir, "effnet-ref.safetensors");
    let (feat, logits) = net.forward(&r["input"]).unwrap();
    let (df, dl) = (max_diff(&feat, &r["features"]), max_diff(&logits, &r["logits"]));
    let (rf, rl) = (df / max_abs(&r["features"]), dl / max_abs(&r["logits"]));
    println!("effnet: features max abs diff {df:.2e} (rel to max {rf:.2e}), logits {dl:.2e} (rel {rl:.2e})");
    assert!(rf <= 1e-4 && rl <= 1e-4);
    let l: Vec<Vec<f32>> = logits.to_vec2().unwrap();
    let (cat, cup) = (top5(&l[0]), top5(&l[1]));
    println!("effnet top-5 on the reference inputs: chelsea {cat:?}, coffee {cup:?}");
    assert!(cat.iter().any(|c| (281..=285).contains(c)));
    assert_eq!(cup[0], 967, "espresso");

    // Our own preprocessing of the PNG (decode, resize, [-1,1] -> (u8-127)/128).
    let (_, logits) = net.forward_pm1(&photo_pm1(&dir.join("reference/chelsea.png"))).unwrap();
    let top = top5(&logits.to_vec2::<f32>().unwrap()[0]);
    println!("effnet top-5 on chelsea.png via our pipeline: {top:?}");
    assert!(top.iter().any(|c| (281..=285).contains(c)), "{top:?}");
}

#[test]
fn lpips_matches_reference() {
    let Some(dir) = cached(&["lpips-vgg.safetensors", "lpips-alex.safetensors", "reference/lpips-ref.safetensors"]) else {
        return;
    };
    let r = reference(&dir, "lpips-ref.safetensors");
    let (x, y) = (&r["x"], &r["y"]);
    for (net, key) in [(LpipsNet::Vgg, "vgg"), (LpipsNet::Alex, "alex")] {
        let lp = Lpips::load(&dir.join(net.file()), net, &DEV).unwrap();
        let layers = lp.forward_layers(x, y).unwrap();
        let total = lp.forward(x, y).unwrap();
        let (dt, dl) = (max_diff(&total, &r[key]), max_diff(&layers, &r[&format!("{key}_layers")]));
        println!("lpips-{key}: {:?} vs reference {:?}: max abs diff {dt:.2e}, per-tap {dl:.2e}", total.to_vec1::<f32>().unwrap(), r[key].to_vec1::<f32>().unwrap());
        assert!(dt <= 1e-4 && dl <= 1e-4);

        // Zero on identical images, growing with the noise.
        let same = lp.forward(x, x).unwrap().to_vec1::<f32>().unwrap();
        assert!(same.iter().all(|&v| v.abs() < 1e-6), "{same:?}");
        let mut rng = eostok_models::sampling::SplitMix64::new(0);
        let noise: Vec<f32> = (0..x.elem_count()).map(|_| rng.normal() as f32).collect();
        let noise = Tensor::from_vec(noise, x.dims(), &DEV).unwrap();
        let at = |s: f64| {
            let noisy = (x + (&noise * s).unwrap()).unwrap().clamp(-1f32, 1f32).unwrap();
            lp.forward(x, &noisy).unwrap().to_vec1::<f32>().unwrap()
        };
        let (small, mid, big) = (at(0.02), at(0.1), at(0.4));
        println!("lpips-{key} vs noise std 0.02/0.1/0.4: {small:?} {mid:?} {big:?}");
        for i in 0..2 {
            assert!(0.0 < small[i] && small[i] < mid[i] && mid[i] < big[i]);
        }

        // Gradients reach the input image.
        let xv = Var::from_tensor(x).unwrap();
        let grads = lp.forward(xv.as_tensor(), y).unwrap().sum_all().unwrap().backward().unwrap();
        let g: Vec<f32> = grads.get(xv.as_tensor()).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        assert!(g.iter().all(|v| v.is_finite()) && g.iter().any(|&v| v != 0.0));
        println!("lpips-{key}: input gradient max |g| {:.3e}", g.iter().fold(0f32, |m, v| m.max(v.abs())));
    }
}

#[test]
fn dinov2_matches_onnxruntime() {
    let Some(dir) = cached(&["dinov2-s.safetensors", "reference/dinov2-ref.safetensors"]) else {
        return;
    };
    let net = Dinov2::load(&dir.join("dinov2-s.safetensors"), &DEV).unwrap();
    let r = reference(&dir, "dinov2-ref.safetensors");

    // Bicubic position grid 37x37 -> 16x16 against the graph's own.
    let dp = max_diff(&net.pos_embed(16, 16).unwrap(), &r["pos_embed_224"]);
    println!("dinov2: pos_embed 16x16 max abs diff {dp:.2e}");
    assert!(dp <= 1e-5);

    // Normalisation of the u8 image against the reference input.
    let u8img = r["image_u8"].to_dtype(DType::F32).unwrap().permute((2, 0, 1)).unwrap().unsqueeze(0).unwrap();
    let norm = normalize_imagenet(&((u8img / 127.5).unwrap() - 1.0).unwrap()).unwrap();
    let dn = max_diff(&norm, &r["input"]);
    println!("dinov2: ImageNet normalisation max abs diff {dn:.2e}");
    assert!(dn <= 1e-5);

    let out = net.forward(&r["input"]).unwrap();
    assert_eq!(out.dims(), &[1, 257, 384]);
    let d = max_diff(&out, &r["output"]);
    let rel = d / max_abs(&r["output"]);
    let cls = |t: &Tensor| t.narrow(1, 0, 1).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let (a, b) = (cls(&out), cls(&r["output"]));
    let dot: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
    let cos = dot / (a.iter().map(|x| x * x).sum::<f32>().sqrt() * b.iter().map(|x| x * x).sum::<f32>().sqrt());
    println!("dinov2: output max abs diff {d:.2e}, / max abs value {rel:.2e}, CLS cosine {cos:.7}");
    assert!(rel <= 1e-3);
    assert_eq!(net.patch_tokens(&r["input"]).unwrap().dims(), &[1, 256, 384]);
}

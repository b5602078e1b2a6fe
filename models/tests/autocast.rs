//! `Autocast` (`eostok-train fit --precision bf16`): matmuls in bf16 over f32 master
//! weights. Training uses it on CUDA only; here it runs on candle's CPU bf16 matmul
//! (which widens to f32 and rounds the result to bf16, the same rounding points as
//! a bf16 GPU GEMM with f32 accumulation), to check what does not depend on the device:
//! outputs stay f32 and close to the f32 pass, gradients reach every f32 weight, and the
//! guard restores the previous mode.

use candle_core::{DType, Device, Tensor};
use eostok_models::nn::layers::Autocast;
use eostok_models::nn::Eostok;
use eostok_models::Config;

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb).max(1e-30)
}

#[test]
fn bf16_autocast_keeps_f32_weights_and_gradients() {
    let cfg = Config::preset("tiny").unwrap();
    let dev = Device::Cpu;
    let (model, store) = Eostok::random(&cfg, 3, DType::F32, &dev).unwrap();
    let x = Tensor::rand(-1f32, 1.0, (2, cfg.channels, cfg.image_size, cfg.image_size), &dev).unwrap();
    let run = || {
        let enc = model.encoder.forward(&x).unwrap();
        let q = model.ibq.forward(&enc.z).unwrap();
        let img = model.decoder.forward(&q.z_q, None).unwrap().image;
        let loss = img.sub(&x).unwrap().sqr().unwrap().mean_all().unwrap();
        (img, loss)
    };
    let (img32, loss32) = run();
    let g32 = loss32.backward().unwrap();
    assert!(!Autocast::is_bf16());
    let (img16, loss16) = {
        let _guard = Autocast::bf16(true);
        assert!(Autocast::is_bf16());
        run()
    };
    assert!(!Autocast::is_bf16(), "the guard restores f32");
    assert_eq!(img16.dtype(), DType::F32);
    let (a, b): (Vec<f32>, Vec<f32>) = (img32.flatten_all().unwrap().to_vec1().unwrap(), img16.flatten_all().unwrap().to_vec1().unwrap());
    let max_diff = a.iter().zip(&b).fold(0f32, |m, (p, q)| m.max((p - q).abs()));
    // bf16 keeps 8 significant bits (relative 2^-8 = 0.4% per rounding).
    assert!(max_diff > 0.0, "autocast changed nothing: the matmuls did not run in bf16");
    assert!(max_diff < 0.05, "bf16 output too far from f32: {max_diff}");
    let g16 = loss16.backward().unwrap();
    for (name, var) in store.vars() {
        if name.starts_with("enc.") || name.starts_with("dec.") || name.starts_with("quant.") {
            let (Some(ga), Some(gb)) = (g32.get(var.as_tensor()), g16.get(var.as_tensor())) else {
                assert!(g32.get(var.as_tensor()).is_none(), "{name}: gradient lost under autocast");
                continue;
            };
            assert_eq!(gb.dtype(), DType::F32, "{name}: the master weights' gradients are f32");
            let (va, vb): (Vec<f32>, Vec<f32>) = (ga.flatten_all().unwrap().to_vec1().unwrap(), gb.flatten_all().unwrap().to_vec1().unwrap());
            assert!(vb.iter().all(|v| v.is_finite()), "{name}");
            if va.iter().any(|v| v.abs() > 1e-6) {
                let c = cosine(&va, &vb);
                assert!(c > 0.95, "{name}: bf16 gradient direction off (cosine {c})");
            }
        }
    }
}

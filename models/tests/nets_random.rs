//! The pretrained-net modules with random weights (no asset cache needed):
//! shapes, LPIPS gradients reaching the input image (checked against finite
//! differences in f64), and load errors being exit-2 errors that name the
//! file or the tensor.

use candle_core::{DType, Device, Tensor, Var};
use eostok_models::exit::{code_for, one_line};
use eostok_models::nets::{Dinov2, Dinov2Config, EfficientNetLite0, Lpips, LpipsNet};
use eostok_models::nn::ParamStore;
use eostok_models::sampling::SplitMix64;
use std::collections::HashMap;

const DEV: Device = Device::Cpu;

fn uniform(shape: &[usize], seed: u64, dtype: DType) -> Tensor {
    let mut rng = SplitMix64::new(seed);
    let n: usize = shape.iter().product();
    let v: Vec<f64> = (0..n).map(|_| rng.uniform() * 2.0 - 1.0).collect();
    Tensor::from_vec(v, shape, &DEV).unwrap().to_dtype(dtype).unwrap()
}

fn tiny_dino() -> Dinov2Config {
    Dinov2Config { patch: 14, dim: 32, depth: 2, heads: 2, mlp_hidden: 64, eps: 1e-6, pos_grid: 4 }
}

#[test]
fn dinov2_shapes_and_position_grid() {
    let cfg = tiny_dino();
    let store = ParamStore::random(1);
    let net = Dinov2::new(&store.var_builder(DType::F32, &DEV), &cfg).unwrap();
    let x = uniform(&[2, 3, 28, 42], 2, DType::F32);
    assert_eq!(net.forward(&x).unwrap().dims(), &[2, 1 + 2 * 3, 32]);
    assert_eq!(net.patch_tokens(&x).unwrap().dims(), &[2, 6, 32]);
    // At the stored grid size the positions are used as they are.
    let pe = net.pos_embed(4, 4).unwrap();
    let stored = store.vars()["pos_embed"].as_tensor().clone();
    assert_eq!((pe - stored).unwrap().abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap(), 0.0);
    assert_eq!(net.pos_embed(2, 3).unwrap().dims(), &[1, 7, 32]);
    let imgs = uniform(&[2, 3, 32, 32], 3, DType::F32);
    assert_eq!(net.vfm_features_for_grid(&imgs, 3).unwrap().dims(), &[2, 9, 32]);
    assert!(net.forward(&uniform(&[1, 3, 20, 28], 4, DType::F32)).is_err(), "H not a multiple of 14");
    // The full ViT-S/14 builds from random weights and sizes too.
    let s = Dinov2::new(&ParamStore::random(1).var_builder(DType::F32, &DEV), &Dinov2Config::small()).unwrap();
    assert_eq!(s.pos_embed(16, 16).unwrap().dims(), &[1, 257, 384]);
}

#[test]
fn effnet_shapes() {
    let net = EfficientNetLite0::new(&ParamStore::random(5).var_builder(DType::F32, &DEV)).unwrap();
    let (f, l) = net.forward(&uniform(&[2, 3, 96, 96], 6, DType::F32)).unwrap();
    assert_eq!((f.dims(), l.dims()), (&[2, 1280][..], &[2, 1000][..]));
    let (f, _) = net.forward_pm1(&uniform(&[1, 3, 32, 32], 7, DType::F32)).unwrap();
    assert_eq!(f.dims(), &[1, 1280]);
    assert!(f.flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().all(|v| v.is_finite()));
}

/// LPIPS is 0 for identical images, positive otherwise, and its gradient
/// w.r.t. the first image matches central differences (f64).
#[test]
fn lpips_gradient_reaches_the_image() {
    for (net, size) in [(LpipsNet::Alex, 48), (LpipsNet::Vgg, 32)] {
        let vb = ParamStore::random(9).var_builder(DType::F64, &DEV);
        let lp = Lpips::new(&vb, net).unwrap();
        let y = uniform(&[2, 3, size, size], 10, DType::F64);
        let d_same = lp.forward(&y, &y).unwrap().to_vec1::<f64>().unwrap();
        assert_eq!(d_same, vec![0.0, 0.0], "{net:?}");
        let x = Var::from_tensor(&uniform(&[2, 3, size, size], 11, DType::F64)).unwrap();
        let loss = |t: &Tensor| lp.forward(t, &y).unwrap().sum_all().unwrap().to_scalar::<f64>().unwrap();
        let l0 = loss(x.as_tensor());
        assert!(l0 > 0.0 && l0.is_finite(), "{net:?}: {l0}");
        let grads = lp.forward(x.as_tensor(), &y).unwrap().sum_all().unwrap().backward().unwrap();
        let g = grads.get(x.as_tensor()).unwrap_or_else(|| panic!("{net:?}: no gradient reached the image"));
        let gv: Vec<f64> = g.flatten_all().unwrap().to_vec1().unwrap();
        assert!(gv.iter().all(|v| v.is_finite()), "{net:?}: non-finite gradient");
        assert!(gv.iter().any(|&v| v != 0.0), "{net:?}: zero gradient");
        // Directional derivative along a random direction. ReLU and max-pool
        // kinks make a finite difference jump when a step crosses one, so the
        // best of two small steps is compared (f64).
        let dir = uniform(&[2, 3, size, size], 12, DType::F64);
        let an = (g * &dir).unwrap().sum_all().unwrap().to_scalar::<f64>().unwrap();
        let (rel, fd) = [1e-6, 1e-7]
            .iter()
            .map(|&h| {
                let plus = loss(&(x.as_tensor() + (&dir * h).unwrap()).unwrap());
                let minus = loss(&(x.as_tensor() - (&dir * h).unwrap()).unwrap());
                let fd = (plus - minus) / (2.0 * h);
                ((fd - an).abs() / fd.abs().max(an.abs()), fd)
            })
            .fold((f64::MAX, 0.0), |a, b| if b.0 < a.0 { b } else { a });
        println!("{net:?}: directional derivative backprop {an:.6e}, finite difference {fd:.6e}, rel err {rel:.1e}");
        assert!(rel < 1e-5, "{net:?}: backprop {an} vs finite difference {fd}");
    }
}

/// A black image gives all-zero ReLU features at some taps; the gradient
/// must stay finite there (the channel norm's sqrt at 0).
#[test]
fn lpips_gradient_is_finite_on_flat_images() {
    let lp = Lpips::new(&ParamStore::random(3).var_builder(DType::F32, &DEV), LpipsNet::Vgg).unwrap();
    let x = Var::from_tensor(&Tensor::full(-1f32, (1, 3, 32, 32), &DEV).unwrap()).unwrap();
    let y = uniform(&[1, 3, 32, 32], 1, DType::F32);
    let grads = lp.forward(x.as_tensor(), &y).unwrap().sum_all().unwrap().backward().unwrap();
    let g: Vec<f32> = grads.get(x.as_tensor()).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    assert!(g.iter().all(|v| v.is_finite()));
}

fn tensors_of(store: &ParamStore) -> HashMap<String, Tensor> {
    store.vars().into_iter().map(|(k, v)| (k, v.as_tensor().clone())).collect()
}

#[test]
fn load_errors_are_exit_2_and_name_the_problem() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ParamStore::random(0);
    Lpips::new(&store.var_builder(DType::F32, &DEV), LpipsNet::Alex).unwrap();
    let good = tensors_of(&store);

    let path = tmp.path().join("alex.safetensors");
    candle_core::safetensors::save(&good, &path).unwrap();
    Lpips::load(&path, LpipsNet::Alex, &DEV).unwrap();

    let check = |e: anyhow::Error, what: &[&str]| {
        let line = one_line(&e);
        assert_eq!(code_for(&e), 2, "{line}");
        for w in what {
            assert!(line.contains(w), "'{line}' does not mention '{w}'");
        }
    };
    // Missing tensor.
    let mut t = good.clone();
    t.remove("lin.4.weight");
    candle_core::safetensors::save(&t, &path).unwrap();
    check(Lpips::load(&path, LpipsNet::Alex, &DEV).unwrap_err(), &["alex.safetensors", "lin.4.weight"]);
    // Wrong shape.
    let mut t = good.clone();
    t.insert("features.0.bias".into(), Tensor::zeros(63, DType::F32, &DEV).unwrap());
    candle_core::safetensors::save(&t, &path).unwrap();
    check(Lpips::load(&path, LpipsNet::Alex, &DEV).unwrap_err(), &["alex.safetensors", "features.0.bias"]);
    // The VGG file is not the AlexNet file.
    candle_core::safetensors::save(&good, &path).unwrap();
    check(Lpips::load(&path, LpipsNet::Vgg, &DEV).unwrap_err(), &["alex.safetensors", "features."]);
    // Not a safetensors file; no file at all.
    std::fs::write(&path, b"garbage").unwrap();
    check(Lpips::load(&path, LpipsNet::Alex, &DEV).unwrap_err(), &["alex.safetensors"]);
    let none = tmp.path().join("dinov2-s.safetensors");
    check(Dinov2::load(&none, &DEV).unwrap_err(), &["dinov2-s.safetensors", "scripts/fetch-assets"]);
    check(EfficientNetLite0::load(&none, &DEV).unwrap_err(), &["scripts/fetch-assets"]);
}

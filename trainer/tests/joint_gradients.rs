//! The joint loss on `tiny` reaches every trainable parameter of the encoder,
//! quantizer, decoder, AR model and VFM projectors with a finite, non-zero
//! gradient.

use candle_core::{DType, Device, Tensor};
use eostok_models::names::Group;
use eostok_models::nn::Eostok;
use eostok_models::sampling::SplitMix64;
use eostok_models::Config;
use eostok_train::joint::{joint_forward, Batch, LossConfig};

#[test]
fn every_parameter_gets_a_finite_nonzero_gradient() {
    let cfg = Config::preset("tiny").unwrap();
    let dev = Device::Cpu;
    let (model, store) = Eostok::random(&cfg, 0, DType::F32, &dev).unwrap();
    let b = 4;
    let images = Tensor::rand(-1f32, 1.0, (b, 3, 32, 32), &dev).unwrap();
    let vfm = Tensor::randn(0f32, 1.0, (b, cfg.num_patches(), cfg.vfm.as_ref().unwrap().dim), &dev).unwrap();
    let batch = Batch { images, classes: vec![0, 3, 5, 9], vfm: Some(vfm) };
    // Nested dropout on, so the truncated path is in the graph too.
    let w = LossConfig { nested_dropout: 0.5, ..Default::default() };
    let out = joint_forward(&model, &batch, &w, None, &mut SplitMix64::new(1)).unwrap();
    let names: Vec<&str> = out.terms.iter().map(|(n, _)| *n).collect();
    for t in ["l2", "commit", "entropy", "ntp", "apr_l2", "vfm_implicit", "vfm_decoder"] {
        assert!(names.contains(&t), "missing loss term {t}");
    }
    let grads = out.loss.backward().unwrap();
    let mut groups = std::collections::BTreeSet::new();
    for (name, var) in store.vars() {
        let g = grads.get(var.as_tensor()).unwrap_or_else(|| panic!("no gradient for {name}"));
        let v: Vec<f32> = g.flatten_all().unwrap().to_vec1().unwrap();
        assert!(v.iter().all(|x| x.is_finite()), "{name}: non-finite gradient");
        assert!(v.iter().any(|&x| x != 0.0), "{name}: gradient is all zero");
        groups.insert(Group::of(&name));
    }
    assert_eq!(groups.len(), 5, "{groups:?}");
}

#[test]
fn apr_gradient_reaches_ar_and_tokenizer_only_when_on() {
    // APR alone: its gradient reaches the AR head (through the STE over the
    // logits) and the encoder (through the AR inputs).
    let cfg = Config::preset("tiny").unwrap();
    let dev = Device::Cpu;
    let (model, store) = Eostok::random(&cfg, 0, DType::F32, &dev).unwrap();
    let images = Tensor::rand(-1f32, 1.0, (2, 3, 32, 32), &dev).unwrap();
    let batch = Batch { images, classes: vec![1, 2], vfm: None };
    let only_apr = LossConfig { l2: 0.0, commit: 0.0, entropy: 0.0, ntp: 0.0, apr: 1.0, nested_dropout: 0.0, ..Default::default() };
    let out = joint_forward(&model, &batch, &only_apr, None, &mut SplitMix64::new(2)).unwrap();
    let grads = out.loss.backward().unwrap();
    let norm = |name: &str| -> f32 {
        let v = &store.vars()[name];
        grads.get(v.as_tensor()).map(|g| g.sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap()).unwrap_or(0.0)
    };
    assert!(norm("output.weight") > 0.0, "APR must reach the AR head");
    assert!(norm("blk.0.attn_q.weight") > 0.0, "APR must reach the AR blocks");
    assert!(norm("enc.blk.0.attn_qkv.weight") > 0.0, "APR must reach the encoder");
    assert!(norm("dec.pixel_out.weight") > 0.0);

    // With APR off and only it weighted, nothing gets a gradient from it.
    let none = LossConfig { apr: 0.0, ..only_apr };
    let out = joint_forward(&model, &batch, &none, None, &mut SplitMix64::new(2)).unwrap();
    assert!(out.apr_image.is_none());
    assert!(!out.terms.iter().any(|(n, _)| *n == "apr_l2"));
}

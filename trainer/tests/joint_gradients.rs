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

#[test]
fn class_dropout_trains_the_null_class_row() {
    // forward_train drops labels to the null class (p = 0.1): that row of the class table
    // must get a gradient (CFG needs it), a class absent from the batch must not.
    let cfg = Config::preset("tiny").unwrap();
    let dev = Device::Cpu;
    let (model, store) = Eostok::random(&cfg, 0, DType::F32, &dev).unwrap();
    let b = 48;
    let images = Tensor::rand(-1f32, 1.0, (b, 3, 32, 32), &dev).unwrap();
    let classes: Vec<u32> = (0..b as u32).map(|i| i % 5).collect();
    let batch = Batch { images, classes, vfm: None };
    let w = LossConfig { nested_dropout: 0.0, ..Default::default() };
    let mut rng = SplitMix64::new(11);
    let out = joint_forward(&model, &batch, &w, None, &mut rng).unwrap();
    let grads = out.loss.backward().unwrap();
    let table = &store.vars()[&format!("{}.weight", eostok_models::names::AR_CLS_EMBD)];
    let g = grads.get(table.as_tensor()).expect("class table gradient");
    let row = |i: usize| g.get(i).unwrap().sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
    assert!(row(cfg.null_class()) > 0.0, "the null-class row got no gradient");
    assert!(row(2) > 0.0, "a class in the batch got no gradient");
    assert_eq!(row(7), 0.0, "class 7 is not in the batch but got a gradient");
}

#[test]
fn im2col_matches_tensor_ops_forward_and_backward() {
    use eostok_train::disc::{im2col, im2col_reference};
    let dev = Device::Cpu;
    for (shape, k, stride, pad) in [((2, 3, 9, 7), 4, 2, 1), ((1, 5, 6, 6), 3, 1, 1), ((3, 2, 8, 8), 4, 2, 1)] {
        let x = candle_core::Var::from_tensor(&Tensor::randn(0f32, 1.0, shape, &dev).unwrap()).unwrap();
        let (a, b) = (im2col(&x, k, stride, pad).unwrap(), im2col_reference(&x, k, stride, pad).unwrap());
        assert_eq!(a.dims(), b.dims());
        let diff = (&a - &b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert_eq!(diff, 0.0, "im2col forward {shape:?}");
        let w = Tensor::randn(0f32, 1.0, a.dims(), &dev).unwrap();
        let ga = (&a * &w).unwrap().sum_all().unwrap().backward().unwrap();
        let gb = (&b * &w).unwrap().sum_all().unwrap().backward().unwrap();
        let (ga, gb) = (ga.get(x.as_tensor()).unwrap(), gb.get(x.as_tensor()).unwrap());
        let diff = (ga - gb).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(diff < 1e-5, "col2im backward {shape:?}: {diff}");
    }
}

//! Across crates: a checkpoint written by the trainer's code is read back,
//! and the models crate samples tokens and decodes images from it.

use candle_core::{DType, Device};
use eostok_models::nn::{Eostok, GenerateOptions};
use eostok_models::Config;
use eostok_train::checkpoint::{self, WeightSet};

#[test]
fn init_checkpoint_then_generate() {
    let cfg = Config::preset("tiny").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ck = dir.path().join("ck");
    let (_, store) = Eostok::random(&cfg, 9, DType::F32, &Device::Cpu).unwrap();
    let weights = store.vars().into_iter().map(|(k, v)| (k, v.as_tensor().clone())).collect();
    checkpoint::write_initial(&ck, &cfg, &weights, false).unwrap();

    let cfg2 = checkpoint::load_config(&ck).unwrap();
    let ema = checkpoint::load_weights(&ck, &cfg2, WeightSet::Ema, &Device::Cpu).unwrap();
    let (model, _) = Eostok::from_tensors(&cfg2, ema, DType::F32, &Device::Cpu).unwrap();
    let (ids, images) = model.generate(&[0, 9], &GenerateOptions { seed: 1, ..Default::default() }).unwrap();
    assert_eq!(ids.len(), 2);
    assert!(ids.iter().all(|r| r.len() == cfg.latent_tokens));
    assert_eq!(images.dims(), &[2, 3, 32, 32]);
    let v: Vec<f32> = images.flatten_all().unwrap().to_vec1().unwrap();
    assert!(v.iter().all(|x| x.is_finite()));
    // Different classes give different token streams even from random weights.
    assert_ne!(ids[0], ids[1]);
}

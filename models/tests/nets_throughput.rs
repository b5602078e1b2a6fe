//! Images per second of each pretrained net at batch 16 on the CPU (all
//! cores rayon sees). Ignored by default; run with
//! `cargo test -p eostok-models --test nets_throughput -- --ignored --nocapture`.
//! Uses the cached weights when present, else random ones (same cost).

use candle_core::{DType, Device, Tensor, Var};
use eostok_models::nets::{asset_dir, Dinov2, Dinov2Config, EfficientNetLite0, Lpips, LpipsNet};
use eostok_models::nn::ParamStore;
use std::time::Instant;

const DEV: Device = Device::Cpu;
const BATCH: usize = 16;

fn images(size: usize, seed: u64) -> Tensor {
    let mut rng = eostok_models::sampling::SplitMix64::new(seed);
    let n = BATCH * 3 * size * size;
    let v: Vec<f32> = (0..n).map(|_| rng.uniform() as f32 * 2.0 - 1.0).collect();
    Tensor::from_vec(v, (BATCH, 3, size, size), &DEV).unwrap()
}

/// Best of `reps` timed runs after one warm-up, as images/s.
fn rate(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut best = f64::MAX;
    for _ in 0..reps {
        let t = Instant::now();
        f();
        best = best.min(t.elapsed().as_secs_f64());
    }
    BATCH as f64 / best
}

#[test]
#[ignore]
fn nets_images_per_second() {
    let random = || ParamStore::random(0).var_builder(DType::F32, &DEV);
    let have = |f: &str| asset_dir().join(f).is_file();
    println!("threads: {}", rayon::current_num_threads());

    let dino = if have("dinov2-s.safetensors") { Dinov2::load_default(&DEV).unwrap() } else { Dinov2::new(&random(), &Dinov2Config::small()).unwrap() };
    let x = images(224, 1);
    println!("dinov2-s/14 224x224 forward: {:.1} img/s", rate(2, || drop(dino.forward(&x).unwrap())));
    let x = images(256, 1);
    println!("dinov2-s/14 vfm_features_for_grid(256px -> 16x16): {:.1} img/s", rate(2, || drop(dino.vfm_features_for_grid(&x, 16).unwrap())));

    let eff = if have("efficientnet-lite0.safetensors") { EfficientNetLite0::load_default(&DEV).unwrap() } else { EfficientNetLite0::new(&random()).unwrap() };
    let x = images(224, 2);
    println!("efficientnet-lite0 224x224 forward: {:.1} img/s", rate(3, || drop(eff.forward(&x).unwrap())));

    for net in [LpipsNet::Vgg, LpipsNet::Alex] {
        let lp = if have(net.file()) { Lpips::load_default(net, &DEV).unwrap() } else { Lpips::new(&random(), net).unwrap() };
        for size in [64, 128] {
            let (x, y) = (images(size, 3), images(size, 4));
            let fwd = rate(2, || drop(lp.forward(&x, &y).unwrap()));
            let xv = Var::from_tensor(&x).unwrap();
            let bwd = rate(1, || {
                let g = lp.forward(xv.as_tensor(), &y).unwrap().sum_all().unwrap().backward().unwrap();
                drop(g.get(xv.as_tensor()).unwrap().clone());
            });
            println!("lpips-{net:?} {size}x{size}: forward {fwd:.1} pairs/s, forward+backward {bwd:.1} pairs/s");
        }
    }
}

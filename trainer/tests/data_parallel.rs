//! Data parallelism on CPU: `fit` with ranks as threads of this process
//! (`dist::LocalGroup`), against `fit` in one process. The NCCL group runs the
//! same fit code; only its all-reduce differs (docs/gpu.md).

use candle_core::{Device, Tensor};
use eostok_models::checkpoint::{self, WeightSet};
use eostok_train::dist::{Collective, LocalGroup};
use eostok_train::fit::{fit, FitOptions, FitSummary, Mode, Precision, TrainConfig};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn fixture() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/fashion-mnist").to_string_lossy().into_owned()
}

fn train(steps: u64, batch: usize) -> TrainConfig {
    TrainConfig {
        mode: Mode::E2e,
        data: fixture(),
        steps,
        batch,
        lr: 1e-3,
        min_lr: 1e-5,
        warmup: 1,
        grad_clip: 1.0,
        ema_decay: 0.9,
        tokenizer_beta2: 0.999,
        ar_beta2: 0.95,
        weight_decay: 0.0,
        seed: 7,
        hflip: true,
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

fn opts(out: &Path, resume: Option<PathBuf>, train: TrainConfig, stop_at: Option<u64>, dist: Option<Arc<dyn Collective>>) -> FitOptions {
    FitOptions {
        config: "tiny".into(),
        out: out.to_path_buf(),
        resume,
        train,
        device: Device::Cpu,
        progress: false,
        signals: None,
        stop_at,
        max_nan_steps: 3,
        dist,
        // Small buckets, so the test crosses many bucket boundaries.
        bucket_mib: 0.05,
        precision: Precision::F32,
    }
}

/// `fit` on `world` threads, one LocalGroup rank each; rank 0's summary.
fn fit_ranks(world: usize, make: impl Fn(Arc<dyn Collective>) -> FitOptions + Sync) -> FitSummary {
    let groups = LocalGroup::new(world);
    std::thread::scope(|s| {
        let handles: Vec<_> = groups.into_iter().map(|g| s.spawn(|| fit(make(Arc::new(g))))).collect();
        let mut results: Vec<FitSummary> = handles.into_iter().map(|h| h.join().expect("rank panicked").expect("rank failed")).collect();
        // Every rank took the same steps and saw the same (all-reduced) loss.
        assert!(results.iter().all(|r| r.step == results[0].step && r.last_loss.to_bits() == results[0].last_loss.to_bits()));
        results.remove(0)
    })
}

fn tensors(dir: &Path, file: &str) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(dir.join(file), &Device::Cpu).unwrap()
}

/// Largest |a - b| over every tensor of `file`, and the largest |a|.
fn max_diff(a: &Path, b: &Path, file: &str) -> (f32, f32) {
    let (ta, tb) = (tensors(a, file), tensors(b, file));
    assert_eq!(ta.len(), tb.len(), "{file}: tensor sets differ");
    let (mut diff, mut mag) = (0f32, 0f32);
    for (k, x) in &ta {
        let y = &tb[k];
        let xv: Vec<f32> = x.flatten_all().unwrap().to_vec1().unwrap();
        let yv: Vec<f32> = y.flatten_all().unwrap().to_vec1().unwrap();
        for (p, q) in xv.iter().zip(&yv) {
            diff = diff.max((p - q).abs());
            mag = mag.max(p.abs());
        }
    }
    (diff, mag)
}

fn state(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join(checkpoint::STATE_FILE)).unwrap()).unwrap()
}

/// Tolerance on the weights (see the test's comment): a few ulps of the gradients, amplified
/// by Adam's division by sqrt(v), stays far below one learning-rate step (1e-3).
const WEIGHT_TOL: f32 = 1e-4;

#[test]
fn two_ranks_of_b_equal_one_rank_of_2b() {
    // Why a tolerance and not bit equality: each rank's matmuls sum the batch dimension over
    // its 4 images, one process over 8, so the f32 gradients differ in the order of their
    // additions (relative ~1e-7). The losses are means over equal slices, the entropy term's
    // codebook distribution is all-reduced, and the random draws are the global batch's, so
    // nothing else differs. Adam moves each weight by lr * m / (sqrt(v) + eps): a gradient
    // that is tiny compared with its own noise could flip one update (at most 2 lr = 2e-3 per
    // step); the test asserts every weight within WEIGHT_TOL, which holds with a margin here.
    let d = tempfile::tempdir().unwrap();
    let (one, two) = (d.path().join("one"), d.path().join("two"));
    let steps = 3;
    let a = fit(opts(&one, None, train(steps, 8), None, None)).unwrap();
    let b = fit_ranks(2, |g| opts(&two, None, train(steps, 8), None, Some(g)));
    assert_eq!((a.step, b.step), (steps, steps));
    assert!((a.last_loss - b.last_loss).abs() < 1e-4 * a.last_loss.abs().max(1.0), "loss {} vs {}", a.last_loss, b.last_loss);
    for file in [checkpoint::MODEL_FILE, checkpoint::EMA_FILE] {
        let (diff, mag) = max_diff(&one, &two, file);
        eprintln!("{file}: max |1 rank - 2 ranks| = {diff:e} (max |w| {mag})");
        assert!(diff <= WEIGHT_TOL, "{file}: 2 ranks x 4 differ from 1 rank x 8 by {diff}");
    }
    let (diff, _) = max_diff(&one, &two, checkpoint::OPTIMIZER_FILE);
    eprintln!("optimizer: max diff {diff:e}");
    // The data position and the RNG are exact: the same global order and draws.
    let (sa, sb) = (state(&one), state(&two));
    assert_eq!(sa["data_position"], sb["data_position"]);
    assert_eq!(sa["rng"], sb["rng"]);
    assert_eq!(sa["step"], sb["step"]);
    // Rank 0 wrote the metrics; the logged loss is the global mean.
    let lines = std::fs::read_to_string(two.join(checkpoint::METRICS_FILE)).unwrap();
    let last: serde_json::Value = serde_json::from_str(lines.lines().last().unwrap()).unwrap();
    assert_eq!(last["world_size"], 2);
    assert_eq!(lines.lines().count(), steps as usize);
}

#[test]
fn resume_a_one_rank_checkpoint_on_two_ranks_and_back() {
    let d = tempfile::tempdir().unwrap();
    let (whole, split) = (d.path().join("whole"), d.path().join("split"));
    let steps = 4;
    fit(opts(&whole, None, train(steps, 8), None, None)).unwrap();
    // One process to step 2, two ranks to step 3, one process again to the end.
    fit(opts(&split, None, train(steps, 8), Some(2), None)).unwrap();
    let mid = fit_ranks(2, |g| opts(&split, Some(split.clone()), train(steps, 8), Some(3), Some(g)));
    assert_eq!(mid.step, 3);
    assert_eq!(state(&split)["step"], 3);
    let end = fit(opts(&split, Some(split.clone()), train(steps, 8), None, None)).unwrap();
    assert_eq!(end.step, steps);
    let (sa, sb) = (state(&whole), state(&split));
    assert_eq!(sa["data_position"], sb["data_position"]);
    assert_eq!(sa["rng"], sb["rng"]);
    for file in [checkpoint::MODEL_FILE, checkpoint::EMA_FILE] {
        let (diff, _) = max_diff(&whole, &split, file);
        eprintln!("{file}: max |uninterrupted - resumed across world sizes| = {diff:e}");
        assert!(diff <= WEIGHT_TOL, "{file}: {diff}");
    }
    // The checkpoint format is the single-process one: it loads as any other.
    let cfg = checkpoint::load_config(&split).unwrap();
    checkpoint::load_weights(&split, &cfg, WeightSet::Raw, &Device::Cpu).unwrap();
}

#[test]
fn an_uneven_split_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("run");
    let groups = LocalGroup::new(3);
    let errs: Vec<anyhow::Error> = std::thread::scope(|s| {
        let hs: Vec<_> = groups.into_iter().map(|g| s.spawn(|| fit(opts(&out, None, train(2, 8), None, Some(Arc::new(g)))).err().expect("8 images over 3 ranks"))).collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for e in errs {
        assert_eq!(eostok_models::exit::code_for(&e), 2, "{e}");
        assert!(e.to_string().contains("multiple of the world size 3"), "{e}");
    }
    assert!(!out.exists(), "nothing written before the check");
}

/// The entropy penalty's codebook term is not a mean over samples: each rank computes it
/// from the all-reduced code distribution. Mean of the ranks' gradients == gradient of the
/// whole batch (to f32 rounding), and the plain per-rank penalty would not be.
#[test]
fn synced_entropy_gradient_matches_the_whole_batch() {
    use eostok_train::loss::{entropy_penalty, entropy_penalty_synced};
    let dev = Device::Cpu;
    let x = candle_core::Var::from_tensor(&Tensor::randn(0f32, 2.0, (8, 3, 16), &dev).unwrap()).unwrap();
    let softmax = |t: &Tensor| candle_nn::ops::softmax(t, candle_core::D::Minus1).unwrap();
    let whole_loss = entropy_penalty(&softmax(x.as_tensor())).unwrap();
    let whole: Vec<f32> = whole_loss.backward().unwrap().get(x.as_tensor()).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    let per_rank = |synced: bool| -> (Vec<f32>, f32) {
        let groups = LocalGroup::new(2);
        let outs: Vec<(Vec<f32>, f32)> = std::thread::scope(|s| {
            let hs: Vec<_> = groups
                .into_iter()
                .map(|g| {
                    let x = x.clone();
                    s.spawn(move || {
                        let p = softmax(&x.as_tensor().narrow(0, 4 * g.rank(), 4).unwrap());
                        let reduce = |t: &Tensor| g.all_reduce_sum(t).map_err(|e| candle_core::Error::Msg(e.to_string()));
                        let e = if synced { entropy_penalty_synced(&p, 2, reduce).unwrap() } else { entropy_penalty(&p).unwrap() };
                        let grad: Vec<f32> = e.backward().unwrap().get(x.as_tensor()).unwrap().flatten_all().unwrap().to_vec1().unwrap();
                        (grad, e.to_scalar::<f32>().unwrap())
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let mean: Vec<f32> = outs[0].0.iter().zip(&outs[1].0).map(|(a, b)| (a + b) / 2.0).collect();
        (mean, (outs[0].1 + outs[1].1) / 2.0)
    };
    let scale = whole.iter().fold(0f32, |m, v| m.max(v.abs()));
    let err = |g: &[f32]| g.iter().zip(&whole).fold(0f32, |m, (a, b)| m.max((a - b).abs())) / scale;
    let (synced, value) = per_rank(true);
    let (plain, _) = per_rank(false);
    eprintln!("entropy gradient, relative max error: synced {:e}, per-rank {:e}", err(&synced), err(&plain));
    assert!(err(&synced) < 1e-5, "synced: {}", err(&synced));
    assert!(err(&plain) > 1e-3, "the per-rank penalty should differ (else this test checks nothing): {}", err(&plain));
    let whole_value = whole_loss.to_scalar::<f32>().unwrap();
    assert!((value - whole_value).abs() < 1e-5 * whole_value.abs().max(1.0), "{value} vs {whole_value}");
}

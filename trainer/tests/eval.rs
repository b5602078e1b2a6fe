//! eostok-eval: the statistics (Fréchet distance, matrix square root,
//! precision/recall, the stats cache) on synthetic features, and the
//! binary on the repo's fixtures. Tests that need the feature nets of the
//! asset cache print why they skip when it is absent.

use eostok_models::sampling::SplitMix64;
use eostok_train::eval::cache::{self, CacheKey, CACHE_VERSION};
use eostok_train::eval::fd::{frechet_distance, frechet_distance_features, precision_recall, sqrtm_psd, trace_sqrt_product, Stats};
use nalgebra::{DMatrix, DVector};
use std::path::{Path, PathBuf};
use std::process::Command;

fn gaussian(rng: &mut SplitMix64) -> f64 {
    let u1 = rng.uniform().max(1e-300);
    let u2 = rng.uniform();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// `n x d` row-major features: correlated Gaussians (a random linear map).
fn features(n: usize, d: usize, seed: u64) -> Vec<f32> {
    let mut rng = SplitMix64::new(seed);
    let mix: Vec<f64> = (0..d * d).map(|_| gaussian(&mut rng) / (d as f64).sqrt()).collect();
    let mut out = Vec::with_capacity(n * d);
    for _ in 0..n {
        let z: Vec<f64> = (0..d).map(|_| gaussian(&mut rng)).collect();
        for i in 0..d {
            out.push((0..d).map(|j| mix[i * d + j] * z[j]).sum::<f64>() as f32 + 0.5);
        }
    }
    out
}

fn max_abs(a: &DMatrix<f64>) -> f64 {
    a.iter().fold(0f64, |m, v| m.max(v.abs()))
}

#[test]
fn sqrtm_known_cases() {
    // [[2,1],[1,2]] has eigenvalues 3 (along [1,1]) and 1 (along [1,-1]).
    let a = DMatrix::from_row_slice(2, 2, &[2.0, 1.0, 1.0, 2.0]);
    let (s3, p) = (3f64.sqrt(), 0.5);
    let want = DMatrix::from_row_slice(2, 2, &[p * (s3 + 1.0), p * (s3 - 1.0), p * (s3 - 1.0), p * (s3 + 1.0)]);
    assert!(max_abs(&(sqrtm_psd(&a) - want)) < 1e-12);
    let d = DMatrix::from_diagonal(&DVector::from_vec(vec![4.0, 9.0, 0.0]));
    let want = DMatrix::from_diagonal(&DVector::from_vec(vec![2.0, 3.0, 0.0]));
    assert!(max_abs(&(sqrtm_psd(&d) - want)) < 1e-12);
    // tr sqrt(A B) for commuting diagonals: sum sqrt(a_i b_i).
    let b = DMatrix::from_diagonal(&DVector::from_vec(vec![1.0, 4.0, 5.0]));
    let (tr, _) = trace_sqrt_product(&d, &b);
    assert!((tr - (2.0 + 6.0 + 0.0)).abs() < 1e-10, "{tr}");
}

#[test]
fn sqrtm_of_random_spd_squares_back() {
    let mut rng = SplitMix64::new(7);
    let d = 40;
    let b = DMatrix::<f64>::from_fn(d, d, |_, _| gaussian(&mut rng));
    let a = b.transpose() * &b + DMatrix::identity(d, d) * 0.1;
    let r = sqrtm_psd(&a);
    assert!(max_abs(&(&r - r.transpose())) < 1e-10, "square root is symmetric");
    let err = max_abs(&(&r * &r - &a)) / max_abs(&a);
    assert!(err < 1e-10, "relative error {err}");
}

#[test]
fn fd_of_a_set_with_itself_is_zero() {
    let f = features(300, 12, 1);
    let s = Stats::from_features(&f, 12);
    let r = frechet_distance(&s, &s);
    assert!(r.fd.abs() < 1e-8, "{}", r.fd);
    assert!(!r.eps_fallback);
    // Fewer samples than dimensions: rank-deficient covariance, still ~0.
    let f = features(10, 40, 2);
    let s = Stats::from_features(&f, 40);
    assert!(frechet_distance(&s, &s).fd.abs() < 1e-6);
}

#[test]
fn fd_from_features_matches_fd_from_stats() {
    // Fewer samples than dimensions (the shortcut's case) and more.
    for (n1, n2, d, seed) in [(12, 9, 30, 10), (80, 60, 8, 11)] {
        let (f1, f2) = (features(n1, d, seed), features(n2, d, seed + 100));
        let via_stats = frechet_distance(&Stats::from_features(&f1, d), &Stats::from_features(&f2, d)).fd;
        let via_feats = frechet_distance_features(&f1, &f2, d).fd;
        assert!((via_stats - via_feats).abs() < 1e-7 * via_stats.max(1.0), "n {n1}/{n2} d {d}: {via_stats} vs {via_feats}");
    }
}

#[test]
fn fd_matches_the_closed_form_for_diagonal_gaussians() {
    let mk = |mean: &[f64], var: &[f64]| Stats { mean: DVector::from_row_slice(mean), cov: DMatrix::from_diagonal(&DVector::from_row_slice(var)), count: 100 };
    let (a, b) = (mk(&[0.0, 1.0, 2.0], &[1.0, 4.0, 9.0]), mk(&[1.0, 1.0, 0.0], &[4.0, 1.0, 0.25]));
    // |mu1 - mu2|^2 + sum (sqrt(v1) - sqrt(v2))^2 = 5 + (1 + 1 + 6.25).
    let want = 5.0 + 1.0 + 1.0 + 2.5f64.powi(2);
    assert!((frechet_distance(&a, &b).fd - want).abs() < 1e-10);
    // Both covariances zero: only the means count, nothing breaks.
    let (z1, z2) = (mk(&[0.0, 0.0], &[0.0, 0.0]), mk(&[3.0, 4.0], &[0.0, 0.0]));
    assert!((frechet_distance(&z1, &z2).fd - 25.0).abs() < 1e-9);
}

#[test]
fn fd_grows_monotonically_with_added_noise() {
    let (n, d) = (400, 10);
    let base = features(n, d, 3);
    let mut rng = SplitMix64::new(4);
    let noise: Vec<f32> = (0..n * d).map(|_| gaussian(&mut rng) as f32).collect();
    let s0 = Stats::from_features(&base, d);
    let mut last = -1.0;
    for sigma in [0.0f32, 0.1, 0.3, 1.0, 3.0] {
        let noisy: Vec<f32> = base.iter().zip(&noise).map(|(x, z)| x + sigma * z).collect();
        let fd = frechet_distance(&s0, &Stats::from_features(&noisy, d)).fd;
        assert!(fd > last, "sigma {sigma}: FD {fd} after {last}");
        last = fd;
    }
    assert!(last > 10.0, "sigma 3 on 10 dims moves the trace by ~90: {last}");
}

#[test]
fn precision_recall_sanity() {
    let d = 6;
    let real = features(200, d, 5);
    let (p, r) = precision_recall(&real, &real, d, 3);
    assert_eq!((p, r), (1.0, 1.0));
    // A far, disjoint cloud: nothing of either set inside the other's manifold.
    let far: Vec<f32> = features(150, d, 6).iter().map(|v| v + 1000.0).collect();
    assert_eq!(precision_recall(&real, &far, d, 3), (0.0, 0.0));
    // A collapsed generator (tiny clusters around 5 real images): precise, no recall.
    let jitter = features(100, d, 8);
    let mode: Vec<f32> = (0..100 * d).map(|i| real[(i / d % 5) * d + i % d] + 1e-4 * (jitter[i] - 0.5)).collect();
    let (p, r) = precision_recall(&real, &mode, d, 3);
    assert!(p > 0.9 && r < 0.2, "precision {p} recall {r}");
}

#[test]
fn stats_cache_round_trip_and_key_check() {
    let dir = tempfile::tempdir().unwrap();
    let f = features(20, 5, 9);
    let s = Stats::from_features(&f, 5);
    let key = CacheKey {
        version: CACHE_VERSION,
        source: "x".into(),
        n: 20,
        class: "all".into(),
        seed: 0,
        features: "effnet-lite0".into(),
        image_size: 32,
        resize: "r".into(),
        weights: None,
    };
    assert!(cache::load(dir.path(), &key).is_none());
    cache::save(dir.path(), &key, &s, &f).unwrap();
    let c = cache::load(dir.path(), &key).expect("cached");
    assert_eq!(c.features, f);
    assert_eq!(c.stats.count, 20);
    assert_eq!(c.stats.mean, s.mean);
    assert_eq!(c.stats.cov, s.cov);
    // Other weights, other statistics; without a weights entry the key's JSON is as before.
    assert!(!key.json().contains("weights"));
    let other_weights = CacheKey { weights: Some("/w.safetensors | 1 bytes | mtime 0".into()), ..key.clone() };
    assert!(cache::load(dir.path(), &other_weights).is_none());
    let other = CacheKey { n: 21, ..key };
    assert!(cache::load(dir.path(), &other).is_none());
}

// ---- the binary ----

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn eval(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_eostok-eval")).args(args).output().unwrap()
}

fn have_effnet() -> bool {
    let p = eostok_models::nets::asset_dir().join("efficientnet-lite0.safetensors");
    if !p.is_file() {
        println!("skipping: {} not found (run scripts/fetch-assets or set EOSTOK_ASSETS)", p.display());
    }
    p.is_file()
}

/// The key set of the fd JSON: part of the documented schema.
const FD_KEYS: [&str; 10] = ["class", "fake", "image_size", "metrics", "pr_k", "real", "sampling", "schema", "seconds", "seed"];
const FD_METRIC_KEYS: [&str; 13] =
    ["dim", "eps_fallback", "fd", "fd_name", "feature_layer", "features", "is", "is_name", "is_splits", "is_std", "precision", "real_cached", "recall"];

fn keys(v: &serde_json::Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().expect("object").keys().cloned().collect();
    k.sort();
    k
}

#[test]
fn fd_cli_fixture_against_the_bundled_model() {
    if !have_effnet() {
        return;
    }
    let cache = tempfile::tempdir().unwrap();
    let real = root().join("tests/fixtures/fashion-mnist");
    let model = root().join("runtime/assets/default.gguf");
    let run = |json: bool| {
        let mut a = vec!["fd", "--real", real.to_str().unwrap(), "--fake", model.to_str().unwrap(), "-n", "12", "--n-real", "16"];
        a.extend(["--cache", cache.path().to_str().unwrap(), "--quiet"]);
        if json {
            a.push("--json");
        }
        let o = eval(&a);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        (String::from_utf8(o.stdout).unwrap(), String::from_utf8(o.stderr).unwrap())
    };
    let (out, _) = run(true);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(keys(&v), FD_KEYS);
    assert_eq!(v["schema"], "eostok-eval/fd/1");
    assert_eq!(v["image_size"], 32);
    assert_eq!((v["real"]["n"].as_u64(), v["fake"]["n"].as_u64()), (Some(16), Some(12)));
    assert_eq!(keys(&v["real"]), ["describe", "kind", "n", "source"]);
    assert_eq!(keys(&v["sampling"]), ["batch", "cfg", "from_file", "temperature", "top_k", "top_p"]);
    // The bundled model recommends cfg 1.5 and no flag says otherwise.
    assert_eq!((v["sampling"]["cfg"].as_f64(), v["sampling"]["from_file"].clone()), (Some(1.5), serde_json::json!(["cfg 1.5"])));
    assert_eq!(keys(&v["seconds"]), ["fake", "metrics", "real", "total"]);
    assert_eq!(v["fake"]["kind"], "gguf");
    let m = &v["metrics"][0];
    assert_eq!(keys(m), FD_METRIC_KEYS);
    assert_eq!(m["fd_name"], "FD_effnet-lite0");
    assert_eq!(m["is_name"], "IS_effnet-lite0");
    assert_eq!(m["real_cached"], false);
    let fd = m["fd"].as_f64().unwrap();
    assert!(fd.is_finite() && fd > 0.0, "{fd}");
    for k in ["precision", "recall"] {
        let x = m[k].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&x), "{k} {x}");
    }
    assert!(m["is"].as_f64().unwrap() >= 1.0);

    // Second run: the real statistics come from the cache; every line names the net.
    let (text, err) = run(false);
    assert!(err.contains("from the cache"), "{err}");
    let first = text.lines().next().unwrap();
    assert!(first.starts_with("FD_effnet-lite0"), "{first}");
    let again: f64 = first.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!((again - fd).abs() < 1e-3, "same seed, same images, same distance: {again} vs {fd}");
    for line in text.lines() {
        assert!(line.contains("effnet-lite0"), "every line names the feature net: {line}");
        assert!(!line.contains("FID"), "never FID: {line}");
    }
}

/// Our candle port of pytorch-fid's FID Inception-v3 against pytorch-fid itself, on the
/// random weights and images `scripts/inception-reference.py` writes to the asset cache
/// (95 MB, so not in the repo; skipped with a message where absent).
#[test]
fn inception_matches_pytorch_fid_on_random_weights() {
    use candle_core::{Device, Tensor};
    use eostok_models::nets::InceptionV3;
    let dir = eostok_models::nets::asset_dir().join("inception-parity");
    let (wf, io) = (dir.join("weights.safetensors"), dir.join("io.safetensors"));
    if !wf.exists() || !io.exists() {
        eprintln!("skipped: {} absent (run scripts/inception-reference.py, which needs torch and pytorch-fid)", dir.display());
        return;
    }
    let dev = Device::Cpu;
    let net = InceptionV3::load(&wf, &dev).unwrap();
    let t = candle_core::safetensors::load(&io, &dev).unwrap();
    let x01 = &t["images01"];
    let pm1 = ((x01 * 2.0).unwrap() - 1.0).unwrap();
    let (f, l) = net.forward_pm1(&pm1).unwrap();
    let close = |got: &Tensor, want: &Tensor, what: &str| {
        let (g, w): (Vec<f32>, Vec<f32>) = (got.flatten_all().unwrap().to_vec1().unwrap(), want.flatten_all().unwrap().to_vec1().unwrap());
        assert_eq!(g.len(), w.len(), "{what}: length");
        let scale = w.iter().map(|v| v.abs()).fold(0f32, f32::max);
        let worst = g.iter().zip(&w).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(worst <= 1e-3 * scale, "{what}: max |ours - pytorch-fid| {worst} (max |value| {scale})");
        eprintln!("{what}: max |ours - pytorch-fid| {worst:.2e} of max |value| {scale:.3}");
    };
    close(&f, &t["features"], "pool3 features");
    close(&l.expect("the random weights have fc"), &t["logits"], "fc logits");

    // And through the CLI: the fixture's two halves, Inception features from these weights.
    let fixture = root().join("tests/fixtures/fashion-mnist");
    let (a, b) = (format!("{}:1/2", fixture.display()), format!("{}:2/2", fixture.display()));
    let o = eval(&["fd", "--real", &a, "--fake", &b, "--features", "inception", "--inception-weights", wf.to_str().unwrap(), "-n", "16", "--json", "--quiet", "--no-cache"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let m = &v["metrics"][0];
    assert_eq!(m["fd_name"], "FD_inception");
    assert!(m["fd"].as_f64().unwrap() > 0.0 && m["is"].as_f64().unwrap() >= 1.0, "{m}");
}

#[test]
fn dataset_parts_are_disjoint_and_cover_the_set() {
    use eostok_train::eval::sources::{Plan, Source};
    let fixture = root().join("tests/fixtures/fashion-mnist");
    let f = fixture.to_str().unwrap();
    let whole = Source::open(f).unwrap();
    let all = match whole.plan(usize::MAX, None, 0).unwrap() {
        Plan::Indices(v) => v,
        Plan::Classes(_) => panic!("a dataset plans indices"),
    };
    let mut seen = vec![0u32; all.len()];
    for k in 1..=3 {
        let part = Source::open(&format!("{f}:{k}/3")).unwrap();
        assert!(part.describe().contains(&format!("part {k} of 3")), "{}", part.describe());
        let Plan::Indices(idx) = part.plan(usize::MAX, None, 7).unwrap() else { panic!() };
        // Each part holds about a third, the same set whatever the seed.
        assert!(idx.len().abs_diff(all.len() / 3) <= 1, "part {k}: {} of {}", idx.len(), all.len());
        let Plan::Indices(mut again) = part.plan(usize::MAX, None, 99).unwrap() else { panic!() };
        let mut sorted = idx.clone();
        sorted.sort();
        again.sort();
        assert_eq!(sorted, again, "part {k} depends on the seed");
        for i in idx {
            seen[i] += 1;
        }
    }
    assert!(seen.iter().all(|&c| c == 1), "parts overlap or miss images: {seen:?}");
    for bad in [":0/2", ":3/2", ":1/0"] {
        let e = Source::open(&format!("{f}{bad}")).err().expect("a bad part is refused");
        assert!(format!("{e}").contains("K <= M"), "{e}");
    }
    let model = root().join("runtime/assets/default.gguf");
    let e = Source::open(&format!("{}:1/2", model.display())).err().expect("a model has no parts");
    assert!(format!("{e}").contains("not from a model"), "{e}");
}

#[test]
fn fd_cli_bad_input() {
    let real = root().join("tests/fixtures/fashion-mnist");
    let r = real.to_str().unwrap();
    // No Inception weights in an empty asset cache: exit 2 saying where they come from.
    let empty = std::env::temp_dir().join(format!("eostok-eval-empty-assets-{}", std::process::id()));
    std::fs::create_dir_all(&empty).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_eostok-eval"))
        .args(["fd", "--real", r, "--fake", r, "--features", "inception", "-n", "4"])
        .env("EOSTOK_ASSETS", &empty)
        .output()
        .unwrap();
    std::fs::remove_dir_all(&empty).ok();
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("pt_inception") && err.contains("trainer/README.md"), "{err}");
    let o = eval(&["fd", "--real", r, "--fake", "/nonexistent/dir", "-n", "4"]);
    assert_eq!(o.status.code(), Some(2));
    let o = eval(&["fd", "--real", r, "--fake", r, "--features", "vgg"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn every_subcommand_refuses_a_device_this_build_lacks() {
    let fixture = root().join("tests/fixtures/fashion-mnist");
    let f = fixture.to_str().unwrap();
    let commands: [&[&str]; 4] = [
        &["fd", "--real", f, "--fake", f, "-n", "4"],
        &["recon", "--checkpoint", "/nonexistent", "--data", f],
        &["train-classifier", "--data", f, "--test", f],
        &["classify", f],
    ];
    for c in commands {
        let with = |dev: &str| {
            let mut a = c.to_vec();
            a.extend(["--device", dev]);
            eval(&a)
        };
        if !cfg!(feature = "cuda") {
            let o = with("cuda:0");
            let err = String::from_utf8_lossy(&o.stderr);
            assert_eq!(o.status.code(), Some(2), "{c:?}: {err}");
            assert!(err.contains("rebuild with --features cuda"), "{c:?}: {err}");
        }
        let o = with("tpu:1");
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{c:?}: {err}");
        assert!(err.contains("expected cpu, cuda:N"), "{c:?}: {err}");
    }
}

const RECON_KEYS: [&str; 23] = [
    "checkpoint",
    "codebook_size",
    "codebook_usage",
    "codes_used",
    "config",
    "data",
    "describe",
    "features",
    "image_size",
    "l2",
    "latent_tokens",
    "lpips",
    "lpips_net",
    "n",
    "perplexity",
    "prefixes",
    "psnr",
    "rfd",
    "rfd_name",
    "schema",
    "seconds",
    "seed",
    "weights",
];

#[test]
fn recon_cli_on_a_fresh_checkpoint() {
    let d = tempfile::tempdir().unwrap();
    let ck = d.path().join("ck");
    let o = Command::new(env!("CARGO_BIN_EXE_eostok-train")).args(["init", "--config", "tiny", "--out", ck.to_str().unwrap()]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let data = root().join("tests/fixtures/fashion-mnist");
    let o = eval(&[
        "recon",
        "--checkpoint",
        ck.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "-n",
        "6",
        "--lpips",
        "off",
        "--features",
        "none",
        "--json",
        "--quiet",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(keys(&v), RECON_KEYS);
    assert_eq!(v["schema"], "eostok-eval/recon/1");
    let ks: Vec<u64> = v["prefixes"].as_array().unwrap().iter().map(|r| r["k"].as_u64().unwrap()).collect();
    assert_eq!(ks, [1, 2, 4, 8, 16]);
    assert_eq!(keys(&v["prefixes"][0]), ["k", "l2", "lpips", "psnr", "rfd"]);
    assert_eq!(v["l2"], v["prefixes"][4]["l2"]);
    let usage = v["codebook_usage"].as_f64().unwrap();
    assert!(usage > 0.0 && usage <= 96.0 / 256.0, "6 images x 16 tokens use at most 96 codes: {usage}");
    assert!(v["perplexity"].as_f64().unwrap() >= 1.0);
    assert!(v["lpips"].is_null() && v["rfd"].is_null());
    // A missing checkpoint is bad input.
    let o = eval(&["recon", "--checkpoint", "/nonexistent", "--data", data.to_str().unwrap(), "-n", "2"]);
    assert_eq!(o.status.code(), Some(2));
}

//! `eostok-eval fd`: Fréchet distance, precision/recall and the IS-like
//! score between a real and a generated image set (JSON schema in
//! trainer/README.md).

use super::cache::{self, CacheKey, CACHE_VERSION};
use super::fd::{frechet_distance_auto, inception_score, precision_recall, Stats};
use super::features::{keyed_weights, Extractor, FeatureNet, FeatureSet};
use super::progress_bar;
use super::sources::{Plan, SampleSettings, SamplingFlags, SamplingUsed, Source};
use anyhow::Result;
use candle_core::Device;
use eostok_models::exit::bad_input;
use eostok_models::DeviceSpec;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::Instant;

/// The JSON output's schema id.
pub const FD_SCHEMA: &str = "eostok-eval/fd/1";
/// k of the k-NN manifolds (Kynkäänniemi et al. use 3).
pub const PR_K: usize = 3;
/// Mixed into `--seed` for the fake side's subset of a dataset or folder.
pub const FAKE_SUBSET_SALT: u64 = 0xFA4E_5EED;
/// Splits of the IS-like score (1 when fewer than 200 images).
pub const IS_SPLITS: usize = 10;

pub struct FdArgs {
    pub real: String,
    pub fake: String,
    pub features: Vec<FeatureNet>,
    pub n: usize,
    pub n_real: Option<usize>,
    pub class: String,
    pub seed: u64,
    pub size: Option<usize>,
    pub cache_dir: Option<PathBuf>,
    pub no_cache: bool,
    /// Sampling of model sources: these flags, else the recommendation of the
    /// --fake model (else of a --real model), else the defaults; both sides alike.
    pub sample: SamplingFlags,
    pub effnet_weights: Option<PathBuf>,
    pub dinov2_weights: Option<PathBuf>,
    pub inception_weights: Option<PathBuf>,
    /// Where the feature nets run (generation from a .gguf stays on the runtime's CPU path).
    pub device: DeviceSpec,
    pub progress: bool,
}

/// The metrics of one feature net.
pub struct NetResult {
    pub net: FeatureNet,
    pub fd: f64,
    pub eps_fallback: bool,
    pub precision: f64,
    pub recall: f64,
    /// (mean, std, splits) when the net has logits.
    pub is: Option<(f64, f64, usize)>,
    pub real_cached: bool,
}

/// Features of a planned image set for several nets, in one image pass.
#[allow(clippy::too_many_arguments)]
fn extract(
    src: &Source,
    plan: &Plan,
    size: usize,
    seed: u64,
    sample: &SampleSettings,
    nets: &[&Extractor],
    label: &str,
    dev: &Device,
    progress: bool,
) -> Result<Vec<FeatureSet>> {
    let bar = progress_bar(plan.len(), label, progress);
    let mut sets = vec![FeatureSet::default(); nets.len()];
    src.for_each_batch(plan, size, seed, sample, dev, |x| {
        let b = x.dim(0)?;
        for (net, set) in nets.iter().zip(sets.iter_mut()) {
            set.push(net.run(&x)?, b);
        }
        bar.inc(b as u64);
        Ok(())
    })?;
    bar.finish_and_clear();
    Ok(sets)
}

pub fn run_fd(a: &FdArgs) -> Result<Value> {
    let t0 = Instant::now();
    if a.n == 0 || a.n_real == Some(0) {
        return Err(bad_input("-n and --n-real must be positive"));
    }
    let real = Source::open(&a.real)?;
    let fake = Source::open(&a.fake)?;
    let size = match a.size {
        Some(0) => return Err(bad_input("--size must be positive")),
        Some(s) => s,
        None if real.is_model() && !fake.is_model() => real.native_size()?,
        None => fake.native_size()?,
    };
    let (real_class, fake_class) = (real.class_filter(&a.class)?, fake.class_filter(&a.class)?);
    let n_real = a.n_real.unwrap_or(a.n);
    let real_plan = real.plan(n_real, real_class, a.seed)?;
    // Another shuffle for the fake side: the same dataset on both sides gives two different subsets.
    let fake_plan = fake.plan(a.n, fake_class, a.seed ^ FAKE_SUBSET_SALT)?;
    // One setting for both sides, so the JSON's "sampling" is what every model source used.
    let recommending = if fake.is_model() || !real.is_model() { &fake } else { &real };
    let choice = a.sample.resolve(&recommending.recommended_sampling()?);
    let sample = SampleSettings::from(&choice);
    if !choice.from_file.is_empty() {
        eprintln!("{}: sampling with the file's recommended {} (flags override)", recommending.spec, choice.from_file.join(", "));
    }
    eprintln!("real: {} -> {} images at {size} px", real.describe(), real_plan.len());
    eprintln!("fake: {} -> {} images at {size} px", fake.describe(), fake_plan.len());

    let dev = a.device.open()?;
    let extractors = a
        .features
        .iter()
        .map(|&net| {
            let w = match net {
                FeatureNet::EffnetLite0 => a.effnet_weights.as_ref(),
                FeatureNet::Dinov2 => a.dinov2_weights.as_ref(),
                FeatureNet::Inception => a.inception_weights.as_ref(),
            };
            Extractor::load(net, w, &dev)
        })
        .collect::<Result<Vec<_>>>()?;

    // Real statistics: from the cache where possible, else one pass for the missing nets.
    let t_real = Instant::now();
    let cache_dir = a.cache_dir.clone().unwrap_or_else(eostok_models::nets::asset_dir);
    let identity = if a.no_cache { None } else { real.cache_identity() };
    let given = |net: FeatureNet| match net {
        FeatureNet::EffnetLite0 => a.effnet_weights.as_ref(),
        FeatureNet::Dinov2 => a.dinov2_weights.as_ref(),
        FeatureNet::Inception => a.inception_weights.as_ref(),
    };
    let key = |net: FeatureNet| -> Option<CacheKey> {
        identity.as_ref().map(|id| CacheKey {
            version: CACHE_VERSION,
            source: id.clone(),
            n: n_real,
            class: real_class.map(|c| c.to_string()).unwrap_or_else(|| "all".into()),
            seed: a.seed,
            features: net.name().to_string(),
            image_size: size,
            resize: "centre-crop + catmull-rom to size, then the net's bicubic".into(),
            weights: keyed_weights(net, given(net)).map(|p| CacheKey::weights_identity(&p)),
        })
    };
    let mut real_stats: Vec<Option<(Stats, Vec<f32>, bool)>> = extractors
        .iter()
        .map(|e| {
            let k = key(e.net())?;
            let c = cache::load(&cache_dir, &k)?;
            eprintln!("real statistics ({}) from the cache {}", e.net().name(), cache::path_for(&cache_dir, &k).display());
            Some((c.stats, c.features, true))
        })
        .collect();
    let missing: Vec<usize> = (0..extractors.len()).filter(|&i| real_stats[i].is_none()).collect();
    if !missing.is_empty() {
        let nets: Vec<&Extractor> = missing.iter().map(|&i| &extractors[i]).collect();
        let sets = extract(&real, &real_plan, size, a.seed, &sample, &nets, "real", &dev, a.progress)?;
        for (&i, set) in missing.iter().zip(sets) {
            let net = extractors[i].net();
            let stats = Stats::from_features(&set.features, net.dim());
            if let Some(k) = key(net) {
                match cache::save(&cache_dir, &k, &stats, &set.features) {
                    Ok(p) => eprintln!("cached real statistics ({}) in {}", net.name(), p.display()),
                    Err(e) => eprintln!("warning: could not cache the real statistics: {e:#}"),
                }
            }
            real_stats[i] = Some((stats, set.features, false));
        }
    }
    let secs_real = t_real.elapsed().as_secs_f64();

    let t_fake = Instant::now();
    let nets: Vec<&Extractor> = extractors.iter().collect();
    let fake_sets = extract(&fake, &fake_plan, size, a.seed, &sample, &nets, "fake", &dev, a.progress)?;
    let secs_fake = t_fake.elapsed().as_secs_f64();

    let t_metrics = Instant::now();
    let mut results = Vec::new();
    for ((e, rs), fs) in extractors.iter().zip(real_stats).zip(fake_sets) {
        let net = e.net();
        let (rstats, rfeat, cached) = rs.expect("every net has real statistics");
        let fstats = Stats::from_features(&fs.features, net.dim());
        let f = frechet_distance_auto(&rstats, &rfeat, &fstats, &fs.features);
        let (precision, recall) = precision_recall(&rfeat, &fs.features, net.dim(), PR_K);
        let is = (net.has_logits() && !fs.logits.is_empty()).then(|| {
            let splits = if fs.count >= 200 { IS_SPLITS } else { 1 };
            let (m, s) = inception_score(&fs.logits, fs.logits.len() / fs.count, splits);
            (m, s, splits)
        });
        results.push(NetResult { net, fd: f.fd, eps_fallback: f.eps_fallback, precision, recall, is, real_cached: cached });
    }
    let secs_metrics = t_metrics.elapsed().as_secs_f64();

    let side = |s: &Source, plan: &Plan| json!({ "source": s.spec, "kind": s.kind_name(), "describe": s.describe(), "n": plan.len() });
    let mut sampling = serde_json::to_value(SamplingUsed::from(&choice))?;
    sampling["batch"] = json!(super::sources::GEN_BATCH);
    let metrics: Vec<Value> = results
        .iter()
        .map(|r| {
            json!({
                "features": r.net.name(),
                "feature_layer": r.net.layer(),
                "dim": r.net.dim(),
                "fd_name": r.net.fd_name(),
                "fd": r.fd,
                "eps_fallback": r.eps_fallback,
                "precision": r.precision,
                "recall": r.recall,
                "is_name": r.is.map(|_| format!("IS_{}", r.net.name())),
                "is": r.is.map(|x| x.0),
                "is_std": r.is.map(|x| x.1),
                "is_splits": r.is.map(|x| x.2),
                "real_cached": r.real_cached,
            })
        })
        .collect();
    Ok(json!({
        "schema": FD_SCHEMA,
        "image_size": size,
        "class": a.class,
        "seed": a.seed,
        "pr_k": PR_K,
        "real": side(&real, &real_plan),
        "fake": side(&fake, &fake_plan),
        "sampling": sampling,
        "metrics": metrics,
        "seconds": { "real": secs_real, "fake": secs_fake, "metrics": secs_metrics, "total": t0.elapsed().as_secs_f64() },
    }))
}

/// The text report: one line per metric, each naming its feature net.
pub fn fd_text(v: &Value) -> String {
    let mut out = String::new();
    let ctx = format!(
        "real {} n={}, fake {} n={}, {} px",
        v["real"]["source"].as_str().unwrap_or("?"),
        v["real"]["n"],
        v["fake"]["source"].as_str().unwrap_or("?"),
        v["fake"]["n"],
        v["image_size"]
    );
    for m in v["metrics"].as_array().into_iter().flatten() {
        let net = m["features"].as_str().unwrap_or("?");
        let mut fb = if m["eps_fallback"].as_bool() == Some(true) { " (eps*I added: near-singular covariance product)" } else { "" }.to_string();
        if net == "inception" {
            fb += " (this is FID where --inception-weights are pytorch-fid's pt_inception-2015-12-05)";
        }
        out += &format!("{:<24} {:>10.4}  ({ctx}){fb}\n", m["fd_name"].as_str().unwrap_or("?"), m["fd"].as_f64().unwrap_or(f64::NAN));
        out += &format!("{:<24} {:>10.4}  (k={})\n", format!("precision_{net}"), m["precision"].as_f64().unwrap_or(f64::NAN), v["pr_k"]);
        out += &format!("{:<24} {:>10.4}  (k={})\n", format!("recall_{net}"), m["recall"].as_f64().unwrap_or(f64::NAN), v["pr_k"]);
        if let (Some(name), Some(is)) = (m["is_name"].as_str(), m["is"].as_f64()) {
            out += &format!("{:<24} {:>10.4}  ± {:.4} over {} split(s) of the fake set\n", name, is, m["is_std"].as_f64().unwrap_or(0.0), m["is_splits"]);
        }
    }
    let s = &v["seconds"];
    let nets: Vec<&str> = v["metrics"].as_array().into_iter().flatten().filter_map(|m| m["features"].as_str()).collect();
    out += &format!(
        "time ({}): real {:.1} s, fake {:.1} s, metrics {:.1} s, total {:.1} s\n",
        nets.join(","),
        s["real"].as_f64().unwrap_or(0.0),
        s["fake"].as_f64().unwrap_or(0.0),
        s["metrics"].as_f64().unwrap_or(0.0),
        s["total"].as_f64().unwrap_or(0.0)
    );
    out
}

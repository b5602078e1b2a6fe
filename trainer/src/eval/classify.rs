//! Class accuracy of generated images: a small Fashion-MNIST classifier
//! trained in the repo, then used to label a model's samples.
//!
//! The classifier is an MLP (grey 32x32 -> 512 -> 256 -> classes, ReLU)
//! trained with Adam on the training split, with ±2 px random shifts so a
//! slightly off-centre sample is not a different class. It reaches about
//! 89–90% on the Fashion-MNIST test split (the number is measured at the end
//! of training and stored beside the weights). An MLP rather than a feature
//! probe because it trains in a minute on two cores and needs no asset.
//!
//! Files: `<path>.safetensors` (weights) and `<path>.json` (what it was
//! trained on, its test accuracy), both written atomically.

use super::progress_bar;
use super::sources::{SampleSettings, SamplingFlags, SamplingUsed, Source};
use crate::data::{resolve_data, Dataset};
use anyhow::{Context, Result};
use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::{linear, Linear, Optimizer, VarBuilder, VarMap};
use eostok_models::exit::bad_input;
use eostok_models::DeviceSpec;
use eostok_models::sampling::SplitMix64;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Side the classifier sees (the demo model's image size).
pub const CLASSIFIER_SIZE: usize = 32;
const HIDDEN: [usize; 2] = [512, 256];
/// Default file stem in the asset cache.
pub const CLASSIFIER_STEM: &str = "fashion-mnist-classifier";

/// What is stored beside the weights.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClassifierInfo {
    pub schema: String,
    pub size: usize,
    pub hidden: Vec<usize>,
    pub class_names: Vec<String>,
    pub train_data: String,
    pub test_data: String,
    pub epochs: usize,
    pub seed: u64,
    pub train_accuracy: f64,
    pub test_accuracy: f64,
}

pub struct Classifier {
    layers: Vec<Linear>,
    pub info: ClassifierInfo,
}

fn build(vb: &VarBuilder, classes: usize) -> Result<Vec<Linear>> {
    let dims = [CLASSIFIER_SIZE * CLASSIFIER_SIZE, HIDDEN[0], HIDDEN[1], classes];
    Ok((0..3).map(|i| linear(dims[i], dims[i + 1], vb.pp(format!("fc{i}")))).collect::<candle_core::Result<_>>()?)
}

fn forward(layers: &[Linear], x: &Tensor) -> Result<Tensor> {
    let mut h = x.clone();
    for (i, l) in layers.iter().enumerate() {
        h = l.forward(&h)?;
        if i + 1 < layers.len() {
            h = h.relu()?;
        }
    }
    Ok(h)
}

/// `[B,3,S,S]` in [-1,1] -> `[B, S*S]` grey (channel mean).
fn grey_rows(images: &Tensor) -> Result<Tensor> {
    let (b, _, h, w) = images.dims4()?;
    if h != CLASSIFIER_SIZE || w != CLASSIFIER_SIZE {
        anyhow::bail!("classifier input must be {CLASSIFIER_SIZE}x{CLASSIFIER_SIZE}, got {h}x{w}");
    }
    Ok(images.mean(1)?.reshape((b, h * w))?)
}

/// `<stem>.safetensors` / `<stem>.json` paths of a classifier file stem.
pub fn classifier_paths(stem: &Path) -> (PathBuf, PathBuf) {
    let s = stem.to_string_lossy();
    let s = s.strip_suffix(".safetensors").unwrap_or(&s).to_string();
    (PathBuf::from(format!("{s}.safetensors")), PathBuf::from(format!("{s}.json")))
}

impl Classifier {
    pub fn load(stem: &Path, device: &Device) -> Result<Classifier> {
        let (weights, meta) = classifier_paths(stem);
        if !weights.is_file() || !meta.is_file() {
            return Err(bad_input(format!(
                "{}: no classifier here; train one with `eostok-eval train-classifier` (about a minute on 2 cores)",
                weights.display()
            )));
        }
        let info: ClassifierInfo = serde_json::from_slice(&std::fs::read(&meta).with_context(|| meta.display().to_string())?)
            .map_err(|e| bad_input(format!("{}: {e}", meta.display())))?;
        if info.size != CLASSIFIER_SIZE || info.class_names.is_empty() {
            return Err(bad_input(format!("{}: unsupported classifier (size {}, {} classes)", meta.display(), info.size, info.class_names.len())));
        }
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[&weights], DType::F32, device) }
            .map_err(|e| bad_input(format!("{}: {e}", weights.display())))?;
        let layers = build(&vb, info.class_names.len()).map_err(|e| bad_input(format!("{}: {e}", weights.display())))?;
        Ok(Classifier { layers, info })
    }

    /// Predicted class per image of `[B,3,32,32]` in [-1, 1].
    pub fn predict(&self, images: &Tensor) -> Result<Vec<u32>> {
        let logits = forward(&self.layers, &grey_rows(images)?)?;
        Ok(logits.argmax(D::Minus1)?.to_vec1::<u32>()?)
    }
}

/// Grey 32x32 rows and labels of a whole dataset, in index order.
fn load_rows(d: &dyn Dataset, limit: Option<usize>) -> Result<(Vec<f32>, Vec<u32>)> {
    use rayon::prelude::*;
    let n = limit.map_or(d.len(), |l| l.min(d.len()));
    let px = CLASSIFIER_SIZE * CLASSIFIER_SIZE;
    let rows: Vec<(Vec<f32>, u32)> = (0..n)
        .into_par_iter()
        .map(|i| {
            let (chw, label) = d.get_chw(i, CLASSIFIER_SIZE, false)?;
            let grey: Vec<f32> = (0..px).map(|p| (chw[p] + chw[px + p] + chw[2 * px + p]) / 3.0).collect();
            Ok((grey, label))
        })
        .collect::<Result<_>>()?;
    let labels = rows.iter().map(|r| r.1).collect();
    Ok((rows.into_iter().flat_map(|r| r.0).collect(), labels))
}

/// Copy of image `src` (grey, side s) shifted by (dx, dy), background -1.
fn shifted(src: &[f32], s: usize, dx: i64, dy: i64, out: &mut Vec<f32>) {
    for y in 0..s as i64 {
        for x in 0..s as i64 {
            let (sx, sy) = (x - dx, y - dy);
            let inside = (0..s as i64).contains(&sx) && (0..s as i64).contains(&sy);
            out.push(if inside { src[(sy * s as i64 + sx) as usize] } else { -1.0 });
        }
    }
}

fn accuracy(layers: &[Linear], rows: &[f32], labels: &[u32], device: &Device) -> Result<f64> {
    let px = CLASSIFIER_SIZE * CLASSIFIER_SIZE;
    let mut right = 0usize;
    for (xs, ys) in rows.chunks(1024 * px).zip(labels.chunks(1024)) {
        let x = Tensor::from_slice(xs, (ys.len(), px), device)?;
        let pred = forward(layers, &x)?.argmax(D::Minus1)?.to_vec1::<u32>()?;
        right += pred.iter().zip(ys).filter(|(p, y)| p == y).count();
    }
    Ok(right as f64 / labels.len().max(1) as f64)
}

pub struct TrainClassifierArgs {
    pub train: String,
    pub test: String,
    pub epochs: usize,
    pub seed: u64,
    pub out: PathBuf,
    /// Use only the first N training images (tests).
    pub limit: Option<usize>,
    pub device: DeviceSpec,
    pub progress: bool,
}

/// Train the classifier and write it (atomically) to `args.out`.
pub fn train_classifier(args: &TrainClassifierArgs) -> Result<ClassifierInfo> {
    let device = args.device.open()?;
    let train: Arc<dyn Dataset> = resolve_data(&args.train, None)?;
    let test: Arc<dyn Dataset> = resolve_data(&args.test, None)?;
    let names = train.class_names().to_vec();
    if names.is_empty() || test.class_names() != names.as_slice() {
        return Err(bad_input(format!("{} and {} must have the same classes", args.train, args.test)));
    }
    let (rows, labels) = load_rows(train.as_ref(), args.limit)?;
    let (test_rows, test_labels) = load_rows(test.as_ref(), args.limit)?;
    let px = CLASSIFIER_SIZE * CLASSIFIER_SIZE;
    let n = labels.len();
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &device);
    let layers = build(&vb, names.len())?;
    let mut opt = candle_nn::AdamW::new(varmap.all_vars(), candle_nn::ParamsAdamW { lr: 1e-3, weight_decay: 1e-4, ..Default::default() })?;
    let batch = 128usize;
    let steps_per_epoch = n.div_ceil(batch);
    let total = steps_per_epoch * args.epochs;
    let bar = progress_bar(total, "train", args.progress);
    let mut rng = SplitMix64::new(args.seed);
    let mut step = 0usize;
    for _ in 0..args.epochs {
        let mut order: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            order.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
        }
        for chunk in order.chunks(batch) {
            let mut xs = Vec::with_capacity(chunk.len() * px);
            for &i in chunk {
                let (dx, dy) = ((rng.next_u64() % 5) as i64 - 2, (rng.next_u64() % 5) as i64 - 2);
                shifted(&rows[i * px..(i + 1) * px], CLASSIFIER_SIZE, dx, dy, &mut xs);
            }
            let ys: Vec<u32> = chunk.iter().map(|&i| labels[i]).collect();
            let x = Tensor::from_vec(xs, (chunk.len(), px), &device)?;
            let y = Tensor::from_vec(ys, chunk.len(), &device)?;
            // Cosine decay to 5% over the run.
            let t = step as f64 / total.max(1) as f64;
            opt.set_learning_rate(1e-3 * (0.05 + 0.95 * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())));
            let loss = candle_nn::loss::cross_entropy(&forward(&layers, &x)?, &y)?;
            opt.backward_step(&loss)?;
            step += 1;
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    let info = ClassifierInfo {
        schema: "eostok-classifier/1".into(),
        size: CLASSIFIER_SIZE,
        hidden: HIDDEN.to_vec(),
        class_names: names,
        train_data: format!("{} ({} images)", args.train, n),
        test_data: format!("{} ({} images)", args.test, test_labels.len()),
        epochs: args.epochs,
        seed: args.seed,
        train_accuracy: accuracy(&layers, &rows, &labels, &device)?,
        test_accuracy: accuracy(&layers, &test_rows, &test_labels, &device)?,
    };
    let (weights, meta) = classifier_paths(&args.out);
    if let Some(dir) = weights.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| dir.display().to_string())?;
    }
    let tmp = weights.with_extension("safetensors.tmp");
    varmap.save(&tmp).with_context(|| tmp.display().to_string())?;
    std::fs::rename(&tmp, &weights).with_context(|| weights.display().to_string())?;
    let tmp = meta.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(&info)?).with_context(|| tmp.display().to_string())?;
    std::fs::rename(&tmp, &meta).with_context(|| meta.display().to_string())?;
    Ok(info)
}

pub struct ClassifyArgs {
    /// A .gguf model (samples) or a labelled dataset.
    pub source: String,
    /// Images per class.
    pub per_class: usize,
    pub seed: u64,
    /// Sampling of a model source: these flags, else the file's recommendation, else the defaults.
    pub sample: SamplingFlags,
    pub classifier: PathBuf,
    /// Where the classifier runs (generation from a .gguf stays on the runtime's CPU path).
    pub device: DeviceSpec,
    pub progress: bool,
}

/// Per-class accuracy: how many images of each requested (or true) class
/// the classifier labels as that class.
#[derive(Debug, Clone, Serialize)]
pub struct ClassifyResult {
    pub schema: String,
    pub source: String,
    pub classifier_test_accuracy: f64,
    pub class_names: Vec<String>,
    pub per_class: Vec<f64>,
    pub counts: Vec<usize>,
    /// confusion[requested][predicted]
    pub confusion: Vec<Vec<usize>>,
    pub accuracy: f64,
    pub min_class_accuracy: f64,
    /// The settings a model source sampled with (`temperature`, `top_k`,
    /// `top_p`, `cfg`, `from_file`: those taken from the file); null for datasets.
    pub sampling: Option<SamplingUsed>,
}

pub fn classify(args: &ClassifyArgs) -> Result<ClassifyResult> {
    let device = args.device.open()?;
    let clf = Classifier::load(&args.classifier, &device)?;
    let src = Source::open(&args.source)?;
    let names = clf.info.class_names.clone();
    let nc = names.len();
    if let Some(src_names) = src.class_names() {
        if src_names.len() != nc {
            return Err(bad_input(format!("{}: {} classes, the classifier has {nc}", args.source, src_names.len())));
        }
    } else {
        return Err(bad_input(format!("{}: an unlabelled folder; classify needs a model or a labelled dataset", args.source)));
    }
    let choice = if src.is_model() { Some(args.sample.resolve(&src.recommended_sampling()?)) } else { None };
    let settings = choice.as_ref().map(SampleSettings::from).unwrap_or_default();
    if let Some(c) = choice.as_ref().filter(|c| !c.from_file.is_empty()) {
        eprintln!("{}: sampling with the file's recommended {} (flags override)", args.source, c.from_file.join(", "));
    }
    // Per class, the same number of images; their true/requested labels.
    let plans = (0..nc as u32).map(|c| src.plan(args.per_class, Some(c), args.seed)).collect::<Result<Vec<_>>>()?;
    let bar = progress_bar(args.per_class * nc, "classify", args.progress);
    let mut confusion = vec![vec![0usize; nc]; nc];
    for (c, plan) in plans.iter().enumerate() {
        // Class c's images with a seed of their own, so classes don't share noise.
        src.for_each_batch(plan, CLASSIFIER_SIZE, args.seed.wrapping_add(c as u64 * 1_000_003), &settings, &device, |batch| {
            let b = batch.dim(0)?;
            for p in clf.predict(&batch)? {
                confusion[c][p as usize] += 1;
            }
            bar.inc(b as u64);
            Ok(())
        })?;
    }
    bar.finish_and_clear();
    let counts: Vec<usize> = confusion.iter().map(|r| r.iter().sum()).collect();
    let per_class: Vec<f64> = (0..nc).map(|c| confusion[c][c] as f64 / counts[c].max(1) as f64).collect();
    let right: usize = (0..nc).map(|c| confusion[c][c]).sum();
    Ok(ClassifyResult {
        schema: "eostok-eval/classify/1".into(),
        source: args.source.clone(),
        classifier_test_accuracy: clf.info.test_accuracy,
        class_names: names,
        min_class_accuracy: per_class.iter().cloned().fold(f64::INFINITY, f64::min),
        accuracy: right as f64 / counts.iter().sum::<usize>().max(1) as f64,
        per_class,
        counts,
        confusion,
        sampling: choice.as_ref().map(SamplingUsed::from),
    })
}

pub fn classify_text(r: &ClassifyResult) -> String {
    let mut s = format!(
        "{}: {:.1}% of samples labelled as the requested class (classifier: MLP, {:.1}% on the test split)\n",
        r.source,
        100.0 * r.accuracy,
        100.0 * r.classifier_test_accuracy
    );
    if let Some(u) = &r.sampling {
        s += &format!("sampling: {}\n", u.describe());
    }
    s += &format!("{:>12} {:>6} {:>8}   most confused with\n", "class", "n", "accuracy");
    for (c, name) in r.class_names.iter().enumerate() {
        let other = (0..r.class_names.len()).filter(|&o| o != c).max_by_key(|&o| r.confusion[c][o]);
        let conf = other.filter(|&o| r.confusion[c][o] > 0).map(|o| format!("{} ({})", r.class_names[o], r.confusion[c][o])).unwrap_or_default();
        s += &format!("{:>12} {:>6} {:>7.1}%   {}\n", name, r.counts[c], 100.0 * r.per_class[c], conf);
    }
    s += &format!("lowest class accuracy: {:.1}%\n", 100.0 * r.min_class_accuracy);
    s
}

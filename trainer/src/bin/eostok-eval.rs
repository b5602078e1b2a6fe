//! eostok-eval: Fréchet distances (EfficientNet-Lite0 / DINOv2-S features,
//! never called "FID"), precision/recall and an IS-like score between
//! image sets, and tokenizer reconstruction quality of a checkpoint.

use anyhow::Result;
use clap::{Parser, Subcommand};
use eostok_models::exit::{self, bad_input};
use eostok_models::nets::LpipsNet;
use eostok_models::DeviceSpec;
use eostok_train::eval::classify::{classify, classify_text, train_classifier, ClassifyArgs, TrainClassifierArgs, CLASSIFIER_STEM};
use eostok_train::eval::fd_cmd::{fd_text, run_fd, FdArgs};
use eostok_train::eval::features::FeatureNet;
use eostok_train::eval::recon::{recon_text, run_recon, ReconArgs};
use eostok_train::eval::sources::SamplingFlags;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "eostok-eval",
    version,
    about = "Evaluate EOSTok models: Fréchet distances on EfficientNet-Lite0/DINOv2 features (named FD_<net>, not FID), or on pytorch-fid's Inception with weights you supply (FID), precision/recall, IS-like score, tokenizer reconstruction"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Fréchet distance, precision/recall (k=3) and IS-like score between a real and a generated image set.
    Fd(Box<FdCli>),
    /// Reconstruction L2/PSNR/LPIPS/rFD of a checkpoint's tokenizer, codebook usage, and the token-prefix curve.
    Recon(Box<ReconCli>),
    /// Train the small Fashion-MNIST classifier that `classify` uses (an MLP on 32x32 grey; about a minute on 2 cores).
    TrainClassifier(TrainClassifierCli),
    /// Class accuracy: the share of a model's samples (or a dataset's images) of each class that the classifier labels as that class.
    Classify(ClassifyCli),
}

#[derive(clap::Args)]
struct TrainClassifierCli {
    /// Training images: fashion-mnist (asset cache) or an IDX/ImageFolder path.
    #[arg(long, default_value = "fashion-mnist")]
    data: String,
    /// Held-out images for the reported accuracy.
    #[arg(long, default_value = "fashion-mnist-test")]
    test: String,
    #[arg(long, default_value_t = 10)]
    epochs: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output file stem: writes STEM.safetensors and STEM.json (default: the asset cache's fashion-mnist-classifier).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Train on the first N images only (quick checks).
    #[arg(long)]
    limit: Option<usize>,
    /// Where the nets run: cpu, cuda:N (a build with --features cuda) or metal:N.
    #[arg(long, default_value = "cpu")]
    device: String,
    #[arg(long)]
    json: bool,
    #[arg(short, long)]
    quiet: bool,
}

#[derive(clap::Args)]
struct ClassifyCli {
    /// A .gguf model to sample from, or a labelled dataset (fashion-mnist-test, a path).
    source: String,
    /// Images per class.
    #[arg(short, default_value_t = 100)]
    n: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Classifier file stem (default: the asset cache's fashion-mnist-classifier).
    #[arg(long)]
    classifier: Option<PathBuf>,
    #[command(flatten)]
    sampling: SamplingCli,
    /// Print one JSON object (schema eostok-eval/classify/1).
    #[arg(long)]
    json: bool,
    /// Where the nets run: cpu, cuda:N (a build with --features cuda) or metal:N.
    #[arg(long, default_value = "cpu")]
    device: String,
    #[arg(short, long)]
    quiet: bool,
}

/// How model sources sample (shared by `fd` and `classify`): each flag not
/// given takes the model file's recommendation (eostok.sampling.*), else its default.
#[derive(clap::Args)]
struct SamplingCli {
    /// Sampling temperature for model sources; 0 = greedy [default: the model file's recommendation, else 1].
    #[arg(long)]
    temperature: Option<f64>,
    /// Top-k for model sources; 0 = off [default: the model file's recommendation, else 0].
    #[arg(long)]
    top_k: Option<usize>,
    /// Top-p for model sources; 1 = off [default: the model file's recommendation, else 1].
    #[arg(long)]
    top_p: Option<f64>,
    /// Classifier-free guidance scale for model sources; 1 = off [default: the model file's recommendation, else 1].
    #[arg(long = "cfg")]
    cfg_scale: Option<f32>,
}

impl SamplingCli {
    /// The checked flags (bad values: exit 2).
    fn flags(&self) -> Result<SamplingFlags> {
        let f = SamplingFlags { temperature: self.temperature, top_k: self.top_k, top_p: self.top_p, cfg_scale: self.cfg_scale };
        f.check()?;
        Ok(f)
    }
}

#[derive(clap::Args)]
struct FdCli {
    /// Reference images: fashion-mnist, fashion-mnist-test, emoji (asset cache), an IDX/ImageFolder path, a flat folder of images, or a .gguf model. A dataset or folder with `:K/M` is part K of M disjoint parts (`--real emoji:1/2 --fake emoji:2/2`: a floor for a set with one split).
    #[arg(long)]
    real: String,
    /// Evaluated images: a .gguf model to sample from (eostok-runtime, CPU), or any source --real accepts.
    #[arg(long)]
    fake: String,
    /// Feature net(s), comma-separated: effnet-lite0 (1280-d pool), dinov2 (CLS token), inception (not implemented yet).
    #[arg(long, default_value = "effnet-lite0")]
    features: String,
    /// Number of evaluated (fake) images; also of real images unless --n-real.
    #[arg(short, default_value_t = 1000)]
    n: usize,
    /// Number of real images (default: -n).
    #[arg(long)]
    n_real: Option<usize>,
    /// all (models: N spread evenly over the classes), or one class by id or name (both sides).
    #[arg(long, default_value = "all")]
    class: String,
    /// Seed of the real subset and of generation (batch j of 50 images samples with its own seed derived from this).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Side images are brought to before the feature net (default: the model's image size when a side is a .gguf, else the fake images' size).
    #[arg(long)]
    size: Option<usize>,
    /// Directory of the real-statistics cache (default: the asset cache; files under eval-stats/).
    #[arg(long)]
    cache: Option<PathBuf>,
    /// Neither read nor write cached real statistics.
    #[arg(long)]
    no_cache: bool,
    #[command(flatten)]
    sampling: SamplingCli,
    /// EfficientNet-Lite0 safetensors (default: efficientnet-lite0.safetensors in the asset cache).
    #[arg(long)]
    effnet_weights: Option<PathBuf>,
    /// DINOv2-S safetensors (default: dinov2-s.safetensors in the asset cache).
    #[arg(long)]
    dinov2_weights: Option<PathBuf>,
    /// pytorch-fid's FID Inception-v3 weights as safetensors, for --features inception (default: pt_inception-2015-12-05.safetensors in the asset cache; no package carries them: see trainer/README.md).
    #[arg(long)]
    inception_weights: Option<PathBuf>,
    /// Where the nets run: cpu, cuda:N (a build with --features cuda) or metal:N.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Print one JSON object (schema eostok-eval/fd/1) instead of text.
    #[arg(long)]
    json: bool,
    /// No progress bars.
    #[arg(short, long)]
    quiet: bool,
}

#[derive(clap::Args)]
struct ReconCli {
    /// Checkpoint directory (config.json + model.safetensors/ema.safetensors).
    #[arg(long)]
    checkpoint: PathBuf,
    /// Images to reconstruct: fashion-mnist, fashion-mnist-test, emoji, or a path (ImageFolder or IDX directory).
    #[arg(long)]
    data: String,
    /// Number of images (a seeded random subset).
    #[arg(short, default_value_t = 1000)]
    n: usize,
    /// Seed of the subset.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Which weights: ema or raw.
    #[arg(long, value_parser = ["ema", "raw"], default_value = "ema")]
    weights: String,
    /// LPIPS net from the asset cache: vgg, alex or off.
    #[arg(long, value_parser = ["vgg", "alex", "off"], default_value = "vgg")]
    lpips: String,
    /// Feature net of rFD: effnet-lite0, dinov2, or none.
    #[arg(long, default_value = "effnet-lite0")]
    features: String,
    /// Where the nets run: cpu, cuda:N (a build with --features cuda) or metal:N.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Print one JSON object (schema eostok-eval/recon/1) instead of text.
    #[arg(long)]
    json: bool,
    /// No progress bar.
    #[arg(short, long)]
    quiet: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    exit::run("eostok-eval", || match cli.command {
        Command::Fd(a) => fd(*a),
        Command::Recon(a) => recon(*a),
        Command::TrainClassifier(a) => train_classifier_cmd(a),
        Command::Classify(a) => classify_cmd(a),
    })
}

fn fd(c: FdCli) -> Result<()> {
    let args = FdArgs {
        real: c.real,
        fake: c.fake,
        features: FeatureNet::parse_list(&c.features)?,
        n: c.n,
        n_real: c.n_real,
        class: c.class,
        seed: c.seed,
        size: c.size,
        cache_dir: c.cache,
        no_cache: c.no_cache,
        sample: c.sampling.flags()?,
        effnet_weights: c.effnet_weights,
        dinov2_weights: c.dinov2_weights,
        inception_weights: c.inception_weights,
        device: device_arg(&c.device)?,
        progress: !c.quiet,
    };
    let v = run_fd(&args)?;
    if c.json {
        println!("{}", serde_json::to_string(&v)?);
    } else {
        print!("{}", fd_text(&v));
    }
    Ok(())
}

fn recon(c: ReconCli) -> Result<()> {
    let features = match c.features.as_str() {
        "none" | "off" => None,
        s => Some(FeatureNet::parse(s)?),
    };
    let lpips = match c.lpips.as_str() {
        "vgg" => Some(LpipsNet::Vgg),
        "alex" => Some(LpipsNet::Alex),
        _ => None,
    };
    let args = ReconArgs { checkpoint: c.checkpoint, data: c.data, n: c.n, seed: c.seed, ema: c.weights == "ema", lpips, features, device: device_arg(&c.device)?, progress: !c.quiet };
    let v = run_recon(&args)?;
    if c.json {
        println!("{}", serde_json::to_string(&v)?);
    } else {
        print!("{}", recon_text(&v));
    }
    Ok(())
}

/// A `--device` value this build can open (else exit 2 before any work).
fn device_arg(s: &str) -> Result<DeviceSpec> {
    let d = DeviceSpec::parse(s)?;
    d.check_compiled_in()?;
    Ok(d)
}

fn default_classifier() -> PathBuf {
    eostok_models::nets::assets::asset_dir().join(CLASSIFIER_STEM)
}

fn train_classifier_cmd(c: TrainClassifierCli) -> Result<()> {
    if c.epochs == 0 {
        return Err(bad_input("--epochs must be at least 1"));
    }
    let out = c.out.unwrap_or_else(default_classifier);
    let args = TrainClassifierArgs { train: c.data, test: c.test, epochs: c.epochs, seed: c.seed, out: out.clone(), limit: c.limit, device: device_arg(&c.device)?, progress: !c.quiet };
    let info = train_classifier(&args)?;
    if c.json {
        println!("{}", serde_json::to_string(&info)?);
    } else {
        println!(
            "classifier {}: train accuracy {:.2}%, test accuracy {:.2}% ({})",
            out.display(),
            100.0 * info.train_accuracy,
            100.0 * info.test_accuracy,
            info.test_data
        );
    }
    Ok(())
}

fn classify_cmd(c: ClassifyCli) -> Result<()> {
    if c.n == 0 {
        return Err(bad_input("-n must be at least 1"));
    }
    let args = ClassifyArgs {
        source: c.source,
        per_class: c.n,
        seed: c.seed,
        sample: c.sampling.flags()?,
        classifier: c.classifier.unwrap_or_else(default_classifier),
        device: device_arg(&c.device)?,
        progress: !c.quiet,
    };
    let r = classify(&args)?;
    if c.json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        print!("{}", classify_text(&r));
    }
    Ok(())
}

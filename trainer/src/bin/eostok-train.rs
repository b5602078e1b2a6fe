//! eostok-train: describe configs, initialise checkpoints, train (`fit`), and
//! start one `fit` per GPU (`launch`).

use anyhow::Result;
use candle_core::{DType, Device, Tensor};
use clap::{Parser, Subcommand};
use eostok_models::exit::{self, BadInputExt};
use eostok_models::nn::Eostok;
use eostok_models::{param_counts, Config};
use eostok_train::checkpoint;
use eostok_train::joint::LossConfig;
use std::collections::HashMap;
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "eostok-train", version, about = "EOSTok: joint end-to-end training of a 1D tokenizer and an AR image generator")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print parameter counts of a config as one JSON object.
    Describe {
        /// A preset (tiny, small, S, B, L, H) or a JSON file (full config, or {"base": PRESET, ...overrides}).
        #[arg(long, default_value = "tiny")]
        config: String,
    },
    /// Write a randomly initialised checkpoint (config.json, model.safetensors, ema.safetensors).
    Init {
        /// A preset (tiny, small, S, B, L, H) or a JSON file.
        #[arg(long)]
        config: String,
        /// Checkpoint directory to create.
        #[arg(long)]
        out: PathBuf,
        /// Seed of the initialisation (same seed, same weights).
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Replace a non-empty output directory.
        #[arg(long)]
        force: bool,
    },
    /// Train the tokenizer and the AR model (joint end-to-end by default).
    Fit(Box<FitArgs>),
    /// Data-parallel training on N GPUs of this machine: starts N `fit` processes with RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT set, forwards SIGINT/SIGTERM, fails if any rank fails (needs a build with --features nccl; docs/gpu.md).
    Launch {
        /// Processes to start, one per GPU (rank r uses cuda:N+r for --device cuda:N).
        #[arg(long)]
        gpus: usize,
        /// MASTER_ADDR for the ranks.
        #[arg(long, default_value = "127.0.0.1")]
        master_addr: String,
        /// MASTER_PORT for the ranks.
        #[arg(long, default_value_t = 29500)]
        master_port: u16,
        /// `fit` and its arguments, as for a single process (--batch is the global batch).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true, value_name = "fit ARGS")]
        args: Vec<OsString>,
    },
}

#[derive(clap::Args)]
struct FitArgs {
    /// A preset (tiny, small, S, B, L, H) or a JSON file (ignored with --resume).
    #[arg(long, default_value = "tiny")]
    config: String,
    /// Dataset: fashion-mnist, fashion-mnist-test, emoji (from the asset cache), or a path (ImageFolder or IDX directory).
    #[arg(long)]
    data: String,
    /// Total optimizer steps (a resumed run continues up to this step).
    #[arg(long, default_value_t = 1000)]
    steps: u64,
    /// Images per pass (with several ranks: the global batch, split equally between them).
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Stop and save after this step, keeping the schedule of --steps (continue with --resume).
    #[arg(long)]
    stop_at: Option<u64>,
    /// A step whose loss is NaN or infinite is skipped (no update); after this many in a row the run stops with a non-zero exit, without saving over the last checkpoint.
    #[arg(long, default_value_t = eostok_train::faults::DEFAULT_MAX_NAN_STEPS)]
    max_nan_steps: usize,
    /// Run directory: the latest checkpoint, metrics.jsonl, history/.
    #[arg(long)]
    out: PathBuf,
    /// Continue the run saved in this directory (bit-exact on CPU).
    #[arg(long)]
    resume: Option<PathBuf>,
    /// e2e (the paper), two-stage (tokenizer, then AR on frozen tokens), ntp-only (E2E without APR).
    #[arg(long, value_enum, default_value = "e2e")]
    mode: eostok_train::fit::Mode,
    /// Seed of the initialisation, data order and dropout.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// cpu, cuda:N (a build with --features cuda) or metal:N (--features metal). Under a launcher, rank r uses cuda:N+LOCAL_RANK.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// f32, or bf16 matmuls over f32 master weights (CUDA only).
    #[arg(long, value_enum, default_value = "f32")]
    precision: eostok_train::fit::Precision,
    /// Gradient all-reduce bucket size in MiB (data-parallel runs).
    #[arg(long, default_value_t = eostok_train::dist::DEFAULT_BUCKET_MIB)]
    bucket_mib: f64,
    /// Peak learning rate.
    #[arg(long, default_value_t = 1e-4)]
    lr: f64,
    /// Final learning rate of the cosine schedule.
    #[arg(long, default_value_t = 1e-6)]
    min_lr: f64,
    /// Linear warmup steps.
    #[arg(long, default_value_t = 100)]
    warmup: u64,
    /// Clip the global gradient norm to this (0 = off).
    #[arg(long, default_value_t = 1.0)]
    grad_clip: f64,
    /// EMA decay of the exported weights.
    #[arg(long, default_value_t = 0.999)]
    ema_decay: f64,
    /// Save a checkpoint every N steps (and at the end).
    #[arg(long, default_value_t = 500)]
    save_every: u64,
    /// Keep the K previous checkpoints under OUT/history/ (0 = only the latest).
    #[arg(long, default_value_t = 0)]
    keep: usize,
    /// Write OUT/samples/step-N.png (inputs, reconstructions, APR images, samples) every N steps (0 = only at the end).
    #[arg(long, default_value_t = 500)]
    sample_every: u64,
    /// Append a metrics.jsonl line every N steps.
    #[arg(long, default_value_t = 10)]
    log_every: u64,
    /// Perceptual loss net (from the asset cache): vgg, alex or off.
    #[arg(long, value_parser = ["vgg", "alex", "off"], default_value = "vgg")]
    lpips: String,
    /// Frozen VFM for the implicit and decoder alignment: dinov2 or off.
    #[arg(long, value_parser = ["dinov2", "off"], default_value = "dinov2")]
    vfm: String,
    /// Random horizontal flips.
    #[arg(long)]
    hflip: bool,
    /// Gradient accumulation: passes of --batch images per optimizer step.
    #[arg(long, default_value_t = 1)]
    accum: usize,
    /// IBQ temperature τ of a fresh run (default: the config's; see `docs/tau.md`).
    #[arg(long)]
    tau: Option<f64>,
    /// λ_APR of a fresh run: the weight of the APR loss (decoding the AR model's own
    /// predictions back to pixels) in `--mode e2e`; 1 is the paper's. For ablations of it.
    #[arg(long, default_value_t = 1.0)]
    apr_weight: f64,
    /// Weight of the IBQ entropy loss of a fresh run (per-sample sharpness minus batch
    /// diversity of the code distribution); 0.01 is the default. For ablations: with 0,
    /// nothing but the losses themselves keeps the codebook from collapsing.
    #[arg(long, default_value_t = 0.01)]
    entropy_weight: f64,
    /// Discriminator: patchgan (hinge GAN + LeCam, own Adam) or off.
    #[arg(long, value_parser = ["patchgan", "off"], default_value = "off")]
    disc: String,
    /// Weight of the generator's GAN term.
    #[arg(long, default_value_t = 0.1)]
    gan_weight: f64,
    /// First step with the GAN term and discriminator updates.
    #[arg(long, default_value_t = 0)]
    gan_start: u64,
    /// LeCam regulariser weight.
    #[arg(long, default_value_t = 0.05)]
    lecam: f64,
    /// Discriminator learning rate (constant).
    #[arg(long, default_value_t = 1e-4)]
    disc_lr: f64,
    /// No progress bar.
    #[arg(short, long)]
    quiet: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    exit::run("eostok-train", || match cli.command {
        Command::Describe { config } => describe(&config),
        Command::Init { config, out, seed, force } => init(&config, &out, seed, force),
        Command::Fit(args) => fit(*args),
        Command::Launch { gpus, master_addr, master_port, args } => {
            let signals = exit::SignalFlag::install()?;
            eostok_train::launch::launch(&eostok_train::launch::LaunchOptions { gpus, master_addr, master_port, args }, &signals)
        }
    })
}

fn load_config(name: &str) -> Result<Config> {
    Config::load(name).bad_input("--config")
}

fn describe(config: &str) -> Result<()> {
    let cfg = load_config(config)?;
    println!("{}", serde_json::to_string(&param_counts(&cfg))?);
    Ok(())
}

fn init(config: &str, out: &std::path::Path, seed: u64, force: bool) -> Result<()> {
    let cfg = load_config(config)?;
    // Refuse before spending time on initialisation.
    if out.exists() && !checkpoint::is_absent_or_empty(out)? && !force {
        return Err(exit::bad_input(format!("{}: directory exists and is not empty (use --force to replace it)", out.display())));
    }
    let counts = param_counts(&cfg);
    eprintln!("initialising '{}' ({:.1}M parameters, seed {seed})", cfg.name, (counts.total + counts.vfm_projectors) as f64 / 1e6);
    let (_model, store) = Eostok::random(&cfg, seed, DType::F32, &Device::Cpu)?;
    let weights: HashMap<String, Tensor> = store.vars().into_iter().map(|(k, v)| (k, v.as_tensor().clone())).collect();
    checkpoint::write_initial(out, &cfg, &weights, force)?;
    eprintln!("wrote {}", out.display());
    Ok(())
}

/// A loss-weight flag: a finite number >= 0, and only for a fresh run (a resumed run keeps
/// the weights saved in its state, so any value but the default is refused there).
fn check_loss_weight(flag: &str, value: f64, default: f64, resumed: bool) -> Result<()> {
    if !(value.is_finite() && value >= 0.0) {
        return Err(exit::bad_input(format!("{flag} {value}: must be a finite number >= 0")));
    }
    if resumed && value != default {
        return Err(exit::bad_input(format!("{flag} applies to a fresh run; a resumed run keeps its saved loss weights")));
    }
    Ok(())
}

fn fit(a: FitArgs) -> Result<()> {
    use eostok_train::fit::{FitOptions, Precision, TrainConfig};
    let spec = eostok_models::DeviceSpec::parse(&a.device)?;
    spec.check_compiled_in()?;
    if a.precision == Precision::Bf16 && !matches!(spec, eostok_models::DeviceSpec::Cuda(_)) {
        return Err(exit::bad_input(format!("--precision bf16 needs a CUDA device (--device cuda:N), not {spec}: CPU bf16 matmuls are emulated, slower than f32")));
    }
    let dist_env = eostok_train::dist::DistEnv::from_env()?;
    let world = dist_env.as_ref().map_or(1, |d| d.world_size);
    if !(a.bucket_mib.is_finite() && a.bucket_mib > 0.0) {
        return Err(exit::bad_input(format!("--bucket-mib {}: must be a positive number", a.bucket_mib)));
    }
    if !a.batch.is_multiple_of(world) {
        return Err(exit::bad_input(format!("--batch {} (the global batch) must be a multiple of WORLD_SIZE={world}", a.batch)));
    }
    if a.batch == 0 || a.steps == 0 || a.accum == 0 {
        return Err(exit::bad_input("--steps, --batch and --accum must be positive"));
    }
    if let Some(tau) = a.tau {
        if !(tau.is_finite() && tau > 0.0) {
            return Err(exit::bad_input(format!("--tau {tau}: must be a positive number")));
        }
        if a.resume.is_some() {
            return Err(exit::bad_input("--tau applies to a fresh run; a resumed run keeps its config's τ"));
        }
    }
    let defaults = LossConfig::default();
    check_loss_weight("--apr-weight", a.apr_weight, defaults.apr, a.resume.is_some())?;
    check_loss_weight("--entropy-weight", a.entropy_weight, defaults.entropy, a.resume.is_some())?;
    // Rank 0 owns the run directory (the others may see it filling up already).
    let lead = dist_env.as_ref().is_none_or(|d| d.rank == 0);
    if lead && a.resume.is_none() && a.out.exists() && !checkpoint::is_absent_or_empty(&a.out)? {
        return Err(exit::bad_input(format!("{}: run directory is not empty (use --resume {} to continue it)", a.out.display(), a.out.display())));
    }
    let train = TrainConfig {
        mode: a.mode,
        data: a.data,
        steps: a.steps,
        batch: a.batch,
        lr: a.lr,
        min_lr: a.min_lr,
        warmup: a.warmup,
        grad_clip: a.grad_clip,
        ema_decay: a.ema_decay,
        tokenizer_beta2: 0.999,
        ar_beta2: 0.95,
        weight_decay: 0.0,
        seed: a.seed,
        hflip: a.hflip,
        save_every: a.save_every,
        keep: a.keep,
        log_every: a.log_every,
        sample_every: a.sample_every,
        loss: LossConfig { apr: a.apr_weight, entropy: a.entropy_weight, ..Default::default() },
        lpips: a.lpips,
        vfm: a.vfm,
        accum: a.accum,
        tau: a.tau,
        disc: eostok_train::disc::DiscConfig { on: a.disc == "patchgan", weight: a.gan_weight, start: a.gan_start, lecam: a.lecam, lr: a.disc_lr, ..Default::default() },
    };
    eostok_train::faults::check_train(&train)?;
    let (device, dist) = match dist_env.filter(|d| d.world_size > 1) {
        None => (spec.open()?, None),
        Some(env) => join_group(&env, spec, &a.out)?,
    };
    let signals = exit::SignalFlag::install()?;
    eostok_train::fit::fit(FitOptions {
        config: a.config,
        out: a.out,
        resume: a.resume,
        train,
        device,
        progress: !a.quiet,
        signals: Some(signals),
        stop_at: a.stop_at,
        max_nan_steps: a.max_nan_steps,
        dist,
        bucket_mib: a.bucket_mib,
        precision: a.precision,
    })?;
    Ok(())
}

type Group = Option<std::sync::Arc<dyn eostok_train::dist::Collective>>;

/// This process's device and its NCCL group (WORLD_SIZE > 1).
fn join_group(env: &eostok_train::dist::DistEnv, spec: eostok_models::DeviceSpec, out: &std::path::Path) -> Result<(Device, Group)> {
    let world = env.world_size;
    let eostok_models::DeviceSpec::Cuda(first) = spec else {
        return Err(exit::bad_input(format!(
            "WORLD_SIZE={world}: multi-process data-parallel training runs over NCCL between CUDA devices (--device cuda), not {spec}; a CPU run is one process"
        )));
    };
    #[cfg(not(feature = "nccl"))]
    {
        let _ = (first, out);
        Err(exit::bad_input(format!("WORLD_SIZE={world}: built without the `nccl` feature; rebuild with --features nccl")))
    }
    #[cfg(feature = "nccl")]
    {
        let device = eostok_models::DeviceSpec::Cuda(first + env.local_rank).open()?;
        let id_file = env.id_file.clone().unwrap_or_else(|| eostok_train::launch::default_id_file(out, env.master_port));
        eprintln!("rank {} of {world}: {} (NCCL id via {})", env.rank, eostok_models::DeviceSpec::Cuda(first + env.local_rank), id_file.display());
        let group = eostok_train::dist::NcclGroup::init(env, &device, &id_file)?;
        Ok((device, Some(std::sync::Arc::new(group))))
    }
}

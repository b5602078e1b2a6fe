//! `eostok-train fit`: the training loop. One step, top to bottom:
//! batch -> joint forward (all losses) -> backward -> clip -> Adam (two
//! groups) -> EMA -> log; checkpoints at `--save-every` and at the end; a
//! signal finishes the step, saves and exits 130/143.

use crate::data::{resolve_data, DataPosition, Loader};
use crate::disc::{DiscConfig, PatchGan};
use crate::dist::{Collective, Shard};
use crate::joint::{joint_forward_part, Batch as JointBatch, LossConfig, Part as JointPart};
use crate::loss::{accuracy, codebook_stats};
use crate::optim::{lr_at, Adam, Ema, Group, GroupConfig};
use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor};
use eostok_models::checkpoint::{self, WeightSet};
use eostok_models::exit::{bad_input, BadInputExt, Interrupted, SignalFlag};
use eostok_models::names::Group as Part;
use eostok_models::nets::{Dinov2, Lpips, LpipsNet};
use eostok_models::nn::{Eostok, ParamStore};
use eostok_models::sampling::SplitMix64;
use eostok_models::Config;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// The paper: tokenizer and AR trained jointly, with APR.
    E2e,
    /// Tokenizer for the first half of the steps, then AR on its frozen tokens.
    TwoStage,
    /// Joint training without APR (the paper's vanilla E2E).
    NtpOnly,
}

/// Everything that defines a run; saved in state.json so a resume continues
/// the same run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub mode: Mode,
    pub data: String,
    pub steps: u64,
    pub batch: usize,
    pub lr: f64,
    pub min_lr: f64,
    pub warmup: u64,
    pub grad_clip: f64,
    pub ema_decay: f64,
    pub tokenizer_beta2: f64,
    pub ar_beta2: f64,
    pub weight_decay: f64,
    pub seed: u64,
    pub hflip: bool,
    pub save_every: u64,
    pub keep: usize,
    pub log_every: u64,
    /// Write samples/step-NNNNNNN.png every N steps (0 = only at the end).
    #[serde(default = "default_sample_every")]
    pub sample_every: u64,
    pub loss: LossConfig,
    /// Perceptual net for the LPIPS terms: "vgg", "alex" or "off".
    #[serde(default = "default_lpips")]
    pub lpips: String,
    /// Frozen VFM for the alignment terms: "dinov2" or "off".
    #[serde(default = "default_vfm")]
    pub vfm: String,
    /// Forward/backward passes of `batch` images per optimizer step (gradients summed, each
    /// pass's loss divided by this).
    #[serde(default = "default_accum")]
    pub accum: usize,
    /// IBQ temperature τ for a fresh run (replaces the config's; None keeps it).
    #[serde(default)]
    pub tau: Option<f64>,
    /// The optional PatchGAN discriminator.
    #[serde(default)]
    pub disc: DiscConfig,
}

fn default_accum() -> usize {
    1
}

fn default_sample_every() -> u64 {
    500
}
fn default_lpips() -> String {
    "off".into()
}
fn default_vfm() -> String {
    "off".into()
}

/// state.json
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainState {
    pub step: u64,
    pub rng: u64,
    pub data_position: DataPosition,
    pub dataset: String,
    pub mode: Mode,
    pub losses: Vec<String>,
    pub train: TrainConfig,
}

pub struct FitOptions {
    pub config: String,
    pub out: PathBuf,
    pub resume: Option<PathBuf>,
    pub train: TrainConfig,
    pub device: Device,
    pub progress: bool,
    pub signals: Option<SignalFlag>,
    /// Stop (and save) after this step without changing the schedule of
    /// `train.steps`; resuming later continues the same run.
    pub stop_at: Option<u64>,
    /// Stop (without saving) after this many NaN/infinite-loss steps in a
    /// row; each is skipped without an update (see `faults::NanGuard`).
    pub max_nan_steps: usize,
    /// Data parallelism: this process's place in a group of ranks (None: one process).
    /// `train.batch` is the global batch; each rank trains on its equal slice of it,
    /// only rank 0 writes (checkpoints, metrics, samples). See `dist.rs`.
    pub dist: Option<Arc<dyn Collective>>,
    /// Gradient all-reduce bucket size in MiB (data parallelism only).
    pub bucket_mib: f64,
    /// Matmul precision; master weights, optimizer state and EMA stay f32.
    pub precision: Precision,
}

/// `--precision`: f32 everywhere, or bf16 matmuls (autocast) over f32 master weights.
/// bf16 keeps f32's exponent range, so no loss scaling is needed (fp16 would need it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Precision {
    #[default]
    F32,
    Bf16,
}

/// Which parts a step trains.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Phase {
    Joint,
    TokenizerOnly,
    ArOnly,
}

pub fn phase(mode: Mode, step: u64, steps: u64) -> Phase {
    match mode {
        Mode::TwoStage if step < steps / 2 => Phase::TokenizerOnly,
        Mode::TwoStage => Phase::ArOnly,
        _ => Phase::Joint,
    }
}

/// The loss weights a step of `mode` in phase `ph` uses.
pub fn losses_for(base: &LossConfig, mode: Mode, ph: Phase) -> LossConfig {
    let mut l = base.clone();
    if mode == Mode::NtpOnly {
        l.apr = 0.0;
    }
    match ph {
        Phase::Joint => {}
        Phase::TokenizerOnly => {
            l.ntp = 0.0;
            l.apr = 0.0;
        }
        Phase::ArOnly => {
            l = LossConfig { l2: 0.0, l1: 0.0, lpips: 0.0, commit: 0.0, entropy: 0.0, apr: 0.0, vfm_implicit: 0.0, vfm_decoder: 0.0, nested_dropout: 0.0, ntp: 1.0, ..l };
        }
    }
    l
}

pub struct FitSummary {
    pub step: u64,
    pub last_loss: f64,
}

pub fn fit(opts: FitOptions) -> Result<FitSummary> {
    let dev = &opts.device;
    let (rank, world) = opts.dist.as_ref().map(|c| (c.rank(), c.world_size())).unwrap_or((0, 1));
    let lead = rank == 0;
    if opts.precision == Precision::Bf16 && !dev.is_cuda() {
        return Err(bad_input("--precision bf16 needs a CUDA device (--device cuda:N): CPU bf16 matmuls are emulated, slower than f32"));
    }
    let _autocast = eostok_models::nn::layers::Autocast::bf16(opts.precision == Precision::Bf16);
    // ---- model, optimizer, EMA, data position: fresh or resumed ----
    let (cfg, store, ema_w, opt_state, state) = match &opts.resume {
        Some(dir) => load_run(dir, dev)?,
        None => {
            let cfg = Config::load(&opts.config).bad_input("--config")?;
            (cfg, ParamStore::random(opts.train.seed), None, None, None)
        }
    };
    let train = match &state {
        // A resumed run keeps its own settings except the step budget.
        Some(s) => TrainConfig { steps: opts.train.steps, ..s.train.clone() },
        None => opts.train.clone(),
    };
    // The global batch is cut into equal slices, one per rank (2 ranks x B = 1 rank x 2B).
    let shard = Shard::of(train.batch, rank, world)?;
    if world > 1 && train.disc.on {
        return Err(bad_input("--disc patchgan is not supported with data parallelism yet (world size > 1): its updates are not all-reduced"));
    }
    let dataset = resolve_data(&train.data, None)?;
    if dataset.class_names().len() > cfg.num_classes {
        return Err(bad_input(format!("--data {} has {} classes but the config has {}", train.data, dataset.class_names().len(), cfg.num_classes)));
    }
    let mut cfg = cfg;
    if let (Some(tau), None) = (train.tau, &state) {
        cfg.tau = tau;
    }
    if cfg.class_names.is_empty() && dataset.class_names().len() == cfg.num_classes {
        cfg.class_names = dataset.class_names().to_vec();
    }
    let model = Eostok::new(&cfg, &store.var_builder(DType::F32, dev))?;
    let vars = store.vars();
    let group = |tok: bool, beta2: f64, name: &str| Group {
        name: name.into(),
        cfg: GroupConfig { beta1: 0.9, beta2, eps: 1e-8, weight_decay: train.weight_decay },
        vars: vars.iter().filter(|(k, _)| (Part::of(k) != Part::Ar) == tok).map(|(k, v)| (k.clone(), v.clone())).collect(),
    };
    let mut opt = Adam::new(vec![group(true, train.tokenizer_beta2, "tokenizer"), group(false, train.ar_beta2, "ar")])?;
    let mut ema = Ema::new(train.ema_decay, &vars)?;
    if let Some(w) = ema_w {
        ema.weights = w;
    }
    let (mut step, mut rng, pos) = match &state {
        Some(s) => (s.step, SplitMix64(s.rng), s.data_position),
        None => (0, SplitMix64::new(train.seed ^ 0x5EED), DataPosition::default()),
    };
    if let (Some(o), Some(s)) = (opt_state, &state) {
        opt.load_state(&o, s.step).context("optimizer.safetensors")?;
    }
    let mut disc = match train.disc.on {
        true => Some(PatchGan::new(&train.disc, cfg.channels, cfg.image_size, train.seed, dev)?),
        false => None,
    };
    if let (Some(d), Some(dir)) = (&mut disc, &opts.resume) {
        let path = dir.join(DISC_FILE);
        if path.exists() {
            let saved = candle_core::safetensors::load(&path, dev).bad_input(path.display())?;
            d.load_state(&saved).map_err(|e| bad_input(format!("{}: {e}", path.display())))?;
        }
    }
    // Frozen pretrained nets (plain tensors: no gradient reaches them).
    let lpips = match train.lpips.as_str() {
        "off" => None,
        "vgg" => Some(Lpips::load_default(LpipsNet::Vgg, dev)?),
        "alex" => Some(Lpips::load_default(LpipsNet::Alex, dev)?),
        other => return Err(bad_input(format!("--lpips {other}: expected vgg, alex or off"))),
    };
    let vfm = match (train.vfm.as_str(), &cfg.vfm) {
        ("off", _) => None,
        ("dinov2", Some(_)) => Some(Dinov2::load_default(dev)?),
        ("dinov2", None) => return Err(bad_input("--vfm dinov2 needs a config with VFM projectors (\"vfm\" in the config)")),
        (other, _) => return Err(bad_input(format!("--vfm {other}: expected dinov2 or off"))),
    };
    let mut loader = Loader::resume(dataset.clone(), cfg.image_size, train.seed, train.hflip, pos, dev)?;
    // Only rank 0 writes to the run directory.
    if lead {
        std::fs::create_dir_all(&opts.out).bad_input(format!("{}: cannot create", opts.out.display()))?;
        if opts.resume.is_none() {
            checkpoint::save_config(&opts.out.join(checkpoint::CONFIG_FILE), &cfg)?;
        }
    }
    let reduce_fn = |t: &Tensor| -> candle_core::Result<Tensor> {
        let c = opts.dist.as_ref().expect("reduce is only used with a group");
        c.all_reduce_sum(t).map_err(|e| candle_core::Error::Msg(format!("{e:#}")))
    };
    let part = JointPart { shard, reduce: if world > 1 { Some(&reduce_fn) } else { None } };

    let bar = progress(opts.progress && lead, train.steps, step);
    let mut last_loss = f64::NAN;
    let started = Instant::now();
    let start_step = step;
    let stop = opts.stop_at.unwrap_or(train.steps).min(train.steps);
    let mut nan_guard = crate::faults::NanGuard::new(opts.max_nan_steps);
    while step < stop {
        let t0 = Instant::now();
        let ph = phase(train.mode, step, train.steps);
        let w = losses_for(&train.loss, train.mode, ph);
        let lr = lr_at(step, train.steps, train.warmup, train.lr, train.min_lr);
        // ---- one step: `accum` passes, gradients summed ----
        let gan_on = disc.is_some() && step >= train.disc.start && ph != Phase::ArOnly;
        let accum = train.accum.max(1);
        let mut grads: Option<candle_core::backprop::GradStore> = None;
        let (mut loss_sum, mut disc_terms, mut disc_inputs) = (0.0, Vec::new(), Vec::new());
        let mut last = None;
        for _ in 0..accum {
            let batch = if world == 1 { loader.next_batch(train.batch)? } else { loader.next_batch_part(train.batch, shard.offset, shard.len)? };
            let feats = match &vfm {
                Some(net) => Some(net.vfm_features_for_grid(&batch.images, cfg.grid())?.detach()),
                None => None,
            };
            let jb = JointBatch { images: batch.images, classes: batch.labels, vfm: feats };
            let mut out = joint_forward_part(&model, &jb, &w, lpips.as_ref(), &mut rng, &part)?;
            if let (Some(d), true) = (&mut disc, gan_on) {
                let g = d.generator_loss(&out.recon)?;
                out.loss = (&out.loss + (&g * train.disc.weight)?)?;
                out.terms.push(("gan_g", g));
                // The discriminator steps after the NaN check below.
                disc_inputs.push((jb.images.clone(), out.recon.detach()));
            }
            loss_sum += out.loss.to_scalar::<f32>()? as f64;
            let g = if accum == 1 { out.loss.backward()? } else { (&out.loss / accum as f64)?.backward()? };
            grads = Some(match grads.take() {
                None => g,
                Some(acc) => add_grads(acc, g, &vars)?,
            });
            last = Some((jb, out));
        }
        let (mut grads, (jb, out)) = (grads.expect("accum >= 1"), last.expect("accum >= 1"));
        let mut step_loss = loss_sum / accum as f64;
        let (mut agreed_signal, mut reduced_terms) = (None, None);
        if let (Some(c), true) = (&opts.dist, world > 1) {
            // Mean gradients, and one view of the step on every rank: loss (for the NaN
            // guard and the log), logged terms, and whether any rank got a signal (all
            // ranks then stop after this same step).
            crate::dist::reduce_grads(c.as_ref(), &mut grads, &vars, opts.bucket_mib)?;
            let sig = opts.signals.as_ref().and_then(|s| s.received());
            let mut scalars = vec![step_loss as f32, (sig == Some(2)) as u8 as f32, (sig.is_some() && sig != Some(2)) as u8 as f32];
            for (_, t) in &out.terms {
                scalars.push(t.to_scalar::<f32>()?);
            }
            let r = crate::dist::all_reduce_scalars(c.as_ref(), &scalars, dev)?;
            step_loss = r[0] as f64 / world as f64;
            agreed_signal = if r[1] > 0.0 { Some(2) } else if r[2] > 0.0 { Some(15) } else { None };
            reduced_terms = Some(r[3..].iter().map(|v| v / world as f32).collect::<Vec<f32>>());
        }
        let norm = opt.grad_norm(&grads)?;
        let scale = if train.grad_clip > 0.0 && norm > train.grad_clip { train.grad_clip / norm } else { 1.0 };
        // A NaN/infinite loss or gradient: no update at all (faults.rs).
        if !nan_guard.skip(step, step_loss, norm)? {
            if let Some(d) = &mut disc {
                for (real, fake) in &disc_inputs {
                    disc_terms.push(d.step(real, fake)?);
                }
            }
            match ph {
                Phase::Joint => opt.update(&grads, lr, scale)?,
                // The frozen half's weights must not move at all: update one group.
                Phase::TokenizerOnly => opt.update_group(&grads, lr, scale, "tokenizer")?,
                Phase::ArOnly => opt.update_group(&grads, lr, scale, "ar")?,
            }
            ema.update(&vars)?;
        }
        step += 1;
        last_loss = step_loss;
        // ---- log ----
        if lead && (step % train.log_every.max(1) == 0 || step == train.steps) {
            let ids: Vec<u32> = out.ids.flatten_all()?.to_vec1()?;
            let (usage, ppl) = codebook_stats(&ids, cfg.codebook_size);
            let mut rec = serde_json::json!({
                "step": step, "lr": lr, "loss": last_loss, "grad_norm": norm, "phase": format!("{ph:?}"),
                "codebook_usage": usage, "perplexity": ppl,
                "ar_top1": accuracy(&out.logits, &out.ids)?,
                "images_per_s": train.batch as f64 / t0.elapsed().as_secs_f64(),
            });
            // With several ranks: the loss and terms are means over the ranks; usage,
            // perplexity and top-1 are rank 0's slice.
            let terms = match reduced_terms {
                Some(v) => v,
                None => out.terms.iter().map(|(_, t)| t.to_scalar::<f32>()).collect::<candle_core::Result<_>>()?,
            };
            for ((name, _), v) in out.terms.iter().zip(&terms) {
                rec[*name] = serde_json::json!(v);
            }
            if world > 1 {
                rec["world_size"] = serde_json::json!(world);
            }
            if let Some(d) = disc_terms.last() {
                rec["disc_hinge"] = serde_json::json!(d.hinge);
                rec["disc_lecam"] = serde_json::json!(d.lecam);
                rec["disc_real_logit"] = serde_json::json!(d.real_logit);
                rec["disc_fake_logit"] = serde_json::json!(d.fake_logit);
            }
            append_metrics(&opts.out, &rec)?;
        }
        bar.set_position(step);
        bar.set_message(format!("loss {last_loss:.4}"));
        if lead && ((train.sample_every > 0 && step % train.sample_every == 0) || step == stop) {
            write_samples(&model, &jb.images, &out, &opts.out, step)?;
            // A plot that cannot be drawn must not stop a run.
            if let Err(e) = crate::plot::plot_losses(&opts.out.join(checkpoint::METRICS_FILE), &opts.out.join(LOSS_PLOT_FILE)) {
                bar.println(format!("warning: {}: {e:#}", LOSS_PLOT_FILE));
            }
        }
        let interrupted = if world > 1 { agreed_signal } else { opts.signals.as_ref().and_then(|s| s.received()) };
        // Periodic saves wait out a NaN streak; the final and the signal save do not
        // (a skipped step changed no weight).
        if lead && ((step % train.save_every.max(1) == 0 && !nan_guard.in_streak()) || step == stop || interrupted.is_some()) {
            let state = TrainState {
                step,
                rng: rng.0,
                data_position: loader.position(),
                dataset: train.data.clone(),
                mode: train.mode,
                losses: out.terms.iter().map(|(n, _)| n.to_string()).collect(),
                train: train.clone(),
            };
            save_run(&opts.out, &cfg, &vars, &ema, &opt, disc.as_ref(), &state, train.keep).map_err(|e| crate::faults::save_failed(&opts.out, e))?;
        }
        if let Some(sig) = interrupted {
            bar.abandon_with_message(format!("interrupted at step {step}; checkpoint saved in {}", opts.out.display()));
            return Err(Interrupted(sig).into());
        }
    }
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    if lead {
        eprintln!("{} steps in {:.1} s ({:.2} steps/s), last loss {last_loss:.4}; checkpoint in {}", step - start_step, secs, (step - start_step) as f64 / secs.max(1e-9), opts.out.display());
    }
    Ok(FitSummary { step, last_loss })
}

/// inputs | reconstructions | APR images | class-conditional samples (classes 0, 1, ...).
fn write_samples(model: &Eostok, images: &Tensor, out: &crate::joint::JointOut, dir: &Path, step: u64) -> Result<()> {
    let n = images.dim(0)?.min(8);
    let mut rows = vec![images.narrow(0, 0, n)?, out.recon.narrow(0, 0, n)?.detach()];
    if let Some(apr) = &out.apr_image {
        rows.push(apr.narrow(0, 0, n)?.detach());
    }
    let classes: Vec<u32> = (0..n.min(model.cfg.num_classes) as u32).collect();
    let (_, samples) = model.generate(&classes, &eostok_models::nn::GenerateOptions { seed: step, ..Default::default() })?;
    rows.push(samples);
    let refs: Vec<&Tensor> = rows.iter().collect();
    crate::samples::write_grid(&refs, &dir.join(checkpoint::SAMPLES_DIR).join(format!("step-{step:07}.png")))
}

fn progress(on: bool, total: u64, at: u64) -> indicatif::ProgressBar {
    if !on {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} steps  {per_sec}  eta {eta}  {msg}").expect("template"));
    bar.set_position(at);
    bar
}

fn append_metrics(out: &Path, rec: &serde_json::Value) -> Result<()> {
    let path = out.join(checkpoint::METRICS_FILE);
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&path).with_context(|| format!("{}: cannot append", path.display()))?;
    writeln!(f, "{rec}")?;
    Ok(())
}

type Loaded = (Config, ParamStore, Option<BTreeMap<String, Tensor>>, Option<HashMap<String, Tensor>>, Option<TrainState>);

/// Read a run directory written by `save_run`.
fn load_run(dir: &Path, dev: &Device) -> Result<Loaded> {
    let cfg = checkpoint::load_config(dir)?;
    let raw = checkpoint::load_weights(dir, &cfg, WeightSet::Raw, dev)?;
    let ema = checkpoint::load_weights(dir, &cfg, WeightSet::Ema, dev)?;
    let state_path = dir.join(checkpoint::STATE_FILE);
    let state: TrainState = serde_json::from_str(&std::fs::read_to_string(&state_path).bad_input(state_path.display())?).bad_input(state_path.display())?;
    crate::faults::check_state(&state).bad_input(state_path.display())?;
    let opt_path = dir.join(checkpoint::OPTIMIZER_FILE);
    let opt = candle_core::safetensors::load(&opt_path, dev).bad_input(opt_path.display())?;
    Ok((cfg, ParamStore::from_tensors(raw), Some(ema.into_iter().collect()), Some(opt), Some(state)))
}

/// Write the latest checkpoint at the top level of `out`: every file staged
/// and fsynced first, the previous checkpoint moved to history/ (when kept),
/// then renamed into place with state.json last.
#[allow(clippy::too_many_arguments)]
fn save_run(out: &Path, cfg: &Config, vars: &BTreeMap<String, candle_core::Var>, ema: &Ema, opt: &Adam, disc: Option<&PatchGan>, state: &TrainState, keep: usize) -> Result<()> {
    let staging = crate::faults::staging_dir(out);
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging)?;
    let raw: HashMap<String, Tensor> = vars.iter().map(|(k, v)| (k.clone(), v.as_tensor().clone())).collect();
    let ema_w: HashMap<String, Tensor> = ema.weights.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let opt_w: HashMap<String, Tensor> = opt.state().into_iter().collect();
    checkpoint::save_config(&staging.join(checkpoint::CONFIG_FILE), cfg)?;
    checkpoint::save_weights(&staging.join(checkpoint::MODEL_FILE), &raw)?;
    checkpoint::save_weights(&staging.join(checkpoint::EMA_FILE), &ema_w)?;
    checkpoint::save_weights(&staging.join(checkpoint::OPTIMIZER_FILE), &opt_w)?;
    let mut files = vec![checkpoint::CONFIG_FILE, checkpoint::MODEL_FILE, checkpoint::EMA_FILE, checkpoint::OPTIMIZER_FILE];
    if let Some(d) = disc {
        checkpoint::save_weights(&staging.join(DISC_FILE), &d.state()?)?;
        files.push(DISC_FILE);
    }
    std::fs::write(staging.join(checkpoint::STATE_FILE), serde_json::to_string_pretty(state)?)?;
    checkpoint::sync_path(&staging.join(checkpoint::STATE_FILE))?;
    files.push(checkpoint::STATE_FILE);
    if keep > 0 {
        if let Ok(text) = std::fs::read_to_string(out.join(checkpoint::STATE_FILE)) {
            if let Ok(prev) = serde_json::from_str::<TrainState>(&text) {
                let hist = out.join(checkpoint::HISTORY_DIR).join(format!("step-{:07}", prev.step));
                std::fs::create_dir_all(&hist)?;
                for f in &files {
                    if out.join(f).exists() {
                        std::fs::copy(out.join(f), hist.join(f))?;
                    }
                }
                prune_history(&out.join(checkpoint::HISTORY_DIR), keep)?;
            }
        }
    }
    // Crash-safe: a kill at any point leaves the old checkpoint or the new one.
    checkpoint::commit_staged(out, &staging, &files)
}

/// The discriminator's weights, moments and LeCam state (runs with `--disc patchgan`).
pub const DISC_FILE: &str = "disc.safetensors";
/// The loss curves, redrawn with each sample grid.
pub const LOSS_PLOT_FILE: &str = "losses.png";

/// `acc + g` for every variable's gradient (gradient accumulation).
fn add_grads(mut acc: candle_core::backprop::GradStore, g: candle_core::backprop::GradStore, vars: &BTreeMap<String, candle_core::Var>) -> Result<candle_core::backprop::GradStore> {
    for var in vars.values() {
        let t = var.as_tensor();
        let sum = match (acc.get(t), g.get(t)) {
            (Some(a), Some(b)) => (a + b)?.detach(),
            (None, Some(b)) => b.detach(),
            _ => continue,
        };
        acc.insert(t, sum);
    }
    Ok(acc)
}

fn prune_history(hist: &Path, keep: usize) -> Result<()> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(hist)?.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.is_dir()).collect();
    dirs.sort();
    while dirs.len() > keep {
        std::fs::remove_dir_all(dirs.remove(0))?;
    }
    Ok(())
}

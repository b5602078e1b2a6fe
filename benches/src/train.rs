//! `eostok-bench train`: training steps/s of the joint E2E step (forward with every
//! loss except the pretrained nets, backward, global-norm clip, two-group Adam, EMA)
//! for presets at one batch on CPU, side by side with the same step in PyTorch
//! (`scripts/bench/train_torch.py`), the two-stage phases and NTP-only, and our
//! fused ops switched off (`EOSTOK_FUSED=0`).
//!
//! Every measurement runs in a fresh child process (`eostok-bench train-child`, or
//! python): its peak RSS is its own (VmHWM, reset through /proc/self/clear_refs after
//! the model is built, so it covers the step loop), and `EOSTOK_FUSED` is read once
//! per process. Rounds interleave the variants (ours, torch, ours, torch, ...) because
//! this machine's speed moves from minute to minute; the table shows medians and
//! min–max over rounds, and ratios are taken within a round.

use crate::util::{self, Stats};
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use eostok_models::exit;
use eostok_models::names::Group as Part;
use eostok_models::nn::Eostok;
use eostok_models::sampling::SplitMix64;
use eostok_models::Config;
use eostok_train::joint::{joint_forward, Batch, LossConfig};
use eostok_train::loss::{commitment, cross_entropy, entropy_penalty, mse};
use eostok_train::optim::{Adam, Ema, Group, GroupConfig};
use serde_json::{json, Value};
use std::process::Command;
use std::time::Instant;

/// What one training step trains (fit.rs `Mode`/`Phase`, plus a minimal two-stage).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Phase {
    /// The paper's joint step (fit `--mode e2e`).
    E2e,
    /// Joint without APR (fit `--mode ntp-only`).
    NtpOnly,
    /// fit `--mode two-stage`, first half: joint_forward with ntp = apr = 0, update the
    /// tokenizer group only (the AR forward still runs, as in fit.rs).
    TwoStageTok,
    /// fit `--mode two-stage`, second half: joint_forward with only ntp = 1, update the
    /// AR group only (the decoder forward and the tokenizer's backward still run, as in
    /// fit.rs).
    TwoStageAr,
    /// A minimal tokenizer stage: encoder → IBQ → decoder, recon + commit + entropy.
    MinTok,
    /// A minimal AR stage: tokenizer forward, AR on the detached hard codes.
    MinAr,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::E2e => "e2e",
            Phase::NtpOnly => "ntp-only",
            Phase::TwoStageTok => "two-stage-tok",
            Phase::TwoStageAr => "two-stage-ar",
            Phase::MinTok => "min-tok",
            Phase::MinAr => "min-ar",
        }
    }
}

#[derive(clap::Args, Debug, Clone)]
pub struct TrainArgs {
    /// Presets (or JSON configs).
    #[arg(long, value_delimiter = ',', default_value = "tiny,small")]
    pub configs: Vec<String>,
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    /// Timed steps per round and variant (after --warmup untimed steps).
    #[arg(long, default_value_t = 5)]
    pub steps: usize,
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
    /// Interleaved rounds (every variant once per round).
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Skip the PyTorch rows (python from EOSTOK_TORCH_PYTHON, default /usr/bin/python3).
    #[arg(long)]
    pub no_torch: bool,
    /// Skip the EOSTOK_FUSED=0 rows.
    #[arg(long)]
    pub no_unfused: bool,
    /// Skip the two-stage and ntp-only rows.
    #[arg(long)]
    pub no_modes: bool,
    /// The PyTorch script.
    #[arg(long, default_value = "scripts/bench/train_torch.py")]
    pub torch_script: String,
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args, Debug, Clone)]
pub struct ChildArgs {
    #[arg(long)]
    pub config: String,
    #[arg(long, value_enum)]
    pub phase: Phase,
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    #[arg(long, default_value_t = 5)]
    pub steps: usize,
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

// fit.rs defaults (eostok-train fit): lr 1e-4, clip 1.0, EMA 0.999, β 0.9/0.999 (tokenizer)
// and 0.9/0.95 (AR), eps 1e-8, no weight decay.
const LR: f64 = 1e-4;
const GRAD_CLIP: f64 = 1.0;
const EMA_DECAY: f64 = 0.999;

/// The loss weights of each phase: fit.rs `losses_for`, LPIPS and VFM off (no pretrained nets).
fn losses(phase: Phase) -> LossConfig {
    use eostok_train::fit::{losses_for, Mode, Phase as FitPhase};
    let base = LossConfig {
        lpips: 0.0,
        vfm_implicit: 0.0,
        vfm_decoder: 0.0,
        ..LossConfig::default()
    };
    match phase {
        Phase::E2e => losses_for(&base, Mode::E2e, FitPhase::Joint),
        Phase::NtpOnly => losses_for(&base, Mode::NtpOnly, FitPhase::Joint),
        Phase::TwoStageTok | Phase::MinTok => losses_for(&base, Mode::TwoStage, FitPhase::TokenizerOnly),
        Phase::TwoStageAr | Phase::MinAr => losses_for(&base, Mode::TwoStage, FitPhase::ArOnly),
    }
}

/// Which optimizer group a phase updates (None = both).
fn group_of(phase: Phase) -> Option<&'static str> {
    match phase {
        Phase::E2e | Phase::NtpOnly => None,
        Phase::TwoStageTok | Phase::MinTok => Some("tokenizer"),
        Phase::TwoStageAr | Phase::MinAr => Some("ar"),
    }
}

/// CPU seconds (user + system, every thread) of this process so far, from
/// /proc/self/stat (clock ticks of 1/100 s). On a shared machine this moves far
/// less than wall time; spinning threads count in it.
fn cpu_seconds() -> f64 {
    let text = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let rest = text.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the command name: state is field 3, utime 14 and stime 15 (1-based).
    let tick = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (tick(11) + tick(12)) / 100.0
}

fn status_kb(key: &str) -> u64 {
    util::proc_kb("/proc/self/status", key).unwrap_or(0)
}

/// One child measurement: prints one JSON object.
pub fn child(a: &ChildArgs) -> Result<()> {
    let cfg = Config::load(&a.config).map_err(|e| exit::bad_input(format!("--config: {e}")))?;
    let dev = Device::Cpu;
    let (model, store) = Eostok::random(&cfg, a.seed, DType::F32, &dev)?;
    let vars = store.vars();
    let group = |tok: bool, beta2: f64, name: &str| Group {
        name: name.into(),
        cfg: GroupConfig {
            beta1: 0.9,
            beta2,
            eps: 1e-8,
            weight_decay: 0.0,
        },
        vars: vars
            .iter()
            .filter(|(k, _)| (Part::of(k) != Part::Ar) == tok)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    };
    let mut opt = Adam::new(vec![
        group(true, 0.999, "tokenizer"),
        group(false, 0.95, "ar"),
    ])?;
    let mut ema = Ema::new(EMA_DECAY, &vars)?;
    let count = |f: &dyn Fn(Part) -> bool| -> usize {
        vars.iter()
            .filter(|(k, _)| f(Part::of(k)))
            .map(|(_, v)| v.elem_count())
            .sum()
    };
    let params_trained = count(&|p| p != Part::Aux);
    let params_total = count(&|_| true);

    // One fixed batch (data loading is not part of the step): uniform [-1, 1] images,
    // classes 0, 1, 2, ...
    let mut rng = SplitMix64::new(a.seed ^ 0xBA7C);
    let n = a.batch * cfg.channels * cfg.image_size * cfg.image_size;
    let px: Vec<f32> = (0..n).map(|_| (rng.uniform() * 2.0 - 1.0) as f32).collect();
    let images = Tensor::from_vec(
        px,
        (a.batch, cfg.channels, cfg.image_size, cfg.image_size),
        &dev,
    )?;
    let classes: Vec<u32> = (0..a.batch).map(|i| (i % cfg.num_classes) as u32).collect();
    let batch = Batch {
        images,
        classes,
        vfm: None,
    };
    let w = losses(a.phase);

    let rss_before = status_kb("VmRSS");
    // Reset VmHWM to the current RSS: the peak below is the step loop's.
    let hwm_reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
    let mut times = Vec::new();
    let mut cpu = Vec::new();
    let mut first_loss = f64::NAN;
    let mut last_loss = f64::NAN;
    for i in 0..a.warmup + a.steps {
        let t0 = Instant::now();
        let c0 = cpu_seconds();
        let loss = step(&model, &batch, &w, a.phase, &mut rng)?;
        let grads = loss.backward()?;
        let norm = opt.grad_norm(&grads)?;
        let scale = if norm > GRAD_CLIP {
            GRAD_CLIP / norm
        } else {
            1.0
        };
        match group_of(a.phase) {
            None => opt.update(&grads, LR, scale)?,
            Some(g) => opt.update_group(&grads, LR, scale, g)?,
        }
        ema.update(&vars)?;
        let l = loss.to_scalar::<f32>()? as f64;
        drop(grads);
        if i >= a.warmup {
            times.push(t0.elapsed().as_secs_f64());
            cpu.push(cpu_seconds() - c0);
        }
        if i == 0 {
            first_loss = l;
        }
        last_loss = l;
    }
    if !last_loss.is_finite() {
        bail!("{} {}: loss is {last_loss}", cfg.name, a.phase.name());
    }
    let total: f64 = times.iter().sum();
    let obj = json!({
        "impl": "ours",
        "config": cfg.name,
        "phase": a.phase.name(),
        "fused": std::env::var("EOSTOK_FUSED").map(|v| v != "0").unwrap_or(true),
        "batch": a.batch,
        "steps": times.len(),
        "step_s": times,
        "steps_per_s": times.len() as f64 / total.max(1e-12),
        "cpu_s": cpu,
        "cpu_s_per_step": cpu.iter().sum::<f64>() / cpu.len().max(1) as f64,
        "rss_before_bytes": rss_before,
        "peak_rss_bytes": status_kb("VmHWM"),
        "hwm_reset": hwm_reset,
        "params_trained": params_trained,
        "params_total": params_total,
        "loss_first": first_loss,
        "loss_last": last_loss,
    });
    println!("{obj}");
    Ok(())
}

/// The forward pass of one phase, returning the weighted loss.
fn step(
    m: &Eostok,
    batch: &Batch,
    w: &LossConfig,
    phase: Phase,
    rng: &mut SplitMix64,
) -> Result<Tensor> {
    match phase {
        Phase::E2e | Phase::NtpOnly | Phase::TwoStageTok | Phase::TwoStageAr => {
            Ok(joint_forward(m, batch, w, None, rng)?.loss)
        }
        Phase::MinTok => {
            let x = &batch.images;
            let l = m.cfg.latent_tokens;
            let q = m.ibq.forward(&m.encoder.forward(x)?.z)?;
            let keep = eostok_train::joint::nested_dropout(x.dim(0)?, l, w.nested_dropout, rng);
            let recon = m.decoder.forward(&q.z_q, Some(&keep))?.image;
            let loss = ((mse(&recon, x)? * w.l2)?
                + (commitment(&q.z_norm, &q.z_q, w.commit_beta)? * w.commit)?)?;
            Ok((loss + (entropy_penalty(&q.probs)? * w.entropy)?)?)
        }
        Phase::MinAr => {
            // The frozen tokenizer's codes as hard one-hots: no graph into the tokenizer.
            let q = m.ibq.forward(&m.encoder.forward(&batch.images)?.z)?;
            let ind = q.ind.detach();
            let (logits, _) = m.ar.forward_train(&ind, &batch.classes, rng)?;
            Ok(cross_entropy(&logits, &q.ids)?)
        }
    }
}

/// One variant of the benchmark: how to run it and how to name its row.
#[derive(Clone)]
struct Variant {
    label: &'static str,
    kind: Kind,
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Ours { phase: Phase, fused: bool },
    Torch,
}

fn variants(a: &TrainArgs) -> Vec<Variant> {
    let mut v = vec![Variant {
        label: "ours e2e",
        kind: Kind::Ours {
            phase: Phase::E2e,
            fused: true,
        },
    }];
    if !a.no_torch {
        v.push(Variant {
            label: "pytorch e2e",
            kind: Kind::Torch,
        });
    }
    if !a.no_unfused {
        v.push(Variant {
            label: "ours e2e EOSTOK_FUSED=0",
            kind: Kind::Ours {
                phase: Phase::E2e,
                fused: false,
            },
        });
    }
    if !a.no_modes {
        for (label, phase) in [
            ("ours ntp-only", Phase::NtpOnly),
            ("ours two-stage tok (fit)", Phase::TwoStageTok),
            ("ours two-stage ar (fit)", Phase::TwoStageAr),
            ("ours two-stage tok (min)", Phase::MinTok),
            ("ours two-stage ar (min)", Phase::MinAr),
        ] {
            v.push(Variant {
                label,
                kind: Kind::Ours { phase, fused: true },
            });
        }
    }
    v
}

fn torch_python() -> String {
    std::env::var("EOSTOK_TORCH_PYTHON").unwrap_or_else(|_| "/usr/bin/python3".into())
}

/// torch's version, or why it cannot be used.
fn torch_version() -> std::result::Result<String, String> {
    let py = torch_python();
    match Command::new(&py)
        .args(["-c", "import torch; print(torch.__version__)"])
        .output()
    {
        Err(e) => Err(format!("{py}: {e}")),
        Ok(o) if o.status.success() => Ok(String::from_utf8_lossy(&o.stdout).trim().to_string()),
        Ok(o) => Err(format!(
            "{py}: {}",
            String::from_utf8_lossy(&o.stderr)
                .lines()
                .last()
                .unwrap_or("import torch failed")
        )),
    }
}

/// Runs a child and parses the last stdout line as JSON.
fn run_json(mut cmd: Command, what: &str) -> Result<Value> {
    let out = cmd
        .output()
        .with_context(|| format!("{what}: cannot start"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        bail!(
            "{what} failed ({}): {}",
            out.status,
            err.lines()
                .rev()
                .take(5)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join(" | ")
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .with_context(|| format!("{what}: no JSON on stdout"))?;
    serde_json::from_str(line).with_context(|| format!("{what}: bad JSON {line}"))
}

fn measure(
    v: &Variant,
    a: &TrainArgs,
    cfg_name: &str,
    cfg: &Config,
    expect_params: (usize, usize),
) -> Result<Value> {
    match v.kind {
        Kind::Ours { phase, fused } => {
            let exe = std::env::current_exe().context("current exe")?;
            let mut c = Command::new(exe);
            c.args(["train-child", "--config", cfg_name, "--phase", phase.name()])
                .args([
                    "--batch",
                    &a.batch.to_string(),
                    "--steps",
                    &a.steps.to_string(),
                    "--warmup",
                    &a.warmup.to_string(),
                ])
                .env("RAYON_NUM_THREADS", a.threads.to_string())
                .env("EOSTOK_FUSED", if fused { "1" } else { "0" });
            run_json(c, &format!("{} {}", cfg.name, v.label))
        }
        Kind::Torch => {
            let mut c = Command::new(torch_python());
            c.arg(&a.torch_script)
                .args(["--config-json", &serde_json::to_string(cfg)?])
                .args([
                    "--batch",
                    &a.batch.to_string(),
                    "--steps",
                    &a.steps.to_string(),
                    "--warmup",
                    &a.warmup.to_string(),
                ])
                .args(["--threads", &a.threads.to_string()])
                .args([
                    "--expect-params",
                    &format!("{},{}", expect_params.0, expect_params.1),
                ])
                .env("OMP_NUM_THREADS", a.threads.to_string())
                .env("MKL_NUM_THREADS", a.threads.to_string())
                .env("OPENBLAS_NUM_THREADS", a.threads.to_string());
            run_json(c, &format!("{} {}", cfg.name, v.label))
        }
    }
}

fn f(v: &Value, k: &str) -> f64 {
    v[k].as_f64().unwrap_or(f64::NAN)
}

pub fn run(a: &TrainArgs) -> Result<()> {
    if a.rounds == 0 || a.steps == 0 || a.batch == 0 {
        return Err(exit::bad_input(
            "--rounds, --steps and --batch must be at least 1",
        ));
    }
    let cfgs: Vec<(String, Config)> = a
        .configs
        .iter()
        .map(|c| {
            Config::load(c)
                .map(|cfg| (c.clone(), cfg))
                .map_err(|e| exit::bad_input(format!("--configs {c}: {e}")))
        })
        .collect::<Result<_>>()?;
    let torch = if a.no_torch {
        Err("--no-torch".to_string())
    } else {
        torch_version()
    };
    let mut vars = variants(a);
    if let Err(why) = &torch {
        if !a.no_torch {
            eprintln!("eostok-bench train: PyTorch absent ({why}); its rows are marked \"absent\"");
        }
        vars.retain(|v| v.kind != Kind::Torch);
    }
    let commit = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    let (cpu, _) = util::cpu_description();
    if !a.json {
        println!(
            "# {cpu}, {} cores, {} threads, batch {}, {} rounds × {} timed steps (+{} warm-up), commit {commit}, PyTorch {}",
            util::nproc(),
            a.threads,
            a.batch,
            a.rounds,
            a.steps,
            a.warmup,
            torch.as_deref().unwrap_or("absent")
        );
    }
    // results[config][variant] = one JSON per round
    let mut results: Vec<Vec<Vec<Value>>> = vec![vec![vec![]; vars.len()]; cfgs.len()];
    let mut expect: Vec<(usize, usize)> = vec![(0, 0); cfgs.len()];
    for round in 0..a.rounds {
        for (ci, (name, cfg)) in cfgs.iter().enumerate() {
            for (vi, v) in vars.iter().enumerate() {
                let t0 = Instant::now();
                let r = measure(v, a, name, cfg, expect[ci])?;
                if let Kind::Ours { .. } = v.kind {
                    expect[ci] = (
                        r["params_trained"].as_u64().unwrap_or(0) as usize,
                        r["params_total"].as_u64().unwrap_or(0) as usize,
                    );
                }
                eprintln!(
                    "round {}/{} {} {}: {:.3} steps/s ({:.0} s)",
                    round + 1,
                    a.rounds,
                    cfg.name,
                    v.label,
                    f(&r, "steps_per_s"),
                    t0.elapsed().as_secs_f64()
                );
                results[ci][vi].push(r);
            }
        }
    }
    report(a, &cfgs, &vars, &results, torch.as_deref().ok(), &commit)
}

fn report(
    a: &TrainArgs,
    cfgs: &[(String, Config)],
    vars: &[Variant],
    results: &[Vec<Vec<Value>>],
    torch: Option<&str>,
    commit: &str,
) -> Result<()> {
    let mut t = util::Table::new(
        a.json,
        &[
            ("config", 6),
            ("variant", 26),
            ("steps/s median (min–max)", 25),
            ("ms/step", 8),
            ("CPU s/step", 10),
            ("img/s", 7),
            ("peak RSS MiB", 12),
            ("step Δ MiB", 10),
            ("params", 9),
            ("vs ours e2e", 20),
        ],
    );
    for (ci, (_, cfg)) in cfgs.iter().enumerate() {
        let per = &results[ci];
        let sps = |vi: usize| -> Vec<f64> { per[vi].iter().map(|r| f(r, "steps_per_s")).collect() };
        let base = sps(0);
        for (vi, v) in vars.iter().enumerate() {
            let s = Stats::of(&sps(vi));
            let cpu = Stats::of(
                &per[vi]
                    .iter()
                    .map(|r| f(r, "cpu_s_per_step"))
                    .collect::<Vec<_>>(),
            );
            let rss = Stats::of(
                &per[vi]
                    .iter()
                    .map(|r| f(r, "peak_rss_bytes"))
                    .collect::<Vec<_>>(),
            );
            let delta = Stats::of(
                &per[vi]
                    .iter()
                    .map(|r| f(r, "peak_rss_bytes") - f(r, "rss_before_bytes"))
                    .collect::<Vec<_>>(),
            );
            // Step-time ratio to ours e2e within each round (time ratio = inverse speed ratio).
            let rel: Vec<f64> = sps(vi).iter().zip(&base).map(|(x, b)| b / x).collect();
            let rel = Stats::of(&rel);
            let params = per[vi]
                .first()
                .map(|r| r["params_trained"].as_u64().unwrap_or(0))
                .unwrap_or(0);
            t.row(
                &[
                    cfg.name.clone(),
                    v.label.into(),
                    s.show(3),
                    format!("{:.0}", 1e3 / s.median),
                    format!("{:.2}", cpu.median),
                    format!("{:.1}", s.median * a.batch as f64),
                    format!("{:.0}", util::mib(rss.median)),
                    format!("{:.0}", util::mib(delta.median)),
                    params.to_string(),
                    if vi == 0 { "1".into() } else { format!("time ×{}", rel.show(2)) },
                ],
                json!({"bench": "train", "config": cfg.name, "variant": v.label, "batch": a.batch, "threads": a.threads,
                       "steps_per_s": s.json(), "cpu_s_per_step": cpu.json(), "peak_rss_bytes": rss.json(), "step_rss_delta_bytes": delta.json(),
                       "params_trained": params, "step_time_vs_ours_e2e": rel.json(), "rounds": per[vi]}),
            );
        }
        if torch.is_none() && !a.no_torch {
            t.row(
                &[cfg.name.clone(), "pytorch e2e".into(), "absent".into(), "-".into(), "-".into(), "-".into(), "-".into(), "-".into(), "-".into(), "-".into()],
                json!({"bench": "train", "config": cfg.name, "variant": "pytorch e2e", "absent": true}),
            );
        }
    }
    // Summary ratios, each taken within a round, on wall time and on CPU time.
    let mut s = util::Table::new(
        a.json,
        &[
            ("config", 6),
            ("ratio", 42),
            ("wall: median (min–max)", 24),
            ("CPU time: median (min–max)", 27),
        ],
    );
    for (ci, (_, cfg)) in cfgs.iter().enumerate() {
        let per = &results[ci];
        let idx = |label: &str| vars.iter().position(|v| v.label == label);
        // Seconds per step of variant vi in round r, wall or CPU.
        let tm = |vi: usize, r: usize, cpu: bool| {
            if cpu {
                f(&per[vi][r], "cpu_s_per_step")
            } else {
                1.0 / f(&per[vi][r], "steps_per_s")
            }
        };
        let mut ratio = |name: &str, g: &dyn Fn(usize, bool) -> f64| {
            let w = Stats::of(&(0..a.rounds).map(|r| g(r, false)).collect::<Vec<_>>());
            let c = Stats::of(&(0..a.rounds).map(|r| g(r, true)).collect::<Vec<_>>());
            s.row(
                &[cfg.name.clone(), name.into(), w.show(3), c.show(3)],
                json!({"bench": "train-ratio", "config": cfg.name, "ratio": name, "wall": w.json(), "cpu": c.json()}),
            );
        };
        if let Some(tv) = idx("pytorch e2e") {
            ratio("speed ours / PyTorch (goal >= 1)", &|r, c| {
                tm(tv, r, c) / tm(0, r, c)
            });
        }
        if let Some(u) = idx("ours e2e EOSTOK_FUSED=0") {
            ratio("speed fused / unfused", &|r, c| tm(u, r, c) / tm(0, r, c));
        }
        if let Some(n) = idx("ours ntp-only") {
            ratio("step time e2e / ntp-only", &|r, c| {
                tm(0, r, c) / tm(n, r, c)
            });
        }
        let pairs = [
            (
                "fit.rs",
                "ours two-stage tok (fit)",
                "ours two-stage ar (fit)",
            ),
            (
                "minimal",
                "ours two-stage tok (min)",
                "ours two-stage ar (min)",
            ),
        ];
        for (tag, tok, ar) in pairs {
            if let (Some(tok), Some(ar)) = (idx(tok), idx(ar)) {
                // Same step count, first half tokenizer, second half AR (fit --mode two-stage).
                ratio(
                    &format!("step time e2e / mean(tok, ar) ({tag})"),
                    &|r, c| tm(0, r, c) / (0.5 * (tm(tok, r, c) + tm(ar, r, c))),
                );
                // Both stages trained for the E2E run's step count.
                ratio(&format!("step time e2e / (tok + ar) ({tag})"), &|r, c| {
                    tm(0, r, c) / (tm(tok, r, c) + tm(ar, r, c))
                });
            }
        }
    }
    if !a.json {
        println!("# commit {commit}; machine shared with other jobs: medians and min–max over interleaved rounds");
    }
    Ok(())
}

//! eostok-run: class-conditional image generation from an EOSTok GGUF file
//! on the CPU — file → tensors → kernels → model → sampler → image. With
//! `--device cuda:N`/`metal:N` (a build with `--features cuda`/`metal`) the
//! same file runs on a GPU through candle (`eostok_runtime::gpu`).

use anyhow::{Context, Result};
use clap::Parser;
use eostok_models::exit::{self, bad_input, BadInputExt};
use eostok_models::{Config, DeviceSpec};
use eostok_runtime::generate::{generate, GenerateOptions};
use eostok_runtime::gguf::GgufFile;
use eostok_runtime::image_out::{grid, save_png, to_rgb8};
use eostok_runtime::model::{class_id, sampling_of, Model};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

#[derive(Parser)]
#[command(
    name = "eostok-run",
    version,
    about = "Generate images with an EOSTok model (GGUF) on the CPU (or a GPU: --device)",
    long_about = "Generate class-conditional images with an EOSTok model: the AR transformer samples 1D tokens with a KV cache, the decoder turns them into pixels. With no MODEL the bundled default model is used (when built with the `bundled-model` feature). A model file may recommend sampling settings (eostok.sampling.*, shown by --info): each of --temperature, --top-k, --top-p and --cfg not given takes the file's value, else its own default, and a line on stderr says which came from the file. The CPU path uses the runtime's own kernels on the file's weights as stored; --device cuda:N / metal:N (a build with --features cuda / metal) runs the same file through candle on a GPU, weights dequantized to f32 on load."
)]
struct Cli {
    /// GGUF model file (default: the bundled model).
    model: Option<PathBuf>,
    /// Class to generate: an id, a name from the file's class names, or `all` (one image per class).
    #[arg(short, long, default_value = "0")]
    class: String,
    /// Output PNG (several images are written as one grid).
    #[arg(short, long, default_value = "out.png")]
    output: PathBuf,
    /// Random seed: the same seed and file give the same PNG.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Sampling temperature; 0 = greedy [default: the file's recommendation, else 1].
    #[arg(long)]
    temperature: Option<f64>,
    /// Keep only the k most likely tokens; 0 = off [default: the file's recommendation, else 0].
    #[arg(long)]
    top_k: Option<usize>,
    /// Nucleus sampling: smallest set with this probability mass; 1 = off [default: the file's recommendation, else 1].
    #[arg(long)]
    top_p: Option<f64>,
    /// Classifier-free guidance scale; 1 = off, conditional and null-class rows run batched [default: the file's recommendation, else 1].
    #[arg(long = "cfg")]
    cfg_scale: Option<f32>,
    /// Number of images (of the same class), batched.
    #[arg(short, long, default_value_t = 1)]
    num_images: usize,
    /// Decode from the first K tokens only (1..=L; default all L).
    #[arg(long)]
    tokens: Option<usize>,
    /// Also write the image decoded from K = 1, 2, 4, ... L tokens (OUT-kNNN.png).
    #[arg(long)]
    progressive: bool,
    /// Worker threads (default: all cores). The matmul workers spin briefly between calls
    /// instead of sleeping (llama.cpp does the same); on a machine shared with other busy
    /// processes, fewer threads or `EOSTOK_POOL=rayon` (sleeping workers) may be faster.
    #[arg(long)]
    threads: Option<usize>,
    /// Print the model's metadata, tensors, CPU features and kernels, then exit.
    #[arg(long)]
    info: bool,
    /// Write the sampled token ids to this JSON file.
    #[arg(long)]
    tokens_out: Option<PathBuf>,
    /// Decode the token ids in this JSON file instead of sampling.
    #[arg(long, conflicts_with = "tokens_out")]
    from_tokens: Option<PathBuf>,
    /// Print timings (tokens/s, decode ms).
    #[arg(short, long)]
    verbose: bool,
    /// Where to run: cpu (the runtime's own kernels; default), cuda:N (a build with
    /// --features cuda) or metal:N (--features metal, macOS). GPUs run the candle
    /// model on weights dequantized to f32 (4 bytes a weight on the device). The same
    /// seed gives the CPU path's tokens on f32/f16 files; on quantized files the CPU
    /// path also rounds activations, so the samples differ.
    #[arg(long, default_value = "cpu", value_name = "DEVICE")]
    device: String,
}

/// Where the model runs: our kernels on the file's bytes, or candle on a device.
#[allow(clippy::large_enum_variant)] // one per run
enum Engine<'a> {
    Cpu(Model<'a>),
    #[cfg(feature = "candle")]
    Gpu(eostok_runtime::gpu::CandleModel, DeviceSpec),
}

impl Engine<'_> {
    fn cfg(&self) -> &Config {
        match self {
            Engine::Cpu(m) => &m.cfg,
            #[cfg(feature = "candle")]
            Engine::Gpu(m, _) => &m.cfg,
        }
    }

    /// Token ids per class; `on_step` after each step (CPU only: candle's
    /// sampler runs all steps in one call).
    fn sample(&self, classes: &[u32], steps: usize, opts: &GenerateOptions, on_step: impl FnMut(usize)) -> Result<Vec<Vec<u32>>> {
        match self {
            Engine::Cpu(m) => Ok(generate(m, classes, steps, opts, false, on_step)?.ids),
            #[cfg(feature = "candle")]
            Engine::Gpu(m, _) => Ok(m.generate(classes, steps, opts, false)?.ids),
        }
    }

    /// Images [B, C, H, W] in about [-1, 1], on the host.
    fn decode(&self, ids: &[Vec<u32>]) -> Result<Vec<f32>> {
        match self {
            Engine::Cpu(m) => m.decoder.decode(ids),
            #[cfg(feature = "candle")]
            Engine::Gpu(m, _) => m.decode(ids),
        }
    }

    fn describe(&self) -> String {
        match self {
            Engine::Cpu(_) => "cpu".to_string(),
            #[cfg(feature = "candle")]
            Engine::Gpu(m, spec) => format!("{spec}, {:.1} MiB of f32 weights", m.weight_bytes() as f64 / 1048576.0),
        }
    }
}

/// The candle device `--device` names, or None for the CPU path. A GPU this
/// build lacks is refused here, before the model is read (exit 2).
#[cfg(feature = "candle")]
fn open_device(spec: DeviceSpec) -> Result<Option<candle_core::Device>> {
    check_built_with(spec)?;
    if spec.is_cpu() {
        return Ok(None);
    }
    // candle's errors carry a backtrace when RUST_BACKTRACE is set: keep the first line.
    spec.open().map(Some).map_err(|e| bad_input(e.to_string().lines().next().unwrap_or_default()))
}

#[cfg(not(feature = "candle"))]
fn open_device(spec: DeviceSpec) -> Result<Option<std::convert::Infallible>> {
    check_built_with(spec)?;
    Ok(None)
}

/// Whether this binary has the GPU path for `spec` (its own `cuda`/`metal` feature).
/// Not `DeviceSpec::check_compiled_in`: that asks eostok-models' features, which
/// another crate in the same build (the trainer's `cuda`) can switch on for a
/// runtime built without its GPU path.
fn check_built_with(spec: DeviceSpec) -> Result<()> {
    let built = match spec {
        DeviceSpec::Cpu => true,
        DeviceSpec::Cuda(_) => cfg!(feature = "cuda"),
        DeviceSpec::Metal(_) => cfg!(feature = "metal"),
    };
    match spec.feature() {
        Some(f) if !built => Err(bad_input(format!(
            "--device {spec}: this eostok-run was built without the `{f}` feature; rebuild with --features {f} (cargo build --release -p eostok-runtime --features {f})"
        ))),
        _ => Ok(()),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    exit::run("eostok-run", || run(cli))
}

fn open_model(path: &Option<PathBuf>) -> Result<(GgufFile, String)> {
    match path {
        Some(p) => {
            let f = GgufFile::open(p).bad_input(p.display())?;
            Ok((f, p.display().to_string()))
        }
        None => match eostok_runtime::bundled::model() {
            Some(f) => Ok((f?, "<bundled default model>".to_string())),
            None => Err(bad_input("no MODEL given and this binary was built without the bundled model (feature `bundled-model`)")),
        },
    }
}

fn run(cli: Cli) -> Result<()> {
    if let Some(n) = cli.threads {
        if n == 0 {
            return Err(bad_input("--threads must be at least 1"));
        }
        rayon::ThreadPoolBuilder::new().num_threads(n).build_global().context("thread pool")?;
    }
    let spec = DeviceSpec::parse(&cli.device)?;
    let device = open_device(spec)?;
    let (file, name) = open_model(&cli.model)?;
    if cli.info {
        print!("{}", eostok_runtime::info::describe(&file, &name));
        return Ok(());
    }
    let engine = match device {
        None => Engine::Cpu(Model::load(&file).map_err(|e| bad_input(format!("{name}: {e}")))?),
        #[cfg(feature = "candle")]
        Some(dev) => Engine::Gpu(eostok_runtime::gpu::CandleModel::load(&file, &dev).map_err(|e| match eostok_models::exit::code_for(&e) {
            eostok_models::exit::BAD_INPUT => bad_input(format!("{name}: {e}")),
            _ => e.context(format!("{name}: loading onto {spec}")),
        })?, spec),
        #[cfg(not(feature = "candle"))]
        Some(never) => match never {},
    };
    let cfg = engine.cfg().clone();
    let l = cfg.latent_tokens;

    let k = cli.tokens.unwrap_or(l);
    if k == 0 || k > l {
        return Err(bad_input(format!("--tokens {k} is outside 1..={l}")));
    }
    if cli.num_images == 0 || cli.num_images > 4096 {
        return Err(bad_input(format!("--num-images {} is outside 1..=4096", cli.num_images)));
    }
    // Flags first, then the file's recommendation (validated when read), then the defaults.
    let recommended = sampling_of(&file).map_err(|e| bad_input(format!("{name}: {e}")))?;
    let choice = recommended.resolve(cli.temperature, cli.top_k, cli.top_p, cli.cfg_scale);
    let (sampling, cfg_scale) = (choice.sampling, choice.cfg_scale);
    if !(sampling.temperature >= 0.0 && sampling.top_p > 0.0 && sampling.top_p <= 1.0 && cfg_scale.is_finite()) {
        return Err(bad_input("--temperature must be >= 0, --top-p in (0, 1], --cfg finite"));
    }
    check_output(&cli.output)?;
    if let Some(path) = &cli.tokens_out {
        exit::check_output_file(path)?;
    }

    let t0 = Instant::now();
    let (classes, ids) = match &cli.from_tokens {
        Some(path) => {
            let read = read_tokens(path, l, cfg.codebook_size)?;
            check_memory(&engine, read.1.len(), false)?;
            read
        }
        None => {
            let classes: Vec<u32> = if cli.class == "all" {
                (0..cfg.num_classes as u32).collect()
            } else {
                vec![class_id(&cfg, &cli.class)?; cli.num_images]
            };
            check_memory(&engine, classes.len(), cfg_scale != 1.0)?;
            if !choice.from_file.is_empty() {
                // So that a user knows why the defaults were not used.
                eprintln!("{name}: sampling with the file's recommended {} (flags override)", choice.from_file.join(", "));
            }
            let opts = GenerateOptions { sampling, cfg_scale, seed: cli.seed };
            // Sampling stops at the last token that will be decoded.
            let needed = if cli.progressive { l } else { k };
            let bar = match engine {
                Engine::Cpu(_) => {
                    let bar = indicatif::ProgressBar::new(needed as u64);
                    bar.set_style(indicatif::ProgressStyle::with_template("sampling {bar:30} {pos}/{len} tokens {elapsed}").expect("template"));
                    bar
                }
                #[cfg(feature = "candle")]
                Engine::Gpu(..) => {
                    let bar = indicatif::ProgressBar::new_spinner();
                    bar.set_message(format!("sampling {needed} tokens on {spec}"));
                    bar.enable_steady_tick(std::time::Duration::from_millis(200));
                    bar
                }
            };
            let ids = engine.sample(&classes, needed, &opts, |_| bar.inc(1))?;
            bar.finish_and_clear();
            (classes, ids)
        }
    };
    let t_sample = t0.elapsed();
    if let Some(path) = &cli.tokens_out {
        write_tokens(path, &name, &classes, cli.seed, &ids)?;
    }

    let t1 = Instant::now();
    let prefix = |kk: usize| -> Vec<Vec<u32>> { ids.iter().map(|r| r[..kk.min(r.len())].to_vec()).collect() };
    let render = |kk: usize, out: &Path| -> Result<()> {
        let images = engine.decode(&prefix(kk))?;
        let (c, s) = (cfg.channels, cfg.image_size);
        let rgb: Vec<_> = (0..ids.len()).map(|i| to_rgb8(&images, i, c, s)).collect();
        let img = if rgb.len() == 1 { rgb.into_iter().next().expect("one image") } else { grid(&rgb) };
        save_png(&img, out)
    };
    render(k, &cli.output)?;
    let mut written = vec![cli.output.clone()];
    if cli.progressive {
        for kk in progressive_steps(l) {
            let out = suffixed(&cli.output, &format!("-k{kk:03}"));
            render(kk, &out)?;
            written.push(out);
        }
    }
    let t_decode = t1.elapsed();
    for w in &written {
        println!("{}", w.display());
    }
    if cli.verbose {
        let steps = ids.first().map(Vec::len).unwrap_or(0);
        eprintln!(
            "{name} on {}: {} image(s), {steps} tokens each: sampling {:.3} s ({:.1} tokens/s per image), decoding {:.1} ms",
            engine.describe(),
            ids.len(),
            t_sample.as_secs_f64(),
            steps as f64 / t_sample.as_secs_f64().max(1e-9),
            t_decode.as_secs_f64() * 1e3
        );
    }
    Ok(())
}

/// K = 1, 2, 4, ... and finally L.
pub fn progressive_steps(l: usize) -> Vec<usize> {
    let mut v: Vec<usize> = std::iter::successors(Some(1usize), |k| Some(k * 2)).take_while(|&k| k < l).collect();
    v.push(l);
    v
}

fn suffixed(path: &Path, suffix: &str) -> PathBuf {
    let stem = path.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_else(|| "out".into());
    let ext = path.extension().map(|e| e.to_string_lossy().to_string()).unwrap_or_else(|| "png".into());
    path.with_file_name(format!("{stem}{suffix}.{ext}"))
}

fn check_output(path: &Path) -> Result<()> {
    if path.is_dir() {
        return Err(bad_input(format!("{}: is a directory; give a file name such as out.png", path.display())));
    }
    // Fail now rather than after sampling.
    exit::check_output_file(path)
}

/// Refuse a batch whose KV cache and activations cannot fit: bytes needed
/// per image from the model's sizes, against the memory available (the
/// smaller of MemAvailable and the address-space limit, `ulimit -v`). CPU
/// path only: on a GPU the KV cache lives in device memory, which candle does
/// not report; decoding goes in chunks of `gpu::DECODE_CHUNK` images, and a
/// batch too large for the device fails with candle's out-of-memory error.
// One arm without the `candle` feature: the lint's `let` would not compile with it.
#[allow(clippy::infallible_destructuring_match)]
fn check_memory(engine: &Engine, images: usize, guided: bool) -> Result<()> {
    let model = match engine {
        Engine::Cpu(m) => m,
        #[cfg(feature = "candle")]
        Engine::Gpu(..) => return Ok(()),
    };
    let per_image = memory_per_image(&model.cfg, guided);
    let need = per_image.saturating_mul(images as u64).saturating_add(64 << 20);
    if let Some(avail) = available_memory() {
        if need > avail {
            let mib = |b: u64| b / (1 << 20);
            return Err(bad_input(format!(
                "{images} image(s) need about {} MiB ({} MiB each: KV cache and activations), more than the {} MiB available; ask for fewer (--num-images)",
                mib(need),
                mib(per_image).max(1),
                mib(avail)
            )));
        }
    }
    Ok(())
}

/// Bytes one image needs while sampling and decoding (f32 everywhere).
fn memory_per_image(cfg: &eostok_models::Config, guided: bool) -> u64 {
    let f = 4u64;
    let (l, ar, dec) = (cfg.latent_tokens as u64, &cfg.ar, &cfg.decoder);
    let rows = if guided { 2 } else { 1 };
    // KV cache (keys and values, every layer) + modulation + step activations.
    let sampling = rows * f * (2 * ar.depth as u64 * l * ar.width as u64 + 6 * ar.depth as u64 * ar.width as u64 + 8 * ar.width as u64 + 2 * ar.ffn_hidden as u64 + cfg.codebook_size as u64);
    // Decoder: every token of the image through one block at a time.
    let s = l + cfg.num_patches() as u64;
    let decoding = f * (s * (8 * dec.width as u64 + dec.mlp_hidden() as u64) + 2 * cfg.patch_dim() as u64 * cfg.num_patches() as u64);
    sampling.saturating_add(decoding)
}

/// min(MemAvailable, address-space limit − current size), Linux only.
fn available_memory() -> Option<u64> {
    let field = |text: &str, key: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.starts_with(key))?;
        line[key.len()..].split_whitespace().next()?.parse().ok()
    };
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok();
    let mut avail = meminfo.as_deref().and_then(|m| field(m, "MemAvailable:")).map(|kib| kib * 1024);
    let limit = std::fs::read_to_string("/proc/self/limits").ok().and_then(|t| field(&t, "Max address space"));
    let used = std::fs::read_to_string("/proc/self/status").ok().and_then(|t| field(&t, "VmSize:")).map(|kib| kib * 1024);
    if let (Some(limit), Some(used)) = (limit, used) {
        let left = limit.saturating_sub(used);
        avail = Some(avail.map_or(left, |a| a.min(left)));
    }
    avail
}

fn write_tokens(path: &Path, model: &str, classes: &[u32], seed: u64, ids: &[Vec<u32>]) -> Result<()> {
    let v = serde_json::json!({ "model": model, "classes": classes, "seed": seed, "tokens": ids });
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_string(&v)?).map_err(|e| bad_input(format!("{}: cannot write: {e}", path.display())))?;
    std::fs::rename(&tmp, path).map_err(|e| bad_input(format!("{}: cannot write: {e}", path.display())))
}

fn read_tokens(path: &Path, l: usize, k: usize) -> Result<(Vec<u32>, Vec<Vec<u32>>)> {
    let text = std::fs::read_to_string(path).bad_input(path.display())?;
    let v: serde_json::Value = serde_json::from_str(&text).bad_input(path.display())?;
    let rows = v.get("tokens").and_then(|t| t.as_array()).ok_or_else(|| bad_input(format!("{}: no \"tokens\" array", path.display())))?;
    let mut ids = Vec::with_capacity(rows.len());
    for (i, r) in rows.iter().enumerate() {
        let r = r.as_array().ok_or_else(|| bad_input(format!("{}: tokens[{i}] is not an array", path.display())))?;
        let row: Vec<u32> = r
            .iter()
            .map(|x| x.as_u64().filter(|&t| (t as usize) < k).map(|t| t as u32))
            .collect::<Option<_>>()
            .ok_or_else(|| bad_input(format!("{}: tokens[{i}] holds a value that is not a code id below {k}", path.display())))?;
        if row.is_empty() || row.len() > l {
            return Err(bad_input(format!("{}: tokens[{i}] has {} ids; expected 1..={l}", path.display(), row.len())));
        }
        ids.push(row);
    }
    if ids.is_empty() || ids.iter().any(|r| r.len() != ids[0].len()) {
        return Err(bad_input(format!("{}: needs at least one token row, all of the same length", path.display())));
    }
    let classes = v.get("classes").and_then(|c| c.as_array()).map(|c| c.iter().filter_map(|x| x.as_u64().map(|x| x as u32)).collect()).unwrap_or_default();
    Ok((classes, ids))
}

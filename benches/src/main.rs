//! eostok-bench: one binary, a subcommand per benchmark. Each prints a table
//! (and one JSON object per row with --json). Later issues add kernels,
//! decode, image, memory, vs-llama, vs-candle, train and precision.

use anyhow::Result;
use candle_core::{DType, Device, Tensor};
use clap::{Parser, Subcommand};
use eostok_models::exit;
use eostok_models::nn::Eostok;
use eostok_models::Config;
use std::process::ExitCode;
use std::time::Instant;

#[derive(Parser)]
#[command(name = "eostok-bench", version, about = "EOSTok benchmarks: each subcommand prints a table")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Forward-pass time of the candle reference model (encoder, decoder, AR) on CPU.
    Forward {
        /// Preset or JSON config.
        #[arg(long, default_value = "tiny")]
        config: String,
        #[arg(long, default_value_t = 8)]
        batch: usize,
        /// Timed repetitions (after one warm-up).
        #[arg(long, default_value_t = 5)]
        reps: usize,
        /// One JSON object per row instead of a table.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    exit::run("eostok-bench", || match cli.command {
        Command::Forward { config, batch, reps, json } => forward(&config, batch, reps, json),
    })
}

/// Median seconds of `reps` runs of `f` after one warm-up.
fn time(reps: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?;
    let mut t: Vec<f64> = (0..reps.max(1))
        .map(|_| {
            let s = Instant::now();
            f().map(|_| s.elapsed().as_secs_f64())
        })
        .collect::<Result<_>>()?;
    t.sort_by(f64::total_cmp);
    Ok(t[t.len() / 2])
}

fn forward(config: &str, batch: usize, reps: usize, json: bool) -> Result<()> {
    let cfg = Config::load(config).map_err(|e| exit::bad_input(format!("--config: {e}")))?;
    let dev = Device::Cpu;
    let (m, _) = Eostok::random(&cfg, 0, DType::F32, &dev)?;
    let x = Tensor::rand(-1f32, 1.0, (batch, cfg.channels, cfg.image_size, cfg.image_size), &dev)?;
    let enc = m.encoder.forward(&x)?;
    let q = m.ibq.forward(&enc.z)?;
    let classes = Tensor::new(vec![0u32; batch].as_slice(), &dev)?;
    let rows = [
        ("encoder+ibq", time(reps, || m.ibq.forward(&m.encoder.forward(&x)?.z).map(|_| ()).map_err(Into::into))?),
        ("decoder", time(reps, || m.decoder.forward(&q.z_q, None).map(|_| ()).map_err(Into::into))?),
        ("ar (teacher-forced)", time(reps, || m.ar.forward_soft(&q.ind, &classes).map(|_| ()).map_err(Into::into))?),
    ];
    if !json {
        println!("config {} batch {batch} (candle CPU, f32, median of {reps})", cfg.name);
        println!("{:<22} {:>10} {:>12}", "part", "ms", "images/s");
    }
    for (part, s) in rows {
        if json {
            println!("{}", serde_json::json!({"bench": "forward", "config": cfg.name, "batch": batch, "part": part, "ms": s * 1e3, "images_per_s": batch as f64 / s}));
        } else {
            println!("{:<22} {:>10.2} {:>12.1}", part, s * 1e3, batch as f64 / s);
        }
    }
    Ok(())
}

//! eostok-bench: one binary, a subcommand per benchmark. Each prints a table
//! (and one JSON object per row with --json): the machine's limits
//! (`roofline`), every kernel on the presets' shapes (`kernels`), AR decoding
//! against the bandwidth bound (`decode`), time per image (`image`), memory
//! (`memory`), and the same work through llama.cpp and candle (`vs-llama`,
//! `vs-candle`), and sample quality per quantization precision (`precision`).
//! Generated model files go to `bench-data/` (git-ignored).

mod chart;
mod decode;
mod gen;
mod kernels;
mod precision;
mod roofline;
mod train;
mod util;
mod vs;

use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor};
use clap::{Parser, Subcommand};
use eostok_models::exit;
use eostok_models::nn::Eostok;
use eostok_models::Config;
use std::process::ExitCode;
use std::time::Instant;

#[derive(Parser)]
#[command(
    name = "eostok-bench",
    version,
    about = "EOSTok benchmarks: each subcommand prints a table"
)]
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
    /// Machine limits: streaming-read bandwidth per thread count (1 GiB buffer), peak f32
    /// FMA (AVX-512 where our GEMM uses it, else AVX2) and int8 dot (AVX-512 VNNI where
    /// our int8 GEMM uses it, else AVX-VNNI or maddubs) throughput.
    Roofline {
        /// Thread counts (default 1..=nproc).
        #[arg(long, value_delimiter = ',')]
        threads: Vec<usize>,
        /// Buffer sizes in MiB: the machine's L3 may be large (check lscpu), so the last
        /// must be well beyond it to measure DRAM; the others show what model-sized working
        /// sets get.
        #[arg(long, value_delimiter = ',', default_value = "16,64,256,2048")]
        sizes_mib: Vec<usize>,
        /// Bandwidth reads per thread count and size (the table shows best and spread).
        #[arg(long, default_value_t = 5)]
        reps: usize,
        #[arg(long)]
        json: bool,
    },
    /// Every runtime kernel (f32 f16 q8_0 q4_0 q4_1 q4_k q6_k; matrix×vector and
    /// matrix×matrix) on the presets' real shapes, against the roofline and candle.
    Kernels {
        #[arg(long, value_delimiter = ',', default_value = "B,L")]
        configs: Vec<String>,
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "f32,f16,q8_0,q4_0,q4_1,q4_k,q6_k"
        )]
        types: Vec<String>,
        #[arg(long, default_value_t = 2)]
        threads: usize,
        /// Timed rounds per shape (median, min–max).
        #[arg(long, default_value_t = 5)]
        reps: usize,
        /// Skip candle's matmul on the same shapes.
        #[arg(long)]
        no_candle: bool,
        /// MiB of weight copies the matrix × vector runs cycle through: the default is far
        /// beyond L2 (weights from L3/memory, as in decoding); 1 keeps one copy hot in L2,
        /// which shows the kernel's compute ceiling.
        #[arg(long, default_value_t = 384, value_parser = clap::value_parser!(u64).range(1..=65536))]
        cycle_mib: u64,
        #[arg(long)]
        json: bool,
    },
    /// AR tokens/s of a random-weight model against the bandwidth bound
    /// (weight bytes per token / measured bandwidth, interleaved rounds).
    Decode {
        #[arg(long, default_value = "B")]
        config: String,
        #[arg(long = "type", default_value = "q4_0")]
        ty: String,
        #[arg(long, default_value_t = 2)]
        threads: usize,
        /// Tokens per round (at most the model's latent tokens).
        #[arg(long, default_value_t = 256)]
        tokens: usize,
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        #[arg(long)]
        json: bool,
    },
    /// Time per image end to end (AR over all latent tokens + decoder) and images/s
    /// with batching.
    Image {
        #[arg(long, value_delimiter = ',', default_value = "S,B,L")]
        configs: Vec<String>,
        #[arg(long, value_delimiter = ',', default_value = "f16,q8_0,q4_0")]
        types: Vec<String>,
        /// Images per batch (their AR rows share every weight read).
        #[arg(long, value_delimiter = ',', default_value = "1,4")]
        batches: Vec<usize>,
        #[arg(long, default_value_t = 2)]
        threads: usize,
        #[arg(long, default_value_t = 1)]
        rounds: usize,
        #[arg(long)]
        json: bool,
    },
    /// File size, peak RSS, private vs file-backed memory, KV cache, open→first token
    /// (each model in a fresh child process).
    Memory {
        #[arg(long, value_delimiter = ',', default_value = "B")]
        configs: Vec<String>,
        #[arg(long, value_delimiter = ',', default_value = "f16,q8_0,q4_0")]
        types: Vec<String>,
        #[arg(long, default_value_t = 2)]
        threads: usize,
        #[arg(long)]
        json: bool,
    },
    #[command(hide = true)]
    MemoryChild {
        #[arg(long)]
        config: String,
        #[arg(long = "type")]
        ty: String,
        #[arg(long, default_value_t = 2)]
        threads: usize,
    },
    /// The same Llama GGUF file (our presets' AR sizes, random weights) through llama.cpp's
    /// llama-bench (`LLAMA_BENCH=path`), candle's quantized_llama and us, interleaved.
    VsLlama {
        #[arg(long, value_delimiter = ',', default_value = "B,L")]
        configs: Vec<String>,
        #[arg(long, value_delimiter = ',', default_value = "f16,q8_0,q4_0")]
        types: Vec<String>,
        #[arg(long, default_value_t = 2)]
        threads: usize,
        /// Tokens generated per run (llama-bench -n).
        #[arg(long, default_value_t = 128)]
        tokens: usize,
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Skip candle's quantized_llama.
        #[arg(long)]
        no_candle: bool,
        /// Write a PNG chart of tokens/s here.
        #[arg(long)]
        chart: Option<std::path::PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// The EOSTok AR model in candle (f32 reference `nn::ArTransformer`; QMatMul for
    /// quantized files) against our runtime on the same file and threads.
    VsCandle {
        #[arg(long, value_delimiter = ',', default_value = "B")]
        configs: Vec<String>,
        #[arg(long, value_delimiter = ',', default_value = "f32,q8_0,q4_0")]
        types: Vec<String>,
        #[arg(long, default_value_t = 2)]
        threads: usize,
        #[arg(long, default_value_t = 64)]
        tokens: usize,
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        #[arg(long)]
        json: bool,
    },
    /// Training steps/s of the joint E2E step (tiny, small; batch 64; CPU) against the same
    /// step in PyTorch, the two-stage phases, NTP-only and EOSTOK_FUSED=0 (benches/TRAINING.md).
    Train(train::TrainArgs),
    /// Sample quality against quantization precision: a checkpoint's EMA weights at each
    /// type, tokens/s, token agreement and same-token PSNR against f32, FD_effnet-lite0 and
    /// FD_dinov2 against real images (not FID), bits per weight and file size
    /// (--write-docs: docs/precision.md and .png).
    Precision(precision::PrecisionArgs),
    /// Draws the `vs-llama` chart from a saved `vs-llama` table (text as printed), e.g. one
    /// measured on a machine without fonts (`scripts/device-bench`).
    #[command(hide = true)]
    Chart {
        /// The saved table.
        table: std::path::PathBuf,
        #[arg(short, long)]
        output: std::path::PathBuf,
    },
    #[command(hide = true)]
    TrainChild(train::ChildArgs),
}

/// One global rayon pool of `threads` (ours and candle's quantized matmul), and candle's
/// gemm told the same through RAYON_NUM_THREADS.
fn set_threads(threads: usize) -> Result<()> {
    let t = threads.max(1);
    std::env::set_var("RAYON_NUM_THREADS", t.to_string());
    rayon::ThreadPoolBuilder::new()
        .num_threads(t)
        .build_global()
        .map_err(|e| anyhow::anyhow!("thread pool: {e}"))
}

fn preamble(json: bool, threads: usize) {
    if !json {
        let (model, flags) = util::cpu_description();
        println!(
            "# {model} [{}], {} cores, {threads} threads, kernels: q4_0 {}, f16 {}",
            flags.join(" "),
            util::nproc(),
            eostok_runtime::kernels::variant(eostok_runtime::quant::GgmlType::Q4_0),
            eostok_runtime::kernels::variant(eostok_runtime::quant::GgmlType::F16)
        );
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    exit::run("eostok-bench", || match cli.command {
        Command::Forward {
            config,
            batch,
            reps,
            json,
        } => forward(&config, batch, reps, json),
        Command::Roofline {
            threads,
            sizes_mib,
            reps,
            json,
        } => roofline_cmd(threads, sizes_mib, reps, json),
        Command::Kernels {
            configs,
            types,
            threads,
            reps,
            no_candle,
            cycle_mib,
            json,
        } => {
            set_threads(threads)?;
            preamble(json, threads);
            let lim = roofline::limits(threads)?;
            if !json {
                println!("# roofline at {threads} threads: {:.1} GB/s, {:.1} GFLOP/s f32 FMA, {:.1} GOPS int8", lim.bandwidth_gbs, lim.fma_gflops, lim.int8_gops);
            }
            kernels::run(&configs, &types, reps, !no_candle, (cycle_mib as usize) << 20, &lim, json)
        }
        Command::Decode {
            config,
            ty,
            threads,
            tokens,
            rounds,
            json,
        } => {
            set_threads(threads)?;
            preamble(json, threads);
            decode::decode(&config, &ty, threads, tokens, rounds, json)
        }
        Command::Image {
            configs,
            types,
            batches,
            threads,
            rounds,
            json,
        } => {
            set_threads(threads)?;
            preamble(json, threads);
            decode::image(&configs, &types, &batches, rounds, json)
        }
        Command::Memory {
            configs,
            types,
            threads,
            json,
        } => {
            preamble(json, threads);
            decode::memory(&configs, &types, threads, json)
        }
        Command::MemoryChild {
            config,
            ty,
            threads,
        } => {
            set_threads(threads)?;
            decode::memory_child(&config, &ty)
        }
        Command::VsLlama {
            configs,
            types,
            threads,
            tokens,
            rounds,
            no_candle,
            chart,
            json,
        } => {
            set_threads(threads)?;
            preamble(json, threads);
            vs::vs_llama(
                &configs,
                &types,
                threads,
                tokens,
                rounds,
                !no_candle,
                chart.as_deref(),
                json,
            )
            .map(|_| ())
        }
        Command::VsCandle {
            configs,
            types,
            threads,
            tokens,
            rounds,
            json,
        } => {
            set_threads(threads)?;
            preamble(json, threads);
            vs::vs_candle(&configs, &types, threads, tokens, rounds, json)
        }
        Command::Train(a) => train::run(&a),
        Command::Precision(a) => {
            set_threads(a.threads)?;
            precision::run(&a)
        }
        Command::Chart { table, output } => {
            let text = std::fs::read_to_string(&table)
                .with_context(|| format!("{}: cannot read", table.display()))?;
            let (rows, threads) = chart::rows_from_table(&text)
                .with_context(|| format!("{}: not a vs-llama table", table.display()))?;
            chart::tokens_chart(&output, &rows, threads)?;
            eprintln!("chart: {}", output.display());
            Ok(())
        }
        Command::TrainChild(a) => {
            let threads = std::env::var("RAYON_NUM_THREADS")
                .ok()
                .and_then(|t| t.parse().ok())
                .unwrap_or(2);
            set_threads(threads)?;
            train::child(&a)
        }
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
    let x = Tensor::rand(
        -1f32,
        1.0,
        (batch, cfg.channels, cfg.image_size, cfg.image_size),
        &dev,
    )?;
    let enc = m.encoder.forward(&x)?;
    let q = m.ibq.forward(&enc.z)?;
    let classes = Tensor::new(vec![0u32; batch].as_slice(), &dev)?;
    let rows = [
        (
            "encoder+ibq",
            time(reps, || {
                m.ibq
                    .forward(&m.encoder.forward(&x)?.z)
                    .map(|_| ())
                    .map_err(Into::into)
            })?,
        ),
        (
            "decoder",
            time(reps, || {
                m.decoder
                    .forward(&q.z_q, None)
                    .map(|_| ())
                    .map_err(Into::into)
            })?,
        ),
        (
            "ar (teacher-forced)",
            time(reps, || {
                m.ar.forward_soft(&q.ind, &classes)
                    .map(|_| ())
                    .map_err(Into::into)
            })?,
        ),
    ];
    if !json {
        println!(
            "config {} batch {batch} (candle CPU, f32, median of {reps})",
            cfg.name
        );
        println!("{:<22} {:>10} {:>12}", "part", "ms", "images/s");
    }
    for (part, s) in rows {
        if json {
            println!(
                "{}",
                serde_json::json!({"bench": "forward", "config": cfg.name, "batch": batch, "part": part, "ms": s * 1e3, "images_per_s": batch as f64 / s})
            );
        } else {
            println!("{:<22} {:>10.2} {:>12.1}", part, s * 1e3, batch as f64 / s);
        }
    }
    Ok(())
}

fn roofline_cmd(threads: Vec<usize>, sizes: Vec<usize>, reps: usize, json: bool) -> Result<()> {
    let threads = if threads.is_empty() {
        (1..=util::nproc()).collect()
    } else {
        threads
    };
    preamble(json, *threads.iter().max().unwrap_or(&1));
    let mut t = util::Table::new(
        json,
        &[
            ("threads", 7),
            ("buffer MiB", 10),
            ("read GB/s best", 14),
            ("read GB/s median (min–max)", 26),
            ("f32 FMA GFLOP/s", 15),
            ("FMA via", 7),
            ("int8 GOPS", 9),
            ("int8 via", 12),
        ],
    );
    let peaks: Vec<(f64, f64)> = threads
        .iter()
        .map(|&n| Ok((roofline::peak_fma(n)?, roofline::peak_int8(n)?)))
        .collect::<Result<_>>()?;
    let via = if eostok_runtime::kernels::int8_gemm_available() {
        "avx512-vnni"
    } else if roofline::has_vnni() {
        "avx-vnni"
    } else {
        "maddubs"
    };
    let fma_via = if eostok_runtime::kernels::gemm_uses_avx512() { "avx512" } else { "avx2" };
    for &mib in &sizes {
        let buf = roofline::Buffer::new(mib << 20);
        // Interleaved rounds: bandwidth on this machine moves from run to run.
        let mut bw: Vec<Vec<f64>> = vec![vec![]; threads.len()];
        for _ in 0..reps.max(1) {
            for (i, &n) in threads.iter().enumerate() {
                bw[i].push(roofline::bandwidth_once(&buf, n)?);
            }
        }
        for (i, &n) in threads.iter().enumerate() {
            let s = util::Stats::of(&bw[i]);
            let (fma, int8) = peaks[i];
            t.row(
                &[n.to_string(), mib.to_string(), format!("{:.1}", s.max), s.show(1), format!("{fma:.1}"), fma_via.into(), format!("{int8:.1}"), via.into()],
                serde_json::json!({"bench": "roofline", "threads": n, "buffer_bytes": mib << 20, "read_gb_per_s": s.json(), "fma_gflop_per_s": fma, "fma_instructions": fma_via, "int8_gop_per_s": int8, "int8_instructions": via}),
            );
        }
    }
    Ok(())
}

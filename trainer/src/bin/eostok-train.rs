//! eostok-train: describe configs, initialise checkpoints (training: `fit`,
//! coming with the trainer issue).

use anyhow::Result;
use candle_core::{DType, Device, Tensor};
use clap::{Parser, Subcommand};
use eostok_models::exit::{self, BadInputExt};
use eostok_models::nn::Eostok;
use eostok_models::{param_counts, Config};
use eostok_train::checkpoint;
use std::collections::HashMap;
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    exit::run("eostok-train", || match cli.command {
        Command::Describe { config } => describe(&config),
        Command::Init { config, out, seed, force } => init(&config, &out, seed, force),
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

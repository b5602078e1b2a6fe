//! eostok-quantize CKPT_DIR|MODEL.gguf -o OUT.gguf --type TYPE

use anyhow::Result;
use clap::Parser;
use eostok_models::checkpoint::WeightSet;
use eostok_models::exit;
use eostok_models::gguf_schema::SamplingRecommendation;
use eostok_quantize::{quantize_with_sampling, Options, QuantType};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "eostok-quantize",
    version,
    about = "Convert an EOSTok checkpoint (or GGUF) into a standard GGUF file",
    long_about = "Convert an EOSTok checkpoint directory (config.json + model/ema.safetensors) or an existing GGUF into a standard GGUF v3 file (ggml block layouts, alignment 32). Vectors (norms, biases, positions, class embeddings, AdaLN) stay f32; the codebook and AR input embedding are f16; matrices take --type (k-quants only where rows are a multiple of 256, else the nearest legacy type). The exported tensors are what generation needs: codebook, decoder, AR model (and the encoder with --with-encoder)."
)]
struct Cli {
    /// Checkpoint directory or GGUF file.
    input: PathBuf,
    /// Output GGUF file (written to a temporary file, then renamed).
    #[arg(short, long)]
    output: PathBuf,
    /// Type of the weight matrices.
    #[arg(long = "type", value_enum, default_value = "q8_0")]
    ty: QuantType,
    /// Which weights of a checkpoint to export.
    #[arg(long, value_parser = ["ema", "raw"], default_value = "ema")]
    weights: String,
    /// Keep tensors whose names match at f32 (`*` wildcard; plain text matches a substring).
    #[arg(long, num_args = 1..)]
    keep_f32: Vec<String>,
    /// Allow quantizing an already quantized tensor to another type.
    #[arg(long)]
    allow_requantize: bool,
    /// Also export the encoder (to tokenize images with the GGUF).
    #[arg(long)]
    with_encoder: bool,
    /// Recommended sampling to store in the file (eostok.sampling.*), used by eostok-run and eostok-eval where no flag is given: comma-separated KEY=VALUE of temperature (>= 0), top_k, top_p (in (0, 1]), cfg (>= 0), e.g. `cfg=1.5,top_k=50`; `none` stores none. Default: none from a checkpoint, a GGUF input's own.
    #[arg(long, value_name = "KEY=VALUE,...")]
    sampling: Option<String>,
    /// Print the summary as JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// No progress bar.
    #[arg(short, long)]
    quiet: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    exit::run("eostok-quantize", || run(cli))
}

fn run(cli: Cli) -> Result<()> {
    let sampling = match &cli.sampling {
        Some(spec) => Some(SamplingRecommendation::parse(spec).map_err(|e| exit::bad_input(format!("--sampling {spec}: {e}")))?),
        None => None,
    };
    if !cli.input.exists() {
        return Err(exit::bad_input(format!("{}: no such checkpoint directory or GGUF file", cli.input.display())));
    }
    // An unwritable output is the user's to fix (exit 2), and is found before any work.
    exit::check_output_file(&cli.output)?;
    let opts = Options {
        ty: cli.ty,
        weights: if cli.weights == "raw" { WeightSet::Raw } else { WeightSet::Ema },
        keep_f32: cli.keep_f32,
        allow_requantize: cli.allow_requantize,
        with_encoder: cli.with_encoder,
        progress: !cli.quiet,
    };
    let report = quantize_with_sampling(&cli.input, &cli.output, &opts, sampling.as_ref())?;
    if cli.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", report.table());
    }
    Ok(())
}

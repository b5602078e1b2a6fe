//! eostok-quantize: checkpoint directory (or GGUF) -> standard GGUF v3 at
//! f32, f16, q8_0, q4_0, q4_1, q4_k, q6_k or `mixed`.
//!
//! Reading goes one tensor at a time (an mmap'd safetensors or GGUF), the
//! quantization maths is candle's (`candle_core::quantized`, ggml's block
//! formats), the writer is ours (streaming, GGUF v3, alignment 32), and every
//! written tensor is dequantized again with the runtime's code to report its
//! error against f32.

pub mod policy;
pub mod source;
pub mod writer;

use anyhow::{Context, Result};
use candle_core::quantized::{GgmlDType, QTensor};
use eostok_models::checkpoint::WeightSet;
use eostok_models::exit::bad_input;
use eostok_models::gguf_schema::{self, MetaValue, SamplingRecommendation};
use eostok_runtime::quant::{dequantize_row, GgmlType};
pub use policy::QuantType;
use serde::Serialize;
use source::Source;
use std::path::Path;
use writer::{GgufWriter, TensorEntry};

#[derive(Debug, Clone)]
pub struct Options {
    pub ty: QuantType,
    pub weights: WeightSet,
    pub keep_f32: Vec<String>,
    pub allow_requantize: bool,
    pub with_encoder: bool,
    pub progress: bool,
}

/// One row of the summary table.
#[derive(Debug, Clone, Serialize)]
pub struct TensorReport {
    pub name: String,
    pub shape: Vec<usize>,
    #[serde(rename = "type")]
    pub ty: String,
    pub bytes: usize,
    pub rmse: f64,
    pub max_abs_err: f64,
    pub note: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub output: String,
    pub quant_type: String,
    pub file_bytes: u64,
    /// The same tensors at f32.
    pub f32_bytes: u64,
    pub tensors: Vec<TensorReport>,
}

fn candle_type(t: GgmlType) -> Result<GgmlDType> {
    Ok(match t {
        GgmlType::F32 => GgmlDType::F32,
        GgmlType::F16 => GgmlDType::F16,
        GgmlType::Q8_0 => GgmlDType::Q8_0,
        GgmlType::Q4_0 => GgmlDType::Q4_0,
        GgmlType::Q4_1 => GgmlDType::Q4_1,
        GgmlType::Q4_K => GgmlDType::Q4K,
        GgmlType::Q6_K => GgmlDType::Q6K,
        other => anyhow::bail!("no quantizer for {}", other.name()),
    })
}

fn is_quantized(t: GgmlType) -> bool {
    !matches!(t, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16)
}

/// Quantize `input` (checkpoint dir or GGUF) into `output`.
pub fn quantize(input: &Path, output: &Path, opts: &Options) -> Result<Report> {
    quantize_with_sampling(input, output, opts, None)
}

/// [`quantize`], writing `sampling` as the file's recommended sampling
/// (`eostok.sampling.*`; an empty one writes no key). `None` keeps what a
/// GGUF source recommends; a checkpoint recommends nothing.
pub fn quantize_with_sampling(input: &Path, output: &Path, opts: &Options, sampling: Option<&SamplingRecommendation>) -> Result<Report> {
    let src = Source::open(input, opts.weights)?;
    let sampling = match sampling {
        Some(s) => {
            s.validate().map_err(|e| bad_input(format!("--sampling: {e}")))?;
            *s
        }
        None => src.sampling()?,
    };
    let cfg = src.config().clone();
    if output.is_dir() {
        return Err(bad_input(format!("{}: is a directory; give a file name such as model.gguf", output.display())));
    }
    let all = policy::exported(eostok_models::tensor_specs(&cfg), opts.with_encoder);
    // A GGUF source may lack the encoder: export what it has.
    let specs: Vec<_> = all.into_iter().filter(|s| !matches!(src, Source::Gguf { .. }) || s.group != eostok_models::names::Group::Encoder || src.has(&s.name)).collect();
    let plan = policy::plan(&cfg, &specs, opts.ty, &opts.keep_f32);

    let mut meta = gguf_schema::config_to_metadata(&cfg);
    meta.push((gguf_schema::GENERAL_FILE_TYPE.into(), MetaValue::U32(opts.ty.file_type())));
    meta.push((gguf_schema::GENERAL_QUANTIZATION_VERSION.into(), MetaValue::U32(gguf_schema::QUANTIZATION_VERSION)));
    meta.push((gguf_schema::GENERAL_ALIGNMENT.into(), MetaValue::U32(gguf_schema::ALIGNMENT)));
    meta.push((gguf_schema::WEIGHTS.into(), MetaValue::Str(match opts.weights { WeightSet::Ema => "ema", WeightSet::Raw => "raw" }.into())));
    let fallbacks = plan.iter().filter(|p| p.note.is_some()).count();
    meta.push((
        gguf_schema::QUANT_POLICY.into(),
        MetaValue::Str(format!(
            "{}: matrices {}, tables {}, vectors f32; {fallbacks} tensor(s) with another type{}",
            opts.ty.name(),
            opts.ty.name(),
            if opts.ty == QuantType::F32 { "f32" } else { "f16" },
            if opts.ty == QuantType::Mixed { "; mixed = first/last AR block and dec.pixel_out at q8_0, other matrices q4_0" } else { "" }
        )),
    ));
    meta.extend(src.provenance());
    meta.extend(sampling.to_metadata());

    let entries: Vec<TensorEntry> = plan.iter().map(|p| TensorEntry::new(&p.spec.name, &p.spec.shape, p.ty)).collect();
    let mut w = GgufWriter::create(output, &meta, entries)?;
    let bar = progress_bar(opts.progress, plan.len() as u64);
    let mut reports = Vec::with_capacity(plan.len());
    let mut f32_bytes = 0u64;
    for p in &plan {
        bar.set_message(p.spec.name.clone());
        let loaded = src.load(&p.spec)?;
        if is_quantized(loaded.stored) && loaded.stored != p.ty && !opts.allow_requantize {
            return Err(bad_input(format!(
                "{}: tensor '{}' is already {}; requantizing it to {} loses precision twice (use --allow-requantize)",
                src.describe(),
                p.spec.name,
                loaded.stored.name(),
                p.ty.name()
            )));
        }
        let q = QTensor::quantize(&loaded.values, candle_type(p.ty)?).with_context(|| format!("tensor '{}'", p.spec.name))?;
        let data = q.data()?;
        w.write_tensor(&data)?;
        // Error against f32, dequantized by the runtime's own code.
        let orig: Vec<f32> = loaded.values.flatten_all()?.to_vec1()?;
        let mut back = vec![0f32; orig.len()];
        dequantize_row(p.ty, &data, &mut back).with_context(|| format!("tensor '{}': dequantize", p.spec.name))?;
        let (mut se, mut max) = (0f64, 0f64);
        for (a, b) in orig.iter().zip(&back) {
            let e = (*a as f64 - *b as f64).abs();
            se += e * e;
            max = max.max(e);
        }
        f32_bytes += 4 * orig.len() as u64;
        reports.push(TensorReport {
            name: p.spec.name.clone(),
            shape: p.spec.shape.clone(),
            ty: p.ty.name().to_string(),
            bytes: data.len(),
            rmse: (se / orig.len().max(1) as f64).sqrt(),
            max_abs_err: max,
            note: p.note.clone(),
        });
        bar.inc(1);
    }
    bar.finish_and_clear();
    let file_bytes = w.finish()?;
    Ok(Report { output: output.display().to_string(), quant_type: opts.ty.name().to_string(), file_bytes, f32_bytes, tensors: reports })
}

fn progress_bar(on: bool, n: u64) -> indicatif::ProgressBar {
    if !on {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(n);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} {msg}")
            .expect("valid template"),
    );
    bar
}

impl Report {
    /// The summary table printed at the end of a run.
    pub fn table(&self) -> String {
        let mut s = format!("{:<34} {:>14} {:>6} {:>10} {:>10} {:>10}  note\n", "tensor", "shape", "type", "bytes", "rmse", "max|err|");
        for t in &self.tensors {
            s += &format!(
                "{:<34} {:>14} {:>6} {:>10} {:>10.2e} {:>10.2e}  {}\n",
                t.name,
                format!("{:?}", t.shape),
                t.ty,
                t.bytes,
                t.rmse,
                t.max_abs_err,
                t.note.as_deref().unwrap_or("")
            );
        }
        s += &format!(
            "{}: {} ({} bytes = {:.1} MiB, {:.1}% of f32 {:.1} MiB)\n",
            self.output,
            self.quant_type,
            self.file_bytes,
            self.file_bytes as f64 / 1048576.0,
            100.0 * self.file_bytes as f64 / self.f32_bytes.max(1) as f64,
            self.f32_bytes as f64 / 1048576.0
        );
        s
    }
}

//! Random-weight GGUF files for the benchmarks, cached under the data folder:
//! EOSTok models of any preset and type (the quantizer's precision policy and
//! streaming writer, as `eostok-quantize` writes them), and plain Llama files
//! with the AR dimensions of a preset, readable by llama.cpp (a small SPM
//! vocabulary of the preset's codebook size), candle and us.

use anyhow::{bail, Context, Result};
use eostok_models::gguf_schema::{self, MetaValue};
use eostok_models::Config;
use eostok_quantize::policy::{self, QuantType};
use eostok_quantize::writer::{GgufWriter, TensorEntry};
use eostok_runtime::quant::{quantize_row, GgmlType};
use rayon::prelude::*;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

pub fn quant_type(name: &str) -> Result<QuantType> {
    Ok(match name {
        "f32" => QuantType::F32,
        "f16" => QuantType::F16,
        "q8_0" => QuantType::Q8_0,
        "q4_0" => QuantType::Q4_0,
        "q4_1" => QuantType::Q4_1,
        "q4_k" => QuantType::Q4K,
        "q6_k" => QuantType::Q6K,
        "mixed" => QuantType::Mixed,
        other => bail!("unknown type '{other}' (f32, f16, q8_0, q4_0, q4_1, q4_k, q6_k, mixed)"),
    })
}

pub fn ggml_type(name: &str) -> Result<GgmlType> {
    Ok(match name {
        "f32" => GgmlType::F32,
        "f16" => GgmlType::F16,
        "q8_0" => GgmlType::Q8_0,
        "q4_0" => GgmlType::Q4_0,
        "q4_1" => GgmlType::Q4_1,
        "q4_k" => GgmlType::Q4_K,
        "q6_k" => GgmlType::Q6_K,
        other => bail!("unknown type '{other}' (f32, f16, q8_0, q4_0, q4_1, q4_k, q6_k)"),
    })
}

/// SplitMix64 step.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `n` values uniform in [center - amp, center + amp], reproducible from `seed`.
pub fn random_values(seed: u64, n: usize, center: f32, amp: f32) -> Vec<f32> {
    let mut out = vec![0f32; n];
    out.par_chunks_mut(1 << 16)
        .enumerate()
        .for_each(|(c, chunk)| {
            let mut s = mix(seed ^ (c as u64).wrapping_mul(0xA24B_AED4_963E_E407));
            for v in chunk {
                s = mix(s);
                let u = (s >> 40) as f32 / (1u64 << 24) as f32;
                *v = center + amp * (2.0 * u - 1.0);
            }
        });
    out
}

/// Random values of a tensor quantized to `ty` (rows of `shape[last]`), rows in parallel.
pub fn random_tensor(
    seed: u64,
    shape: &[usize],
    ty: GgmlType,
    center: f32,
    amp: f32,
) -> Result<Vec<u8>> {
    let cols = *shape.last().unwrap_or(&1);
    let n: usize = shape.iter().product();
    let rows = n / cols.max(1);
    let row_bytes = ty
        .row_size(cols)
        .with_context(|| format!("{cols} values are not whole {} blocks", ty.name()))?;
    let vals = random_values(seed, n, center, amp);
    let mut out = vec![0u8; rows * row_bytes];
    // Chunks of rows keep each task's quantization a few hundred KB.
    let per = (1 << 16) / cols.max(1) + 1;
    out.par_chunks_mut(per * row_bytes)
        .zip(vals.par_chunks(per * cols))
        .try_for_each(|(dst, src)| {
            quantize_row(ty, src, dst).map_err(|e| anyhow::anyhow!("{e}"))
        })?;
    Ok(out)
}

fn name_seed(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    })
}

/// Amplitude and center of a random tensor: norms around 1, matrices ±1.7/√cols (unit-ish
/// activations), everything else small.
fn init_of(name: &str, shape: &[usize]) -> (f32, f32) {
    if name.contains("norm") && shape.len() == 1 {
        (1.0, 0.1)
    } else if shape.len() >= 2 {
        (0.0, 1.7 / (*shape.last().unwrap() as f32).sqrt())
    } else {
        (0.0, 0.02)
    }
}

/// A random-weight EOSTok GGUF of a preset at a type: `DIR/eostok-CONFIG-TYPE.gguf`,
/// written once and reused.
pub fn eostok_model(dir: &Path, config: &str, ty: &str) -> Result<PathBuf> {
    let cfg = Config::load(config)
        .map_err(|e| eostok_models::exit::bad_input(format!("--config: {e}")))?;
    let q = quant_type(ty)?;
    let path = dir.join(format!("eostok-{}-{}.gguf", cfg.name, q.name()));
    if path.exists() {
        return Ok(path);
    }
    eprintln!("writing {} (random weights) ...", path.display());
    let specs = policy::exported(eostok_models::tensor_specs(&cfg), false);
    let plan = policy::plan(&cfg, &specs, q, &[]);
    let mut meta = gguf_schema::config_to_metadata(&cfg);
    meta.push((
        gguf_schema::GENERAL_FILE_TYPE.into(),
        MetaValue::U32(q.file_type()),
    ));
    meta.push((
        gguf_schema::GENERAL_QUANTIZATION_VERSION.into(),
        MetaValue::U32(gguf_schema::QUANTIZATION_VERSION),
    ));
    meta.push((
        gguf_schema::WEIGHTS.into(),
        MetaValue::Str("random (eostok-bench)".into()),
    ));
    let entries = plan
        .iter()
        .map(|p| TensorEntry::new(&p.spec.name, &p.spec.shape, p.ty))
        .collect();
    let mut w = GgufWriter::create(&path, &meta, entries)?;
    for p in &plan {
        let (c, a) = init_of(&p.spec.name, &p.spec.shape);
        w.write_tensor(&random_tensor(
            name_seed(&p.spec.name),
            &p.spec.shape,
            p.ty,
            c,
            a,
        )?)?;
    }
    w.finish()?;
    Ok(path)
}

/// The Llama dimensions of a preset's AR transformer (MHA: KV heads = heads).
pub struct LlamaDims {
    pub width: usize,
    pub depth: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub ffn: usize,
    pub vocab: usize,
    pub context: usize,
}

impl LlamaDims {
    pub fn of(config: &str) -> Result<LlamaDims> {
        let cfg = Config::load(config)
            .map_err(|e| eostok_models::exit::bad_input(format!("--config: {e}")))?;
        Ok(LlamaDims {
            width: cfg.ar.width,
            depth: cfg.ar.depth,
            heads: cfg.ar.heads,
            kv_heads: cfg.ar.heads,
            ffn: cfg.ar.ffn_hidden,
            vocab: cfg.codebook_size,
            context: 512,
        })
    }
}

enum Meta {
    U32(u32),
    F32(f32),
    Str(String),
    StrArray(Vec<String>),
    F32Array(Vec<f32>),
    I32Array(Vec<i32>),
}

fn put_str(w: &mut impl Write, s: &str) -> std::io::Result<()> {
    w.write_all(&(s.len() as u64).to_le_bytes())?;
    w.write_all(s.as_bytes())
}

fn put_meta(w: &mut impl Write, v: &Meta) -> std::io::Result<()> {
    let t = |w: &mut dyn Write, x: u32| w.write_all(&x.to_le_bytes());
    match v {
        Meta::U32(x) => {
            t(w, 4)?;
            t(w, *x)
        }
        Meta::F32(x) => {
            t(w, 6)?;
            w.write_all(&x.to_le_bytes())
        }
        Meta::Str(s) => {
            t(w, 8)?;
            put_str(w, s)
        }
        Meta::StrArray(a) => {
            t(w, 9)?;
            t(w, 8)?;
            w.write_all(&(a.len() as u64).to_le_bytes())?;
            a.iter().try_for_each(|s| put_str(w, s))
        }
        Meta::F32Array(a) => {
            t(w, 9)?;
            t(w, 6)?;
            w.write_all(&(a.len() as u64).to_le_bytes())?;
            a.iter().try_for_each(|x| w.write_all(&x.to_le_bytes()))
        }
        Meta::I32Array(a) => {
            t(w, 9)?;
            t(w, 5)?;
            w.write_all(&(a.len() as u64).to_le_bytes())?;
            a.iter().try_for_each(|x| w.write_all(&x.to_le_bytes()))
        }
    }
}

const ALIGN: u64 = 32;

fn pad(w: &mut impl Write, pos: u64) -> std::io::Result<u64> {
    let p = (ALIGN - pos % ALIGN) % ALIGN;
    w.write_all(&vec![0u8; p as usize])?;
    Ok(p)
}

/// A random-weight Llama GGUF (`general.architecture = llama`) with a preset's AR
/// dimensions: `DIR/llama-CONFIG-TYPE.gguf`. Matrices and the token embedding at `ty`,
/// norms f32; an SPM vocabulary (`<unk>`, `<s>`, `</s>`, 256 byte tokens, filler) so
/// llama.cpp loads it.
pub fn llama_model(dir: &Path, config: &str, ty: &str) -> Result<PathBuf> {
    let t = ggml_type(ty)?;
    let dims = LlamaDims::of(config)?;
    let name = Config::load(config)
        .map(|c| c.name)
        .unwrap_or_else(|_| config.to_string());
    let path = dir.join(format!("llama-{name}-{ty}.gguf"));
    if path.exists() {
        return Ok(path);
    }
    eprintln!("writing {} (random weights) ...", path.display());
    let (d, f, hd) = (dims.width, dims.ffn, dims.width / dims.heads);
    let kvd = dims.kv_heads * hd;
    let mut shapes: Vec<(String, Vec<usize>)> =
        vec![("token_embd.weight".into(), vec![dims.vocab, d])];
    for i in 0..dims.depth {
        let p = |s: &str| format!("blk.{i}.{s}.weight");
        shapes.extend([
            (p("attn_norm"), vec![d]),
            (p("attn_q"), vec![d, d]),
            (p("attn_k"), vec![kvd, d]),
            (p("attn_v"), vec![kvd, d]),
            (p("attn_output"), vec![d, d]),
            (p("ffn_norm"), vec![d]),
            (p("ffn_gate"), vec![f, d]),
            (p("ffn_up"), vec![f, d]),
            (p("ffn_down"), vec![d, f]),
        ]);
    }
    shapes.push(("output_norm.weight".into(), vec![d]));
    shapes.push(("output.weight".into(), vec![dims.vocab, d]));
    let type_of = |s: &[usize]| if s.len() == 1 { GgmlType::F32 } else { t };

    let mut tokens = vec!["<unk>".to_string(), "<s>".into(), "</s>".into()];
    let mut types = vec![2i32, 3, 3];
    for b in 0..256 {
        tokens.push(format!("<0x{b:02X}>"));
        types.push(6);
    }
    while tokens.len() < dims.vocab {
        tokens.push(format!("▁t{}", tokens.len()));
        types.push(1);
    }
    let scores: Vec<f32> = (0..tokens.len()).map(|i| -(i as f32)).collect();
    let file_type = match t {
        GgmlType::F32 => 0,
        GgmlType::F16 => 1,
        GgmlType::Q4_0 => 2,
        GgmlType::Q4_1 => 3,
        GgmlType::Q8_0 => 7,
        GgmlType::Q4_K => 15,
        GgmlType::Q6_K => 18,
        _ => 0,
    };
    let meta: Vec<(&str, Meta)> = vec![
        ("general.architecture", Meta::Str("llama".into())),
        (
            "general.name",
            Meta::Str(format!("eostok-bench llama {name} {ty} (random)")),
        ),
        ("general.file_type", Meta::U32(file_type)),
        ("general.quantization_version", Meta::U32(2)),
        ("general.alignment", Meta::U32(ALIGN as u32)),
        ("llama.context_length", Meta::U32(dims.context as u32)),
        ("llama.embedding_length", Meta::U32(d as u32)),
        ("llama.block_count", Meta::U32(dims.depth as u32)),
        ("llama.feed_forward_length", Meta::U32(f as u32)),
        ("llama.attention.head_count", Meta::U32(dims.heads as u32)),
        (
            "llama.attention.head_count_kv",
            Meta::U32(dims.kv_heads as u32),
        ),
        ("llama.rope.dimension_count", Meta::U32(hd as u32)),
        ("llama.rope.freq_base", Meta::F32(10000.0)),
        ("llama.attention.layer_norm_rms_epsilon", Meta::F32(1e-5)),
        ("llama.vocab_size", Meta::U32(dims.vocab as u32)),
        ("tokenizer.ggml.model", Meta::Str("llama".into())),
        ("tokenizer.ggml.tokens", Meta::StrArray(tokens)),
        ("tokenizer.ggml.scores", Meta::F32Array(scores)),
        ("tokenizer.ggml.token_type", Meta::I32Array(types)),
        ("tokenizer.ggml.bos_token_id", Meta::U32(1)),
        ("tokenizer.ggml.eos_token_id", Meta::U32(2)),
        ("tokenizer.ggml.unknown_token_id", Meta::U32(0)),
    ];
    let tmp = path.with_extension("gguf.tmp");
    let mut w = BufWriter::with_capacity(
        1 << 20,
        std::fs::File::create(&tmp).with_context(|| format!("{}: cannot create", tmp.display()))?,
    );
    w.write_all(b"GGUF")?;
    w.write_all(&3u32.to_le_bytes())?;
    w.write_all(&(shapes.len() as u64).to_le_bytes())?;
    w.write_all(&(meta.len() as u64).to_le_bytes())?;
    for (k, v) in &meta {
        put_str(&mut w, k)?;
        put_meta(&mut w, v)?;
    }
    let mut offset = 0u64;
    for (n, s) in &shapes {
        put_str(&mut w, n)?;
        w.write_all(&(s.len() as u32).to_le_bytes())?;
        for x in s.iter().rev() {
            w.write_all(&(*x as u64).to_le_bytes())?;
        }
        w.write_all(&type_of(s).id().to_le_bytes())?;
        w.write_all(&offset.to_le_bytes())?;
        let cols = *s.last().unwrap();
        let bytes = (type_of(s).row_size(cols).context("row size")?
            * (s.iter().product::<usize>() / cols)) as u64;
        offset += bytes + (ALIGN - bytes % ALIGN) % ALIGN;
    }
    w.flush()?;
    let pos = w.get_ref().metadata()?.len() + w.buffer().len() as u64;
    pad(&mut w, pos)?;
    for (n, s) in &shapes {
        let (c, a) = init_of(n, s);
        let data = random_tensor(name_seed(n), s, type_of(s), c, a)?;
        w.write_all(&data)?;
        pad(&mut w, data.len() as u64)?;
    }
    w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

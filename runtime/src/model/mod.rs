//! The EOSTok model over a GGUF file: the config from its metadata, the AR
//! transformer and the decoder as borrowed views of its tensors.

pub mod attention;
pub mod ar;
pub mod decoder;
pub mod llama;
pub mod ops;
pub mod tensors;

use crate::gguf::{Array, GgufFile, Value};
use anyhow::Result;
use eostok_models::exit::bad_input;
use eostok_models::gguf_schema::{self, MetaValue};
use eostok_models::Config;

pub use ar::{Ar, ArState};
pub use decoder::Decoder;

pub struct Model<'a> {
    pub cfg: Config,
    pub ar: Ar<'a>,
    pub decoder: Decoder<'a>,
}

/// A GGUF metadata value as the schema reads it.
pub fn schema_value(v: &Value) -> Option<MetaValue> {
    match v {
        Value::String(s) => Some(MetaValue::Str(s.clone())),
        Value::F32(x) => Some(MetaValue::F32(*x)),
        Value::F64(x) => Some(MetaValue::F32(*x as f32)),
        Value::Array(Array::String(s)) => Some(MetaValue::StrArray(s.clone())),
        other => other.as_integer().and_then(|i| u64::try_from(i).ok()).map(MetaValue::U64),
    }
}

/// The architectures the runtime runs: EOSTok itself, and plain Llama (only for
/// benchmarking one file through llama.cpp, candle and us; see [`llama`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    Eostok,
    Llama,
}

/// `general.architecture` of a file; anything but `eostok` and `llama` is refused.
pub fn architecture_of(file: &GgufFile) -> Result<Architecture> {
    match file.metadata().get(gguf_schema::GENERAL_ARCHITECTURE) {
        Some(Value::String(s)) if s == gguf_schema::ARCHITECTURE => Ok(Architecture::Eostok),
        Some(Value::String(s)) if s == "llama" => Ok(Architecture::Llama),
        Some(Value::String(s)) => Err(bad_input(format!("general.architecture is '{s}'; this runtime runs 'eostok' (and 'llama' for benchmarks)"))),
        _ => Err(bad_input("general.architecture is missing or not a string")),
    }
}

/// The architecture described by a file's metadata.
pub fn config_of(file: &GgufFile) -> Result<Config> {
    gguf_schema::config_from_metadata(|k| file.metadata().get(k).and_then(schema_value)).map_err(|e| bad_input(e.to_string()))
}

/// The sampling a file recommends (`eostok.sampling.*`, all optional),
/// validated: a value of the wrong type or out of range is bad input naming
/// the key.
pub fn sampling_of(file: &GgufFile) -> Result<gguf_schema::SamplingRecommendation> {
    let meta = file.metadata();
    // A value the schema cannot take (a negative or boolean top-k, an array)
    // would otherwise read as absent.
    for k in gguf_schema::SAMPLING_KEYS {
        if let Some(v) = meta.get(k).filter(|v| schema_value(v).is_none()) {
            return Err(bad_input(format!("metadata key '{k}' has the wrong type ({})", v.describe())));
        }
    }
    gguf_schema::sampling_from_metadata(|k| meta.get(k).and_then(schema_value)).map_err(|e| bad_input(e.to_string()))
}

impl<'a> Model<'a> {
    /// Validate every tensor the model needs against the metadata and build
    /// the model on views of the file.
    pub fn load(file: &'a GgufFile) -> Result<Self> {
        let cfg = config_of(file)?;
        let t = tensors::Tensors::new(file);
        Ok(Model { ar: Ar::load(&t, &cfg)?, decoder: Decoder::load(&t, &cfg)?, cfg })
    }

    /// Class id from an id or a name in `eostok.class_names` ([`class_id`]).
    pub fn class_id(&self, spec: &str) -> Result<u32> {
        class_id(&self.cfg, spec)
    }
}

/// A class row the AR model can be conditioned on: 0..n, or n itself (the
/// null class of classifier-free guidance). Shared by the CPU and GPU paths.
pub fn check_class(c: u32, num_classes: usize) -> Result<()> {
    if c as usize > num_classes {
        return Err(bad_input(format!("class {c} is outside 0..={num_classes} (the last is the null class)")));
    }
    Ok(())
}

/// A batch of code ids to decode: every row k long with 1 <= k <= L, every
/// id inside the codebook. Returns k. Shared by the CPU and GPU paths.
pub fn check_code_rows(ids: &[Vec<u32>], latent_tokens: usize, codebook_size: usize) -> Result<usize> {
    let k = ids.first().map(Vec::len).unwrap_or(0);
    if k == 0 || k > latent_tokens || ids.iter().any(|r| r.len() != k) {
        return Err(bad_input(format!("decode needs 1..={latent_tokens} tokens per image, the same for every image")));
    }
    if let Some(&id) = ids.iter().flatten().find(|&&id| id as usize >= codebook_size) {
        return Err(bad_input(format!("token id {id} is outside the codebook of {codebook_size}")));
    }
    Ok(k)
}

/// Class id from an id or a name in `eostok.class_names`. An unknown name
/// is an error listing the closest names.
pub fn class_id(cfg: &Config, spec: &str) -> Result<u32> {
    let n = cfg.num_classes;
    if let Ok(id) = spec.parse::<usize>() {
        if id < n {
            return Ok(id as u32);
        }
        return Err(bad_input(format!("class {id} is outside 0..{n}")));
    }
    let names: Vec<String> = (0..n).map(|i| cfg.class_name(i)).collect();
    let norm = |s: &str| s.to_lowercase().replace(['_', ' '], "-");
    if let Some(i) = names.iter().position(|c| norm(c) == norm(spec)) {
        return Ok(i as u32);
    }
    let mut close: Vec<(usize, &String)> = names.iter().map(|c| (edit_distance(&norm(c), &norm(spec)), c)).collect();
    close.sort();
    let suggestions: Vec<&str> = close.iter().take(3).map(|(_, c)| c.as_str()).collect();
    Err(bad_input(format!("unknown class '{spec}'; closest: {} (or an id 0..{n})", suggestions.join(", "))))
}

/// Levenshtein distance, for class-name suggestions.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + (ca != *cb) as usize).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

//! The GGUF metadata schema of an eostok file: `general.*` keys from the GGUF
//! spec and every hyper-parameter under `eostok.*`. The quantizer writes it
//! with `config_to_metadata`, the runtime reads it back with
//! `config_from_metadata`; both go through these constants only.

use crate::config::{ArConfig, Config, VfmConfig, VitConfig};
use crate::sampling::{SamplingChoice, TokenSampling};

pub const ARCHITECTURE: &str = "eostok";
/// ggml's current quantization version (`GGML_QNT_VERSION`).
pub const QUANTIZATION_VERSION: u32 = 2;
pub const ALIGNMENT: u32 = 32;

pub const GENERAL_ARCHITECTURE: &str = "general.architecture";
pub const GENERAL_NAME: &str = "general.name";
pub const GENERAL_FILE_TYPE: &str = "general.file_type";
pub const GENERAL_QUANTIZATION_VERSION: &str = "general.quantization_version";
pub const GENERAL_ALIGNMENT: &str = "general.alignment";

pub const IMAGE_SIZE: &str = "eostok.image_size";
pub const CHANNELS: &str = "eostok.channels";
pub const PATCH_SIZE: &str = "eostok.patch_size";
pub const LATENT_TOKENS: &str = "eostok.latent_tokens";
pub const CODEBOOK_SIZE: &str = "eostok.codebook_size";
pub const CODEBOOK_DIM: &str = "eostok.codebook_dim";
pub const TAU: &str = "eostok.tau";
pub const NUM_CLASSES: &str = "eostok.num_classes";
pub const CLASS_NAMES: &str = "eostok.class_names";

// AR model, llama-style key names under the architecture prefix.
pub const CONTEXT_LENGTH: &str = "eostok.context_length";
pub const EMBEDDING_LENGTH: &str = "eostok.embedding_length";
pub const BLOCK_COUNT: &str = "eostok.block_count";
pub const FEED_FORWARD_LENGTH: &str = "eostok.feed_forward_length";
pub const HEAD_COUNT: &str = "eostok.attention.head_count";
pub const RMS_EPS: &str = "eostok.attention.layer_norm_rms_epsilon";

// Tokenizer ViTs: `eostok.encoder.*` and `eostok.decoder.*`.
pub const ENCODER: &str = "eostok.encoder";
pub const DECODER: &str = "eostok.decoder";
pub const VIT_EMBEDDING_LENGTH: &str = "embedding_length";
pub const VIT_BLOCK_COUNT: &str = "block_count";
pub const VIT_HEAD_COUNT: &str = "attention.head_count";
pub const VIT_FEED_FORWARD_LENGTH: &str = "feed_forward_length";
pub const LN_EPS: &str = "eostok.attention.layer_norm_epsilon";

// Provenance (optional, informational).
pub const TRAIN_DATASET: &str = "eostok.train.dataset";
pub const TRAIN_STEPS: &str = "eostok.train.steps";
pub const TRAIN_MODE: &str = "eostok.train.mode";
pub const TRAIN_LOSSES: &str = "eostok.train.losses";
pub const QUANT_POLICY: &str = "eostok.quantization.policy";
pub const WEIGHTS: &str = "eostok.weights";

// Recommended sampling (optional, each key on its own): what `eostok-run` and
// `eostok-eval` sample with when no flag says otherwise. See `SamplingRecommendation`.
pub const SAMPLING_TEMPERATURE: &str = "eostok.sampling.temperature";
pub const SAMPLING_TOP_K: &str = "eostok.sampling.top_k";
pub const SAMPLING_TOP_P: &str = "eostok.sampling.top_p";
pub const SAMPLING_CFG_SCALE: &str = "eostok.sampling.cfg_scale";
pub const SAMPLING_KEYS: [&str; 4] = [SAMPLING_TEMPERATURE, SAMPLING_TOP_K, SAMPLING_TOP_P, SAMPLING_CFG_SCALE];

/// `general.file_type` values (not ggml type ids: Q8_0 is type 8 but file type 7).
pub mod file_type {
    pub const ALL_F32: u32 = 0;
    pub const MOSTLY_F16: u32 = 1;
    pub const MOSTLY_Q4_0: u32 = 2;
    pub const MOSTLY_Q4_1: u32 = 3;
    pub const MOSTLY_Q8_0: u32 = 7;
    pub const MOSTLY_Q4_K_M: u32 = 15;
    pub const MOSTLY_Q6_K: u32 = 18;
}

/// A metadata value as the schema needs it (a subset of GGUF's value types).
#[derive(Debug, Clone, PartialEq)]
pub enum MetaValue {
    U32(u32),
    U64(u64),
    F32(f32),
    Str(String),
    StrArray(Vec<String>),
}

impl MetaValue {
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            MetaValue::U32(v) => Some(*v as u64),
            MetaValue::U64(v) => Some(*v),
            _ => None,
        }
    }
}

pub fn vit_key(prefix: &str, leaf: &str) -> String {
    format!("{prefix}.{leaf}")
}

/// Every hyper-parameter of `cfg` as ordered (key, value) pairs, starting with
/// `general.architecture` and `general.name`.
pub fn config_to_metadata(cfg: &Config) -> Vec<(String, MetaValue)> {
    let u = |v: usize| MetaValue::U32(v as u32);
    let mut m: Vec<(String, MetaValue)> = vec![
        (GENERAL_ARCHITECTURE.into(), MetaValue::Str(ARCHITECTURE.into())),
        (GENERAL_NAME.into(), MetaValue::Str(format!("eostok-{}", cfg.name))),
        (IMAGE_SIZE.into(), u(cfg.image_size)),
        (CHANNELS.into(), u(cfg.channels)),
        (PATCH_SIZE.into(), u(cfg.patch_size)),
        (LATENT_TOKENS.into(), u(cfg.latent_tokens)),
        (CODEBOOK_SIZE.into(), u(cfg.codebook_size)),
        (CODEBOOK_DIM.into(), u(cfg.codebook_dim)),
        (TAU.into(), MetaValue::F32(cfg.tau as f32)),
        (NUM_CLASSES.into(), u(cfg.num_classes)),
        (CLASS_NAMES.into(), MetaValue::StrArray((0..cfg.num_classes).map(|i| cfg.class_name(i)).collect())),
        (CONTEXT_LENGTH.into(), u(cfg.latent_tokens)),
        (EMBEDDING_LENGTH.into(), u(cfg.ar.width)),
        (BLOCK_COUNT.into(), u(cfg.ar.depth)),
        (FEED_FORWARD_LENGTH.into(), u(cfg.ar.ffn_hidden)),
        (HEAD_COUNT.into(), u(cfg.ar.heads)),
        (RMS_EPS.into(), MetaValue::F32(cfg.rms_eps as f32)),
        (LN_EPS.into(), MetaValue::F32(cfg.norm_eps as f32)),
    ];
    for (prefix, vit) in [(ENCODER, &cfg.encoder), (DECODER, &cfg.decoder)] {
        m.push((vit_key(prefix, VIT_EMBEDDING_LENGTH), u(vit.width)));
        m.push((vit_key(prefix, VIT_BLOCK_COUNT), u(vit.depth)));
        m.push((vit_key(prefix, VIT_HEAD_COUNT), u(vit.heads)));
        m.push((vit_key(prefix, VIT_FEED_FORWARD_LENGTH), u(vit.mlp_hidden())));
    }
    m
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SchemaError {
    #[error("metadata key '{0}' is missing")]
    Missing(String),
    #[error("metadata key '{0}' has the wrong type (expected {1})")]
    WrongType(String, &'static str),
    #[error("general.architecture is '{0}', expected '{ARCHITECTURE}'")]
    Architecture(String),
    #[error("metadata describes an invalid model: {0}")]
    Invalid(String),
    #[error("metadata key '{0}' = {1} is out of range (must be {2})")]
    OutOfRange(String, String, &'static str),
}

/// Rebuild the architecture from metadata (the inverse of `config_to_metadata`;
/// training-only fields get their defaults). `lookup` answers one key.
pub fn config_from_metadata(lookup: impl Fn(&str) -> Option<MetaValue>) -> Result<Config, SchemaError> {
    let get = |k: &str| lookup(k).ok_or_else(|| SchemaError::Missing(k.to_string()));
    let uint = |k: &str| -> Result<usize, SchemaError> {
        let v = get(k)?.as_u64().ok_or(SchemaError::WrongType(k.to_string(), "unsigned integer"))?;
        usize::try_from(v).map_err(|_| SchemaError::Invalid(format!("{k} = {v} is too large")))
    };
    let float = |k: &str| -> Result<f64, SchemaError> {
        match get(k)? {
            MetaValue::F32(v) => Ok(v as f64),
            _ => Err(SchemaError::WrongType(k.to_string(), "f32")),
        }
    };
    match get(GENERAL_ARCHITECTURE)? {
        MetaValue::Str(a) if a == ARCHITECTURE => {}
        MetaValue::Str(a) => return Err(SchemaError::Architecture(a)),
        _ => return Err(SchemaError::WrongType(GENERAL_ARCHITECTURE.into(), "string")),
    }
    let name = match lookup(GENERAL_NAME) {
        Some(MetaValue::Str(s)) => s.strip_prefix("eostok-").unwrap_or(&s).to_string(),
        _ => "gguf".to_string(),
    };
    let vit = |prefix: &str| -> Result<VitConfig, SchemaError> {
        let width = uint(&vit_key(prefix, VIT_EMBEDDING_LENGTH))?;
        let hidden = uint(&vit_key(prefix, VIT_FEED_FORWARD_LENGTH))?;
        if width == 0 || hidden % width != 0 {
            return Err(SchemaError::Invalid(format!("{prefix}: feed_forward_length {hidden} is not a multiple of width {width}")));
        }
        Ok(VitConfig {
            width,
            depth: uint(&vit_key(prefix, VIT_BLOCK_COUNT))?,
            heads: uint(&vit_key(prefix, VIT_HEAD_COUNT))?,
            mlp_ratio: hidden / width,
        })
    };
    let num_classes = uint(NUM_CLASSES)?;
    let class_names = match lookup(CLASS_NAMES) {
        Some(MetaValue::StrArray(v)) => v,
        Some(_) => return Err(SchemaError::WrongType(CLASS_NAMES.into(), "string array")),
        None => vec![],
    };
    let latent_tokens = uint(LATENT_TOKENS)?;
    if let Ok(ctx) = uint(CONTEXT_LENGTH) {
        if ctx != latent_tokens {
            return Err(SchemaError::Invalid(format!("{CONTEXT_LENGTH} {ctx} != {LATENT_TOKENS} {latent_tokens}")));
        }
    }
    let cfg = Config {
        name,
        image_size: uint(IMAGE_SIZE)?,
        channels: uint(CHANNELS)?,
        patch_size: uint(PATCH_SIZE)?,
        latent_tokens,
        codebook_dim: uint(CODEBOOK_DIM)?,
        codebook_size: uint(CODEBOOK_SIZE)?,
        tau: float(TAU)?,
        encoder: vit(ENCODER)?,
        decoder: vit(DECODER)?,
        ar: ArConfig {
            width: uint(EMBEDDING_LENGTH)?,
            depth: uint(BLOCK_COUNT)?,
            heads: uint(HEAD_COUNT)?,
            ffn_hidden: uint(FEED_FORWARD_LENGTH)?,
        },
        num_classes,
        class_names,
        norm_eps: float(LN_EPS)?,
        rms_eps: float(RMS_EPS)?,
        class_dropout: 0.0,
        vfm: None::<VfmConfig>,
    };
    cfg.validate().map_err(|e| SchemaError::Invalid(e.to_string()))?;
    Ok(cfg)
}

/// The sampling a file recommends (`eostok.sampling.*`); `None` = the file
/// says nothing, and the flag's default applies. Stored as GGUF f32/u32.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SamplingRecommendation {
    /// `eostok.sampling.temperature`, >= 0 (0 = greedy).
    pub temperature: Option<f32>,
    /// `eostok.sampling.top_k` (0 = off).
    pub top_k: Option<u32>,
    /// `eostok.sampling.top_p`, in (0, 1] (1 = off).
    pub top_p: Option<f32>,
    /// `eostok.sampling.cfg_scale`, >= 0 (1 = off).
    pub cfg_scale: Option<f32>,
}

/// The range a float sampling key accepts, as text for errors.
fn sampling_range(key: &str) -> &'static str {
    if key == SAMPLING_TOP_P {
        "in (0, 1]"
    } else {
        "finite and >= 0"
    }
}

fn in_sampling_range(key: &str, v: f32) -> bool {
    if key == SAMPLING_TOP_P {
        v > 0.0 && v <= 1.0
    } else {
        v.is_finite() && v >= 0.0
    }
}

impl SamplingRecommendation {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Every value in range (the error names the key).
    pub fn validate(&self) -> Result<(), SchemaError> {
        for (key, v) in [(SAMPLING_TEMPERATURE, self.temperature), (SAMPLING_TOP_P, self.top_p), (SAMPLING_CFG_SCALE, self.cfg_scale)] {
            match v {
                Some(v) if !in_sampling_range(key, v) => return Err(SchemaError::OutOfRange(key.into(), v.to_string(), sampling_range(key))),
                _ => {}
            }
        }
        Ok(())
    }

    /// The keys that are set, for the writer.
    pub fn to_metadata(&self) -> Vec<(String, MetaValue)> {
        let mut m = vec![];
        if let Some(v) = self.temperature {
            m.push((SAMPLING_TEMPERATURE.into(), MetaValue::F32(v)));
        }
        if let Some(v) = self.top_k {
            m.push((SAMPLING_TOP_K.into(), MetaValue::U32(v)));
        }
        if let Some(v) = self.top_p {
            m.push((SAMPLING_TOP_P.into(), MetaValue::F32(v)));
        }
        if let Some(v) = self.cfg_scale {
            m.push((SAMPLING_CFG_SCALE.into(), MetaValue::F32(v)));
        }
        m
    }

    /// From `--sampling cfg=1.5,top_k=50,temperature=0.9,top_p=1` (`cfg_scale`
    /// is a synonym of `cfg`); `none` is the empty recommendation.
    pub fn parse(spec: &str) -> Result<Self, String> {
        let mut r = SamplingRecommendation::default();
        if spec.trim() == "none" {
            return Ok(r);
        }
        for part in spec.split(',') {
            let (k, v) = part.split_once('=').ok_or_else(|| format!("'{part}' is not KEY=VALUE (keys: temperature, top_k, top_p, cfg)"))?;
            let (k, v) = (k.trim(), v.trim());
            let float = |key: &str| -> Result<f32, String> {
                let x: f32 = v.parse().map_err(|_| format!("{k}={v}: not a number"))?;
                if !in_sampling_range(key, x) {
                    return Err(format!("{k}={v}: must be {}", sampling_range(key)));
                }
                Ok(x)
            };
            let dup = match k {
                "temperature" => r.temperature.replace(float(SAMPLING_TEMPERATURE)?).is_some(),
                "top_k" => r.top_k.replace(v.parse().map_err(|_| format!("{k}={v}: not an integer in 0..=4294967295"))?).is_some(),
                "top_p" => r.top_p.replace(float(SAMPLING_TOP_P)?).is_some(),
                "cfg" | "cfg_scale" => r.cfg_scale.replace(float(SAMPLING_CFG_SCALE)?).is_some(),
                _ => return Err(format!("unknown key '{k}' (keys: temperature, top_k, top_p, cfg)")),
            };
            if dup {
                return Err(format!("'{k}' is given twice"));
            }
        }
        Ok(r)
    }

    /// Settings to sample with: each flag, else this recommendation, else
    /// the default (temperature 1, top-k 0, top-p 1, cfg 1). `from_file`
    /// lists the settings taken from the recommendation.
    pub fn resolve(&self, temperature: Option<f64>, top_k: Option<usize>, top_p: Option<f64>, cfg_scale: Option<f32>) -> SamplingChoice {
        let d = TokenSampling::default();
        let mut from_file = vec![];
        let temperature = pick(temperature, self.temperature.map(widen), d.temperature, "temperature", &mut from_file);
        let top_k = pick(top_k, self.top_k.map(|k| k as usize), d.top_k, "top-k", &mut from_file);
        let top_p = pick(top_p, self.top_p.map(widen), d.top_p, "top-p", &mut from_file);
        let cfg_scale = pick(cfg_scale, self.cfg_scale, 1.0, "cfg", &mut from_file);
        SamplingChoice { sampling: TokenSampling { temperature, top_k, top_p }, cfg_scale, from_file }
    }
}

/// The flag, else the recommendation (noted in `from_file`), else the default.
fn pick<T: Copy + std::fmt::Display>(flag: Option<T>, rec: Option<T>, default: T, name: &str, from_file: &mut Vec<String>) -> T {
    match (flag, rec) {
        (Some(v), _) => v,
        (None, Some(v)) => {
            from_file.push(format!("{name} {v}"));
            v
        }
        (None, None) => default,
    }
}

/// An f32 from the file as the f64 a flag with the same decimal text parses
/// to (0.9f32 -> 0.9, not 0.8999999761...), so `top_p=0.9` in a file and
/// `--top-p 0.9` sample alike.
fn widen(v: f32) -> f64 {
    v.to_string().parse().unwrap_or(v as f64)
}

/// The recommended sampling in a file's metadata (absent keys are `None`):
/// f32 for temperature, top-p and cfg, an unsigned integer below 2^32 for
/// top-k; a wrong type or a value out of range is an error naming the key.
pub fn sampling_from_metadata(lookup: impl Fn(&str) -> Option<MetaValue>) -> Result<SamplingRecommendation, SchemaError> {
    let float = |k: &str| -> Result<Option<f32>, SchemaError> {
        match lookup(k) {
            None => Ok(None),
            Some(MetaValue::F32(v)) => Ok(Some(v)),
            Some(_) => Err(SchemaError::WrongType(k.to_string(), "f32")),
        }
    };
    let top_k = match lookup(SAMPLING_TOP_K) {
        None => None,
        Some(v) => {
            let v = v.as_u64().ok_or(SchemaError::WrongType(SAMPLING_TOP_K.into(), "unsigned integer"))?;
            Some(u32::try_from(v).map_err(|_| SchemaError::OutOfRange(SAMPLING_TOP_K.into(), v.to_string(), "below 2^32"))?)
        }
    };
    let r = SamplingRecommendation { temperature: float(SAMPLING_TEMPERATURE)?, top_k, top_p: float(SAMPLING_TOP_P)?, cfg_scale: float(SAMPLING_CFG_SCALE)? };
    r.validate()?;
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn metadata_round_trip_every_preset() {
        for name in crate::config::PRESETS {
            let mut cfg = Config::preset(name).unwrap();
            let meta: HashMap<String, MetaValue> = config_to_metadata(&cfg).into_iter().collect();
            let back = config_from_metadata(|k| meta.get(k).cloned()).unwrap();
            // Training-only fields are not in the file.
            cfg.class_dropout = 0.0;
            cfg.vfm = None;
            cfg.class_names = (0..cfg.num_classes).map(|i| cfg.class_name(i)).collect();
            cfg.tau = cfg.tau as f32 as f64;
            cfg.norm_eps = cfg.norm_eps as f32 as f64;
            cfg.rms_eps = cfg.rms_eps as f32 as f64;
            assert_eq!(back, cfg, "{name}");
        }
    }

    #[test]
    fn wrong_architecture_and_missing_keys() {
        let cfg = Config::preset("tiny").unwrap();
        let mut meta: HashMap<String, MetaValue> = config_to_metadata(&cfg).into_iter().collect();
        meta.insert(GENERAL_ARCHITECTURE.into(), MetaValue::Str("llama".into()));
        assert_eq!(config_from_metadata(|k| meta.get(k).cloned()).unwrap_err(), SchemaError::Architecture("llama".into()));
        meta.insert(GENERAL_ARCHITECTURE.into(), MetaValue::Str(ARCHITECTURE.into()));
        meta.remove(CODEBOOK_SIZE);
        assert_eq!(config_from_metadata(|k| meta.get(k).cloned()).unwrap_err(), SchemaError::Missing(CODEBOOK_SIZE.into()));
        meta.insert(CODEBOOK_SIZE.into(), MetaValue::Str("x".into()));
        assert!(matches!(config_from_metadata(|k| meta.get(k).cloned()), Err(SchemaError::WrongType(..))));
        meta.insert(CODEBOOK_SIZE.into(), MetaValue::U32(0));
        assert!(matches!(config_from_metadata(|k| meta.get(k).cloned()), Err(SchemaError::Invalid(..))));
    }

    #[test]
    fn sampling_round_trip_parse_and_precedence() {
        let r = SamplingRecommendation::parse("cfg=1.5, top_k=50,temperature=0.9,top_p=1").unwrap();
        assert_eq!(r, SamplingRecommendation { temperature: Some(0.9), top_k: Some(50), top_p: Some(1.0), cfg_scale: Some(1.5) });
        let meta: HashMap<String, MetaValue> = r.to_metadata().into_iter().collect();
        assert_eq!(meta.len(), 4);
        assert_eq!(sampling_from_metadata(|k| meta.get(k).cloned()).unwrap(), r);
        // Nothing in the file: nothing recommended, the defaults apply.
        let none = sampling_from_metadata(|_| None).unwrap();
        assert!(none.is_empty() && none.to_metadata().is_empty());
        let c = none.resolve(None, None, None, None);
        assert_eq!((c.sampling, c.cfg_scale, c.from_file.len()), (TokenSampling::default(), 1.0, 0));
        // The file fills what no flag gives; its 0.9f32 is the flag's 0.9.
        let c = r.resolve(None, Some(7), None, None);
        assert_eq!(c.sampling, TokenSampling { temperature: 0.9, top_k: 7, top_p: 1.0 });
        assert_eq!(c.cfg_scale, 1.5);
        assert_eq!(c.from_file, ["temperature 0.9", "top-p 1", "cfg 1.5"]);
        let c = r.resolve(Some(1.0), None, Some(0.5), Some(1.0));
        assert_eq!((c.sampling.temperature, c.sampling.top_k, c.sampling.top_p, c.cfg_scale), (1.0, 50, 0.5, 1.0));
        assert_eq!(c.from_file, ["top-k 50"]);
        assert_eq!(SamplingRecommendation::parse("none").unwrap(), SamplingRecommendation::default());
    }

    #[test]
    fn sampling_bad_specs_and_hostile_values() {
        for (spec, needle) in [
            ("cfg=1.5,foo=1", "unknown key 'foo'"),
            ("cfg", "not KEY=VALUE"),
            ("", "not KEY=VALUE"),
            ("cfg=x", "not a number"),
            ("cfg=-1", "finite and >= 0"),
            ("cfg=inf", "finite and >= 0"),
            ("temperature=NaN", "finite and >= 0"),
            ("top_p=0", "in (0, 1]"),
            ("top_p=1.01", "in (0, 1]"),
            ("top_k=-1", "not an integer"),
            ("cfg=1,cfg_scale=2", "given twice"),
        ] {
            let e = SamplingRecommendation::parse(spec).unwrap_err();
            assert!(e.contains(needle), "{spec}: {e}");
        }
        let hostile = |k: &str, v: MetaValue| sampling_from_metadata(|q| (q == k).then(|| v.clone())).unwrap_err();
        for (k, v) in [(SAMPLING_TOP_P, 0.0), (SAMPLING_TOP_P, f32::NAN), (SAMPLING_TEMPERATURE, -0.5), (SAMPLING_CFG_SCALE, f32::INFINITY), (SAMPLING_CFG_SCALE, -1.0)] {
            let e = hostile(k, MetaValue::F32(v)).to_string();
            assert!(e.starts_with(&format!("metadata key '{k}' = ")) && e.contains("out of range (must be"), "{e}");
        }
        assert_eq!(hostile(SAMPLING_TOP_P, MetaValue::Str("0.9".into())), SchemaError::WrongType(SAMPLING_TOP_P.into(), "f32"));
        assert_eq!(hostile(SAMPLING_TOP_K, MetaValue::F32(5.0)), SchemaError::WrongType(SAMPLING_TOP_K.into(), "unsigned integer"));
        assert!(hostile(SAMPLING_TOP_K, MetaValue::U64(1 << 40)).to_string().contains(SAMPLING_TOP_K));
    }
}

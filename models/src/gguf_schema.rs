//! The GGUF metadata schema of an eostok file: `general.*` keys from the GGUF
//! spec and every hyper-parameter under `eostok.*`. The quantizer writes it
//! with `config_to_metadata`, the runtime reads it back with
//! `config_from_metadata`; both go through these constants only.

use crate::config::{ArConfig, Config, VfmConfig, VitConfig};

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
}

//! Model configuration: one struct for every size, presets, JSON overrides.
//!
//! Everything that decides a tensor shape lives here; nothing else in the
//! workspace hard-codes a size.

use serde::{Deserialize, Serialize};
use std::path::Path;

/// A pre-LN ViT stack (the tokenizer's encoder or decoder).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VitConfig {
    pub width: usize,
    pub depth: usize,
    pub heads: usize,
    /// MLP hidden width = mlp_ratio * width (GELU MLP).
    pub mlp_ratio: usize,
}

impl VitConfig {
    pub fn mlp_hidden(&self) -> usize {
        self.mlp_ratio * self.width
    }
    pub fn head_dim(&self) -> usize {
        self.width / self.heads
    }
}

/// The Llama-style class-conditional AR transformer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArConfig {
    pub width: usize,
    pub depth: usize,
    pub heads: usize,
    /// SwiGLU hidden width (LlamaGen rule: 2/3 * 4 * width rounded up to 256).
    pub ffn_hidden: usize,
}

impl ArConfig {
    pub fn head_dim(&self) -> usize {
        self.width / self.heads
    }
}

/// VFM alignment heads (implicit encoder alignment + decoder REPA).
/// They are trained, so they are part of the checkpoint, but not of the
/// tokenizer that the quantizer exports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VfmConfig {
    /// Feature width of the frozen VFM (DINOv2-S: 384).
    pub dim: usize,
    /// Hidden width of the 3-layer SiLU MLP projectors (REPA: 2048).
    pub projector_hidden: usize,
    /// Decoder block whose mask-token outputs are aligned (1-based; 0 = middle).
    pub decoder_layer: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Preset name or a user's label; goes to `general.name` in GGUF.
    pub name: String,
    pub image_size: usize,
    pub channels: usize,
    pub patch_size: usize,
    /// L: number of 1D latent tokens (= AR sequence length).
    pub latent_tokens: usize,
    /// d: latent/code dimension.
    pub codebook_dim: usize,
    /// K: number of codes.
    pub codebook_size: usize,
    /// IBQ softmax temperature on cosine logits. The paper does not give it;
    /// cosine logits lie in [-1, 1], so tau = 1 would make p nearly uniform.
    pub tau: f64,
    pub encoder: VitConfig,
    pub decoder: VitConfig,
    pub ar: ArConfig,
    pub num_classes: usize,
    /// Optional human-readable class names (len = num_classes when present).
    #[serde(default)]
    pub class_names: Vec<String>,
    /// LayerNorm epsilon of the tokenizer ViTs.
    pub norm_eps: f64,
    /// RMSNorm epsilon of the AR model.
    pub rms_eps: f64,
    /// Probability of replacing the class by the null class in training (for CFG).
    pub class_dropout: f64,
    /// VFM alignment projectors; None = no alignment heads.
    #[serde(default)]
    pub vfm: Option<VfmConfig>,
}

/// Largest depth of any stack.
pub const MAX_DEPTH: usize = 1024;
/// Largest tokenizer sequence (patches + latent tokens).
pub const MAX_SEQUENCE: usize = 1 << 16;
/// Largest parameter count: 2^34 (17 G, 68 GB in f32), far above the paper's
/// H (1.03 G) and far below counts that overflow or list millions of tensors.
pub const MAX_PARAMS: u64 = 1 << 34;

/// Names accepted by `Config::preset`.
pub const PRESETS: &[&str] = &["tiny", "small", "S", "B", "L", "H"];

impl Config {
    /// N: number of image patches.
    pub fn num_patches(&self) -> usize {
        let g = self.grid();
        g * g
    }
    /// Patches per side.
    pub fn grid(&self) -> usize {
        self.image_size / self.patch_size
    }
    /// Values per patch (P * P * C).
    pub fn patch_dim(&self) -> usize {
        self.patch_size * self.patch_size * self.channels
    }
    /// Row of the class-embedding table used for "no class" (CFG).
    pub fn null_class(&self) -> usize {
        self.num_classes
    }
    /// Decoder block (0-based index of the block *after which* features are
    /// taken) used for decoder alignment.
    pub fn decoder_align_block(&self) -> Option<usize> {
        self.vfm.as_ref().map(|v| {
            let layer = if v.decoder_layer == 0 { self.decoder.depth.div_ceil(2) } else { v.decoder_layer };
            layer.clamp(1, self.decoder.depth) - 1
        })
    }

    pub fn preset(name: &str) -> Option<Config> {
        let vit = |width, depth, heads| VitConfig { width, depth, heads, mlp_ratio: 4 };
        let ar = |width, depth, heads, ffn_hidden| ArConfig { width, depth, heads, ffn_hidden };
        let base = |name: &str, enc: VitConfig, arc: ArConfig| Config {
            name: name.to_string(),
            image_size: 256,
            channels: 3,
            patch_size: 16,
            latent_tokens: 256,
            codebook_dim: 64,
            codebook_size: 4096,
            tau: 0.1,
            decoder: enc.clone(),
            encoder: enc,
            ar: arc,
            num_classes: 1000,
            class_names: vec![],
            norm_eps: 1e-6,
            rms_eps: 1e-5,
            class_dropout: 0.1,
            vfm: Some(VfmConfig { dim: 384, projector_hidden: 2048, decoder_layer: 0 }),
        };
        Some(match name {
            "tiny" => Config {
                image_size: 32,
                patch_size: 8,
                latent_tokens: 16,
                codebook_dim: 16,
                codebook_size: 256,
                num_classes: 10,
                vfm: Some(VfmConfig { dim: 384, projector_hidden: 128, decoder_layer: 0 }),
                ..base("tiny", vit(64, 2, 4), ar(64, 2, 4, 192))
            },
            "small" => Config {
                image_size: 32,
                patch_size: 4,
                latent_tokens: 32,
                codebook_dim: 16,
                codebook_size: 512,
                num_classes: 10,
                vfm: Some(VfmConfig { dim: 384, projector_hidden: 512, decoder_layer: 0 }),
                ..base("small", vit(128, 3, 4), ar(192, 4, 6, 512))
            },
            "S" => base("S", vit(768, 12, 12), ar(768, 12, 12, 2048)),
            "B" => base("B", vit(768, 12, 12), ar(1024, 12, 16, 2816)),
            "L" => base("L", vit(768, 12, 12), ar(1024, 24, 16, 2816)),
            "H" => base("H", vit(1024, 16, 16), ar(1280, 32, 20, 3584)),
            _ => return None,
        })
    }

    /// A preset name, or a path to a JSON file. The JSON may be a full config
    /// or `{"base": "tiny", ...overrides}`: keys present replace the preset's.
    pub fn load(name_or_path: &str) -> Result<Config, ConfigError> {
        if let Some(c) = Config::preset(name_or_path) {
            return Ok(c);
        }
        let path = Path::new(name_or_path);
        if !path.exists() {
            return Err(ConfigError::Unknown(name_or_path.to_string()));
        }
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::Io(path.display().to_string(), e.to_string()))?;
        Config::from_json(&text).map_err(|e| e.with_file(&path.display().to_string()))
    }

    pub fn from_json(text: &str) -> Result<Config, ConfigError> {
        let mut value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| ConfigError::Invalid(String::new(), e.to_string()))?;
        if let Some(base) = value.get("base").and_then(|b| b.as_str()).map(str::to_string) {
            let preset = Config::preset(&base).ok_or_else(|| ConfigError::Unknown(base.clone()))?;
            let mut merged = serde_json::to_value(preset).expect("config serialises");
            let obj = value.as_object_mut().expect("checked object");
            obj.remove("base");
            merge_json(&mut merged, &value);
            value = merged;
        }
        let cfg: Config =
            serde_json::from_value(value).map_err(|e| ConfigError::Invalid(String::new(), e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("config serialises")
    }

    /// Reject sizes that cannot build a model (or would ask for absurd memory).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(String::new(), m));
        const MAX_DIM: usize = 1 << 16;
        let dims = [
            ("image_size", self.image_size),
            ("channels", self.channels),
            ("patch_size", self.patch_size),
            ("latent_tokens", self.latent_tokens),
            ("codebook_dim", self.codebook_dim),
            ("codebook_size", self.codebook_size),
            ("num_classes", self.num_classes),
            ("encoder.width", self.encoder.width),
            ("encoder.depth", self.encoder.depth),
            ("encoder.heads", self.encoder.heads),
            ("decoder.width", self.decoder.width),
            ("decoder.depth", self.decoder.depth),
            ("decoder.heads", self.decoder.heads),
            ("ar.width", self.ar.width),
            ("ar.depth", self.ar.depth),
            ("ar.heads", self.ar.heads),
            ("ar.ffn_hidden", self.ar.ffn_hidden),
        ];
        for (k, v) in dims {
            if v == 0 || v > MAX_DIM {
                return bad(format!("{k} = {v} is outside 1..={MAX_DIM}"));
            }
        }
        if !self.image_size.is_multiple_of(self.patch_size) {
            return bad(format!("image_size {} is not a multiple of patch_size {}", self.image_size, self.patch_size));
        }
        for (k, w, h) in [
            ("encoder", self.encoder.width, self.encoder.heads),
            ("decoder", self.decoder.width, self.decoder.heads),
            ("ar", self.ar.width, self.ar.heads),
        ] {
            if w % h != 0 {
                return bad(format!("{k}.width {w} is not divisible by {k}.heads {h}"));
            }
        }
        if self.encoder.mlp_ratio == 0 || self.decoder.mlp_ratio == 0 || self.encoder.mlp_ratio > 16 || self.decoder.mlp_ratio > 16 {
            return bad("mlp_ratio must be in 1..=16".into());
        }
        if !(self.tau > 0.0 && self.tau.is_finite()) {
            return bad(format!("tau = {} must be positive", self.tau));
        }
        if !(0.0..=1.0).contains(&self.class_dropout) {
            return bad(format!("class_dropout = {} must be in [0, 1]", self.class_dropout));
        }
        if !(self.norm_eps > 0.0 && self.rms_eps > 0.0) {
            return bad("norm_eps and rms_eps must be positive".into());
        }
        if !self.class_names.is_empty() && self.class_names.len() != self.num_classes {
            return bad(format!("class_names has {} entries but num_classes is {}", self.class_names.len(), self.num_classes));
        }
        if let Some(v) = &self.vfm {
            if v.dim == 0 || v.dim > MAX_DIM || v.projector_hidden == 0 || v.projector_hidden > MAX_DIM {
                return bad("vfm.dim and vfm.projector_hidden must be in 1..=65536".into());
            }
            if v.decoder_layer > self.decoder.depth {
                return bad(format!("vfm.decoder_layer {} > decoder.depth {}", v.decoder_layer, self.decoder.depth));
            }
        }
        // Each size alone may be fine while their products are absurd: bound
        // depths, sequence lengths and the parameter count (checked arithmetic).
        for (k, v) in [("encoder.depth", self.encoder.depth), ("decoder.depth", self.decoder.depth), ("ar.depth", self.ar.depth)] {
            if v > MAX_DEPTH {
                return bad(format!("{k} = {v} is above {MAX_DEPTH}"));
            }
        }
        if self.num_patches() + self.latent_tokens > MAX_SEQUENCE {
            return bad(format!(
                "{} patches ({}/{} per side, squared) + {} latent tokens is a sequence above {MAX_SEQUENCE}",
                self.num_patches(),
                self.image_size,
                self.patch_size,
                self.latent_tokens
            ));
        }
        if !(1..=4).contains(&self.channels) {
            return bad(format!("channels = {} must be 1 to 4", self.channels));
        }
        match self.checked_param_count() {
            Some(n) if n <= MAX_PARAMS => {}
            n => {
                let shown = n.map(|n| format!("{:.3e}", n as f64)).unwrap_or_else(|| "more than 2^64".into());
                return bad(format!("the config has {shown} parameters, above the limit of 2^34"));
            }
        }
        Ok(())
    }

    /// Parameter count in checked arithmetic (`None` on overflow), matching
    /// `shapes::tensor_specs` up to small vectors: used to reject absurd
    /// configs before anything is allocated or listed.
    pub fn checked_param_count(&self) -> Option<u64> {
        let u = |v: usize| v as u64;
        let vit = |v: &VitConfig| -> Option<u64> {
            let d = u(v.width);
            let h = u(v.mlp_ratio).checked_mul(d)?;
            // qkv + out + up + down + norms/biases, per block.
            let block = d.checked_mul(4 * d)?.checked_add(d.checked_mul(h)?.checked_mul(2)?)?.checked_add(h + 9 * d)?;
            block.checked_mul(u(v.depth))
        };
        let (np, l, pd) = (u(self.num_patches()), u(self.latent_tokens), u(self.patch_dim()));
        let (e, dc, ar) = (u(self.encoder.width), u(self.decoder.width), u(self.ar.width));
        let (cd, k, f) = (u(self.codebook_dim), u(self.codebook_size), u(self.ar.ffn_hidden));
        let ar_block = ar.checked_mul(ar)?.checked_mul(4)?.checked_add(ar.checked_mul(f)?.checked_mul(3)?)?.checked_add(8 * ar)?;
        let parts = [
            vit(&self.encoder)?,
            vit(&self.decoder)?,
            pd.checked_mul(e)?,
            np.checked_mul(e)?,
            l.checked_mul(e)?,
            e.checked_mul(cd)?,
            k.checked_mul(cd)?,
            cd.checked_mul(dc)?,
            l.checked_mul(dc)?,
            np.checked_mul(dc)?,
            dc.checked_mul(pd)?,
            k.checked_mul(ar)?.checked_mul(2)?,
            l.checked_mul(ar)?,
            u(self.num_classes).checked_add(1)?.checked_mul(ar)?,
            ar.checked_mul(6 * ar)?,
            ar_block.checked_mul(u(self.ar.depth))?,
        ];
        let mut total = parts.iter().try_fold(0u64, |a, &p| a.checked_add(p))?;
        if let Some(v) = &self.vfm {
            let (dim, hid) = (u(v.dim), u(v.projector_hidden));
            for w in [e, dc] {
                total = total.checked_add(w.checked_mul(hid)?.checked_add(hid.checked_mul(hid)?)?.checked_add(hid.checked_mul(dim)?)?)?;
            }
        }
        Some(total)
    }

    /// Class name for an id: the configured name or "class_N".
    pub fn class_name(&self, id: usize) -> String {
        self.class_names.get(id).cloned().unwrap_or_else(|| format!("class_{id}"))
    }
}

fn merge_json(base: &mut serde_json::Value, over: &serde_json::Value) {
    match (base, over) {
        (serde_json::Value::Object(b), serde_json::Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(k) {
                    Some(slot) if slot.is_object() && v.is_object() => merge_json(slot, v),
                    _ => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (b, o) => *b = o.clone(),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("unknown config '{0}': not a preset ({presets}) and no such file", presets = PRESETS.join(", "))]
    Unknown(String),
    #[error("{0}: cannot read config: {1}")]
    Io(String, String),
    #[error("{prefix}invalid config: {1}", prefix = file_prefix(.0))]
    Invalid(String, String),
}

fn file_prefix(file: &str) -> String {
    if file.is_empty() {
        String::new()
    } else {
        format!("{file}: ")
    }
}

impl ConfigError {
    fn with_file(self, file: &str) -> Self {
        match self {
            ConfigError::Invalid(_, m) => ConfigError::Invalid(file.to_string(), m),
            e => e,
        }
    }
}

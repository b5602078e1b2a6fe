//! The precision policy: which GGML type each tensor gets.
//!
//! - vectors (norms, biases, positions, queries, class embeddings, AdaLN):
//!   f32 — small and precision-critical;
//! - tables read by rows (codebook, AR input embedding): f16 by default;
//! - matrices: the chosen type. k-quants need rows that are a multiple of
//!   256 and legacy quants a multiple of 32; otherwise the tensor falls back
//!   (q4_k → q4_1, q6_k → q8_0, legacy → f16) and the summary says so;
//! - `mixed`: the first and last AR blocks and the decoder's pixel head at
//!   q8_0, every other matrix at q4_0.

use eostok_models::names::Group;
use eostok_models::shapes::{Kind, TensorSpec};
use eostok_models::Config;
use eostok_runtime::quant::GgmlType;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum QuantType {
    F32,
    F16,
    #[value(name = "q8_0")]
    Q8_0,
    #[value(name = "q4_0")]
    Q4_0,
    #[value(name = "q4_1")]
    Q4_1,
    #[value(name = "q4_k")]
    Q4K,
    #[value(name = "q6_k")]
    Q6K,
    Mixed,
}

impl QuantType {
    pub fn name(self) -> &'static str {
        match self {
            QuantType::F32 => "f32",
            QuantType::F16 => "f16",
            QuantType::Q8_0 => "q8_0",
            QuantType::Q4_0 => "q4_0",
            QuantType::Q4_1 => "q4_1",
            QuantType::Q4K => "q4_k",
            QuantType::Q6K => "q6_k",
            QuantType::Mixed => "mixed",
        }
    }

    /// `general.file_type` (the dominant type).
    pub fn file_type(self) -> u32 {
        use eostok_models::gguf_schema::file_type as ft;
        match self {
            QuantType::F32 => ft::ALL_F32,
            QuantType::F16 => ft::MOSTLY_F16,
            QuantType::Q8_0 => ft::MOSTLY_Q8_0,
            QuantType::Q4_0 | QuantType::Mixed => ft::MOSTLY_Q4_0,
            QuantType::Q4_1 => ft::MOSTLY_Q4_1,
            QuantType::Q4K => ft::MOSTLY_Q4_K_M,
            QuantType::Q6K => ft::MOSTLY_Q6_K,
        }
    }

    fn matrix_type(self) -> GgmlType {
        match self {
            QuantType::F32 => GgmlType::F32,
            QuantType::F16 => GgmlType::F16,
            QuantType::Q8_0 => GgmlType::Q8_0,
            QuantType::Q4_0 | QuantType::Mixed => GgmlType::Q4_0,
            QuantType::Q4_1 => GgmlType::Q4_1,
            QuantType::Q4K => GgmlType::Q4_K,
            QuantType::Q6K => GgmlType::Q6_K,
        }
    }
}

/// A tensor's planned type and, when it differs from the request, why.
#[derive(Debug, Clone)]
pub struct Planned {
    pub spec: TensorSpec,
    pub ty: GgmlType,
    pub note: Option<String>,
}

/// Does `name` match a `--keep-f32` pattern? `*` matches any run of
/// characters; a pattern without `*` matches as a substring.
pub fn matches_pattern(pattern: &str, name: &str) -> bool {
    if !pattern.contains('*') {
        return name.contains(pattern);
    }
    let parts: Vec<&str> = pattern.split('*').collect();
    let mut rest = name;
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            match rest.strip_prefix(part) {
                Some(r) => rest = r,
                None => return false,
            }
        } else if i == parts.len() - 1 {
            return rest.ends_with(part);
        } else {
            match rest.find(part) {
                Some(at) => rest = &rest[at + part.len()..],
                None => return false,
            }
        }
    }
    rest.is_empty()
}

/// Types of matrices whose rows do not fit the requested block size.
fn fallback(ty: GgmlType, row: usize) -> (GgmlType, Option<String>) {
    if row.is_multiple_of(ty.block_size()) {
        return (ty, None);
    }
    let next = match ty {
        GgmlType::Q4_K => GgmlType::Q4_1,
        GgmlType::Q6_K => GgmlType::Q8_0,
        _ => GgmlType::F16,
    };
    let (t, _) = fallback(next, row);
    (t, Some(format!("row {row} is not a multiple of {}'s block {}: {}", ty.name(), ty.block_size(), t.name())))
}

/// Is this matrix one that `mixed` keeps at q8_0?
fn mixed_keeps_q8(cfg: &Config, name: &str) -> bool {
    let last = cfg.ar.depth.saturating_sub(1);
    name.starts_with("blk.0.") || name.starts_with(&format!("blk.{last}.")) || name.starts_with(eostok_models::names::DEC_PIXEL_OUT)
}

/// The type of every exported tensor. `specs` are the exported ones.
pub fn plan(cfg: &Config, specs: &[TensorSpec], q: QuantType, keep_f32: &[String]) -> Vec<Planned> {
    specs
        .iter()
        .map(|s| {
            let row = *s.shape.last().unwrap_or(&1);
            let (ty, note) = if keep_f32.iter().any(|p| matches_pattern(p, &s.name)) {
                (GgmlType::F32, Some("--keep-f32".to_string()))
            } else {
                match s.kind {
                    Kind::Vector => (GgmlType::F32, None),
                    Kind::Table if q == QuantType::F32 => (GgmlType::F32, None),
                    Kind::Table => (GgmlType::F16, None),
                    Kind::Matrix if s.shape.len() < 2 => (GgmlType::F32, None),
                    Kind::Matrix => {
                        let want = if q == QuantType::Mixed && mixed_keeps_q8(cfg, &s.name) { GgmlType::Q8_0 } else { q.matrix_type() };
                        fallback(want, row)
                    }
                }
            };
            Planned { spec: s.clone(), ty, note }
        })
        .collect()
}

/// Tensors written to the GGUF: what generation needs (codebook, decoder,
/// AR), plus the encoder when asked. VFM projectors never.
pub fn exported(specs: Vec<TensorSpec>, with_encoder: bool) -> Vec<TensorSpec> {
    specs
        .into_iter()
        .filter(|s| match s.group {
            Group::Aux => false,
            Group::Encoder => with_encoder,
            _ => true,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        assert!(matches_pattern("output", "output.weight"));
        assert!(matches_pattern("blk.*.ffn_up*", "blk.3.ffn_up.weight"));
        assert!(!matches_pattern("blk.*.ffn_up*", "dec.blk.3.ffn_up.weight"));
        assert!(matches_pattern("*ffn_up.weight", "dec.blk.3.ffn_up.weight"));
        assert!(!matches_pattern("*.bias", "x.weight"));
    }

    #[test]
    fn policy_on_tiny() {
        let cfg = Config::preset("tiny").unwrap();
        let specs = exported(eostok_models::tensor_specs(&cfg), false);
        let p = plan(&cfg, &specs, QuantType::Q4K, &[]);
        let ty = |n: &str| p.iter().find(|x| x.spec.name == n).unwrap().ty;
        assert_eq!(ty("output_norm.weight"), GgmlType::F32);
        assert_eq!(ty("quant.codebook.weight"), GgmlType::F16);
        assert_eq!(ty("token_embd.weight"), GgmlType::F16);
        // width 64 rows: no k-quant; q4_k falls back to q4_1.
        assert_eq!(ty("blk.0.attn_q.weight"), GgmlType::Q4_1);
        // dec.latent_proj has rows of d = 16: not even a legacy block -> f16.
        assert_eq!(ty("dec.latent_proj.weight"), GgmlType::F16);
        assert!(p.iter().all(|x| !x.spec.name.starts_with("enc.") && !x.spec.name.starts_with("vfm_proj")));
        let m = plan(&cfg, &specs, QuantType::Mixed, &["output".into()]);
        let ty = |n: &str| m.iter().find(|x| x.spec.name == n).unwrap().ty;
        assert_eq!(ty("blk.0.ffn_up.weight"), GgmlType::Q8_0);
        assert_eq!(ty("blk.1.ffn_up.weight"), GgmlType::Q8_0, "last block of 2");
        assert_eq!(ty("dec.pixel_out.weight"), GgmlType::Q8_0);
        assert_eq!(ty("dec.blk.0.attn_qkv.weight"), GgmlType::Q4_0);
        assert_eq!(ty("output.weight"), GgmlType::F32, "--keep-f32");
    }
}

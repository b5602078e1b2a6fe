//! The canonical list of every parameter tensor of a config: name, shape
//! (PyTorch order, [out, in] for matrices), group and kind. The candle
//! modules create exactly these tensors (a test checks it); the quantizer and
//! the runtime validate files against it; `describe` counts from it without
//! allocating a model.

use crate::config::{Config, VitConfig};
use crate::names::{self as n, Group};

/// What a tensor is, for the quantizer's precision policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A weight matrix multiplied with activations: takes the chosen type.
    Matrix,
    /// A lookup table read by rows (token embedding, codebook).
    Table,
    /// Norm weights and biases, linear biases, positions, queries, class
    /// embeddings, AdaLN vectors: small, precision-critical, kept f32.
    Vector,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TensorSpec {
    pub name: String,
    pub shape: Vec<usize>,
    pub group: Group,
    pub kind: Kind,
}

impl TensorSpec {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

struct Specs(Vec<TensorSpec>);

impl Specs {
    fn push(&mut self, name: String, shape: Vec<usize>, kind: Kind) {
        let group = Group::of(&name);
        self.0.push(TensorSpec { name, shape, group, kind });
    }
    fn linear(&mut self, path: &str, inp: usize, out: usize, bias: bool) {
        self.push(n::join(path, n::WEIGHT), vec![out, inp], Kind::Matrix);
        if bias {
            self.push(n::join(path, n::BIAS), vec![out], Kind::Vector);
        }
    }
    fn layer_norm(&mut self, path: &str, d: usize) {
        self.push(n::join(path, n::WEIGHT), vec![d], Kind::Vector);
        self.push(n::join(path, n::BIAS), vec![d], Kind::Vector);
    }
    fn table(&mut self, path: &str, rows: usize, cols: usize, kind: Kind) {
        self.push(n::join(path, n::WEIGHT), vec![rows, cols], kind);
    }
    fn vit_blocks(&mut self, prefix: &str, vit: &VitConfig) {
        let d = vit.width;
        for i in 0..vit.depth {
            let b = n::block(prefix, i);
            self.layer_norm(&n::join(&b, n::VIT_ATTN_NORM), d);
            self.linear(&n::join(&b, n::VIT_ATTN_QKV), d, 3 * d, true);
            self.linear(&n::join(&b, n::VIT_ATTN_OUT), d, d, true);
            self.layer_norm(&n::join(&b, n::VIT_FFN_NORM), d);
            self.linear(&n::join(&b, n::VIT_FFN_UP), d, vit.mlp_hidden(), true);
            self.linear(&n::join(&b, n::VIT_FFN_DOWN), vit.mlp_hidden(), d, true);
        }
    }
    fn projector(&mut self, path: &str, inp: usize, hidden: usize, out: usize) {
        self.linear(&n::join(path, "0"), inp, hidden, true);
        self.linear(&n::join(path, "1"), hidden, hidden, true);
        self.linear(&n::join(path, "2"), hidden, out, true);
    }
}

/// Every parameter of the model described by `cfg`, in a fixed order.
pub fn tensor_specs(cfg: &Config) -> Vec<TensorSpec> {
    let mut s = Specs(Vec::new());
    let (e, dc, ar) = (&cfg.encoder, &cfg.decoder, &cfg.ar);
    let (np, l, d, k) = (cfg.num_patches(), cfg.latent_tokens, cfg.codebook_dim, cfg.codebook_size);

    s.linear(n::ENC_PATCH_EMBD, cfg.patch_dim(), e.width, true);
    s.table(n::ENC_POS_EMBD, np, e.width, Kind::Vector);
    s.table(n::ENC_QUERIES, l, e.width, Kind::Vector);
    s.vit_blocks(n::ENC, e);
    s.layer_norm(n::ENC_OUTPUT_NORM, e.width);
    s.linear(n::ENC_LATENT_PROJ, e.width, d, true);

    s.table(n::QUANT_CODEBOOK, k, d, Kind::Table);

    s.linear(n::DEC_LATENT_PROJ, d, dc.width, true);
    s.table(n::DEC_LATENT_POS, l, dc.width, Kind::Vector);
    s.push(n::join(n::DEC_MASK_TOKEN, n::WEIGHT), vec![dc.width], Kind::Vector);
    s.table(n::DEC_POS_EMBD, np, dc.width, Kind::Vector);
    s.vit_blocks(n::DEC, dc);
    s.layer_norm(n::DEC_OUTPUT_NORM, dc.width);
    s.linear(n::DEC_PIXEL_OUT, dc.width, cfg.patch_dim(), true);

    s.table(n::AR_TOKEN_EMBD, k, ar.width, Kind::Table);
    s.table(n::AR_POS_EMBD, l, ar.width, Kind::Vector);
    s.table(n::AR_CLS_EMBD, cfg.num_classes + 1, ar.width, Kind::Vector);
    s.linear(n::AR_ADALN, ar.width, 6 * ar.width, true);
    for i in 0..ar.depth {
        let b = n::block("", i);
        s.push(n::join(&n::join(&b, n::AR_ATTN_NORM), n::WEIGHT), vec![ar.width], Kind::Vector);
        for m in [n::AR_ATTN_Q, n::AR_ATTN_K, n::AR_ATTN_V, n::AR_ATTN_OUT] {
            s.linear(&n::join(&b, m), ar.width, ar.width, false);
        }
        s.push(n::join(&n::join(&b, n::AR_FFN_NORM), n::WEIGHT), vec![ar.width], Kind::Vector);
        s.linear(&n::join(&b, n::AR_FFN_GATE), ar.width, ar.ffn_hidden, false);
        s.linear(&n::join(&b, n::AR_FFN_UP), ar.width, ar.ffn_hidden, false);
        s.linear(&n::join(&b, n::AR_FFN_DOWN), ar.ffn_hidden, ar.width, false);
        s.push(n::join(&n::join(&b, n::AR_ADALN), n::BIAS), vec![6 * ar.width], Kind::Vector);
    }
    s.push(n::join(n::AR_OUTPUT_NORM, n::WEIGHT), vec![ar.width], Kind::Vector);
    s.linear(n::AR_OUTPUT, ar.width, k, false);

    if let Some(v) = &cfg.vfm {
        s.projector(n::VFM_PROJ_ENC, e.width, v.projector_hidden, v.dim);
        s.projector(n::VFM_PROJ_DEC, dc.width, v.projector_hidden, v.dim);
    }
    s.0
}

/// Parameter counts per part, as `eostok-train describe` prints them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct ParamCounts {
    pub encoder: usize,
    pub decoder: usize,
    pub quantizer: usize,
    /// encoder + quantizer + decoder (no VFM projectors, discriminator or VFM).
    pub tokenizer: usize,
    pub ar: usize,
    /// Training-only heads (VFM projectors), counted apart.
    pub vfm_projectors: usize,
    /// tokenizer + ar.
    pub total: usize,
}

pub fn param_counts(cfg: &Config) -> ParamCounts {
    count_specs(&tensor_specs(cfg))
}

pub fn count_specs(specs: &[TensorSpec]) -> ParamCounts {
    let sum = |g: Group| specs.iter().filter(|s| s.group == g).map(TensorSpec::numel).sum::<usize>();
    let (encoder, decoder, quantizer, ar, aux) =
        (sum(Group::Encoder), sum(Group::Decoder), sum(Group::Quantizer), sum(Group::Ar), sum(Group::Aux));
    let tokenizer = encoder + decoder + quantizer;
    ParamCounts { encoder, decoder, quantizer, tokenizer, ar, vfm_projectors: aux, total: tokenizer + ar }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Paper (Table 3/9 via the re-implementation): tokenizer 165M (S/B/L),
    /// 388M (H); AR 93M, 164M, 312M, 644M. Ours must be within 5%.
    #[test]
    fn paper_presets_match_reported_counts() {
        let paper = [("S", 165e6, 93e6), ("B", 165e6, 164e6), ("L", 165e6, 312e6), ("H", 388e6, 644e6)];
        for (name, tok, ar) in paper {
            let c = param_counts(&Config::preset(name).unwrap());
            let rel_tok = (c.tokenizer as f64 - tok) / tok;
            let rel_ar = (c.ar as f64 - ar) / ar;
            assert!(rel_tok.abs() < 0.05, "{name} tokenizer {} vs {tok}: {rel_tok:+.3}", c.tokenizer);
            assert!(rel_ar.abs() < 0.05, "{name} AR {} vs {ar}: {rel_ar:+.3}", c.ar);
        }
    }

    #[test]
    fn names_unique_and_short() {
        for p in crate::config::PRESETS {
            let specs = tensor_specs(&Config::preset(p).unwrap());
            let mut names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
            assert!(names.iter().all(|n| n.len() <= 63 && (n.ends_with(".weight") || n.ends_with(".bias"))));
            names.sort();
            let before = names.len();
            names.dedup();
            assert_eq!(before, names.len(), "duplicate tensor names in {p}");
        }
    }

    #[test]
    fn tiny_counts_by_hand() {
        // A hand count of the tiny preset's AR model, independent of the spec code.
        let c = Config::preset("tiny").unwrap();
        let (d, k, h, l, classes) = (64, 256, 192, 16, 10);
        let block = d + 4 * d * d + d + 3 * d * h + 6 * d;
        let ar = k * d + l * d + (classes + 1) * d + (d * 6 * d + 6 * d) + 2 * block + d + d * k;
        assert_eq!(param_counts(&c).ar, ar);
        assert_eq!(param_counts(&c).quantizer, 256 * 16);
    }
}

//! Tensor names, shared by the checkpoint (safetensors), the quantizer and the
//! runtime (GGUF). One name per tensor everywhere: the GGUF file uses the same
//! names as `model.safetensors`.
//!
//! The AR model uses llama.cpp's names (`token_embd`, `blk.N.attn_q`, ...) so
//! generic GGUF tools show familiar names; the tokenizer's encoder and decoder
//! sit under `enc.` and `dec.` the way llama.cpp's vision towers use `v.`.
//! Every name is at most 63 bytes (GGUF limit).

/// Which part of the model a tensor belongs to (parameter groups, counts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Group {
    Encoder,
    Quantizer,
    Decoder,
    Ar,
    /// Training-only heads (VFM projectors, discriminator): not exported.
    Aux,
}

impl Group {
    pub fn of(name: &str) -> Group {
        if name.starts_with(ENC) {
            Group::Encoder
        } else if name.starts_with(DEC) {
            Group::Decoder
        } else if name.starts_with(QUANT) {
            Group::Quantizer
        } else if name.starts_with(AUX_VFM) || name.starts_with(AUX_DISC) {
            Group::Aux
        } else {
            Group::Ar
        }
    }
    /// Encoder, quantizer and decoder make the tokenizer.
    pub fn is_tokenizer(self) -> bool {
        matches!(self, Group::Encoder | Group::Quantizer | Group::Decoder)
    }
}

pub const ENC: &str = "enc.";
pub const DEC: &str = "dec.";
pub const QUANT: &str = "quant.";
pub const AUX_VFM: &str = "vfm_proj.";
pub const AUX_DISC: &str = "disc.";

// ---- encoder ----
/// Linear(P*P*C -> D) over flattened patches.
pub const ENC_PATCH_EMBD: &str = "enc.patch_embd";
/// [N, D] learned positions of the patches.
pub const ENC_POS_EMBD: &str = "enc.pos_embd";
/// [L, D] learnable latent queries.
pub const ENC_QUERIES: &str = "enc.queries";
/// LayerNorm over all encoder outputs (patches -> h_enc, queries -> z).
pub const ENC_OUTPUT_NORM: &str = "enc.output_norm";
/// Linear(D -> d): query outputs to latents z.
pub const ENC_LATENT_PROJ: &str = "enc.latent_proj";

// ---- quantizer ----
/// [K, d] codebook (l2-normalised on use).
pub const QUANT_CODEBOOK: &str = "quant.codebook";

// ---- decoder ----
/// Linear(d -> D): quantised latents into the decoder width.
pub const DEC_LATENT_PROJ: &str = "dec.latent_proj";
/// [L, D] positions of the latent tokens.
pub const DEC_LATENT_POS: &str = "dec.latent_pos_embd";
/// [D] the learnable mask token, one per patch position after adding positions.
pub const DEC_MASK_TOKEN: &str = "dec.mask_token";
/// [N, D] positions of the mask tokens.
pub const DEC_POS_EMBD: &str = "dec.pos_embd";
pub const DEC_OUTPUT_NORM: &str = "dec.output_norm";
/// Linear(D -> P*P*C): mask-token outputs to pixels.
pub const DEC_PIXEL_OUT: &str = "dec.pixel_out";

// ---- ViT blocks (encoder and decoder), prefix + "blk.N." ----
pub const VIT_ATTN_NORM: &str = "attn_norm";
/// Fused Linear(D -> 3D), q|k|v stacked on the output axis.
pub const VIT_ATTN_QKV: &str = "attn_qkv";
pub const VIT_ATTN_OUT: &str = "attn_output";
pub const VIT_FFN_NORM: &str = "ffn_norm";
pub const VIT_FFN_UP: &str = "ffn_up";
pub const VIT_FFN_DOWN: &str = "ffn_down";

// ---- AR transformer ----
/// [K, D_ar] input embedding (soft inputs: Ind^T E).
pub const AR_TOKEN_EMBD: &str = "token_embd";
/// [L, D_ar] learned absolute positions (class token at 0).
pub const AR_POS_EMBD: &str = "pos_embd";
/// [num_classes + 1, D_ar]; the last row is the null class.
pub const AR_CLS_EMBD: &str = "cls_embd";
/// Shared AdaLN modulation: SiLU(cls) -> Linear(D_ar -> 6 D_ar) at the top
/// level; inside each block only its `.bias` [6 D_ar] (shift, scale, gate for
/// attention, then for the MLP), added to the shared modulation.
pub const AR_ADALN: &str = "adaln";
pub const AR_OUTPUT_NORM: &str = "output_norm";
/// Linear(D_ar -> K) head, no bias.
pub const AR_OUTPUT: &str = "output";
pub const AR_ATTN_NORM: &str = "attn_norm";
pub const AR_ATTN_Q: &str = "attn_q";
pub const AR_ATTN_K: &str = "attn_k";
pub const AR_ATTN_V: &str = "attn_v";
pub const AR_ATTN_OUT: &str = "attn_output";
pub const AR_FFN_NORM: &str = "ffn_norm";
pub const AR_FFN_GATE: &str = "ffn_gate";
pub const AR_FFN_UP: &str = "ffn_up";
pub const AR_FFN_DOWN: &str = "ffn_down";

// ---- training-only heads ----
/// 3-layer SiLU MLP from encoder patch outputs to VFM features.
pub const VFM_PROJ_ENC: &str = "vfm_proj.enc";
/// 3-layer SiLU MLP from decoder mask-token hidden states to VFM features.
pub const VFM_PROJ_DEC: &str = "vfm_proj.dec";

/// Every tensor is a module path + ".weight" or ".bias" (GGUF convention),
/// including raw tables such as `enc.queries.weight` and `quant.codebook.weight`.
/// `prefix` + "blk.N" (prefix is "", "enc." or "dec.").
pub fn block(prefix: &str, n: usize) -> String {
    format!("{prefix}blk.{n}")
}

/// Joins a module path and a leaf: `join("blk.0", "attn_q") = "blk.0.attn_q"`.
pub fn join(a: &str, b: &str) -> String {
    if a.is_empty() {
        b.to_string()
    } else {
        format!("{a}.{b}")
    }
}

pub const WEIGHT: &str = "weight";
pub const BIAS: &str = "bias";

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn groups() {
        assert_eq!(Group::of("enc.blk.0.attn_qkv.weight"), Group::Encoder);
        assert_eq!(Group::of("dec.pixel_out.weight"), Group::Decoder);
        assert_eq!(Group::of("quant.codebook"), Group::Quantizer);
        assert_eq!(Group::of("blk.3.ffn_up.weight"), Group::Ar);
        assert_eq!(Group::of("token_embd.weight"), Group::Ar);
        assert_eq!(Group::of("vfm_proj.enc.0.weight"), Group::Aux);
        assert!(Group::Quantizer.is_tokenizer() && !Group::Ar.is_tokenizer() && !Group::Aux.is_tokenizer());
    }
}

//! The 1D tokenizer's encoder: [patches ‖ L learnable queries] through a
//! pre-LN ViT with the hybrid mask; query outputs become the latents z,
//! patch outputs (h_enc) feed the implicit VFM alignment.

use super::image::patchify;
use super::layers::{mask_from, table, LayerNorm, Linear, VitBlock, INIT_STD};
use crate::{names as n, Config};
use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

pub struct Encoder {
    pub patch_embd: Linear,
    pub pos_embd: Tensor,
    pub queries: Tensor,
    pub blocks: Vec<VitBlock>,
    pub output_norm: LayerNorm,
    pub latent_proj: Linear,
    patch_size: usize,
    num_patches: usize,
}

pub struct EncoderOut {
    /// [B, L, d] continuous latents.
    pub z: Tensor,
    /// [B, N, D] patch outputs after the final norm.
    pub h_enc: Tensor,
}

/// Hybrid mask over [N patches ‖ L queries]: patches see patches only;
/// query i sees every patch and queries 0..=i.
pub fn encoder_visible(n: usize) -> impl Fn(usize, usize) -> bool {
    move |i, j| if i < n { j < n } else { j < n || j <= i }
}

impl Encoder {
    pub fn new(vb: &VarBuilder, cfg: &Config) -> Result<Self> {
        let e = &cfg.encoder;
        let blocks = (0..e.depth)
            .map(|i| VitBlock::new(vb, &n::block(n::ENC, i), e, cfg.norm_eps))
            .collect::<Result<Vec<_>>>()?;
        Ok(Encoder {
            patch_embd: Linear::new(vb, n::ENC_PATCH_EMBD, cfg.patch_dim(), e.width, true)?,
            pos_embd: table(vb, n::ENC_POS_EMBD, cfg.num_patches(), e.width, INIT_STD)?,
            queries: table(vb, n::ENC_QUERIES, cfg.latent_tokens, e.width, INIT_STD)?,
            blocks,
            output_norm: LayerNorm::new(vb, n::ENC_OUTPUT_NORM, e.width, cfg.norm_eps)?,
            latent_proj: Linear::new(vb, n::ENC_LATENT_PROJ, e.width, cfg.codebook_dim, true)?,
            patch_size: cfg.patch_size,
            num_patches: cfg.num_patches(),
        })
    }

    /// The input sequence [B, N+L, D]: embedded patches ‖ queries.
    pub fn embed(&self, x: &Tensor) -> Result<Tensor> {
        let b = x.dim(0)?;
        let patches = self.patch_embd.forward(&patchify(x, self.patch_size)?)?.broadcast_add(&self.pos_embd)?;
        let (l, d) = self.queries.dims2()?;
        let queries = self.queries.unsqueeze(0)?.broadcast_as((b, l, d))?;
        Tensor::cat(&[&patches, &queries], 1)
    }

    /// Blocks + final norm over an embedded sequence [B, N+L, D].
    pub fn forward_tokens(&self, h: &Tensor) -> Result<Tensor> {
        let s = h.dim(1)?;
        let mask = mask_from(s, s, h.dtype(), h.device(), encoder_visible(self.num_patches))?;
        let mut h = h.clone();
        for blk in &self.blocks {
            h = blk.forward(&h, Some(&mask))?;
        }
        self.output_norm.forward(&h)
    }

    /// x: [B,C,H,W] in [-1, 1].
    pub fn forward(&self, x: &Tensor) -> Result<EncoderOut> {
        let h = self.forward_tokens(&self.embed(x)?)?;
        let np = self.num_patches;
        let l = h.dim(1)? - np;
        let h_enc = h.narrow(1, 0, np)?;
        let z = self.latent_proj.forward(&h.narrow(1, np, l)?)?;
        Ok(EncoderOut { z, h_enc })
    }
}

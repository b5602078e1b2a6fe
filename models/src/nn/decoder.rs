//! The 1D tokenizer's decoder: [k <= L quantised latents ‖ N mask tokens]
//! through a pre-LN ViT. Latents are causal among themselves and never see
//! mask tokens; mask tokens see everything kept. Mask-token outputs become
//! pixels (un-patchified).

use super::image::unpatchify;
use super::layers::{mask_from, table, LayerNorm, Linear, VitBlock, INIT_STD};
use crate::{names as n, Config};
use candle_core::{Module, Result, Tensor};
use candle_nn::{Init, VarBuilder};

pub struct Decoder {
    pub latent_proj: Linear,
    pub latent_pos: Tensor,
    pub mask_token: Tensor,
    pub pos_embd: Tensor,
    pub blocks: Vec<VitBlock>,
    pub output_norm: LayerNorm,
    pub pixel_out: Linear,
    patch_size: usize,
    channels: usize,
    num_patches: usize,
    align_block: Option<usize>,
}

pub struct DecoderOut {
    /// [B, C, H, W], trained towards [-1, 1].
    pub image: Tensor,
    /// [B, N, D] mask-token hidden states after the alignment block.
    pub align_hidden: Option<Tensor>,
}

/// Visibility over [k latents ‖ N masks] when only the first `keep` latents
/// are kept (nested dropout): latent i sees latents 0..=i; a mask token sees
/// the kept latents and every mask token.
pub fn decoder_visible(k: usize, keep: usize) -> impl Fn(usize, usize) -> bool {
    move |i, j| if i < k { j <= i } else { j >= k || j < keep }
}

impl Decoder {
    pub fn new(vb: &VarBuilder, cfg: &Config) -> Result<Self> {
        let dc = &cfg.decoder;
        let blocks = (0..dc.depth)
            .map(|i| VitBlock::new(vb, &n::block(n::DEC, i), dc, cfg.norm_eps))
            .collect::<Result<Vec<_>>>()?;
        Ok(Decoder {
            latent_proj: Linear::new(vb, n::DEC_LATENT_PROJ, cfg.codebook_dim, dc.width, true)?,
            latent_pos: table(vb, n::DEC_LATENT_POS, cfg.latent_tokens, dc.width, INIT_STD)?,
            mask_token: vb.get_with_hints(dc.width, &n::join(n::DEC_MASK_TOKEN, n::WEIGHT), Init::Randn { mean: 0.0, stdev: INIT_STD })?,
            pos_embd: table(vb, n::DEC_POS_EMBD, cfg.num_patches(), dc.width, INIT_STD)?,
            blocks,
            output_norm: LayerNorm::new(vb, n::DEC_OUTPUT_NORM, dc.width, cfg.norm_eps)?,
            pixel_out: Linear::new(vb, n::DEC_PIXEL_OUT, dc.width, cfg.patch_dim(), true)?,
            patch_size: cfg.patch_size,
            channels: cfg.channels,
            num_patches: cfg.num_patches(),
            align_block: cfg.decoder_align_block(),
        })
    }

    /// The input sequence [B, k+N, D]: projected latents ‖ mask tokens.
    pub fn embed(&self, z_q: &Tensor) -> Result<Tensor> {
        let (b, k, _) = z_q.dims3()?;
        let latents = self.latent_proj.forward(z_q)?.broadcast_add(&self.latent_pos.narrow(0, 0, k)?)?;
        let d = self.pos_embd.dim(1)?;
        let masks = self.pos_embd.broadcast_add(&self.mask_token)?.unsqueeze(0)?.broadcast_as((b, self.num_patches, d))?;
        Tensor::cat(&[&latents, &masks], 1)
    }

    /// Blocks + final norm over an embedded sequence [B, k+N, D]; also the
    /// mask-token states after the alignment block.
    pub fn forward_tokens(&self, h: &Tensor, keep: Option<&[usize]>) -> Result<(Tensor, Option<Tensor>)> {
        let (b, s, _) = h.dims3()?;
        let k = s - self.num_patches;
        let (dev, dtype) = (h.device(), h.dtype());
        let mask = match keep {
            Some(keep) if keep.iter().any(|&kk| kk < k) => {
                if keep.len() != b {
                    candle_core::bail!("decoder: {} keep lengths for a batch of {b}", keep.len());
                }
                let rows = keep
                    .iter()
                    .map(|&kk| mask_from(s, s, dtype, dev, decoder_visible(k, kk.clamp(1, k))))
                    .collect::<Result<Vec<_>>>()?;
                Tensor::stack(&rows, 0)?.unsqueeze(1)?
            }
            _ => mask_from(s, s, dtype, dev, decoder_visible(k, k))?,
        };
        let mut h = h.clone();
        let mut align_hidden = None;
        for (i, blk) in self.blocks.iter().enumerate() {
            h = blk.forward(&h, Some(&mask))?;
            if Some(i) == self.align_block {
                align_hidden = Some(h.narrow(1, k, self.num_patches)?);
            }
        }
        Ok((self.output_norm.forward(&h)?, align_hidden))
    }

    /// z_q: [B, k, d] with 1 <= k <= L. `keep`: per-sample number of latents
    /// kept (nested dropout); None keeps all k.
    pub fn forward(&self, z_q: &Tensor, keep: Option<&[usize]>) -> Result<DecoderOut> {
        let k = z_q.dim(1)?;
        let (h, align_hidden) = self.forward_tokens(&self.embed(z_q)?, keep)?;
        let pixels = self.pixel_out.forward(&h.narrow(1, k, self.num_patches)?)?;
        Ok(DecoderOut { image: unpatchify(&pixels, self.patch_size, self.channels)?, align_hidden })
    }
}

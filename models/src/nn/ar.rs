//! The class-conditional AR transformer (LlamaGen-style): RMSNorm, SwiGLU,
//! learned absolute positions, the class embedding as first token and as the
//! source of one shared AdaLN modulation plus a per-block bias. Inputs are
//! soft embeddings Ind^T E in training, so next-token loss reaches the
//! tokenizer; hard ids select the same rows at inference.

use super::layers::{attention, mask_from, merge_heads, split_heads, table, Linear, RmsNorm, SwiGlu, INIT_STD};
use crate::sampling::SplitMix64;
use crate::{names as n, Config};
use candle_core::{Module, Result, Tensor, D};
use candle_nn::{Init, VarBuilder};

pub struct ArBlock {
    pub attn_norm: RmsNorm,
    pub q: Linear,
    pub k: Linear,
    pub v: Linear,
    pub o: Linear,
    pub ffn_norm: RmsNorm,
    pub mlp: SwiGlu,
    /// [6 D] per-block bias on the shared modulation.
    pub adaln_bias: Tensor,
    heads: usize,
}

/// Per-layer key/value cache: [B, H, t, hd] each.
#[derive(Default)]
pub struct KvCache {
    pub layers: Vec<Option<(Tensor, Tensor)>>,
}

impl KvCache {
    pub fn new(depth: usize) -> Self {
        KvCache { layers: vec![None; depth] }
    }
    /// Tokens already cached.
    pub fn len(&self) -> usize {
        self.layers.first().and_then(|l| l.as_ref()).map(|(k, _)| k.dim(2).unwrap_or(0)).unwrap_or(0)
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl ArBlock {
    fn new(vb: &VarBuilder, i: usize, cfg: &Config) -> Result<Self> {
        let (d, b) = (cfg.ar.width, n::block("", i));
        let p = |leaf| n::join(&b, leaf);
        Ok(ArBlock {
            attn_norm: RmsNorm::new(vb, &p(n::AR_ATTN_NORM), d, cfg.rms_eps)?,
            q: Linear::new(vb, &p(n::AR_ATTN_Q), d, d, false)?,
            k: Linear::new(vb, &p(n::AR_ATTN_K), d, d, false)?,
            v: Linear::new(vb, &p(n::AR_ATTN_V), d, d, false)?,
            o: Linear::new(vb, &p(n::AR_ATTN_OUT), d, d, false)?,
            ffn_norm: RmsNorm::new(vb, &p(n::AR_FFN_NORM), d, cfg.rms_eps)?,
            mlp: SwiGlu::new(vb, &b, d, cfg.ar.ffn_hidden)?,
            adaln_bias: vb.get_with_hints(6 * d, &n::join(&p(n::AR_ADALN), n::BIAS), Init::Const(0.0))?,
            heads: cfg.ar.heads,
        })
    }

    /// x: [B,T,D]; modulation: [B, 6D] shared part; cache: this layer's K/V.
    pub fn forward(&self, x: &Tensor, modulation: &Tensor, mask: Option<&Tensor>, cache: Option<&mut Option<(Tensor, Tensor)>>) -> Result<Tensor> {
        let m = modulation.broadcast_add(&self.adaln_bias)?.unsqueeze(1)?.chunk(6, D::Minus1)?;
        let (shift_a, scale_a, gate_a, shift_m, scale_m, gate_m) = (&m[0], &m[1], &m[2], &m[3], &m[4], &m[5]);
        let h = modulate(&self.attn_norm.forward(x)?, shift_a, scale_a)?;
        let q = split_heads(&self.q.forward(&h)?, self.heads)?;
        let mut k = split_heads(&self.k.forward(&h)?, self.heads)?;
        let mut v = split_heads(&self.v.forward(&h)?, self.heads)?;
        if let Some(slot) = cache {
            if let Some((pk, pv)) = slot.as_ref() {
                k = Tensor::cat(&[pk, &k], 2)?;
                v = Tensor::cat(&[pv, &v], 2)?;
            }
            *slot = Some((k.clone(), v.clone()));
        }
        let a = merge_heads(&attention(&q, &k, &v, mask)?)?;
        let x = (x + self.o.forward(&a)?.broadcast_mul(gate_a)?)?;
        let h = modulate(&self.ffn_norm.forward(&x)?, shift_m, scale_m)?;
        x + self.mlp.forward(&h)?.broadcast_mul(gate_m)?
    }
}

/// AdaLN: x * (1 + scale) + shift.
fn modulate(x: &Tensor, shift: &Tensor, scale: &Tensor) -> Result<Tensor> {
    x.broadcast_mul(&(scale + 1.0)?)?.broadcast_add(shift)
}

pub struct ArTransformer {
    pub token_embd: Tensor,
    pub pos_embd: Tensor,
    pub cls_embd: Tensor,
    pub adaln: Linear,
    pub blocks: Vec<ArBlock>,
    pub output_norm: RmsNorm,
    pub output: Linear,
    pub null_class: u32,
    pub class_dropout: f64,
}

impl ArTransformer {
    pub fn new(vb: &VarBuilder, cfg: &Config) -> Result<Self> {
        let (d, k) = (cfg.ar.width, cfg.codebook_size);
        Ok(ArTransformer {
            token_embd: table(vb, n::AR_TOKEN_EMBD, k, d, INIT_STD)?,
            pos_embd: table(vb, n::AR_POS_EMBD, cfg.latent_tokens, d, INIT_STD)?,
            cls_embd: table(vb, n::AR_CLS_EMBD, cfg.num_classes + 1, d, INIT_STD)?,
            adaln: Linear::new(vb, n::AR_ADALN, d, 6 * d, true)?,
            blocks: (0..cfg.ar.depth).map(|i| ArBlock::new(vb, i, cfg)).collect::<Result<_>>()?,
            output_norm: RmsNorm::new(vb, n::AR_OUTPUT_NORM, d, cfg.rms_eps)?,
            output: Linear::new(vb, n::AR_OUTPUT, d, k, false)?,
            null_class: cfg.null_class() as u32,
            class_dropout: cfg.class_dropout,
        })
    }

    pub fn depth(&self) -> usize {
        self.blocks.len()
    }

    /// [B] u32 class ids -> [B, D] class embeddings.
    pub fn class_embedding(&self, classes: &Tensor) -> Result<Tensor> {
        self.cls_embd.index_select(classes, 0)
    }

    /// Shared AdaLN modulation [B, 6D] from class embeddings [B, D].
    pub fn modulation(&self, cls: &Tensor) -> Result<Tensor> {
        self.adaln.forward(&cls.silu()?)
    }

    /// Core pass: `inputs` [B,T,D] are the embeddings at positions
    /// start..start+T (the class embedding at position 0). With a cache the
    /// keys/values of earlier positions are reused. Returns logits [B,T,K].
    pub fn forward_embeddings(&self, inputs: &Tensor, modulation: &Tensor, cache: Option<&mut KvCache>) -> Result<Tensor> {
        let (_, t, _) = inputs.dims3()?;
        let start = cache.as_ref().map(|c| c.len()).unwrap_or(0);
        let mut x = inputs.broadcast_add(&self.pos_embd.narrow(0, start, t)?)?;
        // Query i (absolute start+i) sees keys 0..=start+i.
        let mask = if t > 1 { Some(mask_from(t, start + t, x.dtype(), x.device(), |i, j| j <= start + i)?) } else { None };
        match cache {
            Some(cache) => {
                for (blk, slot) in self.blocks.iter().zip(cache.layers.iter_mut()) {
                    x = blk.forward(&x, modulation, mask.as_ref(), Some(slot))?;
                }
            }
            None => {
                for blk in &self.blocks {
                    x = blk.forward(&x, modulation, mask.as_ref(), None)?;
                }
            }
        }
        self.output.forward(&self.output_norm.forward(&x)?)
    }

    /// Teacher-forced training pass on soft one-hots `ind` [B, L, K]:
    /// inputs [class, Ind_0 E, ..., Ind_{L-2} E], logits [B, L, K] predict
    /// tokens 0..L-1.
    pub fn forward_soft(&self, ind: &Tensor, classes: &Tensor) -> Result<Tensor> {
        let (b, l, k) = ind.dims3()?;
        let cls = self.class_embedding(classes)?;
        let d = cls.dim(1)?;
        let tokens = ind.narrow(1, 0, l - 1)?.reshape((b * (l - 1), k))?.matmul(&self.token_embd)?.reshape((b, l - 1, d))?;
        let inputs = Tensor::cat(&[&cls.unsqueeze(1)?, &tokens], 1)?;
        self.forward_embeddings(&inputs, &self.modulation(&cls)?, None)
    }

    /// Training forward: class-label dropout to the null class (for CFG),
    /// then `forward_soft`. Returns the logits and the classes used.
    pub fn forward_train(&self, ind: &Tensor, classes: &[u32], rng: &mut SplitMix64) -> Result<(Tensor, Vec<u32>)> {
        let used = drop_classes(classes, self.class_dropout, self.null_class, rng);
        let t = Tensor::new(used.as_slice(), ind.device())?;
        Ok((self.forward_soft(ind, &t)?, used))
    }

    /// Full (uncached) pass on hard ids [B, T] (T <= L-1): logits [B, T+1, K].
    pub fn forward_ids(&self, ids: &Tensor, classes: &Tensor) -> Result<Tensor> {
        let cls = self.class_embedding(classes)?;
        let mut parts = vec![cls.unsqueeze(1)?];
        if ids.dim(1)? > 0 {
            let (b, t) = ids.dims2()?;
            parts.push(self.token_embd.index_select(&ids.flatten_all()?, 0)?.reshape((b, t, cls.dim(1)?))?);
        }
        self.forward_embeddings(&Tensor::cat(&parts, 1)?, &self.modulation(&cls)?, None)
    }
}

/// Replace each class by `null` with probability `p`.
pub fn drop_classes(classes: &[u32], p: f64, null: u32, rng: &mut SplitMix64) -> Vec<u32> {
    classes.iter().map(|&c| if p > 0.0 && rng.uniform() < p { null } else { c }).collect()
}

//! IBQ (index backpropagation quantization): cosine logits / tau over an
//! l2-normalised codebook, softmax, and a straight-through one-hot so the
//! forward pass is a hard code while gradients reach every code and z.

use super::layers::{l2_normalize, softmax, straight_through_one_hot, table};
use crate::{names as n, Config};
use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

pub struct Ibq {
    /// [K, d] raw codebook; always used l2-normalised.
    pub codebook: Tensor,
    pub tau: f64,
}

pub struct IbqOut {
    /// [B, L, d] quantised latents (forward: normalised code rows).
    pub z_q: Tensor,
    /// [B, L, K] straight-through one-hot (soft AR inputs use it).
    pub ind: Tensor,
    /// [B, L, K] softmax probabilities.
    pub probs: Tensor,
    /// [B, L] u32 code ids.
    pub ids: Tensor,
    /// [B, L, d] l2-normalised z (for the commitment loss).
    pub z_norm: Tensor,
}

impl Ibq {
    pub fn new(vb: &VarBuilder, cfg: &Config) -> Result<Self> {
        Ok(Ibq { codebook: table(vb, n::QUANT_CODEBOOK, cfg.codebook_size, cfg.codebook_dim, 1.0)?, tau: cfg.tau })
    }

    /// The codebook as used: rows of unit length.
    pub fn normalized_codebook(&self) -> Result<Tensor> {
        l2_normalize(&self.codebook)
    }

    /// z: [B, L, d].
    pub fn forward(&self, z: &Tensor) -> Result<IbqOut> {
        let (b, l, d) = z.dims3()?;
        let cb = self.normalized_codebook()?;
        let z_norm = l2_normalize(z)?;
        let logits = (z_norm.reshape((b * l, d))?.matmul(&cb.t()?)? / self.tau)?;
        let probs = softmax(&logits)?;
        let (ind, ids) = straight_through_one_hot(&probs)?;
        let z_q = ind.matmul(&cb)?.reshape((b, l, d))?;
        let k = cb.dim(0)?;
        Ok(IbqOut {
            z_q,
            ind: ind.reshape((b, l, k))?,
            probs: probs.reshape((b, l, k))?,
            ids: ids.reshape((b, l))?,
            z_norm,
        })
    }

    /// Map a straight-through one-hot [.., K] onto code vectors [.., d]
    /// (APR: the AR model's predictions back into the decoder's space).
    pub fn embed_one_hot(&self, ind: &Tensor) -> Result<Tensor> {
        let cb = self.normalized_codebook()?;
        let dims = ind.dims().to_vec();
        let k = *dims.last().expect("one-hot has a last dim");
        let rows = ind.elem_count() / k;
        let mut out = dims;
        *out.last_mut().expect("non-empty") = cb.dim(1)?;
        ind.reshape((rows, k))?.matmul(&cb)?.reshape(out)
    }

    /// Code vectors for hard ids [B, T] (inference).
    pub fn lookup(&self, ids: &Tensor) -> Result<Tensor> {
        let cb = self.normalized_codebook()?;
        let (b, t) = ids.dims2()?;
        cb.index_select(&ids.flatten_all()?, 0)?.reshape((b, t, cb.dim(1)?))
    }
}

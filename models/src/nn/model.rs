//! The whole EOSTok model: tokenizer (encoder, IBQ, decoder), AR transformer
//! and the training-only VFM projectors, built from one `Config`.

use super::ar::ArTransformer;
use super::decoder::Decoder;
use super::encoder::Encoder;
use super::ibq::Ibq;
use super::layers::Projector;
use super::params::ParamStore;
use super::sample::{sample_tokens, GenerateOptions};
use crate::{names as n, Config};
use candle_core::{DType, Device, Result, Tensor};
use candle_nn::VarBuilder;
use std::collections::HashMap;

pub struct Eostok {
    pub cfg: Config,
    pub encoder: Encoder,
    pub ibq: Ibq,
    pub decoder: Decoder,
    pub ar: ArTransformer,
    pub vfm_enc: Option<Projector>,
    pub vfm_dec: Option<Projector>,
}

impl Eostok {
    pub fn new(cfg: &Config, vb: &VarBuilder) -> Result<Self> {
        let (vfm_enc, vfm_dec) = match &cfg.vfm {
            Some(v) => (
                Some(Projector::new(vb, n::VFM_PROJ_ENC, cfg.encoder.width, v.projector_hidden, v.dim)?),
                Some(Projector::new(vb, n::VFM_PROJ_DEC, cfg.decoder.width, v.projector_hidden, v.dim)?),
            ),
            None => (None, None),
        };
        Ok(Eostok {
            cfg: cfg.clone(),
            encoder: Encoder::new(vb, cfg)?,
            ibq: Ibq::new(vb, cfg)?,
            decoder: Decoder::new(vb, cfg)?,
            ar: ArTransformer::new(vb, cfg)?,
            vfm_enc,
            vfm_dec,
        })
    }

    /// A freshly initialised model and its parameter store.
    pub fn random(cfg: &Config, seed: u64, dtype: DType, dev: &Device) -> Result<(Self, ParamStore)> {
        let store = ParamStore::random(seed);
        let model = Eostok::new(cfg, &store.var_builder(dtype, dev))?;
        Ok((model, store))
    }

    /// A model from named tensors (a checkpoint); every tensor the config
    /// needs must be present with its shape, and no extra one may be left.
    pub fn from_tensors(cfg: &Config, tensors: HashMap<String, Tensor>, dtype: DType, dev: &Device) -> Result<(Self, ParamStore)> {
        let store = ParamStore::from_tensors(tensors);
        let model = Eostok::new(cfg, &store.var_builder(dtype, dev))?;
        let unused = store.unused_names();
        if !unused.is_empty() {
            candle_core::bail!("checkpoint has tensors the config does not use: {}", unused.join(", "));
        }
        Ok((model, store))
    }

    /// Code ids [B, k] (k <= L) -> images [B, C, H, W] in about [-1, 1].
    pub fn decode_ids(&self, ids: &Tensor) -> Result<Tensor> {
        Ok(self.decoder.forward(&self.ibq.lookup(ids)?, None)?.image)
    }

    /// Class-conditional generation: tokens with the KV-cached sampler, then
    /// the decoder. Returns (ids [B][L], images [B,C,H,W]).
    pub fn generate(&self, classes: &[u32], opts: &GenerateOptions) -> Result<(Vec<Vec<u32>>, Tensor)> {
        let trace = sample_tokens(&self.ar, classes, self.cfg.latent_tokens, opts, false)?;
        let flat: Vec<u32> = trace.ids.iter().flatten().copied().collect();
        let ids = Tensor::from_vec(flat, (classes.len(), self.cfg.latent_tokens), self.ar.token_embd.device())?;
        let images = self.decode_ids(&ids)?;
        Ok((trace.ids, images))
    }
}

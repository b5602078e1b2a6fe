//! Reference AR sampling with a KV cache, in candle: the numerical reference
//! the runtime is tested against. One RNG for the batch; at each step rows
//! are sampled in order 0..B (the runtime does the same).

use super::ar::{ArTransformer, KvCache};
use crate::sampling::{guide, pick_token, SplitMix64, TokenSampling};
use candle_core::{DType, Result, Tensor};

#[derive(Debug, Clone)]
pub struct GenerateOptions {
    pub sampling: TokenSampling,
    /// Classifier-free guidance scale; 1 = no guidance (no null-class pass).
    pub cfg_scale: f64,
    pub seed: u64,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions { sampling: TokenSampling::default(), cfg_scale: 1.0, seed: 0 }
    }
}

pub struct SampleTrace {
    /// [B][L] sampled code ids.
    pub ids: Vec<Vec<u32>>,
    /// [step][B][K] the (guided) logits each token was drawn from, when asked.
    pub logits: Vec<Vec<Vec<f32>>>,
}

/// Sample `num_tokens` tokens for each class with a KV cache.
pub fn sample_tokens(ar: &ArTransformer, classes: &[u32], num_tokens: usize, opts: &GenerateOptions, record_logits: bool) -> Result<SampleTrace> {
    let dev = ar.token_embd.device().clone();
    let b = classes.len();
    let guided = opts.cfg_scale != 1.0;
    let mut rows: Vec<u32> = classes.to_vec();
    if guided {
        rows.extend(std::iter::repeat_n(ar.null_class, b));
    }
    let cls = ar.class_embedding(&Tensor::new(rows.as_slice(), &dev)?)?;
    let modulation = ar.modulation(&cls)?;
    let mut cache = KvCache::new(ar.depth());
    let mut rng = SplitMix64::new(opts.seed);
    let mut ids = vec![Vec::with_capacity(num_tokens); b];
    let mut trace = Vec::new();
    let mut input = cls.unsqueeze(1)?;
    for _step in 0..num_tokens {
        let logits = ar.forward_embeddings(&input, &modulation, Some(&mut cache))?;
        let logits: Vec<Vec<f32>> = logits.squeeze(1)?.to_dtype(DType::F32)?.to_vec2()?;
        let mut chosen = Vec::with_capacity(b);
        let mut step_logits = Vec::with_capacity(b);
        for i in 0..b {
            let mut l = logits[i].clone();
            if guided {
                guide(&mut l, &logits[b + i], opts.cfg_scale as f32);
            }
            let t = pick_token(&l, &opts.sampling, &mut rng);
            ids[i].push(t);
            chosen.push(t);
            if record_logits {
                step_logits.push(l);
            }
        }
        if record_logits {
            trace.push(step_logits);
        }
        let mut next = chosen.clone();
        if guided {
            next.extend_from_slice(&chosen);
        }
        let d = cls.dim(1)?;
        input = ar.token_embd.index_select(&Tensor::new(next.as_slice(), &dev)?, 0)?.reshape((rows.len(), 1, d))?;
    }
    Ok(SampleTrace { ids, logits: trace })
}

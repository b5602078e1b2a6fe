//! Class-conditional sampling with the KV cache: the same token choice as
//! the candle reference (`eostok_models::sampling`), one RNG per call, rows
//! sampled in order; CFG's null-class rows are batched behind the
//! conditional rows so both share every weight read.

use crate::model::Model;
use anyhow::Result;
use eostok_models::sampling::{guide, pick_token, SplitMix64, TokenSampling};

#[derive(Debug, Clone)]
pub struct GenerateOptions {
    pub sampling: TokenSampling,
    /// Classifier-free guidance scale; 1 = off.
    pub cfg_scale: f32,
    pub seed: u64,
}

/// Tokens of each image, plus optionally the logits each was drawn from.
pub struct Generated {
    pub ids: Vec<Vec<u32>>,
    pub logits: Vec<Vec<Vec<f32>>>,
}

/// Sample `num_tokens` tokens per class. `on_step` is called after each step.
pub fn generate(model: &Model, classes: &[u32], num_tokens: usize, opts: &GenerateOptions, record_logits: bool, mut on_step: impl FnMut(usize)) -> Result<Generated> {
    let ar = &model.ar;
    let b = classes.len();
    let guided = opts.cfg_scale != 1.0;
    let mut rows = classes.to_vec();
    if guided {
        rows.extend(std::iter::repeat_n(ar.null_class(), b));
    }
    let (mut state, mut inputs) = ar.start(&rows)?;
    let mut rng = SplitMix64::new(opts.seed);
    let mut ids = vec![Vec::with_capacity(num_tokens); b];
    let mut trace = vec![];
    let k = ar.codes;
    for step in 0..num_tokens.min(ar.context) {
        let logits = ar.step(&mut state, &inputs)?;
        let mut chosen = Vec::with_capacity(rows.len());
        let mut step_logits = vec![];
        for i in 0..b {
            let mut l = logits[i * k..(i + 1) * k].to_vec();
            if guided {
                guide(&mut l, &logits[(b + i) * k..(b + i + 1) * k], opts.cfg_scale);
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
        if guided {
            chosen.extend_from_slice(&chosen.clone());
        }
        inputs = ar.embed_tokens(&chosen)?;
        on_step(step);
    }
    Ok(Generated { ids, logits: trace })
}

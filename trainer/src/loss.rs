//! The loss terms of EOSTok (paper.md §3), each a small function of tensors.
//! The joint step that combines them lives in `joint.rs`.

use candle_core::{Result, Tensor, D};
use eostok_models::nn::layers::l2_normalize;

/// Mean squared error over all elements.
pub fn mse(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    (a - b)?.sqr()?.mean_all()
}

/// Mean absolute error over all elements.
pub fn l1(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    (a - b)?.abs()?.mean_all()
}

/// log-softmax over the last dim from differentiable primitives.
pub fn log_softmax(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let shifted = x.broadcast_sub(&max)?;
    let lse = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
    shifted.broadcast_sub(&lse)
}

/// Mean cross-entropy of logits [.., K] against u32 targets [..].
pub fn cross_entropy(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let k = logits.dim(D::Minus1)?;
    let rows = logits.elem_count() / k;
    let logp = log_softmax(&logits.reshape((rows, k))?)?;
    let picked = logp.gather(&targets.reshape((rows, 1))?, 1)?;
    picked.mean_all()?.neg()
}

/// Top-1 accuracy (no gradient) of logits [.., K] against targets [..].
pub fn accuracy(logits: &Tensor, targets: &Tensor) -> Result<f32> {
    let pred = logits.argmax(D::Minus1)?;
    let eq = pred.eq(targets)?.to_dtype(candle_core::DType::F32)?;
    eq.mean_all()?.to_scalar::<f32>()
}

/// VQ commitment: codebook term ||sg(z) - z_q||² + beta ||z - sg(z_q)||²
/// on the l2-normalised vectors IBQ uses.
pub fn commitment(z_norm: &Tensor, z_q: &Tensor, beta: f64) -> Result<Tensor> {
    let codebook = mse(&z_norm.detach(), z_q)?;
    let commit = mse(z_norm, &z_q.detach())?;
    codebook + (commit * beta)?
}

/// MAGVIT-v2 entropy regulariser on code probabilities p [.., K]: mean
/// per-token entropy (small = confident) minus the entropy of the mean
/// distribution (large = every code used).
pub fn entropy_penalty(probs: &Tensor) -> Result<Tensor> {
    let k = probs.dim(D::Minus1)?;
    let p = probs.reshape((probs.elem_count() / k, k))?;
    let eps = 1e-8;
    let per_token = (&p * (&p + eps)?.log()?)?.sum_keepdim(1)?.mean_all()?.neg()?;
    let avg = p.mean_keepdim(0)?;
    let codebook = (&avg * (&avg + eps)?.log()?)?.sum_all()?.neg()?;
    per_token - codebook
}

/// [`entropy_penalty`] of one rank's slice of a data-parallel batch (`world` equal
/// slices). The per-token term is a mean and averages across ranks like every other
/// term; the codebook term is an entropy of the *global* mean distribution: `reduce`
/// sums the ranks' per-code sums (no gradient crosses it), this rank's own sum keeps its
/// gradient, and the term is scaled by `world` in the gradient only, so that the mean
/// of the ranks' gradients equals the single-process gradient of the whole batch. The
/// value is this rank's per-token term minus the global codebook term.
pub fn entropy_penalty_synced(probs: &Tensor, world: usize, reduce: impl Fn(&Tensor) -> Result<Tensor>) -> Result<Tensor> {
    let k = probs.dim(D::Minus1)?;
    let rows = probs.elem_count() / k;
    let p = probs.reshape((rows, k))?;
    let eps = 1e-8;
    let per_token = (&p * (&p + eps)?.log()?)?.sum_keepdim(1)?.mean_all()?.neg()?;
    let local = p.sum_keepdim(0)?;
    let global = reduce(&local.detach())?.reshape(local.shape())?;
    // Value: global sum / all rows; gradient: d/d(local) of the same.
    let avg = ((&local + (global - &local)?.detach())? / (rows * world) as f64)?;
    let codebook = (&avg * (&avg + eps)?.log()?)?.sum_all()?.neg()?;
    let w = world as f64;
    // value -codebook, gradient -world * d(codebook)
    per_token - ((&codebook * w)? - (codebook.detach() * (w - 1.0))?)?
}

/// 1 - mean cosine similarity between projected features and targets
/// [B, N, F] (REPA; targets are frozen VFM features).
pub fn cosine_alignment(pred: &Tensor, target: &Tensor) -> Result<Tensor> {
    let cos = (l2_normalize(pred)? * l2_normalize(&target.detach())?)?.sum(D::Minus1)?;
    cos.mean_all()?.affine(-1.0, 1.0)
}

/// Codebook usage statistics of a batch of code ids: (fraction of the K
/// codes used, perplexity of the empirical code distribution).
pub fn codebook_stats(ids: &[u32], k: usize) -> (f64, f64) {
    let mut counts = vec![0usize; k];
    for &i in ids {
        if let Some(c) = counts.get_mut(i as usize) {
            *c += 1;
        }
    }
    let n = ids.len().max(1) as f64;
    let used = counts.iter().filter(|&&c| c > 0).count() as f64 / k as f64;
    let h: f64 = counts.iter().filter(|&&c| c > 0).map(|&c| c as f64 / n).map(|p| -p * p.ln()).sum();
    (used, h.exp())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn cross_entropy_matches_hand_value() {
        let logits = Tensor::new(&[[0f32, 0f32.ln().max(-30.0), 1f32.ln()]], &Device::Cpu).unwrap();
        let t = Tensor::new(&[0u32], &Device::Cpu).unwrap();
        let ce = cross_entropy(&logits, &t).unwrap().to_scalar::<f32>().unwrap();
        // p0 = 1 / (1 + e^-30 + 1)
        assert!((ce - 2f32.ln()).abs() < 1e-5, "{ce}");
    }

    #[test]
    fn codebook_stats_by_hand() {
        let (used, ppl) = codebook_stats(&[0, 0, 1, 1], 4);
        assert_eq!(used, 0.5);
        assert!((ppl - 2.0).abs() < 1e-12);
    }

    #[test]
    fn entropy_penalty_prefers_confident_diverse_codes() {
        let d = Device::Cpu;
        let confident_diverse = Tensor::new(&[[1f32, 0.0], [0.0, 1.0]], &d).unwrap();
        let uniform = Tensor::new(&[[0.5f32, 0.5], [0.5, 0.5]], &d).unwrap();
        let collapsed = Tensor::new(&[[1f32, 0.0], [1.0, 0.0]], &d).unwrap();
        let v = |t: &Tensor| entropy_penalty(t).unwrap().to_scalar::<f32>().unwrap();
        assert!(v(&confident_diverse) < v(&uniform));
        assert!(v(&confident_diverse) < v(&collapsed));
    }
}

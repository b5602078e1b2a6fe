//! The joint EOSTok forward pass and its loss (paper.md §3.6):
//!
//! L = L2 (+L1) + commit + entropy + λ_NTP·CE(AR(soft Ind), ids)
//!     + λ_APR·L2(D(STE(AR logits)·Ĉ), x) + λ_sem·(implicit + decoder alignment)
//!
//! Reconstruction and APR images are decoded in one decoder batch; nested
//! dropout keeps a per-sample prefix of the latents for both halves; NTP
//! always sees all L tokens.

use crate::loss::{commitment, cosine_alignment, cross_entropy, entropy_penalty, entropy_penalty_synced, l1, mse};
use candle_core::{Module, Result, Tensor};
use eostok_models::nn::layers::{softmax, straight_through_one_hot};
use eostok_models::nn::Eostok;
use eostok_models::sampling::SplitMix64;
use serde::{Deserialize, Serialize};

/// Loss weights and switches; defaults follow the paper where it gives them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LossConfig {
    pub l2: f64,
    pub l1: f64,
    /// LPIPS on the reconstruction (when a LPIPS net is given).
    pub lpips: f64,
    /// Codebook + β·commitment on normalised vectors.
    pub commit: f64,
    pub commit_beta: f64,
    pub entropy: f64,
    /// λ_NTP (paper: 0.1 for S/B/L).
    pub ntp: f64,
    /// λ_APR; 0 turns APR off (NTP-only E2E).
    pub apr: f64,
    /// λ_sem for the implicit encoder alignment.
    pub vfm_implicit: f64,
    /// λ_sem for the decoder (REPA) alignment.
    pub vfm_decoder: f64,
    /// Probability that a sample's decoder input is cut to a random prefix.
    pub nested_dropout: f64,
}

impl Default for LossConfig {
    fn default() -> Self {
        LossConfig {
            l2: 1.0,
            l1: 0.0,
            lpips: 1.0,
            commit: 1e-3,
            commit_beta: 0.25,
            entropy: 0.01,
            ntp: 0.1,
            apr: 1.0,
            vfm_implicit: 1.0,
            vfm_decoder: 1.0,
            nested_dropout: 0.5,
        }
    }
}

pub struct Batch {
    /// [B, C, H, W] in [-1, 1].
    pub images: Tensor,
    pub classes: Vec<u32>,
    /// Frozen VFM patch features on the tokenizer's grid [B, N, F], if any.
    pub vfm: Option<Tensor>,
}

pub struct JointOut {
    /// The weighted total.
    pub loss: Tensor,
    /// Each unweighted term (scalars), in a fixed order.
    pub terms: Vec<(&'static str, Tensor)>,
    pub recon: Tensor,
    pub apr_image: Option<Tensor>,
    /// [B, L] tokenizer code ids (NTP targets).
    pub ids: Tensor,
    /// [B, L, K] teacher-forced AR logits.
    pub logits: Tensor,
    /// Per-sample latent prefix kept by nested dropout.
    pub keep: Vec<usize>,
}

/// Per-sample prefix lengths: with probability p, k ~ U{1..L}, else L.
pub fn nested_dropout(batch: usize, l: usize, p: f64, rng: &mut SplitMix64) -> Vec<usize> {
    (0..batch).map(|_| if p > 0.0 && rng.uniform() < p { 1 + rng.below(l) } else { l }).collect()
}

/// The frozen perceptual net, if LPIPS is on.
pub type Perceptual<'a> = Option<&'a eostok_models::nets::Lpips>;

pub fn joint_forward(m: &Eostok, batch: &Batch, w: &LossConfig, lpips: Perceptual, rng: &mut SplitMix64) -> Result<JointOut> {
    let b = batch.images.dim(0)?;
    joint_forward_part(m, batch, w, lpips, rng, &Part { shard: crate::dist::Shard::whole(b), reduce: None })
}

/// Which part of a data-parallel batch `joint_forward_part` sees (`crate::dist`).
pub struct Part<'a> {
    /// `batch` holds images `[offset, offset + len)` of a global batch of `global`.
    pub shard: crate::dist::Shard,
    /// Sum over the ranks (the entropy term's code distribution); None with one rank.
    pub reduce: Option<Reduce<'a>>,
}

/// An all-reduce (sum) of a tensor over the ranks.
pub type Reduce<'a> = &'a dyn Fn(&Tensor) -> Result<Tensor>;

/// `joint_forward` of one rank's slice of a global batch: the random draws (class
/// dropout, nested dropout) are those of the whole global batch, in the order one
/// process would draw them, and this slice keeps its share; so the ranks together
/// see exactly the draws of a single process training on the global batch, and the
/// RNG ends in the same state on every rank. A whole batch draws exactly as before.
pub fn joint_forward_part(m: &Eostok, batch: &Batch, w: &LossConfig, lpips: Perceptual, rng: &mut SplitMix64, part: &Part) -> Result<JointOut> {
    let x = &batch.images;
    let b = x.dim(0)?;
    let l = m.cfg.latent_tokens;
    let sh = part.shard;
    if sh.len != b || sh.offset + sh.len > sh.global {
        candle_core::bail!("batch of {b} images as slice {}..{} of {}", sh.offset, sh.offset + sh.len, sh.global);
    }
    let world = sh.global / sh.len;

    // Tokenize: encoder -> IBQ (hard codes forward, soft gradients back).
    let enc = m.encoder.forward(x)?;
    let q = m.ibq.forward(&enc.z)?;

    // AR on soft inputs Ind^T E: next-token loss reaches the tokenizer, unless no
    // tokenizer term is on (two-stage's AR half): then the codes are detached (same
    // forward values) so the backward stops at the AR model instead of crossing the encoder.
    let tokenizer_frozen = [w.l2, w.l1, w.lpips, w.commit, w.entropy, w.apr, w.vfm_implicit, w.vfm_decoder].iter().all(|&x| x == 0.0);
    let ar_in = if tokenizer_frozen { q.ind.detach() } else { q.ind.clone() };
    let (logits, _classes) = if sh.is_whole() {
        m.ar.forward_train(&ar_in, &batch.classes, rng)?
    } else {
        // One draw per sample of the global batch whatever its class: 1 marks a dropped class.
        let dropped = eostok_models::nn::ar::drop_classes(&vec![0; sh.global], m.ar.class_dropout, 1, rng);
        let used: Vec<u32> = batch.classes.iter().zip(&dropped[sh.offset..sh.offset + b]).map(|(&c, &d)| if d == 1 { m.ar.null_class } else { c }).collect();
        (m.ar.forward_soft(&ar_in, &Tensor::new(used.as_slice(), x.device())?)?, used)
    };
    let ntp = cross_entropy(&logits, &q.ids)?;

    // Decode reconstruction and (if on) APR predictions in one batch.
    let keep = nested_dropout(sh.global, l, w.nested_dropout, rng)[sh.offset..sh.offset + b].to_vec();
    let apr_on = w.apr > 0.0;
    let (dec_in, dec_keep) = if apr_on {
        let (ind_ar, _) = straight_through_one_hot(&softmax(&logits)?)?;
        let z_apr = m.ibq.embed_one_hot(&ind_ar)?;
        (Tensor::cat(&[&q.z_q, &z_apr], 0)?, [keep.clone(), keep.clone()].concat())
    } else {
        (q.z_q.clone(), keep.clone())
    };
    let dec = m.decoder.forward(&dec_in, Some(&dec_keep))?;
    let recon = dec.image.narrow(0, 0, b)?;
    let apr_image = if apr_on { Some(dec.image.narrow(0, b, b)?) } else { None };

    let mut terms: Vec<(&'static str, Tensor, f64)> = vec![
        ("l2", mse(&recon, x)?, w.l2),
        ("commit", commitment(&q.z_norm, &q.z_q, w.commit_beta)?, w.commit),
        ("entropy", match (part.reduce, world > 1) {
            (Some(reduce), true) => entropy_penalty_synced(&q.probs, world, reduce)?,
            _ => entropy_penalty(&q.probs)?,
        }, w.entropy),
        ("ntp", ntp, w.ntp),
    ];
    if w.l1 > 0.0 {
        terms.push(("l1", l1(&recon, x)?, w.l1));
    }
    if let Some(apr) = &apr_image {
        terms.push(("apr_l2", mse(apr, x)?, w.apr));
    }
    if let (Some(net), true) = (lpips, w.lpips > 0.0) {
        // One LPIPS pass over [recon ‖ APR] against [x ‖ x].
        let (pred, target) = match &apr_image {
            Some(_) => (dec.image.clone(), Tensor::cat(&[x, x], 0)?),
            None => (recon.clone(), x.clone()),
        };
        let per = net.forward(&pred, &target)?;
        terms.push(("lpips", per.narrow(0, 0, b)?.mean_all()?, w.lpips));
        if apr_on {
            terms.push(("apr_lpips", per.narrow(0, b, b)?.mean_all()?, w.apr * w.lpips));
        }
    }
    if let Some(vfm) = &batch.vfm {
        if let (Some(pe), Some(pd), Some(hd)) = (&m.vfm_enc, &m.vfm_dec, &dec.align_hidden) {
            terms.push(("vfm_implicit", cosine_alignment(&pe.forward(&enc.h_enc)?, vfm)?, w.vfm_implicit));
            let target = if apr_on { Tensor::cat(&[vfm, vfm], 0)? } else { vfm.clone() };
            terms.push(("vfm_decoder", cosine_alignment(&pd.forward(hd)?, &target)?, w.vfm_decoder));
        }
    }
    let mut loss = Tensor::zeros((), x.dtype(), x.device())?;
    for (_, t, weight) in &terms {
        if *weight != 0.0 {
            loss = (loss + (t * *weight)?)?;
        }
    }
    Ok(JointOut {
        loss,
        terms: terms.into_iter().map(|(n, t, _)| (n, t)).collect(),
        recon,
        apr_image,
        ids: q.ids,
        logits,
        keep,
    })
}

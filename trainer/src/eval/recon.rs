//! `eostok-eval recon`: how well the tokenizer of a checkpoint
//! reconstructs real images, with all L tokens and with token prefixes
//! K = 1, 2, 4, ... L (the nested-dropout curve: the decoder sees only the
//! first K latents, exactly what a keep mask of K does — later latents are
//! causal and invisible to the mask tokens — and what the runtime does when
//! it decodes a prefix).
//!
//! Per K: `l2` (mean squared error in [-1, 1] of the raw decoder output,
//! the training loss's l2 term), `psnr` (dB, per image on the output
//! clamped to [0, 1], then averaged; capped at 100), `lpips` (LPIPS v0.1
//! on the clamped output, mean over images), `rfd` (Fréchet distance of
//! the feature net between the inputs and the reconstructions, both as
//! 8-bit images). Codebook usage (fraction of the K codes used by the
//! encoded images) and perplexity of the code histogram come from the
//! same images.

use super::fd::{frechet_distance_auto, Stats};
use super::features::{Extractor, FeatureNet, FeatureSet};
use super::progress_bar;
use crate::data::{epoch_order, load_batch, resolve_data, Pick};
use crate::loss::codebook_stats;
use anyhow::Result;
use candle_core::{DType, Tensor, D};
use eostok_models::checkpoint::{self, WeightSet};
use eostok_models::exit::bad_input;
use eostok_models::DeviceSpec;
use eostok_models::nets::{Lpips, LpipsNet};
use eostok_models::nn::Eostok;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::Instant;

pub const RECON_SCHEMA: &str = "eostok-eval/recon/1";
/// PSNR of a perfect reconstruction.
pub const PSNR_CAP: f64 = 100.0;
const BATCH: usize = 32;

pub struct ReconArgs {
    pub checkpoint: PathBuf,
    pub data: String,
    pub n: usize,
    pub seed: u64,
    pub ema: bool,
    pub lpips: Option<LpipsNet>,
    pub features: Option<FeatureNet>,
    pub device: DeviceSpec,
    pub progress: bool,
}

/// K = 1, 2, 4, ... and finally L.
pub fn prefixes(l: usize) -> Vec<usize> {
    let mut v: Vec<usize> = std::iter::successors(Some(1usize), |k| Some(k * 2)).take_while(|&k| k < l).collect();
    v.push(l);
    v
}

#[derive(Default, Clone)]
struct Acc {
    l2: f64,
    psnr: f64,
    lpips: f64,
    feats: FeatureSet,
}

/// `[B,3,H,W]` in [-1, 1] -> the same values after an 8-bit round trip.
fn quantize_u8(x: &Tensor) -> Result<Tensor> {
    Ok(((((x.clamp(-1f32, 1f32)? + 1.0)? * 127.5)?.round()? / 127.5)? - 1.0)?)
}

pub fn run_recon(a: &ReconArgs) -> Result<Value> {
    let t0 = Instant::now();
    if a.n == 0 {
        return Err(bad_input("-n must be positive"));
    }
    let dev = a.device.open()?;
    let cfg = checkpoint::load_config(&a.checkpoint)?;
    let set = if a.ema { WeightSet::Ema } else { WeightSet::Raw };
    let weights = checkpoint::load_weights(&a.checkpoint, &cfg, set, &dev)?;
    let (model, _store) = Eostok::from_tensors(&cfg, weights, DType::F32, &dev).map_err(|e| bad_input(format!("{}: {e}", a.checkpoint.display())))?;
    let ds = resolve_data(&a.data, None)?;
    let lpips = a.lpips.map(|net| Lpips::load_default(net, &dev)).transpose()?;
    let extractor = a.features.map(|net| Extractor::load(net, None, &dev)).transpose()?;

    let (order, _) = epoch_order(ds.len(), a.seed, 0, false);
    let picks: Vec<Pick> = order.iter().take(a.n).map(|&i| Pick { sample: i as usize, flip: false }).collect();
    let ks = prefixes(cfg.latent_tokens);
    let mut accs = vec![Acc::default(); ks.len()];
    let mut orig_feats = FeatureSet::default();
    let mut all_ids: Vec<u32> = Vec::new();
    eprintln!("recon: {} ({}) on {} -> {} images at {} px, K = {:?}", a.checkpoint.display(), cfg.name, ds.describe(), picks.len(), cfg.image_size, ks);
    let bar = progress_bar(picks.len(), "recon", a.progress);
    for chunk in picks.chunks(BATCH) {
        let x = load_batch(ds.as_ref(), chunk, cfg.image_size, &dev)?.images;
        let b = chunk.len();
        let enc = model.encoder.forward(&x)?;
        let q = model.ibq.forward(&enc.z)?;
        all_ids.extend(q.ids.flatten_all()?.to_vec1::<u32>()?);
        if let Some(e) = &extractor {
            orig_feats.push(e.run(&x)?, b);
        }
        let z_q = q.z_q.detach();
        for (acc, &k) in accs.iter_mut().zip(&ks) {
            let y = model.decoder.forward(&z_q.narrow(1, 0, k)?, None)?.image.detach();
            let per_img = |t: &Tensor| -> Result<Vec<f32>> { Ok(t.flatten_from(1)?.mean(D::Minus1)?.to_vec1::<f32>()?) };
            let mse = per_img(&(&y - &x)?.sqr()?)?;
            acc.l2 += mse.iter().map(|&v| v as f64).sum::<f64>();
            let yc = y.clamp(-1f32, 1f32)?;
            // In [0, 1] the squared error is a quarter of the [-1, 1] one.
            let mse01 = per_img(&((&yc - &x)?.sqr()? * 0.25)?)?;
            acc.psnr += mse01.iter().map(|&m| if m <= 0.0 { PSNR_CAP } else { (-10.0 * (m as f64).log10()).min(PSNR_CAP) }).sum::<f64>();
            if let Some(lp) = &lpips {
                acc.lpips += lp.forward(&yc, &x)?.to_vec1::<f32>()?.iter().map(|&v| v as f64).sum::<f64>();
            }
            if let Some(e) = &extractor {
                acc.feats.push(e.run(&quantize_u8(&y)?)?, b);
            }
        }
        bar.inc(b as u64);
    }
    bar.finish_and_clear();

    let n = picks.len() as f64;
    let orig_stats = extractor.as_ref().map(|e| Stats::from_features(&orig_feats.features, e.net().dim()));
    let fd_name = a.features.map(|f| format!("rFD_{}", f.name()));
    let rows: Vec<Value> = accs
        .iter()
        .zip(&ks)
        .map(|(acc, &k)| {
            let rfd = orig_stats
                .as_ref()
                .map(|os| frechet_distance_auto(os, &orig_feats.features, &Stats::from_features(&acc.feats.features, os.dim()), &acc.feats.features).fd);
            json!({
                "k": k,
                "l2": acc.l2 / n,
                "psnr": acc.psnr / n,
                "lpips": lpips.as_ref().map(|_| acc.lpips / n),
                "rfd": rfd,
            })
        })
        .collect();
    let (usage, ppl) = codebook_stats(&all_ids, cfg.codebook_size);
    let full = rows.last().cloned().unwrap_or(Value::Null);
    Ok(json!({
        "schema": RECON_SCHEMA,
        "checkpoint": a.checkpoint.display().to_string(),
        "weights": if a.ema { "ema" } else { "raw" },
        "config": cfg.name,
        "data": a.data,
        "describe": ds.describe(),
        "n": picks.len(),
        "seed": a.seed,
        "image_size": cfg.image_size,
        "latent_tokens": cfg.latent_tokens,
        "codebook_size": cfg.codebook_size,
        "codebook_usage": usage,
        "codes_used": (usage * cfg.codebook_size as f64).round() as usize,
        "perplexity": ppl,
        "lpips_net": a.lpips.map(|l| match l { LpipsNet::Vgg => "vgg", LpipsNet::Alex => "alex" }),
        "features": a.features.map(|f| f.name()),
        "rfd_name": fd_name,
        "l2": full["l2"],
        "psnr": full["psnr"],
        "lpips": full["lpips"],
        "rfd": full["rfd"],
        "prefixes": rows,
        "seconds": t0.elapsed().as_secs_f64(),
    }))
}

/// The text report (the rFD column names its feature net).
pub fn recon_text(v: &Value) -> String {
    let mut out = format!(
        "recon {} ({} weights, {}) on {} n={}: codebook usage {:.4} ({} of {} codes), perplexity {:.2}\n",
        v["checkpoint"].as_str().unwrap_or("?"),
        v["weights"].as_str().unwrap_or("?"),
        v["config"].as_str().unwrap_or("?"),
        v["data"].as_str().unwrap_or("?"),
        v["n"],
        v["codebook_usage"].as_f64().unwrap_or(f64::NAN),
        v["codes_used"],
        v["codebook_size"],
        v["perplexity"].as_f64().unwrap_or(f64::NAN),
    );
    let lp = v["lpips_net"].as_str().map(|n| format!("LPIPS_{n}")).unwrap_or_else(|| "LPIPS (off)".into());
    let rfd = v["rfd_name"].as_str().unwrap_or("rFD (off)");
    out += &format!("{:>5} {:>10} {:>9} {:>12} {:>20}\n", "K", "L2", "PSNR_dB", lp, rfd);
    let num = |x: &Value| x.as_f64().map(|f| format!("{f:.4}")).unwrap_or_else(|| "-".into());
    for r in v["prefixes"].as_array().into_iter().flatten() {
        out += &format!("{:>5} {:>10} {:>9} {:>12} {:>20}\n", r["k"], num(&r["l2"]), num(&r["psnr"]), num(&r["lpips"]), num(&r["rfd"]));
    }
    out += &format!("time: {:.1} s\n", v["seconds"].as_f64().unwrap_or(0.0));
    out
}

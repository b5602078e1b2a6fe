//! AR decoding speed against the bandwidth bound, time per image end to end, and memory.

use crate::gen::eostok_model;
use crate::roofline::{bandwidth, Buffer, BUF_BYTES};
use crate::util::{data_dir, mib, proc_kb, Stats, Table};
use anyhow::{Context, Result};
use eostok_models::sampling::TokenSampling;
use eostok_runtime::generate::{generate, GenerateOptions};
use eostok_runtime::gguf::GgufFile;
use eostok_runtime::model::Model;
use std::time::Instant;

pub fn opts(seed: u64) -> GenerateOptions {
    GenerateOptions {
        sampling: TokenSampling {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
        },
        cfg_scale: 1.0,
        seed,
    }
}

/// Tokens/s of one generation of `tokens` tokens for `images` images (batched rows).
pub fn tokens_per_s(model: &Model, tokens: usize, images: usize, seed: u64) -> Result<f64> {
    let classes = vec![1u32; images];
    let t = Instant::now();
    generate(model, &classes, tokens, &opts(seed), false, |_| {})?;
    Ok(tokens as f64 / t.elapsed().as_secs_f64())
}

pub fn decode(
    config: &str,
    ty: &str,
    threads: usize,
    tokens: usize,
    rounds: usize,
    json: bool,
) -> Result<()> {
    let path = eostok_model(&data_dir()?, config, ty)?;
    let file = GgufFile::open(&path)?;
    let model = Model::load(&file)?;
    let tokens = tokens.clamp(1, model.cfg.latent_tokens);
    let bytes = model.ar.weight_bytes_per_step();
    // Two bandwidths: DRAM (a buffer far beyond the L3) and the working set of one token
    // (a buffer of the same bytes as the weights read per token, streamed again and again,
    // as decoding does; with a large L3 it may stay partly cached). The bound uses the
    // working set.
    let dram = Buffer::new(BUF_BYTES);
    let ws = Buffer::new(bytes);
    tokens_per_s(&model, tokens.min(16), 1, 0)?; // page the weights in
    let (mut tps, mut bws, mut drams) = (vec![], vec![], vec![]);
    // Bandwidth and decoding interleaved, so both see the same machine state.
    for r in 0..rounds.max(1) {
        drams.push(bandwidth(&dram, threads, 2)?.max);
        bws.push(bandwidth(&ws, threads, 5)?.max);
        tps.push(tokens_per_s(&model, tokens, 1, r as u64)?);
    }
    drop((dram, ws));
    let (t, bw, dr) = (Stats::of(&tps), Stats::of(&bws), Stats::of(&drams));
    let bound = bw.median * 1e9 / bytes as f64;
    let frac: Vec<f64> = tps
        .iter()
        .zip(&bws)
        .map(|(t, b)| t / (b * 1e9 / bytes as f64))
        .collect();
    let frac = Stats::of(&frac);
    let mut table = Table::new(
        json,
        &[
            ("config", 6),
            ("type", 5),
            ("threads", 7),
            ("weights MB/token", 16),
            ("tokens/s", 22),
            ("DRAM GB/s", 18),
            ("working-set GB/s", 20),
            ("bound tok/s", 11),
            ("of bound", 18),
        ],
    );
    table.row(
        &[
            model.cfg.name.clone(),
            ty.to_string(),
            threads.to_string(),
            format!("{:.1}", bytes as f64 / 1e6),
            t.show(1),
            dr.show(1),
            bw.show(1),
            format!("{bound:.0}"),
            format!("{:.0}% ({:.0}–{:.0}%)", 100.0 * frac.median, 100.0 * frac.min, 100.0 * frac.max),
        ],
        serde_json::json!({"bench": "decode", "config": model.cfg.name, "type": ty, "threads": threads, "tokens": tokens,
            "weight_bytes_per_token": bytes, "tokens_per_s": t.json(), "dram_gb_per_s": dr.json(), "working_set_gb_per_s": bw.json(),
            "bound_tokens_per_s": bound, "fraction_of_bound": frac.json()}),
    );
    Ok(())
}

pub fn image(
    configs: &[String],
    types: &[String],
    batches: &[usize],
    rounds: usize,
    json: bool,
) -> Result<()> {
    let dir = data_dir()?;
    let mut table = Table::new(
        json,
        &[
            ("config", 6),
            ("type", 5),
            ("batch", 5),
            ("AR s", 18),
            ("decoder s", 18),
            ("s/image", 18),
            ("images/s", 8),
        ],
    );
    for config in configs {
        for ty in types {
            let path = eostok_model(&dir, config, ty)?;
            let file = GgufFile::open(&path)?;
            let model = Model::load(&file)?;
            let l = model.cfg.latent_tokens;
            tokens_per_s(&model, 8, 1, 0)?;
            for &b in batches {
                let (mut ar, mut dec, mut tot) = (vec![], vec![], vec![]);
                for r in 0..rounds.max(1) {
                    let classes: Vec<u32> = (0..b as u32).collect();
                    let t0 = Instant::now();
                    let g = generate(&model, &classes, l, &opts(r as u64), false, |_| {})?;
                    let t1 = t0.elapsed().as_secs_f64();
                    let px = model.decoder.decode(&g.ids)?;
                    std::hint::black_box(px);
                    let t2 = t0.elapsed().as_secs_f64();
                    ar.push(t1);
                    dec.push(t2 - t1);
                    tot.push(t2 / b as f64);
                }
                let (a, d, t) = (Stats::of(&ar), Stats::of(&dec), Stats::of(&tot));
                table.row(
                    &[model.cfg.name.clone(), ty.clone(), b.to_string(), a.show(2), d.show(2), t.show(2), format!("{:.2}", 1.0 / t.median)],
                    serde_json::json!({"bench": "image", "config": model.cfg.name, "type": ty, "batch": b, "tokens": l, "image_size": model.cfg.image_size,
                        "ar_s": a.json(), "decoder_s": d.json(), "s_per_image": t.json(), "images_per_s": 1.0 / t.median}),
                );
            }
        }
    }
    Ok(())
}

/// Memory of one model in this (fresh) process: run by `memory` as a child so peak RSS is
/// the model's alone. Prints one JSON line.
pub fn memory_child(config: &str, ty: &str) -> Result<()> {
    let path = eostok_model(&data_dir()?, config, ty)?;
    let before = proc_kb("/proc/self/smaps_rollup", "Anonymous").unwrap_or(0);
    let t0 = Instant::now();
    let file = GgufFile::open(&path)?;
    let model = Model::load(&file)?;
    let (mut st, mut inputs) = model.ar.start(&[1])?;
    let mut ids = Vec::with_capacity(model.cfg.latent_tokens);
    let mut first = 0.0;
    // All L tokens with the state alive, then the decoder: memory is read at the end, with
    // the KV cache still held.
    for i in 0..model.cfg.latent_tokens {
        let logits = model.ar.step(&mut st, &inputs)?;
        if i == 0 {
            first = t0.elapsed().as_secs_f64();
        }
        let t = eostok_models::sampling::argmax(&logits) as u32;
        ids.push(t);
        inputs = model.ar.embed_tokens(&[t])?;
    }
    let kv = st.kv_bytes();
    let px = model.decoder.decode(&[ids])?;
    std::hint::black_box(px);
    let s = "/proc/self/smaps_rollup";
    let rss = proc_kb(s, "Rss").unwrap_or(0);
    let anon = proc_kb(s, "Anonymous").unwrap_or(0);
    println!(
        "{}",
        serde_json::json!({"bench": "memory", "config": model.cfg.name, "type": ty, "file_bytes": file.as_bytes().len(),
            "peak_rss_bytes": proc_kb("/proc/self/status", "VmHWM"), "rss_bytes": rss, "private_anon_bytes": anon, "private_anon_before_bytes": before,
            "file_backed_bytes": rss.saturating_sub(anon), "kv_cache_bytes": kv, "open_to_first_token_s": first,
            "private_dirty_bytes": proc_kb(s, "Private_Dirty"), "private_clean_bytes": proc_kb(s, "Private_Clean")})
    );
    Ok(())
}

pub fn memory(configs: &[String], types: &[String], threads: usize, json: bool) -> Result<()> {
    let exe = std::env::current_exe().context("current exe")?;
    let mut table = Table::new(
        json,
        &[
            ("config", 6),
            ("type", 5),
            ("file MiB", 8),
            ("peak RSS MiB", 12),
            ("file-backed MiB", 15),
            ("private MiB", 11),
            ("KV MiB", 6),
            ("private-KV MiB", 14),
            ("open→token ms", 13),
        ],
    );
    for config in configs {
        for ty in types {
            eostok_model(&data_dir()?, config, ty)?;
            // Drop this file's pages from the page cache is not possible unprivileged in
            // general; start-up is measured with the file cached (a warm start).
            let out = std::process::Command::new(&exe)
                .args([
                    "memory-child",
                    "--config",
                    config,
                    "--type",
                    ty,
                    "--threads",
                    &threads.to_string(),
                ])
                .output()?;
            if !out.status.success() {
                anyhow::bail!(
                    "memory child failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            let v: serde_json::Value =
                serde_json::from_slice(out.stdout.split(|&b| b == b'\n').next().unwrap_or(&[]))?;
            let g = |k: &str| v[k].as_f64().unwrap_or(f64::NAN);
            let private = g("private_anon_bytes");
            table.row(
                &[
                    v["config"].as_str().unwrap_or("").into(),
                    ty.clone(),
                    format!("{:.1}", mib(g("file_bytes"))),
                    format!("{:.1}", mib(g("peak_rss_bytes"))),
                    format!("{:.1}", mib(g("file_backed_bytes"))),
                    format!("{:.1}", mib(private)),
                    format!("{:.1}", mib(g("kv_cache_bytes"))),
                    format!("{:.1}", mib(private - g("kv_cache_bytes"))),
                    format!("{:.1}", 1e3 * g("open_to_first_token_s")),
                ],
                v,
            );
        }
    }
    Ok(())
}

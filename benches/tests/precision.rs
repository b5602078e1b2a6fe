//! `eostok-bench precision` through the real binary on a small random checkpoint (what
//! `eostok-train init --config tiny` writes). The Fréchet-distance part needs the asset
//! cache (EfficientNet-Lite0) and prints why it skips when the cache is absent.

use candle_core::{DType, Device, Tensor};
use eostok_models::checkpoint;
use eostok_models::nn::Eostok;
use eostok_models::Config;
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bench(args: &[&str], envs: &[(&str, &Path)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_eostok-bench"));
    c.arg("precision").args(args);
    for (k, v) in envs {
        c.env(k, v);
    }
    c.output().unwrap()
}

/// A fresh directory under the target's test scratch space.
fn scratch(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("precision-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// What `eostok-train init --config tiny --out DIR --seed 0` writes.
fn tiny_checkpoint(dir: &Path) {
    let cfg = Config::preset("tiny").unwrap();
    let (_m, store) = Eostok::random(&cfg, 0, DType::F32, &Device::Cpu).unwrap();
    let weights: HashMap<String, Tensor> = store.vars().into_iter().map(|(k, v)| (k, v.as_tensor().clone())).collect();
    checkpoint::write_initial(dir, &cfg, &weights, false).unwrap();
}

fn rows(out: &Output) -> Vec<Value> {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout.clone()).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn row<'a>(rows: &'a [Value], ty: &str) -> &'a Value {
    rows.iter().find(|r| r["bench"] == "precision" && r["type"] == ty).unwrap_or_else(|| panic!("no {ty} row"))
}

#[test]
fn precision_agreement_psnr_and_sizes_on_a_tiny_checkpoint() {
    let root = scratch("tiny");
    let ck = root.join("ck");
    tiny_checkpoint(&ck);
    let gguf = root.join("gguf");
    // Greedy: an untrained model's next-token distribution is nearly flat, so at
    // temperature 1 any reordering of near-tied logits changes the sampled token and
    // agreement is at chance level (about 0.07 for q8_0 here) — a property of the model,
    // not of the quantization. Argmax asks whether quantization moves the top token.
    let out = bench(
        &["--checkpoint", ck.to_str().unwrap(), "--types", "q8_0,q4_0", "-n", "8", "--temperature", "0", "--features", "none", "--out-dir", gguf.to_str().unwrap(), "--json", "-q"],
        &[],
    );
    let r = rows(&out);
    // f32 is the reference: added when not asked for, and first.
    assert_eq!(r.iter().map(|x| x["type"].as_str().unwrap()).collect::<Vec<_>>(), ["f32", "q8_0", "q4_0"]);
    let (f32r, q8, q4) = (row(&r, "f32"), row(&r, "q8_0"), row(&r, "q4_0"));
    for x in &r {
        assert_eq!(x["n"], 8);
        assert!(x["tokens_per_s"].as_f64().unwrap() > 0.0);
        assert!(x.get("fd").unwrap().as_object().unwrap().is_empty(), "--features none: no FD");
    }
    // f32 against itself: identical tokens, identical decoder output (PSNR infinite = null).
    assert_eq!(f32r["token_agreement"], 1.0);
    assert_eq!(f32r["sequence_agreement"], 1.0);
    assert_eq!(f32r["decode_mse"], 0.0);
    assert!(f32r["psnr_db"].is_null());
    assert_eq!(f32r["matrix_bits_per_weight"], 32.0);
    // q8_0 stays close; q4_0 is further off.
    let agree = q8["token_agreement"].as_f64().unwrap();
    assert!(agree > 0.5 && agree <= 1.0, "q8_0 token agreement {agree}");
    let (p8, p4) = (q8["psnr_db"].as_f64().unwrap(), q4["psnr_db"].as_f64().unwrap());
    assert!(p8 > 25.0, "q8_0 PSNR {p8}");
    assert!(p4 < p8, "q4_0 PSNR {p4} not below q8_0's {p8}");
    // Sizes read from the written files, and the matrices' bits per weight.
    let size = |x: &Value| x["file_bytes"].as_u64().unwrap();
    assert!(size(f32r) > size(q8) && size(q8) > size(q4), "{} {} {}", size(f32r), size(q8), size(q4));
    for t in ["f32", "q8_0", "q4_0"] {
        assert_eq!(std::fs::metadata(gguf.join(format!("{t}.gguf"))).unwrap().len(), size(row(&r, t)));
    }
    let bpw = |x: &Value| x["matrix_bits_per_weight"].as_f64().unwrap();
    assert!(bpw(q8) > 8.0 && bpw(q8) < 9.0 && bpw(q4) > 4.0 && bpw(q4) < bpw(q8), "{} {}", bpw(q8), bpw(q4));
    // tiny's dec.latent_proj has rows of 16: not a q8_0 block, written f16 (a fallback).
    assert_eq!(q8["matrix_types"]["f16"], 1);
    assert_eq!(q8["fell_back"], 1);

    // The same run twice: the same tokens (a deterministic comparison).
    let again = rows(&bench(
        &["--checkpoint", ck.to_str().unwrap(), "--types", "f32,q8_0", "-n", "8", "--temperature", "0", "--features", "none", "--out-dir", gguf.to_str().unwrap(), "--json", "-q"],
        &[],
    ));
    assert_eq!(row(&again, "q8_0")["token_agreement"], q8["token_agreement"]);
    assert_eq!(row(&again, "q8_0")["psnr_db"], q8["psnr_db"]);
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn precision_bad_input_names_the_file() {
    let root = scratch("bad");
    let missing = root.join("no-such-run");
    let out = bench(&["--checkpoint", missing.to_str().unwrap(), "--features", "none", "-q"], &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no-such-run") && err.lines().count() == 1 && !err.contains("panicked"), "{err}");

    // A directory without ema.safetensors.
    let half = root.join("half");
    std::fs::create_dir_all(&half).unwrap();
    std::fs::write(half.join("config.json"), Config::preset("tiny").unwrap().to_json()).unwrap();
    let out = bench(&["--checkpoint", half.to_str().unwrap(), "--features", "none", "-q"], &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ema.safetensors"), "{err}");

    // The feature nets without an asset cache: refused before any work.
    let ck = root.join("ck");
    tiny_checkpoint(&ck);
    let empty = root.join("empty-cache");
    std::fs::create_dir_all(&empty).unwrap();
    let gguf = root.join("gguf");
    let out = bench(
        &["--checkpoint", ck.to_str().unwrap(), "--features", "effnet-lite0", "-n", "4", "--out-dir", gguf.to_str().unwrap(), "-q"],
        &[("EOSTOK_ASSETS", &empty)],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("efficientnet-lite0.safetensors") && err.lines().count() == 1 && !err.contains("panicked"), "{err}");
    assert!(!gguf.join("f32.gguf").exists(), "quantized before checking its inputs");

    // "FID" is not a feature net here.
    let out = bench(&["--checkpoint", ck.to_str().unwrap(), "--features", "inception", "-q"], &[]);
    assert_eq!(out.status.code(), Some(2));
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn precision_fd_floor_and_docs_with_the_asset_cache() {
    let effnet = eostok_models::nets::asset_dir().join("efficientnet-lite0.safetensors");
    if !effnet.is_file() {
        println!("skipping: {} not found (run scripts/fetch-assets or set EOSTOK_ASSETS)", effnet.display());
        return;
    }
    let root = scratch("fd");
    let ck = root.join("ck");
    tiny_checkpoint(&ck);
    let (gguf, cache, docs) = (root.join("gguf"), root.join("cache"), root.join("docs"));
    std::fs::create_dir_all(&docs).unwrap();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/fashion-mnist");
    let fixture = fixture.to_str().unwrap();
    let args = |json: bool| {
        let mut a = vec!["--checkpoint", ck.to_str().unwrap(), "--types", "f32,q4_0", "-n", "8", "--features", "effnet-lite0"];
        a.extend(["--real", fixture, "--floor", fixture, "--cache", cache.to_str().unwrap(), "--out-dir", gguf.to_str().unwrap(), "-q"]);
        a.extend(["--write-docs", "--docs-dir", docs.to_str().unwrap()]);
        if json {
            a.push("--json");
        }
        a
    };
    let r = rows(&bench(&args(true), &[]));
    for ty in ["f32", "q4_0"] {
        let fd = row(&r, ty)["fd"]["FD_effnet-lite0"].as_f64().unwrap();
        assert!(fd.is_finite() && fd > 0.0, "{ty}: {fd}");
    }
    let floor = r.iter().find(|x| x["bench"] == "precision-floor").expect("a floor row");
    assert!(floor["fd"]["FD_effnet-lite0"].as_f64().unwrap() >= 0.0);
    // Real and floor statistics went to the cache; a second run reads them back.
    let cached = std::fs::read_dir(cache.join("eval-stats")).unwrap().count();
    assert_eq!(cached, 2, "real and floor statistics");
    let out = bench(&args(false), &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(stderr.contains("real statistics (effnet-lite0) from the cache"), "{stderr}");
    assert!(stdout.contains("FD_effnet-lite0") && stdout.contains("real floor"), "{stdout}");
    let md = std::fs::read_to_string(docs.join("precision.md")).unwrap();
    assert!(md.contains("| FD_effnet-lite0 |") && md.contains("precision --checkpoint"), "{md}");
    for text in [&*stdout, &*md] {
        // "FID" only ever in "not FID": no distance on these features is called FID.
        assert!(text.lines().all(|l| !l.contains("FID") || l.contains("not FID")), "{text}");
    }
    let png = std::fs::read(docs.join("precision.png")).unwrap();
    assert_eq!(&png[1..4], b"PNG");
    // Nothing temporary left behind.
    let left: Vec<_> = std::fs::read_dir(&docs).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left.len(), 2, "{left:?}");
    let _ = std::fs::remove_dir_all(&root);
}

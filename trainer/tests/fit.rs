//! `eostok-train fit` through the real binary on the repo's Fashion-MNIST
//! fixture: bit-exact resume, Ctrl-C, the two-stage freeze.

use candle_core::Device;
use eostok_models::checkpoint::{self, WeightSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/fashion-mnist")
}

fn fit(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_eostok-train"))
        .args(["fit", "--config", "tiny", "--batch", "4", "--lr", "1e-3", "--warmup", "2", "--quiet", "--lpips", "off", "--vfm", "off"])
        .arg("--data")
        .arg(fixture())
        .args(args)
        .output()
        .unwrap()
}

fn ok(o: &std::process::Output) {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn resume_is_bit_exact() {
    let d = tempfile::tempdir().unwrap();
    let (a, b) = (d.path().join("a"), d.path().join("b"));
    ok(&fit(&["--steps", "6", "--save-every", "3", "--out", a.to_str().unwrap()]));
    ok(&fit(&["--steps", "6", "--stop-at", "3", "--out", b.to_str().unwrap()]));
    let state: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(b.join("state.json")).unwrap()).unwrap();
    assert_eq!(state["step"], 3);
    ok(&fit(&["--steps", "6", "--resume", b.to_str().unwrap(), "--out", b.to_str().unwrap()]));
    for f in [checkpoint::MODEL_FILE, checkpoint::EMA_FILE, checkpoint::OPTIMIZER_FILE] {
        assert_eq!(std::fs::read(a.join(f)).unwrap(), std::fs::read(b.join(f)).unwrap(), "{f} differs after resume");
    }
    // The sample grid: inputs, reconstructions, APR images, samples; 4 columns of 32 px.
    let grid = image::open(a.join("samples/step-0000006.png")).unwrap();
    assert_eq!((grid.width(), grid.height()), (4 * 34 - 2, 4 * 34 - 2));
    assert!(b.join("samples/step-0000003.png").is_file(), "--stop-at writes samples too");
    // And training moved the weights at all.
    let cfg = checkpoint::load_config(&a).unwrap();
    let w = checkpoint::load_weights(&a, &cfg, WeightSet::Raw, &Device::Cpu).unwrap();
    assert_eq!(w.len(), eostok_models::tensor_specs(&cfg).len());
    // A fresh run refuses a non-empty directory.
    let o = fit(&["--steps", "6", "--out", a.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn sigint_finishes_the_step_saves_and_exits_130() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("run");
    let mut child = Command::new(env!("CARGO_BIN_EXE_eostok-train"))
        .args(["fit", "--config", "tiny", "--batch", "4", "--quiet", "--lpips", "off", "--vfm", "off", "--steps", "100000", "--save-every", "100000", "--log-every", "1"])
        .arg("--data")
        .arg(fixture())
        .arg("--out")
        .arg(&out)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until a few steps have run.
    let metrics = out.join(checkpoint::METRICS_FILE);
    let t0 = std::time::Instant::now();
    while std::fs::read_to_string(&metrics).map(|s| s.lines().count()).unwrap_or(0) < 3 {
        assert!(t0.elapsed().as_secs() < 120, "training did not start");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap().success());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    let state: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("state.json")).unwrap()).unwrap();
    assert!(state["step"].as_u64().unwrap() >= 3);
    let cfg = checkpoint::load_config(&out).unwrap();
    checkpoint::load_weights(&out, &cfg, WeightSet::Ema, &Device::Cpu).unwrap();
    // The saved run resumes.
    ok(&fit(&["--steps", &(state["step"].as_u64().unwrap() + 1).to_string(), "--resume", out.to_str().unwrap(), "--out", out.to_str().unwrap()]));
}

#[test]
fn two_stage_freezes_the_tokenizer_in_stage_two() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("run");
    // 8 steps: tokenizer for 0..4, AR for 4..8; keep the step-4 checkpoint.
    ok(&fit(&["--mode", "two-stage", "--steps", "8", "--save-every", "4", "--keep", "2", "--out", out.to_str().unwrap()]));
    let cfg = checkpoint::load_config(&out).unwrap();
    let mid = checkpoint::load_weights(&out.join("history/step-0000004"), &cfg, WeightSet::Raw, &Device::Cpu).unwrap();
    let end = checkpoint::load_weights(&out, &cfg, WeightSet::Raw, &Device::Cpu).unwrap();
    let same = |n: &str| {
        let a: Vec<f32> = mid[n].flatten_all().unwrap().to_vec1().unwrap();
        let b: Vec<f32> = end[n].flatten_all().unwrap().to_vec1().unwrap();
        a == b
    };
    for n in ["enc.blk.0.attn_qkv.weight", "quant.codebook.weight", "dec.pixel_out.weight"] {
        assert!(same(n), "{n} changed in stage two");
    }
    for n in ["blk.0.attn_q.weight", "output.weight"] {
        assert!(!same(n), "{n} did not train in stage two");
    }
}

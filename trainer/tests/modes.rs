//! Each training mode through the real binary on the repo's Fashion-MNIST fixture: the loss
//! goes down over 50 steps, and the modes really differ (ntp-only has no APR term, two-stage
//! trains the tokenizer, then the AR model). Also the discriminator and gradient
//! accumulation keep resume bit-exact, and the loss plot is drawn.

use eostok_models::checkpoint;
use std::path::{Path, PathBuf};
use std::process::Command;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/fashion-mnist")
}

fn fit(args: &[&str]) {
    let o = Command::new(env!("CARGO_BIN_EXE_eostok-train"))
        .args(["fit", "--config", "tiny", "--lr", "2e-3", "--warmup", "5", "--quiet", "--lpips", "off", "--vfm", "off", "--log-every", "1"])
        .arg("--data")
        .arg(fixture())
        .args(args)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

fn metrics(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join(checkpoint::METRICS_FILE)).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// Mean of `key` over the records of steps in `range`.
fn mean(recs: &[serde_json::Value], key: &str, range: std::ops::Range<u64>) -> f64 {
    let v: Vec<f64> = recs.iter().filter(|r| range.contains(&r["step"].as_u64().unwrap())).map(|r| r[key].as_f64().unwrap_or_else(|| panic!("no {key} at step {}", r["step"]))).collect();
    assert!(!v.is_empty(), "no {key} in steps {range:?}");
    v.iter().sum::<f64>() / v.len() as f64
}

fn goes_down(recs: &[serde_json::Value], key: &str, first: std::ops::Range<u64>, last: std::ops::Range<u64>) {
    let (a, b) = (mean(recs, key, first.clone()), mean(recs, key, last.clone()));
    assert!(b < 0.9 * a, "{key} did not go down: {a:.4} (steps {first:?}) -> {b:.4} (steps {last:?})");
}

fn run(mode: &str) -> (tempfile::TempDir, Vec<serde_json::Value>) {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("run");
    fit(&["--mode", mode, "--steps", "50", "--batch", "8", "--sample-every", "0", "--out", out.to_str().unwrap()]);
    let recs = metrics(&out);
    assert_eq!(recs.len(), 50);
    (d, recs)
}

#[test]
fn e2e_trains_every_term_down() {
    let (d, recs) = run("e2e");
    for key in ["loss", "l2", "ntp", "apr_l2"] {
        goes_down(&recs, key, 1..6, 46..51);
    }
    // The loss plot is drawn with the samples.
    let plot = image::open(d.path().join("run/losses.png")).unwrap();
    assert_eq!((plot.width(), plot.height()), (1200, 500));
}

#[test]
fn ntp_only_has_no_apr_term_and_trains_down() {
    let (_d, recs) = run("ntp-only");
    assert!(recs.iter().all(|r| r.get("apr_l2").is_none() && r.get("apr_lpips").is_none()), "ntp-only logged an APR term");
    for key in ["loss", "l2", "ntp"] {
        goes_down(&recs, key, 1..6, 46..51);
    }
}

#[test]
fn two_stage_trains_the_tokenizer_then_the_ar_model() {
    let (_d, recs) = run("two-stage");
    for r in &recs {
        let expect = if r["step"].as_u64().unwrap() <= 25 { "TokenizerOnly" } else { "ArOnly" };
        assert_eq!(r["phase"], expect, "step {}", r["step"]);
    }
    goes_down(&recs, "l2", 1..6, 21..26);
    goes_down(&recs, "ntp", 26..31, 46..51);
}

#[test]
fn resume_stays_bit_exact_with_the_discriminator_and_accumulation() {
    let d = tempfile::tempdir().unwrap();
    let (a, b) = (d.path().join("a"), d.path().join("b"));
    let common = ["--batch", "4", "--accum", "2", "--disc", "patchgan", "--gan-start", "2", "--steps", "6", "--sample-every", "0"];
    let (a_s, b_s) = (a.to_str().unwrap(), b.to_str().unwrap());
    fit(&[&common[..], &["--out", a_s]].concat());
    fit(&[&common[..], &["--stop-at", "3", "--out", b_s]].concat());
    fit(&[&common[..], &["--resume", b_s, "--out", b_s]].concat());
    for f in [checkpoint::MODEL_FILE, checkpoint::EMA_FILE, checkpoint::OPTIMIZER_FILE, eostok_train::fit::DISC_FILE] {
        assert_eq!(std::fs::read(a.join(f)).unwrap(), std::fs::read(b.join(f)).unwrap(), "{f} differs after resume");
    }
    let recs = metrics(&a);
    assert!(recs.iter().filter(|r| r["step"].as_u64().unwrap() > 2).all(|r| r["gan_g"].is_number() && r["disc_hinge"].is_number()));
    assert!(recs.iter().filter(|r| r["step"].as_u64().unwrap() <= 2).all(|r| r.get("gan_g").is_none()), "GAN term before --gan-start");
}

/// A fresh 1-step run with `flag w`: checks that the weight is saved under `state.train.loss.key`
/// and returns the run's first metrics record.
fn one_step_with_weight(dir: &Path, flag: &str, key: &str, w: &str) -> serde_json::Value {
    let out = dir.join(format!("{key}-{w}"));
    fit(&["--mode", "e2e", "--steps", "1", "--batch", "4", "--sample-every", "0", flag, w, "--out", out.to_str().unwrap()]);
    let state: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("state.json")).unwrap()).unwrap();
    assert_eq!(state["train"]["loss"][key].as_f64().unwrap(), w.parse::<f64>().unwrap());
    metrics(&out).remove(0)
}

/// `eostok-train fit` with `bad` arguments exits 2 and names `flag`.
fn refused(dir: &Path, bad: &[&str], flag: &str) {
    let o = Command::new(env!("CARGO_BIN_EXE_eostok-train"))
        .args(["fit", "--config", "tiny", "--quiet", "--lpips", "off", "--vfm", "off", "--steps", "2"])
        .arg("--data")
        .arg(fixture())
        .args(bad)
        .arg("--out")
        .arg(dir.join("bad"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{bad:?}: {}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains(flag), "{bad:?}: {}", String::from_utf8_lossy(&o.stderr));
}

/// `--apr-weight λ` scales the APR term in the total: three 1-step runs from the same seed
/// log the same unweighted terms, and their totals differ by λ · apr_l2 (LPIPS off, so APR
/// is its L2 part only). The weight is saved for resume, and bad values are refused.
#[test]
fn apr_weight_scales_the_apr_term_and_is_saved() {
    let d = tempfile::tempdir().unwrap();
    let first = |w: &str| one_step_with_weight(d.path(), "--apr-weight", "apr", w);
    let (r0, r1, rq) = (first("0"), first("1"), first("0.25"));
    let apr = r1["apr_l2"].as_f64().unwrap();
    assert!(apr > 0.0);
    // λ = 0 skips the APR pass (as ntp-only does); the other terms are the same.
    assert_eq!(rq["apr_l2"].as_f64().unwrap(), apr, "unweighted APR term differs between runs");
    for key in ["l2", "ntp"] {
        assert_eq!(r0[key], r1[key], "{key} differs between λ = 0 and 1 at step 1");
    }
    let (l0, l1, lq) = (r0["loss"].as_f64().unwrap(), r1["loss"].as_f64().unwrap(), rq["loss"].as_f64().unwrap());
    assert!((l1 - l0 - apr).abs() < 1e-4 * (1.0 + l1.abs()), "λ=1: {l1} - {l0} != {apr}");
    assert!((lq - l0 - 0.25 * apr).abs() < 1e-4 * (1.0 + lq.abs()), "λ=0.25: {lq} - {l0} != 0.25 · {apr}");
    for bad in [vec!["--apr-weight=-1"], vec!["--apr-weight", "nan"], vec!["--resume", d.path().join("apr-1").to_str().unwrap(), "--apr-weight", "0.5"]] {
        refused(d.path(), &bad, "--apr-weight");
    }
}

/// `--entropy-weight w` scales the IBQ entropy term in the total: two 1-step runs from the
/// same seed log the same unweighted terms and their totals differ by (0.01 - 0) · entropy.
/// The weight is saved for resume, and bad values are refused.
#[test]
fn entropy_weight_scales_the_entropy_term_and_is_saved() {
    let d = tempfile::tempdir().unwrap();
    let first = |w: &str| one_step_with_weight(d.path(), "--entropy-weight", "entropy", w);
    let (r0, r1) = (first("0"), first("0.01"));
    let ent = r1["entropy"].as_f64().unwrap();
    assert!(ent.is_finite() && ent != 0.0, "entropy term {ent}");
    assert_eq!(r0["entropy"], r1["entropy"], "unweighted entropy term differs between runs");
    let (l0, l1) = (r0["loss"].as_f64().unwrap(), r1["loss"].as_f64().unwrap());
    assert!((l1 - l0 - 0.01 * ent).abs() < 1e-5 * (1.0 + l1.abs()), "w=0.01: {l1} - {l0} != 0.01 · {ent}");
    for bad in [vec!["--entropy-weight=-1"], vec!["--entropy-weight", "inf"], vec!["--resume", d.path().join("entropy-0").to_str().unwrap(), "--entropy-weight", "0"]] {
        refused(d.path(), &bad, "--entropy-weight");
    }
}

//! `eostok-train` when things go wrong, through the real binary on the
//! repo's Fashion-MNIST fixture: SIGTERM, a crash in the middle of a save
//! (kill -9 and an exact abort point), NaN losses, a full disk, damaged
//! state.json, bad paths. Exit codes: 2 bad input, 1 internal, 143 SIGTERM.

use candle_core::Device;
use eostok_models::checkpoint::{self, WeightSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/fashion-mnist")
}

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_eostok-train"))
}

const FIT: &[&str] = &["fit", "--config", "tiny", "--batch", "4", "--lr", "1e-3", "--warmup", "2", "--quiet", "--lpips", "off", "--vfm", "off", "--sample-every", "0"];

fn fit_cmd(args: &[&str]) -> Command {
    let mut c = bin();
    c.args(FIT).arg("--data").arg(fixture()).args(args);
    c
}

fn fit(args: &[&str]) -> Output {
    fit_cmd(args).output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn ok(o: &Output) {
    assert!(o.status.success(), "{}", stderr(o));
}

fn step_of(dir: &Path) -> u64 {
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join(checkpoint::STATE_FILE)).unwrap()).unwrap();
    v["step"].as_u64().unwrap()
}

/// The checkpoint in `dir` loads the way `--resume` and the quantizer load it.
fn loads(dir: &Path) -> u64 {
    let cfg = checkpoint::load_config(dir).unwrap();
    checkpoint::load_weights(dir, &cfg, WeightSet::Raw, &Device::Cpu).unwrap();
    checkpoint::load_weights(dir, &cfg, WeightSet::Ema, &Device::Cpu).unwrap();
    candle_core::safetensors::load(dir.join(checkpoint::OPTIMIZER_FILE), &Device::Cpu).unwrap();
    step_of(dir)
}

fn same_files(a: &Path, b: &Path) -> bool {
    [checkpoint::MODEL_FILE, checkpoint::EMA_FILE, checkpoint::OPTIMIZER_FILE].iter().all(|f| std::fs::read(a.join(f)).unwrap() == std::fs::read(b.join(f)).unwrap())
}

fn wait_for_steps(out: &Path, n: usize) {
    let metrics = out.join(checkpoint::METRICS_FILE);
    let t0 = std::time::Instant::now();
    while std::fs::read_to_string(&metrics).map(|s| s.lines().count()).unwrap_or(0) < n {
        assert!(t0.elapsed().as_secs() < 180, "training did not start");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn sigterm_finishes_the_step_saves_and_exits_143() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("run");
    let mut child = fit_cmd(&["--steps", "100000", "--save-every", "100000", "--log-every", "1", "--out", out.to_str().unwrap()]).stderr(Stdio::piped()).spawn().unwrap();
    wait_for_steps(&out, 2);
    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(143));
    assert!(loads(&out) >= 2);
}

/// An abort at the worst moment of a save (two of five files moved into
/// place) stands in for kill -9 there: the next reader finishes the save,
/// and the result is the same as a run that was never interrupted.
#[test]
fn a_crash_in_the_middle_of_a_save_is_finished_on_the_next_open() {
    let d = tempfile::tempdir().unwrap();
    let (r, x) = (d.path().join("ref"), d.path().join("x"));
    ok(&fit(&["--steps", "4", "--save-every", "2", "--out", r.to_str().unwrap()]));
    ok(&fit(&["--steps", "4", "--stop-at", "2", "--out", x.to_str().unwrap()]));
    let o = fit_cmd(&["--steps", "4", "--resume", x.to_str().unwrap(), "--out", x.to_str().unwrap()]).env("EOSTOK_TEST_ABORT_AT", "commit").output().unwrap();
    assert!(!o.status.success(), "the abort hook did not fire: {}", stderr(&o));
    assert!(x.join(checkpoint::COMMIT_DIR).is_dir(), "the abort should leave a half-moved commit");
    // Reading the directory completes the save: step 4, identical to the reference.
    assert_eq!(loads(&x), 4);
    assert!(!x.join(checkpoint::COMMIT_DIR).exists());
    assert!(same_files(&r, &x), "recovered checkpoint differs from an uninterrupted run");
    // And the run goes on from there.
    ok(&fit(&["--steps", "5", "--resume", x.to_str().unwrap(), "--out", x.to_str().unwrap()]));
    assert_eq!(step_of(&x), 5);
}

/// Real kill -9 at random moments of a run that saves every step: the
/// directory always holds a loadable, consistent checkpoint.
#[test]
fn kill_9_never_leaves_a_corrupt_checkpoint() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("run");
    let mut seen = 0;
    for (round, delay_ms) in [37u64, 113, 71].into_iter().enumerate() {
        let mut args = vec!["--steps", "100000", "--save-every", "1", "--log-every", "1", "--out", out.to_str().unwrap()];
        if round > 0 {
            args.extend(["--resume", out.to_str().unwrap()]);
        }
        let mut child = fit_cmd(&args).stderr(Stdio::null()).spawn().unwrap();
        wait_for_steps(&out, seen + 2);
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let step = loads(&out);
        assert!(step >= 1, "round {round}");
        seen = std::fs::read_to_string(out.join(checkpoint::METRICS_FILE)).unwrap().lines().count();
    }
}

/// A NaN loss skips that step's update (the weights after it are the
/// weights before it), and the run goes on.
#[test]
fn a_nan_step_is_skipped_without_an_update() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("run");
    let o = fit_cmd(&["--steps", "2", "--save-every", "1", "--keep", "2", "--out", out.to_str().unwrap()]).env("EOSTOK_TEST_NAN_STEPS", "1").output().unwrap();
    ok(&o);
    assert!(stderr(&o).contains("step 2: injected NaN; step skipped"), "{}", stderr(&o));
    assert_eq!(loads(&out), 2);
    assert!(same_files(&out.join("history/step-0000001"), &out), "a skipped step changed the weights or the optimizer state");
}

/// N NaN steps in a row stop the run (exit 1) without saving over the last
/// good checkpoint; periodic saves wait during the streak.
#[test]
fn a_nan_streak_stops_the_run_and_keeps_the_last_good_checkpoint() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("run");
    let o = fit_cmd(&["--steps", "20", "--save-every", "1", "--max-nan-steps", "3", "--out", out.to_str().unwrap()]).env("EOSTOK_TEST_NAN_STEPS", "3,4,5,6,7,8").output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("NaN or infinite for 3 steps in a row (steps 4..=6)") && err.contains("last checkpoint is intact"), "{err}");
    assert_eq!(loads(&out), 3, "the checkpoint must be the one from before the streak");
    ok(&fit(&["--steps", "4", "--resume", out.to_str().unwrap(), "--out", out.to_str().unwrap()]));
}

/// A full disk (here: a file-size limit, with SIGXFSZ ignored so writes
/// fail with EFBIG) while saving: a clear error, exit 1, the previous
/// checkpoint kept and nothing staged left behind.
#[test]
fn a_full_disk_while_saving_keeps_the_previous_checkpoint() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("run");
    ok(&fit(&["--steps", "2", "--out", out.to_str().unwrap()]));
    let before = std::fs::read(out.join(checkpoint::MODEL_FILE)).unwrap();
    // 1000 blocks (512 KB or 1 MB depending on the shell): below the 2 MB weight files.
    let script = "ulimit -f 1000 && trap '' XFSZ && exec \"$@\"";
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(script).arg("sh").arg(env!("CARGO_BIN_EXE_eostok-train")).args(FIT).arg("--data").arg(fixture());
    cmd.args(["--steps", "4", "--resume", out.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    let o = cmd.output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("saving the checkpoint failed; the previous checkpoint there is kept") && err.contains("File too large"), "{err}");
    assert_eq!(err.trim().lines().filter(|l| l.contains("error")).count(), 1, "{err}");
    assert_eq!(loads(&out), 2);
    assert_eq!(std::fs::read(out.join(checkpoint::MODEL_FILE)).unwrap(), before);
    let stray: Vec<_> = std::fs::read_dir(&out).unwrap().filter_map(|e| e.ok()).filter(|e| e.file_name().to_string_lossy().starts_with('.')).collect();
    assert!(stray.is_empty(), "staging left behind: {stray:?}");
}

/// `init --force` over an existing checkpoint, aborted between moving the
/// old one aside and the new one into place: the next open puts the new one there.
#[test]
fn an_interrupted_init_force_is_finished_on_the_next_open() {
    let d = tempfile::tempdir().unwrap();
    let ck = d.path().join("ck");
    assert!(bin().args(["init", "--config", "tiny", "--out", ck.to_str().unwrap()]).status().unwrap().success());
    let o = bin().args(["init", "--config", "tiny", "--seed", "5", "--force", "--out", ck.to_str().unwrap()]).env("EOSTOK_TEST_ABORT_AT", "replace-dir").output().unwrap();
    assert!(!o.status.success());
    assert!(!ck.exists(), "the abort point is between the two renames");
    let cfg = checkpoint::load_config(&ck).unwrap();
    checkpoint::load_weights(&ck, &cfg, WeightSet::Raw, &Device::Cpu).unwrap();
    let fresh = d.path().join("fresh");
    assert!(bin().args(["init", "--config", "tiny", "--seed", "5", "--out", fresh.to_str().unwrap()]).status().unwrap().success());
    assert_eq!(std::fs::read(ck.join(checkpoint::MODEL_FILE)).unwrap(), std::fs::read(fresh.join(checkpoint::MODEL_FILE)).unwrap());
}

fn bad(o: &Output, needle: &str) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains(needle), "'{needle}' not in: {err}");
    // Progress lines may come first; the error is one line.
    assert_eq!(err.trim().lines().filter(|l| l.contains("error")).count(), 1, "one line: {err}");
    assert!(err.trim().lines().last().unwrap().contains("error:"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn damaged_state_json_and_bad_paths_are_exit_2() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("run");
    ok(&fit(&["--steps", "1", "--out", out.to_str().unwrap()]));
    let state_path = out.join(checkpoint::STATE_FILE);
    let good = std::fs::read_to_string(&state_path).unwrap();
    let resume = |_: ()| fit(&["--steps", "3", "--resume", out.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    let mut v: serde_json::Value = serde_json::from_str(&good).unwrap();
    v["train"]["batch"] = serde_json::json!(1_000_000_000_000u64);
    std::fs::write(&state_path, v.to_string()).unwrap();
    bad(&resume(()), "state.json: batch 1000000000000 is outside");
    let mut v: serde_json::Value = serde_json::from_str(&good).unwrap();
    v["train"]["lr"] = serde_json::json!(-1.0);
    std::fs::write(&state_path, v.to_string()).unwrap();
    bad(&resume(()), "lr = -1");
    std::fs::write(&state_path, &good[..good.len() / 2]).unwrap();
    bad(&resume(()), "state.json");
    std::fs::write(&state_path, &good).unwrap();
    // Paths.
    let o = bin().args(FIT).args(["--steps", "1", "--data", "/nonexistent/data", "--out", d.path().join("o1").to_str().unwrap()]).output().unwrap();
    bad(&o, "/nonexistent/data");
    bad(&fit(&["--steps", "1", "--resume", "/nonexistent/run", "--out", "/nonexistent/run"]), "/nonexistent/run");
    bad(&fit(&["--steps", "1", "--out", "/proc/eostok-run"]), "/proc/eostok-run");
    let o = bin().args(["fit", "--config", "tiny", "--quiet", "--steps", "1", "--batch", "0", "--data"]).arg(fixture()).args(["--out", d.path().join("o2").to_str().unwrap()]).output().unwrap();
    bad(&o, "--batch");
    let o = bin().args(["fit", "--config", "tiny", "--quiet", "--steps", "1", "--lr=-1", "--data"]).arg(fixture()).args(["--out", d.path().join("o3").to_str().unwrap()]).output().unwrap();
    bad(&o, "lr = -1");
    bad(&bin().args(["init", "--config", "tiny", "--out", "/proc/eostok-ck"]).output().unwrap(), "/proc");
    bad(&bin().args(["describe", "--config", "/nonexistent.json"]).output().unwrap(), "/nonexistent.json");
    std::fs::write(d.path().join("huge.json"), r#"{"base": "tiny", "ar": {"width": 65536, "depth": 1024, "heads": 1, "ffn_hidden": 65536}}"#).unwrap();
    bad(&bin().args(["describe", "--config", d.path().join("huge.json").to_str().unwrap()]).output().unwrap(), "parameters");
}

/// IDX headers: absurd image sides and counts are refused from the header,
/// before a body sized by them is read or inflated.
#[test]
fn idx_headers_with_absurd_dims_are_refused() {
    use eostok_train::data::idx::{read_idx, IMAGES_MAGIC};
    let d = tempfile::tempdir().unwrap();
    let write = |name: &str, dims: &[u32], body: usize| {
        let mut b = IMAGES_MAGIC.to_be_bytes().to_vec();
        for x in dims {
            b.extend_from_slice(&x.to_be_bytes());
        }
        b.resize(b.len() + body, 0);
        let p = d.path().join(name);
        std::fs::write(&p, b).unwrap();
        p
    };
    let e = read_idx(&write("side", &[1, 65535, 65535], 16), IMAGES_MAGIC).unwrap_err().to_string();
    assert!(e.contains("65535x65535") && e.contains("at most 4096"), "{e}");
    let e = read_idx(&write("count", &[u32::MAX, 4096, 4096], 16), IMAGES_MAGIC).unwrap_err().to_string();
    assert!(e.contains("truncated: the header promises"), "{e}");
    assert!(read_idx(&write("ok", &[2, 3, 3], 18), IMAGES_MAGIC).is_ok());
}

//! The checkpoint directory, shared by every tool:
//!
//! ```text
//! DIR/config.json           the model Config
//! DIR/model.safetensors     raw weights (names: eostok_models::names)
//! DIR/ema.safetensors       EMA weights, same names
//! DIR/optimizer.safetensors optimizer moments        (training runs)
//! DIR/state.json            step, RNG state, data position (training runs)
//! DIR/metrics.jsonl, DIR/samples/, DIR/history/step-NNNNNNN/
//! ```
//!
//! Directories are written next to their destination and renamed into place,
//! so a reader never sees a half-written checkpoint.
//!
//! Crash safety (a `kill -9` or power loss at any moment):
//! - every file is fsynced before any rename, and each directory after one;
//! - a new directory ([`write_dir_atomically`]) is renamed from a staging
//!   sibling; replacing one goes through a `.NAME.ready-PID` sibling that
//!   [`recover`] renames into place if the swap was cut short;
//! - a run's latest checkpoint (the files at the top level of a run
//!   directory, [`commit_staged`]) is staged in full, then the staging
//!   directory is renamed to `DIR/.commit` — the one atomic step that decides
//!   the new checkpoint — and its files are moved into place. A crash in the
//!   middle leaves `.commit`, which [`recover`] (run by [`load_config`], the
//!   first thing every reader does) finishes. So a reader sees the old
//!   checkpoint or the new one, never a mix.

use anyhow::{Context, Result};
use candle_core::{Device, Tensor};
use crate::exit::{bad_input, BadInputExt};
use crate::{tensor_specs, Config};
use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

pub const CONFIG_FILE: &str = "config.json";
pub const MODEL_FILE: &str = "model.safetensors";
pub const EMA_FILE: &str = "ema.safetensors";
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
pub const STATE_FILE: &str = "state.json";
pub const METRICS_FILE: &str = "metrics.jsonl";
pub const SAMPLES_DIR: &str = "samples";
pub const HISTORY_DIR: &str = "history";

/// Weights of a checkpoint, by tensor name.
pub type Weights = HashMap<String, Tensor>;

/// Which weights to read from a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightSet {
    Raw,
    Ema,
}

impl WeightSet {
    pub fn file(self) -> &'static str {
        match self {
            WeightSet::Raw => MODEL_FILE,
            WeightSet::Ema => EMA_FILE,
        }
    }
}

/// True when `dir` does not exist or is an empty directory.
pub fn is_absent_or_empty(dir: &Path) -> Result<bool> {
    match fs::read_dir(dir) {
        Ok(mut it) => Ok(it.next().is_none()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(bad_input(format!("{}: {e}", dir.display()))),
    }
}

/// A sibling path of `dir` for staging: `.NAME.TAG-PID`.
fn sibling(dir: &Path, tag: &str) -> Result<PathBuf> {
    let name = dir.file_name().ok_or_else(|| bad_input(format!("{}: not a directory name", dir.display())))?;
    let parent = dir.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    Ok(parent.join(format!(".{}.{tag}-{}", name.to_string_lossy(), std::process::id())))
}

/// fsync a file or directory (durability before rename).
pub fn sync_path(p: &Path) -> Result<()> {
    fs::File::open(p).and_then(|f| f.sync_all()).with_context(|| format!("{}: fsync", p.display()))
}

/// Build a directory with `fill` in a staging folder, then rename it to
/// `dir`. An existing non-empty `dir` is refused unless `force`, in which case
/// it is replaced only after the new one is complete.
pub fn write_dir_atomically(dir: &Path, force: bool, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let exists_nonempty = dir.exists() && !is_absent_or_empty(dir)?;
    if exists_nonempty && !force {
        return Err(bad_input(format!("{}: directory exists and is not empty (use --force to replace it)", dir.display())));
    }
    if dir.exists() && !dir.is_dir() {
        return Err(bad_input(format!("{}: exists and is not a directory", dir.display())));
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).bad_input(format!("{}: cannot create", parent.display()))?;
    }
    let staging = sibling(dir, "tmp")?;
    let _ = fs::remove_dir_all(&staging);
    fs::create_dir(&staging).bad_input(format!("{}: cannot create", staging.display()))?;
    let result = fill(&staging).and_then(|_| sync_path(&staging));
    if let Err(e) = result {
        let _ = fs::remove_dir_all(&staging);
        return Err(e);
    }
    if exists_nonempty {
        // Mark the new directory complete before the old one leaves, so a
        // crash between the two renames below is finished by `recover`.
        let ready = sibling(dir, "ready")?;
        fs::rename(&staging, &ready).with_context(|| format!("{}: cannot rename", staging.display()))?;
        sync_parent(dir)?;
        let old = sibling(dir, "old")?;
        fs::rename(dir, &old).with_context(|| format!("{}: cannot move aside", dir.display()))?;
        fault_point("replace-dir");
        fs::rename(&ready, dir).with_context(|| format!("{}: cannot rename into place", dir.display()))?;
        let _ = fs::remove_dir_all(&old);
    } else {
        if dir.exists() {
            fs::remove_dir(dir).with_context(|| format!("{}: cannot replace empty directory", dir.display()))?;
        }
        fs::rename(&staging, dir).with_context(|| format!("{}: cannot rename into place", dir.display()))?;
    }
    sync_parent(dir)
}

fn sync_parent(dir: &Path) -> Result<()> {
    match dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(parent) => sync_path(parent),
        None => sync_path(Path::new(".")),
    }
}

/// Where a run directory holds a fully written checkpoint while its files
/// are moved to the top level (see the module docs).
pub const COMMIT_DIR: &str = ".commit";

/// Make the files of `staging` (a directory inside `out`, every file
/// already written and fsynced) the checkpoint at the top level of `out`,
/// crash-safely: `staging` becomes `out/.commit` in one rename, then each
/// file moves into place (`order` first, in that order — put `state.json`
/// last — then any others), then `.commit` goes.
pub fn commit_staged(out: &Path, staging: &Path, order: &[&str]) -> Result<()> {
    sync_path(staging)?;
    let commit = out.join(COMMIT_DIR);
    if commit.exists() {
        // A previous commit was cut short: finish it first (it is older).
        recover(out)?;
    }
    fs::rename(staging, &commit).with_context(|| format!("{}: cannot rename to {}", staging.display(), commit.display()))?;
    sync_path(out)?;
    move_commit(out, order)
}

/// Files of `out/.commit` into `out`: `order` first, the rest after.
fn move_commit(out: &Path, order: &[&str]) -> Result<()> {
    let commit = out.join(COMMIT_DIR);
    let mut names: Vec<String> = fs::read_dir(&commit)
        .with_context(|| format!("{}: cannot list", commit.display()))?
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    // Unlisted files (none today) first, then `order` from its first to its last.
    names.sort();
    names.sort_by_key(|n| order.iter().position(|o| o == n).map(|i| i + 1).unwrap_or(0));
    for (i, name) in names.iter().enumerate() {
        if i == 2 {
            fault_point("commit");
        }
        let from = commit.join(name);
        if from.is_dir() {
            let to = out.join(name);
            let _ = fs::remove_dir_all(&to);
            fs::rename(&from, &to).with_context(|| format!("{}: cannot move into place", from.display()))?;
        } else {
            fs::rename(&from, out.join(name)).with_context(|| format!("{}: cannot move into place", from.display()))?;
        }
    }
    sync_path(out)?;
    fs::remove_dir(&commit).with_context(|| format!("{}: cannot remove", commit.display()))?;
    sync_path(out)
}

/// Finish a save that a crash interrupted: a run directory's `.commit`
/// (moved into place) or a replaced directory's `.NAME.ready-PID` sibling
/// (renamed to `dir` if `dir` is gone). Also removes staging directories
/// of processes that no longer run. Returns whether anything was finished.
pub fn recover(dir: &Path) -> Result<bool> {
    let mut done = false;
    if !dir.exists() {
        let (Some(name), parent) = (dir.file_name(), dir.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."))) else {
            return Ok(false);
        };
        let prefix = format!(".{}.ready-", name.to_string_lossy());
        if let Ok(entries) = fs::read_dir(parent) {
            let mut ready: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(&prefix))).collect();
            ready.sort();
            if let Some(r) = ready.pop() {
                fs::rename(&r, dir).bad_input(format!("{}: an interrupted save left {}, which cannot be moved into place", dir.display(), r.display()))?;
                sync_parent(dir)?;
                done = true;
            }
        }
        return Ok(done);
    }
    if dir.join(COMMIT_DIR).is_dir() {
        move_commit(dir, &[CONFIG_FILE, MODEL_FILE, EMA_FILE, OPTIMIZER_FILE, STATE_FILE])
            .map_err(|e| bad_input(format!("{}: an interrupted save could not be completed (is the directory writable?): {e:#}", dir.display())))?;
        eprintln!("{}: completed a save that was interrupted", dir.display());
        done = true;
    }
    // Staging directories of dead processes (`.staging-PID`).
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(pid) = name.strip_prefix(".staging-").and_then(|p| p.parse::<u32>().ok()) {
                if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
                    let _ = fs::remove_dir_all(e.path());
                }
            }
        }
    }
    Ok(done)
}

/// Test hook standing in for `kill -9` at an exact point of a save:
/// `EOSTOK_TEST_ABORT_AT=commit` aborts the process there (no destructors,
/// no cleanup), as a crash would.
pub fn fault_point(name: &str) {
    if std::env::var("EOSTOK_TEST_ABORT_AT").is_ok_and(|v| v == name) {
        eprintln!("EOSTOK_TEST_ABORT_AT={name}: aborting");
        std::process::abort();
    }
}

/// Write a safetensors file and fsync it.
pub fn save_weights(path: &Path, weights: &Weights) -> Result<()> {
    candle_core::safetensors::save(weights, path).with_context(|| format!("{}: cannot write", path.display()))?;
    sync_path(path)
}

pub fn save_config(path: &Path, cfg: &Config) -> Result<()> {
    fs::write(path, cfg.to_json()).with_context(|| format!("{}: cannot write", path.display()))?;
    sync_path(path)
}

/// Read and validate `DIR/config.json`.
pub fn load_config(dir: &Path) -> Result<Config> {
    recover(dir)?;
    let path = dir.join(CONFIG_FILE);
    let text = fs::read_to_string(&path).bad_input(path.display())?;
    Config::from_json(&text).bad_input(path.display())
}

/// Read one weight file and check every tensor against the config: all
/// present, right shapes, nothing extra, finite values.
pub fn load_weights(dir: &Path, cfg: &Config, set: WeightSet, device: &Device) -> Result<Weights> {
    let path = dir.join(set.file());
    if !path.is_file() {
        return Err(bad_input(format!("{}: no such file (not a checkpoint directory?)", path.display())));
    }
    let weights = candle_core::safetensors::load(&path, device).bad_input(path.display())?;
    check_weights(&path, cfg, &weights)?;
    Ok(weights)
}

pub fn check_weights(path: &Path, cfg: &Config, weights: &Weights) -> Result<()> {
    let specs = tensor_specs(cfg);
    for s in &specs {
        let t = weights
            .get(&s.name)
            .ok_or_else(|| bad_input(format!("{}: tensor '{}' is missing", path.display(), s.name)))?;
        if t.dims() != s.shape.as_slice() {
            return Err(bad_input(format!(
                "{}: tensor '{}' has shape {:?}, the config needs {:?}",
                path.display(),
                s.name,
                t.dims(),
                s.shape
            )));
        }
    }
    if weights.len() != specs.len() {
        let known: std::collections::HashSet<&str> = specs.iter().map(|s| s.name.as_str()).collect();
        let mut extra: Vec<&String> = weights.keys().filter(|k| !known.contains(k.as_str())).collect();
        extra.sort();
        return Err(bad_input(format!("{}: tensors not in the config: {:?}", path.display(), extra)));
    }
    Ok(())
}

/// `eostok-train init`: a randomly initialised checkpoint (raw = EMA).
pub fn write_initial(dir: &Path, cfg: &Config, weights: &Weights, force: bool) -> Result<()> {
    write_dir_atomically(dir, force, |tmp| {
        save_config(&tmp.join(CONFIG_FILE), cfg)?;
        save_weights(&tmp.join(MODEL_FILE), weights)?;
        save_weights(&tmp.join(EMA_FILE), weights)
    })
}

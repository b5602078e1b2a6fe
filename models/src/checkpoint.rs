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
        let old = sibling(dir, "old")?;
        fs::rename(dir, &old).with_context(|| format!("{}: cannot move aside", dir.display()))?;
        fs::rename(&staging, dir).with_context(|| format!("{}: cannot rename into place", dir.display()))?;
        let _ = fs::remove_dir_all(&old);
    } else {
        if dir.exists() {
            fs::remove_dir(dir).with_context(|| format!("{}: cannot replace empty directory", dir.display()))?;
        }
        fs::rename(&staging, dir).with_context(|| format!("{}: cannot rename into place", dir.display()))?;
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        sync_path(parent)?;
    }
    Ok(())
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

//! The asset cache that `scripts/fetch-assets` fills
//! (`${EOSTOK_ASSETS:-$HOME/.cache/eostok}`, layout in
//! `scripts/assets/README.md`), and loading its safetensors files.
//!
//! Nothing is downloaded at run time: a missing file is a bad-input error
//! (exit 2) whose one line says to run `scripts/fetch-assets`.

use crate::exit::{bad_input, BadInputExt};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Environment variable that overrides the cache location.
pub const ASSETS_ENV: &str = "EOSTOK_ASSETS";

/// What to tell a user whose cache lacks a file.
pub const FETCH_HINT: &str = "run scripts/fetch-assets to fetch it (or set EOSTOK_ASSETS to another cache)";

/// `$EOSTOK_ASSETS` when set and non-empty, else `$HOME/.cache/eostok`.
pub fn asset_dir() -> PathBuf {
    match std::env::var_os(ASSETS_ENV) {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => {
            let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
            home.join(".cache").join("eostok")
        }
    }
}

/// `asset_dir()/rel`, or a bad-input error naming it with [`FETCH_HINT`].
pub fn asset_path(rel: &str) -> anyhow::Result<PathBuf> {
    let p = asset_dir().join(rel);
    if p.exists() {
        Ok(p)
    } else {
        Err(missing(&p))
    }
}

/// The one-line error for a missing cache file.
pub fn missing(p: &Path) -> anyhow::Error {
    bad_input(format!("{}: not found; {FETCH_HINT}", p.display()))
}

/// All tensors of a safetensors file, as f32 on `device`.
pub fn load_safetensors(path: &Path, device: &Device) -> anyhow::Result<HashMap<String, Tensor>> {
    if !path.exists() {
        return Err(missing(path));
    }
    let name = path.display();
    let tensors = candle_core::safetensors::load(path, device).bad_input(&name)?;
    let mut out = HashMap::with_capacity(tensors.len());
    for (k, t) in tensors {
        let t = t.to_dtype(DType::F32).bad_input(format!("{name}: tensor {k}"))?;
        out.insert(k, t);
    }
    Ok(out)
}

/// Build a module from a safetensors file. The weights are plain tensors
/// (no `Var`s): frozen nets take no part in an optimizer. A missing tensor
/// or a wrong shape is a bad-input error naming the file and the tensor.
pub fn build_from_file<M>(
    path: &Path,
    device: &Device,
    build: impl FnOnce(&VarBuilder<'static>) -> candle_core::Result<M>,
) -> anyhow::Result<M> {
    let tensors = load_safetensors(path, device)?;
    let vb = VarBuilder::from_tensors(tensors, DType::F32, device);
    build(&vb).bad_input(path.display())
}

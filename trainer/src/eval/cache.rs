//! Cached feature statistics of real image sets, so an evaluation of
//! generated images costs only generation and one feature pass.
//!
//! One safetensors file per key under `DIR/eval-stats/` (`DIR` = `--cache`,
//! default the asset cache `${EOSTOK_ASSETS:-~/.cache/eostok}`), named
//! `<feature net>-<16 hex digits of FNV-1a(key)>.safetensors`:
//!
//! | tensor | dtype | shape | |
//! |---|---|---|---|
//! | `mean` | F64 | [D] | feature mean |
//! | `cov` | F64 | [D, D] | covariance (n - 1) |
//! | `features` | F32 | [n, D] | the features themselves (precision/recall) |
//!
//! Metadata: `key` (the key as JSON: format version, source identity, n,
//! class, seed, feature net, image size, resize filter) and `count`. A file
//! whose stored key differs from the wanted one (a hash collision, another
//! format) is ignored and overwritten. Files are written to a temporary
//! name and renamed.

use super::fd::Stats;
use anyhow::{Context, Result};
use nalgebra::{DMatrix, DVector};
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Bumped whenever preprocessing or features change meaning.
pub const CACHE_VERSION: u32 = 1;

/// What the cached statistics were computed from.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CacheKey {
    pub version: u32,
    pub source: String,
    pub n: usize,
    pub class: String,
    pub seed: u64,
    pub features: String,
    pub image_size: usize,
    pub resize: String,
    /// The feature net's weight file (path, size, modification time) where it is not the
    /// asset cache's own (`--*-weights FILE`) or is user-supplied (Inception): other
    /// weights, other statistics. Absent otherwise, so earlier keys stay valid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights: Option<String>,
}

impl CacheKey {
    /// [`CacheKey::weights`] for the file at `p`.
    pub fn weights_identity(p: &Path) -> String {
        let canon = std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
        let meta = std::fs::metadata(p).ok();
        let len = meta.as_ref().map(|m| m.len()).unwrap_or(0);
        let mtime = meta.and_then(|m| m.modified().ok()).and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map(|d| d.as_secs()).unwrap_or(0);
        format!("{} | {len} bytes | mtime {mtime}", canon.display())
    }

    pub fn json(&self) -> String {
        serde_json::to_string(self).expect("key serialises")
    }

    pub fn file_name(&self) -> String {
        let mut h = super::sources::Fnv::default();
        h.write(self.json().as_bytes());
        format!("{}-{:016x}.safetensors", self.features, h.0)
    }
}

/// Cached statistics and features.
pub struct Cached {
    pub stats: Stats,
    pub features: Vec<f32>,
}

/// `dir/eval-stats/<file>`.
pub fn path_for(dir: &Path, key: &CacheKey) -> PathBuf {
    dir.join("eval-stats").join(key.file_name())
}

fn f64_bytes(v: &[f64]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Read the entry for `key`, if present and matching. Unreadable or
/// mismatching files count as absent (they are recomputed).
pub fn load(dir: &Path, key: &CacheKey) -> Option<Cached> {
    let path = path_for(dir, key);
    let bytes = std::fs::read(&path).ok()?;
    let (_, meta) = SafeTensors::read_metadata(&bytes).ok()?;
    let info = meta.metadata().as_ref()?;
    if info.get("key")? != &key.json() {
        return None;
    }
    let count: usize = info.get("count")?.parse().ok()?;
    let st = SafeTensors::deserialize(&bytes).ok()?;
    let f64s = |name: &str| -> Option<Vec<f64>> {
        let t = st.tensor(name).ok()?;
        (t.dtype() == Dtype::F64).then(|| t.data().chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes"))).collect())
    };
    let mean = f64s("mean")?;
    let d = mean.len();
    let cov = f64s("cov")?;
    let ft = st.tensor("features").ok()?;
    if cov.len() != d * d || ft.dtype() != Dtype::F32 || ft.shape() != [count, d] {
        return None;
    }
    let features: Vec<f32> = ft.data().chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes"))).collect();
    Some(Cached { stats: Stats { mean: DVector::from_vec(mean), cov: DMatrix::from_row_slice(d, d, &cov), count }, features })
}

/// Write the entry for `key` (atomically).
pub fn save(dir: &Path, key: &CacheKey, stats: &Stats, features: &[f32]) -> Result<PathBuf> {
    let path = path_for(dir, key);
    let parent = path.parent().expect("has a parent");
    std::fs::create_dir_all(parent).with_context(|| format!("{}: cannot create", parent.display()))?;
    let d = stats.dim();
    let mean = f64_bytes(stats.mean.as_slice());
    // nalgebra is column-major; the covariance is symmetric, but store rows anyway.
    let cov_rows: Vec<f64> = (0..d).flat_map(|i| (0..d).map(move |j| (i, j))).map(|(i, j)| stats.cov[(i, j)]).collect();
    let cov = f64_bytes(&cov_rows);
    let feats: Vec<u8> = features.iter().flat_map(|x| x.to_le_bytes()).collect();
    let views = vec![
        ("mean", TensorView::new(Dtype::F64, vec![d], &mean)?),
        ("cov", TensorView::new(Dtype::F64, vec![d, d], &cov)?),
        ("features", TensorView::new(Dtype::F32, vec![stats.count, d], &feats)?),
    ];
    let meta: HashMap<String, String> = [("key".to_string(), key.json()), ("count".to_string(), stats.count.to_string())].into();
    let tmp = path.with_extension(format!("safetensors.{}.tmp", std::process::id()));
    safetensors::serialize_to_file(views, Some(meta), &tmp).with_context(|| format!("{}: cannot write", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("{}: cannot write", path.display()))?;
    Ok(path)
}

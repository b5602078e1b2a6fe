//! Where weights come from: a checkpoint directory (safetensors, read one
//! tensor at a time from an mmap) or an existing GGUF (requantize).

use anyhow::Result;
use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Tensor};
use eostok_models::checkpoint::{self, WeightSet};
use eostok_models::exit::{bad_input, BadInputExt};
use eostok_models::gguf_schema::{self, MetaValue, SamplingRecommendation};
use eostok_models::shapes::TensorSpec;
use eostok_models::Config;
use eostok_runtime::gguf::GgufFile;
use eostok_runtime::model::schema_value;
use eostok_runtime::quant::{dequantize_row, GgmlType};
use std::path::{Path, PathBuf};

pub enum Source {
    Checkpoint { dir: PathBuf, file: PathBuf, cfg: Config, st: MmapedSafetensors, provenance: Vec<(String, MetaValue)> },
    Gguf { path: PathBuf, cfg: Config, gguf: GgufFile },
}

/// A tensor as f32 plus the type it was stored in.
pub struct Loaded {
    pub values: Tensor,
    pub stored: GgmlType,
}

impl Source {
    pub fn open(path: &Path, weights: WeightSet) -> Result<Source> {
        if path.is_dir() {
            let cfg = checkpoint::load_config(path)?;
            let file = path.join(weights.file());
            if !file.is_file() {
                return Err(bad_input(format!("{}: no such file (is {} a checkpoint directory?)", file.display(), path.display())));
            }
            // SAFETY: read-only map of a file we do not modify; concurrent
            // truncation by another process is outside our contract.
            let st = unsafe { MmapedSafetensors::new(&file) }.bad_input(file.display())?;
            let provenance = read_provenance(path);
            Ok(Source::Checkpoint { dir: path.to_path_buf(), file, cfg, st, provenance })
        } else if path.is_file() {
            let gguf = GgufFile::open(path).bad_input(path.display())?;
            let cfg = eostok_runtime::model::config_of(&gguf).map_err(|e| bad_input(format!("{}: {e}", path.display())))?;
            Ok(Source::Gguf { path: path.to_path_buf(), cfg, gguf })
        } else {
            Err(bad_input(format!("{}: no such checkpoint directory or GGUF file", path.display())))
        }
    }

    pub fn config(&self) -> &Config {
        match self {
            Source::Checkpoint { cfg, .. } | Source::Gguf { cfg, .. } => cfg,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Source::Checkpoint { dir, .. } => dir.display().to_string(),
            Source::Gguf { path, .. } => path.display().to_string(),
        }
    }

    /// Training provenance to carry into the GGUF.
    pub fn provenance(&self) -> Vec<(String, MetaValue)> {
        match self {
            Source::Checkpoint { provenance, .. } => provenance.clone(),
            Source::Gguf { gguf, .. } => [gguf_schema::TRAIN_DATASET, gguf_schema::TRAIN_STEPS, gguf_schema::TRAIN_MODE, gguf_schema::TRAIN_LOSSES]
                .iter()
                .filter_map(|k| gguf.metadata().get(k).and_then(schema_value).map(|v| (k.to_string(), v)))
                .collect(),
        }
    }

    /// The sampling the source recommends: a GGUF's (checked), none for a checkpoint.
    pub fn sampling(&self) -> Result<SamplingRecommendation> {
        match self {
            Source::Checkpoint { .. } => Ok(SamplingRecommendation::default()),
            Source::Gguf { gguf, path, .. } => eostok_runtime::model::sampling_of(gguf).map_err(|e| bad_input(format!("{}: {e}", path.display()))),
        }
    }

    /// Does the source hold this tensor (a GGUF may lack the encoder)?
    pub fn has(&self, name: &str) -> bool {
        match self {
            Source::Checkpoint { st, .. } => st.get(name).is_ok(),
            Source::Gguf { gguf, .. } => gguf.tensor(name).is_ok(),
        }
    }

    /// One tensor as f32, checked against its spec: present, right shape,
    /// finite values.
    pub fn load(&self, spec: &TensorSpec) -> Result<Loaded> {
        let (values, stored, file) = match self {
            Source::Checkpoint { st, file, .. } => {
                let t = st.load(&spec.name, &Device::Cpu).map_err(|_| bad_input(format!("{}: tensor '{}' is missing", file.display(), spec.name)))?;
                let stored = match t.dtype() {
                    DType::F16 => GgmlType::F16,
                    DType::F32 => GgmlType::F32,
                    other => return Err(bad_input(format!("{}: tensor '{}' has dtype {other:?}; expected f32 or f16", file.display(), spec.name))),
                };
                check_shape(file, spec, t.dims())?;
                (t.to_dtype(DType::F32)?, stored, file)
            }
            Source::Gguf { gguf, path, .. } => {
                let view = gguf.tensor(&spec.name).map_err(|_| bad_input(format!("{}: tensor '{}' is missing", path.display(), spec.name)))?;
                let dims: Vec<usize> = view.info.dims.iter().rev().map(|&d| d as usize).collect();
                check_shape(path, spec, &dims)?;
                let n: usize = dims.iter().product();
                let mut out = vec![0f32; n];
                let ty = view.info.ggml_type;
                dequantize_row(ty, view.data, &mut out).bad_input(format!("{}: tensor '{}'", path.display(), spec.name))?;
                (Tensor::from_vec(out, dims, &Device::Cpu)?, ty, path)
            }
        };
        let finite = values.flatten_all()?.to_vec1::<f32>()?.iter().all(|x| x.is_finite());
        if !finite {
            return Err(bad_input(format!("{}: tensor '{}' holds NaN or infinite values", file.display(), spec.name)));
        }
        Ok(Loaded { values, stored })
    }
}

fn check_shape(file: &Path, spec: &TensorSpec, dims: &[usize]) -> Result<()> {
    if dims != spec.shape.as_slice() {
        return Err(bad_input(format!("{}: tensor '{}' has shape {dims:?}, the config needs {:?}", file.display(), spec.name, spec.shape)));
    }
    Ok(())
}

/// `state.json` of a training run, if present: dataset, step, mode, losses.
fn read_provenance(dir: &Path) -> Vec<(String, MetaValue)> {
    let Ok(text) = std::fs::read_to_string(dir.join(checkpoint::STATE_FILE)) else { return vec![] };
    let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else { return vec![] };
    let mut out = vec![];
    if let Some(s) = v.get("dataset").and_then(|x| x.as_str()) {
        out.push((gguf_schema::TRAIN_DATASET.to_string(), MetaValue::Str(s.to_string())));
    }
    if let Some(s) = v.get("step").and_then(|x| x.as_u64()) {
        out.push((gguf_schema::TRAIN_STEPS.to_string(), MetaValue::U64(s)));
    }
    if let Some(s) = v.get("mode").and_then(|x| x.as_str()) {
        out.push((gguf_schema::TRAIN_MODE.to_string(), MetaValue::Str(s.to_string())));
    }
    if let Some(s) = v.get("losses").and_then(|x| x.as_array()) {
        let names: Vec<String> = s.iter().filter_map(|x| x.as_str().map(str::to_string)).collect();
        out.push((gguf_schema::TRAIN_LOSSES.to_string(), MetaValue::StrArray(names)));
    }
    out
}

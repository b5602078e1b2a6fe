//! Parameter storage for the candle modules.
//!
//! `ParamStore` is a `VarBuilder` backend that hands out `Var`s: freshly
//! initialised from a seed (each tensor from its own RNG stream keyed by
//! seed and name, so the init does not depend on creation order), or loaded
//! from a checkpoint. The trainer reads the vars back by name.

use candle_core::{DType, Device, Result, Shape, Tensor, Var};
use candle_nn::{Init, VarBuilder};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use crate::sampling::SplitMix64;

enum Source {
    Random { seed: u64 },
    Tensors(HashMap<String, Tensor>),
}

struct Inner {
    vars: BTreeMap<String, Var>,
    source: Source,
}

#[derive(Clone)]
pub struct ParamStore(Arc<Mutex<Inner>>);

impl ParamStore {
    /// Every requested tensor is created from `seed` and its init hint.
    pub fn random(seed: u64) -> Self {
        Self::with_source(Source::Random { seed })
    }

    /// Every requested tensor must be in `tensors` with the requested shape.
    pub fn from_tensors(tensors: HashMap<String, Tensor>) -> Self {
        Self::with_source(Source::Tensors(tensors))
    }

    fn with_source(source: Source) -> Self {
        ParamStore(Arc::new(Mutex::new(Inner { vars: BTreeMap::new(), source })))
    }

    pub fn var_builder(&self, dtype: DType, device: &Device) -> VarBuilder<'static> {
        VarBuilder::from_backend(Box::new(self.clone()), dtype, device.clone())
    }

    /// All variables by name (sorted).
    pub fn vars(&self) -> BTreeMap<String, Var> {
        self.0.lock().expect("param store lock").vars.clone()
    }

    /// Names in the loaded tensors that no module asked for (a checkpoint that
    /// does not match the config).
    pub fn unused_names(&self) -> Vec<String> {
        let inner = self.0.lock().expect("param store lock");
        match &inner.source {
            Source::Tensors(t) => {
                let mut v: Vec<String> = t.keys().filter(|k| !inner.vars.contains_key(*k)).cloned().collect();
                v.sort();
                v
            }
            Source::Random { .. } => vec![],
        }
    }
}

impl candle_nn::var_builder::SimpleBackend for ParamStore {
    fn get(&self, s: Shape, name: &str, h: Init, dtype: DType, dev: &Device) -> Result<Tensor> {
        let mut inner = self.0.lock().expect("param store lock");
        if let Some(v) = inner.vars.get(name) {
            if v.shape() != &s {
                candle_core::bail!("parameter {name}: requested shape {s:?}, stored {:?}", v.shape());
            }
            return Ok(v.as_tensor().clone());
        }
        let t = match &inner.source {
            Source::Random { seed } => init_tensor(&s, h, *seed, name, dtype, dev)?,
            Source::Tensors(map) => {
                let t = map.get(name).ok_or_else(|| candle_core::Error::Msg(format!("checkpoint has no tensor '{name}'")))?;
                if t.shape() != &s {
                    candle_core::bail!("tensor '{name}' has shape {:?}, the config needs {s:?}", t.shape().dims());
                }
                t.to_dtype(dtype)?.to_device(dev)?
            }
        };
        let var = Var::from_tensor(&t)?;
        let out = var.as_tensor().clone();
        inner.vars.insert(name.to_string(), var);
        Ok(out)
    }

    fn get_unchecked(&self, name: &str, _dtype: DType, _dev: &Device) -> Result<Tensor> {
        let inner = self.0.lock().expect("param store lock");
        match inner.vars.get(name) {
            Some(v) => Ok(v.as_tensor().clone()),
            None => candle_core::bail!("no parameter '{name}'"),
        }
    }

    fn contains_tensor(&self, name: &str) -> bool {
        let inner = self.0.lock().expect("param store lock");
        inner.vars.contains_key(name) || matches!(&inner.source, Source::Tensors(t) if t.contains_key(name))
    }
}

/// FNV-1a of the name mixed with the seed: one RNG stream per tensor.
fn stream_seed(seed: u64, name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^ seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

fn init_tensor(s: &Shape, h: Init, seed: u64, name: &str, dtype: DType, dev: &Device) -> Result<Tensor> {
    let n = s.elem_count();
    let mut rng = SplitMix64::new(stream_seed(seed, name));
    let values: Vec<f64> = match h {
        Init::Const(c) => vec![c; n],
        Init::Randn { mean, stdev } => (0..n).map(|_| mean + stdev * rng.normal()).collect(),
        Init::Uniform { lo, up } => (0..n).map(|_| lo + (up - lo) * rng.uniform()).collect(),
        Init::Kaiming { dist, fan, non_linearity } => {
            let std = non_linearity.gain() / (fan.for_shape(s) as f64).sqrt();
            match dist {
                candle_nn::init::NormalOrUniform::Normal => (0..n).map(|_| std * rng.normal()).collect(),
                candle_nn::init::NormalOrUniform::Uniform => {
                    let b = 3f64.sqrt() * std;
                    (0..n).map(|_| -b + 2.0 * b * rng.uniform()).collect()
                }
            }
        }
    };
    Tensor::from_vec(values, s.clone(), dev)?.to_dtype(dtype)
}

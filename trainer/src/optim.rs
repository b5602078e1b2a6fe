//! Adam(W) with parameter groups, whose state can be saved and restored
//! exactly (candle's AdamW keeps its moments private and takes one beta2).
//! EOSTok trains the tokenizer with beta2 = 0.999 and the AR model with 0.95.

use candle_core::backprop::GradStore;
use candle_core::{Result, Tensor, Var};
use std::collections::{BTreeMap, HashMap};

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct GroupConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

pub struct Group {
    pub name: String,
    pub cfg: GroupConfig,
    /// (tensor name, variable), sorted by name.
    pub vars: Vec<(String, Var)>,
}

pub struct Adam {
    pub groups: Vec<Group>,
    /// First and second moments by tensor name.
    m: HashMap<String, Tensor>,
    v: HashMap<String, Tensor>,
    pub step: u64,
}

impl Adam {
    pub fn new(groups: Vec<Group>) -> Result<Self> {
        let mut m = HashMap::new();
        let mut v = HashMap::new();
        for g in &groups {
            for (name, var) in &g.vars {
                m.insert(name.clone(), var.zeros_like()?);
                v.insert(name.clone(), var.zeros_like()?);
            }
        }
        Ok(Adam { groups, m, v, step: 0 })
    }

    /// Global l2 norm of the gradients of every variable.
    pub fn grad_norm(&self, grads: &GradStore) -> Result<f64> {
        let mut total = 0f64;
        for g in &self.groups {
            for (_, var) in &g.vars {
                if let Some(gr) = grads.get(var.as_tensor()) {
                    total += gr.sqr()?.sum_all()?.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?;
                }
            }
        }
        Ok(total.sqrt())
    }

    /// One update with learning rate `lr`; gradients scaled by `grad_scale`
    /// (clipping). Variables without a gradient are left as they are.
    pub fn update(&mut self, grads: &GradStore, lr: f64, grad_scale: f64) -> Result<()> {
        self.step += 1;
        let t = self.step as i32;
        for g in &self.groups {
            let c = &g.cfg;
            let (bc1, bc2) = (1.0 - c.beta1.powi(t), 1.0 - c.beta2.powi(t));
            for (name, var) in &g.vars {
                let Some(gr) = grads.get(var.as_tensor()) else { continue };
                // Detached: the moments must not keep this step's graph alive.
                let gr = gr.detach();
                let gr = if grad_scale != 1.0 { (gr * grad_scale)? } else { gr };
                let m = ((&self.m[name] * c.beta1)? + (&gr * (1.0 - c.beta1))?)?.detach();
                let v = ((&self.v[name] * c.beta2)? + (gr.sqr()? * (1.0 - c.beta2))?)?.detach();
                let denom = ((&v / bc2)?.sqrt()? + c.eps)?;
                let mut update = ((&m / bc1)? / denom)?;
                if c.weight_decay != 0.0 {
                    update = (update + (var.as_tensor() * c.weight_decay)?)?;
                }
                var.set(&(var.as_tensor().detach() - (update * lr)?)?)?;
                self.m.insert(name.clone(), m);
                self.v.insert(name.clone(), v);
            }
        }
        Ok(())
    }

    /// `update` of the group `name` only: the other groups are moved out for the update,
    /// so their weights, moments and gradients stay bit-identical (two-stage training).
    pub fn update_group(&mut self, grads: &GradStore, lr: f64, grad_scale: f64, name: &str) -> Result<()> {
        let others: Vec<usize> = self.groups.iter().enumerate().filter(|(_, g)| g.name != name).map(|(i, _)| i).collect();
        let mut parked = Vec::new();
        for &i in others.iter().rev() {
            parked.push((i, std::mem::take(&mut self.groups[i].vars)));
        }
        let r = self.update(grads, lr, grad_scale);
        for (i, vars) in parked {
            self.groups[i].vars = vars;
        }
        r
    }

    /// Moments as named tensors (`m.NAME`, `v.NAME`) for optimizer.safetensors.
    pub fn state(&self) -> BTreeMap<String, Tensor> {
        let mut out = BTreeMap::new();
        for (k, t) in &self.m {
            out.insert(format!("m.{k}"), t.clone());
        }
        for (k, t) in &self.v {
            out.insert(format!("v.{k}"), t.clone());
        }
        out
    }

    /// Restore moments saved by `state` (every one must be present).
    pub fn load_state(&mut self, saved: &HashMap<String, Tensor>, step: u64) -> anyhow::Result<()> {
        for (name, slot) in self.m.iter_mut() {
            let t = saved.get(&format!("m.{name}")).ok_or_else(|| anyhow::anyhow!("optimizer state lacks m.{name}"))?;
            anyhow::ensure!(t.dims() == slot.dims(), "optimizer state m.{name} has shape {:?}, expected {:?}", t.dims(), slot.dims());
            *slot = t.clone();
        }
        for (name, slot) in self.v.iter_mut() {
            let t = saved.get(&format!("v.{name}")).ok_or_else(|| anyhow::anyhow!("optimizer state lacks v.{name}"))?;
            anyhow::ensure!(t.dims() == slot.dims(), "optimizer state v.{name} has shape {:?}, expected {:?}", t.dims(), slot.dims());
            *slot = t.clone();
        }
        self.step = step;
        Ok(())
    }
}

/// Linear warmup then cosine decay from `lr` to `min_lr` over `total` steps.
pub fn lr_at(step: u64, total: u64, warmup: u64, lr: f64, min_lr: f64) -> f64 {
    if step < warmup {
        return lr * (step + 1) as f64 / warmup as f64;
    }
    let span = total.saturating_sub(warmup).max(1) as f64;
    let progress = ((step - warmup) as f64 / span).min(1.0);
    min_lr + 0.5 * (lr - min_lr) * (1.0 + (std::f64::consts::PI * progress).cos())
}

/// Exponential moving average of the weights (saved as ema.safetensors).
pub struct Ema {
    pub decay: f64,
    pub weights: BTreeMap<String, Tensor>,
}

impl Ema {
    pub fn new(decay: f64, vars: &BTreeMap<String, Var>) -> Result<Self> {
        let weights = vars.iter().map(|(k, v)| Ok((k.clone(), v.as_tensor().copy()?))).collect::<Result<_>>()?;
        Ok(Ema { decay, weights })
    }

    pub fn update(&mut self, vars: &BTreeMap<String, Var>) -> Result<()> {
        for (k, v) in vars {
            if let Some(e) = self.weights.get_mut(k) {
                // Detached: otherwise each EMA tensor holds on to the previous one.
                *e = ((&*e * self.decay)? + (v.as_tensor().detach() * (1.0 - self.decay))?)?.detach();
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    #[test]
    fn adam_matches_a_hand_computed_step() {
        let w = Var::from_tensor(&Tensor::new(&[1.0f64, -2.0], &Device::Cpu).unwrap()).unwrap();
        let cfg = GroupConfig { beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0.0 };
        let mut opt = Adam::new(vec![Group { name: "g".into(), cfg, vars: vec![("w".into(), w.clone())] }]).unwrap();
        // loss = sum(w^2) -> grad = 2w; first Adam step moves each weight by -lr * sign(g).
        let loss = w.as_tensor().sqr().unwrap().sum_all().unwrap();
        let grads = loss.backward().unwrap();
        assert!((opt.grad_norm(&grads).unwrap() - (4.0f64 + 16.0).sqrt()).abs() < 1e-12);
        opt.update(&grads, 0.1, 1.0).unwrap();
        let v: Vec<f64> = w.as_tensor().to_vec1().unwrap();
        assert!((v[0] - 0.9).abs() < 1e-7 && (v[1] + 1.9).abs() < 1e-7, "{v:?}");
        assert_eq!(opt.step, 1);
        assert_eq!(opt.state().len(), 2);
        // No state may keep the step's graph alive (that leaked the whole
        // graph every step, until the run ran out of memory).
        assert!(opt.state().values().all(|t| !t.track_op()), "optimizer moments are attached to the graph");
        let vars: BTreeMap<String, Var> = [("w".to_string(), w.clone())].into();
        let mut ema = Ema::new(0.9, &vars).unwrap();
        ema.update(&vars).unwrap();
        assert!(ema.weights.values().all(|t| !t.track_op()), "EMA weights are attached to the graph");
    }

    #[test]
    fn schedule_warms_up_then_decays() {
        assert!((lr_at(0, 100, 10, 1.0, 0.0) - 0.1).abs() < 1e-12);
        assert!((lr_at(9, 100, 10, 1.0, 0.0) - 1.0).abs() < 1e-12);
        assert!((lr_at(10, 100, 10, 1.0, 0.0) - 1.0).abs() < 1e-12);
        assert!(lr_at(55, 100, 10, 1.0, 0.0) < 0.6);
        assert!((lr_at(100, 100, 10, 1.0, 0.1) - 0.1).abs() < 1e-12);
    }
}

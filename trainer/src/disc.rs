//! The optional PatchGAN discriminator (paper.md §L_recon: hinge GAN + LeCam; we use a
//! PatchGAN conv net with GroupNorm instead of StyleGAN-T's frozen-DINO heads).
//!
//! Convolutions are im2col (one fused CPU op with a col2im backward) + one matmul, so the
//! backward is a GEMM too: candle's CPU conv2d backward goes through a naive conv_transpose2d
//! (docs/architecture.md, Known traps). It has its own Adam (β 0.5/0.9), learning rate and
//! start step; its weights, moments and the LeCam EMAs are saved in `disc.safetensors`.

use crate::optim::{Adam, Group, GroupConfig};
use candle_core::{DType, Device, Module, Result, Tensor, D};
use eostok_models::nn::layers::Linear;
use eostok_models::nn::ParamStore;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// Discriminator settings (saved with the run's TrainConfig).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DiscConfig {
    /// Off unless true (`--disc patchgan`).
    pub on: bool,
    /// Weight of the generator's hinge term on the reconstruction.
    pub weight: f64,
    /// First step with a GAN term (the discriminator also trains from here).
    pub start: u64,
    /// LeCam regulariser weight.
    pub lecam: f64,
    pub lr: f64,
    /// Channels of the first conv (doubled per downsampling layer).
    pub channels: usize,
}

impl Default for DiscConfig {
    fn default() -> Self {
        DiscConfig { on: false, weight: 0.1, start: 0, lecam: 0.05, lr: 1e-4, channels: 32 }
    }
}

/// A k×k conv with stride and zero padding, as im2col + matmul (differentiable).
struct Conv {
    /// [out, in·k·k]
    lin: Linear,
    k: usize,
    stride: usize,
    pad: usize,
}

/// im2col: [B, C, H, W] -> [B·Ho·Wo, C·k·k] (c major, then ki, kj: the weight's layout),
/// zero padding `pad`; its backward is col2im. One pass each way on the CPU.
#[derive(Clone, Copy)]
struct Im2Col {
    k: usize,
    stride: usize,
    pad: usize,
}

impl Im2Col {
    fn out_size(&self, h: usize, w: usize) -> (usize, usize) {
        ((h + 2 * self.pad - self.k) / self.stride + 1, (w + 2 * self.pad - self.k) / self.stride + 1)
    }
    /// Calls `f(col_index, input_index)` for every in-bounds pair of image `bi`'s patches.
    fn for_each(&self, c: usize, h: usize, w: usize, mut f: impl FnMut(usize, usize)) {
        let (ho, wo) = self.out_size(h, w);
        let kk = self.k * self.k;
        for oy in 0..ho {
            for ox in 0..wo {
                let row = (oy * wo + ox) * c * kk;
                for ci in 0..c {
                    for ki in 0..self.k {
                        let Some(y) = (oy * self.stride + ki).checked_sub(self.pad).filter(|&y| y < h) else { continue };
                        for kj in 0..self.k {
                            let Some(x) = (ox * self.stride + kj).checked_sub(self.pad).filter(|&x| x < w) else { continue };
                            f(row + ci * kk + ki * self.k + kj, (ci * h + y) * w + x);
                        }
                    }
                }
            }
        }
    }
}

fn f32_data<'a>(s: &'a candle_core::CpuStorage, l: &candle_core::Layout) -> Result<&'a [f32]> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&s.as_slice::<f32>()?[a..b]),
        None => candle_core::bail!("im2col: input must be contiguous"),
    }
}

impl candle_core::CustomOp1 for Im2Col {
    fn name(&self) -> &'static str {
        "im2col"
    }
    fn cpu_fwd(&self, s: &candle_core::CpuStorage, l: &candle_core::Layout) -> Result<(candle_core::CpuStorage, candle_core::Shape)> {
        use rayon::prelude::*;
        let x = f32_data(s, l)?;
        let (b, c, h, w) = l.shape().dims4()?;
        let (ho, wo) = self.out_size(h, w);
        let per = ho * wo * c * self.k * self.k;
        let mut out = vec![0f32; b * per];
        out.par_chunks_mut(per).enumerate().for_each(|(bi, o)| {
            let img = &x[bi * c * h * w..][..c * h * w];
            self.for_each(c, h, w, |ci, ii| o[ci] = img[ii]);
        });
        Ok((candle_core::CpuStorage::F32(out), (b * ho * wo, c * self.k * self.k).into()))
    }
    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let (_, c, h, w) = arg.dims4()?;
        Ok(Some(grad.contiguous()?.apply_op1_no_bwd(&Col2Im { op: *self, b: arg.dim(0)?, c, h, w })?))
    }
}

/// The adjoint of [`Im2Col`]: patch gradients summed back onto the image.
struct Col2Im {
    op: Im2Col,
    b: usize,
    c: usize,
    h: usize,
    w: usize,
}

impl candle_core::CustomOp1 for Col2Im {
    fn name(&self) -> &'static str {
        "col2im"
    }
    fn cpu_fwd(&self, s: &candle_core::CpuStorage, l: &candle_core::Layout) -> Result<(candle_core::CpuStorage, candle_core::Shape)> {
        use rayon::prelude::*;
        let g = f32_data(s, l)?;
        let (c, h, w) = (self.c, self.h, self.w);
        let (ho, wo) = self.op.out_size(h, w);
        let per = ho * wo * c * self.op.k * self.op.k;
        let mut dx = vec![0f32; self.b * c * h * w];
        dx.par_chunks_mut(c * h * w).enumerate().for_each(|(bi, d)| {
            let gi = &g[bi * per..][..per];
            self.op.for_each(c, h, w, |ci, ii| d[ii] += gi[ci]);
        });
        Ok((candle_core::CpuStorage::F32(dx), (self.b, c, h, w).into()))
    }
}

/// The same im2col from tensor ops (other devices; the CPU op's reference in tests).
pub fn im2col_reference(x: &Tensor, k: usize, stride: usize, pad: usize) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    let x = x.pad_with_zeros(2, pad, pad)?.pad_with_zeros(3, pad, pad)?;
    let (ho, wo) = Im2Col { k, stride, pad }.out_size(h, w);
    let mut cols = Vec::with_capacity(k * k);
    for ki in 0..k {
        for kj in 0..k {
            let mut taps = Vec::with_capacity(ho * wo);
            for oy in 0..ho {
                for ox in 0..wo {
                    taps.push(x.narrow(2, oy * stride + ki, 1)?.narrow(3, ox * stride + kj, 1)?);
                }
            }
            cols.push(Tensor::cat(&taps, 3)?.reshape((b, c, ho, wo))?);
        }
    }
    Tensor::stack(&cols, 2)?.permute((0, 3, 4, 1, 2))?.reshape((b * ho * wo, c * k * k))
}

/// im2col on any device: the fused op on CPU f32, tensor ops elsewhere.
pub fn im2col(x: &Tensor, k: usize, stride: usize, pad: usize) -> Result<Tensor> {
    if x.device().is_cpu() && x.dtype() == DType::F32 {
        x.contiguous()?.apply_op1(Im2Col { k, stride, pad })
    } else {
        im2col_reference(x, k, stride, pad)
    }
}

impl Conv {
    fn new(store_vb: &candle_nn::VarBuilder, name: &str, cin: usize, cout: usize, k: usize, stride: usize, pad: usize) -> Result<Self> {
        let std = (2.0 / (cin * k * k) as f64).sqrt() * 0.5;
        Ok(Conv { lin: Linear::with_std(store_vb, name, cin * k * k, cout, true, std)?, k, stride, pad })
    }

    /// [B, C, H, W] -> [B, out, Ho, Wo]
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, _, h, w) = x.dims4()?;
        let (ho, wo) = Im2Col { k: self.k, stride: self.stride, pad: self.pad }.out_size(h, w);
        let y = self.lin.forward(&im2col(x, self.k, self.stride, self.pad)?)?;
        y.reshape((b, ho, wo, ()))?.permute((0, 3, 1, 2))?.contiguous()
    }
}

/// GroupNorm over [B, C, H, W] with per-channel affine, from primitives.
struct GroupNorm {
    weight: Tensor,
    bias: Tensor,
    groups: usize,
}

impl GroupNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let g = x.reshape((b, self.groups, c / self.groups * h * w))?;
        let mean = g.mean_keepdim(D::Minus1)?;
        let gc = g.broadcast_sub(&mean)?;
        let var = gc.sqr()?.mean_keepdim(D::Minus1)?;
        let n = gc.broadcast_div(&(var + 1e-5)?.sqrt()?)?.reshape((b, c, h, w))?;
        n.broadcast_mul(&self.weight.reshape((1, c, 1, 1))?)?.broadcast_add(&self.bias.reshape((1, c, 1, 1))?)
    }
}

fn leaky_relu(x: &Tensor) -> Result<Tensor> {
    // max(x, 0.2x)
    x.maximum(&(x * 0.2)?)
}

/// PatchGAN: conv k4 s2 (no norm) → [conv k4 s2 → GroupNorm → LeakyReLU] × (n−1) → conv k3
/// s1 to one logit per patch. n = 2 below 64 px, 3 above.
pub struct PatchGan {
    store: ParamStore,
    convs: Vec<Conv>,
    norms: Vec<GroupNorm>,
    head: Conv,
    opt: Adam,
    /// LeCam EMAs of the mean real and fake logits.
    pub ema_real: f64,
    pub ema_fake: f64,
    pub cfg: DiscConfig,
}

/// The discriminator's scalar terms of one step.
pub struct DiscStep {
    pub hinge: f64,
    pub lecam: f64,
    pub real_logit: f64,
    pub fake_logit: f64,
}

impl PatchGan {
    pub fn new(cfg: &DiscConfig, channels: usize, image_size: usize, seed: u64, dev: &Device) -> Result<Self> {
        let store = ParamStore::random(seed ^ 0xD15C);
        let vb = store.var_builder(DType::F32, dev);
        let layers = if image_size <= 64 { 2 } else { 3 };
        let (mut convs, mut norms) = (Vec::new(), Vec::new());
        let mut cin = channels;
        for i in 0..layers {
            let cout = cfg.channels << i;
            convs.push(Conv::new(&vb, &format!("disc.conv.{i}"), cin, cout, 4, 2, 1)?);
            if i > 0 {
                let weight = vb.get_with_hints(cout, &format!("disc.norm.{i}.weight"), candle_nn::Init::Const(1.0))?;
                let bias = vb.get_with_hints(cout, &format!("disc.norm.{i}.bias"), candle_nn::Init::Const(0.0))?;
                norms.push(GroupNorm { weight, bias, groups: 8.min(cout) });
            }
            cin = cout;
        }
        let head = Conv::new(&vb, "disc.head", cin, 1, 3, 1, 1)?;
        let vars: Vec<_> = store.vars().into_iter().collect();
        let opt = Adam::new(vec![Group { name: "disc".into(), cfg: GroupConfig { beta1: 0.5, beta2: 0.9, eps: 1e-8, weight_decay: 0.0 }, vars }])?;
        Ok(PatchGan { store, convs, norms, head, opt, ema_real: 0.0, ema_fake: 0.0, cfg: cfg.clone() })
    }

    /// Patch logits [B, 1, h, w] of images in [-1, 1].
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = leaky_relu(&self.convs[0].forward(x)?)?;
        for (conv, norm) in self.convs[1..].iter().zip(&self.norms) {
            h = leaky_relu(&norm.forward(&conv.forward(&h)?)?)?;
        }
        self.head.forward(&h)
    }

    /// The generator's hinge term: −mean D(fake).
    pub fn generator_loss(&self, fake: &Tensor) -> Result<Tensor> {
        self.forward(fake)?.mean_all()?.neg()
    }

    /// One discriminator update: hinge on real vs (detached) fake + LeCam.
    pub fn step(&mut self, real: &Tensor, fake: &Tensor) -> Result<DiscStep> {
        let (dr, df) = (self.forward(&real.detach())?, self.forward(&fake.detach())?);
        let hinge = ((1.0 - &dr)?.relu()?.mean_all()? + (1.0 + &df)?.relu()?.mean_all()?)?;
        let lecam = ((&dr - self.ema_fake)?.relu()?.sqr()?.mean_all()? + (self.ema_real - &df)?.relu()?.sqr()?.mean_all()?)?;
        let loss = (&hinge + (&lecam * self.cfg.lecam)?)?;
        let grads = loss.backward()?;
        self.opt.update(&grads, self.cfg.lr, 1.0)?;
        let (real_logit, fake_logit) = (dr.mean_all()?.to_scalar::<f32>()? as f64, df.mean_all()?.to_scalar::<f32>()? as f64);
        self.ema_real = 0.99 * self.ema_real + 0.01 * real_logit;
        self.ema_fake = 0.99 * self.ema_fake + 0.01 * fake_logit;
        Ok(DiscStep { hinge: hinge.to_scalar::<f32>()? as f64, lecam: lecam.to_scalar::<f32>()? as f64, real_logit, fake_logit })
    }

    /// Weights (`w.NAME`), Adam moments (`m.`/`v.`), the update count and LeCam EMAs.
    pub fn state(&self) -> Result<HashMap<String, Tensor>> {
        let dev = Device::Cpu;
        let mut out: HashMap<String, Tensor> = self.store.vars().into_iter().map(|(k, v)| (format!("w.{k}"), v.as_tensor().detach())).collect();
        out.extend(self.opt.state());
        out.insert("lecam".into(), Tensor::new(&[self.ema_real, self.ema_fake, self.opt.step as f64], &dev)?);
        Ok(out)
    }

    /// Restores `state`; every weight and moment must be present with its shape.
    pub fn load_state(&mut self, saved: &HashMap<String, Tensor>) -> anyhow::Result<()> {
        for (k, var) in self.store.vars() {
            let t = saved.get(&format!("w.{k}")).ok_or_else(|| anyhow::anyhow!("lacks w.{k}"))?;
            anyhow::ensure!(t.dims() == var.dims(), "w.{k} has shape {:?}, expected {:?}", t.dims(), var.dims());
            var.set(&t.to_device(var.device())?)?;
        }
        let extra: Vec<f64> = saved.get("lecam").ok_or_else(|| anyhow::anyhow!("lacks lecam"))?.to_dtype(DType::F64)?.to_vec1()?;
        anyhow::ensure!(extra.len() == 3 && extra.iter().all(|v| v.is_finite()) && extra[2] >= 0.0, "lecam must hold 3 finite values");
        self.opt.load_state(saved, extra[2] as u64)?;
        (self.ema_real, self.ema_fake) = (extra[0], extra[1]);
        Ok(())
    }
}

//! EfficientNet-Lite0 (ImageNet-1k classifier): 1280-d pooled features for
//! Fréchet distances and 1000 logits for an IS-like score. Not Inception:
//! a "FID" computed with it is FD-EffNetLite0, not pytorch-fid's FID.
//!
//! Architecture as `efficientnet-lite0.json`: ReLU6, no squeeze-excite,
//! no conv biases, TF "SAME" padding (extra pixel bottom/right, done with
//! `pad_with_zeros` before an unpadded conv), residual when stride 1 and
//! cin == cout. Batch norm (eps 1e-3, inference statistics) is folded into
//! the preceding conv at load time. Input `(u8 - 127) / 128` at 224x224.

use super::assets::{asset_dir, build_from_file};
use super::conv::{conv_bn_folded, depthwise_conv2d, pad_same, same_pad};
use super::ops::{resize_bicubic, spatial_mean};
use crate::nn::layers::Linear;
use candle_core::{Device, Module, Result, Tensor};
use candle_nn::VarBuilder;
use std::path::Path;

pub const EFFNET_FILE: &str = "efficientnet-lite0.safetensors";
pub const BN_EPS: f64 = 1e-3;
pub const FEATURES: usize = 1280;
pub const CLASSES: usize = 1000;
/// The input side the classifier was trained at.
pub const INPUT_SIZE: usize = 224;

/// (repeats, kernel, stride, expand, cin, cout) per stage.
const STAGES: [(usize, usize, usize, usize, usize, usize); 7] = [
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
];

/// Conv (+ folded BN): weight `[O, I/groups, k, k]` and bias `[1, O, 1, 1]`.
#[derive(Debug, Clone)]
struct ConvBn {
    w: Tensor,
    b: Tensor,
    k: usize,
    stride: usize,
    depthwise: bool,
}

impl ConvBn {
    /// `dims` = (cin, cout, kernel, stride).
    fn new(vb: &VarBuilder, conv: &str, bn: &str, dims: (usize, usize, usize, usize), depthwise: bool) -> Result<Self> {
        let (cin, cout, k, stride) = dims;
        let per_group = if depthwise { 1 } else { cin };
        let (w, b) = conv_bn_folded(vb, &format!("{conv}.weight"), bn, (cout, per_group, k, k), BN_EPS)?;
        Ok(ConvBn { w, b, k, stride, depthwise })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = if self.depthwise {
            let (_, _, h, w) = x.dims4()?;
            let ((t, b), (l, r)) = (same_pad(h, self.k, self.stride), same_pad(w, self.k, self.stride));
            depthwise_conv2d(x, &self.w, self.stride, (t, b, l, r))?
        } else {
            pad_same(x, self.k, self.stride)?.conv2d(&self.w, 0, self.stride, 1, 1)?
        };
        y.broadcast_add(&self.b)
    }
}

fn relu6(x: &Tensor) -> Result<Tensor> {
    x.clamp(0f32, 6f32)
}

#[derive(Debug, Clone)]
struct MbConv {
    expand: Option<ConvBn>,
    dw: ConvBn,
    project: ConvBn,
    residual: bool,
}

impl MbConv {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = x.clone();
        if let Some(e) = &self.expand {
            h = relu6(&e.forward(&h)?)?;
        }
        h = relu6(&self.dw.forward(&h)?)?;
        h = self.project.forward(&h)?;
        if self.residual {
            h = (h + x)?;
        }
        Ok(h)
    }
}

#[derive(Debug, Clone)]
pub struct EfficientNetLite0 {
    stem: ConvBn,
    blocks: Vec<MbConv>,
    head: ConvBn,
    fc: Linear,
}

impl EfficientNetLite0 {
    pub fn new(vb: &VarBuilder) -> Result<Self> {
        let stem = ConvBn::new(vb, "_conv_stem", "_bn0", (3, 32, 3, 2), false)?;
        let mut blocks = Vec::new();
        for &(repeats, k, stride, expand, cin, cout) in &STAGES {
            for r in 0..repeats {
                let (cin, stride) = if r == 0 { (cin, stride) } else { (cout, 1) };
                let p = format!("_blocks.{}", blocks.len());
                let mid = cin * expand;
                let expand_conv = if expand != 1 {
                    Some(ConvBn::new(vb, &format!("{p}._expand_conv"), &format!("{p}._bn0"), (cin, mid, 1, 1), false)?)
                } else {
                    None
                };
                blocks.push(MbConv {
                    expand: expand_conv,
                    dw: ConvBn::new(vb, &format!("{p}._depthwise_conv"), &format!("{p}._bn1"), (mid, mid, k, stride), true)?,
                    project: ConvBn::new(vb, &format!("{p}._project_conv"), &format!("{p}._bn2"), (mid, cout, 1, 1), false)?,
                    residual: stride == 1 && cin == cout,
                });
            }
        }
        let head = ConvBn::new(vb, "_conv_head", "_bn1", (320, FEATURES, 1, 1), false)?;
        let fc = Linear::new(vb, "_fc", FEATURES, CLASSES, true)?;
        Ok(EfficientNetLite0 { stem, blocks, head, fc })
    }

    pub fn load(path: &Path, device: &Device) -> anyhow::Result<Self> {
        build_from_file(path, device, EfficientNetLite0::new)
    }

    /// [`EfficientNetLite0::load`] from the asset cache.
    pub fn load_default(device: &Device) -> anyhow::Result<Self> {
        Self::load(&asset_dir().join(EFFNET_FILE), device)
    }

    /// `x` `[B,3,H,W]` normalised as `(u8 - 127) / 128` -> (pooled features
    /// `[B, 1280]`, logits `[B, 1000]`).
    pub fn forward(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let mut h = relu6(&self.stem.forward(x)?)?;
        for b in &self.blocks {
            h = b.forward(&h)?;
        }
        let h = relu6(&self.head.forward(&h)?)?;
        let feat = spatial_mean(&h)?;
        let logits = self.fc.forward(&feat)?;
        Ok((feat, logits))
    }

    /// Images in [-1, 1] of any size -> features and logits at 224x224
    /// (see [`preprocess`]).
    pub fn forward_pm1(&self, images: &Tensor) -> Result<(Tensor, Tensor)> {
        self.forward(&preprocess(images, INPUT_SIZE)?)
    }
}

/// [-1, 1] images -> the classifier's input at `size`²: torch-style bicubic
/// resize ([`resize_bicubic`], no antialias; the reference used PIL's
/// antialiased bicubic on the u8 photo) and `(u8 - 127) / 128` with
/// `u8 = (x + 1) * 127.5`.
pub fn preprocess(images: &Tensor, size: usize) -> Result<Tensor> {
    let x = resize_bicubic(images, size, size)?;
    (x * (127.5 / 128.0))? + (0.5 / 128.0)
}

//! LPIPS v0.1 (VGG16 or AlexNet trunk + linear heads), differentiable with
//! respect to the input images: the reconstruction loss of the tokenizer.
//!
//! As richzhang/PerceptualSimilarity with `lpips=True` (`lpips.json`):
//! scaling layer `(x - shift) / scale` on [-1, 1] input; the trunk's five
//! ReLU taps; per tap a unit norm over channels `f / (sqrt(sum_c f²) + 1e-10)`
//! for both images, `(n0 - n1)²`, the 1x1 linear head (no bias), the
//! spatial mean; LPIPS = sum over the taps.
//!
//! Built from convolutions with a backward pass ([`frozen_conv2d`] for the
//! stride-1 convs: on the CPU its input gradient is a forward conv, much
//! faster than candle's; AlexNet's stride-4 first conv uses candle's
//! conv2d), our own max pooling ([`super::ops::max_pool2d`]; candle's has
//! no backward for AlexNet's 3x3/2 windows) and primitives for the channel
//! norm. The weights are constants: no gradient reaches them. Both images
//! go through the trunk as one batch.
//!
//! Smallest inputs: 16x16 for VGG (four 2x2 pools), 31x31 for AlexNet
//! (stride-4 conv and two 3x3/2 pools); smaller ones are an error.

use super::assets::{asset_dir, build_from_file};
use super::conv::{flip_kernel, frozen_conv2d};
use super::ops::{max_pool2d, spatial_mean};
use candle_core::{Device, Result, Tensor, D};
use candle_nn::{Init, VarBuilder};
use std::path::Path;

pub const LPIPS_SHIFT: [f32; 3] = [-0.030, -0.088, -0.188];
pub const LPIPS_SCALE: [f32; 3] = [0.458, 0.448, 0.450];
/// Added to the channel norm, as LPIPS.
pub const NORM_EPS: f64 = 1e-10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LpipsNet {
    Vgg,
    Alex,
}

/// One conv: (cin, cout, kernel, stride, padding, max pool (k, s) after the ReLU).
type ConvSpec = (usize, usize, usize, usize, usize, Option<(usize, usize)>);

const VGG: [ConvSpec; 13] = [
    (3, 64, 3, 1, 1, None),
    (64, 64, 3, 1, 1, Some((2, 2))),
    (64, 128, 3, 1, 1, None),
    (128, 128, 3, 1, 1, Some((2, 2))),
    (128, 256, 3, 1, 1, None),
    (256, 256, 3, 1, 1, None),
    (256, 256, 3, 1, 1, Some((2, 2))),
    (256, 512, 3, 1, 1, None),
    (512, 512, 3, 1, 1, None),
    (512, 512, 3, 1, 1, Some((2, 2))),
    (512, 512, 3, 1, 1, None),
    (512, 512, 3, 1, 1, None),
    (512, 512, 3, 1, 1, None),
];
/// Conv indices whose ReLU output is a tap (relu1_2 .. relu5_3).
const VGG_TAPS: [usize; 5] = [1, 3, 6, 9, 12];

const ALEX: [ConvSpec; 5] = [
    (3, 64, 11, 4, 2, Some((3, 2))),
    (64, 192, 5, 1, 2, Some((3, 2))),
    (192, 384, 3, 1, 1, None),
    (384, 256, 3, 1, 1, None),
    (256, 256, 3, 1, 1, None),
];
const ALEX_TAPS: [usize; 5] = [0, 1, 2, 3, 4];

impl LpipsNet {
    /// File name in the asset cache.
    pub fn file(self) -> &'static str {
        match self {
            LpipsNet::Vgg => "lpips-vgg.safetensors",
            LpipsNet::Alex => "lpips-alex.safetensors",
        }
    }
    fn convs(self) -> &'static [ConvSpec] {
        match self {
            LpipsNet::Vgg => &VGG,
            LpipsNet::Alex => &ALEX,
        }
    }
    fn taps(self) -> [usize; 5] {
        match self {
            LpipsNet::Vgg => VGG_TAPS,
            LpipsNet::Alex => ALEX_TAPS,
        }
    }
    /// Channels of the five taps.
    pub fn tap_channels(self) -> [usize; 5] {
        let t = self.taps();
        let c = self.convs();
        [c[t[0]].1, c[t[1]].1, c[t[2]].1, c[t[3]].1, c[t[4]].1]
    }
}

#[derive(Debug, Clone)]
struct Conv {
    w: Tensor,
    /// [`flip_kernel`] of `w`, for the fast input gradient of stride-1 convs.
    w_back: Tensor,
    b: Tensor,
    stride: usize,
    pad: usize,
    pool: Option<(usize, usize)>,
}

#[derive(Debug, Clone)]
pub struct Lpips {
    pub net: LpipsNet,
    convs: Vec<Conv>,
    /// Head weights as `[1, C, 1, 1]`.
    lins: Vec<Tensor>,
    shift: Tensor,
    inv_scale: Tensor,
}

impl Lpips {
    pub fn new(vb: &VarBuilder, net: LpipsNet) -> Result<Self> {
        let mut convs = Vec::new();
        for (k, &(cin, cout, ks, stride, pad, pool)) in net.convs().iter().enumerate() {
            let std = (2.0 / (cin * ks * ks) as f64).sqrt();
            let w = vb.get_with_hints((cout, cin, ks, ks), &format!("features.{k}.weight"), Init::Randn { mean: 0.0, stdev: std })?;
            let b = vb.get_with_hints(cout, &format!("features.{k}.bias"), Init::Const(0.0))?;
            convs.push(Conv { w_back: flip_kernel(&w)?, w, b: b.reshape((1, cout, 1, 1))?, stride, pad, pool });
        }
        let mut lins = Vec::new();
        for (t, c) in net.tap_channels().into_iter().enumerate() {
            lins.push(vb.get_with_hints((1, c, 1, 1), &format!("lin.{t}.weight"), Init::Uniform { lo: 0.0, up: 0.1 })?);
        }
        let dev = vb.device();
        let shift = Tensor::from_slice(&LPIPS_SHIFT, (1, 3, 1, 1), dev)?;
        let inv_scale = Tensor::from_vec(LPIPS_SCALE.iter().map(|s| 1.0 / s).collect::<Vec<f32>>(), (1, 3, 1, 1), dev)?;
        Ok(Lpips { net, convs, lins, shift, inv_scale })
    }

    pub fn load(path: &Path, net: LpipsNet, device: &Device) -> anyhow::Result<Self> {
        build_from_file(path, device, |vb| Lpips::new(vb, net))
    }

    /// [`Lpips::load`] from the asset cache.
    pub fn load_default(net: LpipsNet, device: &Device) -> anyhow::Result<Self> {
        Self::load(&asset_dir().join(net.file()), net, device)
    }

    /// The five tapped feature maps of images in [-1, 1] (after the scaling layer).
    pub fn features(&self, x: &Tensor) -> Result<Vec<Tensor>> {
        let mut h = x.broadcast_sub(&self.shift.to_dtype(x.dtype())?)?.broadcast_mul(&self.inv_scale.to_dtype(x.dtype())?)?;
        let taps = self.net.taps();
        let mut out = Vec::with_capacity(5);
        for (k, c) in self.convs.iter().enumerate() {
            h = if c.stride == 1 { frozen_conv2d(&h, &c.w, &c.w_back, c.pad)? } else { h.conv2d(&c.w.detach(), c.pad, c.stride, 1, 1)? };
            h = h.broadcast_add(&c.b)?.relu()?;
            if taps.contains(&k) {
                out.push(h.clone());
            }
            if out.len() == taps.len() {
                break;
            }
            if let Some((pk, ps)) = c.pool {
                h = max_pool2d(&h, pk, ps)?;
            }
        }
        Ok(out)
    }

    /// Per-tap distances `[B, 5]` between `x` and `y` `[B,3,H,W]` in [-1, 1].
    pub fn forward_layers(&self, x: &Tensor, y: &Tensor) -> Result<Tensor> {
        let b = x.dim(0)?;
        let feats = self.features(&Tensor::cat(&[x, y], 0)?)?;
        let mut per = Vec::with_capacity(feats.len());
        for (f, lin) in feats.iter().zip(&self.lins) {
            let n = unit_normalize_channels(f)?;
            let d = (n.narrow(0, 0, b)? - n.narrow(0, b, b)?)?.sqr()?;
            let weighted = d.broadcast_mul(lin)?.sum_keepdim(1)?; // [B,1,h,w]
            per.push(spatial_mean(&weighted)?); // [B,1]
        }
        Tensor::cat(&per, 1)
    }

    /// LPIPS distance per pair `[B]`.
    pub fn forward(&self, x: &Tensor, y: &Tensor) -> Result<Tensor> {
        self.forward_layers(x, y)?.sum(D::Minus1)
    }
}

/// `f / (sqrt(sum_c f²) + 1e-10)` over dim 1. The sum gets a 1e-20 inside the
/// sqrt: the value is unchanged in f32, but where every channel is 0 (common
/// after a ReLU) the gradient stays 0 instead of 0 * inf = NaN.
pub fn unit_normalize_channels(f: &Tensor) -> Result<Tensor> {
    let norm = ((f.sqr()?.sum_keepdim(1)? + 1e-20)?.sqrt()? + NORM_EPS)?;
    f.broadcast_div(&norm)
}

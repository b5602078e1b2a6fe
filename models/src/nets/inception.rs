//! pytorch-fid's Inception-v3 (the "FID Inception": TensorFlow's 2015-12-05 graph as
//! ported by pytorch-fid), whose 2048-d pool3 features define FID. No package registry
//! carries its weights: the user converts `pt_inception-2015-12-05-6726825d.pth` to
//! safetensors (`trainer/README.md`, "Inception") and passes it with `--inception-weights`.
//!
//! Architecture: torchvision's `Inception3` with pytorch-fid's patches — the A, C and first
//! E blocks average-pool without counting the zero padding (TensorFlow's pooling), the
//! second E block max-pools instead — and the 1008-class `fc` (1000 ImageNet classes plus
//! TensorFlow's unused ones) for the IS-like score. Every conv is `BasicConv2d`: no bias,
//! batch norm (eps 1e-3, folded into the conv at load time), ReLU. Tensor names are the
//! state dict's (`Mixed_5b.branch1x1.conv.weight`, `…bn.running_var`, `fc.weight`).
//!
//! Input: images in [-1, 1] of any size, resized bilinearly (align_corners = false, no
//! antialias) to 299², as pytorch-fid's `resize_input` on (0, 1) images followed by its
//! `2x − 1` (the two commute: bilinear weights sum to 1).

use super::assets::{asset_dir, build_from_file};
use super::conv::conv_bn_folded;
use super::ops::spatial_mean;
use crate::nn::layers::Linear;
use candle_core::{Device, Module, Result, Tensor};
use candle_nn::VarBuilder;
use std::path::Path;

/// The converted weights' file name in the asset cache (optional: nothing fetches it).
pub const INCEPTION_FILE: &str = "pt_inception-2015-12-05.safetensors";
pub const FEATURES: usize = 2048;
pub const CLASSES: usize = 1008;
pub const INPUT_SIZE: usize = 299;
const BN_EPS: f64 = 1e-3;

/// `BasicConv2d` with its batch norm folded in: weight `[O, I, kh, kw]`, bias `[1, O, 1, 1]`.
#[derive(Debug, Clone)]
struct BasicConv {
    w: Tensor,
    b: Tensor,
    stride: usize,
    pad: (usize, usize),
}

impl BasicConv {
    /// `k` = (kh, kw), `pad` = (ph, pw).
    fn new(vb: &VarBuilder, name: &str, cin: usize, cout: usize, k: (usize, usize), stride: usize, pad: (usize, usize)) -> Result<Self> {
        let (w, b) = conv_bn_folded(vb, &format!("{name}.conv.weight"), &format!("{name}.bn"), (cout, cin, k.0, k.1), BN_EPS)?;
        Ok(BasicConv { w, b, stride, pad })
    }

    /// A square kernel size with equal padding.
    fn sq(vb: &VarBuilder, name: &str, cin: usize, cout: usize, k: usize, stride: usize, pad: usize) -> Result<Self> {
        Self::new(vb, name, cin, cout, (k, k), stride, (pad, pad))
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (ph, pw) = self.pad;
        // candle pads both spatial dims alike; the 1×7 / 7×1 convs pad one of them.
        let y = if ph == pw {
            x.conv2d(&self.w, ph, self.stride, 1, 1)?
        } else {
            x.pad_with_zeros(2, ph, ph)?.pad_with_zeros(3, pw, pw)?.conv2d(&self.w, 0, self.stride, 1, 1)?
        };
        y.broadcast_add(&self.b)?.relu()
    }
}

/// 3×3 average pool, stride 1, padding 1, the padding not counted (TensorFlow's, and
/// pytorch-fid's `count_include_pad=False`).
pub fn avg_pool3_same_exclude_pad(x: &Tensor) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    let sum9 = x.pad_with_zeros(2, 1, 1)?.pad_with_zeros(3, 1, 1)?.avg_pool2d_with_stride(3, 1)?;
    // Window sizes: 3 inside, 2 at each edge (1 for a side of length 1).
    let valid = |i: usize, n: usize| (i.min(1) + 1 + usize::from(i + 1 < n)) as f32;
    let scale: Vec<f32> = (0..h).flat_map(|i| (0..w).map(move |j| 9.0 / (valid(i, h) * valid(j, w)))).collect();
    sum9.broadcast_mul(&Tensor::from_vec(scale, (1, 1, h, w), x.device())?)
}

/// 3×3 max pool, stride 1, padding 1, for non-negative inputs (post-ReLU): zero padding
/// then gives torch's `-inf` padding's result.
fn max_pool3_same_nonneg(x: &Tensor) -> Result<Tensor> {
    x.pad_with_zeros(2, 1, 1)?.pad_with_zeros(3, 1, 1)?.max_pool2d_with_stride(3, 1)
}

fn max_pool3_s2(x: &Tensor) -> Result<Tensor> {
    x.max_pool2d_with_stride(3, 2)
}

/// `FIDInceptionA`.
#[derive(Debug, Clone)]
struct BlockA {
    b1: BasicConv,
    b5: [BasicConv; 2],
    b3: [BasicConv; 3],
    pool: BasicConv,
}

impl BlockA {
    fn new(vb: &VarBuilder, p: &str, cin: usize, pool_features: usize) -> Result<Self> {
        Ok(BlockA {
            b1: BasicConv::sq(vb, &format!("{p}.branch1x1"), cin, 64, 1, 1, 0)?,
            b5: [
                BasicConv::sq(vb, &format!("{p}.branch5x5_1"), cin, 48, 1, 1, 0)?,
                BasicConv::sq(vb, &format!("{p}.branch5x5_2"), 48, 64, 5, 1, 2)?,
            ],
            b3: [
                BasicConv::sq(vb, &format!("{p}.branch3x3dbl_1"), cin, 64, 1, 1, 0)?,
                BasicConv::sq(vb, &format!("{p}.branch3x3dbl_2"), 64, 96, 3, 1, 1)?,
                BasicConv::sq(vb, &format!("{p}.branch3x3dbl_3"), 96, 96, 3, 1, 1)?,
            ],
            pool: BasicConv::sq(vb, &format!("{p}.branch_pool"), cin, pool_features, 1, 1, 0)?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let b1 = self.b1.forward(x)?;
        let b5 = chain(&self.b5, x)?;
        let b3 = chain(&self.b3, x)?;
        let bp = self.pool.forward(&avg_pool3_same_exclude_pad(x)?)?;
        Tensor::cat(&[b1, b5, b3, bp], 1)
    }
}

fn chain(convs: &[BasicConv], x: &Tensor) -> Result<Tensor> {
    let mut h = x.clone();
    for c in convs {
        h = c.forward(&h)?;
    }
    Ok(h)
}

/// `InceptionB` (Mixed_6a): grid reduction 35 → 17.
#[derive(Debug, Clone)]
struct BlockB {
    b3: BasicConv,
    b3dbl: [BasicConv; 3],
}

impl BlockB {
    fn new(vb: &VarBuilder, p: &str, cin: usize) -> Result<Self> {
        Ok(BlockB {
            b3: BasicConv::sq(vb, &format!("{p}.branch3x3"), cin, 384, 3, 2, 0)?,
            b3dbl: [
                BasicConv::sq(vb, &format!("{p}.branch3x3dbl_1"), cin, 64, 1, 1, 0)?,
                BasicConv::sq(vb, &format!("{p}.branch3x3dbl_2"), 64, 96, 3, 1, 1)?,
                BasicConv::sq(vb, &format!("{p}.branch3x3dbl_3"), 96, 96, 3, 2, 0)?,
            ],
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Tensor::cat(&[self.b3.forward(x)?, chain(&self.b3dbl, x)?, max_pool3_s2(x)?], 1)
    }
}

/// `FIDInceptionC` (Mixed_6b–e): factorised 7×7 convs.
#[derive(Debug, Clone)]
struct BlockC {
    b1: BasicConv,
    b7: [BasicConv; 3],
    b7dbl: [BasicConv; 5],
    pool: BasicConv,
}

impl BlockC {
    fn new(vb: &VarBuilder, p: &str, cin: usize, c7: usize) -> Result<Self> {
        let n = |s: &str| format!("{p}.{s}");
        let (row, col) = (((1, 7), (0, 3)), ((7, 1), (3, 0)));
        let c = |s: &str, i: usize, o: usize, (k, pad): ((usize, usize), (usize, usize))| BasicConv::new(vb, &n(s), i, o, k, 1, pad);
        Ok(BlockC {
            b1: BasicConv::sq(vb, &n("branch1x1"), cin, 192, 1, 1, 0)?,
            b7: [
                BasicConv::sq(vb, &n("branch7x7_1"), cin, c7, 1, 1, 0)?,
                c("branch7x7_2", c7, c7, row)?,
                c("branch7x7_3", c7, 192, col)?,
            ],
            b7dbl: [
                BasicConv::sq(vb, &n("branch7x7dbl_1"), cin, c7, 1, 1, 0)?,
                c("branch7x7dbl_2", c7, c7, col)?,
                c("branch7x7dbl_3", c7, c7, row)?,
                c("branch7x7dbl_4", c7, c7, col)?,
                c("branch7x7dbl_5", c7, 192, row)?,
            ],
            pool: BasicConv::sq(vb, &n("branch_pool"), cin, 192, 1, 1, 0)?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let bp = self.pool.forward(&avg_pool3_same_exclude_pad(x)?)?;
        Tensor::cat(&[self.b1.forward(x)?, chain(&self.b7, x)?, chain(&self.b7dbl, x)?, bp], 1)
    }
}

/// `InceptionD` (Mixed_7a): grid reduction 17 → 8.
#[derive(Debug, Clone)]
struct BlockD {
    b3: [BasicConv; 2],
    b7x3: [BasicConv; 4],
}

impl BlockD {
    fn new(vb: &VarBuilder, p: &str, cin: usize) -> Result<Self> {
        let n = |s: &str| format!("{p}.{s}");
        Ok(BlockD {
            b3: [
                BasicConv::sq(vb, &n("branch3x3_1"), cin, 192, 1, 1, 0)?,
                BasicConv::sq(vb, &n("branch3x3_2"), 192, 320, 3, 2, 0)?,
            ],
            b7x3: [
                BasicConv::sq(vb, &n("branch7x7x3_1"), cin, 192, 1, 1, 0)?,
                BasicConv::new(vb, &n("branch7x7x3_2"), 192, 192, (1, 7), 1, (0, 3))?,
                BasicConv::new(vb, &n("branch7x7x3_3"), 192, 192, (7, 1), 1, (3, 0))?,
                BasicConv::sq(vb, &n("branch7x7x3_4"), 192, 192, 3, 2, 0)?,
            ],
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Tensor::cat(&[chain(&self.b3, x)?, chain(&self.b7x3, x)?, max_pool3_s2(x)?], 1)
    }
}

/// `FIDInceptionE_1` (Mixed_7b, average pool) and `FIDInceptionE_2` (Mixed_7c, max pool).
#[derive(Debug, Clone)]
struct BlockE {
    b1: BasicConv,
    b3_1: BasicConv,
    b3_2: [BasicConv; 2],
    b3dbl: [BasicConv; 2],
    b3dbl_3: [BasicConv; 2],
    pool: BasicConv,
    max_pool: bool,
}

impl BlockE {
    fn new(vb: &VarBuilder, p: &str, cin: usize, max_pool: bool) -> Result<Self> {
        let n = |s: &str| format!("{p}.{s}");
        let row = |s: &str| BasicConv::new(vb, &n(s), 384, 384, (1, 3), 1, (0, 1));
        let col = |s: &str| BasicConv::new(vb, &n(s), 384, 384, (3, 1), 1, (1, 0));
        Ok(BlockE {
            b1: BasicConv::sq(vb, &n("branch1x1"), cin, 320, 1, 1, 0)?,
            b3_1: BasicConv::sq(vb, &n("branch3x3_1"), cin, 384, 1, 1, 0)?,
            b3_2: [row("branch3x3_2a")?, col("branch3x3_2b")?],
            b3dbl: [
                BasicConv::sq(vb, &n("branch3x3dbl_1"), cin, 448, 1, 1, 0)?,
                BasicConv::sq(vb, &n("branch3x3dbl_2"), 448, 384, 3, 1, 1)?,
            ],
            b3dbl_3: [row("branch3x3dbl_3a")?, col("branch3x3dbl_3b")?],
            pool: BasicConv::sq(vb, &n("branch_pool"), cin, 192, 1, 1, 0)?,
            max_pool,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let b3 = self.b3_1.forward(x)?;
        let b3 = Tensor::cat(&[self.b3_2[0].forward(&b3)?, self.b3_2[1].forward(&b3)?], 1)?;
        let bd = chain(&self.b3dbl, x)?;
        let bd = Tensor::cat(&[self.b3dbl_3[0].forward(&bd)?, self.b3dbl_3[1].forward(&bd)?], 1)?;
        // Mixed_7c's input is Mixed_7b's output: concatenated ReLUs, so non-negative.
        let pooled = if self.max_pool { max_pool3_same_nonneg(x)? } else { avg_pool3_same_exclude_pad(x)? };
        Tensor::cat(&[self.b1.forward(x)?, b3, bd, self.pool.forward(&pooled)?], 1)
    }
}

#[derive(Debug, Clone)]
pub struct InceptionV3 {
    stem: [BasicConv; 5],
    mixed5: [BlockA; 3],
    mixed6a: BlockB,
    mixed6: [BlockC; 4],
    mixed7a: BlockD,
    mixed7: [BlockE; 2],
    /// The 1008-class head, where the file has it.
    fc: Option<Linear>,
}

impl InceptionV3 {
    /// From a weight file's builder: `fc` where the file has it.
    pub fn new(vb: &VarBuilder) -> Result<Self> {
        Self::build(vb, vb.contains_tensor("fc.weight"))
    }

    /// With or without the 1008-class `fc`.
    pub fn build(vb: &VarBuilder, with_fc: bool) -> Result<Self> {
        let fc = if with_fc { Some(Linear::new(vb, "fc", FEATURES, CLASSES, true)?) } else { None };
        Ok(InceptionV3 {
            stem: [
                BasicConv::sq(vb, "Conv2d_1a_3x3", 3, 32, 3, 2, 0)?,
                BasicConv::sq(vb, "Conv2d_2a_3x3", 32, 32, 3, 1, 0)?,
                BasicConv::sq(vb, "Conv2d_2b_3x3", 32, 64, 3, 1, 1)?,
                BasicConv::sq(vb, "Conv2d_3b_1x1", 64, 80, 1, 1, 0)?,
                BasicConv::sq(vb, "Conv2d_4a_3x3", 80, 192, 3, 1, 0)?,
            ],
            mixed5: [BlockA::new(vb, "Mixed_5b", 192, 32)?, BlockA::new(vb, "Mixed_5c", 256, 64)?, BlockA::new(vb, "Mixed_5d", 288, 64)?],
            mixed6a: BlockB::new(vb, "Mixed_6a", 288)?,
            mixed6: [
                BlockC::new(vb, "Mixed_6b", 768, 128)?,
                BlockC::new(vb, "Mixed_6c", 768, 160)?,
                BlockC::new(vb, "Mixed_6d", 768, 160)?,
                BlockC::new(vb, "Mixed_6e", 768, 192)?,
            ],
            mixed7a: BlockD::new(vb, "Mixed_7a", 768)?,
            mixed7: [BlockE::new(vb, "Mixed_7b", 1280, false)?, BlockE::new(vb, "Mixed_7c", 2048, true)?],
            fc,
        })
    }

    pub fn load(path: &Path, device: &Device) -> anyhow::Result<Self> {
        build_from_file(path, device, InceptionV3::new)
    }

    /// [`InceptionV3::load`] from the asset cache's [`INCEPTION_FILE`], which the user puts
    /// there (nothing fetches it).
    pub fn load_default(device: &Device) -> anyhow::Result<Self> {
        let p = asset_dir().join(INCEPTION_FILE);
        if !p.exists() {
            return Err(crate::exit::bad_input(format!(
                "{}: not found; no package registry carries pytorch-fid's FID Inception weights: convert \
                 pt_inception-2015-12-05-6726825d.pth to safetensors (trainer/README.md, \"Inception\") and put it there \
                 or pass --inception-weights FILE",
                p.display()
            )));
        }
        Self::load(&p, device)
    }

    /// `x` `[B, 3, H, W]` already in the net's input range [-1, 1] (299² for FID) →
    /// (pool3 features `[B, 2048]`, logits `[B, 1008]` where the file has `fc`).
    pub fn forward(&self, x: &Tensor) -> Result<(Tensor, Option<Tensor>)> {
        let mut h = x.clone();
        for (i, c) in self.stem.iter().enumerate() {
            h = c.forward(&h)?;
            // maxpool1 after Conv2d_2b, maxpool2 after Conv2d_4a.
            if i == 2 || i == 4 {
                h = max_pool3_s2(&h)?;
            }
        }
        for b in &self.mixed5 {
            h = b.forward(&h)?;
        }
        h = self.mixed6a.forward(&h)?;
        for b in &self.mixed6 {
            h = b.forward(&h)?;
        }
        h = self.mixed7a.forward(&h)?;
        for b in &self.mixed7 {
            h = b.forward(&h)?;
        }
        let feat = spatial_mean(&h)?;
        let logits = self.fc.as_ref().map(|fc| fc.forward(&feat)).transpose()?;
        Ok((feat, logits))
    }

    /// Images in [-1, 1] of any size → pool3 features and logits at 299² (bilinear, as
    /// pytorch-fid resizes).
    pub fn forward_pm1(&self, images: &Tensor) -> Result<(Tensor, Option<Tensor>)> {
        let (_, _, h, w) = images.dims4()?;
        let x = if (h, w) == (INPUT_SIZE, INPUT_SIZE) { images.clone() } else { images.upsample_bilinear2d(INPUT_SIZE, INPUT_SIZE, false)? };
        self.forward(&x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::DType;

    #[test]
    fn average_pool_does_not_count_the_padding() {
        let dev = Device::Cpu;
        let v: Vec<f32> = (0..20).map(|i| i as f32).collect();
        let x = Tensor::from_vec(v.clone(), (1, 1, 4, 5), &dev).unwrap();
        let got: Vec<f32> = avg_pool3_same_exclude_pad(&x).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        for i in 0..4i64 {
            for j in 0..5i64 {
                let (mut s, mut n) = (0.0, 0.0);
                for di in -1..=1 {
                    for dj in -1..=1 {
                        let (a, b) = (i + di, j + dj);
                        if (0..4).contains(&a) && (0..5).contains(&b) {
                            s += v[(a * 5 + b) as usize];
                            n += 1.0;
                        }
                    }
                }
                let g = got[(i * 5 + j) as usize];
                assert!((g - s / n).abs() < 1e-5, "({i},{j}): {g} vs {}", s / n);
            }
        }
    }

    #[test]
    fn asymmetric_padding_matches_a_direct_convolution() {
        let dev = Device::Cpu;
        let vb = VarBuilder::zeros(DType::F32, &dev);
        let mut c = BasicConv::new(&vb, "c", 2, 3, (1, 7), 1, (0, 3)).unwrap();
        let w: Vec<f32> = (0..3 * 2 * 7).map(|i| ((i * 37 % 11) as f32 - 5.0) / 7.0).collect();
        c.w = Tensor::from_vec(w.clone(), (3, 2, 1, 7), &dev).unwrap();
        let x: Vec<f32> = (0..2 * 3 * 6).map(|i| ((i * 13 % 17) as f32 - 8.0) / 5.0).collect();
        let xt = Tensor::from_vec(x.clone(), (1, 2, 3, 6), &dev).unwrap();
        let got: Vec<f32> = c.forward(&xt).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(got.len(), 3 * 3 * 6, "same spatial size");
        for o in 0..3 {
            for i in 0..3 {
                for j in 0..6i64 {
                    let mut s = 0f32;
                    for ci in 0..2 {
                        for k in 0..7i64 {
                            let jj = j + k - 3;
                            if (0..6).contains(&jj) {
                                s += w[(o * 2 + ci) * 7 + k as usize] * x[(ci * 3 + i) * 6 + jj as usize];
                            }
                        }
                    }
                    let g = got[(o * 3 + i) * 6 + j as usize];
                    assert!((g - s.max(0.0)).abs() < 1e-5, "o{o} ({i},{j}): {g} vs relu({s})");
                }
            }
        }
    }

    #[test]
    fn random_net_gives_pool3_and_logits_shapes() {
        let dev = Device::Cpu;
        let varmap = candle_nn::VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
        let net = InceptionV3::build(&vb, true).unwrap();
        // The state dict's tensor count: 94 BasicConv2d × 5 (conv weight, 4 BN) + fc's 2.
        assert_eq!(varmap.all_vars().len(), 94 * 5 + 2);
        let x = Tensor::zeros((1, 3, 40, 40), DType::F32, &dev).unwrap();
        let (f, l) = net.forward_pm1(&x).unwrap();
        assert_eq!(f.dims(), &[1, FEATURES]);
        assert_eq!(l.unwrap().dims(), &[1, CLASSES]);
    }
}

//! DINOv2 ViT-S/14 (the VFM of the alignment losses), our own module.
//!
//! candle-transformers' `dinov2` is not used: it hardcodes LayerNorm eps
//! 1e-5 (this model uses 1e-6) and resizes the position grid with nearest
//! neighbours, while the model needs torch's bicubic (a = -0.75,
//! align_corners=False, no antialias) from 37x37 to (H/14)x(W/14). Tensor
//! names are the converted file's (`dinov2-s.json`), which are also
//! candle-transformers' names. Exact (erf) GELU; no register tokens.

use super::assets::{asset_dir, build_from_file};
use super::ops::{bicubic_matrix_tensor, resize_bicubic};
use crate::nn::layers::{attention, merge_heads, split_heads, LayerNorm, Linear};
use candle_core::{Device, Module, Result, Tensor, D};
use candle_nn::{Init, VarBuilder};
use std::path::Path;

/// File name in the asset cache.
pub const DINOV2_FILE: &str = "dinov2-s.safetensors";
/// ImageNet normalisation the model expects.
pub const IMAGENET_MEAN: [f64; 3] = [0.485, 0.456, 0.406];
pub const IMAGENET_STD: [f64; 3] = [0.229, 0.224, 0.225];

#[derive(Debug, Clone, PartialEq)]
pub struct Dinov2Config {
    pub patch: usize,
    pub dim: usize,
    pub depth: usize,
    pub heads: usize,
    pub mlp_hidden: usize,
    pub eps: f64,
    /// Side of the stored position grid (37 = 518 px / 14).
    pub pos_grid: usize,
}

impl Dinov2Config {
    /// ViT-S/14 as in `dinov2-s.json`.
    pub fn small() -> Self {
        Dinov2Config { patch: 14, dim: 384, depth: 12, heads: 6, mlp_hidden: 1536, eps: 1e-6, pos_grid: 37 }
    }
}

#[derive(Debug, Clone)]
struct Block {
    norm1: LayerNorm,
    qkv: Linear,
    proj: Linear,
    ls1: Tensor,
    norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    ls2: Tensor,
    heads: usize,
}

impl Block {
    fn new(vb: &VarBuilder, i: usize, c: &Dinov2Config) -> Result<Self> {
        let p = |s: &str| format!("blocks.{i}.{s}");
        let d = c.dim;
        Ok(Block {
            norm1: LayerNorm::new(vb, &p("norm1"), d, c.eps)?,
            qkv: Linear::new(vb, &p("attn.qkv"), d, 3 * d, true)?,
            proj: Linear::new(vb, &p("attn.proj"), d, d, true)?,
            ls1: vb.get_with_hints(d, &p("ls1.gamma"), Init::Const(0.1))?,
            norm2: LayerNorm::new(vb, &p("norm2"), d, c.eps)?,
            fc1: Linear::new(vb, &p("mlp.fc1"), d, c.mlp_hidden, true)?,
            fc2: Linear::new(vb, &p("mlp.fc2"), c.mlp_hidden, d, true)?,
            ls2: vb.get_with_hints(d, &p("ls2.gamma"), Init::Const(0.1))?,
            heads: c.heads,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let d = x.dim(D::Minus1)?;
        let qkv = self.qkv.forward(&self.norm1.forward(x)?)?;
        let q = split_heads(&qkv.narrow(D::Minus1, 0, d)?, self.heads)?;
        let k = split_heads(&qkv.narrow(D::Minus1, d, d)?, self.heads)?;
        let v = split_heads(&qkv.narrow(D::Minus1, 2 * d, d)?, self.heads)?;
        let a = self.proj.forward(&merge_heads(&attention(&q, &k, &v, None)?)?)?;
        let x = (x + a.broadcast_mul(&self.ls1)?)?;
        let h = self.fc2.forward(&self.fc1.forward(&self.norm2.forward(&x)?)?.gelu_erf()?)?;
        x + h.broadcast_mul(&self.ls2)?
    }
}

#[derive(Debug, Clone)]
pub struct Dinov2 {
    pub cfg: Dinov2Config,
    /// Patch embedding as a matrix `[dim, 3*p*p]` (conv weight flattened).
    patch_w: Tensor,
    patch_b: Tensor,
    cls: Tensor,
    /// `[1, 1 + g*g, dim]`, g = `cfg.pos_grid`.
    pos: Tensor,
    blocks: Vec<Block>,
    norm: LayerNorm,
}

impl Dinov2 {
    pub fn new(vb: &VarBuilder, cfg: &Dinov2Config) -> Result<Self> {
        let (d, p) = (cfg.dim, cfg.patch);
        let fan_in = 3 * p * p;
        let w = vb.get_with_hints((d, 3, p, p), "patch_embed.proj.weight", Init::Randn { mean: 0.0, stdev: (1.0 / fan_in as f64).sqrt() })?;
        let patch_b = vb.get_with_hints(d, "patch_embed.proj.bias", Init::Const(0.0))?;
        let cls = vb.get_with_hints((1, 1, d), "cls_token", Init::Randn { mean: 0.0, stdev: 0.02 })?;
        let n = cfg.pos_grid * cfg.pos_grid;
        let pos = vb.get_with_hints((1, 1 + n, d), "pos_embed", Init::Randn { mean: 0.0, stdev: 0.02 })?;
        let blocks = (0..cfg.depth).map(|i| Block::new(vb, i, cfg)).collect::<Result<Vec<_>>>()?;
        let norm = LayerNorm::new(vb, "norm", d, cfg.eps)?;
        Ok(Dinov2 { cfg: cfg.clone(), patch_w: w.reshape((d, fan_in))?, patch_b, cls, pos, blocks, norm })
    }

    /// ViT-S/14 from a converted safetensors file (exit-2 errors naming the
    /// file and tensor).
    pub fn load(path: &Path, device: &Device) -> anyhow::Result<Self> {
        build_from_file(path, device, |vb| Dinov2::new(vb, &Dinov2Config::small()))
    }

    /// [`Dinov2::load`] from the asset cache.
    pub fn load_default(device: &Device) -> anyhow::Result<Self> {
        Self::load(&asset_dir().join(DINOV2_FILE), device)
    }

    /// Position embeddings for a `gh` x `gw` patch grid `[1, 1 + gh*gw, dim]`:
    /// the stored grid resized bicubically (CLS position unchanged).
    pub fn pos_embed(&self, gh: usize, gw: usize) -> Result<Tensor> {
        let (g, d) = (self.cfg.pos_grid, self.cfg.dim);
        if (gh, gw) == (g, g) {
            return Ok(self.pos.clone());
        }
        let dev = self.pos.device();
        let grid = self.pos.narrow(1, 1, g * g)?.reshape((g, g * d))?;
        let mh = bicubic_matrix_tensor(g, gh, dev)?;
        let mw = bicubic_matrix_tensor(g, gw, dev)?;
        // Rows: [gh, g] x [g, g*d]; then columns per output row: [gh, gw, g] x [gh, g, d].
        let rows = mh.matmul(&grid)?.reshape((gh, g, d))?;
        let both = mw.unsqueeze(0)?.broadcast_as((gh, gw, g))?.contiguous()?.matmul(&rows)?;
        Tensor::cat(&[self.pos.narrow(1, 0, 1)?, both.reshape((1, gh * gw, d))?], 1)
    }

    /// `x` `[B,3,H,W]`, ImageNet-normalised, H and W multiples of 14 ->
    /// tokens after the final norm `[B, 1 + N, dim]` (token 0 = CLS).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let p = self.cfg.patch;
        if c != 3 || h % p != 0 || w % p != 0 || h == 0 || w == 0 {
            candle_core::bail!("dinov2: input {:?} must be [B,3,H,W] with H, W multiples of {p}", x.dims());
        }
        let (gh, gw) = (h / p, w / p);
        // Patchify in the conv weight's (c, kh, kw) order and embed with one GEMM.
        let patches = x.reshape(vec![b, 3, gh, p, gw, p])?.permute(vec![0, 2, 4, 1, 3, 5])?.reshape((b * gh * gw, 3 * p * p))?;
        let tok = patches.matmul(&self.patch_w.t()?)?.broadcast_add(&self.patch_b)?.reshape((b, gh * gw, self.cfg.dim))?;
        let cls = self.cls.broadcast_as((b, 1, self.cfg.dim))?;
        let mut hs = Tensor::cat(&[&cls, &tok], 1)?.broadcast_add(&self.pos_embed(gh, gw)?)?;
        for blk in &self.blocks {
            hs = blk.forward(&hs)?;
        }
        self.norm.forward(&hs)
    }

    /// Patch tokens only `[B, N, dim]` (raster order).
    pub fn patch_tokens(&self, x: &Tensor) -> Result<Tensor> {
        let t = self.forward(x)?;
        let n = t.dim(1)? - 1;
        t.narrow(1, 1, n)
    }

    /// Images in [-1, 1] `[B,3,H,W]` -> patch features `[B, g*g, dim]` of a
    /// `g` x `g` grid: resized to `(14 g)`² with torch's bicubic
    /// ([`resize_bicubic`]: a = -0.75, no antialias, as REPA-style code
    /// calls `F.interpolate(mode="bicubic")`; differentiable), mapped to
    /// [0, 1] and normalised with the ImageNet mean/std.
    pub fn vfm_features_for_grid(&self, images: &Tensor, g: usize) -> Result<Tensor> {
        let size = g * self.cfg.patch;
        let x = resize_bicubic(images, size, size)?;
        self.patch_tokens(&normalize_imagenet(&x)?)
    }
}

/// [-1, 1] -> `((x + 1) / 2 - mean) / std` per channel.
pub fn normalize_imagenet(x: &Tensor) -> Result<Tensor> {
    let dev = x.device();
    let scale: Vec<f32> = IMAGENET_STD.iter().map(|s| (0.5 / s) as f32).collect();
    let shift: Vec<f32> = IMAGENET_MEAN.iter().zip(IMAGENET_STD).map(|(m, s)| ((0.5 - m) / s) as f32).collect();
    let scale = Tensor::from_vec(scale, (1, 3, 1, 1), dev)?.to_dtype(x.dtype())?;
    let shift = Tensor::from_vec(shift, (1, 3, 1, 1), dev)?.to_dtype(x.dtype())?;
    x.broadcast_mul(&scale)?.broadcast_add(&shift)
}

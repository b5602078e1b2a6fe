//! Differentiable building blocks. candle-nn's fused `layer_norm`, `rms_norm`,
//! `softmax_last_dim` and `sdpa` drop gradients silently (DESIGN.md, Known
//! traps), so every op here has a backward pass: on CPU the norms, softmax,
//! GELU and the SwiGLU product are our fused ops with hand-written backward
//! (`fused.rs`), elsewhere candle primitives; the gradient tests check each
//! one by finite differences.

use super::fused;
use crate::names as n;
use candle_core::{DType, Module, Result, Tensor, D};
use candle_nn::{Init, VarBuilder};

/// Std of the normal init of matrices, embeddings and positions (GPT/ViT).
pub const INIT_STD: f64 = 0.02;

pub fn normal(std: f64) -> Init {
    Init::Randn { mean: 0.0, stdev: std }
}

thread_local! {
    static AUTOCAST_BF16: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Mixed precision (`eostok-train fit --precision bf16`): while a guard is alive, this
/// thread's `Linear` layers and attention products multiply in bf16 and return f32.
/// Weights (the f32 master copy), norms, softmax, losses and the codebook/IBQ products
/// stay f32; gradients reach the f32 weights through the casts. bf16 has f32's exponent
/// range, so no loss scaling is needed. Thread-local, so test threads do not interfere.
pub struct Autocast {
    prev: bool,
}

impl Autocast {
    /// Turn bf16 matmuls on (`on`) or off for this thread until the guard drops.
    pub fn bf16(on: bool) -> Autocast {
        Autocast { prev: AUTOCAST_BF16.with(|c| c.replace(on)) }
    }
    /// Whether this thread's matmuls are in bf16 now.
    pub fn is_bf16() -> bool {
        AUTOCAST_BF16.with(|c| c.get())
    }
}

impl Drop for Autocast {
    fn drop(&mut self) {
        AUTOCAST_BF16.with(|c| c.set(self.prev));
    }
}

/// `a.matmul(b)`, in bf16 under [`Autocast`] (f32 in, f32 out).
pub fn matmul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if a.dtype() == DType::F32 && Autocast::is_bf16() {
        a.to_dtype(DType::BF16)?.matmul(&b.to_dtype(DType::BF16)?)?.to_dtype(DType::F32)
    } else {
        a.matmul(b)
    }
}

/// A `[rows, cols]` table stored as `path.weight`.
pub fn table(vb: &VarBuilder, path: &str, rows: usize, cols: usize, std: f64) -> Result<Tensor> {
    vb.get_with_hints((rows, cols), &n::join(path, n::WEIGHT), normal(std))
}

/// y = x W^T + b, W stored [out, in] as `path.weight`.
#[derive(Clone, Debug)]
pub struct Linear {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
}

impl Linear {
    pub fn new(vb: &VarBuilder, path: &str, inp: usize, out: usize, bias: bool) -> Result<Self> {
        Self::with_std(vb, path, inp, out, bias, INIT_STD)
    }
    pub fn with_std(vb: &VarBuilder, path: &str, inp: usize, out: usize, bias: bool, std: f64) -> Result<Self> {
        let weight = vb.get_with_hints((out, inp), &n::join(path, n::WEIGHT), normal(std))?;
        let bias = if bias { Some(vb.get_with_hints(out, &n::join(path, n::BIAS), Init::Const(0.0))?) } else { None };
        Ok(Linear { weight, bias })
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        // Flatten leading dims: one 2D GEMM instead of a batched broadcast.
        let dims = x.dims().to_vec();
        let inp = *dims.last().expect("linear input has a last dim");
        let rows: usize = dims[..dims.len() - 1].iter().product();
        let y = matmul(&x.reshape((rows, inp))?, &self.weight.t()?)?;
        let y = match &self.bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        };
        let mut out = dims;
        *out.last_mut().expect("non-empty") = self.weight.dim(0)?;
        y.reshape(out)
    }
}

/// LayerNorm over the last dim, from primitives.
#[derive(Clone, Debug)]
pub struct LayerNorm {
    pub weight: Tensor,
    pub bias: Tensor,
    pub eps: f64,
}

impl LayerNorm {
    pub fn new(vb: &VarBuilder, path: &str, d: usize, eps: f64) -> Result<Self> {
        let weight = vb.get_with_hints(d, &n::join(path, n::WEIGHT), Init::Const(1.0))?;
        let bias = vb.get_with_hints(d, &n::join(path, n::BIAS), Init::Const(0.0))?;
        Ok(LayerNorm { weight, bias, eps })
    }
}

impl Module for LayerNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if fused::applies(x) {
            return fused::layer_norm(x, &self.weight, &self.bias, self.eps);
        }
        self.forward_primitive(x)
    }
}

impl LayerNorm {
    /// The same from candle primitives (other devices; the fused op's reference).
    pub fn forward_primitive(&self, x: &Tensor) -> Result<Tensor> {
        let mean = x.mean_keepdim(D::Minus1)?;
        let xc = x.broadcast_sub(&mean)?;
        let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
        let xn = xc.broadcast_div(&(var + self.eps)?.sqrt()?)?;
        xn.broadcast_mul(&self.weight)?.broadcast_add(&self.bias)
    }
}

/// RMSNorm over the last dim (weight only), from primitives.
#[derive(Clone, Debug)]
pub struct RmsNorm {
    pub weight: Tensor,
    pub eps: f64,
}

impl RmsNorm {
    pub fn new(vb: &VarBuilder, path: &str, d: usize, eps: f64) -> Result<Self> {
        let weight = vb.get_with_hints(d, &n::join(path, n::WEIGHT), Init::Const(1.0))?;
        Ok(RmsNorm { weight, eps })
    }
}

impl Module for RmsNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if fused::applies(x) {
            return fused::rms_norm(x, &self.weight, self.eps);
        }
        self.forward_primitive(x)
    }
}

impl RmsNorm {
    /// The same from candle primitives (other devices; the fused op's reference).
    pub fn forward_primitive(&self, x: &Tensor) -> Result<Tensor> {
        let ms = x.sqr()?.mean_keepdim(D::Minus1)?;
        x.broadcast_div(&(ms + self.eps)?.sqrt()?)?.broadcast_mul(&self.weight)
    }
}

/// Differentiable softmax over the last dim (max-subtracted).
pub fn softmax(x: &Tensor) -> Result<Tensor> {
    if fused::applies(x) {
        return fused::softmax(x);
    }
    candle_nn::ops::softmax(x, D::Minus1)
}

/// Additive-mask value: large but finite, so fully masked entries give
/// exp() = 0 exactly without inf - inf in any dtype we train in.
pub const MASKED: f64 = -1e9;

/// Scaled dot-product attention. q: [B,H,Tq,hd], k/v: [B,H,Tk,hd], mask
/// additive and broadcastable to [B,H,Tq,Tk] (0 = visible, MASKED = hidden).
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
    let hd = q.dim(D::Minus1)?;
    // Scale q ([.., T, hd]) rather than the scores ([.., T, T]): fewer values.
    let scores = matmul(&(q * (1.0 / (hd as f64).sqrt()))?, &k.t()?)?;
    let scores = match mask {
        Some(m) => scores.broadcast_add(m)?,
        None => scores,
    };
    matmul(&softmax(&scores)?, v)
}

/// [B,T,H*hd] -> [B,H,T,hd]
pub fn split_heads(x: &Tensor, heads: usize) -> Result<Tensor> {
    let (b, t, d) = x.dims3()?;
    x.reshape((b, t, heads, d / heads))?.transpose(1, 2)?.contiguous()
}

/// [B,H,T,hd] -> [B,T,H*hd]
pub fn merge_heads(x: &Tensor) -> Result<Tensor> {
    let (b, h, t, hd) = x.dims4()?;
    x.transpose(1, 2)?.reshape((b, t, h * hd))
}

/// tanh-approximated GELU (cheaper than erf here and in the runtime).
pub fn gelu(x: &Tensor) -> Result<Tensor> {
    if fused::applies(x) {
        return fused::gelu(x);
    }
    x.gelu()
}

/// Pre-LN ViT block: fused qkv attention + GELU MLP, both with biases.
#[derive(Clone, Debug)]
pub struct VitBlock {
    pub attn_norm: LayerNorm,
    pub qkv: Linear,
    pub attn_out: Linear,
    pub ffn_norm: LayerNorm,
    pub up: Linear,
    pub down: Linear,
    pub heads: usize,
}

impl VitBlock {
    pub fn new(vb: &VarBuilder, path: &str, cfg: &crate::VitConfig, eps: f64) -> Result<Self> {
        let d = cfg.width;
        let p = |leaf| n::join(path, leaf);
        Ok(VitBlock {
            attn_norm: LayerNorm::new(vb, &p(n::VIT_ATTN_NORM), d, eps)?,
            qkv: Linear::new(vb, &p(n::VIT_ATTN_QKV), d, 3 * d, true)?,
            attn_out: Linear::new(vb, &p(n::VIT_ATTN_OUT), d, d, true)?,
            ffn_norm: LayerNorm::new(vb, &p(n::VIT_FFN_NORM), d, eps)?,
            up: Linear::new(vb, &p(n::VIT_FFN_UP), d, cfg.mlp_hidden(), true)?,
            down: Linear::new(vb, &p(n::VIT_FFN_DOWN), cfg.mlp_hidden(), d, true)?,
            heads: cfg.heads,
        })
    }

    /// x: [B,T,D]; mask additive, broadcastable to [B,H,T,T].
    pub fn forward(&self, x: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let d = x.dim(D::Minus1)?;
        let qkv = self.qkv.forward(&self.attn_norm.forward(x)?)?;
        let q = split_heads(&qkv.narrow(D::Minus1, 0, d)?, self.heads)?;
        let k = split_heads(&qkv.narrow(D::Minus1, d, d)?, self.heads)?;
        let v = split_heads(&qkv.narrow(D::Minus1, 2 * d, d)?, self.heads)?;
        let a = merge_heads(&attention(&q, &k, &v, mask)?)?;
        let x = (x + self.attn_out.forward(&a)?)?;
        let h = gelu(&self.up.forward(&self.ffn_norm.forward(&x)?)?)?;
        x + self.down.forward(&h)?
    }
}

/// SwiGLU MLP: down(silu(gate x) * up x), no biases (Llama).
#[derive(Clone, Debug)]
pub struct SwiGlu {
    pub gate: Linear,
    pub up: Linear,
    pub down: Linear,
}

impl SwiGlu {
    pub fn new(vb: &VarBuilder, block: &str, d: usize, hidden: usize) -> Result<Self> {
        Ok(SwiGlu {
            gate: Linear::new(vb, &n::join(block, n::AR_FFN_GATE), d, hidden, false)?,
            up: Linear::new(vb, &n::join(block, n::AR_FFN_UP), d, hidden, false)?,
            down: Linear::new(vb, &n::join(block, n::AR_FFN_DOWN), hidden, d, false)?,
        })
    }
}

impl Module for SwiGlu {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let g = self.gate.forward(x)?;
        let u = self.up.forward(x)?;
        let h = if fused::applies(&g) { fused::silu_mul(&g, &u)? } else { (g.silu()? * u)? };
        self.down.forward(&h)
    }
}

/// REPA-style projector: Linear-SiLU-Linear-SiLU-Linear.
#[derive(Clone, Debug)]
pub struct Projector {
    pub layers: [Linear; 3],
}

impl Projector {
    pub fn new(vb: &VarBuilder, path: &str, inp: usize, hidden: usize, out: usize) -> Result<Self> {
        Ok(Projector {
            layers: [
                Linear::new(vb, &n::join(path, "0"), inp, hidden, true)?,
                Linear::new(vb, &n::join(path, "1"), hidden, hidden, true)?,
                Linear::new(vb, &n::join(path, "2"), hidden, out, true)?,
            ],
        })
    }
}

impl Module for Projector {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.layers[0].forward(x)?.silu()?;
        let h = self.layers[1].forward(&h)?.silu()?;
        self.layers[2].forward(&h)
    }
}

/// Rows of `x` scaled to unit l2 norm (last dim).
pub fn l2_normalize(x: &Tensor) -> Result<Tensor> {
    let norm = (x.sqr()?.sum_keepdim(D::Minus1)? + 1e-12)?.sqrt()?;
    x.broadcast_div(&norm)
}

/// Straight-through one-hot: forward = onehot(argmax p), backward = d p.
/// `probs` [.., K]; returns (ind, argmax ids as u32 [..]).
pub fn straight_through_one_hot(probs: &Tensor) -> Result<(Tensor, Tensor)> {
    let ids = probs.argmax_keepdim(D::Minus1)?;
    let k = probs.dim(D::Minus1)?;
    let iota = Tensor::arange(0u32, k as u32, probs.device())?;
    let hard = ids.broadcast_eq(&iota.reshape(shape_with_last(probs.rank(), k))?)?.to_dtype(probs.dtype())?;
    let ind = (hard + (probs - probs.detach())?)?;
    Ok((ind, ids.squeeze(D::Minus1)?))
}

fn shape_with_last(rank: usize, k: usize) -> Vec<usize> {
    let mut s = vec![1; rank];
    s[rank - 1] = k;
    s
}

/// f32 0/MASKED mask from a visibility predicate, shape [rows, cols].
pub fn mask_from(rows: usize, cols: usize, dtype: DType, dev: &candle_core::Device, visible: impl Fn(usize, usize) -> bool) -> Result<Tensor> {
    let data: Vec<f32> = (0..rows * cols).map(|i| if visible(i / cols, i % cols) { 0.0 } else { MASKED as f32 }).collect();
    Tensor::from_vec(data, (rows, cols), dev)?.to_dtype(dtype)
}

//! The 1D decoder: the first k <= L codes (l2-normalised codebook rows) and
//! N mask tokens through the ViT, mask-token outputs to pixels. Latents are
//! causal and never see mask tokens; mask tokens see everything. All token
//! rows of all images go through each matrix together (compute-bound).

use super::ops::{add, gelu, layer_norm, softmax};
use super::tensors::{Table, Tensors};
use crate::kernels::{matmul, parallel_chunks, Weight};
use crate::quant::GgmlType;
use anyhow::Result;
use eostok_models::names as n;
use eostok_models::Config;
use std::borrow::Cow;

/// Elements per parallel GELU task (~30 µs of tanh).
const GELU_CHUNK: usize = 1 << 13;
/// Attention rows per parallel softmax task.
const SOFTMAX_ROWS: usize = 16;

struct Linear<'a> {
    w: Weight<'a>,
    b: Cow<'a, [f32]>,
}

impl<'a> Linear<'a> {
    fn load(t: &Tensors<'a>, path: &str, inp: usize, out: usize) -> Result<Self> {
        Ok(Linear { w: t.matrix(&n::join(path, n::WEIGHT), out, inp)?, b: t.vector(&n::join(path, n::BIAS), &[out])? })
    }
    /// y [rows, out] = x [rows, in] W^T + b
    fn forward(&self, x: &[f32], rows: usize) -> Vec<f32> {
        let mut y = vec![0f32; rows * self.w.rows];
        matmul(&self.w, x, rows, &mut y);
        for r in y.chunks_exact_mut(self.w.rows) {
            add(r, &self.b);
        }
        y
    }
}

struct Norm<'a> {
    w: Cow<'a, [f32]>,
    b: Cow<'a, [f32]>,
}

impl<'a> Norm<'a> {
    fn load(t: &Tensors<'a>, path: &str, d: usize) -> Result<Self> {
        Ok(Norm { w: t.vector(&n::join(path, n::WEIGHT), &[d])?, b: t.vector(&n::join(path, n::BIAS), &[d])? })
    }
    fn apply(&self, x: &[f32], eps: f32) -> Vec<f32> {
        let mut y = x.to_vec();
        for r in y.chunks_exact_mut(self.w.len()) {
            layer_norm(r, &self.w, &self.b, eps);
        }
        y
    }
}

struct Block<'a> {
    attn_norm: Norm<'a>,
    qkv: Linear<'a>,
    attn_out: Linear<'a>,
    ffn_norm: Norm<'a>,
    up: Linear<'a>,
    down: Linear<'a>,
}

pub struct Decoder<'a> {
    codebook: Table<'a>,
    latent_proj: Linear<'a>,
    latent_pos: Cow<'a, [f32]>,
    mask_token: Cow<'a, [f32]>,
    pos_embd: Cow<'a, [f32]>,
    blocks: Vec<Block<'a>>,
    output_norm: Norm<'a>,
    pixel_out: Linear<'a>,
    width: usize,
    heads: usize,
    pub latent_tokens: usize,
    pub num_patches: usize,
    pub patch_size: usize,
    pub channels: usize,
    pub image_size: usize,
    eps: f32,
}

/// f32 data seen as bytes, for the kernels' F32 weights.
fn as_bytes(x: &[f32]) -> &[u8] {
    // SAFETY: f32 has no padding and every bit pattern is a valid u8 sequence;
    // the length covers exactly the same memory.
    unsafe { std::slice::from_raw_parts(x.as_ptr().cast::<u8>(), std::mem::size_of_val(x)) }
}

impl<'a> Decoder<'a> {
    pub fn load(t: &Tensors<'a>, cfg: &Config) -> Result<Self> {
        let (d, np, pd) = (cfg.decoder.width, cfg.num_patches(), cfg.patch_dim());
        let blocks = (0..cfg.decoder.depth)
            .map(|i| {
                let b = n::block(n::DEC, i);
                let p = |leaf| n::join(&b, leaf);
                Ok(Block {
                    attn_norm: Norm::load(t, &p(n::VIT_ATTN_NORM), d)?,
                    qkv: Linear::load(t, &p(n::VIT_ATTN_QKV), d, 3 * d)?,
                    attn_out: Linear::load(t, &p(n::VIT_ATTN_OUT), d, d)?,
                    ffn_norm: Norm::load(t, &p(n::VIT_FFN_NORM), d)?,
                    up: Linear::load(t, &p(n::VIT_FFN_UP), d, cfg.decoder.mlp_hidden())?,
                    down: Linear::load(t, &p(n::VIT_FFN_DOWN), cfg.decoder.mlp_hidden(), d)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let w = |p: &str| n::join(p, n::WEIGHT);
        Ok(Decoder {
            codebook: t.table(&w(n::QUANT_CODEBOOK), cfg.codebook_size, cfg.codebook_dim)?,
            latent_proj: Linear::load(t, n::DEC_LATENT_PROJ, cfg.codebook_dim, d)?,
            latent_pos: t.vector(&w(n::DEC_LATENT_POS), &[cfg.latent_tokens, d])?,
            mask_token: t.vector(&w(n::DEC_MASK_TOKEN), &[d])?,
            pos_embd: t.vector(&w(n::DEC_POS_EMBD), &[np, d])?,
            blocks,
            output_norm: Norm::load(t, n::DEC_OUTPUT_NORM, d)?,
            pixel_out: Linear::load(t, n::DEC_PIXEL_OUT, d, pd)?,
            width: d,
            heads: cfg.decoder.heads,
            latent_tokens: cfg.latent_tokens,
            num_patches: np,
            patch_size: cfg.patch_size,
            channels: cfg.channels,
            image_size: cfg.image_size,
            eps: cfg.norm_eps as f32,
        })
    }

    /// l2-normalised code vectors of `ids` [images][k], flattened.
    fn codes(&self, ids: &[Vec<u32>]) -> Result<Vec<f32>> {
        let dim = self.codebook.cols;
        let mut out = Vec::with_capacity(ids.iter().map(Vec::len).sum::<usize>() * dim);
        let mut row = vec![0f32; dim];
        // Ids checked by `decode` (check_code_rows).
        for &id in ids.iter().flatten() {
            self.codebook.row(id as usize, &mut row)?;
            let norm = (row.iter().map(|v| v * v).sum::<f32>() + 1e-12).sqrt();
            out.extend(row.iter().map(|v| v / norm));
        }
        Ok(out)
    }

    /// Decode token prefixes (every image the same length k, 1 <= k <= L)
    /// to images [B, C, H, W] in about [-1, 1].
    pub fn decode(&self, ids: &[Vec<u32>]) -> Result<Vec<f32>> {
        let b = ids.len();
        let k = super::check_code_rows(ids, self.latent_tokens, self.codebook.rows)?;
        let (d, np) = (self.width, self.num_patches);
        let s = k + np;
        let z = self.codes(ids)?;
        let lat = self.latent_proj.forward(&z, b * k);
        // h: [B, S, D] = latents (+ positions) ‖ mask tokens (+ positions).
        let mut h = vec![0f32; b * s * d];
        for img in 0..b {
            for t in 0..k {
                let row = &mut h[(img * s + t) * d..][..d];
                row.copy_from_slice(&lat[(img * k + t) * d..][..d]);
                add(row, &self.latent_pos[t * d..][..d]);
            }
            for p in 0..np {
                let row = &mut h[(img * s + k + p) * d..][..d];
                row.copy_from_slice(&self.mask_token);
                add(row, &self.pos_embd[p * d..][..d]);
            }
        }
        for blk in &self.blocks {
            let x = blk.attn_norm.apply(&h, self.eps);
            let qkv = blk.qkv.forward(&x, b * s);
            let att = self.attention(&qkv, b, s, k);
            add(&mut h, &blk.attn_out.forward(&att, b * s));
            let x = blk.ffn_norm.apply(&h, self.eps);
            let mut u = blk.up.forward(&x, b * s);
            parallel_chunks(&mut u, GELU_CHUNK, &|_, c| gelu(c));
            add(&mut h, &blk.down.forward(&u, b * s));
        }
        // Mask-token rows only -> norm -> pixels.
        let mut masks = Vec::with_capacity(b * np * d);
        for img in 0..b {
            masks.extend_from_slice(&h[(img * s + k) * d..(img * s + s) * d]);
        }
        let pixels = self.pixel_out.forward(&self.output_norm.apply(&masks, self.eps), b * np);
        Ok(self.unpatchify(&pixels, b))
    }

    /// Multi-head attention with the decoder mask over qkv [B*S, 3D].
    fn attention(&self, qkv: &[f32], b: usize, s: usize, k: usize) -> Vec<f32> {
        let (d, heads) = (self.width, self.heads);
        let hd = d / heads;
        let scale = 1.0 / (hd as f32).sqrt();
        let mut out = vec![0f32; b * s * d];
        let (mut qh, mut kh, mut vt) = (vec![0f32; s * hd], vec![0f32; s * hd], vec![0f32; hd * s]);
        let mut scores = vec![0f32; s * s];
        let mut oh = vec![0f32; s * hd];
        for img in 0..b {
            for head in 0..heads {
                for t in 0..s {
                    let row = &qkv[(img * s + t) * 3 * d..][..3 * d];
                    qh[t * hd..][..hd].copy_from_slice(&row[head * hd..][..hd]);
                    kh[t * hd..][..hd].copy_from_slice(&row[d + head * hd..][..hd]);
                    for e in 0..hd {
                        vt[e * s + t] = row[2 * d + head * hd + e];
                    }
                }
                // scores[i, j] = q_i . k_j: K as an f32 "weight" [S, hd].
                let kw = Weight::new(GgmlType::F32, s, hd, as_bytes(&kh)).expect("sizes match by construction");
                matmul(&kw, &qh, s, &mut scores);
                // Rows in parallel: s² exponentials per head were the decoder's largest
                // serial part.
                parallel_chunks(&mut scores, SOFTMAX_ROWS * s, &|c, rows| {
                    for (j, row) in rows.chunks_exact_mut(s).enumerate() {
                        let i = c * SOFTMAX_ROWS + j;
                        // Latent i sees latents 0..=i; mask tokens see everything.
                        let visible = if i < k { i + 1 } else { s };
                        row[..visible].iter_mut().for_each(|v| *v *= scale);
                        softmax(&mut row[..visible]);
                        row[visible..].iter_mut().for_each(|v| *v = 0.0);
                    }
                });
                // out[i, e] = sum_j P[i, j] v_j[e]: V^T as a "weight" [hd, S].
                let vw = Weight::new(GgmlType::F32, hd, s, as_bytes(&vt)).expect("sizes match by construction");
                matmul(&vw, &scores, s, &mut oh);
                for t in 0..s {
                    out[(img * s + t) * d + head * hd..][..hd].copy_from_slice(&oh[t * hd..][..hd]);
                }
            }
        }
        out
    }

    /// [B, N, P*P*C] (patch as row, col, channel) -> [B, C, H, W].
    fn unpatchify(&self, x: &[f32], b: usize) -> Vec<f32> {
        let (p, c, size) = (self.patch_size, self.channels, self.image_size);
        let g = size / p;
        let mut img = vec![0f32; b * c * size * size];
        for bi in 0..b {
            for n in 0..g * g {
                let (gy, gx) = (n / g, n % g);
                for py in 0..p {
                    for px in 0..p {
                        for ch in 0..c {
                            let v = x[(bi * g * g + n) * p * p * c + (py * p + px) * c + ch];
                            img[((bi * c + ch) * size + gy * p + py) * size + gx * p + px] = v;
                        }
                    }
                }
            }
        }
        img
    }
}

//! The AR transformer for decoding one token at a time with a KV cache:
//! class token at position 0, AdaLN modulation computed once per image,
//! hard token ids select embedding rows. Rows of a batch (several images,
//! CFG's null-class rows) go through every matrix together, so each weight
//! is read from memory once per step.

use super::ops::{add, add_scaled, modulate, rms_norm, silu};
use super::tensors::{Table, Tensors};
use super::attention::{attend, Cache};
use crate::kernels::{matmul, matmul_many, Weight};
use anyhow::Result;
use eostok_models::exit::bad_input;
use eostok_models::names as n;
use eostok_models::Config;
use std::borrow::Cow;

pub struct ArBlock<'a> {
    attn_norm: Cow<'a, [f32]>,
    q: Weight<'a>,
    k: Weight<'a>,
    v: Weight<'a>,
    o: Weight<'a>,
    ffn_norm: Cow<'a, [f32]>,
    gate: Weight<'a>,
    up: Weight<'a>,
    down: Weight<'a>,
    adaln_bias: Cow<'a, [f32]>,
}

pub struct Ar<'a> {
    token_embd: Table<'a>,
    pos_embd: Cow<'a, [f32]>,
    cls_embd: Cow<'a, [f32]>,
    adaln_w: Weight<'a>,
    adaln_b: Cow<'a, [f32]>,
    blocks: Vec<ArBlock<'a>>,
    output_norm: Cow<'a, [f32]>,
    output: Weight<'a>,
    pub width: usize,
    pub heads: usize,
    pub ffn: usize,
    pub codes: usize,
    pub context: usize,
    pub num_classes: usize,
    eps: f32,
}

/// Per-generation state: each layer's modulation of each row and the KV cache.
pub struct ArState {
    pub rows: usize,
    /// Tokens consumed so far (the next position).
    pub pos: usize,
    /// Per layer: [rows, 6 * width], the shared modulation plus the block's
    /// bias: [shift_a, scale_a, gate_a, shift_m, scale_m, gate_m] per row.
    modulation: Vec<Vec<f32>>,
    /// Per layer: [rows, context, width].
    keys: Vec<Vec<f32>>,
    values: Vec<Vec<f32>>,
}

impl ArState {
    /// Bytes held by the KV cache.
    pub fn kv_bytes(&self) -> usize {
        4 * (self.keys.iter().map(Vec::len).sum::<usize>() + self.values.iter().map(Vec::len).sum::<usize>())
    }
}

fn leaf(block: &str, name: &str, suffix: &str) -> String {
    n::join(&n::join(block, name), suffix)
}

impl<'a> Ar<'a> {
    pub fn load(t: &Tensors<'a>, cfg: &Config) -> Result<Self> {
        let (d, k, l, f) = (cfg.ar.width, cfg.codebook_size, cfg.latent_tokens, cfg.ar.ffn_hidden);
        let w = |name: &str| n::join(name, n::WEIGHT);
        let blocks = (0..cfg.ar.depth)
            .map(|i| {
                let b = n::block("", i);
                Ok(ArBlock {
                    attn_norm: t.vector(&leaf(&b, n::AR_ATTN_NORM, n::WEIGHT), &[d])?,
                    q: t.matrix(&leaf(&b, n::AR_ATTN_Q, n::WEIGHT), d, d)?,
                    k: t.matrix(&leaf(&b, n::AR_ATTN_K, n::WEIGHT), d, d)?,
                    v: t.matrix(&leaf(&b, n::AR_ATTN_V, n::WEIGHT), d, d)?,
                    o: t.matrix(&leaf(&b, n::AR_ATTN_OUT, n::WEIGHT), d, d)?,
                    ffn_norm: t.vector(&leaf(&b, n::AR_FFN_NORM, n::WEIGHT), &[d])?,
                    gate: t.matrix(&leaf(&b, n::AR_FFN_GATE, n::WEIGHT), f, d)?,
                    up: t.matrix(&leaf(&b, n::AR_FFN_UP, n::WEIGHT), f, d)?,
                    down: t.matrix(&leaf(&b, n::AR_FFN_DOWN, n::WEIGHT), d, f)?,
                    adaln_bias: t.vector(&leaf(&b, n::AR_ADALN, n::BIAS), &[6 * d])?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Ar {
            token_embd: t.table(&w(n::AR_TOKEN_EMBD), k, d)?,
            pos_embd: t.vector(&w(n::AR_POS_EMBD), &[l, d])?,
            cls_embd: t.vector(&w(n::AR_CLS_EMBD), &[cfg.num_classes + 1, d])?,
            adaln_w: t.matrix(&w(n::AR_ADALN), 6 * d, d)?,
            adaln_b: t.vector(&n::join(n::AR_ADALN, n::BIAS), &[6 * d])?,
            blocks,
            output_norm: t.vector(&w(n::AR_OUTPUT_NORM), &[d])?,
            output: t.matrix(&w(n::AR_OUTPUT), k, d)?,
            width: d,
            heads: cfg.ar.heads,
            ffn: f,
            codes: k,
            context: l,
            num_classes: cfg.num_classes,
            eps: cfg.rms_eps as f32,
        })
    }

    pub fn null_class(&self) -> u32 {
        self.num_classes as u32
    }

    /// Bytes of weights read per decoding step.
    pub fn weight_bytes_per_step(&self) -> usize {
        let m = |w: &Weight| w.data.len();
        self.blocks.iter().map(|b| m(&b.q) + m(&b.k) + m(&b.v) + m(&b.o) + m(&b.gate) + m(&b.up) + m(&b.down)).sum::<usize>() + m(&self.output)
    }

    fn class_row(&self, c: u32) -> Result<&[f32]> {
        super::check_class(c, self.num_classes)?;
        let c = c as usize;
        Ok(&self.cls_embd[c * self.width..(c + 1) * self.width])
    }

    /// Start generating for `classes` (one row each): the AdaLN modulation
    /// of every row, an empty KV cache. Returns the state and the class
    /// embeddings, the inputs of step 0.
    pub fn start(&self, classes: &[u32]) -> Result<(ArState, Vec<f32>)> {
        let (rows, d) = (classes.len(), self.width);
        let mut cls = Vec::with_capacity(rows * d);
        for &c in classes {
            cls.extend_from_slice(self.class_row(c)?);
        }
        let mut act = cls.clone();
        silu(&mut act);
        let mut shared = vec![0f32; rows * 6 * d];
        matmul(&self.adaln_w, &act, rows, &mut shared);
        for r in shared.chunks_exact_mut(6 * d) {
            add(r, &self.adaln_b);
        }
        // Once per image, not once per token: add each block's bias.
        let modulation = self
            .blocks
            .iter()
            .map(|blk| {
                let mut m = shared.clone();
                for r in m.chunks_exact_mut(6 * d) {
                    add(r, &blk.adaln_bias);
                }
                m
            })
            .collect();
        let cache = || (0..self.blocks.len()).map(|_| vec![0f32; rows * self.context * d]).collect();
        Ok((ArState { rows, pos: 0, modulation, keys: cache(), values: cache() }, cls))
    }

    /// Embedding rows of hard token ids, the inputs of the next step.
    pub fn embed_tokens(&self, ids: &[u32]) -> Result<Vec<f32>> {
        let d = self.width;
        let mut out = vec![0f32; ids.len() * d];
        for (i, &id) in ids.iter().enumerate() {
            self.token_embd.row(id as usize, &mut out[i * d..(i + 1) * d])?;
        }
        Ok(out)
    }

    /// One step: inputs [rows, width] at position `state.pos` -> logits [rows, codes].
    pub fn step(&self, st: &mut ArState, inputs: &[f32]) -> Result<Vec<f32>> {
        let (rows, d, pos) = (st.rows, self.width, st.pos);
        if pos >= self.context {
            return Err(bad_input(format!("position {pos} is past the context of {}", self.context)));
        }
        let mut x = inputs.to_vec();
        for r in 0..rows {
            add(&mut x[r * d..(r + 1) * d], &self.pos_embd[pos * d..(pos + 1) * d]);
        }
        let (mut h, mut q, mut k, mut v, mut a, mut o) =
            (vec![0f32; rows * d], vec![0f32; rows * d], vec![0f32; rows * d], vec![0f32; rows * d], vec![0f32; rows * d], vec![0f32; rows * d]);
        let (mut g, mut u) = (vec![0f32; rows * self.ffn], vec![0f32; rows * self.ffn]);
        for (li, blk) in self.blocks.iter().enumerate() {
            let m = &st.modulation[li];
            // Part j of row r's modulation: 0..6 = shift_a, scale_a, gate_a, shift_m, scale_m, gate_m.
            let part = |r: usize, j: usize| &m[r * 6 * d + j * d..][..d];
            h.copy_from_slice(&x);
            for r in 0..rows {
                let hr = &mut h[r * d..(r + 1) * d];
                rms_norm(hr, &blk.attn_norm, self.eps);
                modulate(hr, part(r, 0), part(r, 1));
            }
            matmul_many(&[&blk.q, &blk.k, &blk.v], &h, rows, &mut [&mut q, &mut k, &mut v]);
            let (kc, vc) = (&mut st.keys[li], &mut st.values[li]);
            for r in 0..rows {
                let at = (r * self.context + pos) * d;
                kc[at..at + d].copy_from_slice(&k[r * d..(r + 1) * d]);
                vc[at..at + d].copy_from_slice(&v[r * d..(r + 1) * d]);
            }
            for r in 0..rows {
                let cache = Cache {
                    keys: &kc[r * self.context * d..],
                    values: &vc[r * self.context * d..],
                    stride: d,
                    len: pos + 1,
                    kv_heads: self.heads,
                };
                attend(&q[r * d..(r + 1) * d], self.heads, &cache, &mut a[r * d..(r + 1) * d]);
            }
            matmul(&blk.o, &a, rows, &mut o);
            for r in 0..rows {
                add_scaled(&mut x[r * d..(r + 1) * d], part(r, 2), &o[r * d..(r + 1) * d]);
            }
            h.copy_from_slice(&x);
            for r in 0..rows {
                let hr = &mut h[r * d..(r + 1) * d];
                rms_norm(hr, &blk.ffn_norm, self.eps);
                modulate(hr, part(r, 3), part(r, 4));
            }
            matmul_many(&[&blk.gate, &blk.up], &h, rows, &mut [&mut g, &mut u]);
            silu(&mut g);
            for (gv, uv) in g.iter_mut().zip(&u) {
                *gv *= uv;
            }
            matmul(&blk.down, &g, rows, &mut o);
            for r in 0..rows {
                add_scaled(&mut x[r * d..(r + 1) * d], part(r, 5), &o[r * d..(r + 1) * d]);
            }
        }
        for r in 0..rows {
            rms_norm(&mut x[r * d..(r + 1) * d], &self.output_norm, self.eps);
        }
        let mut logits = vec![0f32; rows * self.codes];
        matmul(&self.output, &x, rows, &mut logits);
        st.pos += 1;
        Ok(logits)
    }
}

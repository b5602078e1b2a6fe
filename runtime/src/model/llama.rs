//! A plain Llama decoder (`general.architecture = llama`): token embedding, RMSNorm,
//! attention with RoPE (ggml's "normal" layout: adjacent pairs rotate together) and grouped
//! KV heads, SwiGLU, output head. It runs on our kernels and exists so that one GGUF file
//! goes through llama.cpp, candle and us (`eostok-bench vs-llama`); one token at a time,
//! batch 1, KV cache in f32. Other architectures than `eostok` and `llama` stay rejected.

use super::tensors::{Table, Tensors};
use crate::gguf::GgufFile;
use super::attention::{attend, Cache};
use crate::kernels::{matmul, matmul_many, Weight};
use anyhow::Result;
use eostok_models::exit::bad_input;
use std::borrow::Cow;

struct Block<'a> {
    attn_norm: Cow<'a, [f32]>,
    q: Weight<'a>,
    k: Weight<'a>,
    v: Weight<'a>,
    o: Weight<'a>,
    ffn_norm: Cow<'a, [f32]>,
    gate: Weight<'a>,
    up: Weight<'a>,
    down: Weight<'a>,
}

/// Hyper-parameters from the `llama.*` keys.
#[derive(Debug, Clone, PartialEq)]
pub struct LlamaConfig {
    pub width: usize,
    pub depth: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub ffn: usize,
    pub vocab: usize,
    pub context: usize,
    pub rope_dim: usize,
    pub rope_base: f32,
    pub eps: f32,
}

pub struct Llama<'a> {
    pub cfg: LlamaConfig,
    token_embd: Table<'a>,
    blocks: Vec<Block<'a>>,
    output_norm: Cow<'a, [f32]>,
    output: Weight<'a>,
    /// [context, rope_dim / 2] cos and sin of position × frequency.
    cos: Vec<f32>,
    sin: Vec<f32>,
}

/// KV cache (f32, [layer][pos, kv_heads · head_dim]) and position.
pub struct LlamaState {
    pub pos: usize,
    keys: Vec<Vec<f32>>,
    values: Vec<Vec<f32>>,
}

impl LlamaState {
    pub fn kv_bytes(&self) -> usize {
        4 * (self.keys.iter().map(Vec::len).sum::<usize>()
            + self.values.iter().map(Vec::len).sum::<usize>())
    }
}

fn int(file: &GgufFile, key: &str) -> Result<usize> {
    file.metadata()
        .get(key)
        .and_then(|v| v.as_integer())
        .and_then(|i| usize::try_from(i).ok())
        .ok_or_else(|| {
            bad_input(format!(
                "metadata '{key}' is missing or not a non-negative integer"
            ))
        })
}

fn float(file: &GgufFile, key: &str) -> Option<f32> {
    use crate::gguf::Value;
    match file.metadata().get(key)? {
        Value::F32(x) => Some(*x),
        Value::F64(x) => Some(*x as f32),
        _ => None,
    }
}

impl LlamaConfig {
    pub fn from_file(file: &GgufFile) -> Result<Self> {
        let width = int(file, "llama.embedding_length")?;
        let heads = int(file, "llama.attention.head_count")?;
        let kv_heads = file
            .metadata()
            .get("llama.attention.head_count_kv")
            .map(|_| int(file, "llama.attention.head_count_kv"))
            .transpose()?
            .unwrap_or(heads);
        if heads == 0 || width % heads != 0 || kv_heads == 0 || heads % kv_heads != 0 {
            return Err(bad_input(format!(
                "llama: {heads} heads and {kv_heads} KV heads do not divide width {width}"
            )));
        }
        let head_dim = width / heads;
        let rope_dim = file
            .metadata()
            .get("llama.rope.dimension_count")
            .map(|_| int(file, "llama.rope.dimension_count"))
            .transpose()?
            .unwrap_or(head_dim);
        if rope_dim > head_dim || rope_dim % 2 != 0 {
            return Err(bad_input(format!(
                "llama: rope dimension {rope_dim} does not fit head dimension {head_dim}"
            )));
        }
        let vocab = match file.tensor_info("token_embd.weight") {
            Some(t) if t.dims.len() == 2 => t.dims[1] as usize,
            _ => {
                return Err(bad_input(
                    "llama: tensor 'token_embd.weight' is missing or not 2-D",
                ))
            }
        };
        let context = int(file, "llama.context_length")?;
        if context == 0 || context > 1 << 20 {
            return Err(bad_input(format!(
                "llama: context length {context} is outside 1..=2^20"
            )));
        }
        Ok(LlamaConfig {
            width,
            depth: int(file, "llama.block_count")?,
            heads,
            kv_heads,
            ffn: int(file, "llama.feed_forward_length")?,
            vocab,
            context,
            rope_dim,
            rope_base: float(file, "llama.rope.freq_base").unwrap_or(10000.0),
            eps: float(file, "llama.attention.layer_norm_rms_epsilon").unwrap_or(1e-5),
        })
    }

    pub fn head_dim(&self) -> usize {
        self.width / self.heads
    }
}

impl<'a> Llama<'a> {
    pub fn load(file: &'a GgufFile) -> Result<Self> {
        let cfg = LlamaConfig::from_file(file)?;
        let t = Tensors::new(file);
        let (d, f, kvd) = (cfg.width, cfg.ffn, cfg.kv_heads * cfg.head_dim());
        let blocks = (0..cfg.depth)
            .map(|i| {
                let p = |leaf: &str| format!("blk.{i}.{leaf}.weight");
                Ok(Block {
                    attn_norm: t.vector(&p("attn_norm"), &[d])?,
                    q: t.matrix(&p("attn_q"), d, d)?,
                    k: t.matrix(&p("attn_k"), kvd, d)?,
                    v: t.matrix(&p("attn_v"), kvd, d)?,
                    o: t.matrix(&p("attn_output"), d, d)?,
                    ffn_norm: t.vector(&p("ffn_norm"), &[d])?,
                    gate: t.matrix(&p("ffn_gate"), f, d)?,
                    up: t.matrix(&p("ffn_up"), f, d)?,
                    down: t.matrix(&p("ffn_down"), d, f)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let token_embd = t.table("token_embd.weight", cfg.vocab, d)?;
        // Tied embeddings when there is no output head (as llama.cpp and candle do).
        let output = if file.tensor_info("output.weight").is_some() {
            t.matrix("output.weight", cfg.vocab, d)?
        } else {
            t.matrix("token_embd.weight", cfg.vocab, d)?
        };
        let half = cfg.rope_dim / 2;
        let (mut cos, mut sin) = (
            vec![0f32; cfg.context * half],
            vec![0f32; cfg.context * half],
        );
        for p in 0..cfg.context {
            for i in 0..half {
                let freq = 1.0 / cfg.rope_base.powf((2 * i) as f32 / cfg.rope_dim as f32);
                let a = p as f32 * freq;
                cos[p * half + i] = a.cos();
                sin[p * half + i] = a.sin();
            }
        }
        Ok(Llama {
            token_embd,
            blocks,
            output_norm: t.vector("output_norm.weight", &[d])?,
            output,
            cos,
            sin,
            cfg,
        })
    }

    /// Bytes of weights read per token (every matrix once, plus one embedding row).
    pub fn weight_bytes_per_step(&self) -> usize {
        let m = |w: &Weight| w.data.len();
        self.blocks
            .iter()
            .map(|b| m(&b.q) + m(&b.k) + m(&b.v) + m(&b.o) + m(&b.gate) + m(&b.up) + m(&b.down))
            .sum::<usize>()
            + m(&self.output)
    }

    pub fn start(&self) -> LlamaState {
        let kvd = self.cfg.kv_heads * self.cfg.head_dim();
        let cache = || {
            (0..self.blocks.len())
                .map(|_| vec![0f32; self.cfg.context * kvd])
                .collect()
        };
        LlamaState {
            pos: 0,
            keys: cache(),
            values: cache(),
        }
    }

    /// Rotates adjacent pairs (2i, 2i+1) of each head's first `rope_dim` values.
    fn rope(&self, x: &mut [f32], pos: usize) {
        let (hd, half) = (self.cfg.head_dim(), self.cfg.rope_dim / 2);
        let (cos, sin) = (
            &self.cos[pos * half..][..half],
            &self.sin[pos * half..][..half],
        );
        for head in x.chunks_exact_mut(hd) {
            for i in 0..half {
                let (a, b) = (head[2 * i], head[2 * i + 1]);
                head[2 * i] = a * cos[i] - b * sin[i];
                head[2 * i + 1] = a * sin[i] + b * cos[i];
            }
        }
    }

    /// One token at `state.pos` -> logits [vocab].
    pub fn step(&self, st: &mut LlamaState, token: u32) -> Result<Vec<f32>> {
        let c = &self.cfg;
        let pos = st.pos;
        if pos >= c.context {
            return Err(bad_input(format!(
                "position {pos} is past the context of {}",
                c.context
            )));
        }
        let (d, hd) = (c.width, c.head_dim());
        let kvd = c.kv_heads * hd;
        let mut x = vec![0f32; d];
        self.token_embd.row(token as usize, &mut x)?;
        let (mut h, mut q, mut k, mut v, mut a, mut o) = (
            vec![0f32; d],
            vec![0f32; d],
            vec![0f32; kvd],
            vec![0f32; kvd],
            vec![0f32; d],
            vec![0f32; d],
        );
        let (mut g, mut u) = (vec![0f32; c.ffn], vec![0f32; c.ffn]);
        for (li, blk) in self.blocks.iter().enumerate() {
            h.copy_from_slice(&x);
            super::ops::rms_norm(&mut h, &blk.attn_norm, c.eps);
            matmul_many(&[&blk.q, &blk.k, &blk.v], &h, 1, &mut [&mut q, &mut k, &mut v]);
            self.rope(&mut q, pos);
            self.rope(&mut k, pos);
            let (kc, vc) = (&mut st.keys[li], &mut st.values[li]);
            kc[pos * kvd..(pos + 1) * kvd].copy_from_slice(&k);
            vc[pos * kvd..(pos + 1) * kvd].copy_from_slice(&v);
            let cache = Cache {
                keys: kc,
                values: vc,
                stride: kvd,
                len: pos + 1,
                kv_heads: c.kv_heads,
            };
            attend(&q, c.heads, &cache, &mut a);
            matmul(&blk.o, &a, 1, &mut o);
            super::ops::add(&mut x, &o);
            h.copy_from_slice(&x);
            super::ops::rms_norm(&mut h, &blk.ffn_norm, c.eps);
            matmul_many(&[&blk.gate, &blk.up], &h, 1, &mut [&mut g, &mut u]);
            super::ops::silu(&mut g);
            for (gv, uv) in g.iter_mut().zip(&u) {
                *gv *= uv;
            }
            matmul(&blk.down, &g, 1, &mut o);
            super::ops::add(&mut x, &o);
        }
        super::ops::rms_norm(&mut x, &self.output_norm, c.eps);
        let mut logits = vec![0f32; c.vocab];
        matmul(&self.output, &x, 1, &mut logits);
        st.pos += 1;
        Ok(logits)
    }
}

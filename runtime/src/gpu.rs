//! The GPU path (features `candle`, `cuda`, `metal`): the AR transformer and
//! the decoder of a GGUF file as eostok-models' candle modules on a candle
//! [`Device`] — `cuda:N`, `metal:N`, or the CPU (for the parity tests).
//!
//! **Weights are dequantized on load.** Every tensor the AR model, the
//! quantizer's codebook and the decoder need is read from the file, turned
//! into f32 with the runtime's own [`dequantize_row`] (bit-identical to
//! ggml's) and copied to the device once; from then on everything is plain
//! f32 candle. Why not candle's quantized matmul (`QMatMul` on
//! `QTensor`s)?
//!
//! * One code path for every type the file may hold — f32, f16, q8_0, q4_0,
//!   q4_1, the k-quants — with the same dequantization as the CPU path.
//!   candle's CUDA quantized kernels cover only some ggml types and shapes
//!   (its MMQ/MMVQ kernels; f16 and unsupported types fall back to
//!   dequantizing anyway), Metal's cover another set, and we cannot run
//!   either here to find out where they differ.
//! * The models are small: the AR model, codebook and decoder of the largest
//!   preset (`H`, about 0.88 B weights) take 3.3 GiB in f32, `B` 1.0 GiB,
//!   the presets trained here a few MB; f32 weights fit any GPU.
//! * The cost is memory: **4 bytes per weight on the device** (a q8_0 file
//!   takes about 3.8× its size, a q4_0 file about 7×), plus, during the load,
//!   the same amount of host memory for the f32 copies (freed after).
//!   [`CandleModel::weight_bytes`] says how much.
//!
//! Sampling is [`eostok_models::nn::sample_tokens`]: the KV cache is candle
//! tensors on the device (it never leaves it); each step's logits (K floats a
//! row) are copied to the host, where the token is drawn with the same
//! SplitMix64 stream and [`pick_token`](eostok_models::sampling::pick_token)
//! as the CPU path ([`crate::generate`]), so a seed gives the CPU path's
//! tokens up to float rounding. At f32 they are identical in the tests
//! (`tests/tests/runtime_candle.rs`). On quantized files the two paths differ
//! on purpose: the CPU kernels quantize activations too (q8 blocks, like
//! ggml), the GPU path multiplies f32 activations by the dequantized weights,
//! so a sampled token may flip where two candidates are nearly tied.

use crate::generate::{GenerateOptions, Generated};
use crate::gguf::GgufFile;
use crate::model::{check_class, check_code_rows, config_of};
use crate::quant::{dequantize_row, GgmlType};
use anyhow::{anyhow, Context, Result};
use candle_core::{DType, Device, Tensor};
use eostok_models::exit::bad_input;
use eostok_models::names::Group;
use eostok_models::nn::{sample_tokens, ArTransformer, Decoder, GenerateOptions as CandleOptions, Ibq, ParamStore};
use eostok_models::{tensor_specs, Config};
use std::collections::HashMap;

/// Every type [`dequantize_row`] reads: the GPU path takes all of them.
pub const LOADABLE_TYPES: &[GgmlType] = &[
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::Q8_0,
    GgmlType::Q8_1,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q4_K,
    GgmlType::Q6_K,
    GgmlType::Q8_K,
];

/// Images decoded together on the device: bounds the decoder's activations
/// (attention is [images, heads, L+N, L+N]) whatever `--num-images` is.
pub const DECODE_CHUNK: usize = 64;

/// The AR model, the codebook and the decoder of a GGUF file on a device.
pub struct CandleModel {
    pub cfg: Config,
    pub ar: ArTransformer,
    pub ibq: Ibq,
    pub decoder: Decoder,
    pub device: Device,
    weights: usize,
}

impl CandleModel {
    /// Dequantize every tensor the AR model and the decoder need (the
    /// encoder, if the file has one, is skipped) to f32 and build the candle
    /// modules on `device`. A missing tensor, a wrong shape or a type the
    /// runtime cannot read is a bad-input error, as on the CPU path.
    pub fn load(file: &GgufFile, device: &Device) -> Result<Self> {
        let cfg = config_of(file)?;
        let mut tensors = HashMap::new();
        let mut weights = 0usize;
        for spec in tensor_specs(&cfg).into_iter().filter(|s| matches!(s.group, Group::Quantizer | Group::Decoder | Group::Ar)) {
            // GGUF dims are ne[0] first: the reverse of the PyTorch shape.
            let dims: Vec<u64> = spec.shape.iter().rev().map(|&d| d as u64).collect();
            let view = file.tensor_checked(&spec.name, &dims, LOADABLE_TYPES).map_err(|e| bad_input(e.to_string()))?;
            let (row_len, row_bytes) = (view.info.row_len() as usize, view.info.row_bytes() as usize);
            let mut values = vec![0f32; spec.numel()];
            for (dst, src) in values.chunks_exact_mut(row_len).zip(view.data.chunks_exact(row_bytes)) {
                dequantize_row(view.ggml_type(), src, dst).map_err(|e| bad_input(format!("tensor '{}': {e}", spec.name)))?;
            }
            weights += values.len();
            // Host tensors: the parameter store copies each one to the device
            // as a module asks for it, so the device never holds two copies.
            tensors.insert(spec.name.clone(), Tensor::from_vec(values, spec.shape.as_slice(), &Device::Cpu)?);
        }
        let store = ParamStore::from_tensors(tensors);
        let vb = store.var_builder(DType::F32, device);
        let ar = ArTransformer::new(&vb, &cfg).context("building the AR transformer")?;
        let ibq = Ibq::new(&vb, &cfg).context("building the quantizer")?;
        let decoder = Decoder::new(&vb, &cfg).context("building the decoder")?;
        let unused = store.unused_names();
        if !unused.is_empty() {
            return Err(anyhow!("tensors loaded but not used by the modules: {}", unused.join(", ")));
        }
        Ok(CandleModel { cfg, ar, ibq, decoder, device: device.clone(), weights })
    }

    /// Bytes the weights take on the device (f32: 4 per weight).
    pub fn weight_bytes(&self) -> usize {
        4 * self.weights
    }

    /// Sample `num_tokens` (at most L) tokens per class with the KV cache on
    /// the device; the same options and seed as [`crate::generate::generate`].
    pub fn generate(&self, classes: &[u32], num_tokens: usize, opts: &GenerateOptions, record_logits: bool) -> Result<Generated> {
        for &c in classes {
            check_class(c, self.cfg.num_classes)?;
        }
        let o = CandleOptions { sampling: opts.sampling, cfg_scale: opts.cfg_scale as f64, seed: opts.seed };
        let trace = sample_tokens(&self.ar, classes, num_tokens.min(self.cfg.latent_tokens), &o, record_logits)?;
        Ok(Generated { ids: trace.ids, logits: trace.logits })
    }

    /// Decode code ids (every row the same length k, 1 <= k <= L) to images,
    /// [B, C, H, W] in about [-1, 1] on the host: the layout of
    /// [`crate::model::Decoder::decode`], so [`crate::image_out`] takes it.
    pub fn decode(&self, ids: &[Vec<u32>]) -> Result<Vec<f32>> {
        let k = check_code_rows(ids, self.cfg.latent_tokens, self.cfg.codebook_size)?;
        let mut out = Vec::with_capacity(ids.len() * self.cfg.channels * self.cfg.image_size * self.cfg.image_size);
        for chunk in ids.chunks(DECODE_CHUNK) {
            let flat: Vec<u32> = chunk.iter().flatten().copied().collect();
            let t = Tensor::from_vec(flat, (chunk.len(), k), &self.device)?;
            let images = self.decoder.forward(&self.ibq.lookup(&t)?, None)?.image;
            out.extend(images.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?);
        }
        Ok(out)
    }
}

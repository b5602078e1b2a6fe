//! eostok-runtime: the CPU runtime, top-down — file ([`gguf`]) → tensors
//! ([`model::tensors`]) → kernels ([`kernels`], [`quant`]) → model
//! ([`model`]) → sampler ([`generate`]) → image ([`image_out`]).
//! No candle here: the CPU path is ours.
//!
//! The GPU path ([`gpu`], features `candle`/`cuda`/`metal`, off by default)
//! runs eostok-models' candle modules on weights dequantized from the same
//! GGUF; it shares the file reader, the dequantizers, the sampler's options
//! and the image output with the CPU path, and nothing else.

pub mod bundled;
pub mod generate;
pub mod gguf;
#[cfg(feature = "candle")]
pub mod gpu;
pub mod image_out;
pub mod info;
pub mod kernels;
pub mod model;
pub mod quant;

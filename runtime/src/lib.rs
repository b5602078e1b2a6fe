//! eostok-runtime: the CPU runtime, top-down — file ([`gguf`]) → tensors
//! ([`model::tensors`]) → kernels ([`kernels`], [`quant`]) → model
//! ([`model`]) → sampler ([`generate`]) → image ([`image_out`]).
//! No candle here: the CPU path is ours.

pub mod bundled;
pub mod generate;
pub mod gguf;
pub mod image_out;
pub mod info;
pub mod kernels;
pub mod model;
pub mod quant;

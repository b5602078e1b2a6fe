//! eostok-train: joint end-to-end training of the EOSTok tokenizer and AR
//! model (candle, CPU and CUDA), checkpoints, and later evaluation.

/// The checkpoint directory format lives in eostok-models (the quantizer reads it too).
pub use eostok_models::checkpoint;
pub mod data;
pub mod disc;
pub mod dist;
pub mod faults;
pub mod eval;
pub mod fit;
pub mod joint;
pub mod launch;
pub mod loss;
pub mod optim;
pub mod plot;
pub mod samples;

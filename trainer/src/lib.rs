//! eostok-train: joint end-to-end training of the EOSTok tokenizer and AR
//! model (candle, CPU and CUDA), checkpoints, and later evaluation.

pub mod checkpoint;
pub mod joint;
pub mod loss;

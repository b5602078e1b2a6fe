pub mod gguf;
pub mod quant;

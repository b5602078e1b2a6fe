//! eostok-quantize: checkpoint directory -> standard GGUF (f32, f16, q8_0,
//! q4_0, q4_1, q4_k, q6_k, mixed), with the per-tensor precision policy of
//! `eostok_models::shapes::Kind` and the metadata of
//! `eostok_models::gguf_schema`. Built by the quantize issue.

//! eostok-models: the EOSTok architecture, defined once.
//!
//! Candle-free parts (always built): [`Config`] and its presets, tensor
//! names ([`names`]), the canonical tensor list ([`shapes`]), the GGUF
//! metadata schema ([`gguf_schema`]), token sampling ([`sampling`]), the
//! `--device` parser ([`device`]) and the exit-code convention of every
//! binary ([`exit`]). The candle modules
//! ([`nn`]) and the checkpoint directory ([`checkpoint`]) sit behind the
//! default feature `candle`.

pub mod config;
pub mod device;
pub mod exit;
pub mod gguf_schema;
pub mod names;
pub mod sampling;
pub mod shapes;

#[cfg(feature = "candle")]
pub mod checkpoint;
#[cfg(feature = "candle")]
pub mod nets;
#[cfg(feature = "candle")]
pub mod nn;

pub use device::DeviceSpec;
pub use config::{ArConfig, Config, ConfigError, VfmConfig, VitConfig, PRESETS};
pub use shapes::{param_counts, tensor_specs, ParamCounts, TensorSpec};

//! Frozen pretrained vision nets, read from the asset cache that
//! `scripts/fetch-assets` fills (converted safetensors + `.json` side files
//! documenting each architecture; see `scripts/assets/README.md`).
//!
//! * [`dinov2::Dinov2`]: DINOv2-S/14, the VFM of the alignment losses.
//! * [`lpips::Lpips`]: LPIPS v0.1 (VGG16 / AlexNet), differentiable w.r.t. the image.
//! * [`effnet::EfficientNetLite0`]: features/logits for Fréchet distances and IS-like scores.
//!
//! Each net is a plain struct built from a `VarBuilder` (so tests can use
//! random weights) with `load(path, device)` / `load_default(device)` for
//! the cached files. Loaded weights are plain tensors, not `Var`s. Loading
//! errors are bad input (exit 2): a missing file says to run
//! `scripts/fetch-assets`; a missing tensor or a wrong shape names it.

pub mod assets;
pub mod conv;
pub mod dinov2;
pub mod effnet;
pub mod inception;
pub mod lpips;
pub mod ops;

pub use assets::{asset_dir, ASSETS_ENV};
pub use dinov2::{Dinov2, Dinov2Config};
pub use effnet::EfficientNetLite0;
pub use inception::InceptionV3;
pub use lpips::{Lpips, LpipsNet};

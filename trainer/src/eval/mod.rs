//! Evaluation (`eostok-eval`): Fréchet distances on EfficientNet-Lite0 or
//! DINOv2-S features with precision/recall and an IS-like score
//! ([`fd_cmd`]), and tokenizer reconstruction quality with the
//! nested-dropout prefix curve ([`recon`]).
//!
//! * [`fd`]: mean/covariance, the Fréchet distance (f64, symmetric
//!   eigendecompositions), k-NN precision/recall, the IS-like score;
//! * [`features`]: the feature nets and what each returns;
//! * [`sources`]: datasets, image folders and GGUF models as image sources;
//! * [`cache`]: cached statistics of real sets;
//! * [`classify`]: a small Fashion-MNIST classifier and the class accuracy
//!   of a model's samples.
//!
//! No distance here is pytorch-fid's FID: every name carries the feature
//! net (`FD_effnet-lite0`, `FD_dinov2`).

pub mod cache;
pub mod classify;
pub mod fd;
pub mod fd_cmd;
pub mod features;
pub mod recon;
pub mod sources;

/// A progress bar on stderr over `len` images (hidden when `show` is false
/// or stderr is not a terminal).
pub fn progress_bar(len: usize, label: &str, show: bool) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len as u64);
    let style = indicatif::ProgressStyle::with_template("{prefix:>6} {bar:30} {pos}/{len} images {elapsed} (eta {eta})").expect("template");
    bar.set_style(style);
    bar.set_prefix(label.to_string());
    bar
}

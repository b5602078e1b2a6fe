//! Training data: datasets, preprocessing, deterministic order, batches.
//!
//! ```text
//! resolve_data("emoji" | "fashion-mnist" | PATH)  ->  Arc<dyn Dataset>
//!        Dataset::get(i, resolution, flip)         ->  (RgbImage res x res, label)
//!        Sampler (seed, epoch, position)           ->  which samples, flipped or not
//!        load_batch / Loader::next_batch           ->  Tensor [B,3,H,W] f32 in [-1,1] + labels
//! ```
//!
//! * [`idx`]: Fashion-MNIST (IDX files, gzipped or raw).
//! * [`folder`]: ImageFolder, `root/CLASS/*.{png,jpg,jpeg,webp}`.
//! * [`emoji`]: the Noto emoji set (`emoji.json` + `img/google/64/*.png`).
//! * [`transform`]: centre crop, resize, grey -> RGB, flip, to CHW floats.
//! * [`order`]: seeded per-epoch shuffling with an exact resume position.
//! * [`batch`]: parallel (rayon) but deterministic batch assembly.
//! * [`resolve`]: the `--data` argument shared by every binary, and the asset cache.
//!
//! Every error caused by the data (missing, unreadable, malformed) is a
//! bad-input error (exit 2) naming the file.

pub mod batch;
pub mod emoji;
pub mod folder;
pub mod idx;
pub mod order;
pub mod resolve;
pub mod transform;

pub use batch::{load_batch, Batch, Loader};
pub use emoji::EmojiDataset;
pub use folder::ImageFolder;
pub use idx::{IdxDataset, Split, FASHION_MNIST_CLASSES};
pub use order::{epoch_order, DataPosition, Pick, Sampler};
pub use resolve::{resolve_data, DATA_KEYWORDS};
pub use transform::{prepare, to_chw_pm1};

use anyhow::Result;
use image::RgbImage;

/// A labelled image collection with a fixed order of samples.
///
/// Implementations decode lazily or hold pixels in memory; either way
/// `image(i)` must return the same pixels for the same `i` every time, so
/// batches do not depend on thread scheduling.
pub trait Dataset: Send + Sync {
    /// Number of samples.
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Class names; labels index into this list.
    fn class_names(&self) -> &[String];
    /// Label of sample `i` (`i < len()`).
    fn label(&self, i: usize) -> u32;
    /// Sample `i` decoded to 8-bit RGB at its stored size (grey replicated,
    /// alpha composited on white).
    fn image(&self, i: usize) -> Result<RgbImage>;
    /// One line for logs: what was loaded and from where.
    fn describe(&self) -> String;

    /// Sample `i` at `resolution` x `resolution` (centre crop to a square,
    /// then resize; see [`transform::prepare`]), optionally mirrored.
    fn get(&self, i: usize, resolution: usize, flip: bool) -> Result<(RgbImage, u32)> {
        Ok((prepare(self.image(i)?, resolution, flip), self.label(i)))
    }

    /// Like [`Dataset::get`], as CHW f32 in [-1, 1] (`3 * res * res` values).
    fn get_chw(&self, i: usize, resolution: usize, flip: bool) -> Result<(Vec<f32>, u32)> {
        let (img, label) = self.get(i, resolution, flip)?;
        Ok((to_chw_pm1(&img), label))
    }
}

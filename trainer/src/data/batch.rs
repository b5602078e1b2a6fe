//! Batch assembly: samples are decoded and resized in parallel (rayon), each
//! into its own slot, so the batch is the same whatever the thread count or
//! scheduling. The first failing sample in batch order is the error.

use super::order::{DataPosition, Pick, Sampler};
use super::Dataset;
use anyhow::Result;
use candle_core::{Device, Tensor};
use eostok_models::exit::bad_input;
use rayon::prelude::*;
use std::sync::Arc;

/// Images `[B,3,H,W]` f32 in [-1,1], their labels and where they came from.
#[derive(Debug, Clone)]
pub struct Batch {
    pub images: Tensor,
    pub labels: Vec<u32>,
    pub picks: Vec<Pick>,
}

/// Decode `picks` at `resolution`² into one batch on `device`.
pub fn load_batch(ds: &dyn Dataset, picks: &[Pick], resolution: usize, device: &Device) -> Result<Batch> {
    if resolution == 0 {
        return Err(bad_input("resolution must be positive"));
    }
    let per = 3 * resolution * resolution;
    let decoded: Vec<Result<(Vec<f32>, u32)>> = picks.par_iter().map(|p| ds.get_chw(p.sample, resolution, p.flip)).collect();
    let mut data = Vec::with_capacity(picks.len() * per);
    let mut labels = Vec::with_capacity(picks.len());
    for r in decoded {
        let (chw, label) = r?;
        data.extend_from_slice(&chw);
        labels.push(label);
    }
    let images = Tensor::from_vec(data, (picks.len(), 3, resolution, resolution), device)?;
    Ok(Batch { images, labels, picks: picks.to_vec() })
}

/// A dataset, a resolution and a [`Sampler`]: an endless, resumable stream
/// of batches.
pub struct Loader {
    dataset: Arc<dyn Dataset>,
    sampler: Sampler,
    resolution: usize,
    device: Device,
}

impl Loader {
    pub fn new(dataset: Arc<dyn Dataset>, resolution: usize, seed: u64, hflip: bool, device: &Device) -> Result<Self> {
        Self::resume(dataset, resolution, seed, hflip, DataPosition::default(), device)
    }

    /// Continue from a position saved by [`Loader::position`].
    pub fn resume(
        dataset: Arc<dyn Dataset>,
        resolution: usize,
        seed: u64,
        hflip: bool,
        pos: DataPosition,
        device: &Device,
    ) -> Result<Self> {
        let sampler = Sampler::resume(dataset.len(), seed, hflip, pos)?;
        Ok(Loader { dataset, sampler, resolution, device: device.clone() })
    }

    pub fn next_batch(&mut self, batch_size: usize) -> Result<Batch> {
        let picks = self.sampler.next_picks(batch_size);
        load_batch(self.dataset.as_ref(), &picks, self.resolution, &self.device)
    }

    /// Samples `[start, start + len)` of the next batch of `batch_size`: the loader
    /// advances past the whole batch but decodes only that slice (data parallelism:
    /// every rank keeps the global order and trains on its own part of each batch).
    pub fn next_batch_part(&mut self, batch_size: usize, start: usize, len: usize) -> Result<Batch> {
        let picks = self.sampler.next_picks(batch_size);
        let part = picks.get(start..start + len).ok_or_else(|| anyhow::anyhow!("slice {start}..{} of a batch of {batch_size}", start + len))?;
        load_batch(self.dataset.as_ref(), part, self.resolution, &self.device)
    }

    /// Position of the next batch (store it in the checkpoint).
    pub fn position(&self) -> DataPosition {
        self.sampler.position()
    }

    pub fn dataset(&self) -> &Arc<dyn Dataset> {
        &self.dataset
    }
}

//! Which sample comes next: a seeded shuffle per epoch, and an exact resume
//! position.
//!
//! Epoch `e`'s order is a Fisher-Yates shuffle of `0..len` driven by a
//! [`SplitMix64`] seeded from `(seed, e)`; the same stream then draws one
//! flip bit per position (when flips are on). Both are pure functions of
//! `(seed, epoch, len)`, so a [`DataPosition`] (epoch, position inside the
//! epoch) saved in a checkpoint is all a trainer needs to continue with
//! exactly the samples and flips it would have seen.

use anyhow::Result;
use eostok_models::exit::bad_input;
use eostok_models::sampling::SplitMix64;
use serde::{Deserialize, Serialize};

/// The next sample to draw: `index` is the position inside epoch `epoch`'s
/// order (not a dataset index).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DataPosition {
    pub epoch: u64,
    pub index: usize,
}

/// One drawn sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pick {
    /// Dataset index.
    pub sample: usize,
    /// Mirror horizontally.
    pub flip: bool,
}

fn epoch_rng(seed: u64, epoch: u64) -> SplitMix64 {
    // Two mixing rounds so nearby (seed, epoch) pairs give unrelated streams.
    let mut a = SplitMix64::new(seed);
    let s = a.next_u64() ^ epoch.wrapping_mul(0xD1B5_4A32_D192_ED03);
    let mut b = SplitMix64::new(s);
    SplitMix64::new(b.next_u64())
}

/// Epoch `epoch`'s order of `0..len` and its flip bits (all false when
/// `hflip` is off).
pub fn epoch_order(len: usize, seed: u64, epoch: u64, hflip: bool) -> (Vec<u32>, Vec<bool>) {
    let mut rng = epoch_rng(seed, epoch);
    let mut order: Vec<u32> = (0..len as u32).collect();
    for i in (1..len).rev() {
        let j = rng.below(i + 1);
        order.swap(i, j);
    }
    let flips = (0..len).map(|_| hflip && rng.next_u64() >> 63 == 1).collect();
    (order, flips)
}

/// An endless stream of picks over a dataset of `len` samples.
#[derive(Debug, Clone)]
pub struct Sampler {
    len: usize,
    seed: u64,
    hflip: bool,
    pos: DataPosition,
    order: Vec<u32>,
    flips: Vec<bool>,
}

impl Sampler {
    /// Start at epoch 0, position 0.
    pub fn new(len: usize, seed: u64, hflip: bool) -> Result<Self> {
        Self::resume(len, seed, hflip, DataPosition::default())
    }

    /// Continue from a saved position (same `len`, `seed`, `hflip` as the
    /// run that saved it).
    pub fn resume(len: usize, seed: u64, hflip: bool, pos: DataPosition) -> Result<Self> {
        if len == 0 {
            return Err(bad_input("empty dataset: nothing to sample"));
        }
        if pos.index > len {
            return Err(bad_input(format!("data position {} is past the end of a dataset of {len} samples", pos.index)));
        }
        let (order, flips) = epoch_order(len, seed, pos.epoch, hflip);
        Ok(Sampler { len, seed, hflip, pos, order, flips })
    }

    /// Where the next pick comes from (save this to resume).
    pub fn position(&self) -> DataPosition {
        self.pos
    }

    /// The next `n` picks; crosses into the next epoch when one ends.
    pub fn next_picks(&mut self, n: usize) -> Vec<Pick> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            if self.pos.index == self.len {
                self.pos = DataPosition { epoch: self.pos.epoch + 1, index: 0 };
                (self.order, self.flips) = epoch_order(self.len, self.seed, self.pos.epoch, self.hflip);
            }
            let i = self.pos.index;
            out.push(Pick { sample: self.order[i] as usize, flip: self.flips[i] });
            self.pos.index += 1;
        }
        out
    }
}

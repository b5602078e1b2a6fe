//! Images <-> patch sequences. A patch is flattened as (row, col, channel),
//! channel fastest; patches in raster order. The runtime uses the same order.

use candle_core::{Result, Tensor};

/// [B,C,H,W] -> [B, N, P*P*C]
pub fn patchify(x: &Tensor, p: usize) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    let (gh, gw) = (h / p, w / p);
    x.reshape(vec![b, c, gh, p, gw, p])?
        .permute(vec![0, 2, 4, 3, 5, 1])?
        .reshape((b, gh * gw, p * p * c))
}

/// [B, N, P*P*C] -> [B,C,H,W] for a square grid.
pub fn unpatchify(x: &Tensor, p: usize, channels: usize) -> Result<Tensor> {
    let (b, n, _) = x.dims3()?;
    let g = (n as f64).sqrt().round() as usize;
    x.reshape(vec![b, g, g, p, p, channels])?
        .permute(vec![0, 5, 1, 3, 2, 4])?
        .reshape((b, channels, g * p, g * p))
}

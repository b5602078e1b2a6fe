//! Attention of one new query row over a KV cache, shared by the EOSTok AR model and the
//! plain Llama model: each head (GQA: query head `h` reads kv head `h / (heads / kv_heads)`)
//! scores the cached keys, softmaxes and sums the cached values. The heads run in parallel
//! on the matmul threads once the cache is long enough to pay for it: at 256 cached
//! tokens this loop was ~20% of a single-threaded B q4_0 token.

use super::ops::softmax;
use crate::kernels::{dot_rows, parallel_chunks, weighted_rows};

/// Multiply-adds below which the heads run on the calling thread (a pool call costs ~1 µs).
const SERIAL_MACS: usize = 1 << 14;

/// The cached keys and values of one sequence: `len` positions, each a row of `stride`
/// floats in which kv head `j` sits at `j * head_dim`.
pub struct Cache<'a> {
    pub keys: &'a [f32],
    pub values: &'a [f32],
    pub stride: usize,
    pub len: usize,
    pub kv_heads: usize,
}

/// `out[h·hd .. (h+1)·hd] = softmax(q_h · K_j[0..len] · scale) · V_j[0..len]` for every query
/// head `h` of `q` (`heads · hd` floats, `hd = q.len() / heads`).
pub fn attend(q: &[f32], heads: usize, cache: &Cache, out: &mut [f32]) {
    let hd = q.len() / heads;
    assert!(heads > 0 && q.len() == heads * hd && out.len() == q.len());
    assert!(cache.kv_heads > 0 && heads.is_multiple_of(cache.kv_heads) && cache.kv_heads * hd <= cache.stride);
    assert!(cache.len > 0 && cache.keys.len() >= cache.len * cache.stride);
    assert!(cache.values.len() >= cache.len * cache.stride);
    let group = heads / cache.kv_heads;
    let scale = 1.0 / (hd as f32).sqrt();
    let head = |h: usize, o: &mut [f32]| {
        let (qh, at) = (&q[h * hd..][..hd], (h / group) * hd);
        let mut scores = vec![0f32; cache.len];
        dot_rows(qh, &cache.keys[at..], cache.stride, &mut scores);
        scores.iter_mut().for_each(|s| *s *= scale);
        softmax(&mut scores);
        weighted_rows(&scores, &cache.values[at..], cache.stride, o);
    };
    if cache.len * q.len() < SERIAL_MACS {
        for (h, o) in out.chunks_mut(hd).enumerate() {
            head(h, o);
        }
    } else {
        parallel_chunks(out, hd, &|h, o| head(h, o));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against an f64 reference, with GQA, for caches on both sides of the serial
    /// threshold (so the parallel path is checked too).
    #[test]
    fn matches_f64_reference() {
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut rnd = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        };
        for &(heads, kv_heads, hd, len) in &[(4, 4, 8, 1), (4, 2, 16, 7), (16, 16, 64, 200), (8, 2, 32, 130), (2, 1, 128, 9), (3, 3, 12, 5)] {
            let stride = kv_heads * hd + 3; // padded rows: offsets must use the stride
            let q: Vec<f32> = (0..heads * hd).map(|_| rnd()).collect();
            let keys: Vec<f32> = (0..len * stride).map(|_| rnd() * 2.0).collect();
            let values: Vec<f32> = (0..len * stride).map(|_| rnd()).collect();
            let cache = Cache { keys: &keys, values: &values, stride, len, kv_heads };
            let mut out = vec![f32::NAN; heads * hd];
            attend(&q, heads, &cache, &mut out);
            for h in 0..heads {
                let j = h / (heads / kv_heads);
                let s: Vec<f64> = (0..len)
                    .map(|t| {
                        (0..hd).map(|e| q[h * hd + e] as f64 * keys[t * stride + j * hd + e] as f64).sum::<f64>()
                            / (hd as f64).sqrt()
                    })
                    .collect();
                let m = s.iter().cloned().fold(f64::MIN, f64::max);
                let z: f64 = s.iter().map(|v| (v - m).exp()).sum();
                for e in 0..hd {
                    let want: f64 = (0..len).map(|t| (s[t] - m).exp() / z * values[t * stride + j * hd + e] as f64).sum();
                    let got = out[h * hd + e] as f64;
                    assert!((got - want).abs() < 1e-5, "heads {heads}/{kv_heads} len {len} h {h} e {e}: {got} vs {want}");
                }
            }
        }
    }
}

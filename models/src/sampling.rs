//! Token choice from logits, shared by the candle reference sampler and the
//! runtime so that the same seed and the same logits give the same tokens.
//! No candle here.

/// SplitMix64: tiny, seedable, reproducible on every platform.
#[derive(Debug, Clone)]
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = self.uniform().max(f64::MIN_POSITIVE);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
    /// Uniform integer in [0, n).
    pub fn below(&mut self, n: usize) -> usize {
        ((self.uniform() * n as f64) as usize).min(n.saturating_sub(1))
    }
}

/// How to pick a token from logits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenSampling {
    /// 0 = greedy (argmax).
    pub temperature: f64,
    /// Keep only the k most likely tokens (0 = off).
    pub top_k: usize,
    /// Keep the smallest set with cumulative probability >= p (1 = off).
    pub top_p: f64,
}

impl Default for TokenSampling {
    /// The paper's sampling: temperature 1, no top-k, no top-p.
    fn default() -> Self {
        TokenSampling { temperature: 1.0, top_k: 0, top_p: 1.0 }
    }
}

/// What to sample with once flags and a file's recommended sampling are
/// combined (`gguf_schema::SamplingRecommendation::resolve`).
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingChoice {
    pub sampling: TokenSampling,
    /// Classifier-free guidance scale (1 = off).
    pub cfg_scale: f32,
    /// The settings that came from the file, e.g. `["cfg 1.5"]`.
    pub from_file: Vec<String>,
}

/// Index of the largest value (first one on ties; NaN never wins).
pub fn argmax(xs: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in xs.iter().enumerate() {
        if x > xs[best] || xs[best].is_nan() {
            best = i;
        }
    }
    best
}

/// Classifier-free guidance on logits: u + s (c - u), written into `cond`.
pub fn guide(cond: &mut [f32], uncond: &[f32], scale: f32) {
    for (c, &u) in cond.iter_mut().zip(uncond) {
        *c = u + scale * (*c - u);
    }
}

/// Pick one token. Draws exactly one uniform from `rng` unless greedy.
pub fn pick_token(logits: &[f32], opts: &TokenSampling, rng: &mut SplitMix64) -> u32 {
    if opts.temperature <= 0.0 || logits.len() <= 1 {
        return argmax(logits) as u32;
    }
    let mut order: Vec<usize> = (0..logits.len()).collect();
    // Descending by logit; index breaks ties so the order is total and stable.
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
    if opts.top_k > 0 && opts.top_k < order.len() {
        order.truncate(opts.top_k);
    }
    let max = logits[order[0]] as f64;
    let mut probs: Vec<f64> = order.iter().map(|&i| ((logits[i] as f64 - max) / opts.temperature).exp()).collect();
    let total: f64 = probs.iter().sum();
    probs.iter_mut().for_each(|p| *p /= total);
    if opts.top_p < 1.0 {
        let mut cum = 0.0;
        let mut keep = probs.len();
        for (i, p) in probs.iter().enumerate() {
            cum += p;
            if cum >= opts.top_p {
                keep = i + 1;
                break;
            }
        }
        probs.truncate(keep);
        order.truncate(keep);
        let total: f64 = probs.iter().sum();
        probs.iter_mut().for_each(|p| *p /= total);
    }
    let u = rng.uniform();
    let mut cum = 0.0;
    for (i, p) in probs.iter().enumerate() {
        cum += p;
        if u < cum {
            return order[i] as u32;
        }
    }
    order[order.len() - 1] as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_and_top_k_one_are_argmax() {
        let logits = [0.1f32, 2.0, -1.0, 1.9];
        let mut rng = SplitMix64::new(1);
        assert_eq!(pick_token(&logits, &TokenSampling { temperature: 0.0, top_k: 0, top_p: 1.0 }, &mut rng), 1);
        for _ in 0..20 {
            assert_eq!(pick_token(&logits, &TokenSampling { temperature: 1.0, top_k: 1, top_p: 1.0 }, &mut rng), 1);
        }
    }

    #[test]
    fn sampling_follows_the_distribution() {
        // p = softmax([0, ln 3]) = [0.25, 0.75]
        let logits = [0.0f32, 3f32.ln()];
        let mut rng = SplitMix64::new(7);
        let n = 20000;
        let ones = (0..n).filter(|_| pick_token(&logits, &TokenSampling::default(), &mut rng) == 1).count();
        let frac = ones as f64 / n as f64;
        assert!((frac - 0.75).abs() < 0.015, "{frac}");
    }

    #[test]
    fn top_p_cuts_the_tail() {
        let logits = [3.0f32, 0.0, -5.0, -6.0];
        let mut rng = SplitMix64::new(3);
        let opts = TokenSampling { temperature: 1.0, top_k: 0, top_p: 0.5 };
        assert!((0..200).all(|_| pick_token(&logits, &opts, &mut rng) == 0));
    }

    #[test]
    fn guidance_formula() {
        let mut c = [1.0f32, 2.0];
        guide(&mut c, &[0.0, 4.0], 2.0);
        assert_eq!(c, [2.0, 0.0]);
    }
}

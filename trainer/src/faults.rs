//! What `fit` does when things go wrong: values read back from `state.json`
//! (or given on the command line) outside any sane range, a loss that turns
//! NaN or infinite, a save that fails (disk full), and the staged-save
//! cleanup. Signals (SIGINT/SIGTERM → save, exit 130/143) are in `fit`, the
//! crash-safe commit of a checkpoint in `eostok_models::checkpoint`.

use crate::fit::{TrainConfig, TrainState};
use anyhow::Result;
use eostok_models::exit::bad_input;
use std::path::{Path, PathBuf};

/// Largest batch a run may ask for (a `state.json` saying 10^12 is damage, not a plan).
pub const MAX_BATCH: usize = 1 << 16;
/// Largest `--keep` (history checkpoints).
pub const MAX_KEEP: usize = 100_000;
/// Default of `--max-nan-steps`.
pub const DEFAULT_MAX_NAN_STEPS: usize = 20;

/// Rejects training settings no run could use: zero or absurd sizes,
/// non-finite or negative rates, probabilities outside [0, 1].
pub fn check_train(t: &TrainConfig) -> Result<()> {
    let bad = |m: String| Err(bad_input(m));
    if t.batch == 0 || t.batch > MAX_BATCH {
        return bad(format!("batch {} is outside 1..={MAX_BATCH}", t.batch));
    }
    if t.steps == 0 {
        return bad("steps must be positive".into());
    }
    if t.keep > MAX_KEEP {
        return bad(format!("keep {} is above {MAX_KEEP}", t.keep));
    }
    let finite_nonneg = [("lr", t.lr), ("min_lr", t.min_lr), ("grad_clip", t.grad_clip), ("weight_decay", t.weight_decay)];
    for (k, v) in finite_nonneg {
        if !(v.is_finite() && v >= 0.0) {
            return bad(format!("{k} = {v} must be finite and >= 0"));
        }
    }
    let unit = [("ema_decay", t.ema_decay), ("tokenizer_beta2", t.tokenizer_beta2), ("ar_beta2", t.ar_beta2), ("loss.nested_dropout", t.loss.nested_dropout)];
    for (k, v) in unit {
        if !(0.0..=1.0).contains(&v) {
            return bad(format!("{k} = {v} must be in [0, 1]"));
        }
    }
    let l = &t.loss;
    let weights = [
        ("l2", l.l2),
        ("l1", l.l1),
        ("lpips", l.lpips),
        ("commit", l.commit),
        ("commit_beta", l.commit_beta),
        ("entropy", l.entropy),
        ("ntp", l.ntp),
        ("apr", l.apr),
        ("vfm_implicit", l.vfm_implicit),
        ("vfm_decoder", l.vfm_decoder),
    ];
    for (k, v) in weights {
        if !v.is_finite() || v.abs() > 1e6 {
            return bad(format!("loss weight {k} = {v} must be finite and at most 1e6 in size"));
        }
    }
    Ok(())
}

/// `state.json` as read back for `--resume`: its settings pass
/// [`check_train`] and its step fits them.
pub fn check_state(s: &TrainState) -> Result<()> {
    check_train(&s.train)?;
    if s.step > 1 << 48 {
        return Err(bad_input(format!("step {} is absurd", s.step)));
    }
    Ok(())
}

/// Skips steps whose loss or gradient norm is NaN or infinite (no optimizer
/// or EMA update), and stops the run after `limit` of them in a row.
#[derive(Debug)]
pub struct NanGuard {
    limit: usize,
    streak: usize,
    first_bad: u64,
    /// Steps skipped over the whole run.
    pub skipped: u64,
    inject: Vec<u64>,
}

impl NanGuard {
    /// `limit` = 0 means 1 (a run cannot go on with every step skipped).
    pub fn new(limit: usize) -> Self {
        NanGuard { limit: limit.max(1), streak: 0, first_bad: 0, skipped: 0, inject: injected_nan_steps() }
    }

    /// `Ok(true)`: skip this step's update. `Err` once `limit` steps in a
    /// row were bad: the caller stops without saving, so the last
    /// checkpoint on disk (written before the streak) stays the latest.
    pub fn skip(&mut self, step: u64, loss: f64, grad_norm: f64) -> Result<bool> {
        let injected = self.inject.contains(&step);
        if loss.is_finite() && grad_norm.is_finite() && !injected {
            self.streak = 0;
            return Ok(false);
        }
        if self.streak == 0 {
            self.first_bad = step;
        }
        self.streak += 1;
        self.skipped += 1;
        let what = if injected { "injected NaN".to_string() } else { format!("loss {loss}, gradient norm {grad_norm}") };
        eprintln!("warning: step {}: {what}; step skipped (no update) [{} of at most {} in a row]", step + 1, self.streak, self.limit);
        if self.streak >= self.limit {
            return Err(anyhow::anyhow!(
                "the loss was NaN or infinite for {} steps in a row (steps {}..={}); stopped without saving, the last checkpoint is intact (try a lower --lr, or --max-nan-steps)",
                self.streak,
                self.first_bad + 1,
                step + 1
            ));
        }
        Ok(true)
    }

    /// In a run of bad steps: periodic saves wait until a good step, so a
    /// model on its way to diverging does not replace the last good
    /// checkpoint (the final save and the save on a signal still happen:
    /// skipped steps changed no weight).
    pub fn in_streak(&self) -> bool {
        self.streak > 0
    }
}

/// Test hook: `EOSTOK_TEST_NAN_STEPS=3,4` treats the loss of those (0-based)
/// steps as NaN, to exercise the guard deterministically.
fn injected_nan_steps() -> Vec<u64> {
    std::env::var("EOSTOK_TEST_NAN_STEPS").map(|v| v.split(',').filter_map(|s| s.trim().parse().ok()).collect()).unwrap_or_default()
}

/// The staging directory `fit` writes a checkpoint into before committing it.
pub fn staging_dir(out: &Path) -> PathBuf {
    out.join(format!(".staging-{}", std::process::id()))
}

/// A failed save (disk full, permissions): remove this process's staging
/// directory and say that the previous checkpoint is kept.
pub fn save_failed(out: &Path, err: anyhow::Error) -> anyhow::Error {
    let _ = std::fs::remove_dir_all(staging_dir(out));
    err.context(format!("{}: saving the checkpoint failed; the previous checkpoint there is kept", out.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guard_skips_then_stops() {
        let mut g = NanGuard::new(3);
        assert!(!g.skip(0, 1.0, 1.0).unwrap());
        assert!(g.skip(1, f64::NAN, 1.0).unwrap());
        assert!(g.in_streak());
        assert!(!g.skip(2, 1.0, 1.0).unwrap(), "a good step ends the streak");
        assert!(!g.in_streak());
        assert!(g.skip(3, 1.0, f64::INFINITY).unwrap());
        assert!(g.skip(4, f64::NEG_INFINITY, 1.0).unwrap());
        let e = g.skip(5, f64::NAN, f64::NAN).unwrap_err().to_string();
        assert!(e.contains("3 steps in a row") && e.contains("steps 4..=6"), "{e}");
        assert_eq!(g.skipped, 4);
    }
}

//! Fuzzing eostok's parsers of untrusted files on stable Rust: an in-process,
//! structure-aware mutator (no compiler instrumentation needed) with
//! `catch_unwind` for panics, run out of process by the driver (`main.rs`)
//! so aborts, allocation failures under an address-space limit and hangs are
//! caught too.
//!
//! Two targets, one per parser:
//! - [`targets::gguf`]: the runtime's GGUF reader, then everything built on
//!   it (metadata getters, `--info`, the model loader, a two-token generation
//!   when a mutated file still loads);
//! - [`targets::checkpoint`]: a checkpoint directory's `config.json`,
//!   `model.safetensors` and `state.json`, packed into one input by
//!   [`container`].
//!
//! The crashes found are kept as regression inputs under `fuzz/regressions/`
//! and replayed by `tests/regressions.rs` on every `cargo test`.

pub mod container;
pub mod mutate;
pub mod targets;

use std::path::{Path, PathBuf};

/// A fuzz target: runs one input, returns a coarse signature of what
/// happened (the kind of error, or how far it got) used as feedback:
/// an input that produces a new signature joins the corpus.
pub type Target = fn(&[u8]) -> String;

/// The target named `name` and its mutator.
pub fn target(name: &str) -> Option<(Target, mutate::Mutator)> {
    match name {
        "gguf" => Some((targets::gguf as Target, mutate::Mutator::Gguf)),
        "checkpoint" => Some((targets::checkpoint as Target, mutate::Mutator::Checkpoint)),
        _ => None,
    }
}

pub const TARGETS: &[&str] = &["gguf", "checkpoint"];

/// `fuzz/regressions/<target>`: committed inputs that once crashed.
pub fn regressions_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("regressions").join(target)
}

/// Files of `dir` (not recursive, hidden files skipped), sorted.
pub fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|it| it.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.is_file() && !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.'))).collect())
        .unwrap_or_default();
    v.sort();
    v
}

/// Runs `target` on `input` catching a panic: `Err(message)` if it panicked.
pub fn run_caught(target: Target, input: &[u8]) -> Result<String, String> {
    std::panic::catch_unwind(|| target(input)).map_err(|p| {
        p.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| p.downcast_ref::<String>().cloned()).unwrap_or_else(|| "panic".into())
    })
}

/// FNV-1a, for naming corpus and crash files by content.
pub fn fnv64(bytes: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h
}

/// Keep an error message's shape, drop its numbers and quoted names, so
/// "tensor \"a\" at byte 12" and "tensor \"b\" at byte 40" are one signature.
pub fn shape_of(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len().min(120));
    let mut in_quote = false;
    let mut last_digit = false;
    for c in msg.chars() {
        if c == '"' || c == '\'' || c == '`' {
            in_quote = !in_quote;
            if in_quote {
                out.push('S');
            }
            continue;
        }
        if in_quote {
            continue;
        }
        if c.is_ascii_digit() {
            if !last_digit {
                out.push('N');
            }
            last_digit = true;
            continue;
        }
        last_digit = false;
        out.push(c);
        if out.len() >= 120 {
            break;
        }
    }
    out
}

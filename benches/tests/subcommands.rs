//! Every `eostok-bench` subcommand through the real binary on the smallest shapes (`tiny`,
//! a few tokens, one round), in a scratch directory (the benchmark files go to its
//! `bench-data/`): each exits 0 and prints its table. Timings are not checked (benchmarks
//! are not timed tests). `vs-llama` runs without llama.cpp and must say so; `train` runs
//! without PyTorch (`--no-torch`); `precision` has its own test file.

use std::path::{Path, PathBuf};
use std::process::Command;

fn scratch() -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("subcommands-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Runs `eostok-bench ARGS` in `dir`; returns stdout + stderr after asserting exit 0.
fn run(dir: &Path, args: &[&str]) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_eostok-bench")).args(args).current_dir(dir).env_remove("LLAMA_BENCH").output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "eostok-bench {args:?} failed: {text}");
    text
}

#[test]
fn every_subcommand_runs_on_tiny_shapes() {
    let dir = scratch();
    let d = dir.as_path();
    // (arguments, a header word its table must print)
    let cases: [(&[&str], &str); 9] = [
        (&["forward", "--config", "tiny", "--batch", "2", "--reps", "1"], "decoder"),
        (&["roofline", "--threads", "1", "--sizes-mib", "16", "--reps", "1"], "FMA"),
        (&["kernels", "--configs", "tiny", "--types", "f16,q8_0,q4_0", "--threads", "1", "--reps", "1", "--cycle-mib", "1"], "dec.ffn_up"),
        (&["decode", "--config", "tiny", "--type", "q4_0", "--threads", "1", "--tokens", "4", "--rounds", "1"], "tokens/s"),
        (&["image", "--configs", "tiny", "--types", "q8_0", "--batches", "1", "--threads", "1"], "images/s"),
        (&["memory", "--configs", "tiny", "--types", "q8_0", "--threads", "1"], "private"),
        (&["vs-llama", "--configs", "tiny", "--types", "q8_0", "--threads", "1", "--tokens", "4", "--rounds", "1"], "ours/candle"),
        (&["vs-candle", "--configs", "tiny", "--types", "q8_0", "--threads", "1", "--tokens", "4", "--rounds", "1"], "ours/candle"),
        (
            &["train", "--configs", "tiny", "--batch", "2", "--steps", "1", "--warmup", "0", "--rounds", "1", "--threads", "1", "--no-torch", "--no-unfused", "--no-modes"],
            "steps/s",
        ),
    ];
    for (args, word) in cases {
        let out = run(d, args);
        assert!(out.contains(word), "eostok-bench {args:?}: no '{word}' in its output:\n{out}");
        if args[0] == "vs-llama" {
            assert!(out.contains("llama.cpp is ABSENT"), "vs-llama must say that llama.cpp is absent:\n{out}");
        }
    }
    std::fs::remove_dir_all(d).ok();
}

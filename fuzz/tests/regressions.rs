//! The regression corpus: every input under `fuzz/regressions/<target>/`
//! (one per outcome the fuzzer reached, and every crash it ever found) runs
//! through its target without a panic. Aborts and unbounded allocations are
//! covered by `runtime/tests/cli.rs::info_over_the_fuzz_corpus_under_1_gib`
//! and by `scripts/fuzz`.

use eostok_fuzz::{files_in, regressions_dir, run_caught, target, TARGETS};

#[test]
fn every_committed_input_runs_without_a_panic() {
    std::panic::set_hook(Box::new(|_| {}));
    for name in TARGETS {
        let (t, _) = target(name).unwrap();
        let files = files_in(&regressions_dir(name));
        assert!(files.len() >= 10, "{name}: only {} regression inputs", files.len());
        for f in files {
            let bytes = std::fs::read(&f).unwrap();
            if let Err(msg) = run_caught(t, &bytes) {
                panic!("{}: panicked: {msg}", f.display());
            }
        }
    }
}

/// The mutators themselves never panic (they run millions of times per fuzz run).
#[test]
fn mutators_are_total() {
    use eostok_fuzz::mutate::{Mutator, Rng};
    let mut rng = Rng(7);
    for name in TARGETS {
        let (_, m) = target(name).unwrap();
        let files = files_in(&regressions_dir(name));
        let inputs: Vec<Vec<u8>> = files.iter().take(20).map(|f| std::fs::read(f).unwrap()).chain([vec![], vec![0xff; 9], b"EKCP\xff\xff\xff\xff".to_vec()]).collect();
        for i in 0..2000 {
            let input = &inputs[i % inputs.len()];
            let other = inputs[(i * 7) % inputs.len()].as_slice();
            let out = m.mutate(&mut rng, input, &[other]);
            let _ = matches!(m, Mutator::Gguf) && out.len() > 1 << 30;
        }
    }
}

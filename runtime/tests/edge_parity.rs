//! Cross-ISA end to end (`scripts/cross-aarch64 test`): the bundled model, sampled with the
//! same seeds by the aarch64 binary under qemu, must give exactly the token ids of the
//! native x86_64 run, and PNGs equal byte for byte or, failing that, every 8-bit channel
//! within [`PIXEL_TOL`] (see docs/edge.md for why bit equality is not promised).
//!
//! Runs only when `EOSTOK_EDGE_REFERENCE` names a directory holding `ref-N.json` /
//! `ref-N.png` (`eostok-run --class sneaker --seed N --tokens-out ref-N.json -o ref-N.png`
//! on the other machine); the script checks that it ran (the `checked-CPU` file).

use std::path::Path;
use std::process::Command;

const SEEDS: [u64; 3] = [1, 2, 3];
/// Largest allowed difference of one 8-bit channel when the PNG bytes differ.
const PIXEL_TOL: i32 = 2;

/// The binary, through `EOSTOK_TEST_RUNNER` (qemu-aarch64) when set.
fn command(exe: &str) -> Command {
    match std::env::var("EOSTOK_TEST_RUNNER") {
        Ok(runner) if !runner.trim().is_empty() => {
            let mut words = runner.split_whitespace();
            let mut c = Command::new(words.next().unwrap());
            c.args(words).arg(exe);
            c
        }
        _ => Command::new(exe),
    }
}

fn tokens(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn same_tokens_and_pixels_as_the_reference_machine() {
    let Some(dir) = std::env::var_os("EOSTOK_EDGE_REFERENCE") else {
        eprintln!("skipped: set EOSTOK_EDGE_REFERENCE (scripts/cross-aarch64 test does)");
        return;
    };
    let dir = Path::new(&dir);
    let cpu = std::env::var("QEMU_CPU").unwrap_or_else(|_| "native".into());
    let mut report = Vec::new();
    for seed in SEEDS {
        let (ref_json, ref_png) = (
            dir.join(format!("ref-{seed}.json")),
            dir.join(format!("ref-{seed}.png")),
        );
        let (got_json, got_png) = (
            dir.join(format!("got-{seed}.json")),
            dir.join(format!("got-{seed}.png")),
        );
        let out = command(env!("CARGO_BIN_EXE_eostok-run"))
            .args(["--class", "sneaker", "--seed", &seed.to_string()])
            .arg("--tokens-out")
            .arg(&got_json)
            .arg("-o")
            .arg(&got_png)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "seed {seed}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            tokens(&got_json),
            tokens(&ref_json),
            "seed {seed}: token ids differ from the reference machine's"
        );

        let (a, b) = (
            std::fs::read(&got_png).unwrap(),
            std::fs::read(&ref_png).unwrap(),
        );
        if a == b {
            report.push(format!("seed {seed}: tokens equal, PNG bytes identical"));
            continue;
        }
        let (ia, ib) = (
            image::load_from_memory(&a).unwrap().to_rgb8(),
            image::load_from_memory(&b).unwrap().to_rgb8(),
        );
        assert_eq!(ia.dimensions(), ib.dimensions(), "seed {seed}: image size");
        let diffs: Vec<i32> = ia
            .as_raw()
            .iter()
            .zip(ib.as_raw())
            .map(|(&x, &y)| (x as i32 - y as i32).abs())
            .collect();
        let worst = diffs.iter().copied().max().unwrap_or(0);
        let changed = diffs.iter().filter(|&&d| d != 0).count();
        assert!(
            worst <= PIXEL_TOL,
            "seed {seed}: a channel differs by {worst} (> {PIXEL_TOL}); {changed} of {} differ",
            diffs.len()
        );
        report.push(format!("seed {seed}: tokens equal, PNG bytes differ: {changed} of {} channels, at most {worst}", diffs.len()));
    }
    let text = format!("-cpu {cpu}: {}\n", report.join("; "));
    print!("{text}");
    std::fs::write(dir.join(format!("checked-{cpu}")), text).unwrap();
}

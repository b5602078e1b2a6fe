//! eostok-run through the real binary: PNG files decoded back, seeds,
//! prefixes, progressive output, token files, bad input.

use std::path::Path;
use std::process::{Command, Output};

fn run(args: &[&str]) -> Output {
    command(env!("CARGO_BIN_EXE_eostok-run")).args(args).output().unwrap()
}

/// The binary, through `EOSTOK_TEST_RUNNER` when set: under qemu-user
/// (`scripts/cross-aarch64`) a child aarch64 binary needs the emulator too.
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

fn ok(o: &Output) {
    assert!(o.status.success(), "stderr: {}", String::from_utf8_lossy(&o.stderr));
}

fn bad(o: &Output, needle: &str) {
    assert_eq!(o.status.code(), Some(2), "stderr: {}", String::from_utf8_lossy(&o.stderr));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(needle), "'{needle}' not in: {err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(!err.contains("panicked"), "{err}");
}

fn png_size(p: &Path) -> (u32, u32) {
    let img = image::open(p).unwrap();
    (img.width(), img.height())
}

/// The bundled model written out as a file, so the file path is tested too.
fn model_file(dir: &Path) -> String {
    let out = dir.join("model.gguf");
    std::fs::copy(Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/default.gguf"), &out).unwrap();
    out.to_string_lossy().into_owned()
}

#[test]
fn same_seed_same_png_other_seed_other_png() {
    let d = tempfile::tempdir().unwrap();
    let p = |n: &str| d.path().join(n).to_string_lossy().into_owned();
    let m = model_file(d.path());
    ok(&run(&[&m, "--class", "3", "--seed", "7", "-o", &p("a.png")]));
    ok(&run(&[&m, "--class", "3", "--seed", "7", "-o", &p("b.png")]));
    ok(&run(&["--class", "3", "--seed", "8", "-o", &p("c.png")])); // bundled model
    let (a, b, c) = (std::fs::read(p("a.png")).unwrap(), std::fs::read(p("b.png")).unwrap(), std::fs::read(p("c.png")).unwrap());
    assert_eq!(a, b, "same seed must give identical bytes");
    assert_ne!(image::load_from_memory(&a).unwrap().to_rgb8().into_raw(), image::load_from_memory(&c).unwrap().to_rgb8().into_raw(), "another seed should give another image");
    assert_eq!(png_size(Path::new(&p("a.png"))), (32, 32));
}

#[test]
fn batches_prefixes_and_progressive_output() {
    let d = tempfile::tempdir().unwrap();
    let p = |n: &str| d.path().join(n).to_string_lossy().into_owned();
    let m = model_file(d.path());
    // 4 images -> a 2x2 grid with 2 px gaps.
    ok(&run(&[&m, "-n", "4", "-o", &p("grid.png")]));
    assert_eq!(png_size(Path::new(&p("grid.png"))), (66, 66));
    // --tokens 4 decodes a prefix; --progressive writes K = 1, 2, 4, 8, 16.
    let o = run(&[&m, "--tokens", "4", "--progressive", "-o", &p("x.png")]);
    ok(&o);
    let listed: Vec<String> = String::from_utf8_lossy(&o.stdout).lines().map(str::to_string).collect();
    assert_eq!(listed.len(), 6, "{listed:?}");
    for k in ["001", "002", "004", "008", "016"] {
        let f = p(&format!("x-k{k}.png"));
        assert_eq!(png_size(Path::new(&f)), (32, 32), "{f}");
    }
    // Prefix images differ from each other (coarse to fine).
    let a = image::open(p("x-k001.png")).unwrap().to_rgb8().into_raw();
    let b = image::open(p("x-k016.png")).unwrap().to_rgb8().into_raw();
    assert_ne!(a, b);
}

#[test]
fn tokens_out_then_from_tokens_reproduces_the_image() {
    let d = tempfile::tempdir().unwrap();
    let p = |n: &str| d.path().join(n).to_string_lossy().into_owned();
    let m = model_file(d.path());
    ok(&run(&[&m, "--seed", "3", "-n", "2", "--tokens-out", &p("t.json"), "-o", &p("a.png")]));
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(p("t.json")).unwrap()).unwrap();
    assert_eq!(v["tokens"].as_array().unwrap().len(), 2);
    assert_eq!(v["tokens"][0].as_array().unwrap().len(), 16);
    ok(&run(&[&m, "--from-tokens", &p("t.json"), "-o", &p("b.png")]));
    assert_eq!(std::fs::read(p("a.png")).unwrap(), std::fs::read(p("b.png")).unwrap());
    // Greedy is deterministic whatever the seed.
    ok(&run(&[&m, "--temperature", "0", "--seed", "1", "-o", &p("g1.png")]));
    ok(&run(&[&m, "--temperature", "0", "--seed", "2", "-o", &p("g2.png")]));
    assert_eq!(std::fs::read(p("g1.png")).unwrap(), std::fs::read(p("g2.png")).unwrap());
}

#[test]
fn info_names_kernels_and_tensors() {
    let o = run(&["--info"]);
    ok(&o);
    let s = String::from_utf8_lossy(&o.stdout);
    for needle in ["general.architecture", "eostok.class_names", "dec.pixel_out.weight", "cpu features", "q4_0"] {
        assert!(s.contains(needle), "{needle} missing from --info");
    }
}

#[test]
fn bad_input_is_one_line_and_exit_2() {
    let d = tempfile::tempdir().unwrap();
    let p = |n: &str| d.path().join(n).to_string_lossy().into_owned();
    let m = model_file(d.path());
    bad(&run(&[&m, "--class", "sneakr", "-o", &p("a.png")]), "unknown class");
    bad(&run(&[&m, "--class", "99", "-o", &p("a.png")]), "outside");
    bad(&run(&[&m, "--tokens", "0", "-o", &p("a.png")]), "--tokens");
    bad(&run(&[&m, "--tokens", "17", "-o", &p("a.png")]), "--tokens");
    bad(&run(&[&m, "-o", d.path().to_str().unwrap()]), "is a directory");
    bad(&run(&[&m, "-o", &p("no/such/dir/a.png")]), "does not exist");
    bad(&run(&[&m, "-n", "0", "-o", &p("a.png")]), "--num-images");
    bad(&run(&[&p("missing.gguf"), "-o", &p("a.png")]), "missing.gguf");
    // A truncated model file.
    let bytes = std::fs::read(&m).unwrap();
    std::fs::write(p("cut.gguf"), &bytes[..bytes.len() / 3]).unwrap();
    bad(&run(&[&p("cut.gguf"), "-o", &p("a.png")]), "cut.gguf");
    // A token file with an id outside the codebook.
    std::fs::write(p("t.json"), r#"{"tokens": [[1, 2, 99999]]}"#).unwrap();
    bad(&run(&[&m, "--from-tokens", &p("t.json"), "-o", &p("a.png")]), "code id");
    assert!(!Path::new(&p("a.png")).exists(), "no image is written on bad input");
}

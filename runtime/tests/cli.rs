//! eostok-run through the real binary: PNG files decoded back, seeds,
//! prefixes, progressive output, token files, the file's recommended
//! sampling, bad input.

mod common;

use common::gguf_writer::GgufWriter;
use eostok_runtime::gguf::{GgufFile, Value};
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

fn bundled_path() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/default.gguf")
}

/// The bundled model written out as a file, so the file path is tested too.
fn model_file(dir: &Path) -> String {
    let out = dir.join("model.gguf");
    std::fs::copy(bundled_path(), &out).unwrap();
    out.to_string_lossy().into_owned()
}

/// The bundled model rewritten as `dir/name` with the same tensors and its
/// metadata passed through `edit` (None drops a key), then `extra` appended.
fn rewritten(dir: &Path, name: &str, edit: impl Fn(&str, &Value) -> Option<Value>, extra: &[(&str, Value)]) -> String {
    let src = GgufFile::open(bundled_path()).unwrap();
    let mut w = GgufWriter::new();
    for (k, v) in src.metadata().iter() {
        if let Some(v) = edit(k, v) {
            w = w.kv(k, v);
        }
    }
    for (k, v) in extra {
        w = w.kv(k, v.clone());
    }
    for t in src.tensors() {
        w = w.tensor(&t.name, &t.dims, t.ggml_type, src.tensor(&t.name).unwrap().data.to_vec());
    }
    let out = dir.join(name);
    std::fs::write(&out, w.build().bytes).unwrap();
    out.to_string_lossy().into_owned()
}

const RECOMMENDED: &str = "eostok.sampling.";

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
    // --tokens 4 decodes a prefix; --progressive writes K = 1, 2, 4, 8, 16, 32.
    let o = run(&[&m, "--tokens", "4", "--progressive", "-o", &p("x.png")]);
    ok(&o);
    let listed: Vec<String> = String::from_utf8_lossy(&o.stdout).lines().map(str::to_string).collect();
    assert_eq!(listed.len(), 7, "{listed:?}");
    for k in ["001", "002", "004", "008", "016", "032"] {
        let f = p(&format!("x-k{k}.png"));
        assert_eq!(png_size(Path::new(&f)), (32, 32), "{f}");
    }
    // Prefix images differ from each other (coarse to fine).
    let a = image::open(p("x-k001.png")).unwrap().to_rgb8().into_raw();
    let b = image::open(p("x-k032.png")).unwrap().to_rgb8().into_raw();
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
    assert_eq!(v["tokens"][0].as_array().unwrap().len(), 32);
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
    for needle in ["general.architecture", "eostok.class_names", "dec.pixel_out.weight", "cpu features", "q4_0", "recommended sampling: cfg 1.5"] {
        assert!(s.contains(needle), "{needle} missing from --info");
    }
}

/// The bundled model recommends cfg 1.5 (`eostok.sampling.cfg_scale`): with
/// no flag it samples exactly as with `--cfg 1.5` and says so on stderr; a
/// flag overrides it; without the key the default is cfg 1.
#[test]
fn recommended_sampling_is_the_default_and_a_flag_overrides_it() {
    let d = tempfile::tempdir().unwrap();
    let p = |n: &str| d.path().join(n).to_string_lossy().into_owned();
    let m = model_file(d.path());
    let sample = |model: &str, flags: &[&str], out: &str| -> (Vec<u8>, String) {
        let mut args = vec![model, "--class", "7", "--seed", "3", "-n", "2", "-o", out];
        args.extend_from_slice(flags);
        let o = run(&args);
        ok(&o);
        (std::fs::read(out).unwrap(), String::from_utf8_lossy(&o.stderr).into_owned())
    };
    let (from_file, note) = sample(&m, &[], &p("file.png"));
    assert!(note.contains("recommended cfg 1.5") && note.contains("flags override"), "{note}");
    let (explicit, note) = sample(&m, &["--cfg", "1.5"], &p("explicit.png"));
    assert!(!note.contains("recommended"), "{note}");
    assert_eq!(from_file, explicit, "no flag = the file's cfg 1.5");
    let (unguided, _) = sample(&m, &["--cfg", "1"], &p("unguided.png"));
    let pixels = |png: &[u8]| image::load_from_memory(png).unwrap().to_rgb8().into_raw();
    assert_ne!(pixels(&from_file), pixels(&unguided), "--cfg 1 must override the file's 1.5");
    // Other flags leave the file's cfg in place, and are not reported as from the file.
    let (mixed, note) = sample(&m, &["--top-k", "0"], &p("mixed.png"));
    assert_eq!(mixed, from_file);
    assert!(note.contains("recommended cfg 1.5") && !note.contains("top-k"), "{note}");

    // The same tensors without the recommendation: cfg 1, as the flag gave above.
    let bare = rewritten(d.path(), "bare.gguf", |k, v| (!k.starts_with(RECOMMENDED)).then(|| v.clone()), &[]);
    let (plain, note) = sample(&bare, &[], &p("bare.png"));
    assert!(!note.contains("recommended"), "{note}");
    assert_eq!(pixels(&plain), pixels(&unguided));
    let o = run(&[&bare, "--info"]);
    ok(&o);
    assert!(String::from_utf8_lossy(&o.stdout).contains("recommended sampling: none"));
    // A file recommending more: all its settings used and named.
    let more = rewritten(d.path(), "more.gguf", |k, v| (!k.starts_with(RECOMMENDED)).then(|| v.clone()), &[
        ("eostok.sampling.temperature", Value::F32(0.9)),
        ("eostok.sampling.top_k", Value::U32(50)),
        ("eostok.sampling.cfg_scale", Value::F32(1.5)),
    ]);
    let (a, note) = sample(&more, &[], &p("more.png"));
    assert!(note.contains("recommended temperature 0.9, top-k 50, cfg 1.5"), "{note}");
    let (b, _) = sample(&m, &["--temperature", "0.9", "--top-k", "50"], &p("more-flags.png"));
    assert_eq!(pixels(&a), pixels(&b), "the file's 0.9 (f32) samples as --temperature 0.9");
}

/// Recommended sampling out of range or of the wrong type: exit 2, one line
/// naming the key, no image; `--info` still describes the file.
#[test]
fn hostile_recommended_sampling_is_refused_naming_the_key() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("a.png");
    for (key, value, why) in [
        ("eostok.sampling.top_p", Value::F32(0.0), "out of range (must be in (0, 1])"),
        ("eostok.sampling.top_p", Value::F32(f32::NAN), "out of range"),
        ("eostok.sampling.temperature", Value::F32(-1.0), "out of range (must be finite and >= 0)"),
        ("eostok.sampling.cfg_scale", Value::F32(f32::INFINITY), "out of range"),
        ("eostok.sampling.cfg_scale", Value::String("1.5".into()), "wrong type"),
        ("eostok.sampling.top_k", Value::I32(-1), "wrong type"),
        ("eostok.sampling.top_k", Value::U64(1 << 40), "out of range"),
    ] {
        let f = rewritten(d.path(), "hostile.gguf", |k, v| (k != key).then(|| v.clone()), &[(key, value.clone())]);
        let o = run(&[&f, "-o", out.to_str().unwrap()]);
        bad(&o, &format!("metadata key '{key}'"));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(why) && err.contains("hostile.gguf"), "{key} = {value:?}: {err}");
        // A flag for the key does not make the file acceptable: it is refused as a whole.
        bad(&run(&[&f, "--top-p", "1", "--cfg", "1", "--temperature", "1", "--top-k", "0", "-o", out.to_str().unwrap()]), key);
        let o = run(&[&f, "--info"]);
        ok(&o);
        let info = String::from_utf8_lossy(&o.stdout);
        assert!(info.contains("recommended sampling: invalid") && info.contains(key), "{info}");
    }
    assert!(!out.exists(), "no image is written on bad input");
}

#[test]
fn bad_input_is_one_line_and_exit_2() {
    let d = tempfile::tempdir().unwrap();
    let p = |n: &str| d.path().join(n).to_string_lossy().into_owned();
    let m = model_file(d.path());
    bad(&run(&[&m, "--class", "sneakr", "-o", &p("a.png")]), "unknown class");
    bad(&run(&[&m, "--class", "99", "-o", &p("a.png")]), "outside");
    bad(&run(&[&m, "--tokens", "0", "-o", &p("a.png")]), "--tokens");
    bad(&run(&[&m, "--tokens", "33", "-o", &p("a.png")]), "--tokens");
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

/// Whether the binary runs under an emulator (`EOSTOK_TEST_RUNNER`, qemu-user): qemu
/// reserves guest address space up front, so `ulimit -v` limits cannot apply there.
fn emulated() -> bool {
    std::env::var("EOSTOK_TEST_RUNNER").map(|r| !r.trim().is_empty()).unwrap_or(false)
}

/// Runs eostok-run under `sh` with an address-space limit (KiB); under an emulator, through
/// the runner without the limit.
fn run_limited(kib: u64, args: &[&str]) -> Output {
    if emulated() {
        return command(env!("CARGO_BIN_EXE_eostok-run")).args(args).output().unwrap();
    }
    let mut script = format!("ulimit -v {kib} && exec \"$0\"");
    for i in 1..=args.len() {
        script.push_str(&format!(" \"${i}\""));
    }
    Command::new("sh").arg("-c").arg(script).arg(env!("CARGO_BIN_EXE_eostok-run")).args(args).output().unwrap()
}

#[test]
fn more_bad_input_is_one_line_and_exit_2() {
    let d = tempfile::tempdir().unwrap();
    let p = |n: &str| d.path().join(n).to_string_lossy().into_owned();
    let m = model_file(d.path());
    bad(&run(&[&m, "-n", "5000", "-o", &p("a.png")]), "--num-images");
    bad(&run(&[&m, "--class=-1", "-o", &p("a.png")]), "unknown class");
    bad(&run(&[&m, "--class", "18446744073709551616", "-o", &p("a.png")]), "class");
    bad(&run(&[&m, "--threads", "0", "-o", &p("a.png")]), "--threads");
    bad(&run(&[&m, "--top-p", "0", "-o", &p("a.png")]), "--top-p");
    // Output in a place nothing can be created (even as root): found before sampling.
    bad(&run(&[&m, "-o", "/proc/eostok-out.png"]), "cannot write there");
    bad(&run(&[&m, "-o", &p("a.png"), "--tokens-out", "/proc/t.json"]), "cannot write there");
    // A file where the output's directory should be.
    std::fs::write(p("file"), b"x").unwrap();
    bad(&run(&[&m, "-o", &p("file/a.png")]), "does not exist");
    bad(&run(&[&m, "--from-tokens", &p("none.json"), "-o", &p("a.png")]), "none.json");
    std::fs::write(p("t.json"), "{").unwrap();
    bad(&run(&[&m, "--from-tokens", &p("t.json"), "-o", &p("a.png")]), "t.json");
    // Not a GGUF at all, and an empty file.
    std::fs::write(p("x.gguf"), "hello, not a model").unwrap();
    bad(&run(&[&p("x.gguf"), "-o", &p("a.png")]), "not a GGUF file");
    std::fs::write(p("empty.gguf"), b"").unwrap();
    bad(&run(&[&p("empty.gguf"), "-o", &p("a.png")]), "empty.gguf");
    bad(&run(&[d.path().to_str().unwrap(), "-o", &p("a.png")]), "cannot read");
    assert!(!Path::new(&p("a.png")).exists(), "no image is written on bad input");
}

/// A batch bigger than the memory there is: refused from the computed need,
/// before allocating (here the limit is an address-space limit, `ulimit -v`).
#[test]
fn num_images_beyond_memory_is_refused_up_front() {
    if emulated() {
        eprintln!("skipped under an emulator: the test's memory limit is `ulimit -v`, which qemu-user cannot run under");
        return;
    }
    if cfg!(feature = "cuda") {
        // Measured with scripts/check-cuda: exit 127, "libcublasLt.so.13: failed to map segment".
        eprintln!("skipped in a CUDA build: the CUDA libraries it loads at start do not fit the test's 400 MB `ulimit -v` (the check is the CPU path's; the default build runs it)");
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("a.png");
    let o = run_limited(400_000, &["-n", "4096", "-o", out.to_str().unwrap()]);
    bad(&o, "MiB available");
    // The same limit is plenty for one image.
    let o = run_limited(400_000, &["-n", "1", "-o", out.to_str().unwrap()]);
    ok(&o);
}

/// `--info` over every committed fuzz input (and the seeds' hostile
/// variants below) under a 1 GiB address-space limit: exit 0 or 2, never an
/// abort, a panic or an allocation failure.
#[test]
fn info_over_the_fuzz_corpus_under_1_gib() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/regressions/gguf");
    let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(&dir).map(|it| it.filter_map(|e| e.ok().map(|e| e.path())).collect()).unwrap_or_default();
    // Hand-made worst cases: huge counts and lengths in a small file.
    let t = tempfile::tempdir().unwrap();
    let mut hostile = b"GGUF\x03\0\0\0".to_vec();
    hostile.extend_from_slice(&u64::MAX.to_le_bytes());
    hostile.extend_from_slice(&u64::MAX.to_le_bytes());
    std::fs::write(t.path().join("counts.gguf"), &hostile).unwrap();
    // One key whose u8 array claims the whole file: it is printed as a count, not in full.
    let mut big = b"GGUF\x03\0\0\0".to_vec();
    big.extend_from_slice(&0u64.to_le_bytes());
    big.extend_from_slice(&1u64.to_le_bytes());
    big.extend_from_slice(&1u64.to_le_bytes());
    big.push(b'k');
    big.extend_from_slice(&9u32.to_le_bytes());
    big.extend_from_slice(&0u32.to_le_bytes());
    let n = 16u64 << 20;
    big.extend_from_slice(&n.to_le_bytes());
    big.resize(big.len() + n as usize, 7);
    std::fs::write(t.path().join("big-array.gguf"), &big).unwrap();
    drop(big);
    files.push(t.path().join("counts.gguf"));
    files.push(t.path().join("big-array.gguf"));
    assert!(files.len() >= 3, "no fuzz regressions found in {}", dir.display());
    for f in &files {
        let o = run_limited(1 << 20, &[f.to_str().unwrap(), "--info"]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(matches!(o.status.code(), Some(0) | Some(2)), "{}: {:?} {err}", f.display(), o.status);
        assert!(!err.contains("panicked") && !err.contains("internal error") && !err.contains("memory allocation"), "{}: {err}", f.display());
        assert!(o.stdout.len() < 1 << 20, "{}: --info printed {} bytes", f.display(), o.stdout.len());
    }
}

/// `--device`: cpu is the default path; a GPU backend this build lacks is
/// refused before any work (exit 2, one line, naming the feature to rebuild with).
#[test]
fn device_flag_cpu_and_missing_backends() {
    let d = tempfile::tempdir().unwrap();
    let p = |n: &str| d.path().join(n).to_string_lossy().into_owned();
    let m = model_file(d.path());
    ok(&run(&[&m, "--seed", "4", "-o", &p("a.png")]));
    ok(&run(&[&m, "--seed", "4", "--device", "cpu", "-o", &p("b.png")]));
    assert_eq!(std::fs::read(p("a.png")).unwrap(), std::fs::read(p("b.png")).unwrap(), "--device cpu is the default path");
    if !cfg!(feature = "cuda") {
        bad(&run(&[&m, "--device", "cuda:0", "-o", &p("c.png")]), "built without the `cuda` feature; rebuild with --features cuda");
        bad(&run(&[&m, "--device", "cuda", "-o", &p("c.png")]), "-p eostok-runtime --features cuda");
    }
    if !cfg!(feature = "metal") {
        bad(&run(&[&m, "--device", "metal:1", "-o", &p("c.png")]), "built without the `metal` feature");
    }
    bad(&run(&[&m, "--device", "tpu", "-o", &p("c.png")]), "expected cpu, cuda:N");
    bad(&run(&[&m, "--device", "cuda:x", "-o", &p("c.png")]), "non-negative integer");
    assert!(!Path::new(&p("c.png")).exists(), "no image is written on bad input");
}

/// A `--features cuda` build: on a GPU, `--device cuda:0` samples
/// deterministically and decodes the CPU path's tokens (`--from-tokens`) to
/// the CPU path's image within a few 8-bit levels; without a GPU (or with
/// `scripts/check-cuda`'s driver stub) opening the device is exit 2.
#[cfg(feature = "cuda")]
#[test]
fn cuda_device_writes_the_cpu_paths_image() {
    let d = tempfile::tempdir().unwrap();
    let p = |n: &str| d.path().join(n).to_string_lossy().into_owned();
    let m = model_file(d.path());
    if !eostok_models::device::cuda_available() {
        bad(&run(&[&m, "--device", "cuda:0", "-o", &p("g.png")]), "cannot open the CUDA device");
        eprintln!("skipped the GPU part: no CUDA device could be opened (this test needs a GPU and its driver)");
        return;
    }
    ok(&run(&[&m, "-n", "3", "--seed", "5", "--tokens-out", &p("t.json"), "-o", &p("cpu.png")]));
    ok(&run(&[&m, "--device", "cuda:0", "--from-tokens", &p("t.json"), "-o", &p("gpu.png")]));
    let (a, b) = (image::open(p("cpu.png")).unwrap().to_rgb8(), image::open(p("gpu.png")).unwrap().to_rgb8());
    assert_eq!(a.dimensions(), b.dimensions());
    let worst = a.as_raw().iter().zip(b.as_raw()).map(|(x, y)| x.abs_diff(*y)).max().unwrap();
    // The bundled model is q8_0: the CPU path also rounds activations to q8, the GPU path does not.
    assert!(worst <= 8, "GPU and CPU images of the same tokens differ by {worst} levels");
    ok(&run(&[&m, "--device", "cuda:0", "--seed", "5", "-n", "2", "--progressive", "--tokens-out", &p("g1.json"), "-o", &p("g1.png")]));
    ok(&run(&[&m, "--device", "cuda:0", "--seed", "5", "-n", "2", "--tokens-out", &p("g2.json"), "-o", &p("g2.png")]));
    assert_eq!(std::fs::read(p("g1.json")).unwrap(), std::fs::read(p("g2.json")).unwrap(), "same seed, same GPU tokens");
    assert!(Path::new(&p("g1-k001.png")).exists() && Path::new(&p("g1-k032.png")).exists());
}

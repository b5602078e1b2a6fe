//! eostok-quantize on bad output paths: found before any work, one line, exit 2.

mod common;
use common::*;
use eostok_models::Config;

fn bad(o: &std::process::Output, needle: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "stderr: {err}");
    assert!(err.contains(needle), "'{needle}' not in: {err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn unwritable_and_missing_output_directories_are_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let ck = make_checkpoint(dir.path(), &Config::preset("tiny").unwrap(), 1);
    // Nothing can be created in /proc, even as root.
    bad(&quantize(&ck, std::path::Path::new("/proc/eostok.gguf"), "q8_0", &[]), "cannot write there");
    bad(&quantize(&ck, &dir.path().join("no/such/dir/m.gguf"), "q8_0", &[]), "does not exist");
    std::fs::write(dir.path().join("file"), b"x").unwrap();
    bad(&quantize(&ck, &dir.path().join("file/m.gguf"), "q8_0", &[]), "does not exist");
    // A GGUF source that is not one.
    std::fs::write(dir.path().join("x.gguf"), b"hello, not a model").unwrap();
    bad(&quantize(&dir.path().join("x.gguf"), &dir.path().join("m.gguf"), "q8_0", &[]), "not a GGUF file");
}

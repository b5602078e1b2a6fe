//! Interop: the reference Python reader (PyPI `gguf`, gguf-py) opens every
//! file we write, sees the same names, shapes, types and metadata, and its
//! dequantization matches ours to 1e-6.
//!
//! Needs a Python with `gguf` and `numpy`: `$EOSTOK_PYTHON`, else the
//! repository's `.venv/bin/python` (made by `.ci/run`). Without one the test
//! says so and passes — except under CI (`CI` set), where it fails.

mod common;
use common::*;
use eostok_models::Config;
use eostok_runtime::gguf::{GgufFile, Value};
use eostok_runtime::quant::dequantize_row;
use std::path::{Path, PathBuf};
use std::process::Command;

fn python() -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let candidates = [std::env::var_os("EOSTOK_PYTHON").map(PathBuf::from), Some(root.join(".venv/bin/python"))];
    for p in candidates.into_iter().flatten() {
        if Command::new(&p).args(["-c", "import gguf, numpy"]).output().map(|o| o.status.success()).unwrap_or(false) {
            return Some(p);
        }
    }
    if std::env::var_os("CI").is_some() {
        panic!("gguf-py is not installed: .ci/run should have created .venv with `gguf`");
    }
    eprintln!("SKIPPED: no Python with the `gguf` package (set EOSTOK_PYTHON or run .ci/run)");
    None
}

#[test]
fn gguf_py_reads_every_type() {
    let Some(py) = python() else { return };
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/interop/gguf_dump.py");
    let dir = tempfile::tempdir().unwrap();
    // Width 256 so the k-quants really appear.
    let cfg = Config::from_json(r#"{"base": "tiny", "ar": {"width": 256, "heads": 4, "ffn_hidden": 512}}"#).unwrap();
    let ck = make_checkpoint(dir.path(), &cfg, 4);
    for ty in ["f32", "f16", "q8_0", "q4_0", "q4_1", "q4_k", "q6_k", "mixed"] {
        let file = dir.path().join(format!("{ty}.gguf"));
        assert!(quantize(&ck, &file, ty, &[]).status.success());
        let dump = dir.path().join(format!("dump-{ty}"));
        let o = Command::new(&py).arg(&script).arg(&file).arg(&dump).output().unwrap();
        assert!(o.status.success(), "gguf-py failed on {ty}: {}", String::from_utf8_lossy(&o.stderr));
        let index: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dump.join("index.json")).unwrap()).unwrap();
        let ours = GgufFile::open(&file).unwrap();
        assert_eq!(index["gguf_version"], 3);
        // Metadata: every key we wrote, same value.
        let meta = index["metadata"].as_object().unwrap();
        assert_eq!(meta.len(), ours.metadata().len(), "{ty}: key count");
        for (k, v) in ours.metadata().iter() {
            let theirs = &meta[k];
            match v {
                Value::String(s) => assert_eq!(theirs.as_str(), Some(s.as_str()), "{k}"),
                Value::F32(x) => assert!((theirs.as_f64().unwrap() - *x as f64).abs() < 1e-9, "{k}"),
                Value::Array(eostok_runtime::gguf::Array::String(a)) => {
                    let t: Vec<&str> = theirs.as_array().unwrap().iter().map(|x| x.as_str().unwrap()).collect();
                    assert_eq!(t, a.iter().map(String::as_str).collect::<Vec<_>>(), "{k}");
                }
                other => assert_eq!(theirs.as_i64().map(|x| x as i128), other.as_integer(), "{k}"),
            }
        }
        // Tensors: names, shapes, types, sizes, values.
        let tensors = index["tensors"].as_array().unwrap();
        assert_eq!(tensors.len(), ours.tensors().len());
        for (t, info) in tensors.iter().zip(ours.tensors()) {
            assert_eq!(t["name"].as_str().unwrap(), info.name);
            let ne: Vec<u64> = t["ne"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).collect();
            assert_eq!(ne, info.dims, "{}", info.name);
            assert_eq!(t["type"].as_str().unwrap(), info.ggml_type.name().to_uppercase(), "{}", info.name);
            assert_eq!(t["n_bytes"].as_u64().unwrap(), info.n_bytes);
            let raw = std::fs::read(dump.join(t["file"].as_str().unwrap())).unwrap();
            let theirs: Vec<f32> = raw.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
            let mut mine = vec![0f32; theirs.len()];
            dequantize_row(info.ggml_type, ours.tensor(&info.name).unwrap().data, &mut mine).unwrap();
            let err = mine.iter().zip(&theirs).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(err <= 1e-6, "{ty} {}: gguf-py differs by {err}", info.name);
        }
    }
}

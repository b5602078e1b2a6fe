//! Bad input to eostok-quantize: a clear one-line error naming the file or
//! tensor, exit 2, and no output file (or temporary) left behind.

mod common;
use common::*;
use candle_core::{Device, Tensor};
use eostok_models::checkpoint;
use eostok_models::Config;
use std::path::Path;

fn assert_clean_failure(dir: &Path, out: &Path, o: &std::process::Output, needle: &str) {
    assert_eq!(o.status.code(), Some(2), "stderr: {}", String::from_utf8_lossy(&o.stderr));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(needle), "error should mention '{needle}': {err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(!out.exists(), "partial output left at {}", out.display());
    let stray: Vec<_> = std::fs::read_dir(dir).unwrap().filter_map(|e| e.ok()).filter(|e| e.file_name().to_string_lossy().contains(".tmp-")).collect();
    assert!(stray.is_empty(), "temporary files left: {stray:?}");
}

#[test]
fn missing_input_and_directory_output() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m.gguf");
    let o = quantize(&dir.path().join("nope"), &out, "q8_0", &[]);
    assert_clean_failure(dir.path(), &out, &o, "nope");
    // A directory without a checkpoint in it.
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let o = quantize(&empty, &out, "q8_0", &[]);
    assert_clean_failure(dir.path(), &out, &o, "config.json");
    // Output path that is a directory.
    let ck = make_checkpoint(dir.path(), &Config::preset("tiny").unwrap(), 1);
    let o = quantize(&ck, &empty, "q8_0", &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("is a directory"));
}

#[test]
fn nan_weights_and_wrong_shapes_name_the_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config::preset("tiny").unwrap();
    let ck = make_checkpoint(dir.path(), &cfg, 1);
    let out = dir.path().join("m.gguf");
    let mut w = ema_weights(&ck);
    // NaN in a tensor late in the file: the writer has already started.
    let name = "output.weight";
    let mut v = f32s(&w[name]);
    v[5] = f32::NAN;
    w.insert(name.into(), Tensor::from_vec(v, w[name].dims(), &Device::Cpu).unwrap());
    checkpoint::save_weights(&ck.join(checkpoint::EMA_FILE), &w).unwrap();
    let o = quantize(&ck, &out, "q4_0", &[]);
    assert_clean_failure(dir.path(), &out, &o, "output.weight");

    // A tensor with another shape than config.json says.
    let mut w = ema_weights(&make_checkpoint(dir.path(), &cfg, 2));
    w.insert("blk.1.ffn_up.weight".into(), Tensor::zeros((3, 64), candle_core::DType::F32, &Device::Cpu).unwrap());
    let ck2 = dir.path().join("ck-tiny-2");
    checkpoint::save_weights(&ck2.join(checkpoint::EMA_FILE), &w).unwrap();
    let o = quantize(&ck2, &out, "q8_0", &[]);
    assert_clean_failure(dir.path(), &out, &o, "blk.1.ffn_up.weight");

    // A missing tensor.
    w.remove("blk.1.ffn_up.weight");
    checkpoint::save_weights(&ck2.join(checkpoint::EMA_FILE), &w).unwrap();
    let o = quantize(&ck2, &out, "q8_0", &[]);
    assert_clean_failure(dir.path(), &out, &o, "missing");
}

#[test]
fn requantizing_down_needs_a_flag() {
    let dir = tempfile::tempdir().unwrap();
    let ck = make_checkpoint(dir.path(), &Config::preset("tiny").unwrap(), 1);
    let q4 = dir.path().join("q4.gguf");
    assert!(quantize(&ck, &q4, "q4_0", &[]).status.success());
    let out = dir.path().join("again.gguf");
    let o = quantize(&q4, &out, "q8_0", &[]);
    assert_clean_failure(dir.path(), &out, &o, "--allow-requantize");
    let o = quantize(&q4, &out, "q8_0", &["--allow-requantize"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // Same type from a GGUF: allowed, and the values survive exactly.
    let same = dir.path().join("same.gguf");
    assert!(quantize(&q4, &same, "q4_0", &[]).status.success());
    let a = eostok_runtime::gguf::GgufFile::open(&q4).unwrap();
    let b = eostok_runtime::gguf::GgufFile::open(&same).unwrap();
    for t in a.tensors() {
        assert_eq!(a.tensor(&t.name).unwrap().data, b.tensor(&t.name).unwrap().data, "{}", t.name);
    }
}

#[test]
fn known_blocks_byte_for_byte() {
    // Q8_0 of 0..31: d = 31/127 as f16, q_i = round(i / d).
    let x: Vec<f32> = (0..32).map(|i| i as f32).collect();
    let t = Tensor::from_vec(x.clone(), (1, 32), &Device::Cpu).unwrap();
    let q = candle_core::quantized::QTensor::quantize(&t, candle_core::quantized::GgmlDType::Q8_0).unwrap();
    let bytes = q.data().unwrap().to_vec();
    let d = 31f32 / 127.0;
    let mut want = half::f16::from_f32(d).to_le_bytes().to_vec();
    want.extend(x.iter().map(|v| (v / d).round() as i8 as u8));
    assert_eq!(bytes, want);
    // Q4_0 of a block whose largest magnitude is -8: d = -8 / -8 = 1, q = x + 8.
    let x: Vec<f32> = (0..32).map(|i| (i % 16) as f32 - 8.0).collect();
    let t = Tensor::from_vec(x.clone(), (1, 32), &Device::Cpu).unwrap();
    let q = candle_core::quantized::QTensor::quantize(&t, candle_core::quantized::GgmlDType::Q4_0).unwrap();
    let bytes = q.data().unwrap().to_vec();
    let mut want = half::f16::from_f32(1.0).to_le_bytes().to_vec();
    // Low nibbles hold elements 0..15, high nibbles 16..31.
    want.extend((0..16).map(|j| ((x[j] + 8.0) as u8) | (((x[j + 16] + 8.0) as u8) << 4)));
    assert_eq!(bytes, want);
}

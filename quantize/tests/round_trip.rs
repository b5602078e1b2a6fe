//! Quantize real checkpoints to every type, read the files back with
//! candle's GGUF reader and with our runtime's reader, and compare against
//! the f32 weights within each type's stated bound.

mod common;
use common::*;
use candle_core::quantized::gguf_file;
use candle_core::Device;
use eostok_models::Config;
use eostok_runtime::gguf::GgufFile;
use eostok_runtime::quant::{dequantize_row, GgmlType};
use std::collections::HashMap;

const TYPES: [&str; 7] = ["f32", "f16", "q8_0", "q4_0", "q4_1", "q4_k", "q6_k"];

fn type_name(t: GgmlType) -> &'static str {
    match t {
        GgmlType::F32 => "f32",
        GgmlType::F16 => "f16",
        GgmlType::Q8_0 => "q8_0",
        GgmlType::Q4_0 => "q4_0",
        GgmlType::Q4_1 => "q4_1",
        GgmlType::Q4_K => "q4_k",
        GgmlType::Q6_K => "q6_k",
        other => panic!("unexpected type {other:?}"),
    }
}

/// Check one file: both readers agree with each other to 1e-6 and with the
/// f32 weights within the bound of each tensor's type. Returns the types seen.
fn check_file(path: &std::path::Path, weights: &HashMap<String, candle_core::Tensor>, cfg: &Config) -> Vec<GgmlType> {
    let ours = GgufFile::open(path).unwrap();
    assert_eq!(ours.version(), 3);
    assert_eq!(ours.metadata().get_str("general.architecture").unwrap(), "eostok");
    assert_eq!(ours.metadata().get_u32("general.alignment").unwrap(), 32);
    let back = eostok_runtime::model::config_of(&ours).unwrap();
    assert_eq!(back.ar, cfg.ar);
    assert_eq!(back.decoder, cfg.decoder);
    assert_eq!(back.codebook_size, cfg.codebook_size);

    let mut file = std::fs::File::open(path).unwrap();
    let content = gguf_file::Content::read(&mut file).unwrap();
    let mut types = vec![];
    for info in ours.tensors() {
        let want = f32s(&weights[&info.name]);
        // Runtime reader + runtime dequantization.
        let view = ours.tensor(&info.name).unwrap();
        let mut mine = vec![0f32; want.len()];
        dequantize_row(info.ggml_type, view.data, &mut mine).unwrap();
        // candle's reader + candle's dequantization.
        let qt = content.tensor(&mut file, &info.name, &Device::Cpu).unwrap();
        let theirs = f32s(&qt.dequantize(&Device::Cpu).unwrap());
        let dims: Vec<usize> = qt.shape().dims().to_vec();
        assert_eq!(dims, weights[&info.name].dims(), "{}", info.name);
        let agree = mine.iter().zip(&theirs).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(agree <= 1e-6, "{}: readers disagree by {agree}", info.name);
        let (block, range, tol) = bound(type_name(info.ggml_type));
        let err = worst_block_error(&want, &mine, block, range);
        assert!(err <= tol, "{} ({}): error {err:.4} of block scale > {tol:.4}", info.name, type_name(info.ggml_type));
        types.push(info.ggml_type);
    }
    types
}

#[test]
fn every_type_round_trips_within_bounds() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config::preset("tiny").unwrap();
    let ck = make_checkpoint(dir.path(), &cfg, 1);
    let weights = ema_weights(&ck);
    let mut sizes = vec![];
    for ty in TYPES.iter().chain(["mixed"].iter()) {
        let out = dir.path().join(format!("tiny-{ty}.gguf"));
        let o = quantize(&ck, &out, ty, &[]);
        assert!(o.status.success(), "{ty}: {}", String::from_utf8_lossy(&o.stderr));
        let table = String::from_utf8_lossy(&o.stdout);
        assert!(table.contains("dec.pixel_out.weight") && table.contains("% of f32"), "{table}");
        let types = check_file(&out, &weights, &cfg);
        // Exported: codebook, decoder, AR; no encoder, no VFM projectors.
        let n_exported = eostok_models::tensor_specs(&cfg).iter().filter(|s| !s.name.starts_with("enc.") && !s.name.starts_with("vfm_proj.")).count();
        assert_eq!(types.len(), n_exported, "{ty}");
        sizes.push((ty.to_string(), std::fs::metadata(&out).unwrap().len()));
    }
    // Smaller types make smaller files.
    let size = |t: &str| sizes.iter().find(|(n, _)| n == t).unwrap().1;
    assert!(size("f32") > size("f16") && size("f16") > size("q8_0") && size("q8_0") > size("q4_0"), "{sizes:?}");
    assert!(size("q8_0") > size("mixed") && size("mixed") > size("q4_0"), "{sizes:?}");
}

#[test]
fn k_quants_are_used_where_rows_allow() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config::from_json(r#"{"base": "tiny", "ar": {"width": 256, "heads": 4, "ffn_hidden": 512}, "decoder": {"width": 256, "heads": 4}}"#).unwrap();
    let ck = make_checkpoint(dir.path(), &cfg, 2);
    let weights = ema_weights(&ck);
    for (ty, want) in [("q4_k", GgmlType::Q4_K), ("q6_k", GgmlType::Q6_K)] {
        let out = dir.path().join(format!("{ty}.gguf"));
        let o = quantize(&ck, &out, ty, &[]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let types = check_file(&out, &weights, &cfg);
        let n = types.iter().filter(|&&t| t == want).count();
        assert!(n >= 10, "{ty}: only {n} tensors of {want:?}");
        // dec.latent_proj (rows of d = 16) cannot take any block type: f16, said in the summary.
        assert!(String::from_utf8_lossy(&o.stdout).contains("not a multiple"));
    }
}

#[test]
fn keep_f32_and_encoder_export() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config::preset("tiny").unwrap();
    let ck = make_checkpoint(dir.path(), &cfg, 3);
    let out = dir.path().join("m.gguf");
    let o = quantize(&ck, &out, "q4_0", &["--keep-f32", "output.weight", "blk.*.ffn_down*", "--with-encoder", "--weights", "raw"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let f = GgufFile::open(&out).unwrap();
    assert_eq!(f.tensor_info("output.weight").unwrap().ggml_type, GgmlType::F32);
    assert_eq!(f.tensor_info("blk.1.ffn_down.weight").unwrap().ggml_type, GgmlType::F32);
    assert_eq!(f.tensor_info("blk.1.ffn_up.weight").unwrap().ggml_type, GgmlType::Q4_0);
    assert!(f.tensor_info("enc.blk.0.attn_qkv.weight").is_some());
    assert_eq!(f.metadata().get_str("eostok.weights").unwrap(), "raw");
}

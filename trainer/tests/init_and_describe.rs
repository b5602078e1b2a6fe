//! `eostok-train describe` and `init` through the real binary, and the
//! checkpoint they write read back into a model.

use candle_core::{DType, Device};
use eostok_models::nn::Eostok;
use eostok_models::{param_counts, Config, PRESETS};
use eostok_train::checkpoint::{self, WeightSet};
use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_eostok-train"))
}

#[test]
fn describe_prints_counts_for_every_preset() {
    for p in PRESETS {
        let out = bin().args(["describe", "--config", p]).output().unwrap();
        assert!(out.status.success(), "{p}: {}", String::from_utf8_lossy(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let c = param_counts(&Config::preset(p).unwrap());
        for (k, want) in [("encoder", c.encoder), ("decoder", c.decoder), ("quantizer", c.quantizer), ("tokenizer", c.tokenizer), ("ar", c.ar), ("total", c.total)] {
            assert_eq!(v[k].as_u64(), Some(want as u64), "{p} {k}");
        }
        assert_eq!(c.tokenizer, c.encoder + c.decoder + c.quantizer);
    }
    let out = bin().args(["describe", "--config", "no-such-preset"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no-such-preset") && err.lines().count() == 1, "{err}");
}

#[test]
fn config_json_round_trip_and_overrides() {
    for p in PRESETS {
        let c = Config::preset(p).unwrap();
        assert_eq!(Config::from_json(&c.to_json()).unwrap(), c, "{p}");
    }
    let c = Config::from_json(r#"{"base": "tiny", "codebook_size": 128, "ar": {"depth": 3}}"#).unwrap();
    assert_eq!(c.codebook_size, 128);
    assert_eq!(c.ar.depth, 3);
    assert_eq!(c.ar.width, 64);
    assert!(Config::from_json(r#"{"base": "tiny", "patch_size": 5}"#).is_err(), "32 px is not a multiple of 5");
    assert!(Config::from_json(r#"{"base": "tiny", "codebok_size": 5}"#).is_err(), "unknown keys are refused");
    assert!(Config::from_json(r#"{"base": "tiny", "latent_tokens": 0}"#).is_err());
    // describe reads a JSON file too.
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("c.json");
    std::fs::write(&f, r#"{"base": "tiny", "codebook_size": 128}"#).unwrap();
    let out = bin().args(["describe", "--config", f.to_str().unwrap()]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["quantizer"].as_u64(), Some(128 * 16));
}

#[test]
fn init_writes_a_loadable_checkpoint_and_refuses_to_overwrite() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("ck");
    let run = |args: &[&str]| bin().args(["init", "--config", "tiny", "--out", dir.to_str().unwrap()]).args(args).output().unwrap();
    let out = run(&["--seed", "3"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for f in [checkpoint::CONFIG_FILE, checkpoint::MODEL_FILE, checkpoint::EMA_FILE] {
        assert!(dir.join(f).is_file(), "{f}");
    }
    let cfg = checkpoint::load_config(&dir).unwrap();
    assert_eq!(cfg, Config::preset("tiny").unwrap());
    let raw = checkpoint::load_weights(&dir, &cfg, WeightSet::Raw, &Device::Cpu).unwrap();
    let ema = checkpoint::load_weights(&dir, &cfg, WeightSet::Ema, &Device::Cpu).unwrap();
    let name = "blk.0.attn_q.weight";
    let diff = |a: &candle_core::Tensor, b: &candle_core::Tensor| (a - b).unwrap().abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
    assert_eq!(diff(&raw[name], &ema[name]), 0.0, "EMA starts equal to the raw weights");
    let (model, _) = Eostok::from_tensors(&cfg, raw.clone(), DType::F32, &Device::Cpu).unwrap();
    let ids = candle_core::Tensor::new(&[[0u32, 1, 2]], &Device::Cpu).unwrap();
    assert_eq!(model.decode_ids(&ids).unwrap().dims(), &[1, 3, 32, 32]);

    // A second init refuses, leaves the checkpoint untouched, exit 2.
    let before = std::fs::read(dir.join(checkpoint::MODEL_FILE)).unwrap();
    let out = run(&["--seed", "4"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--force"));
    assert_eq!(std::fs::read(dir.join(checkpoint::MODEL_FILE)).unwrap(), before);

    // --force replaces it; another seed gives other weights; nothing staged is left.
    let out = run(&["--seed", "4", "--force"]);
    assert!(out.status.success());
    let raw4 = checkpoint::load_weights(&dir, &cfg, WeightSet::Raw, &Device::Cpu).unwrap();
    assert!(diff(&raw[name], &raw4[name]) > 0.0);
    let leftovers: Vec<_> = std::fs::read_dir(root.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(leftovers.len(), 1, "{leftovers:?}");

    // An empty existing directory is fine without --force.
    let empty = root.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let out = bin().args(["init", "--config", "tiny", "--out", empty.to_str().unwrap()]).output().unwrap();
    assert!(out.status.success());
}

#[test]
fn damaged_checkpoints_are_clear_errors() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("ck");
    assert!(bin().args(["init", "--config", "tiny", "--out", dir.to_str().unwrap()]).status().unwrap().success());
    let cfg = checkpoint::load_config(&dir).unwrap();
    // Weights of another config: a tensor with the wrong shape, named.
    let mut other = cfg.clone();
    other.codebook_size = 128;
    let err = checkpoint::load_weights(&dir, &other, WeightSet::Raw, &Device::Cpu).unwrap_err();
    assert_eq!(eostok_models::exit::code_for(&err), 2);
    assert!(err.to_string().contains("quant.codebook.weight"), "{err}");
    // A truncated file names the file.
    let f = dir.join(checkpoint::MODEL_FILE);
    let bytes = std::fs::read(&f).unwrap();
    std::fs::write(&f, &bytes[..bytes.len() / 2]).unwrap();
    let err = checkpoint::load_weights(&dir, &cfg, WeightSet::Raw, &Device::Cpu).unwrap_err();
    assert_eq!(eostok_models::exit::code_for(&err), 2);
    assert!(err.to_string().contains("model.safetensors"), "{err}");
    // A broken config.json.
    std::fs::write(dir.join(checkpoint::CONFIG_FILE), "{").unwrap();
    let err = checkpoint::load_config(&dir).unwrap_err();
    assert_eq!(eostok_models::exit::code_for(&err), 2);
    assert!(err.to_string().contains("config.json"), "{err}");
}

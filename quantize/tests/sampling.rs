//! `--sampling`: the recommended sampling written as `eostok.sampling.*`,
//! read back by the runtime, carried over when requantizing, refused when
//! malformed (in the flag or in an input file).

mod common;
use common::*;
use eostok_models::gguf_schema::{self, MetaValue, SamplingRecommendation};
use eostok_models::Config;
use eostok_quantize::writer::{GgufWriter, TensorEntry};
use eostok_runtime::gguf::{GgufFile, Value};
use eostok_runtime::model::{sampling_of, schema_value};
use std::path::Path;

fn ok(o: &std::process::Output) {
    assert!(o.status.success(), "stderr: {}", String::from_utf8_lossy(&o.stderr));
}

fn recommended(path: &Path) -> SamplingRecommendation {
    sampling_of(&GgufFile::open(path).unwrap()).unwrap()
}

fn sampling_keys(path: &Path) -> Vec<String> {
    GgufFile::open(path).unwrap().metadata().iter().map(|(k, _)| k.to_string()).filter(|k| k.starts_with("eostok.sampling.")).collect()
}

#[test]
fn sampling_keys_round_trip_and_carry_over() {
    let dir = tempfile::tempdir().unwrap();
    let ck = make_checkpoint(dir.path(), &Config::preset("tiny").unwrap(), 1);
    let p = |n: &str| dir.path().join(n);

    ok(&quantize(&ck, &p("rec.gguf"), "f32", &["--sampling", "cfg=1.5,top_k=50,temperature=0.9,top_p=1"]));
    let f = GgufFile::open(p("rec.gguf")).unwrap();
    // Stored as the schema says: f32, u32, f32, f32.
    assert_eq!(f.metadata().get(gguf_schema::SAMPLING_CFG_SCALE), Some(&Value::F32(1.5)));
    assert_eq!(f.metadata().get(gguf_schema::SAMPLING_TOP_K), Some(&Value::U32(50)));
    assert_eq!(f.metadata().get(gguf_schema::SAMPLING_TEMPERATURE), Some(&Value::F32(0.9)));
    assert_eq!(f.metadata().get(gguf_schema::SAMPLING_TOP_P), Some(&Value::F32(1.0)));
    let want = SamplingRecommendation { temperature: Some(0.9), top_k: Some(50), top_p: Some(1.0), cfg_scale: Some(1.5) };
    assert_eq!(sampling_of(&f).unwrap(), want);

    // Without the flag nothing is written: the file is the one `--sampling none` gives, byte for byte.
    ok(&quantize(&ck, &p("plain.gguf"), "f32", &[]));
    assert!(sampling_keys(&p("plain.gguf")).is_empty());
    ok(&quantize(&ck, &p("none.gguf"), "f32", &["--sampling", "none"]));
    assert_eq!(std::fs::read(p("plain.gguf")).unwrap(), std::fs::read(p("none.gguf")).unwrap());
    // Only cfg: only its key.
    ok(&quantize(&ck, &p("cfg.gguf"), "f32", &["--sampling", "cfg=1.5"]));
    assert_eq!(sampling_keys(&p("cfg.gguf")), [gguf_schema::SAMPLING_CFG_SCALE]);
    assert_eq!(recommended(&p("cfg.gguf")), SamplingRecommendation { cfg_scale: Some(1.5), ..Default::default() });

    // Requantizing a GGUF keeps its recommendation unless --sampling replaces it (or `none` drops it).
    ok(&quantize(&p("rec.gguf"), &p("re.gguf"), "q8_0", &[]));
    assert_eq!(recommended(&p("re.gguf")), want);
    ok(&quantize(&p("rec.gguf"), &p("re-cfg2.gguf"), "q8_0", &["--sampling", "cfg=2"]));
    assert_eq!(recommended(&p("re-cfg2.gguf")), SamplingRecommendation { cfg_scale: Some(2.0), ..Default::default() });
    ok(&quantize(&p("rec.gguf"), &p("re-none.gguf"), "q8_0", &["--sampling", "none"]));
    assert!(sampling_keys(&p("re-none.gguf")).is_empty());
}

#[test]
fn bad_sampling_flags_exit_2_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let ck = make_checkpoint(dir.path(), &Config::preset("tiny").unwrap(), 1);
    let out = dir.path().join("m.gguf");
    for (spec, needle) in [
        ("cfg=1.5,foo=2", "unknown key 'foo'"),
        ("top_p=0", "top_p=0: must be in (0, 1]"),
        ("cfg=-1", "cfg=-1: must be finite and >= 0"),
        ("temperature=warm", "not a number"),
        ("top_k=1.5", "not an integer"),
        ("cfg", "not KEY=VALUE"),
    ] {
        let o = quantize(&ck, &out, "q8_0", &["--sampling", spec]);
        assert_eq!(o.status.code(), Some(2), "{spec}: {}", String::from_utf8_lossy(&o.stderr));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(&format!("--sampling {spec}: ")) && err.contains(needle), "{spec}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        assert!(!err.contains("panicked"), "{err}");
        assert!(!out.exists());
    }
}

/// A GGUF whose `eostok.sampling.top_p` is 0, written with this crate's
/// writer: the runtime's reader refuses it naming the key, and so does
/// eostok-quantize when asked to requantize it.
#[test]
fn a_file_recommending_top_p_0_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ck = make_checkpoint(dir.path(), &Config::preset("tiny").unwrap(), 1);
    let good = dir.path().join("good.gguf");
    ok(&quantize(&ck, &good, "f32", &[]));
    let src = GgufFile::open(&good).unwrap();
    let mut meta: Vec<(String, MetaValue)> = src.metadata().iter().map(|(k, v)| (k.to_string(), schema_value(v).unwrap())).collect();
    meta.push((gguf_schema::SAMPLING_TOP_P.into(), MetaValue::F32(0.0)));
    let entries = src.tensors().iter().map(|t| TensorEntry { name: t.name.clone(), ne: t.dims.clone(), ty: t.ggml_type }).collect();
    let hostile = dir.path().join("hostile.gguf");
    let mut w = GgufWriter::create(&hostile, &meta, entries).unwrap();
    for t in src.tensors() {
        w.write_tensor(src.tensor(&t.name).unwrap().data).unwrap();
    }
    w.finish().unwrap();

    let f = GgufFile::open(&hostile).unwrap();
    eostok_runtime::model::Model::load(&f).expect("everything else in the file is valid");
    let err = sampling_of(&f).unwrap_err().to_string();
    assert_eq!(err, "metadata key 'eostok.sampling.top_p' = 0 is out of range (must be in (0, 1])");

    let out = dir.path().join("out.gguf");
    let o = quantize(&hostile, &out, "f32", &[]);
    assert_eq!(o.status.code(), Some(2), "{}", String::from_utf8_lossy(&o.stderr));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("hostile.gguf") && err.contains("'eostok.sampling.top_p' = 0"), "{err}");
    assert!(!out.exists());
    // A --sampling that replaces the recommendation repairs the file.
    ok(&quantize(&hostile, &out, "f32", &["--sampling", "top_p=0.9"]));
    assert_eq!(recommended(&out), SamplingRecommendation { top_p: Some(0.9), ..Default::default() });
}

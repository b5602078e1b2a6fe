//! The runtime's plain-Llama path (`eostok_runtime::model::llama`, used by
//! `eostok-bench vs-llama`) against candle-transformers' `quantized_llama` on
//! the same GGUF file: logits at every step of a fed token sequence, with
//! grouped KV heads, at f32, f16, q8_0 and q4_0.

use candle_core::{Device, Tensor};
use candle_transformers::models::quantized_llama::ModelWeights;
use eostok_models::gguf_schema::MetaValue;
use eostok_models::sampling::SplitMix64;
use eostok_quantize::writer::{GgufWriter, TensorEntry};
use eostok_runtime::gguf::GgufFile;
use eostok_runtime::model::llama::Llama;
use eostok_runtime::model::{architecture_of, Architecture};
use eostok_runtime::quant::{quantize_row, GgmlType};
use std::path::Path;

const WIDTH: usize = 64;
const HEADS: usize = 4;
const KV_HEADS: usize = 2;
const FFN: usize = 160;
const DEPTH: usize = 2;
const VOCAB: usize = 96;
const CONTEXT: usize = 32;

fn write_llama(path: &Path, ty: GgmlType, seed: u64) {
    let kvd = WIDTH / HEADS * KV_HEADS;
    let mut shapes: Vec<(String, Vec<usize>)> =
        vec![("token_embd.weight".into(), vec![VOCAB, WIDTH])];
    for i in 0..DEPTH {
        let p = |s: &str| format!("blk.{i}.{s}.weight");
        shapes.extend([
            (p("attn_norm"), vec![WIDTH]),
            (p("attn_q"), vec![WIDTH, WIDTH]),
            (p("attn_k"), vec![kvd, WIDTH]),
            (p("attn_v"), vec![kvd, WIDTH]),
            (p("attn_output"), vec![WIDTH, WIDTH]),
            (p("ffn_norm"), vec![WIDTH]),
            (p("ffn_gate"), vec![FFN, WIDTH]),
            (p("ffn_up"), vec![FFN, WIDTH]),
            (p("ffn_down"), vec![WIDTH, FFN]),
        ]);
    }
    shapes.push(("output_norm.weight".into(), vec![WIDTH]));
    shapes.push(("output.weight".into(), vec![VOCAB, WIDTH]));
    let type_of = |shape: &[usize]| if shape.len() == 1 { GgmlType::F32 } else { ty };
    let entries = shapes
        .iter()
        .map(|(n, s)| TensorEntry::new(n, s, type_of(s)))
        .collect();
    let u = |x: usize| MetaValue::U32(x as u32);
    let meta = vec![
        (
            "general.architecture".to_string(),
            MetaValue::Str("llama".into()),
        ),
        ("llama.context_length".into(), u(CONTEXT)),
        ("llama.embedding_length".into(), u(WIDTH)),
        ("llama.block_count".into(), u(DEPTH)),
        ("llama.feed_forward_length".into(), u(FFN)),
        ("llama.attention.head_count".into(), u(HEADS)),
        ("llama.attention.head_count_kv".into(), u(KV_HEADS)),
        ("llama.rope.dimension_count".into(), u(WIDTH / HEADS)),
        ("llama.rope.freq_base".into(), MetaValue::F32(10000.0)),
        (
            "llama.attention.layer_norm_rms_epsilon".into(),
            MetaValue::F32(1e-5),
        ),
        ("general.quantization_version".into(), MetaValue::U32(2)),
    ];
    let mut w = GgufWriter::create(path, &meta, entries).unwrap();
    let mut rng = SplitMix64::new(seed);
    for (_, shape) in &shapes {
        let n: usize = shape.iter().product();
        let vals: Vec<f32> = if shape.len() == 1 {
            (0..n)
                .map(|_| 1.0 + 0.2 * (rng.uniform() as f32 - 0.5))
                .collect()
        } else {
            let a = 1.7 / (shape[1] as f32).sqrt();
            (0..n)
                .map(|_| a * (2.0 * rng.uniform() as f32 - 1.0))
                .collect()
        };
        let t = type_of(shape);
        let mut bytes =
            vec![0u8; t.row_size(shape[shape.len() - 1]).unwrap() * (n / shape[shape.len() - 1])];
        quantize_row(t, &vals, &mut bytes).unwrap();
        w.write_tensor(&bytes).unwrap();
    }
    w.finish().unwrap();
}

fn rel_err(a: &[f32], b: &[f32]) -> f32 {
    let scale = a.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max)
        / scale
}

/// Worst relative logits error over a fed sequence of tokens.
fn compare(path: &Path) -> f32 {
    let dev = Device::Cpu;
    let mut reader = std::fs::File::open(path).unwrap();
    let content = candle_core::quantized::gguf_file::Content::read(&mut reader).unwrap();
    let mut theirs = ModelWeights::from_gguf(content, &mut reader, &dev).unwrap();
    let file = GgufFile::open(path).unwrap();
    assert_eq!(architecture_of(&file).unwrap(), Architecture::Llama);
    let ours = Llama::load(&file).unwrap();
    assert_eq!(
        (ours.cfg.heads, ours.cfg.kv_heads, ours.cfg.vocab),
        (HEADS, KV_HEADS, VOCAB)
    );
    let mut st = ours.start();
    let tokens: Vec<u32> = (0..20u32).map(|i| (i * 37 + 5) % VOCAB as u32).collect();
    let mut worst = 0f32;
    for (pos, &tok) in tokens.iter().enumerate() {
        let a = ours.step(&mut st, tok).unwrap();
        let x = Tensor::new(&[[tok]], &dev).unwrap();
        let b: Vec<f32> = theirs
            .forward(&x, pos)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(a.len(), b.len());
        worst = worst.max(rel_err(&b, &a));
    }
    worst
}

#[test]
fn llama_logits_match_candle_quantized_llama() {
    let dir = tempfile::tempdir().unwrap();
    // Same activation quantization (q8_0 blocks) on both sides, so quantized files agree
    // closely too; the remaining differences are summation order.
    for (ty, tol) in [
        (GgmlType::F32, 1e-4),
        (GgmlType::F16, 1e-3),
        (GgmlType::Q8_0, 2e-3),
        (GgmlType::Q4_0, 2e-3),
    ] {
        let path = dir.path().join(format!("llama-{}.gguf", ty.name()));
        write_llama(&path, ty, 7);
        let err = compare(&path);
        eprintln!("{}: worst logits rel err {err:.2e}", ty.name());
        assert!(
            err < tol,
            "{}: logits differ by {err} (rel) from candle's quantized_llama",
            ty.name()
        );
    }
}

#[test]
fn other_architectures_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gpt2.gguf");
    let meta = vec![(
        "general.architecture".to_string(),
        MetaValue::Str("gpt2".into()),
    )];
    let w = GgufWriter::create(&path, &meta, vec![]).unwrap();
    w.finish().unwrap();
    let file = GgufFile::open(&path).unwrap();
    let e = architecture_of(&file).unwrap_err().to_string();
    assert!(e.contains("gpt2"), "{e}");
}

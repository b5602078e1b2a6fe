//! Bit-compatibility with ggml layouts, checked against an independent implementation: a GGUF
//! written by candle (`gguf_file::write`, tensors from `QTensor::quantize`) opens with the
//! runtime's reader, and its scalar dequantization matches candle's `dequantize`.
//!
//! Moved here from `runtime/tests/` so the runtime crate has no candle dev-dependency and
//! its tests cross-build for aarch64 without compiling candle (`scripts/cross-aarch64`).

use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use eostok_runtime::gguf::{Array, GgufFile, Value};
use eostok_runtime::quant::{self, GgmlType};

const CASES: [(&str, GgmlDType, GgmlType); 6] = [
    ("blk.0.attn_q.weight", GgmlDType::Q8_0, GgmlType::Q8_0),
    ("blk.0.attn_k.weight", GgmlDType::Q4_0, GgmlType::Q4_0),
    ("blk.0.attn_v.weight", GgmlDType::Q4_1, GgmlType::Q4_1),
    ("blk.0.ffn_up.weight", GgmlDType::Q4K, GgmlType::Q4_K),
    ("blk.0.ffn_down.weight", GgmlDType::Q6K, GgmlType::Q6_K),
    ("token_embd.weight", GgmlDType::F16, GgmlType::F16),
];

#[test]
fn candle_written_gguf_reads_and_dequantizes_identically() -> candle_core::Result<()> {
    let (rows, cols) = (6usize, 512usize);
    let mut rng = Rng::new(99);
    let mut qtensors = Vec::new();
    let mut originals = Vec::new();
    for (i, (_, dtype, _)) in CASES.iter().enumerate() {
        let scale = 0.02 * (1 + i) as f32;
        let values: Vec<f32> = (0..rows * cols).map(|_| rng.normal() * scale).collect();
        let tensor = Tensor::from_vec(values.clone(), (rows, cols), &Device::Cpu)?;
        qtensors.push(QTensor::quantize(&tensor, *dtype)?);
        originals.push(values);
    }

    let arch = gguf_file::Value::String("eostok".into());
    let blocks = gguf_file::Value::U32(2);
    let classes = gguf_file::Value::Array(vec![
        gguf_file::Value::String("tench".into()),
        gguf_file::Value::String("goldfish".into()),
    ]);
    let eps = gguf_file::Value::F32(1e-6);
    let metadata = [
        ("general.architecture", &arch),
        ("eostok.block_count", &blocks),
        ("eostok.classes", &classes),
        ("eostok.eps", &eps),
    ];
    let tensors: Vec<(&str, &QTensor)> = CASES
        .iter()
        .zip(&qtensors)
        .map(|((name, _, _), q)| (*name, q))
        .collect();

    let dir = tempfile::tempdir()?;
    let path = dir.path().join("candle.gguf");
    let mut file = std::fs::File::create(&path)?;
    gguf_file::write(&mut file, &metadata, &tensors)?;
    drop(file);

    let gguf = GgufFile::open(&path).expect("our reader opens candle's file");
    assert_eq!(gguf.version(), 2, "candle writes v2");
    assert_eq!(gguf.get_str("general.architecture").unwrap(), "eostok");
    assert_eq!(gguf.get_u32("eostok.block_count").unwrap(), 2);
    assert_eq!(gguf.get_f32("eostok.eps").unwrap(), 1e-6);
    assert_eq!(
        gguf.metadata().get("eostok.classes"),
        Some(&Value::Array(Array::String(vec![
            "tench".into(),
            "goldfish".into()
        ])))
    );

    for (((name, _, ty), q), original) in CASES.iter().zip(&qtensors).zip(&originals) {
        // candle shape [rows, cols] → ggml dims [cols, rows].
        let view = gguf
            .tensor_checked(name, &[cols as u64, rows as u64], &[*ty])
            .unwrap();
        assert_eq!(
            view.data,
            &q.data()?[..],
            "{name}: bytes differ from candle's"
        );

        let theirs: Vec<f32> = q.dequantize(&Device::Cpu)?.flatten_all()?.to_vec1()?;
        let mut ours = vec![0f32; rows * cols];
        for r in 0..rows {
            let row = view.row(r).unwrap();
            quant::dequantize_row(*ty, row, &mut ours[r * cols..(r + 1) * cols]).unwrap();
        }
        for (i, (a, b)) in ours.iter().zip(&theirs).enumerate() {
            assert!(
                (a - b).abs() <= 1e-6,
                "{name}: element {i}: ours {a}, candle {b}"
            );
        }

        // For the simple formats our reference quantizer (= ggml's *_ref) produces candle's bytes.
        if matches!(
            ty,
            GgmlType::Q8_0 | GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::F16
        ) {
            let mut mine = vec![0u8; view.data.len()];
            quant::quantize_row(*ty, original, &mut mine).unwrap();
            assert_eq!(
                mine, view.data,
                "{name}: our quantizer differs from candle's"
            );
        }
    }
    Ok(())
}

/// The runtime tests' SplitMix64 (`runtime/tests/common/rng.rs`), same seed → same values.
#[allow(dead_code)]
mod rng {
    pub struct Rng(u64);

    impl Rng {
        pub fn new(seed: u64) -> Self {
            Rng(seed)
        }

        pub fn next_u64(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }

        /// Uniform in [0, 1).
        pub fn unit(&mut self) -> f32 {
            (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
        }

        /// Uniform in [-1, 1).
        pub fn uniform(&mut self) -> f32 {
            2.0 * self.unit() - 1.0
        }

        /// Standard normal (Box–Muller).
        pub fn normal(&mut self) -> f32 {
            let u1 = (self.unit() as f64).max(1e-12);
            let u2 = self.unit() as f64;
            ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
        }

        pub fn below(&mut self, n: usize) -> usize {
            (self.next_u64() % n as u64) as usize
        }

        pub fn bytes(&mut self, n: usize) -> Vec<u8> {
            (0..n).map(|_| self.next_u64() as u8).collect()
        }
    }
}
use rng::Rng;

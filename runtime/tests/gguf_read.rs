//! Reading back files written by the test writer: metadata, tensor infos and bytes, getters,
//! lookups, and the zero-copy guarantee.

mod common;

use common::gguf_writer::GgufWriter;
use common::rng::Rng;
use eostok_runtime::gguf::{Array, GgufError, GgufFile, Value};
use eostok_runtime::quant::{self, GgmlType};

fn all_value_kinds() -> Vec<(&'static str, Value)> {
    vec![
        ("general.architecture", Value::String("eostok".into())),
        ("t.u8", Value::U8(200)),
        ("t.i8", Value::I8(-100)),
        ("t.u16", Value::U16(60_000)),
        ("t.i16", Value::I16(-30_000)),
        ("t.u32", Value::U32(4_000_000_000)),
        ("t.i32", Value::I32(-2_000_000_000)),
        ("t.f32", Value::F32(1.5e-5)),
        ("t.bool_true", Value::Bool(true)),
        ("t.bool_false", Value::Bool(false)),
        ("t.u64", Value::U64(u64::MAX)),
        ("t.i64", Value::I64(i64::MIN)),
        ("t.f64", Value::F64(-2.5e300)),
        ("t.empty_string", Value::String(String::new())),
        ("t.unicode", Value::String("tench, Tinca tinca — 鯉".into())),
        (
            "t.classes",
            Value::Array(Array::String(vec![
                "tench".into(),
                "goldfish".into(),
                "".into(),
            ])),
        ),
        ("t.arr_u8", Value::Array(Array::U8(vec![1, 2, 255]))),
        ("t.arr_i8", Value::Array(Array::I8(vec![-1, 127]))),
        ("t.arr_u16", Value::Array(Array::U16(vec![1, 65535]))),
        ("t.arr_i16", Value::Array(Array::I16(vec![-2, 3]))),
        ("t.arr_u32", Value::Array(Array::U32(vec![7; 5]))),
        ("t.arr_i32", Value::Array(Array::I32(vec![-7, 0, 7]))),
        (
            "t.arr_f32",
            Value::Array(Array::F32(vec![0.25, -1.0, f32::MAX])),
        ),
        (
            "t.arr_bool",
            Value::Array(Array::Bool(vec![true, false, true])),
        ),
        ("t.arr_u64", Value::Array(Array::U64(vec![u64::MAX, 0]))),
        (
            "t.arr_i64",
            Value::Array(Array::I64(vec![i64::MIN, i64::MAX])),
        ),
        ("t.arr_f64", Value::Array(Array::F64(vec![1e-300, 2.0]))),
        ("t.arr_empty", Value::Array(Array::U32(vec![]))),
        (
            "t.nested",
            Value::Array(Array::Array(vec![
                Array::U32(vec![1, 2]),
                Array::String(vec!["a".into()]),
                Array::Array(vec![Array::F32(vec![3.0]), Array::Bool(vec![])]),
            ])),
        ),
    ]
}

/// (name, dims, type) with data lengths from the type's block size.
fn sample_tensors() -> Vec<(&'static str, Vec<u64>, GgmlType)> {
    vec![
        ("token_embd.weight", vec![8, 3], GgmlType::F32),
        ("blk.0.attn_norm.weight", vec![16], GgmlType::F16),
        ("blk.0.attn_q.weight", vec![64, 2], GgmlType::Q4_0),
        ("blk.0.attn_k.weight", vec![32, 1, 2], GgmlType::Q4_1),
        ("blk.0.attn_v.weight", vec![32, 2, 2, 1], GgmlType::Q8_0),
        ("blk.0.ffn_up.weight", vec![256, 2], GgmlType::Q4_K),
        ("blk.0.ffn_down.weight", vec![512], GgmlType::Q6_K),
        ("blk.0.ffn_gate.weight", vec![256], GgmlType::Q8_K),
        // Recognised but without kernels here: the reader still validates and serves it.
        ("blk.0.exotic.weight", vec![64], GgmlType::Q5_0),
    ]
}

fn byte_len(dims: &[u64], ty: GgmlType) -> usize {
    let n: u64 = dims.iter().product();
    (n as usize) / ty.block_size() * ty.type_size()
}

fn sample_writer(rng: &mut Rng) -> (GgufWriter, Vec<Vec<u8>>) {
    let mut w = GgufWriter::new();
    for (k, v) in all_value_kinds() {
        w = w.kv(k, v);
    }
    let mut datas = Vec::new();
    for (name, dims, ty) in sample_tensors() {
        let data = rng.bytes(byte_len(&dims, ty));
        datas.push(data.clone());
        w = w.tensor(name, &dims, ty, data);
    }
    (w, datas)
}

#[test]
fn round_trip_metadata_and_tensors() {
    let mut rng = Rng::new(1);
    let (w, datas) = sample_writer(&mut rng);
    let built = w.build();
    let f = GgufFile::from_bytes(&built.bytes).expect("valid file");

    assert_eq!(f.version(), 3);
    assert_eq!(f.alignment(), 32);
    assert_eq!(f.data_offset() as usize, built.data_offset);

    let expected = all_value_kinds();
    let got: Vec<(&str, &Value)> = f.metadata().iter().collect();
    assert_eq!(got.len(), expected.len());
    for ((k, v), (ek, ev)) in got.iter().zip(&expected) {
        assert_eq!(k, ek, "metadata order");
        assert_eq!(*v, ev, "value of {k}");
    }

    let infos = f.tensors();
    assert_eq!(infos.len(), sample_tensors().len());
    for (i, ((name, dims, ty), data)) in sample_tensors().into_iter().zip(&datas).enumerate() {
        let info = &infos[i];
        assert_eq!(info.name, name);
        assert_eq!(info.dims, dims);
        assert_eq!(info.ggml_type, ty);
        assert_eq!(info.n_bytes as usize, data.len());
        assert_eq!(
            info.offset as usize + built.data_offset,
            built.tensor_ranges[i].0
        );
        assert_eq!(info.offset % 32, 0);
        let view = f.tensor(name).expect("present");
        assert_eq!(view.data, &data[..], "bytes of {name}");
        assert_eq!(view.info, info);
        assert_eq!(view.info.row_len(), dims[0]);
    }
}

#[test]
fn version_2_and_custom_alignment() {
    let mut rng = Rng::new(2);
    let (mut w, datas) = sample_writer(&mut rng);
    w.version = 2;
    let w = w.with_alignment(64);
    let built = w.build();
    let f = GgufFile::from_bytes(&built.bytes).expect("valid v2 file");
    assert_eq!(f.version(), 2);
    assert_eq!(f.alignment(), 64);
    assert_eq!(f.data_offset() % 64, 0);
    assert_eq!(f.get_u32("general.alignment").unwrap(), 64);
    for (info, data) in f.tensors().iter().zip(&datas) {
        assert_eq!(info.offset % 64, 0);
        let view = f.tensor(&info.name).unwrap();
        assert_eq!(view.data, &data[..]);
        // from_bytes copies to a 64-byte aligned buffer, so file alignment is memory alignment.
        assert_eq!(view.data.as_ptr() as usize % 64, 0);
    }
}

#[test]
fn typed_getters_accept_any_fitting_integer() {
    let f = GgufFile::from_bytes(
        &GgufWriter::new()
            .kv("a.u8", Value::U8(7))
            .kv("a.i16", Value::I16(300))
            .kv("a.u64_small", Value::U64(1 << 20))
            .kv("a.u64_big", Value::U64(u64::MAX))
            .kv("a.neg", Value::I32(-1))
            .kv("a.f64", Value::F64(0.5))
            .kv("a.s", Value::String("x".into()))
            .kv(
                "a.names",
                Value::Array(Array::String(vec!["p".into(), "q".into()])),
            )
            .build()
            .bytes,
    )
    .unwrap();
    assert_eq!(f.get_u32("a.u8").unwrap(), 7);
    assert_eq!(f.get_u32("a.i16").unwrap(), 300);
    assert_eq!(f.get_u32("a.u64_small").unwrap(), 1 << 20);
    assert_eq!(f.get_u64("a.u8").unwrap(), 7);
    assert_eq!(f.get_u64("a.u64_big").unwrap(), u64::MAX);
    assert_eq!(f.get_f32("a.f64").unwrap(), 0.5);
    assert_eq!(f.get_str("a.s").unwrap(), "x");
    assert_eq!(f.get_str_array("a.names").unwrap(), ["p", "q"]);

    let err = f.get_u32("a.u64_big").unwrap_err();
    assert!(matches!(err, GgufError::WrongValueType { .. }), "{err}");
    assert!(
        err.to_string().contains("a.u64_big") && err.to_string().contains("u32"),
        "{err}"
    );
    assert!(matches!(
        f.get_u64("a.neg"),
        Err(GgufError::WrongValueType { .. })
    ));
    assert!(matches!(
        f.get_f32("a.s"),
        Err(GgufError::WrongValueType { .. })
    ));
    assert!(matches!(
        f.get_str("a.u8"),
        Err(GgufError::WrongValueType { .. })
    ));
    assert!(matches!(
        f.get_str_array("a.s"),
        Err(GgufError::WrongValueType { .. })
    ));
    let missing = f.get_u32("eostok.block_count").unwrap_err();
    assert!(matches!(missing, GgufError::MissingKey { .. }));
    assert!(missing.to_string().contains("eostok.block_count"));
}

#[test]
fn tensor_lookup_errors_name_the_problem() {
    let f = GgufFile::from_bytes(
        &GgufWriter::new()
            .tensor("w", &[64, 2], GgmlType::Q8_0, vec![0; 2 * 68])
            .build()
            .bytes,
    )
    .unwrap();
    assert!(f
        .tensor_checked("w", &[64, 2], &[GgmlType::Q4_0, GgmlType::Q8_0])
        .is_ok());

    let err = f.tensor("nope").unwrap_err();
    assert!(matches!(err, GgufError::TensorNotFound { .. }) && err.to_string().contains("nope"));

    let err = f
        .tensor_checked("w", &[2, 64], &[GgmlType::Q8_0])
        .unwrap_err();
    assert!(matches!(err, GgufError::ShapeMismatch { .. }), "{err}");
    assert!(err.to_string().contains("[64, 2]"), "{err}");

    let err = f
        .tensor_checked("w", &[64, 2], &[GgmlType::F32, GgmlType::F16])
        .unwrap_err();
    assert!(
        matches!(
            err,
            GgufError::TypeNotAllowed {
                found: GgmlType::Q8_0,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("q8_0"), "{err}");
}

#[test]
fn rows_dequantize_from_the_view() {
    let mut rng = Rng::new(3);
    let (row_len, rows) = (96usize, 3usize);
    let weights: Vec<f32> = (0..row_len * rows).map(|_| rng.normal()).collect();
    let mut q = vec![0u8; rows * GgmlType::Q8_0.row_size(row_len).unwrap()];
    quant::quantize_row(GgmlType::Q8_0, &weights, &mut q).unwrap();
    let norm: Vec<f32> = (0..row_len).map(|i| i as f32).collect();
    let mut norm_bytes = vec![0u8; 4 * row_len];
    quant::quantize_row(GgmlType::F32, &norm, &mut norm_bytes).unwrap();

    let bytes = GgufWriter::new()
        .tensor(
            "w",
            &[row_len as u64, rows as u64],
            GgmlType::Q8_0,
            q.clone(),
        )
        .tensor("norm", &[row_len as u64], GgmlType::F32, norm_bytes)
        .build()
        .bytes;
    let f = GgufFile::from_bytes(&bytes).unwrap();
    let w = f
        .tensor_checked("w", &[row_len as u64, rows as u64], &[GgmlType::Q8_0])
        .unwrap();
    assert_eq!(w.info.n_rows(), rows as u64);
    for r in 0..rows {
        let mut from_view = vec![0f32; row_len];
        quant::dequantize_row(w.ggml_type(), w.row(r).unwrap(), &mut from_view).unwrap();
        let mut direct = vec![0f32; row_len];
        let rb = q.len() / rows;
        quant::dequantize_row(GgmlType::Q8_0, &q[r * rb..(r + 1) * rb], &mut direct).unwrap();
        assert_eq!(from_view, direct);
    }
    assert!(w.row(rows).is_none());
    assert_eq!(f.tensor("norm").unwrap().as_f32().unwrap(), &norm[..]);
    assert!(w.as_f32().is_none(), "only F32 tensors view as f32");
}

/// (f) Opening a file does not copy weights: views point into the file mapping.
#[test]
fn views_borrow_from_the_mmap() {
    let mut rng = Rng::new(4);
    let (w, datas) = sample_writer(&mut rng);
    let built = w.build();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.gguf");
    std::fs::write(&path, &built.bytes).unwrap();

    let f = GgufFile::open(&path).unwrap();
    assert!(f.is_mmapped());
    let file_range = f.as_bytes().as_ptr_range();
    assert_eq!(f.as_bytes(), &built.bytes[..]);
    assert_eq!(
        file_range.start as usize % 4096,
        0,
        "an mmap starts on a page"
    );
    for (info, data) in f.tensors().iter().zip(&datas) {
        let view = f.tensor(&info.name).unwrap();
        let p = view.data.as_ptr();
        assert!(
            file_range.contains(&p),
            "{} not inside the mapping",
            info.name
        );
        assert_eq!(
            p as usize - file_range.start as usize,
            f.data_offset() as usize + info.offset as usize
        );
        assert_eq!(view.data, &data[..]);
    }

    // The kernel agrees that this address range is a mapping of our file.
    #[cfg(target_os = "linux")]
    {
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let canonical = std::fs::canonicalize(&path).unwrap();
        let start = file_range.start as usize;
        let mapped = maps.lines().any(|line| {
            let Some((range, rest)) = line.split_once(' ') else {
                return false;
            };
            let Some((lo, hi)) = range.split_once('-') else {
                return false;
            };
            let (lo, hi) = (
                usize::from_str_radix(lo, 16).unwrap(),
                usize::from_str_radix(hi, 16).unwrap(),
            );
            rest.trim_end().ends_with(canonical.to_str().unwrap()) && lo <= start && start < hi
        });
        assert!(
            mapped,
            "no /proc/self/maps entry maps {} at {start:#x}",
            canonical.display()
        );
    }
}

#[test]
fn from_static_needs_alignment_and_does_not_copy() {
    #[repr(C, align(64))]
    struct Aligned([u8; 4096]);
    let built = GgufWriter::new()
        .kv("k", Value::U8(1))
        .tensor("w", &[32], GgmlType::Q8_0, vec![9; 34])
        .build();
    assert!(built.bytes.len() < 4095);
    let mut storage = Box::new(Aligned([0; 4096]));
    storage.0[..built.bytes.len()].copy_from_slice(&built.bytes);
    let storage: &'static Aligned = Box::leak(storage);
    let bytes: &'static [u8] = &storage.0[..built.bytes.len()];

    let f = GgufFile::from_static(bytes).unwrap();
    assert!(!f.is_mmapped());
    assert_eq!(
        f.as_bytes().as_ptr(),
        bytes.as_ptr(),
        "static bytes are used in place"
    );
    let view = f.tensor("w").unwrap();
    assert!(bytes.as_ptr_range().contains(&view.data.as_ptr()));

    let misaligned: &'static [u8] = &storage.0[1..];
    assert!(matches!(
        GgufFile::from_static(misaligned),
        Err(GgufError::UnalignedBuffer { .. })
    ));
}

#[test]
fn missing_and_empty_files_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let missing = GgufFile::open(dir.path().join("absent.gguf")).unwrap_err();
    assert!(matches!(missing, GgufError::Io(_)), "{missing}");

    let empty = dir.path().join("empty.gguf");
    std::fs::write(&empty, b"").unwrap();
    let err = GgufFile::open(&empty).unwrap_err();
    assert!(matches!(err, GgufError::Truncated { .. }), "{err}");
    assert!(err.to_string().contains("magic"), "{err}");
}

#[test]
fn file_without_tensors_may_end_after_the_header() {
    let mut w = GgufWriter::new().kv("general.architecture", Value::String("eostok".into()));
    w.pad_end = false;
    let f = GgufFile::from_bytes(&w.build().bytes).unwrap();
    assert!(f.tensors().is_empty());
    assert_eq!(f.get_str("general.architecture").unwrap(), "eostok");
}

//! (e) A malformed-file corpus built by the tests: every file must give `Err` with a message
//! naming the problem, never panic, and never allocate more than the file's size justifies.

mod common;

use common::gguf_writer::{encode_value, put_bytes_string, GgufWriter};
use common::rng::Rng;
use eostok_runtime::gguf::{Array, GgufError, GgufFile, TensorProblem, Value, MAX_ARRAY_DEPTH};
use eostok_runtime::quant::GgmlType;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// Records the largest single allocation made by the current thread while tracking is on,
/// so each test can bound what parsing a hostile file allocates.
struct TrackingAlloc;

thread_local! {
    static TRACKING: Cell<bool> = const { Cell::new(false) };
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for TrackingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

fn note(size: usize) {
    // `try_with`: thread-locals may be gone while a thread shuts down.
    let _ = TRACKING.try_with(|t| {
        if t.get() {
            let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
        }
    });
}

#[global_allocator]
static GLOBAL: TrackingAlloc = TrackingAlloc;

/// Opens `bytes`, which must fail, and checks that no single allocation exceeded a small
/// multiple of the file size (the copy into the aligned buffer is `len` rounded up to 64).
fn open_err(bytes: &[u8]) -> GgufError {
    LARGEST.with(|l| l.set(0));
    TRACKING.with(|t| t.set(true));
    let result = GgufFile::from_bytes(bytes);
    TRACKING.with(|t| t.set(false));
    let largest = LARGEST.with(|l| l.get());
    let budget = 8 * bytes.len() + 4096;
    assert!(
        largest <= budget,
        "parsing a {}-byte file allocated {largest} bytes at once",
        bytes.len()
    );
    match result {
        Ok(f) => panic!("malformed file accepted: {f:?}"),
        Err(e) => {
            assert!(!e.to_string().is_empty());
            e
        }
    }
}

fn valid_writer() -> GgufWriter {
    GgufWriter::new()
        .kv("general.architecture", Value::String("eostok".into()))
        .kv(
            "eostok.classes",
            Value::Array(Array::String(vec!["tench".into(), "goldfish".into()])),
        )
        .kv("eostok.block_count", Value::U32(2))
        .tensor("a", &[32, 2], GgmlType::Q8_0, vec![1; 68])
        .tensor("b", &[8], GgmlType::F32, vec![2; 32])
}

fn patch_u32(bytes: &mut [u8], at: usize, v: u32) {
    bytes[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn patch_u64(bytes: &mut [u8], at: usize, v: u64) {
    bytes[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

fn bad_tensor(err: &GgufError) -> (&str, &TensorProblem) {
    match err {
        GgufError::BadTensor { name, problem, .. } => (name, problem),
        other => panic!("expected a tensor error, got: {other}"),
    }
}

#[test]
fn the_base_file_is_valid_and_the_tracker_works() {
    let bytes = valid_writer().build().bytes;
    LARGEST.with(|l| l.set(0));
    TRACKING.with(|t| t.set(true));
    let f = GgufFile::from_bytes(&bytes).unwrap();
    TRACKING.with(|t| t.set(false));
    assert_eq!(f.tensors().len(), 2);
    // The aligned copy of the file is the largest allocation, and it was seen.
    assert_eq!(LARGEST.with(|l| l.get()), bytes.len().div_ceil(64) * 64);
}

#[test]
fn truncation_at_every_byte_is_an_error() {
    let built = valid_writer().build();
    let needed = built.tensor_ranges.iter().map(|r| r.1).max().unwrap();
    for len in 0..needed {
        let err = open_err(&built.bytes[..len]);
        assert!(
            matches!(
                err,
                GgufError::Truncated { .. }
                    | GgufError::CountTooLarge { .. }
                    | GgufError::BadTensor { .. }
            ),
            "prefix of {len} bytes: {err}"
        );
    }
    // Only the trailing padding after the last tensor may be cut.
    for len in needed..=built.bytes.len() {
        assert!(
            GgufFile::from_bytes(&built.bytes[..len]).is_ok(),
            "prefix of {len} bytes"
        );
    }
}

#[test]
fn truncated_header_messages_say_what_is_missing() {
    let built = valid_writer().build();
    let err = open_err(&built.bytes[..6]);
    assert!(
        err.to_string().contains("version") && err.to_string().contains("byte 4"),
        "{err}"
    );
    let err = open_err(&built.bytes[..built.infos[1].offset_at + 4]);
    assert!(
        err.to_string().contains("data offset of tensor \"b\""),
        "{err}"
    );
    // Cut inside the tensor infos: the tensor count no longer fits what is left.
    let err = open_err(&built.bytes[..built.infos[1].type_at]);
    assert!(
        matches!(err, GgufError::CountTooLarge { .. }) && err.to_string().contains("tensor count"),
        "{err}"
    );
}

#[test]
fn bad_magic_and_versions() {
    let mut b = valid_writer().build();
    b.bytes[..4].copy_from_slice(b"GGML");
    let err = open_err(&b.bytes);
    assert!(
        matches!(err, GgufError::BadMagic { .. }) && err.to_string().contains("GGUF"),
        "{err}"
    );

    for version in [0u32, 1, 4, 1000] {
        let mut b = valid_writer().build();
        patch_u32(&mut b.bytes, 4, version);
        let err = open_err(&b.bytes);
        assert!(
            matches!(err, GgufError::UnsupportedVersion { version: v } if v == version),
            "{err}"
        );
        assert!(err.to_string().contains(&version.to_string()));
    }
    let mut b = valid_writer().build();
    patch_u32(&mut b.bytes, 4, 3u32.swap_bytes());
    assert!(matches!(
        open_err(&b.bytes),
        GgufError::BigEndian { version: 3 }
    ));
}

#[test]
fn huge_counts_are_rejected_before_allocating() {
    for count in [u64::MAX, 1 << 40, 1_000_000] {
        let mut b = valid_writer().build();
        patch_u64(&mut b.bytes, b.tensor_count_at, count);
        let err = open_err(&b.bytes);
        assert!(
            matches!(err, GgufError::CountTooLarge { count: c, .. } if c == count),
            "{err}"
        );
        assert!(err.to_string().contains("tensor count"), "{err}");

        let mut b = valid_writer().build();
        patch_u64(&mut b.bytes, b.kv_count_at, count);
        let err = open_err(&b.bytes);
        assert!(matches!(err, GgufError::CountTooLarge { .. }), "{err}");
        assert!(err.to_string().contains("key/value count"), "{err}");
    }
    // A count the header allows but the file does not back: tensor infos get read as
    // key/values and parsing fails somewhere (open_err checks it is an error).
    let mut b = valid_writer().build();
    patch_u64(&mut b.bytes, b.kv_count_at, 4);
    open_err(&b.bytes);
}

#[test]
fn huge_string_lengths() {
    // In a key.
    let mut b = valid_writer().build();
    patch_u64(&mut b.bytes, b.kv_at[0], u64::MAX);
    let err = open_err(&b.bytes);
    assert!(matches!(err, GgufError::StringTooLong { .. }), "{err}");
    assert!(err.to_string().contains("key #0"), "{err}");
    let mut b = valid_writer().build();
    patch_u64(&mut b.bytes, b.kv_at[0], 60_000);
    assert!(matches!(
        open_err(&b.bytes),
        GgufError::Truncated { needed: 60_000, .. }
    ));

    // In a string value.
    let mut raw = 8u32.to_le_bytes().to_vec();
    raw.extend_from_slice(&u64::MAX.to_le_bytes());
    let err = open_err(&valid_writer().kv_raw(b"k.s", raw).build().bytes);
    assert!(matches!(err, GgufError::Truncated { .. }), "{err}");
    assert!(err.to_string().contains("\"k.s\""), "{err}");

    // In a tensor name.
    let mut b = valid_writer().build();
    patch_u64(&mut b.bytes, b.infos[0].start, 1 << 50);
    let err = open_err(&b.bytes);
    assert!(
        matches!(err, GgufError::StringTooLong { .. })
            && err.to_string().contains("name of tensor #0"),
        "{err}"
    );
}

#[test]
fn huge_array_lengths() {
    for (elem, len) in [
        (4u32, u64::MAX),
        (4, u64::MAX / 4 + 1),
        (0, 1 << 40),
        (8, 1 << 40),
        (9, 1 << 40),
        (7, 1 << 20),
    ] {
        let mut raw = 9u32.to_le_bytes().to_vec();
        raw.extend_from_slice(&elem.to_le_bytes());
        raw.extend_from_slice(&len.to_le_bytes());
        raw.extend_from_slice(&[0; 64]);
        let err = open_err(&valid_writer().kv_raw(b"k.arr", raw).build().bytes);
        assert!(
            matches!(err, GgufError::CountTooLarge { .. }),
            "elem type {elem}, len {len}: {err}"
        );
        assert!(
            err.to_string().contains("array length of key \"k.arr\""),
            "{err}"
        );
    }
    // Exactly at the boundary: 4 bytes short of N u32s.
    let mut raw = 9u32.to_le_bytes().to_vec();
    raw.extend_from_slice(&4u32.to_le_bytes());
    raw.extend_from_slice(&3u64.to_le_bytes());
    raw.extend_from_slice(&[0; 8]);
    let mut w = GgufWriter::new().kv_raw(b"k.arr", raw);
    w.pad_end = false;
    let err = open_err(&w.build().bytes);
    assert!(
        matches!(
            err,
            GgufError::CountTooLarge {
                count: 3,
                max: 2,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn nested_arrays_are_bounded() {
    let mut raw = Vec::new();
    for _ in 0..MAX_ARRAY_DEPTH + 5 {
        raw.extend_from_slice(&9u32.to_le_bytes());
        raw.extend_from_slice(&1u64.to_le_bytes());
    }
    raw.extend_from_slice(&0u32.to_le_bytes());
    raw.extend_from_slice(&0u64.to_le_bytes());
    let mut value = 9u32.to_le_bytes().to_vec();
    value.extend_from_slice(&raw);
    let err = open_err(&valid_writer().kv_raw(b"k.deep", value).build().bytes);
    assert!(
        matches!(err, GgufError::NestingTooDeep { .. }) && err.to_string().contains("k.deep"),
        "{err}"
    );

    // Nesting up to the limit is fine.
    let mut inner = Array::U8(vec![1]);
    for _ in 1..MAX_ARRAY_DEPTH {
        inner = Array::Array(vec![inner]);
    }
    assert!(
        GgufFile::from_bytes(&valid_writer().kv("k.ok", Value::Array(inner)).build().bytes).is_ok()
    );
}

#[test]
fn bad_keys_and_values() {
    let err = open_err(&valid_writer().kv("", Value::U8(1)).build().bytes);
    assert!(matches!(err, GgufError::EmptyKey { .. }), "{err}");

    let err = open_err(
        &valid_writer()
            .kv("eostok.block_count", Value::U8(1))
            .build()
            .bytes,
    );
    assert!(
        matches!(err, GgufError::DuplicateKey { .. })
            && err.to_string().contains("eostok.block_count"),
        "{err}"
    );

    let err = open_err(
        &valid_writer()
            .kv_raw(b"k.\xff", encode_value(&Value::U8(1)))
            .build()
            .bytes,
    );
    assert!(matches!(err, GgufError::InvalidUtf8 { .. }), "{err}");

    let mut s = 8u32.to_le_bytes().to_vec();
    put_bytes_string(&mut s, b"\xc3\x28");
    let err = open_err(&valid_writer().kv_raw(b"k.s", s).build().bytes);
    assert!(
        matches!(err, GgufError::InvalidUtf8 { .. }) && err.to_string().contains("k.s"),
        "{err}"
    );

    let mut raw = 13u32.to_le_bytes().to_vec();
    raw.push(0);
    let err = open_err(&valid_writer().kv_raw(b"k.t", raw).build().bytes);
    assert!(
        matches!(err, GgufError::UnknownValueType { type_id: 13, .. })
            && err.to_string().contains("k.t"),
        "{err}"
    );

    let err = open_err(
        &valid_writer()
            .kv_raw(b"k.b", vec![7, 0, 0, 0, 2])
            .build()
            .bytes,
    );
    assert!(
        matches!(err, GgufError::InvalidBool { value: 2, .. }),
        "{err}"
    );

    // Array whose element type is unknown.
    let mut raw = 9u32.to_le_bytes().to_vec();
    raw.extend_from_slice(&99u32.to_le_bytes());
    raw.extend_from_slice(&1u64.to_le_bytes());
    assert!(matches!(
        open_err(&valid_writer().kv_raw(b"k.a", raw).build().bytes),
        GgufError::UnknownValueType { type_id: 99, .. }
    ));
}

#[test]
fn bad_alignment_values() {
    for value in [
        Value::U32(0),
        Value::U32(3),
        Value::U32(48),
        Value::U64(1 << 40),
        Value::I32(-32),
        Value::String("32".into()),
    ] {
        let err = open_err(
            &valid_writer()
                .kv("general.alignment", value.clone())
                .build()
                .bytes,
        );
        assert!(
            matches!(err, GgufError::BadAlignment { .. }),
            "{value:?}: {err}"
        );
        assert!(err.to_string().contains("general.alignment"), "{err}");
    }
}

#[test]
fn bad_dims() {
    // n_dims above 4, and 0.
    for n in [5u32, 0, u32::MAX] {
        let mut b = valid_writer().build();
        patch_u32(&mut b.bytes, b.infos[0].n_dims_at, n);
        let err = open_err(&b.bytes);
        assert_eq!(
            bad_tensor(&err),
            ("a", &TensorProblem::BadDimCount(n)),
            "{err}"
        );
        assert!(err.to_string().contains("n_dims"), "{err}");
    }
    // A zero dim.
    let mut b = valid_writer().build();
    patch_u64(&mut b.bytes, b.infos[0].dims_at + 8, 0);
    let err = open_err(&b.bytes);
    assert_eq!(
        bad_tensor(&err),
        ("a", &TensorProblem::ZeroDim { index: 1 }),
        "{err}"
    );
    assert!(err.to_string().contains("ne[1]"), "{err}");

    // Products that overflow u64, or exceed i64::MAX.
    for dims in [
        vec![1 << 32, 1 << 32],
        vec![32, u64::MAX / 16],
        vec![1 << 21, 1 << 21, 1 << 21, 1 << 21],
        vec![1 << 63],
    ] {
        let w = valid_writer().tensor("huge", &dims, GgmlType::F32, vec![]);
        let err = open_err(&w.build().bytes);
        let (name, problem) = bad_tensor(&err);
        assert_eq!(name, "huge");
        assert!(
            matches!(problem, TensorProblem::ElementCountOverflow { .. }),
            "{dims:?}: {err}"
        );
        assert!(err.to_string().contains("overflows"), "{err}");
    }
    // Element count fits but the byte size does not.
    let w = valid_writer().tensor("bytes", &[1 << 61, 2], GgmlType::F32, vec![]);
    let err = open_err(&w.build().bytes);
    assert!(
        matches!(bad_tensor(&err).1, TensorProblem::ByteSizeOverflow { .. }),
        "{err}"
    );
}

#[test]
fn partial_blocks_are_rejected() {
    let w = valid_writer().tensor("q", &[48, 2], GgmlType::Q4_0, vec![0; 54]);
    let err = open_err(&w.build().bytes);
    assert_eq!(
        bad_tensor(&err),
        (
            "q",
            &TensorProblem::PartialBlock {
                ne0: 48,
                ty: GgmlType::Q4_0,
                block_size: 32
            }
        )
    );
    assert!(
        err.to_string()
            .contains("not a multiple of the q4_0 block size 32"),
        "{err}"
    );

    // ggml's rule: ne[0] (not the element count) must be whole blocks.
    let w = valid_writer().tensor("k", &[128, 2], GgmlType::Q4_K, vec![0; 288]);
    assert!(matches!(
        bad_tensor(&open_err(&w.build().bytes)).1,
        TensorProblem::PartialBlock { .. }
    ));
}

#[test]
fn unknown_and_removed_type_ids() {
    for id in [4u32, 5, 31, 36, 43, 1000, u32::MAX] {
        let mut b = valid_writer().build();
        patch_u32(&mut b.bytes, b.infos[1].type_at, id);
        let err = open_err(&b.bytes);
        assert_eq!(
            bad_tensor(&err),
            ("b", &TensorProblem::UnknownType(id)),
            "{err}"
        );
        assert!(
            err.to_string()
                .contains(&format!("unknown ggml type id {id}")),
            "{err}"
        );
    }
}

#[test]
fn offsets_out_of_range_or_misaligned() {
    // Beyond EOF, including values that overflow when added to the data offset.
    for offset in [4096u64, u64::MAX - 31, 1 << 40] {
        let mut b = valid_writer().build();
        patch_u64(&mut b.bytes, b.infos[1].offset_at, offset);
        let err = open_err(&b.bytes);
        assert!(
            matches!(bad_tensor(&err), ("b", TensorProblem::OutOfBounds { .. })),
            "{err}"
        );
        assert!(
            err.to_string().contains("beyond the end of the file"),
            "{err}"
        );
    }
    // Last tensor runs past EOF by one byte.
    let mut b = valid_writer().build();
    let end = b.tensor_ranges[1].1;
    b.bytes.truncate(end - 1);
    assert!(matches!(
        bad_tensor(&open_err(&b.bytes)),
        ("b", TensorProblem::OutOfBounds { .. })
    ));

    let mut b = valid_writer().build();
    patch_u64(&mut b.bytes, b.infos[1].offset_at, 72);
    let err = open_err(&b.bytes);
    assert_eq!(
        bad_tensor(&err),
        (
            "b",
            &TensorProblem::MisalignedOffset {
                offset: 72,
                alignment: 32
            }
        ),
        "{err}"
    );
}

#[test]
fn duplicate_names_and_overlaps() {
    let w = valid_writer().tensor("a", &[8], GgmlType::F32, vec![0; 32]);
    let err = open_err(&w.build().bytes);
    assert_eq!(
        bad_tensor(&err),
        ("a", &TensorProblem::DuplicateName),
        "{err}"
    );

    // "b" moved onto "a" (68 bytes at offset 0): offset 64 is aligned but overlaps.
    let mut b = valid_writer().build();
    patch_u64(&mut b.bytes, b.infos[1].offset_at, 64);
    let err = open_err(&b.bytes);
    let (name, problem) = bad_tensor(&err);
    assert_eq!(name, "b");
    assert!(
        matches!(problem, TensorProblem::Overlap { other, .. } if other == "a"),
        "{err}"
    );
    assert!(err.to_string().contains("overlaps tensor \"a\""), "{err}");

    // Same start.
    let mut b = valid_writer().build();
    patch_u64(&mut b.bytes, b.infos[1].offset_at, 0);
    assert!(matches!(
        bad_tensor(&open_err(&b.bytes)).1,
        TensorProblem::Overlap { .. }
    ));

    // Gaps between tensors are fine (only overlaps are errors).
    let w = GgufWriter::new()
        .tensor_raw(b"x", &[8], 0, vec![0; 32], Some(128))
        .tensor_raw(b"y", &[8], 0, vec![0; 32], Some(0));
    let f = GgufFile::from_bytes(&w.build().bytes).unwrap();
    assert_eq!(f.tensor_info("x").unwrap().offset, 128);
}

#[test]
fn tensor_names() {
    let w = valid_writer().tensor_raw(b"", &[8], 0, vec![0; 32], None);
    assert_eq!(
        bad_tensor(&open_err(&w.build().bytes)).1,
        &TensorProblem::EmptyName
    );

    let long = vec![b'n'; 257];
    let err = open_err(
        &valid_writer()
            .tensor_raw(&long, &[8], 0, vec![0; 32], None)
            .build()
            .bytes,
    );
    assert!(
        matches!(
            err,
            GgufError::StringTooLong {
                len: 257,
                max: 256,
                ..
            }
        ),
        "{err}"
    );
    // Longer than ggml's 63 but within our bound: accepted.
    let ok = vec![b'n'; 200];
    assert!(GgufFile::from_bytes(
        &valid_writer()
            .tensor_raw(&ok, &[8], 0, vec![0; 32], None)
            .build()
            .bytes
    )
    .is_ok());

    let err = open_err(
        &valid_writer()
            .tensor_raw(b"bad\xff", &[8], 0, vec![0; 32], None)
            .build()
            .bytes,
    );
    assert!(
        matches!(err, GgufError::InvalidUtf8 { .. })
            && err.to_string().contains("name of tensor #2"),
        "{err}"
    );
}

/// Random corruption of the header: any outcome but a panic or a large allocation is fine.
#[test]
fn random_header_corruption_never_panics() {
    let built = valid_writer().build();
    let header_len = built.data_offset;
    let mut rng = Rng::new(42);
    let mut errors = 0;
    for _ in 0..3000 {
        let mut bytes = built.bytes.clone();
        for _ in 0..1 + rng.below(4) {
            let at = rng.below(header_len);
            bytes[at] = match rng.below(3) {
                0 => rng.next_u64() as u8,
                1 => bytes[at] ^ (1 << rng.below(8)),
                _ => 0xff,
            };
        }
        LARGEST.with(|l| l.set(0));
        TRACKING.with(|t| t.set(true));
        let result = GgufFile::from_bytes(&bytes);
        TRACKING.with(|t| t.set(false));
        assert!(LARGEST.with(|l| l.get()) <= 8 * bytes.len() + 4096);
        errors += result.is_err() as usize;
    }
    assert!(
        errors > 1000,
        "most corruptions should be caught, only {errors} were"
    );
}

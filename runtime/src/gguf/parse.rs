//! Parsing and validating the whole header (key/values and tensor infos) before any tensor
//! is handed out.

use super::cursor::Cursor;
use super::value::{Array, Metadata, Value, ValueType};
use super::{GgufError, TensorInfo, TensorProblem};
use crate::quant::GgmlType;
use std::collections::HashMap;

/// ggml rejects names of 64 bytes or more; we accept longer ones up to this bound.
pub const MAX_TENSOR_NAME_LEN: u64 = 256;
/// The spec's limit for keys.
pub const MAX_KEY_LEN: u64 = 65_535;
/// Arrays of arrays deeper than this are rejected (bounds recursion on hostile input).
pub const MAX_ARRAY_DEPTH: usize = 16;
/// ggml's `GGML_MAX_DIMS`.
pub const MAX_DIMS: u32 = 4;
/// `general.alignment` when the key is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;

/// Smallest key/value: u64 key length, 1 key byte, u32 type, 1 value byte.
const MIN_KV_BYTES: u64 = 8 + 1 + 4 + 1;
/// Smallest tensor info: u64 name length, 1 name byte, u32 n_dims, one u64 dim, u32 type, u64 offset.
const MIN_TENSOR_INFO_BYTES: u64 = 8 + 1 + 4 + 8 + 4 + 8;

pub(super) struct Layout {
    pub version: u32,
    pub metadata: Metadata,
    pub tensors: Vec<TensorInfo>,
    pub by_name: HashMap<String, usize>,
    pub alignment: u64,
    pub data_offset: u64,
}

pub(super) fn parse(bytes: &[u8]) -> Result<Layout, GgufError> {
    let mut cur = Cursor::new(bytes);
    let magic: [u8; 4] = cur.array(&"magic")?;
    if &magic != b"GGUF" {
        return Err(GgufError::BadMagic { found: magic });
    }
    let version = cur.u32(&"version")?;
    match version {
        2 | 3 => {}
        v if matches!(v.swap_bytes(), 2 | 3) => {
            return Err(GgufError::BigEndian {
                version: v.swap_bytes(),
            })
        }
        v => return Err(GgufError::UnsupportedVersion { version: v }),
    }
    let tensor_count_at = cur.pos();
    let tensor_count = cur.u64(&"tensor count")?;
    let kv_count_at = cur.pos();
    let kv_count = cur.u64(&"metadata key/value count")?;
    // Reject absurd counts up front; the tensor count is checked again before allocating.
    cur.check_count(
        tensor_count,
        MIN_TENSOR_INFO_BYTES,
        tensor_count_at,
        &"tensor count",
    )?;
    let kv_count = cur.check_count(
        kv_count,
        MIN_KV_BYTES,
        kv_count_at,
        &"metadata key/value count",
    )?;

    let mut metadata = Metadata::with_capacity(kv_count);
    for i in 0..kv_count {
        let key_at = cur.pos() as u64;
        let key = cur.string(MAX_KEY_LEN, &format_args!("key #{i}"))?;
        if key.is_empty() {
            return Err(GgufError::EmptyKey { offset: key_at });
        }
        if metadata.contains_key(&key) {
            return Err(GgufError::DuplicateKey {
                offset: key_at,
                key,
            });
        }
        let value = read_value(&mut cur, &key)?;
        metadata.insert(key, value);
    }
    let alignment = alignment(&metadata)?;

    let tensor_count = cur.check_count(
        tensor_count,
        MIN_TENSOR_INFO_BYTES,
        tensor_count_at,
        &"tensor count",
    )?;
    let mut tensors = Vec::with_capacity(tensor_count);
    let mut info_offsets = Vec::with_capacity(tensor_count);
    let mut by_name = HashMap::with_capacity(tensor_count);
    for i in 0..tensor_count {
        let info_at = cur.pos() as u64;
        let info = read_tensor_info(&mut cur, i, alignment)?;
        if by_name.contains_key(&info.name) {
            return Err(bad_tensor(
                info_at,
                &info.name,
                TensorProblem::DuplicateName,
            ));
        }
        by_name.insert(info.name.clone(), i);
        tensors.push(info);
        info_offsets.push(info_at);
    }

    // Padding after the infos, then tensor data. Without tensors the file may end earlier.
    let infos_end = cur.pos() as u64;
    let data_offset = infos_end
        .checked_next_multiple_of(alignment)
        .unwrap_or(u64::MAX);
    check_ranges(&tensors, &info_offsets, data_offset, bytes.len() as u64)?;

    Ok(Layout {
        version,
        metadata,
        tensors,
        by_name,
        alignment,
        data_offset,
    })
}

fn bad_tensor(offset: u64, name: &str, problem: TensorProblem) -> GgufError {
    GgufError::BadTensor {
        offset,
        name: name.to_owned(),
        problem,
    }
}

/// `general.alignment`: any integer type (ggml writes u32) holding a power of two.
fn alignment(metadata: &Metadata) -> Result<u64, GgufError> {
    let Some(value) = metadata.get("general.alignment") else {
        return Ok(DEFAULT_ALIGNMENT);
    };
    match value.as_integer() {
        Some(v) if v > 0 && v <= u32::MAX as i128 && (v as u64).is_power_of_two() => Ok(v as u64),
        _ => Err(GgufError::BadAlignment {
            found: value.describe(),
        }),
    }
}

fn read_value(cur: &mut Cursor, key: &str) -> Result<Value, GgufError> {
    let ty = read_value_type(cur, key)?;
    Ok(match ty {
        ValueType::Array => Value::Array(read_array(cur, key, 0)?),
        ValueType::String => {
            Value::String(cur.string(u64::MAX, &format_args!("string value of key {key:?}"))?)
        }
        ValueType::Bool => Value::Bool(read_bool(cur, key)?),
        scalar => {
            let bytes = cur.take(
                scalar.min_encoded_size(),
                &format_args!("{} value of key {key:?}", scalar.name()),
            )?;
            scalar_value(scalar, bytes)
        }
    })
}

fn read_value_type(cur: &mut Cursor, key: &str) -> Result<ValueType, GgufError> {
    let at = cur.pos() as u64;
    let type_id = cur.u32(&format_args!("value type of key {key:?}"))?;
    ValueType::from_id(type_id).ok_or_else(|| GgufError::UnknownValueType {
        offset: at,
        key: key.to_owned(),
        type_id,
    })
}

fn read_bool(cur: &mut Cursor, key: &str) -> Result<bool, GgufError> {
    let at = cur.pos() as u64;
    match cur.u8(&format_args!("bool value of key {key:?}"))? {
        0 => Ok(false),
        1 => Ok(true),
        value => Err(GgufError::InvalidBool {
            offset: at,
            key: key.to_owned(),
            value,
        }),
    }
}

/// A fixed-size scalar from exactly `ty.min_encoded_size()` little-endian bytes.
fn scalar_value(ty: ValueType, b: &[u8]) -> Value {
    match ty {
        ValueType::U8 => Value::U8(b[0]),
        ValueType::I8 => Value::I8(b[0] as i8),
        ValueType::U16 => Value::U16(u16::from_le_bytes([b[0], b[1]])),
        ValueType::I16 => Value::I16(i16::from_le_bytes([b[0], b[1]])),
        ValueType::U32 => Value::U32(u32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        ValueType::I32 => Value::I32(i32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        ValueType::F32 => Value::F32(f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        ValueType::U64 => Value::U64(u64::from_le_bytes(le8(b))),
        ValueType::I64 => Value::I64(i64::from_le_bytes(le8(b))),
        ValueType::F64 => Value::F64(f64::from_le_bytes(le8(b))),
        ValueType::Bool | ValueType::String | ValueType::Array => {
            unreachable!("not a fixed-size scalar")
        }
    }
}

fn le8(b: &[u8]) -> [u8; 8] {
    [b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]
}

/// An array value: u32 element type, u64 count, elements. The count is bounded by the bytes
/// left before anything is allocated.
fn read_array(cur: &mut Cursor, key: &str, depth: usize) -> Result<Array, GgufError> {
    let at = cur.pos() as u64;
    if depth >= MAX_ARRAY_DEPTH {
        return Err(GgufError::NestingTooDeep {
            offset: at,
            key: key.to_owned(),
            max: MAX_ARRAY_DEPTH,
        });
    }
    let elem = read_value_type(cur, key)?;
    let count_at = cur.pos();
    let count = cur.u64(&format_args!("array length of key {key:?}"))?;
    let n = cur.check_count(
        count,
        elem.min_encoded_size(),
        count_at,
        &format_args!("array length of key {key:?}"),
    )?;
    let what = format_args!("array of key {key:?}");
    Ok(match elem {
        ValueType::String => {
            let mut strings = Vec::with_capacity(n);
            for i in 0..n {
                strings.push(cur.string(u64::MAX, &format_args!("string #{i} of array {key:?}"))?);
            }
            Array::String(strings)
        }
        ValueType::Array => {
            let mut arrays = Vec::with_capacity(n);
            for _ in 0..n {
                arrays.push(read_array(cur, key, depth + 1)?);
            }
            Array::Array(arrays)
        }
        ValueType::Bool => {
            let mut bools = Vec::with_capacity(n);
            for _ in 0..n {
                bools.push(read_bool(cur, key)?);
            }
            Array::Bool(bools)
        }
        ValueType::U8 => Array::U8(cur.take(n as u64, &what)?.to_vec()),
        ValueType::I8 => Array::I8(
            cur.take(n as u64, &what)?
                .iter()
                .map(|&b| b as i8)
                .collect(),
        ),
        ValueType::U16 => Array::U16(le_chunks(cur.take(2 * n as u64, &what)?, 2, |b| {
            u16::from_le_bytes([b[0], b[1]])
        })),
        ValueType::I16 => Array::I16(le_chunks(cur.take(2 * n as u64, &what)?, 2, |b| {
            i16::from_le_bytes([b[0], b[1]])
        })),
        ValueType::U32 => Array::U32(le_chunks(cur.take(4 * n as u64, &what)?, 4, |b| {
            u32::from_le_bytes([b[0], b[1], b[2], b[3]])
        })),
        ValueType::I32 => Array::I32(le_chunks(cur.take(4 * n as u64, &what)?, 4, |b| {
            i32::from_le_bytes([b[0], b[1], b[2], b[3]])
        })),
        ValueType::F32 => Array::F32(le_chunks(cur.take(4 * n as u64, &what)?, 4, |b| {
            f32::from_le_bytes([b[0], b[1], b[2], b[3]])
        })),
        ValueType::U64 => Array::U64(le_chunks(cur.take(8 * n as u64, &what)?, 8, |b| {
            u64::from_le_bytes(le8(b))
        })),
        ValueType::I64 => Array::I64(le_chunks(cur.take(8 * n as u64, &what)?, 8, |b| {
            i64::from_le_bytes(le8(b))
        })),
        ValueType::F64 => Array::F64(le_chunks(cur.take(8 * n as u64, &what)?, 8, |b| {
            f64::from_le_bytes(le8(b))
        })),
    })
}

fn le_chunks<T>(bytes: &[u8], size: usize, convert: impl Fn(&[u8]) -> T) -> Vec<T> {
    bytes.chunks_exact(size).map(convert).collect()
}

fn read_tensor_info(
    cur: &mut Cursor,
    index: usize,
    alignment: u64,
) -> Result<TensorInfo, GgufError> {
    let at = cur.pos() as u64;
    let name = cur.string(
        MAX_TENSOR_NAME_LEN,
        &format_args!("name of tensor #{index}"),
    )?;
    let bad = |problem| bad_tensor(at, &name, problem);
    if name.is_empty() {
        return Err(bad(TensorProblem::EmptyName));
    }
    let n_dims = cur.u32(&format_args!("n_dims of tensor {name:?}"))?;
    if n_dims == 0 || n_dims > MAX_DIMS {
        return Err(bad(TensorProblem::BadDimCount(n_dims)));
    }
    let mut dims = Vec::with_capacity(n_dims as usize);
    for i in 0..n_dims {
        dims.push(cur.u64(&format_args!("ne[{i}] of tensor {name:?}"))?);
    }
    let type_id = cur.u32(&format_args!("type of tensor {name:?}"))?;
    let offset = cur.u64(&format_args!("data offset of tensor {name:?}"))?;

    if let Some(index) = dims.iter().position(|&d| d == 0) {
        return Err(bad(TensorProblem::ZeroDim { index }));
    }
    let ggml_type =
        GgmlType::from_id(type_id).ok_or_else(|| bad(TensorProblem::UnknownType(type_id)))?;
    // ggml also bounds element counts by INT64_MAX.
    let n_elements = dims
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= i64::MAX as u64)
        .ok_or_else(|| bad(TensorProblem::ElementCountOverflow { dims: dims.clone() }))?;
    let block_size = ggml_type.block_size() as u64;
    if dims[0] % block_size != 0 {
        return Err(bad(TensorProblem::PartialBlock {
            ne0: dims[0],
            ty: ggml_type,
            block_size: block_size as usize,
        }));
    }
    let n_bytes = (dims[0] / block_size)
        .checked_mul(ggml_type.type_size() as u64)
        .and_then(|row_bytes| row_bytes.checked_mul(n_elements / dims[0]))
        .ok_or_else(|| {
            bad(TensorProblem::ByteSizeOverflow {
                ty: ggml_type,
                dims: dims.clone(),
            })
        })?;
    if offset % alignment != 0 {
        return Err(bad(TensorProblem::MisalignedOffset { offset, alignment }));
    }
    Ok(TensorInfo {
        name,
        dims,
        ggml_type,
        offset,
        n_bytes,
    })
}

/// Every tensor's data lies inside the file, and no two tensors share a byte.
fn check_ranges(
    tensors: &[TensorInfo],
    info_offsets: &[u64],
    data_offset: u64,
    file_len: u64,
) -> Result<(), GgufError> {
    let mut ranges = Vec::with_capacity(tensors.len());
    for (i, t) in tensors.iter().enumerate() {
        let start = data_offset.checked_add(t.offset);
        let end = start.and_then(|s| s.checked_add(t.n_bytes));
        match (start, end) {
            (Some(start), Some(end)) if end <= file_len => ranges.push((start, end, i)),
            _ => {
                let start = data_offset.saturating_add(t.offset);
                let end = start.saturating_add(t.n_bytes);
                return Err(bad_tensor(
                    info_offsets[i],
                    &t.name,
                    TensorProblem::OutOfBounds {
                        start,
                        end,
                        file_len,
                    },
                ));
            }
        }
    }
    ranges.sort_unstable();
    for pair in ranges.windows(2) {
        let ((prev_start, prev_end, prev), (start, end, i)) = (pair[0], pair[1]);
        if start < prev_end {
            let problem = TensorProblem::Overlap {
                start,
                end,
                other: tensors[prev].name.clone(),
                other_start: prev_start,
                other_end: prev_end,
            };
            return Err(bad_tensor(info_offsets[i], &tensors[i].name, problem));
        }
    }
    Ok(())
}

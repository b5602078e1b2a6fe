//! Errors from opening and querying a GGUF file. Messages name the byte offset and the key or
//! tensor involved; the caller adds the file path.

use crate::quant::GgmlType;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GgufError {
    #[error("cannot read the file: {0}")]
    Io(#[from] std::io::Error),
    #[error("an embedded model buffer must start at a 32-byte aligned address, this one starts at {address:#x}")]
    UnalignedBuffer { address: usize },
    #[error("not a GGUF file: the first bytes are {found:02x?}, expected \"GGUF\" (47 47 55 46)")]
    BadMagic { found: [u8; 4] },
    #[error("GGUF version {version} is not supported (only versions 2 and 3 are)")]
    UnsupportedVersion { version: u32 },
    #[error("this is a big-endian GGUF file (version {version} byte-swapped); only little-endian files are supported")]
    BigEndian { version: u32 },
    #[error(
        "file truncated: {what} at byte {offset} needs {needed} bytes, but only {available} remain"
    )]
    Truncated {
        offset: u64,
        what: String,
        needed: u64,
        available: u64,
    },
    #[error("{what} at byte {offset} is {count}, but the {remaining} bytes left in the file can hold at most {max}")]
    CountTooLarge {
        offset: u64,
        what: String,
        count: u64,
        max: u64,
        remaining: u64,
    },
    #[error("{what} at byte {offset} is {len} bytes long, above the limit of {max}")]
    StringTooLong {
        offset: u64,
        what: String,
        len: u64,
        max: u64,
    },
    #[error("{what} at byte {offset} is not valid UTF-8")]
    InvalidUtf8 { offset: u64, what: String },
    #[error("empty metadata key at byte {offset}")]
    EmptyKey { offset: u64 },
    #[error("duplicate metadata key {key:?} at byte {offset}")]
    DuplicateKey { offset: u64, key: String },
    #[error("metadata key {key:?}: unknown value type id {type_id} at byte {offset}")]
    UnknownValueType {
        offset: u64,
        key: String,
        type_id: u32,
    },
    #[error("metadata key {key:?}: bool at byte {offset} is {value}, must be 0 or 1")]
    InvalidBool { offset: u64, key: String, value: u8 },
    #[error("metadata key {key:?}: arrays nested deeper than {max} levels at byte {offset}")]
    NestingTooDeep {
        offset: u64,
        key: String,
        max: usize,
    },
    #[error("general.alignment must be a power of two that fits in u32, found {found}")]
    BadAlignment { found: String },
    #[error("tensor {name:?} (info at byte {offset}): {problem}")]
    BadTensor {
        offset: u64,
        name: String,
        problem: TensorProblem,
    },
    #[error("tensor {name:?} not found")]
    TensorNotFound { name: String },
    #[error("tensor {name:?} has dims {found:?}, expected {expected:?} (ggml order, ne[0] first)")]
    ShapeMismatch {
        name: String,
        expected: Vec<u64>,
        found: Vec<u64>,
    },
    #[error("tensor {name:?} has type {found}, expected one of {allowed:?}")]
    TypeNotAllowed {
        name: String,
        found: GgmlType,
        allowed: Vec<GgmlType>,
    },
    #[error("metadata key {key:?} not found")]
    MissingKey { key: String },
    #[error("metadata key {key:?} is {found}, expected {expected}")]
    WrongValueType {
        key: String,
        expected: &'static str,
        found: String,
    },
}

/// What is wrong with one tensor info.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TensorProblem {
    #[error("empty name")]
    EmptyName,
    #[error("duplicate name")]
    DuplicateName,
    #[error("n_dims is {0}, must be 1 to 4")]
    BadDimCount(u32),
    #[error("dimension ne[{index}] is 0")]
    ZeroDim { index: usize },
    #[error("unknown ggml type id {0}")]
    UnknownType(u32),
    #[error("element count of dims {dims:?} overflows")]
    ElementCountOverflow { dims: Vec<u64> },
    #[error("row length ne[0] = {ne0} is not a multiple of the {ty} block size {block_size}")]
    PartialBlock {
        ne0: u64,
        ty: GgmlType,
        block_size: usize,
    },
    #[error("byte size of {ty} dims {dims:?} overflows")]
    ByteSizeOverflow { ty: GgmlType, dims: Vec<u64> },
    #[error("data offset {offset} is not a multiple of the alignment {alignment}")]
    MisalignedOffset { offset: u64, alignment: u64 },
    #[error(
        "data at file bytes [{start}, {end}) extends beyond the end of the file ({file_len} bytes)"
    )]
    OutOfBounds { start: u64, end: u64, file_len: u64 },
    #[error("data at file bytes [{start}, {end}) overlaps tensor {other:?} at [{other_start}, {other_end})")]
    Overlap {
        start: u64,
        end: u64,
        other: String,
        other_start: u64,
        other_end: u64,
    },
}

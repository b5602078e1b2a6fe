//! Test-only GGUF writer: header, key/values, tensor infos, aligned data. It writes valid
//! files by default and has knobs (raw values, forced counts, forced offsets, raw type ids)
//! to build hostile ones. It also records where each field landed so tests can patch bytes.

use eostok_runtime::gguf::{Array, Value};
use eostok_runtime::quant::GgmlType;

pub struct Tensor {
    pub name: Vec<u8>,
    pub dims: Vec<u64>,
    pub type_id: u32,
    pub data: Vec<u8>,
    /// Offset relative to the data section; `None` packs tensors in order, each aligned.
    pub offset: Option<u64>,
}

pub struct GgufWriter {
    pub version: u32,
    /// Layout alignment (written as `general.alignment` only if `write_alignment_key`).
    pub alignment: u64,
    pub write_alignment_key: bool,
    /// Encoded key/values: key bytes, then type id + value bytes.
    pub kvs: Vec<(Vec<u8>, Vec<u8>)>,
    pub tensors: Vec<Tensor>,
    pub tensor_count: Option<u64>,
    pub kv_count: Option<u64>,
    /// Pad after the last tensor too, as ggml does.
    pub pad_end: bool,
}

/// Where things landed in a built file.
pub struct Built {
    pub bytes: Vec<u8>,
    pub tensor_count_at: usize,
    pub kv_count_at: usize,
    /// Start of each key/value (its key length field).
    pub kv_at: Vec<usize>,
    pub infos: Vec<InfoAt>,
    pub data_offset: usize,
    /// Absolute [start, end) of each tensor's data.
    pub tensor_ranges: Vec<(usize, usize)>,
}

pub struct InfoAt {
    pub start: usize,
    pub n_dims_at: usize,
    pub dims_at: usize,
    pub type_at: usize,
    pub offset_at: usize,
}

impl Default for GgufWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl GgufWriter {
    pub fn new() -> Self {
        GgufWriter {
            version: 3,
            alignment: 32,
            write_alignment_key: false,
            kvs: Vec::new(),
            tensors: Vec::new(),
            tensor_count: None,
            kv_count: None,
            pad_end: true,
        }
    }

    /// Sets the layout alignment and writes `general.alignment` (u32) first.
    pub fn with_alignment(mut self, alignment: u64) -> Self {
        self.alignment = alignment;
        self.kvs.insert(
            0,
            (
                b"general.alignment".to_vec(),
                encode_value(&Value::U32(alignment as u32)),
            ),
        );
        self
    }

    pub fn kv(mut self, key: &str, value: Value) -> Self {
        self.kvs
            .push((key.as_bytes().to_vec(), encode_value(&value)));
        self
    }

    /// A key followed by arbitrary bytes in place of `type id + value`.
    pub fn kv_raw(mut self, key: &[u8], raw: Vec<u8>) -> Self {
        self.kvs.push((key.to_vec(), raw));
        self
    }

    pub fn tensor(self, name: &str, dims: &[u64], ty: GgmlType, data: Vec<u8>) -> Self {
        self.tensor_raw(name.as_bytes(), dims, ty.id(), data, None)
    }

    pub fn tensor_raw(
        mut self,
        name: &[u8],
        dims: &[u64],
        type_id: u32,
        data: Vec<u8>,
        offset: Option<u64>,
    ) -> Self {
        self.tensors.push(Tensor {
            name: name.to_vec(),
            dims: dims.to_vec(),
            type_id,
            data,
            offset,
        });
        self
    }

    pub fn build(&self) -> Built {
        let mut out = Vec::new();
        out.extend_from_slice(b"GGUF");
        out.extend_from_slice(&self.version.to_le_bytes());
        let tensor_count_at = out.len();
        out.extend_from_slice(
            &self
                .tensor_count
                .unwrap_or(self.tensors.len() as u64)
                .to_le_bytes(),
        );
        let kv_count_at = out.len();
        out.extend_from_slice(&self.kv_count.unwrap_or(self.kvs.len() as u64).to_le_bytes());

        let mut kv_at = Vec::new();
        for (key, raw) in &self.kvs {
            kv_at.push(out.len());
            put_bytes_string(&mut out, key);
            out.extend_from_slice(raw);
        }

        // Offsets: packed in order, each aligned, unless forced.
        let mut offsets = Vec::new();
        let mut next = 0u64;
        for t in &self.tensors {
            let offset = t.offset.unwrap_or(next);
            offsets.push(offset);
            next = next.max(align(offset + t.data.len() as u64, self.alignment));
        }

        let mut infos = Vec::new();
        for (t, &offset) in self.tensors.iter().zip(&offsets) {
            let start = out.len();
            put_bytes_string(&mut out, &t.name);
            let n_dims_at = out.len();
            out.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            let dims_at = out.len();
            for d in &t.dims {
                out.extend_from_slice(&d.to_le_bytes());
            }
            let type_at = out.len();
            out.extend_from_slice(&t.type_id.to_le_bytes());
            let offset_at = out.len();
            out.extend_from_slice(&offset.to_le_bytes());
            infos.push(InfoAt {
                start,
                n_dims_at,
                dims_at,
                type_at,
                offset_at,
            });
        }

        let data_offset = align(out.len() as u64, self.alignment) as usize;
        out.resize(data_offset, 0);
        let mut tensor_ranges = Vec::new();
        for (t, &offset) in self.tensors.iter().zip(&offsets) {
            let start = data_offset + offset as usize;
            let end = start + t.data.len();
            if out.len() < end {
                out.resize(end, 0);
            }
            out[start..end].copy_from_slice(&t.data);
            tensor_ranges.push((start, end));
        }
        if self.pad_end && !self.tensors.is_empty() {
            let padded = align(out.len() as u64, self.alignment) as usize;
            out.resize(padded, 0);
        }
        Built {
            bytes: out,
            tensor_count_at,
            kv_count_at,
            kv_at,
            infos,
            data_offset,
            tensor_ranges,
        }
    }
}

pub fn align(x: u64, alignment: u64) -> u64 {
    x.div_ceil(alignment) * alignment
}

pub fn put_bytes_string(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s);
}

/// Type id and payload of a value.
pub fn encode_value(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&value.value_type().id().to_le_bytes());
    encode_payload(&mut out, value);
    out
}

fn encode_payload(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::U8(v) => out.push(*v),
        Value::I8(v) => out.push(*v as u8),
        Value::U16(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::I16(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::U32(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::I32(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::F32(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::Bool(v) => out.push(*v as u8),
        Value::String(s) => put_bytes_string(out, s.as_bytes()),
        Value::Array(a) => encode_array(out, a),
        Value::U64(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::I64(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::F64(v) => out.extend_from_slice(&v.to_le_bytes()),
    }
}

fn encode_array(out: &mut Vec<u8>, array: &Array) {
    out.extend_from_slice(&array.elem_type().id().to_le_bytes());
    out.extend_from_slice(&(array.len() as u64).to_le_bytes());
    macro_rules! each {
        ($v:expr, $wrap:path) => {
            for x in $v {
                encode_payload(out, &$wrap(x.clone()));
            }
        };
    }
    match array {
        Array::U8(v) => each!(v, Value::U8),
        Array::I8(v) => each!(v, Value::I8),
        Array::U16(v) => each!(v, Value::U16),
        Array::I16(v) => each!(v, Value::I16),
        Array::U32(v) => each!(v, Value::U32),
        Array::I32(v) => each!(v, Value::I32),
        Array::F32(v) => each!(v, Value::F32),
        Array::Bool(v) => each!(v, Value::Bool),
        Array::String(v) => each!(v, Value::String),
        Array::Array(v) => {
            for inner in v {
                encode_array(out, inner);
            }
        }
        Array::U64(v) => each!(v, Value::U64),
        Array::I64(v) => each!(v, Value::I64),
        Array::F64(v) => each!(v, Value::F64),
    }
}

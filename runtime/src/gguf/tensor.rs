//! Validated tensor infos and borrowed views of their bytes.

use crate::quant::GgmlType;

/// One tensor's description, validated when the file was opened: dims are non-zero with a
/// product that fits, rows are whole blocks, and the data lies inside the file without
/// overlapping another tensor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    /// ggml order: `dims[0]` (`ne[0]`) is the innermost, contiguous dimension, i.e. the row
    /// length. A PyTorch `[out, in]` weight has `dims == [in, out]`.
    pub dims: Vec<u64>,
    pub ggml_type: GgmlType,
    /// Offset of the data from the start of the file's data section.
    pub offset: u64,
    pub n_bytes: u64,
}

impl TensorInfo {
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }

    /// Values per row (`ne[0]`).
    pub fn row_len(&self) -> u64 {
        self.dims[0]
    }

    /// Rows: the product of every dim but the first.
    pub fn n_rows(&self) -> u64 {
        self.dims[1..].iter().product()
    }

    /// Bytes per row.
    pub fn row_bytes(&self) -> u64 {
        self.dims[0] / self.ggml_type.block_size() as u64 * self.ggml_type.type_size() as u64
    }
}

/// A tensor's bytes borrowed from the file (the mmap): no copy.
#[derive(Clone, Copy, Debug)]
pub struct TensorView<'a> {
    pub info: &'a TensorInfo,
    pub data: &'a [u8],
}

impl<'a> TensorView<'a> {
    pub fn name(&self) -> &'a str {
        &self.info.name
    }

    pub fn dims(&self) -> &'a [u64] {
        &self.info.dims
    }

    pub fn ggml_type(&self) -> GgmlType {
        self.info.ggml_type
    }

    /// Row `i` of the tensor viewed as a matrix of `n_rows × row_len`, or `None` past the end.
    pub fn row(&self, i: usize) -> Option<&'a [u8]> {
        let row_bytes = self.info.row_bytes() as usize;
        let start = i.checked_mul(row_bytes)?;
        self.data.get(start..start.checked_add(row_bytes)?)
    }

    /// The data as `f32`s, for F32 tensors whose bytes are 4-byte aligned in memory (always
    /// true for an mmap with `general.alignment` ≥ 4; little-endian hosts only).
    pub fn as_f32(&self) -> Option<&'a [f32]> {
        if self.info.ggml_type != GgmlType::F32 || cfg!(target_endian = "big") {
            return None;
        }
        // SAFETY: every bit pattern is a valid f32; `align_to` only yields the aligned middle.
        let (head, floats, tail) = unsafe { self.data.align_to::<f32>() };
        (head.is_empty() && tail.is_empty()).then_some(floats)
    }
}

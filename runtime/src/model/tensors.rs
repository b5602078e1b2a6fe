//! Typed, validated views of the GGUF tensors the model needs. Nothing is
//! copied except f16 vectors (norms, biases; tiny), which are widened to f32.
//! Every tensor is checked against the canonical list of eostok-models
//! (`tensor_specs`): present, right shape, a type the kernels support.

use crate::gguf::{GgufFile, TensorView};
use crate::kernels::Weight;
use crate::quant::{dequantize_row, GgmlType};
use anyhow::{anyhow, Result};
use eostok_models::exit::bad_input;
use std::borrow::Cow;

/// Types a weight matrix or table may have.
pub const MATRIX_TYPES: &[GgmlType] = &[GgmlType::F32, GgmlType::F16, GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q4_K, GgmlType::Q6_K];
/// Types a vector may have.
pub const VECTOR_TYPES: &[GgmlType] = &[GgmlType::F32, GgmlType::F16];

/// A table read by rows (token embedding, codebook).
#[derive(Clone, Copy)]
pub struct Table<'a> {
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
    data: &'a [u8],
    row_bytes: usize,
}

impl Table<'_> {
    /// Row `i` as f32 into `out` (len cols).
    pub fn row(&self, i: usize, out: &mut [f32]) -> Result<()> {
        if i >= self.rows {
            return Err(bad_input(format!("row {i} is outside a table of {} rows", self.rows)));
        }
        let bytes = &self.data[i * self.row_bytes..(i + 1) * self.row_bytes];
        dequantize_row(self.ty, bytes, out).map_err(|e| anyhow!("{e}"))
    }
}

/// Reads tensors out of a validated GGUF file.
pub struct Tensors<'a> {
    file: &'a GgufFile,
}

impl<'a> Tensors<'a> {
    pub fn new(file: &'a GgufFile) -> Self {
        Tensors { file }
    }

    fn view(&self, name: &str, shape: &[usize], allowed: &[GgmlType]) -> Result<TensorView<'a>> {
        // GGUF dims are ne[0] first: the reverse of the PyTorch shape.
        let dims: Vec<u64> = shape.iter().rev().map(|&d| d as u64).collect();
        self.file.tensor_checked(name, &dims, allowed).map_err(|e| bad_input(e.to_string()))
    }

    /// A vector (or a small table kept whole) as f32.
    pub fn vector(&self, name: &str, shape: &[usize]) -> Result<Cow<'a, [f32]>> {
        let v = self.view(name, shape, VECTOR_TYPES)?;
        match (v.ggml_type(), v.as_f32()) {
            (GgmlType::F32, Some(s)) => Ok(Cow::Borrowed(s)),
            (ty, _) => {
                let n: usize = shape.iter().product();
                let mut out = vec![0f32; n];
                dequantize_row(ty, v.data, &mut out).map_err(|e| bad_input(format!("tensor '{name}': {e}")))?;
                Ok(Cow::Owned(out))
            }
        }
    }

    /// A [rows, cols] weight matrix for the kernels.
    pub fn matrix(&self, name: &str, rows: usize, cols: usize) -> Result<Weight<'a>> {
        let v = self.view(name, &[rows, cols], MATRIX_TYPES)?;
        Weight::new(v.ggml_type(), rows, cols, v.data).map_err(|e| bad_input(format!("tensor '{name}': {e}")))
    }

    /// A [rows, cols] table read by rows.
    pub fn table(&self, name: &str, rows: usize, cols: usize) -> Result<Table<'a>> {
        let v = self.view(name, &[rows, cols], MATRIX_TYPES)?;
        let row_bytes = v.ggml_type().row_size(cols).ok_or_else(|| bad_input(format!("tensor '{name}': bad row length {cols}")))?;
        Ok(Table { ty: v.ggml_type(), rows, cols, data: v.data, row_bytes })
    }
}

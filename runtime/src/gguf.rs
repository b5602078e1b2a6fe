//! A GGUF (v3, and v2) reader over a read-only mmap: the whole header is parsed and validated
//! on open, then tensors are handed out as byte slices borrowed from the map — no weight is
//! ever copied.
//!
//! Hostile input never panics, and nothing is allocated before the bytes that justify it
//! have been seen to exist: every count in the file is bounded by the bytes left.

mod cursor;
mod error;
mod parse;
mod storage;
mod tensor;
mod value;

pub use error::{GgufError, TensorProblem};
pub use parse::{DEFAULT_ALIGNMENT, MAX_ARRAY_DEPTH, MAX_DIMS, MAX_KEY_LEN, MAX_TENSOR_NAME_LEN};
pub use tensor::{TensorInfo, TensorView};
pub use value::{Array, Metadata, Value, ValueType};

use crate::quant::GgmlType;
use parse::Layout;
use std::collections::HashMap;
use std::path::Path;
use storage::{AlignedBuf, Storage};

/// An opened, fully validated GGUF file.
pub struct GgufFile {
    storage: Storage,
    version: u32,
    metadata: Metadata,
    tensors: Vec<TensorInfo>,
    by_name: HashMap<String, usize>,
    alignment: u64,
    data_offset: u64,
}

impl GgufFile {
    /// Maps `path` read-only and validates it.
    ///
    /// Like every mmap-based loader (llama.cpp included), this assumes the file is not
    /// truncated or rewritten by another process while it is open.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, GgufError> {
        let file = std::fs::File::open(path)?;
        // SAFETY: read-only private map; see the note above about concurrent modification.
        let map = unsafe { memmap2::Mmap::map(&file)? };
        Self::from_storage(Storage::Mmap(map))
    }

    /// Uses bytes compiled into the binary, without copying. They must start on a 32-byte
    /// boundary so tensor alignment in the file is alignment in memory; `include_bytes!`
    /// alone does not guarantee that, so wrap it:
    ///
    /// ```ignore
    /// #[repr(C, align(64))]
    /// struct Aligned<T: ?Sized>(T);
    /// static MODEL: &Aligned<[u8]> = &Aligned(*include_bytes!("model.gguf"));
    /// let gguf = GgufFile::from_static(&MODEL.0)?;
    /// ```
    pub fn from_static(bytes: &'static [u8]) -> Result<Self, GgufError> {
        let address = bytes.as_ptr() as usize;
        if !address.is_multiple_of(32) {
            return Err(GgufError::UnalignedBuffer { address });
        }
        Self::from_storage(Storage::Static(bytes))
    }

    /// Copies `bytes` into an aligned buffer and validates it: for GGUF data that did not come
    /// from a file (and for tests). Prefer [`GgufFile::open`] for files.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, GgufError> {
        Self::from_storage(Storage::Owned(AlignedBuf::copy_from(bytes)))
    }

    fn from_storage(storage: Storage) -> Result<Self, GgufError> {
        let Layout {
            version,
            metadata,
            tensors,
            by_name,
            alignment,
            data_offset,
        } = parse::parse(storage.bytes())?;
        Ok(GgufFile {
            storage,
            version,
            metadata,
            tensors,
            by_name,
            alignment,
            data_offset,
        })
    }

    /// 2 or 3.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// `general.alignment`, or 32 when absent.
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// File offset where tensor data begins (tensor offsets are relative to it).
    pub fn data_offset(&self) -> u64 {
        self.data_offset
    }

    /// The whole file.
    pub fn as_bytes(&self) -> &[u8] {
        self.storage.bytes()
    }

    /// Whether the bytes are a file mapping (as opposed to static or copied bytes).
    pub fn is_mmapped(&self) -> bool {
        matches!(self.storage, Storage::Mmap(_))
    }

    /// All key/values, in file order.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// See [`Metadata::get_u32`].
    pub fn get_u32(&self, key: &str) -> Result<u32, GgufError> {
        self.metadata.get_u32(key)
    }

    /// See [`Metadata::get_u64`].
    pub fn get_u64(&self, key: &str) -> Result<u64, GgufError> {
        self.metadata.get_u64(key)
    }

    /// See [`Metadata::get_f32`].
    pub fn get_f32(&self, key: &str) -> Result<f32, GgufError> {
        self.metadata.get_f32(key)
    }

    pub fn get_str(&self, key: &str) -> Result<&str, GgufError> {
        self.metadata.get_str(key)
    }

    pub fn get_str_array(&self, key: &str) -> Result<&[String], GgufError> {
        self.metadata.get_str_array(key)
    }

    /// Tensor infos in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    pub fn tensor_info(&self, name: &str) -> Option<&TensorInfo> {
        self.by_name.get(name).map(|&i| &self.tensors[i])
    }

    /// The named tensor's bytes, borrowed from the file.
    pub fn tensor(&self, name: &str) -> Result<TensorView<'_>, GgufError> {
        let info = self
            .tensor_info(name)
            .ok_or_else(|| GgufError::TensorNotFound {
                name: name.to_owned(),
            })?;
        // In range: checked against the file length when the file was opened.
        let start = (self.data_offset + info.offset) as usize;
        let data = &self.as_bytes()[start..start + info.n_bytes as usize];
        Ok(TensorView { info, data })
    }

    /// [`GgufFile::tensor`], also requiring `expected_dims` (ggml order) and one of `allowed`
    /// types, so model code states its expectations in one place.
    pub fn tensor_checked(
        &self,
        name: &str,
        expected_dims: &[u64],
        allowed: &[GgmlType],
    ) -> Result<TensorView<'_>, GgufError> {
        let view = self.tensor(name)?;
        if view.info.dims != expected_dims {
            return Err(GgufError::ShapeMismatch {
                name: name.to_owned(),
                expected: expected_dims.to_vec(),
                found: view.info.dims.clone(),
            });
        }
        if !allowed.contains(&view.info.ggml_type) {
            return Err(GgufError::TypeNotAllowed {
                name: name.to_owned(),
                found: view.info.ggml_type,
                allowed: allowed.to_vec(),
            });
        }
        Ok(view)
    }
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("version", &self.version)
            .field("len", &self.as_bytes().len())
            .field("metadata_keys", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .field("alignment", &self.alignment)
            .field("data_offset", &self.data_offset)
            .finish()
    }
}

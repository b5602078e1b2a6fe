//! Where a GGUF file's bytes live. All three are read-only and never copied after opening.

use memmap2::Mmap;

pub(super) enum Storage {
    /// A read-only private map of a file: weights are paged in on demand.
    Mmap(Mmap),
    /// Bytes compiled into the binary (an embedded model).
    Static(&'static [u8]),
    /// An aligned heap copy, for bytes that came from somewhere other than a file.
    Owned(AlignedBuf),
}

impl Storage {
    pub fn bytes(&self) -> &[u8] {
        match self {
            Storage::Mmap(map) => map,
            Storage::Static(bytes) => bytes,
            Storage::Owned(buf) => buf.bytes(),
        }
    }
}

/// Heap bytes starting on a 64-byte boundary, so tensor alignment inside the file is also
/// alignment in memory, as it is for an mmap.
pub(super) struct AlignedBuf {
    chunks: Vec<Chunk>,
    len: usize,
}

#[repr(C, align(64))]
#[derive(Clone, Copy)]
struct Chunk([u8; 64]);

impl AlignedBuf {
    pub fn copy_from(bytes: &[u8]) -> Self {
        let mut chunks = vec![Chunk([0; 64]); bytes.len().div_ceil(64)];
        for (chunk, src) in chunks.iter_mut().zip(bytes.chunks(64)) {
            chunk.0[..src.len()].copy_from_slice(src);
        }
        AlignedBuf {
            chunks,
            len: bytes.len(),
        }
    }

    pub fn bytes(&self) -> &[u8] {
        // SAFETY: the chunks are contiguous plain bytes and `len <= 64 * chunks.len()`.
        unsafe { std::slice::from_raw_parts(self.chunks.as_ptr().cast::<u8>(), self.len) }
    }
}

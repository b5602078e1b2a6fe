//! The bundled default model: `runtime/assets/default.gguf` compiled into
//! the binary (feature `bundled-model`), 32-byte aligned so it is read in
//! place like an mmap'd file, without a copy.

use crate::gguf::{GgufError, GgufFile};

#[cfg(feature = "bundled-model")]
mod embedded {
    #[repr(C, align(64))]
    pub struct Aligned<T: ?Sized>(pub T);
    pub static MODEL: &Aligned<[u8]> = &Aligned(*include_bytes!("../assets/default.gguf"));
}

/// The bundled model, or None in builds without it (edge builds).
pub fn model() -> Option<Result<GgufFile, GgufError>> {
    #[cfg(feature = "bundled-model")]
    {
        Some(GgufFile::from_static(&embedded::MODEL.0))
    }
    #[cfg(not(feature = "bundled-model"))]
    {
        None
    }
}

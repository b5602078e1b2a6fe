//! Viewing raw bytes (e.g. straight from the mmap) as ggml blocks without copying.

use super::GgmlType;
use half::f16;

/// A ggml block struct.
///
/// # Safety
/// Implementors must be `#[repr(C)]`, have alignment 1 and no padding, and be valid for every
/// bit pattern (only `u8`/`i8` arrays as fields). Multi-byte fields are stored as little-endian
/// byte arrays and read through accessors, which is what makes alignment 1 possible: tensor
/// data in a GGUF file is only guaranteed to be aligned to `general.alignment`.
pub unsafe trait Block: Copy + 'static {
    /// The ggml type whose block this is.
    const TYPE: GgmlType;
    /// Values per block.
    const ELEMS: usize;
}

/// Views `bytes` as a slice of blocks.
///
/// Panics if `bytes.len()` is not a whole number of blocks (a caller bug: tensor sizes are
/// validated when the file is opened).
pub fn as_blocks<B: Block>(bytes: &[u8]) -> &[B] {
    const { assert!(std::mem::align_of::<B>() == 1) };
    let size = std::mem::size_of::<B>();
    assert!(
        bytes.len().is_multiple_of(size),
        "{} bytes is not a whole number of {} blocks ({size} bytes each)",
        bytes.len(),
        B::TYPE
    );
    // SAFETY: `Block` guarantees alignment 1, no padding and no invalid bit patterns, and the
    // length is a whole number of blocks, so the cast covers exactly `bytes`.
    unsafe { std::slice::from_raw_parts(bytes.as_ptr().cast::<B>(), bytes.len() / size) }
}

/// Mutable counterpart of [`as_blocks`], for quantizing into a byte buffer.
pub fn as_blocks_mut<B: Block>(bytes: &mut [u8]) -> &mut [B] {
    const { assert!(std::mem::align_of::<B>() == 1) };
    let size = std::mem::size_of::<B>();
    assert!(
        bytes.len().is_multiple_of(size),
        "{} bytes is not a whole number of {} blocks ({size} bytes each)",
        bytes.len(),
        B::TYPE
    );
    // SAFETY: as in `as_blocks`; the exclusive borrow is carried over.
    unsafe { std::slice::from_raw_parts_mut(bytes.as_mut_ptr().cast::<B>(), bytes.len() / size) }
}

/// Checks that a row of `n` values fits `bytes` exactly, for the per-format kernels.
pub(crate) fn assert_row<B: Block>(bytes: usize, n: usize) {
    assert!(
        n.is_multiple_of(B::ELEMS),
        "{n} values are not whole {} blocks of {}",
        B::TYPE,
        B::ELEMS
    );
    let expected = n / B::ELEMS * std::mem::size_of::<B>();
    assert!(
        bytes == expected,
        "{n} {} values take {expected} bytes, got {bytes}",
        B::TYPE
    );
}

#[inline]
pub(crate) fn f16_to_f32(bits: [u8; 2]) -> f32 {
    f16::from_le_bytes(bits).to_f32()
}

/// Round-to-nearest-even, as `GGML_FP32_TO_FP16`.
#[inline]
pub(crate) fn f32_to_f16(value: f32) -> [u8; 2] {
    f16::from_f32(value).to_le_bytes()
}

/// ggml's `nearest_int`: round half to even (its float trick is exact for |x| < 2^22, where
/// ggml asserts; outside that range we saturate instead of asserting).
#[inline]
pub(crate) fn nearest_int(value: f32) -> i32 {
    value.round_ties_even() as i32
}

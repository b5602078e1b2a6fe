//! ggml block formats, one module per format, each with scalar references of ggml's
//! `quantize_row_*_ref`, `dequantize_row_*` and generic `ggml_vec_dot_*` on byte slices (so
//! they read straight from the mmap). SIMD kernels go beside these references later; the
//! references stay as the ground truth for tests.
//!
//! A row of `n` values is `n / block_size` blocks; `vec_dot` takes a weight row and an
//! activation row already quantized to the weight type's [`GgmlType::vec_dot_type`].

mod block;
pub mod fp16;
pub mod fp32;
mod ggml_type;
pub mod q4_0;
pub mod q4_1;
pub mod q4_k;
pub mod q6_k;
pub mod q8_0;
pub mod q8_1;
pub mod q8_k;

pub use block::{as_blocks, as_blocks_mut, Block};
pub use ggml_type::GgmlType;

/// Why a dispatched kernel call was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantError {
    #[error("ggml type {0} is recognised but not supported by this runtime")]
    Unsupported(GgmlType),
    #[error("{n} values is not a whole number of {ty} blocks of {block_size}")]
    PartialBlock {
        ty: GgmlType,
        n: usize,
        block_size: usize,
    },
    #[error("{n} {ty} values take {expected} bytes, but the buffer has {found}")]
    ByteLength {
        ty: GgmlType,
        n: usize,
        expected: usize,
        found: usize,
    },
    #[error("{ty} rows are dotted against {expected} activations, not {found}")]
    ActivationType {
        ty: GgmlType,
        expected: GgmlType,
        found: GgmlType,
    },
}

/// Bytes for `n` values of `ty`, checking whole blocks and support.
fn checked_row_bytes(ty: GgmlType, n: usize) -> Result<usize, QuantError> {
    if !ty.is_supported() {
        return Err(QuantError::Unsupported(ty));
    }
    ty.row_size(n).ok_or(QuantError::PartialBlock {
        ty,
        n,
        block_size: ty.block_size(),
    })
}

fn check_bytes(ty: GgmlType, n: usize, found: usize) -> Result<(), QuantError> {
    let expected = checked_row_bytes(ty, n)?;
    if expected != found {
        return Err(QuantError::ByteLength {
            ty,
            n,
            expected,
            found,
        });
    }
    Ok(())
}

/// Dequantizes one row of `ty` (`dst.len()` values) from `src`.
pub fn dequantize_row(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> Result<(), QuantError> {
    check_bytes(ty, dst.len(), src.len())?;
    match ty {
        GgmlType::F32 => fp32::dequantize_row(src, dst),
        GgmlType::F16 => fp16::dequantize_row(src, dst),
        GgmlType::Q4_0 => q4_0::dequantize_row(src, dst),
        GgmlType::Q4_1 => q4_1::dequantize_row(src, dst),
        GgmlType::Q8_0 => q8_0::dequantize_row(src, dst),
        GgmlType::Q8_1 => q8_1::dequantize_row(src, dst),
        GgmlType::Q4_K => q4_k::dequantize_row(src, dst),
        GgmlType::Q6_K => q6_k::dequantize_row(src, dst),
        GgmlType::Q8_K => q8_k::dequantize_row(src, dst),
        _ => return Err(QuantError::Unsupported(ty)),
    }
    Ok(())
}

/// Quantizes one row of `src.len()` values into `dst` with ggml's reference quantizer.
pub fn quantize_row(ty: GgmlType, src: &[f32], dst: &mut [u8]) -> Result<(), QuantError> {
    check_bytes(ty, src.len(), dst.len())?;
    match ty {
        GgmlType::F32 => fp32::quantize_row(src, dst),
        GgmlType::F16 => fp16::quantize_row(src, dst),
        GgmlType::Q4_0 => q4_0::quantize_row(src, dst),
        GgmlType::Q4_1 => q4_1::quantize_row(src, dst),
        GgmlType::Q8_0 => q8_0::quantize_row(src, dst),
        GgmlType::Q8_1 => q8_1::quantize_row(src, dst),
        GgmlType::Q4_K => q4_k::quantize_row(src, dst),
        GgmlType::Q6_K => q6_k::quantize_row(src, dst),
        GgmlType::Q8_K => q8_k::quantize_row(src, dst),
        _ => return Err(QuantError::Unsupported(ty)),
    }
    Ok(())
}

/// Dot product of `n` values: a weight row of type `ty` · an activation row of type
/// `act_ty`, which must be `ty.vec_dot_type()`.
pub fn vec_dot(
    ty: GgmlType,
    n: usize,
    weights: &[u8],
    act_ty: GgmlType,
    activations: &[u8],
) -> Result<f32, QuantError> {
    let expected = ty.vec_dot_type().ok_or(QuantError::Unsupported(ty))?;
    if act_ty != expected {
        return Err(QuantError::ActivationType {
            ty,
            expected,
            found: act_ty,
        });
    }
    check_bytes(ty, n, weights.len())?;
    check_bytes(act_ty, n, activations.len())?;
    Ok(match ty {
        GgmlType::F32 => fp32::vec_dot(weights, activations),
        GgmlType::F16 => fp16::vec_dot(weights, activations),
        GgmlType::Q4_0 => q4_0::vec_dot(weights, activations),
        GgmlType::Q4_1 => q4_1::vec_dot(weights, activations),
        GgmlType::Q8_0 => q8_0::vec_dot(weights, activations),
        GgmlType::Q4_K => q4_k::vec_dot(weights, activations),
        GgmlType::Q6_K => q6_k::vec_dot(weights, activations),
        _ => return Err(QuantError::Unsupported(ty)),
    })
}

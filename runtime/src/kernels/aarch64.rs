//! NEON building blocks shared by the aarch64 kernels (`neon_*.rs`).
//!
//! Advanced SIMD is part of every ARMv8-A core and enabled for the whole
//! `aarch64-unknown-linux-gnu` target, so the baseline kernels need no run-time check. The
//! ARMv8.2 `sdot` and ARMv8.6 `smmla` instructions are optional: their intrinsics
//! (`vdotq_s32`, `vmmlaq_s32`) are still unstable in Rust 1.95, so they are written as
//! `asm!` here and only reached through `#[target_feature(enable = "neon,dotprod")]` /
//! `"...,i8mm"` entry points chosen after `is_aarch64_feature_detected!` (`cpu::level`).
//! The f16 → f32 conversions are `asm!` too (`fcvtl`, ARMv8.0): the `float16x4_t`
//! intrinsics need the unstable `f16` type.
//!
//! Everything is `#[inline(always)]` (allowed without `target_feature`), so it inlines into
//! whichever entry point calls it.

use std::arch::aarch64::*;
use std::arch::asm;

/// A 16 × i8 dot product accumulated into 4 i32 lanes. Which products land in which lane
/// differs between implementations: callers only ever sum all 4 lanes (after any scaling
/// that is the same for the whole register).
pub(super) trait Dot {
    /// # Safety
    /// The implementation's CPU feature must be present (see each type).
    unsafe fn dot(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t;
}

/// Baseline NEON (Cortex-A53/A72, no dotprod): `smull` / `smull2` into i16, then `sadalp`
/// pairwise-adds into i32. No i16 overflow: |a·b| ≤ 128·128 = 16384.
pub(super) struct Widen;

impl Dot for Widen {
    #[inline(always)]
    unsafe fn dot(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
        let lo = vmull_s8(vget_low_s8(a), vget_low_s8(b));
        let hi = vmull_high_s8(a, b);
        vpadalq_s16(vpadalq_s16(acc, lo), hi)
    }
}

/// ARMv8.2 DotProd `sdot`: lane `i` += Σ a[4i..4i+4]·b[4i..4i+4]. Only inside functions
/// with `#[target_feature(enable = "neon,dotprod")]`, after detection.
pub(super) struct Sdot;

impl Dot for Sdot {
    #[inline(always)]
    unsafe fn dot(mut acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
        asm!(
            "sdot {acc:v}.4s, {a:v}.16b, {b:v}.16b",
            acc = inout(vreg) acc,
            a = in(vreg) a,
            b = in(vreg) b,
            options(pure, nomem, nostack, preserves_flags),
        );
        acc
    }
}

/// ARMv8.6 I8MM `smmla`: `a` holds a 2×8 i8 matrix (rows = bytes 0..8, 8..16), `b` a second
/// 2×8 one; adds `a · bᵀ` to the 2×2 i32 matrix `acc` = `[a0·b0, a0·b1, a1·b0, a1·b1]`.
/// Only inside `#[target_feature(enable = "neon,dotprod,i8mm")]` functions, after detection.
#[inline(always)]
pub(super) unsafe fn smmla(mut acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    asm!(
        "smmla {acc:v}.4s, {a:v}.16b, {b:v}.16b",
        acc = inout(vreg) acc,
        a = in(vreg) a,
        b = in(vreg) b,
        options(pure, nomem, nostack, preserves_flags),
    );
    acc
}

/// 4 f16 (bits) → 4 f32 (`fcvtl`, exact).
#[inline(always)]
pub(super) unsafe fn f16x4(bits: uint16x4_t) -> float32x4_t {
    let out: float32x4_t;
    asm!(
        "fcvtl {o:v}.4s, {i:v}.4h",
        o = lateout(vreg) out,
        i = in(vreg) bits,
        options(pure, nomem, nostack, preserves_flags),
    );
    out
}

/// The upper 4 of 8 f16 (bits) → 4 f32 (`fcvtl2`).
#[inline(always)]
pub(super) unsafe fn f16x4_high(bits: uint16x8_t) -> float32x4_t {
    let out: float32x4_t;
    asm!(
        "fcvtl2 {o:v}.4s, {i:v}.8h",
        o = lateout(vreg) out,
        i = in(vreg) bits,
        options(pure, nomem, nostack, preserves_flags),
    );
    out
}

/// One f16 (little-endian bytes) as f32.
#[inline(always)]
pub(super) unsafe fn f16(bits: [u8; 2]) -> f32 {
    vgetq_lane_f32::<0>(f16x4(vdup_n_u16(u16::from_le_bytes(bits))))
}

/// The f16 field at `p`, `p + stride`, ... of `n ≤ 8` consecutive blocks as 8 f32 (zeros
/// past `n`): one block group's scales converted together.
#[inline(always)]
pub(super) unsafe fn f16x8(p: *const u8, stride: usize, n: usize) -> [f32; 8] {
    let mut raw = [0u16; 8];
    for (j, v) in raw.iter_mut().enumerate().take(n) {
        *v = p.add(j * stride).cast::<u16>().read_unaligned();
    }
    let v = vld1q_u16(raw.as_ptr());
    let mut out = [0f32; 8];
    vst1q_f32(out.as_mut_ptr(), f16x4(vget_low_u16(v)));
    vst1q_f32(out.as_mut_ptr().add(4), f16x4_high(v));
    out
}

/// `a[j] · b[j]` for the first `n ≤ 8` lanes (zeros after), `b` read only up to `n`.
#[inline(always)]
pub(super) unsafe fn mul8(a: &[f32; 8], b: &[f32], n: usize) -> [f32; 8] {
    let mut t = [0f32; 8];
    t[..n].copy_from_slice(&b[..n]);
    let mut out = [0f32; 8];
    let (a0, a1) = (vld1q_f32(a.as_ptr()), vld1q_f32(a.as_ptr().add(4)));
    let (b0, b1) = (vld1q_f32(t.as_ptr()), vld1q_f32(t.as_ptr().add(4)));
    vst1q_f32(out.as_mut_ptr(), vmulq_f32(a0, b0));
    vst1q_f32(out.as_mut_ptr().add(4), vmulq_f32(a1, b1));
    out
}

/// 32 consecutive i8 as two registers.
#[inline(always)]
pub(super) unsafe fn load_i8x32(p: *const i8) -> [int8x16_t; 2] {
    [vld1q_s8(p), vld1q_s8(p.add(16))]
}

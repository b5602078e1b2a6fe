//! AVX2 building blocks shared by the x86_64 kernels. Every function here needs AVX2, FMA
//! and F16C (checked by `cpu::has_avx2` before any kernel is selected); they are `#[inline]`
//! with the same target features so they inline into the kernels.

use std::arch::x86_64::*;

/// How far ahead (bytes) the kernels prefetch the weights they stream.
const PREFETCH: usize = 2048;

/// Prefetches `lines` cache lines starting [`PREFETCH`] bytes past `p`. Weights stream
/// from memory once per call; asking early lets the loads overlap the arithmetic (+30-60%
/// matvec throughput from DRAM here). Into L2 (T1), which leaves the L1 fill buffers to
/// the demand loads (f16 and q4_k matvec from memory: up to +20% over T0). Prefetches
/// never fault, even past the end.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn prefetch_ahead(p: *const u8, lines: usize) {
    let ahead = p.wrapping_add(PREFETCH).cast::<i8>();
    for l in 0..lines {
        _mm_prefetch::<_MM_HINT_T1>(ahead.wrapping_add(64 * l));
    }
}

/// Prefetches (into L1) every cache line of the `bytes` bytes from `p`. Never faults,
/// whatever the range.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn prefetch_lines(p: *const u8, bytes: usize) {
    for off in (0..bytes + 63).step_by(64) {
        _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(off).cast());
    }
}

/// Sum of 8 lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// Sum of 4 lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn hsum128(s: __m128) -> f32 {
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// An f16 (little-endian bytes, possibly unaligned) as f32, with F16C.
///
/// In `asm!` so the `vmovd` stays: from the intrinsics LLVM emits a `vpinsrw` into whatever
/// register is free (only lane 0 is used), a false dependency that chained each block's
/// scale conversion to the previous block's and halved the speed of the Q4_0/Q8_0 matvecs.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn f16(bits: [u8; 2]) -> f32 {
    let x: __m128;
    std::arch::asm!(
        "vmovd {x}, {r:e}",
        "vcvtph2ps {x}, {x}",
        r = in(reg) u16::from_le_bytes(bits) as u32,
        x = out(xmm_reg) x,
        options(pure, nomem, nostack, preserves_flags),
    );
    _mm_cvtss_f32(x)
}

/// The f16 field at `p`, `p + stride`, ... of `n ≤ 8` consecutive blocks as 8 f32 (zeros
/// past `n`). Converting a block group's scales together replaces a per-block scalar
/// conversion, multiply and broadcast with one broadcast load from the result.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn f16x8(p: *const u8, stride: usize, n: usize) -> __m256 {
    let at = |j: usize| p.add(j * stride).cast::<u16>().read_unaligned() as i16;
    // Built in a register: a 16-byte load over eight 2-byte stack stores would miss store
    // forwarding and stall every group.
    let raw = if n == 8 {
        _mm_setr_epi16(at(0), at(1), at(2), at(3), at(4), at(5), at(6), at(7))
    } else {
        let mut r = [0i16; 8];
        for (j, v) in r.iter_mut().enumerate().take(n) {
            *v = at(j);
        }
        _mm_setr_epi16(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7])
    };
    _mm256_cvtph_ps(raw)
}

/// Up to 8 f32 (zeros past the slice's end).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn f32x8(s: &[f32]) -> __m256 {
    if s.len() >= 8 {
        _mm256_loadu_ps(s.as_ptr())
    } else {
        let mut t = [0f32; 8];
        t[..s.len()].copy_from_slice(s);
        _mm256_loadu_ps(t.as_ptr())
    }
}

/// u8 × i8 products summed in groups of 4 into 8 i32 lanes. `maddubs` saturates its i16
/// pair sums, so callers keep `2 · max(u) · 127 ≤ 32767` (u ≤ 128).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_u8i8(u: __m256i, s: __m256i) -> __m256i {
    _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1))
}

/// `acc + dot_u8i8(u, s)` with AVX-VNNI's `vpdpbusd` (one instruction, no i16 saturation).
/// Written as `asm!` because the `avxvnni` target feature and its intrinsic need Rust 1.89
/// and the workspace's MSRV was 1.85 when written; only called once CPUID reported AVX-VNNI (`cpu::level`).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_u8i8_vnni(mut acc: __m256i, u: __m256i, s: __m256i) -> __m256i {
    std::arch::asm!(
        "{{vex}} vpdpbusd {acc}, {u}, {s}",
        acc = inout(ymm_reg) acc,
        u = in(ymm_reg) u,
        s = in(ymm_reg) s,
        options(pure, nomem, nostack, preserves_flags),
    );
    acc
}

/// The 8 × 8 f32 block at `src` (rows `src_stride` apart) transposed into `dst` (rows
/// `dst_stride` apart): 8 loads, 24 shuffles, 8 stores. Any alignment.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn transpose8x8(src: *const f32, src_stride: usize, dst: *mut f32, dst_stride: usize) {
    let r: [__m256; 8] = std::array::from_fn(|i| _mm256_loadu_ps(src.add(i * src_stride)));
    let t0 = _mm256_unpacklo_ps(r[0], r[1]);
    let t1 = _mm256_unpackhi_ps(r[0], r[1]);
    let t2 = _mm256_unpacklo_ps(r[2], r[3]);
    let t3 = _mm256_unpackhi_ps(r[2], r[3]);
    let t4 = _mm256_unpacklo_ps(r[4], r[5]);
    let t5 = _mm256_unpackhi_ps(r[4], r[5]);
    let t6 = _mm256_unpacklo_ps(r[6], r[7]);
    let t7 = _mm256_unpackhi_ps(r[6], r[7]);
    let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
    let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
    let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
    let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
    let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
    let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
    let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
    let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
    let o = [
        _mm256_permute2f128_ps::<0x20>(u0, u4),
        _mm256_permute2f128_ps::<0x20>(u1, u5),
        _mm256_permute2f128_ps::<0x20>(u2, u6),
        _mm256_permute2f128_ps::<0x20>(u3, u7),
        _mm256_permute2f128_ps::<0x31>(u0, u4),
        _mm256_permute2f128_ps::<0x31>(u1, u5),
        _mm256_permute2f128_ps::<0x31>(u2, u6),
        _mm256_permute2f128_ps::<0x31>(u3, u7),
    ];
    for (i, v) in o.into_iter().enumerate() {
        _mm256_storeu_ps(dst.add(i * dst_stride), v);
    }
}

/// `Σ a[i]·b[i]` in two 8-lane FMA chains, the tail in scalar; `a.len() == b.len()`.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let (mut acc0, mut acc1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    let mut i = 0;
    while i + 16 <= n {
        acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), acc0);
        acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i + 8)), _mm256_loadu_ps(pb.add(i + 8)), acc1);
        i += 16;
    }
    if i + 8 <= n {
        acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), acc0);
        i += 8;
    }
    let mut tail = 0f32;
    while i < n {
        tail += *pa.add(i) * *pb.add(i);
        i += 1;
    }
    hsum(_mm256_add_ps(acc0, acc1)) + tail
}

/// `y += alpha · x`; `x.len() == y.len()`.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn axpy(alpha: f32, x: &[f32], y: &mut [f32]) {
    let n = x.len().min(y.len());
    let (px, py) = (x.as_ptr(), y.as_mut_ptr());
    let a = _mm256_set1_ps(alpha);
    let mut i = 0;
    while i + 8 <= n {
        _mm256_storeu_ps(py.add(i), _mm256_fmadd_ps(a, _mm256_loadu_ps(px.add(i)), _mm256_loadu_ps(py.add(i))));
        i += 8;
    }
    while i < n {
        *py.add(i) += alpha * *px.add(i);
        i += 1;
    }
}

/// The lane sums of 4 vectors, transposed and added together: `[Σa, Σb, Σc, Σd]`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn hsum4(a: __m256, b: __m256, c: __m256, d: __m256) -> __m128 {
    let s = _mm256_hadd_ps(_mm256_hadd_ps(a, b), _mm256_hadd_ps(c, d));
    _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1))
}

/// `out[t] = q · keys[t · stride ..][..8 · V]` for `t < len`: the query held in `V`
/// registers, 4 keys per pass and one transposing horizontal sum for the 4.
///
/// # Safety
/// AVX2+FMA; `q` has `8 · V` floats, `keys` `(len - 1) · stride + 8 · V`, `out` `len`.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_rows<const V: usize>(q: *const f32, keys: *const f32, stride: usize, len: usize, out: *mut f32) {
    let qv: [__m256; V] = std::array::from_fn(|j| _mm256_loadu_ps(q.add(8 * j)));
    let mut t = 0;
    while t + 4 <= len {
        let mut acc = [_mm256_setzero_ps(); 4];
        for (j, &qj) in qv.iter().enumerate() {
            for (u, a) in acc.iter_mut().enumerate() {
                *a = _mm256_fmadd_ps(qj, _mm256_loadu_ps(keys.add((t + u) * stride + 8 * j)), *a);
            }
        }
        _mm_storeu_ps(out.add(t), hsum4(acc[0], acc[1], acc[2], acc[3]));
        t += 4;
    }
    while t < len {
        let mut a = _mm256_setzero_ps();
        for (j, &qj) in qv.iter().enumerate() {
            a = _mm256_fmadd_ps(qj, _mm256_loadu_ps(keys.add(t * stride + 8 * j)), a);
        }
        *out.add(t) = hsum(a);
        t += 1;
    }
}

/// `out = Σ_{t < len} p[t] · values[t · stride ..][..8 · V]`, accumulated in `V` registers.
///
/// # Safety
/// AVX2+FMA; `p` has `len` floats, `values` `(len - 1) · stride + 8 · V`, `out` `8 · V`.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn weighted_rows<const V: usize>(p: *const f32, values: *const f32, stride: usize, len: usize, out: *mut f32) {
    let mut acc = [_mm256_setzero_ps(); V];
    for t in 0..len {
        let w = _mm256_set1_ps(*p.add(t));
        for (j, a) in acc.iter_mut().enumerate() {
            *a = _mm256_fmadd_ps(w, _mm256_loadu_ps(values.add(t * stride + 8 * j)), *a);
        }
    }
    for (j, &a) in acc.iter().enumerate() {
        _mm256_storeu_ps(out.add(8 * j), a);
    }
}

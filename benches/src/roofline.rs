//! The machine's limits: streaming-read bandwidth over a buffer far larger than the caches
//! (per thread count), peak f32 FMA throughput and peak int8 dot throughput, each at the
//! width our kernels use here: FMA on AVX-512 or AVX2; int8 by AVX-512 VNNI `vpdpbusd`
//! (the int8 GEMM), else AVX-VNNI `vpdpbusd`, else `vpmaddubsw`+`vpmaddwd`.

use crate::util::{pool, Stats};
use anyhow::Result;
use rayon::prelude::*;
use std::time::Instant;

/// Bytes of the bandwidth buffer: far beyond any L3 here.
pub const BUF_BYTES: usize = 1 << 30;

pub struct Buffer(Vec<u64>);

impl Buffer {
    /// A touched (page-faulted) buffer of `bytes`.
    pub fn new(bytes: usize) -> Buffer {
        let mut v = vec![0u64; bytes / 8];
        v.par_chunks_mut(1 << 16).enumerate().for_each(|(i, c)| {
            c.iter_mut()
                .enumerate()
                .for_each(|(j, x)| *x = (i * 7 + j) as u64)
        });
        Buffer(v)
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn sum_avx2(p: &[u64]) -> u64 {
    use std::arch::x86_64::*;
    let mut a = [_mm256_setzero_si256(); 4];
    let ptr = p.as_ptr() as *const __m256i;
    let n = p.len() / 16;
    for i in 0..n {
        // Software prefetch 2 KiB ahead, as the runtime's kernels do: on this VM the
        // hardware prefetcher alone reaches a fraction of what the kernels get.
        let ahead = (ptr.add(4 * i) as *const i8).wrapping_add(2048);
        _mm_prefetch::<_MM_HINT_T0>(ahead);
        _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(64));
        for (k, acc) in a.iter_mut().enumerate() {
            *acc = _mm256_add_epi64(*acc, _mm256_loadu_si256(ptr.add(4 * i + k)));
        }
    }
    let s = _mm256_add_epi64(_mm256_add_epi64(a[0], a[1]), _mm256_add_epi64(a[2], a[3]));
    let mut out = [0u64; 4];
    _mm256_storeu_si256(out.as_mut_ptr() as *mut __m256i, s);
    out.iter().sum::<u64>() + p[n * 16..].iter().sum::<u64>()
}

fn sum(p: &[u64]) -> u64 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        return unsafe { sum_avx2(p) };
    }
    p.iter().fold(0u64, |a, &b| a.wrapping_add(b))
}

/// GB/s (1e9 bytes) of one streaming read of the whole buffer with `threads` threads,
/// each reading a contiguous 1/threads of it.
pub fn bandwidth_once(buf: &Buffer, threads: usize) -> Result<f64> {
    let p = pool(threads)?;
    let per = buf.0.len().div_ceil(threads);
    let t = p.install(|| {
        let t = Instant::now();
        let s: u64 = buf.0.par_chunks(per).map(sum).sum();
        std::hint::black_box(s);
        t.elapsed().as_secs_f64()
    });
    Ok((buf.0.len() * 8) as f64 / t / 1e9)
}

/// Best of `reps` reads (the best is the machine's limit; the spread is printed too).
pub fn bandwidth(buf: &Buffer, threads: usize, reps: usize) -> Result<Stats> {
    bandwidth_once(buf, threads)?; // warm the pool
    let xs = (0..reps)
        .map(|_| bandwidth_once(buf, threads))
        .collect::<Result<Vec<_>>>()?;
    Ok(Stats::of(&xs))
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn fma_loop(iters: usize) -> f32 {
    use std::arch::x86_64::*;
    let mut a = [_mm256_set1_ps(0.0); 12];
    let (x, y) = (_mm256_set1_ps(0.999_999), _mm256_set1_ps(1e-7));
    for _ in 0..iters {
        for acc in a.iter_mut() {
            *acc = _mm256_fmadd_ps(*acc, x, y);
        }
    }
    let mut s = _mm256_setzero_ps();
    for acc in a {
        s = _mm256_add_ps(s, acc);
    }
    let mut out = [0f32; 8];
    _mm256_storeu_ps(out.as_mut_ptr(), s);
    out.iter().sum()
}

/// FLOPs per `fma_loop` iteration: 12 FMAs × 8 lanes × 2.
const FMA_FLOPS_PER_ITER: f64 = 12.0 * 8.0 * 2.0;

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn fma_loop_512(iters: usize) -> f32 {
    use std::arch::x86_64::*;
    let mut a = [_mm512_set1_ps(0.0); 12];
    let (x, y) = (_mm512_set1_ps(0.999_999), _mm512_set1_ps(1e-7));
    for _ in 0..iters {
        for acc in a.iter_mut() {
            *acc = _mm512_fmadd_ps(*acc, x, y);
        }
    }
    let mut s = _mm512_setzero_ps();
    for acc in a {
        s = _mm512_add_ps(s, acc);
    }
    _mm512_reduce_add_ps(s)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn int8_loop(iters: usize, vnni: bool) -> i32 {
    use std::arch::x86_64::*;
    let mut a = [_mm256_setzero_si256(); 12];
    let (u, s) = (_mm256_set1_epi8(3), _mm256_set1_epi8(-2));
    if vnni {
        for _ in 0..iters {
            for acc in a.iter_mut() {
                std::arch::asm!("{{vex}} vpdpbusd {acc}, {u}, {s}", acc = inout(ymm_reg) *acc, u = in(ymm_reg) u, s = in(ymm_reg) s, options(pure, nomem, nostack));
            }
        }
    } else {
        let ones = _mm256_set1_epi16(1);
        for _ in 0..iters {
            for acc in a.iter_mut() {
                *acc = _mm256_add_epi32(*acc, _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), ones));
            }
        }
    }
    let mut t = _mm256_setzero_si256();
    for acc in a {
        t = _mm256_add_epi32(t, acc);
    }
    _mm256_extract_epi32::<0>(t)
}

/// int8 ops (multiply + add = 2) per `int8_loop` iteration: 12 × 32 products × 2.
const INT8_OPS_PER_ITER: f64 = 12.0 * 32.0 * 2.0;

/// 12 independent 64-lane `vpdpbusd`s per iteration (AVX-512 VNNI), the width of the
/// runtime's int8 GEMM.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vnni")]
unsafe fn int8_loop_512(iters: usize) -> i32 {
    use std::arch::x86_64::*;
    let mut a = [_mm512_setzero_si512(); 12];
    let (u, s) = (_mm512_set1_epi8(3), _mm512_set1_epi8(-2));
    for _ in 0..iters {
        for acc in a.iter_mut() {
            *acc = _mm512_dpbusd_epi32(*acc, u, s);
        }
    }
    let mut t = _mm512_setzero_si512();
    for acc in a {
        t = _mm512_add_epi32(t, acc);
    }
    _mm512_reduce_add_epi32(t)
}

pub fn has_vnni() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        // AVX-VNNI: CPUID leaf 7 subleaf 1, EAX bit 4.
        #[allow(unused_unsafe)]
        let r = unsafe { std::arch::x86_64::__cpuid_count(7, 1) };
        return std::arch::is_x86_feature_detected!("avx2") && (r.eax >> 4) & 1 == 1;
    }
    #[allow(unreachable_code)]
    false
}

/// Peak GFLOP/s of f32 FMA with `threads` threads, at the vector width the runtime's GEMM
/// uses: 16 lanes (AVX-512) where `kernels::gemm_uses_avx512`, else 8 (AVX2).
pub fn peak_fma(threads: usize) -> Result<f64> {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("fma") {
        let wide = eostok_runtime::kernels::gemm_uses_avx512();
        let iters = if wide { 10_000_000 } else { 20_000_000 };
        let p = pool(threads)?;
        let t = p.install(|| {
            let t = Instant::now();
            let s: f32 = (0..threads)
                .into_par_iter()
                // SAFETY: the instruction sets were detected above.
                .map(|_| unsafe { if wide { fma_loop_512(iters) } else { fma_loop(iters) } })
                .sum();
            std::hint::black_box(s);
            t.elapsed().as_secs_f64()
        });
        let lanes = if wide { 2.0 } else { 1.0 };
        return Ok(threads as f64 * iters as f64 * FMA_FLOPS_PER_ITER * lanes / t / 1e9);
    }
    Ok(f64::NAN)
}

/// Peak int8 GOPS (u8×i8 multiply-adds × 2) with `threads` threads.
pub fn peak_int8(threads: usize) -> Result<f64> {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // At the width the runtime's int8 GEMM uses: 64 lanes where
        // `kernels::int8_gemm_available`, else 32 (AVX-VNNI, or AVX2 multiplies).
        let wide = eostok_runtime::kernels::int8_gemm_available();
        let (iters, vnni) = (if wide { 10_000_000 } else { 20_000_000 }, has_vnni());
        let p = pool(threads)?;
        let t = p.install(|| {
            let t = Instant::now();
            let s: i64 = (0..threads)
                .into_par_iter()
                // SAFETY: AVX2 detected above; AVX-512 VNNI where `wide`.
                .map(|_| unsafe { if wide { int8_loop_512(iters) } else { int8_loop(iters, vnni) } } as i64)
                .sum();
            std::hint::black_box(s);
            t.elapsed().as_secs_f64()
        });
        let lanes = if wide { 2.0 } else { 1.0 };
        return Ok(threads as f64 * iters as f64 * INT8_OPS_PER_ITER * lanes / t / 1e9);
    }
    Ok(f64::NAN)
}

/// The limits the other benchmarks compare against, at one thread count.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub bandwidth_gbs: f64,
    pub fma_gflops: f64,
    pub int8_gops: f64,
}

/// Quick limits at `threads`: best of 3 bandwidth reads (1 GiB), peak FMA and int8.
pub fn limits(threads: usize) -> Result<Limits> {
    let buf = Buffer::new(BUF_BYTES);
    let bw = bandwidth(&buf, threads, 3)?;
    Ok(Limits {
        bandwidth_gbs: bw.max,
        fma_gflops: peak_fma(threads)?,
        int8_gops: peak_int8(threads)?,
    })
}

//! Matrix kernels: `y = x · Wᵀ` for a GGML weight matrix straight from the mmap.
//!
//! Below `gemm::MIN_BATCH` (12) activation rows, quantized weights are dotted against
//! activations quantized once per call to the weight type's [`GgmlType::vec_dot_type`]
//! (integer dot products per block, as ggml does); F16 and F32 weights meet the f32
//! activations directly in f32 FMA, one dot per (weight row, activation row). From
//! `gemm::MIN_BATCH` rows on (the decoder's token rows and attention products, AR steps over
//! 12 or more sequences) every type takes the register-blocked matrix × matrix kernel in
//! `gemm`, quantized weights dequantized to f32 block by block (`dequant`) and the
//! activations left in f32: no activation quantization error there, and the F32 kernel's
//! error bound on the dequantized weights. Except on CPUs with AVX-512 VNNI, where Q8_0,
//! Q4_0, Q4_1 and Q4_K weights from `gemm::MIN_BATCH` rows on multiply in int8 instead
//! (`gemm_i8`: activations quantized per 32 values with an f32 scale, 2.5-2.7× the
//! dequantizing path on the decoder's shapes; [`int8_gemm_available`]).
//!
//! Kernel variants are picked at run time: one x86_64 binary uses AVX2+FMA+F16C, plus
//! AVX-VNNI for the 32-value block types where the CPU has it, without being built for the
//! machine; one aarch64 binary uses NEON everywhere, `sdot` where the CPU has DotProd
//! (Cortex-A76/A78AE) and `smmla` for batch > 1 where it has I8MM, widening multiplies
//! where it has neither (Cortex-A72); other targets use `wide` (F32/F16) and the scalar
//! references (quantized). The blocked kernel comes with the AVX2 and NEON levels only
//! (`wide` and scalar have none; its quantized decoders are AVX2 on x86_64 and the scalar
//! `dequantize_row`s on aarch64). Every SIMD kernel has the scalar reference from
//! [`crate::quant`] beside it; [`matmul_reference`] runs only those: below
//! `gemm::MIN_BATCH` rows the integer `vec_dot`s on reference-quantized activations, from
//! there on, for quantized weights, each row dequantized by its `dequantize_row` and dotted
//! with the f32 activations in f64 (`dequant::rows_reference`: the product the blocked
//! kernel computes, so the scalar level and SIMD agree to its rounding on both sides of the
//! threshold; F32/F16 use their f64 `vec_dot_f32` at every batch; where the int8 GEMM
//! runs, its bit-identical scalar twin `gemm_i8::reference`).
//! `EOSTOK_KERNELS=avx2|scalar` (aarch64: `i8mm|dotprod|neon|scalar`) caps the level (read
//! once per process) to compare or test the lower variants; see [`variant`].
//!
//! Work split: chunks of output rows on a spin-waiting pool (`pool`; rayon with
//! `EOSTOK_POOL=rayon`, or when the pool is busy) (calls under ~130k multiply-adds stay on
//! the calling thread). With `batch > 1` a task dots each of its weight rows against 4
//! activation rows at a time (the weight block is unpacked once for the 4), tile after tile,
//! so the weights come from memory once per call and from L2 after that; the `[rows, batch]`
//! results are transposed into `y` at the end. With at least `gemm::MIN_BATCH` activation
//! rows the blocked kernel serves instead (`gemm`: activations packed once per call into
//! 16-row panels, weights decoded once per 96 × 256 block into a per-thread f32 panel, 6 × 16
//! tiles of accumulators held in registers: on AVX2 8 loads per 12 FMAs, where the dots
//! need 10 per 8); its tasks are whole row blocks, each transposed into its columns of `y` as
//! it finishes (`run_gemm`).

// The micro-kernels index several per-activation-row arrays with one unrolled `k`.
#![allow(clippy::needless_range_loop)]

/// Runs the micro-kernel `$dot::<N, ...>($args.., b0) -> [f32; N]` over the activation rows
/// of `$out` (one weight row's outputs, `[batch]`) in groups of 4, then 3/2/1 for the tail.
#[allow(unused_macros)]
macro_rules! for_groups {
    ($batch:expr, $out:expr, $dot:ident, [$($g:tt),*], ($($arg:expr),*)) => {{
        let batch: usize = $batch;
        let out: &mut [f32] = $out;
        let mut b0 = 0;
        while b0 + 4 <= batch {
            out[b0..b0 + 4].copy_from_slice(&$dot::<4 $(, $g)*>($($arg,)* b0));
            b0 += 4;
        }
        match batch - b0 {
            3 => out[b0..].copy_from_slice(&$dot::<3 $(, $g)*>($($arg,)* b0)),
            2 => out[b0..].copy_from_slice(&$dot::<2 $(, $g)*>($($arg,)* b0)),
            1 => out[b0..].copy_from_slice(&$dot::<1 $(, $g)*>($($arg,)* b0)),
            _ => {}
        }
    }};
}

#[cfg(target_arch = "aarch64")]
mod aarch64;
mod act;
#[cfg(target_arch = "x86_64")]
mod block32;
mod cpu;
mod dequant;
mod f16;
mod f32;
mod gemm;
mod gemm_i8;
#[cfg(target_arch = "aarch64")]
mod neon_act;
#[cfg(target_arch = "aarch64")]
mod neon_block32;
#[cfg(target_arch = "aarch64")]
mod neon_float;
#[cfg(target_arch = "aarch64")]
mod neon_kquant;
mod pool;
mod q4_0;
mod q4_1;
mod q4_k;
mod q6_k;
mod q8_0;
#[cfg(test)]
mod test_rng;
mod vec;
#[cfg(target_arch = "x86_64")]
mod x86;

pub use act::quantize_activations;
pub use cpu::{cpu_features, kernel_level};
pub use vec::{add, axpy, dot_f32, dot_rows, exp_sub_sum, gelu_tanh, max, mul, scale, silu, sum, weighted_rows};

use crate::quant::{self, GgmlType};
use act::{ActBuf, Acts};
use rayon::prelude::*;
use std::ops::Range;

/// Why a weight matrix was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KernelError {
    #[error("no matmul kernel for ggml type {0}")]
    Unsupported(GgmlType),
    #[error("{cols} columns is not a whole number of {ty} blocks of {block_size}")]
    PartialBlock {
        ty: GgmlType,
        cols: usize,
        block_size: usize,
    },
    #[error("a {rows}x{cols} {ty} matrix takes {expected} bytes, but {found} were given")]
    ByteLength {
        ty: GgmlType,
        rows: usize,
        cols: usize,
        expected: usize,
        found: usize,
    },
    #[error("a {rows}x{cols} {ty} matrix is too large to address")]
    Overflow {
        ty: GgmlType,
        rows: usize,
        cols: usize,
    },
}

/// Weight types [`matmul`] accepts.
pub const WEIGHT_TYPES: [GgmlType; 7] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::Q8_0,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q4_K,
    GgmlType::Q6_K,
];

/// A weight matrix stored row-major in GGML layout: `rows` output features,
/// each row `cols` input values (`ne[0] = cols`), bytes borrowed from the mmap.
#[derive(Clone, Copy, Debug)]
pub struct Weight<'a> {
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
    pub data: &'a [u8],
}

impl<'a> Weight<'a> {
    /// Checks the type is supported, `cols` is whole blocks and `data` is exactly
    /// `rows` rows: after this the kernels index without further checks on file data.
    pub fn new(
        ty: GgmlType,
        rows: usize,
        cols: usize,
        data: &'a [u8],
    ) -> Result<Self, KernelError> {
        if !WEIGHT_TYPES.contains(&ty) {
            return Err(KernelError::Unsupported(ty));
        }
        let row_size = ty.row_size(cols).ok_or(KernelError::PartialBlock {
            ty,
            cols,
            block_size: ty.block_size(),
        })?;
        let expected =
            row_size
                .checked_mul(rows)
                .ok_or(KernelError::Overflow { ty, rows, cols })?;
        if data.len() != expected {
            return Err(KernelError::ByteLength {
                ty,
                rows,
                cols,
                expected,
                found: data.len(),
            });
        }
        Ok(Weight {
            ty,
            rows,
            cols,
            data,
        })
    }

    /// Bytes per row.
    pub fn row_size(&self) -> usize {
        self.data.len().checked_div(self.rows).unwrap_or(0)
    }

    /// Row `r`'s bytes.
    pub fn row(&self, r: usize) -> &'a [u8] {
        let n = self.row_size();
        &self.data[r * n..(r + 1) * n]
    }
}

/// Computes dots of weight rows `rows` against all activation rows into
/// `out[(r - rows.start) * batch + b]`.
type RowsFn = fn(w: &Weight, acts: &Acts, rows: Range<usize>, out: &mut [f32], stride: usize);

/// A kernel variant for one weight type.
#[derive(Clone, Copy)]
struct Kernel {
    name: &'static str,
    rows: RowsFn,
    /// Use the SIMD activation quantizer (bit-identical to the reference one) and fill the
    /// per-block side arrays the SIMD kernels read.
    fast_quantizer: bool,
    /// For 32-value blocks: per-lane multipliers `c` of the activation bias lanes
    /// `-c · Σ(group of 4 quants)` (see `Acts::bias`).
    bias: Option<[i32; 8]>,
    /// The register-blocked matrix × matrix kernel (`gemm`; for the scalar reference of a
    /// quantized type `dequant::rows_reference`) for calls with at least `min_batch`
    /// activation rows; `rows` serves the others.
    gemm: Option<Gemm>,
    /// From [`gemm::MIN_BATCH`] rows on, the int8 AVX-512 VNNI kernel (`gemm_i8`) instead
    /// of `gemm`.
    int8_gemm: bool,
}

/// A `gemm` entry point: called once per task with every activation row, packed into
/// panels by `ActBuf::prepare`.
#[derive(Clone, Copy)]
struct Gemm {
    rows: RowsFn,
    min_batch: usize,
}

impl Kernel {
    const fn simd(name: &'static str, rows: RowsFn) -> Kernel {
        Kernel {
            name,
            rows,
            fast_quantizer: true,
            bias: None,
            gemm: None,
            int8_gemm: false,
        }
    }

    /// `self` with the matrix × matrix kernel `rows` from [`gemm::MIN_BATCH`] rows on.
    #[cfg_attr(
        not(any(target_arch = "x86_64", target_arch = "aarch64")),
        allow(dead_code)
    )]
    const fn with_gemm(self, rows: RowsFn) -> Kernel {
        Kernel {
            gemm: Some(Gemm {
                rows,
                min_batch: gemm::MIN_BATCH,
            }),
            ..self
        }
    }
}

fn select(ty: GgmlType) -> Kernel {
    let simd = match ty {
        GgmlType::F32 => f32::select(),
        GgmlType::F16 => f16::select(),
        GgmlType::Q8_0 => q8_0::select(),
        GgmlType::Q4_0 => q4_0::select(),
        GgmlType::Q4_1 => q4_1::select(),
        GgmlType::Q4_K => q4_k::select(),
        GgmlType::Q6_K => q6_k::select(),
        _ => None,
    };
    // Quantized types: the integer dots below `gemm::MIN_BATCH`, the blocked kernel with a
    // dequantizing decode from there on, at the levels that have it.
    let simd = simd.map(|k| match quantized_gemm() {
        Some(rows) if k.gemm.is_none() && dequant::is_quantized(ty) => k.with_gemm(rows),
        _ => k,
    });
    let simd = simd.map(|k| Kernel { int8_gemm: gemm_i8::serves(ty) && gemm_i8::available(), ..k });
    simd.unwrap_or_else(|| reference_kernel(ty))
}

/// The blocked kernel's entry point for quantized weights at this CPU's level, if it has one
/// (AVX2+FMA+F16C, NEON).
fn quantized_gemm() -> Option<RowsFn> {
    #[cfg(target_arch = "x86_64")]
    if cpu::has_avx2() {
        return Some(gemm::x86_rows());
    }
    #[cfg(target_arch = "aarch64")]
    if cpu::has_neon() {
        return Some(gemm::rows_for::<gemm::neon::Neon>);
    }
    None
}

/// The scalar kernel: the reference `vec_dot` per (row, activation row).
fn reference_kernel(ty: GgmlType) -> Kernel {
    let rows: RowsFn = match ty {
        GgmlType::F32 => f32::rows_reference,
        GgmlType::F16 => f16::rows_reference,
        _ => quantized_rows_reference,
    };
    // Quantized from `gemm::MIN_BATCH` rows on: the dequantized weights in f64 (what the
    // SIMD levels' blocked kernel computes), not the integer dots.
    let gemm = dequant::is_quantized(ty).then_some(Gemm {
        rows: dequant::rows_reference,
        min_batch: gemm::MIN_BATCH,
    });
    Kernel {
        name: "scalar",
        rows,
        fast_quantizer: false,
        bias: None,
        gemm,
        int8_gemm: false,
    }
}

fn quantized_rows_reference(
    w: &Weight,
    acts: &Acts,
    rows: Range<usize>,
    out: &mut [f32],
    stride: usize,
) {
    let dot = match w.ty {
        GgmlType::Q4_0 => quant::q4_0::vec_dot,
        GgmlType::Q4_1 => quant::q4_1::vec_dot,
        GgmlType::Q8_0 => quant::q8_0::vec_dot,
        GgmlType::Q4_K => quant::q4_k::vec_dot,
        GgmlType::Q6_K => quant::q6_k::vec_dot,
        ty => unreachable!("Weight::new admitted {ty}"),
    };
    for (r, out) in rows.zip(out.chunks_mut(stride)) {
        let wr = w.row(r);
        for (b, o) in out[..acts.batch].iter_mut().enumerate() {
            *o = dot(wr, acts.q_row(b));
        }
    }
}

/// Whether the blocked matrix × matrix kernel runs its 16-lane AVX-512 tile on this CPU
/// (under the `EOSTOK_KERNELS` cap), for benchmarks that compare it with the FMA peak.
pub fn gemm_uses_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    return cpu::has_avx512();
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Whether quantized weights at the blocked kernels' batch multiply in int8 with AVX-512
/// VNNI on this CPU (`gemm_i8`; off under `EOSTOK_KERNELS` caps of `avx-vnni` or lower),
/// for benchmarks that compare it with the int8 peak.
pub fn int8_gemm_available() -> bool {
    gemm_i8::available()
}

/// The path a matmul of `ty` with `batch` activation rows takes here: [`variant`] for the
/// per-row dots, else the blocked kernel's (`"avx512-vnni i8 gemm"`, `"avx512 gemm"`,
/// `"avx2+fma gemm"`, `"neon gemm"`, or the scalar reference's `"scalar gemm"`).
pub fn variant_at(ty: GgmlType, batch: usize) -> String {
    let k = if WEIGHT_TYPES.contains(&ty) { select(ty) } else { return "unsupported".into() };
    if k.int8_gemm && batch >= gemm::MIN_BATCH {
        return "avx512-vnni i8 gemm".into();
    }
    // Q8_0's VNNI kind takes the 512-bit matrix × vector at batch 1 (`block32::matvec512`).
    #[cfg(target_arch = "x86_64")]
    if batch == 1 && ty == GgmlType::Q8_0 && cpu::has_avx_vnni() && gemm_i8::available() {
        return "avx512-vnni".into();
    }
    match k.gemm {
        // SIMD levels (`Kernel::simd`) have the fast quantizer; the reference does not.
        Some(g) if batch >= g.min_batch && k.fast_quantizer => {
            if gemm_uses_avx512() {
                "avx512 gemm".into()
            } else if cfg!(target_arch = "aarch64") {
                "neon gemm".into()
            } else {
                "avx2+fma gemm".into()
            }
        }
        Some(g) if batch >= g.min_batch => "scalar gemm".into(),
        _ => k.name.into(),
    }
}

/// Name of the kernel variant chosen at run time for a type, e.g. "avx2+fma",
/// "avx2+avx-vnni", "wide", "scalar"; "unsupported" for types [`Weight::new`] refuses.
pub fn variant(ty: GgmlType) -> &'static str {
    if !WEIGHT_TYPES.contains(&ty) {
        return "unsupported";
    }
    select(ty).name
}

/// `y[b * rows + r] = sum_c W[r, c] * x[b * cols + c]` for `b in 0..batch`.
/// `x`: `[batch, cols]` f32, `y`: `[batch, rows]` f32 (overwritten).
///
/// Panics if `x` or `y` has the wrong length (a caller bug; file data is checked by
/// [`Weight::new`]).
pub fn matmul(w: &Weight, x: &[f32], batch: usize, y: &mut [f32]) {
    run(w, x, batch, y, select(w.ty), true);
}

/// Same as [`matmul`], on one thread with the scalar reference kernels and the reference
/// activation quantizer, for tests and `--info` comparisons.
///
/// Where [`matmul`] multiplies in int8 ([`int8_gemm_available`]: Q8_0/Q4_0/Q4_1/Q4_K from
/// the blocked kernels' batch on), this is that kernel's scalar twin, bit for bit.
pub fn matmul_reference(w: &Weight, x: &[f32], batch: usize, y: &mut [f32]) {
    if gemm_i8::available() && gemm_i8::serves(w.ty) && batch >= gemm::MIN_BATCH {
        check_call("matmul_reference", w, x, batch, y);
        gemm_i8::reference(w, x, batch, y);
        return;
    }
    run(w, x, batch, y, reference_kernel(w.ty), false);
}

/// Below this many multiply-adds a call runs on the calling thread: rayon's fork/join
/// (a few µs) would cost more than it saves.
const SERIAL_MACS: usize = 1 << 17;
/// Bytes of weights one task may cover (batch 1: every AR matrix splits by balance, 2
/// tasks per thread). Long tasks keep each thread on one long sequential stream, which the
/// hardware prefetcher follows at full distance; 32 KiB tasks restarted it every few
/// rows: B decoding at 2 threads, interleaved, q4_0 192-196 → 220-228 tokens/s, q8_0
/// 113-116 → 124-128 (4 tasks per thread of ≥ 32 KiB before).
const TASK_BYTES: usize = 1 << 20;
/// Activation rows per pass over a task's weight rows (one 4-row micro-kernel group): their
/// quantized rows (4 × 4096 Q8_0 values with side arrays ≈ 35 KB) stay in L1 while the
/// task's weight rows stream through; 4 beat 8 and 64 by 10-15% for batch-64 here.
const BATCH_TILE: usize = 4;

/// Panics unless `w` is what `Weight::new` accepts (the fields are public, and the kernels
/// rely on it), `x` is `[batch, w.cols]` and `y` `[batch, w.rows]`.
fn check_call(what: &str, w: &Weight, x: &[f32], batch: usize, y: &[f32]) {
    if let Err(e) = Weight::new(w.ty, w.rows, w.cols, w.data) {
        panic!("{what}: {e}");
    }
    assert_eq!(x.len(), batch * w.cols, "{what}: x is not [batch, cols]");
    assert_eq!(y.len(), batch * w.rows, "{what}: y is not [batch, rows]");
}

fn run(w: &Weight, x: &[f32], batch: usize, y: &mut [f32], kernel: Kernel, parallel: bool) {
    check_call("matmul", w, x, batch, y);
    if batch == 0 || w.rows == 0 {
        return;
    }
    // One thread: run on the caller. Handing the call to rayon's single worker costs two
    // futex hand-offs per matmul and moves the work between cores: B q4_0 decoding at
    // `--threads 1` ran at 55-60 tokens/s that way against 92-104 on the caller.
    let parallel = parallel
        && w.rows * w.cols * batch >= SERIAL_MACS
        && w.rows > 1
        && rayon::current_num_threads() > 1;
    // Quantized weights × many rows: int8 with AVX-512 VNNI where the CPU has it.
    if kernel.int8_gemm && batch >= gemm::MIN_BATCH {
        gemm_i8::matmul(w, x, batch, y, parallel);
        return;
    }
    let gemm = kernel.gemm.filter(|g| batch >= g.min_batch);
    // The blocked kernel reads f32 activations only (packed): none are quantized for it.
    let act_ty = if gemm.is_some() { GgmlType::F32 } else { w.ty };
    let buf = ActBuf::prepare(act_ty, x, batch, w.cols, &kernel, gemm.is_some(), parallel);
    let acts = buf.acts(x, batch, w.cols);
    if let Some(g) = gemm {
        run_gemm(w, &acts, y, g.rows, parallel);
        return;
    }

    run_rows(&[w], &acts, &mut [y], &kernel, parallel);
}

/// `ys[j] = ws[j] · x` for weights of one type and width (the AR step's q/k/v and
/// gate/up): the activations are quantized once and every weight's row chunks are tasks
/// of one parallel job, so a layer pays 4 dispatches and quantizations instead of 7.
/// Same results, bit for bit, as one [`matmul`] per weight, which it falls back to for
/// mixed types or widths and for batches the blocked kernel serves.
///
/// Panics if the lengths do not match (`ys[j]`: `[batch, ws[j].rows]`), as [`matmul`].
pub fn matmul_many(ws: &[&Weight], x: &[f32], batch: usize, ys: &mut [&mut [f32]]) {
    assert_eq!(ws.len(), ys.len(), "matmul_many: one output per weight");
    let Some(w0) = ws.first() else { return };
    let kernel = select(w0.ty);
    let shared = ws.iter().all(|w| w.ty == w0.ty && w.cols == w0.cols);
    let blocked = kernel.gemm.is_some_and(|g| batch >= g.min_batch);
    if ws.len() == 1 || !shared || blocked {
        for (w, y) in ws.iter().zip(ys.iter_mut()) {
            matmul(w, x, batch, y);
        }
        return;
    }
    for (w, y) in ws.iter().zip(ys.iter()) {
        check_call("matmul_many", w, x, batch, y);
    }
    if batch == 0 {
        return;
    }
    let macs: usize = ws.iter().map(|w| w.rows * w.cols * batch).sum();
    let parallel = macs >= SERIAL_MACS && rayon::current_num_threads() > 1;
    let buf = ActBuf::prepare(w0.ty, x, batch, w0.cols, &kernel, false, parallel);
    run_rows(ws, &buf.acts(x, batch, w0.cols), ys, &kernel, parallel);
}

/// The integer-dot path (and F32/F16 below the blocked kernel's batch) for weights of one
/// type and width against the same prepared activations: tasks of output rows, one job.
fn run_rows(ws: &[&Weight], acts: &Acts, ys: &mut [&mut [f32]], kernel: &Kernel, parallel: bool) {
    let batch = acts.batch;
    // Outputs as `[rows, batch]`: each output row's values contiguous, so row chunks split
    // them cleanly between tasks. For one activation row that is `y` itself; otherwise
    // buffers, transposed into `ys` at the end (O(batch · rows), small next to the dots).
    let mut yts: Vec<Vec<f32>> = match batch {
        1 => Vec::new(),
        _ => ws.iter().map(|w| vec![0f32; batch * w.rows]).collect(),
    };
    let outs: Vec<OutPtr> = match batch {
        1 => ys.iter_mut().map(|y| OutPtr(y.as_mut_ptr())).collect(),
        _ => yts.iter_mut().map(|y| OutPtr(y.as_mut_ptr())).collect(),
    };
    // Rows r0..r1 of weight j. A task walks its rows once per tile of activation rows: the
    // tile's quantized rows stay in L1 while the task's weight rows come from L2 (or, for
    // one tile, memory).
    let task = |j: usize, r0: usize, r1: usize| {
        // SAFETY: tasks cover disjoint row ranges of each output, `[rows, batch]` of
        // `ws[j].rows · batch` values (asserted by the callers), alive for the whole run.
        let out = unsafe {
            std::slice::from_raw_parts_mut(outs[j].get().add(r0 * batch), (r1 - r0) * batch)
        };
        for b0 in (0..batch).step_by(BATCH_TILE) {
            let b1 = (b0 + BATCH_TILE).min(batch);
            (kernel.rows)(ws[j], &acts.tile(b0..b1), r0..r1, &mut out[b0..], batch);
        }
    };
    if parallel {
        let chunks: Vec<usize> = ws.iter().map(|w| chunk_rows(w, batch)).collect();
        // Task t belongs to weight j where starts[j] <= t < starts[j + 1].
        let mut starts = vec![0];
        for (w, &c) in ws.iter().zip(&chunks) {
            starts.push(starts[starts.len() - 1] + w.rows.div_ceil(c));
        }
        let tasks = starts[ws.len()];
        parallel_for(tasks, &|t| {
            let j = starts.partition_point(|&s| s <= t) - 1;
            let i = t - starts[j];
            task(j, i * chunks[j], ((i + 1) * chunks[j]).min(ws[j].rows));
        });
    } else {
        for (j, w) in ws.iter().enumerate() {
            task(j, 0, w.rows);
        }
    }
    for ((yt, y), w) in yts.iter().zip(ys.iter_mut()).zip(ws) {
        // SAFETY: `yt` is `[rows, batch]` and `y` `[batch, rows]`, both of the asserted length.
        unsafe { transpose_into(yt, w.rows, batch, y.as_mut_ptr(), w.rows) };
    }
}

/// Runs `f(i)` for every `i` in `0..tasks` across the matmul threads (the spin-waiting
/// pool, else rayon), or on the calling thread when there is one thread or one task: for
/// the model's loops besides matmuls (attention heads). Tasks should each be worth a few µs.
pub fn parallel_for(tasks: usize, f: &(dyn Fn(usize) + Sync)) {
    if tasks < 2 || rayon::current_num_threads() < 2 {
        (0..tasks).for_each(f);
    } else if !on_pool(tasks, f) {
        (0..tasks).into_par_iter().for_each(f);
    }
}

/// Runs `f(i, chunk)` for the consecutive `chunk_len`-element chunks of `data` (the last
/// may be shorter) across the matmul threads, as [`parallel_for`]: for row-wise work
/// between matmuls (the decoder's GELU and attention softmax), which otherwise ran on the
/// calling thread while the other threads spun.
pub fn parallel_chunks(data: &mut [f32], chunk_len: usize, f: &(dyn Fn(usize, &mut [f32]) + Sync)) {
    assert!(chunk_len > 0, "parallel_chunks: empty chunks");
    let (len, base) = (data.len(), OutPtr(data.as_mut_ptr()));
    parallel_for(len.div_ceil(chunk_len), &|i| {
        let start = i * chunk_len;
        // SAFETY: task `i` has the elements `start .. start + chunk_len` (clipped to `len`),
        // disjoint between tasks and inside `data`, which is borrowed for the whole call.
        let chunk = unsafe { std::slice::from_raw_parts_mut(base.get().add(start), chunk_len.min(len - start)) };
        f(i, chunk);
    });
}

/// Runs `f(0..tasks)` on the spin-waiting pool when it is enabled (no wake-up per call);
/// `false` when it is off, busy with another caller or sized for another thread count
/// (then the caller uses rayon).
fn on_pool(tasks: usize, f: &(dyn Fn(usize) + Sync)) -> bool {
    pool::Pool::global()
        .filter(|p| p.size() == rayon::current_num_threads())
        .is_some_and(|pool| pool.run(tasks, f))
}

/// The matrix × matrix path: tasks of whole row blocks ([`gemm::chunk_rows`]), each
/// computed into a per-thread `[rows, batch]` buffer (contiguous, in L2) and transposed
/// into its columns of `y` (`[batch, rows]`), so no call-sized `yt` is allocated, filled
/// and transposed at the end.
fn run_gemm(w: &Weight, acts: &Acts, y: &mut [f32], rows_fn: RowsFn, parallel: bool) {
    let (rows, batch) = (w.rows, acts.batch);
    let chunk = gemm::chunk_rows(rows);
    let tasks = rows.div_ceil(chunk);
    let out = OutPtr(y.as_mut_ptr());
    let task = |i: usize| {
        let (r0, r1) = (i * chunk, ((i + 1) * chunk).min(rows));
        gemm::with_buffer((r1 - r0) * batch, |c| {
            rows_fn(w, acts, r0..r1, c, batch);
            // SAFETY: task `i` writes `y[b · rows + r]` for `r` in `r0..r1` only: disjoint
            // between tasks, inside `y` (`[batch, rows]`, asserted by `run`), which
            // outlives every task.
            unsafe { transpose_into(c, r1 - r0, batch, out.get().add(r0), rows) };
        });
    };
    if parallel {
        parallel_for(tasks, &task);
    } else {
        (0..tasks).for_each(task);
    }
}

/// `dst[b · dst_stride + r] = src[r · batch + b]` for `r < rows`, `b < batch`, in 8 × 8
/// blocks (AVX2 shuffles where the CPU has them): a plain row-by-row loop writes one value
/// per cache line, and with a `dst_stride` of a multiple of 4 KB every line of a row maps
/// to the same cache set (3072 × 512 took 13-19 ms that way, 10% of an F32 matmul).
///
/// # Safety
/// `dst` is valid for writes at every such index.
unsafe fn transpose_into(src: &[f32], rows: usize, batch: usize, dst: *mut f32, dst_stride: usize) {
    assert!(src.len() >= rows * batch);
    #[cfg(target_arch = "x86_64")]
    let simd = cpu::has_avx2();
    for b0 in (0..batch).step_by(8) {
        let b1 = (b0 + 8).min(batch);
        // Rows done in AVX2 8 × 8 blocks; the loop below does the rest.
        #[cfg(target_arch = "x86_64")]
        let r0 = if simd {
            // The destination lines are rarely cached: ask for those of the block after
            // next so their misses overlap instead of stalling the stores one by one
            // (2304 × 512 outputs: 13% of an F32 matmul without, 3% with).
            for b in (b0 + 16..b0 + 24).take_while(|&b| b < batch) {
                let row = dst.wrapping_add(b * dst_stride).cast::<u8>();
                x86::prefetch_lines(row, rows * 4);
            }
            let n = if b1 - b0 == 8 { rows - rows % 8 } else { 0 };
            for r in (0..n).step_by(8) {
                // SAFETY: AVX2 detected; reads rows r..r + 8 at columns b0..b0 + 8 of `src`
                // (in bounds), writes the same indices of `dst` as the loop below.
                x86::transpose8x8(
                    src.as_ptr().add(r * batch + b0),
                    batch,
                    dst.add(b0 * dst_stride + r),
                    dst_stride,
                );
            }
            n
        } else {
            0
        };
        #[cfg(not(target_arch = "x86_64"))]
        let r0 = 0;
        for r in r0..rows {
            let s = &src[r * batch + b0..r * batch + b1];
            for (j, &v) in s.iter().enumerate() {
                *dst.add((b0 + j) * dst_stride + r) = v;
            }
        }
    }
}

/// An output base pointer, shared by the tasks (each writes its own rows of `yt`, or its
/// own columns of `y`).
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}
impl OutPtr {
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// Output rows per task: at most [`TASK_BYTES`] of weights (fewer rows when the batch
/// makes each row expensive), and 2 tasks per thread for load balance (a descheduled
/// worker's second task goes to whoever is free). A
/// multiple of 4, the kernels' row group: a row then meets the same kernel path (4-row
/// pass or single-row tail, whose f32 sums differ in order) however the rows are split,
/// so results do not depend on the thread count.
fn chunk_rows(w: &Weight, batch: usize) -> usize {
    let threads = rayon::current_num_threads().max(1);
    let row_cost = w.row_size().max(1) * batch.min(16);
    let by_bytes = TASK_BYTES.div_ceil(row_cost);
    let by_balance = w.rows.div_ceil(2 * threads);
    by_bytes.min(by_balance).max(1).next_multiple_of(4)
}

//! Throughput check, not a timed test: prints GB/s of weights streamed by a 1024×2816 matvec
//! and GFLOP/s of a batch-64 matmul, per type, on 1 and 2 threads.
//!
//! `cargo test --release -p eostok-runtime --test kernels_throughput -- --ignored --nocapture`
//! (or, to reuse the dev build of the dependencies, add `--config
//! 'profile.dev.package.eostok-runtime.opt-level=3' --config
//! 'profile.dev.package.eostok-runtime.debug-assertions=false'` instead of `--release`:
//! debug assertions turn on the precondition checks of `get_unchecked` in the kernels).
//!
//! 1-thread numbers use the thread's CPU time (robust on a shared machine); 2-thread numbers
//! are wall time. "hot" reuses one matrix (it fits in L2 on most CPUs: compute-bound); "stream" cycles
//! through ~200 MB of distinct matrices so the weights come from L3/DRAM, as in decoding.

mod common;

use common::rng::Rng;
use eostok_runtime::kernels::{self, matmul, matmul_reference, Weight};
use eostok_runtime::quant::{self, GgmlType};
use std::time::{Duration, Instant};

const COLS: usize = 2816;

/// 1024 by default; `EOSTOK_BENCH_ROWS` overrides (e.g. 256 to stay in L2).
fn rows() -> usize {
    std::env::var("EOSTOK_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024)
}

fn weight_bytes(ty: GgmlType, rng: &mut Rng) -> Vec<u8> {
    let rb = ty.row_size(COLS).unwrap();
    let mut out = vec![0u8; rows() * rb];
    let mut row = vec![0f32; COLS];
    for dst in out.chunks_exact_mut(rb) {
        row.iter_mut().for_each(|v| *v = rng.normal() * 0.05);
        quant::quantize_row(ty, &row, dst).unwrap();
    }
    out
}

/// CPU time of the calling thread (Linux `schedstat`), so single-thread numbers hold up
/// on a machine shared with other jobs; wall time elsewhere.
fn thread_cpu_s() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    Some(s.split_whitespace().next()?.parse::<f64>().ok()? * 1e-9)
}

/// Seconds per call, best of a few rounds of at least `min` each. With `cpu_time`, the
/// calling thread's CPU time (for 1-thread runs, where all work is on that thread).
fn time_per_call(min: Duration, cpu_time: bool, mut f: impl FnMut()) -> f64 {
    f();
    let mut best = f64::INFINITY;
    for _ in 0..3 {
        let (start, mut n) = (Instant::now(), 0u32);
        let cpu0 = thread_cpu_s().filter(|_| cpu_time);
        while start.elapsed() < min {
            f();
            n += 1;
        }
        let secs = match (cpu0, thread_cpu_s()) {
            (Some(a), Some(b)) => b - a,
            _ => start.elapsed().as_secs_f64(),
        };
        best = best.min(secs / n as f64);
    }
    best
}

#[test]
#[ignore = "throughput report; run with --release --ignored --nocapture"]
fn matvec_and_matmul_throughput() {
    println!("cpu features: {:?}", kernels::cpu_features());
    let mut rng = Rng::new(7);
    let x1: Vec<f32> = (0..COLS).map(|_| rng.normal()).collect();
    let x64: Vec<f32> = (0..64 * COLS).map(|_| rng.normal()).collect();
    let mut y1 = vec![0f32; rows()];
    let mut y64 = vec![0f32; 64 * rows()];
    let types = [
        GgmlType::Q4_0,
        GgmlType::Q8_0,
        GgmlType::F16,
        GgmlType::Q4_1,
        GgmlType::Q4_K,
        GgmlType::Q6_K,
        GgmlType::F32,
    ];
    // EOSTOK_BENCH_TYPES=q4_0,f16 picks types.
    let only = std::env::var("EOSTOK_BENCH_TYPES").unwrap_or_default();
    for ty in types
        .into_iter()
        .filter(|t| only.is_empty() || only.split(',').any(|n| n == t.name()))
    {
        let data = weight_bytes(ty, &mut rng);
        let w = Weight::new(ty, rows(), COLS, &data).unwrap();
        let mb = data.len() as f64 / 1e6;
        // Distinct copies for the streaming run.
        let copies = (200e6 / data.len() as f64).ceil() as usize;
        let many: Vec<Vec<u8>> = (0..copies).map(|_| data.clone()).collect();
        let ws: Vec<Weight> = many
            .iter()
            .map(|d| Weight::new(ty, rows(), COLS, d).unwrap())
            .collect();

        let t_ref = time_per_call(Duration::from_millis(100), true, || {
            matmul_reference(&w, &x1, 1, &mut y1)
        });
        println!(
            "{ty:>5} [{}] {mb:.2} MB/matrix; scalar reference 1 thread: {:.2} GB/s",
            kernels::variant(ty),
            mb / 1e3 / t_ref
        );
        for threads in [1, 2] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                let one = threads == 1;
                let hot = time_per_call(Duration::from_millis(300), one, || matmul(&w, &x1, 1, &mut y1));
                let mut i = 0;
                let stream = time_per_call(Duration::from_millis(300), one, || {
                    matmul(&ws[i % ws.len()], &x1, 1, &mut y1);
                    i += 1;
                });
                // Plain read of the same bytes: this machine's bandwidth ceiling right now.
                let read = time_per_call(Duration::from_millis(300), one, || {
                    use rayon::prelude::*;
                    let s: u64 = many
                        .par_iter()
                        .map(|m| m.chunks_exact(8).fold(0u64, |a, c| a ^ u64::from_le_bytes(c.try_into().unwrap())))
                        .reduce(|| 0, |a, b| a ^ b);
                    std::hint::black_box(s);
                }) / many.len() as f64;
                let mm = time_per_call(Duration::from_millis(300), one, || matmul(&w, &x64, 64, &mut y64));
                println!(
                    "      {threads} thread(s): matvec hot {:6.1} GB/s ({:6.1} µs), stream {:6.1} GB/s \
                     (plain read {:5.1} GB/s); batch-64 matmul {:6.1} GFLOP/s",
                    mb / 1e3 / hot,
                    hot * 1e6,
                    mb / 1e3 / stream,
                    mb / 1e3 / read,
                    2.0 * (rows() * COLS * 64) as f64 / mm / 1e9
                );
            });
        }
    }
}

//! Shared helpers: statistics over rounds, table/JSON output, thread pools, memory
//! counters from /proc, machine description.

use anyhow::{Context, Result};
use serde_json::Value;

/// Median, min and max of samples.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stats {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

impl Stats {
    pub fn of(xs: &[f64]) -> Stats {
        if xs.is_empty() {
            return Stats::default();
        }
        let mut v = xs.to_vec();
        v.sort_by(f64::total_cmp);
        let mid = v.len() / 2;
        let median = if v.len() % 2 == 1 {
            v[mid]
        } else {
            0.5 * (v[mid - 1] + v[mid])
        };
        Stats {
            median,
            min: v[0],
            max: v[v.len() - 1],
            n: v.len(),
        }
    }
    /// "median (min–max)" with `prec` decimals.
    pub fn show(&self, prec: usize) -> String {
        if self.n <= 1 {
            format!("{:.*}", prec, self.median)
        } else {
            format!(
                "{:.*} ({:.*}–{:.*})",
                prec, self.median, prec, self.min, prec, self.max
            )
        }
    }
    pub fn json(&self) -> Value {
        serde_json::json!({"median": self.median, "min": self.min, "max": self.max, "n": self.n})
    }
}

/// Prints a table (header once, then rows) or, with `json`, one object per row.
pub struct Table {
    json: bool,
    cols: Vec<(String, usize)>,
    printed_header: bool,
}

impl Table {
    pub fn new(json: bool, cols: &[(&str, usize)]) -> Table {
        Table {
            json,
            cols: cols.iter().map(|(n, w)| (n.to_string(), *w)).collect(),
            printed_header: false,
        }
    }
    /// `cells` are the table cells in column order; `obj` is the JSON row.
    pub fn row(&mut self, cells: &[String], obj: Value) {
        if self.json {
            println!("{obj}");
            return;
        }
        if !self.printed_header {
            let h: Vec<String> = self.cols.iter().map(|(n, w)| format!("{n:>w$}")).collect();
            println!("{}", h.join(" "));
            self.printed_header = true;
        }
        let r: Vec<String> = self
            .cols
            .iter()
            .zip(cells)
            .map(|((_, w), c)| format!("{c:>w$}"))
            .collect();
        println!("{}", r.join(" "));
    }
}

pub fn pool(threads: usize) -> Result<rayon::ThreadPool> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads.max(1))
        .build()
        .context("thread pool")
}

pub fn nproc() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// A `kB` field of /proc/self/status or /proc/self/smaps_rollup, in bytes.
pub fn proc_kb(file: &str, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(file).ok()?;
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(key)?.strip_prefix(':')?;
        rest.split_whitespace()
            .next()?
            .parse::<u64>()
            .ok()
            .map(|k| k * 1024)
    })
}

/// The CPU model name and the SIMD flags that matter here.
pub fn cpu_description() -> (String, Vec<String>) {
    let text = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = text
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .and_then(|r| r.split(':').nth(1))
        })
        .unwrap_or("unknown")
        .trim()
        .to_string();
    let flags: Vec<String> = text
        .lines()
        .find_map(|l| l.strip_prefix("flags").and_then(|r| r.split(':').nth(1)))
        .unwrap_or("")
        .split_whitespace()
        .filter(|f| {
            [
                "avx",
                "avx2",
                "fma",
                "f16c",
                "avx_vnni",
                "avx512f",
                "avx512_vnni",
                "avx512bw",
                "avx512vl",
                "amx_int8",
                "asimd",
                "asimddp",
            ]
            .contains(f)
        })
        .map(String::from)
        .collect();
    (model, flags)
}

pub fn mib(b: f64) -> f64 {
    b / (1024.0 * 1024.0)
}

/// The folder for generated model files (git-ignored): `EOSTOK_BENCH_DATA` or `bench-data/`
/// under the current directory.
pub fn data_dir() -> Result<std::path::PathBuf> {
    let d = std::env::var_os("EOSTOK_BENCH_DATA")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from("bench-data"));
    std::fs::create_dir_all(&d).with_context(|| format!("{}: cannot create", d.display()))?;
    Ok(d)
}

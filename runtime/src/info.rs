//! `eostok-run --info`: metadata, tensors, CPU features, kernel variants.

use crate::gguf::{GgufFile, Value};
use crate::kernels;
use crate::quant::GgmlType;
use std::fmt::Write;

pub fn describe(file: &GgufFile, name: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "file: {name} (GGUF v{}, alignment {}, {} bytes)", file.version(), file.alignment(), file.as_bytes().len());
    let _ = writeln!(s, "\nmetadata:");
    for (k, v) in file.metadata().iter() {
        let shown = match v {
            Value::String(x) => format!("{x:?}"),
            Value::F32(x) => format!("{x}"),
            Value::F64(x) => format!("{x}"),
            Value::Array(a) => {
                let full = format!("{a:?}");
                if full.len() > 100 { format!("[{} items]", a.len()) } else { full }
            }
            other => other.as_integer().map(|i| i.to_string()).unwrap_or_else(|| format!("{other:?}")),
        };
        let _ = writeln!(s, "  {k} = {shown}");
    }
    let _ = writeln!(s, "\ntensors:");
    let _ = writeln!(s, "  {:<36} {:>16} {:>6} {:>10}", "name", "dims (ne0..)", "type", "bytes");
    let mut total = 0;
    for t in file.tensors() {
        total += t.n_bytes;
        let _ = writeln!(s, "  {:<36} {:>16} {:>6} {:>10}", t.name, format!("{:?}", t.dims), t.ggml_type.name(), t.n_bytes);
    }
    let _ = writeln!(s, "  {} tensors, {:.2} MiB", file.tensors().len(), total as f64 / 1048576.0);
    let _ = writeln!(s, "\ncpu features: {}", kernels::cpu_features().join(" "));
    let _ = writeln!(s, "kernels:");
    for ty in [GgmlType::F32, GgmlType::F16, GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q4_K, GgmlType::Q6_K] {
        let _ = writeln!(s, "  {:<6} {}", ty.name(), kernels::variant(ty));
    }
    let _ = writeln!(s, "threads: {}", rayon::current_num_threads());
    s
}

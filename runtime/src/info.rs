//! `eostok-run --info`: metadata, tensors, CPU features, kernel variants.

use crate::gguf::{Array, GgufFile, Value};
use crate::kernels;
use crate::quant::GgmlType;
use std::fmt::Write;

pub fn describe(file: &GgufFile, name: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "file: {name} (GGUF v{}, alignment {}, {} bytes)", file.version(), file.alignment(), file.as_bytes().len());
    let _ = writeln!(s, "\nmetadata:");
    for (k, v) in file.metadata().iter() {
        let shown = match v {
            Value::String(x) if x.len() > 200 => format!("{:?}... ({} bytes)", x.chars().take(80).collect::<String>(), x.len()),
            Value::String(x) => format!("{x:?}"),
            Value::F32(x) => format!("{x}"),
            Value::F64(x) => format!("{x}"),
            // Formatting a huge array only to cut it would cost memory in proportion to the file.
            Value::Array(a) if weight(a) > 64 => format!("[{} items]", a.len()),
            Value::Array(a) => {
                let full = format!("{a:?}");
                if full.len() > 100 { format!("[{} items]", a.len()) } else { full }
            }
            other => other.as_integer().map(|i| i.to_string()).unwrap_or_else(|| format!("{other:?}")),
        };
        let _ = writeln!(s, "  {k} = {shown}");
    }
    let recommended = match crate::model::sampling_of(file) {
        Ok(r) if r.is_empty() => "none (without flags: temperature 1, top-k 0, top-p 1, cfg 1)".to_string(),
        Ok(r) => format!("{} (used where no flag is given)", r.resolve(None, None, None, None).from_file.join(", ")),
        Err(e) => format!("invalid: {e} (sampling refuses this file)"),
    };
    let _ = writeln!(s, "\nrecommended sampling: {recommended}");
    let _ = writeln!(s, "\ntensors:");
    let _ = writeln!(s, "  {:<36} {:>16} {:>6} {:>10}", "name", "dims (ne0..)", "type", "bytes");
    let mut total = 0;
    for t in file.tensors() {
        total += t.n_bytes;
        let _ = writeln!(s, "  {:<36} {:>16} {:>6} {:>10}", t.name, format!("{:?}", t.dims), t.ggml_type.name(), t.n_bytes);
    }
    let _ = writeln!(s, "  {} tensors, {:.2} MiB", file.tensors().len(), total as f64 / 1048576.0);
    let _ = writeln!(s, "\ncpu: {} ({})", std::env::consts::ARCH, cpu_model().as_deref().unwrap_or("model unknown"));
    let _ = writeln!(s, "cpu features: {}", kernels::cpu_features().join(" "));
    let _ = writeln!(s, "kernel level: {}", kernels::kernel_level());
    let _ = writeln!(s, "kernels:");
    for ty in [GgmlType::F32, GgmlType::F16, GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q4_K, GgmlType::Q6_K] {
        let _ = writeln!(s, "  {:<6} {}", ty.name(), kernels::variant(ty));
    }
    let _ = writeln!(s, "threads: {}", rayon::current_num_threads());
    s
}

/// The CPU's name from /proc/cpuinfo (`model name` on x86; on aarch64 Linux usually only the
/// implementer/part codes, shown as e.g. `ARM part 0xd0b` = Cortex-A76).
fn cpu_model() -> Option<String> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let field = |key: &str| {
        info.lines()
            .find(|l| l.split(':').next().map(str::trim) == Some(key))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
    };
    if let Some(name) = field("model name") {
        return Some(name);
    }
    let part = field("CPU part")?;
    let implementer = match field("CPU implementer").as_deref() {
        Some("0x41") => "ARM".to_string(),
        Some("0x4e") => "NVIDIA".to_string(),
        Some(other) => format!("implementer {other}"),
        None => "implementer ?".to_string(),
    };
    let known = match part.as_str() {
        "0xd03" => " (Cortex-A53)",
        "0xd08" => " (Cortex-A72)",
        "0xd0b" => " (Cortex-A76)",
        "0xd42" => " (Cortex-A78AE)",
        "0xd41" => " (Cortex-A78)",
        "0xd0c" => " (Neoverse-N1)",
        _ => "",
    };
    Some(format!("{implementer} part {part}{known}"))
}

/// Elements of an array, nested arrays and string bytes included: what
/// printing it in full would cost.
fn weight(a: &Array) -> usize {
    match a {
        Array::Array(v) => v.len() + v.iter().map(weight).sum::<usize>(),
        Array::String(v) => v.len() + v.iter().map(String::len).sum::<usize>(),
        other => other.len(),
    }
}

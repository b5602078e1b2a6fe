//! A streaming GGUF v3 writer: the header (metadata and every tensor's info)
//! is written first from the planned types and shapes, then tensor data one
//! tensor at a time, so a model never has to be held in memory quantized.
//! The file is written under a temporary name and renamed by `finish`; a
//! writer dropped before that removes its temporary file.

use anyhow::{bail, Context, Result};
use eostok_models::gguf_schema::{MetaValue, ALIGNMENT};
use eostok_runtime::quant::GgmlType;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

const GGUF_MAGIC: &[u8; 4] = b"GGUF";
const GGUF_VERSION: u32 = 3;

// GGUF value type ids.
const T_UINT32: u32 = 4;
const T_FLOAT32: u32 = 6;
const T_STRING: u32 = 8;
const T_ARRAY: u32 = 9;
const T_UINT64: u32 = 10;

/// One tensor of the file: name, dims in GGUF order (ne[0] = row length,
/// i.e. the reverse of the PyTorch shape) and type.
#[derive(Debug, Clone)]
pub struct TensorEntry {
    pub name: String,
    pub ne: Vec<u64>,
    pub ty: GgmlType,
}

impl TensorEntry {
    /// From a PyTorch-order shape.
    pub fn new(name: &str, shape: &[usize], ty: GgmlType) -> Self {
        TensorEntry { name: name.to_string(), ne: shape.iter().rev().map(|&d| d as u64).collect(), ty }
    }
    pub fn n_bytes(&self) -> Result<usize> {
        let n: u64 = self.ne.iter().product();
        let rows = n / self.ne[0];
        let row = self.ty.row_size(self.ne[0] as usize).with_context(|| {
            format!("tensor '{}': row length {} is not a multiple of {}'s block size", self.name, self.ne[0], self.ty.name())
        })?;
        Ok(row * rows as usize)
    }
}

pub struct GgufWriter {
    out: Option<BufWriter<File>>,
    tmp: PathBuf,
    dest: PathBuf,
    entries: Vec<TensorEntry>,
    next: usize,
}

fn padding(pos: u64) -> u64 {
    let a = ALIGNMENT as u64;
    (a - pos % a) % a
}

fn put_str(w: &mut impl Write, s: &str) -> std::io::Result<u64> {
    w.write_all(&(s.len() as u64).to_le_bytes())?;
    w.write_all(s.as_bytes())?;
    Ok(8 + s.len() as u64)
}

fn put_value(w: &mut impl Write, v: &MetaValue) -> std::io::Result<u64> {
    let u32b = |w: &mut dyn Write, x: u32| w.write_all(&x.to_le_bytes());
    Ok(match v {
        MetaValue::U32(x) => {
            u32b(w, T_UINT32)?;
            u32b(w, *x)?;
            8
        }
        MetaValue::U64(x) => {
            u32b(w, T_UINT64)?;
            w.write_all(&x.to_le_bytes())?;
            12
        }
        MetaValue::F32(x) => {
            u32b(w, T_FLOAT32)?;
            w.write_all(&x.to_le_bytes())?;
            8
        }
        MetaValue::Str(s) => {
            u32b(w, T_STRING)?;
            4 + put_str(w, s)?
        }
        MetaValue::StrArray(items) => {
            u32b(w, T_ARRAY)?;
            u32b(w, T_STRING)?;
            w.write_all(&(items.len() as u64).to_le_bytes())?;
            let mut n = 16;
            for s in items {
                n += put_str(w, s)?;
            }
            n
        }
    })
}

impl GgufWriter {
    /// Writes the header; `general.alignment` is added if absent.
    pub fn create(dest: &Path, metadata: &[(String, MetaValue)], entries: Vec<TensorEntry>) -> Result<Self> {
        let name = dest.file_name().with_context(|| format!("{}: not a file name", dest.display()))?;
        let tmp = dest.with_file_name(format!(".{}.tmp-{}", name.to_string_lossy(), std::process::id()));
        let file = File::create(&tmp).with_context(|| format!("{}: cannot create", tmp.display()))?;
        let mut w = GgufWriter { out: Some(BufWriter::with_capacity(1 << 20, file)), tmp, dest: dest.to_path_buf(), entries, next: 0 };
        w.write_header(metadata)?;
        Ok(w)
    }

    fn write_header(&mut self, metadata: &[(String, MetaValue)]) -> Result<()> {
        let mut meta: Vec<(String, MetaValue)> = metadata.to_vec();
        if !meta.iter().any(|(k, _)| k == "general.alignment") {
            meta.push(("general.alignment".into(), MetaValue::U32(ALIGNMENT)));
        }
        let out = self.out.as_mut().expect("open");
        let mut pos = 0u64;
        out.write_all(GGUF_MAGIC)?;
        out.write_all(&GGUF_VERSION.to_le_bytes())?;
        out.write_all(&(self.entries.len() as u64).to_le_bytes())?;
        out.write_all(&(meta.len() as u64).to_le_bytes())?;
        pos += 24;
        for (k, v) in &meta {
            pos += put_str(out, k)?;
            pos += put_value(out, v)?;
        }
        let mut offset = 0u64;
        for e in &self.entries {
            pos += put_str(out, &e.name)?;
            out.write_all(&(e.ne.len() as u32).to_le_bytes())?;
            for d in &e.ne {
                out.write_all(&d.to_le_bytes())?;
            }
            out.write_all(&e.ty.id().to_le_bytes())?;
            out.write_all(&offset.to_le_bytes())?;
            pos += 4 + 8 * e.ne.len() as u64 + 4 + 8;
            let n = e.n_bytes()? as u64;
            offset += n + padding(n);
        }
        let pad = padding(pos);
        out.write_all(&vec![0u8; pad as usize])?;
        Ok(())
    }

    /// Data of the next tensor, in plan order, exactly its planned size.
    pub fn write_tensor(&mut self, data: &[u8]) -> Result<()> {
        let Some(e) = self.entries.get(self.next) else { bail!("more tensors written than planned") };
        let want = e.n_bytes()?;
        if data.len() != want {
            bail!("tensor '{}': {} bytes, expected {want} for {} {:?}", e.name, data.len(), e.ty.name(), e.ne);
        }
        let out = self.out.as_mut().expect("open");
        out.write_all(data)?;
        let pad = padding(data.len() as u64);
        out.write_all(&vec![0u8; pad as usize])?;
        self.next += 1;
        Ok(())
    }

    /// Flush, fsync and rename into place.
    pub fn finish(mut self) -> Result<u64> {
        if self.next != self.entries.len() {
            bail!("{} of {} tensors written", self.next, self.entries.len());
        }
        let out = self.out.take().expect("open");
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        let size = file.metadata()?.len();
        drop(file);
        std::fs::rename(&self.tmp, &self.dest).with_context(|| format!("{}: cannot rename into place", self.dest.display()))?;
        if let Some(parent) = self.dest.parent().filter(|p| !p.as_os_str().is_empty()) {
            let _ = File::open(parent).and_then(|d| d.sync_all());
        }
        Ok(size)
    }
}

impl Drop for GgufWriter {
    fn drop(&mut self) {
        if self.out.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

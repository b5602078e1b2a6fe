//! IDX files (the MNIST / Fashion-MNIST format), gzipped or raw.
//!
//! Layout: a big-endian u32 magic `0x0000_08NN` (type 0x08 = u8, NN = number
//! of dims), NN big-endian u32 dims, then the u8 body in row-major order.
//! Images are `0x00000803` (n, rows, cols), labels `0x00000801` (n).
//! Gzip is recognised by its magic bytes, not by the file name.
//!
//! Memory: the header is checked against the file size before any body is
//! read (raw: exactly; gzip: at most deflate's 1032:1 ratio), the raw body
//! is allocated once at its exact size, and a gzip body grows only as
//! decompressed bytes arrive, so a corrupt header cannot make us allocate
//! more than the file justifies.

use super::Dataset;
use anyhow::Result;
use eostok_models::exit::{bad_input, BadInputExt};
use flate2::read::GzDecoder;
use image::{GrayImage, RgbImage};
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

pub const IMAGES_MAGIC: u32 = 0x0000_0803;
pub const LABELS_MAGIC: u32 = 0x0000_0801;

/// Largest IDX image side (MNIST-style files hold small images).
pub const MAX_IMAGE_SIDE: usize = 4096;

/// Deflate cannot compress better than about 1032:1.
const MAX_DEFLATE_RATIO: u64 = 1032;

/// Fashion-MNIST class identifiers, in label order: T-shirt/top, Trouser,
/// Pullover, Dress, Coat, Sandal, Shirt, Sneaker, Bag, Ankle boot.
pub const FASHION_MNIST_CLASSES: [&str; 10] =
    ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle-boot"];

/// [`FASHION_MNIST_CLASSES`] as owned strings.
pub fn fashion_mnist_classes() -> Vec<String> {
    FASHION_MNIST_CLASSES.iter().map(|s| s.to_string()).collect()
}

/// An IDX u8 array: its dims and row-major body.
#[derive(Debug, Clone)]
pub struct IdxArray {
    pub dims: Vec<usize>,
    pub data: Vec<u8>,
}

/// Read an IDX file whose magic must be `magic` (type u8, dims in the low byte).
pub fn read_idx(path: &Path, magic: u32) -> Result<IdxArray> {
    let name = path.display();
    let file = File::open(path).bad_input(&name)?;
    let file_len = file.metadata().bad_input(&name)?.len();
    let mut raw = BufReader::new(file);
    let mut sig = [0u8; 2];
    let gz = match raw.read_exact(&mut sig) {
        Ok(()) => sig == [0x1f, 0x8b],
        Err(_) => return Err(bad_input(format!("{name}: truncated: not even an IDX magic ({file_len} bytes)"))),
    };
    let prefix = std::io::Cursor::new(sig);
    let mut reader: Box<dyn Read> = if gz {
        Box::new(GzDecoder::new(prefix.chain(raw)))
    } else {
        Box::new(prefix.chain(raw))
    };
    let what = if gz { "gzip stream" } else { "file" };

    let mut head = [0u8; 4];
    reader.read_exact(&mut head).map_err(|e| bad_input(format!("{name}: truncated or corrupt {what} in the IDX header: {e}")))?;
    let got = u32::from_be_bytes(head);
    if got != magic {
        return Err(bad_input(format!(
            "{name}: not an IDX {} file (magic 0x{got:08x}, expected 0x{magic:08x})",
            if magic == IMAGES_MAGIC { "image" } else if magic == LABELS_MAGIC { "label" } else { "u8" }
        )));
    }
    let ndims = (magic & 0xff) as usize;
    let mut dims = Vec::with_capacity(ndims);
    for _ in 0..ndims {
        let mut d = [0u8; 4];
        reader.read_exact(&mut d).map_err(|e| bad_input(format!("{name}: truncated IDX header (dims): {e}")))?;
        dims.push(u32::from_be_bytes(d) as usize);
    }
    // An image side beyond this is a damaged header, not a dataset: refuse it
    // before reading (or inflating) a body sized by it.
    if magic == IMAGES_MAGIC && dims.len() == 3 && (dims[1] > MAX_IMAGE_SIDE || dims[2] > MAX_IMAGE_SIDE) {
        return Err(bad_input(format!("{name}: IDX images of {}x{} pixels; at most {MAX_IMAGE_SIDE} per side", dims[1], dims[2])));
    }
    let header_len = 4 + 4 * ndims as u64;
    let body = dims.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d as u64));
    let body = body.ok_or_else(|| bad_input(format!("{name}: IDX dims {dims:?} overflow")))?;
    let limit = if gz { file_len.saturating_mul(MAX_DEFLATE_RATIO) } else { file_len.saturating_sub(header_len) };
    if body > limit {
        return Err(bad_input(format!(
            "{name}: truncated: the header promises {body} bytes of data ({dims:?}), the {what} can hold at most {limit}"
        )));
    }
    // Raw: `body <= limit` is the exact size. Gzip: start at a typical
    // ratio and grow only as decompressed bytes actually arrive.
    let capacity = if gz { body.min(file_len.saturating_mul(8)) } else { body };
    let mut data = Vec::with_capacity(capacity as usize);
    let n = reader
        .by_ref()
        .take(body)
        .read_to_end(&mut data)
        .map_err(|e| bad_input(format!("{name}: truncated or corrupt {what}: {e}")))?;
    if (n as u64) < body {
        return Err(bad_input(format!("{name}: truncated: the header promises {body} bytes of data ({dims:?}), found {n}")));
    }
    let mut extra = [0u8; 1];
    match reader.read(&mut extra) {
        Ok(0) => {}
        Ok(_) => return Err(bad_input(format!("{name}: trailing bytes after the {body} bytes the IDX header describes"))),
        Err(e) => return Err(bad_input(format!("{name}: corrupt {what} after the data: {e}"))),
    }
    Ok(IdxArray { dims, data })
}

/// Which Fashion-MNIST file pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// `train-*` (60,000 images in the full set).
    Train,
    /// `t10k-*` (10,000 images).
    Test,
}

impl Split {
    pub fn prefix(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "t10k",
        }
    }
}

/// Greyscale images + labels from an IDX pair, held in memory.
pub struct IdxDataset {
    images: Vec<u8>,
    labels: Vec<u8>,
    rows: usize,
    cols: usize,
    classes: Vec<String>,
    source: PathBuf,
}

impl IdxDataset {
    /// Read an images file and its labels file. Labels must be
    /// `< classes.len()`; `None` names the classes "0" ..= the largest label.
    pub fn open(images: &Path, labels: &Path, classes: Option<Vec<String>>) -> Result<Self> {
        let img = read_idx(images, IMAGES_MAGIC)?;
        let lab = read_idx(labels, LABELS_MAGIC)?;
        let (n, rows, cols) = (img.dims[0], img.dims[1], img.dims[2]);
        if rows == 0 || cols == 0 {
            return Err(bad_input(format!("{}: images of size {rows}x{cols}", images.display())));
        }
        if lab.dims[0] != n {
            return Err(bad_input(format!(
                "{}: {} labels for {n} images in {}",
                labels.display(),
                lab.dims[0],
                images.display()
            )));
        }
        if n == 0 {
            return Err(bad_input(format!("{}: the dataset is empty (0 images)", images.display())));
        }
        let classes = match classes {
            Some(c) => c,
            None => (0..=lab.data.iter().copied().max().unwrap_or(0)).map(|l| l.to_string()).collect(),
        };
        if let Some((i, &l)) = lab.data.iter().enumerate().find(|(_, &l)| l as usize >= classes.len()) {
            return Err(bad_input(format!("{}: label {l} of sample {i} is not below the {} classes", labels.display(), classes.len())));
        }
        Ok(IdxDataset { images: img.data, labels: lab.data, rows, cols, classes, source: images.to_path_buf() })
    }

    /// `dir/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]` with the
    /// Fashion-MNIST class names.
    pub fn fashion_mnist(dir: &Path, split: Split) -> Result<Self> {
        let images = find_idx_file(dir, split.prefix(), "images-idx3")?;
        let labels = find_idx_file(dir, split.prefix(), "labels-idx1")?;
        Self::open(&images, &labels, Some(fashion_mnist_classes()))
    }

    /// Image height and width.
    pub fn image_size(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }

    /// The raw greyscale pixels of sample `i`.
    pub fn pixels(&self, i: usize) -> &[u8] {
        let px = self.rows * self.cols;
        &self.images[i * px..(i + 1) * px]
    }
}

/// `dir/<prefix>-<kind>-ubyte.gz`, else the uncompressed name.
pub fn find_idx_file(dir: &Path, prefix: &str, kind: &str) -> Result<PathBuf> {
    let base = format!("{prefix}-{kind}-ubyte");
    for name in [format!("{base}.gz"), base.clone()] {
        let p = dir.join(&name);
        if p.is_file() {
            return Ok(p);
        }
    }
    Err(bad_input(format!("{}: no {base}.gz or {base}", dir.display())))
}

impl Dataset for IdxDataset {
    fn len(&self) -> usize {
        self.labels.len()
    }
    fn class_names(&self) -> &[String] {
        &self.classes
    }
    fn label(&self, i: usize) -> u32 {
        self.labels[i] as u32
    }
    fn image(&self, i: usize) -> Result<RgbImage> {
        let grey = GrayImage::from_raw(self.cols as u32, self.rows as u32, self.pixels(i).to_vec())
            .ok_or_else(|| anyhow::anyhow!("IDX image {i}: buffer size mismatch"))?;
        Ok(image::DynamicImage::ImageLuma8(grey).into_rgb8())
    }
    fn describe(&self) -> String {
        format!("{} ({} images {}x{}, {} classes)", self.source.display(), self.len(), self.rows, self.cols, self.classes.len())
    }
}

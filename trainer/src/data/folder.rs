//! ImageFolder: `root/<class>/**/*.{png,jpg,jpeg,webp}`.
//!
//! Classes are the sub-directories of `root`, sorted by name (byte order);
//! a class's images are found recursively and sorted by path. Names are
//! matched case-insensitively on the extension; other files and hidden
//! entries (`.name`) are ignored. The format is taken from the file's
//! content, not its extension.
//!
//! Opening reads every image's header (in parallel). A file whose header
//! cannot be read is skipped with a warning on stderr naming it, and is
//! counted in [`ImageFolder::skipped`]; a file that passes the header check
//! but fails to decode later is a bad-input error (exit 2) naming it.

use super::transform::to_rgb8_on_white;
use super::Dataset;
use anyhow::Result;
use eostok_models::exit::{bad_input, BadInputExt};
use image::{ImageReader, RgbImage};
use rayon::prelude::*;
use std::path::{Path, PathBuf};

/// Extensions (lower case) that count as images.
pub const IMAGE_EXTENSIONS: [&str; 4] = ["png", "jpg", "jpeg", "webp"];

/// Directory nesting below a class folder that is searched (guards symlink loops).
const MAX_DEPTH: usize = 16;

/// A file left out of a dataset, and why.
#[derive(Debug, Clone)]
pub struct Skipped {
    pub path: PathBuf,
    pub reason: String,
}

impl Skipped {
    /// The warning printed on stderr.
    pub fn warning(&self) -> String {
        format!("warning: skipping {}: not a readable image ({})", self.path.display(), self.reason)
    }
}

pub struct ImageFolder {
    root: PathBuf,
    classes: Vec<String>,
    files: Vec<(PathBuf, u32)>,
    skipped: Vec<Skipped>,
}

impl ImageFolder {
    /// Scan `root`. Errors (exit 2): `root` missing or not a directory, no
    /// class directory, no readable image at all.
    pub fn open(root: &Path) -> Result<Self> {
        let name = root.display();
        if !root.exists() {
            return Err(bad_input(format!("{name}: no such directory")));
        }
        if !root.is_dir() {
            return Err(bad_input(format!("{name}: not a directory (an ImageFolder is root/<class>/*.png|jpg|jpeg|webp)")));
        }
        let mut classes: Vec<String> = Vec::new();
        for entry in std::fs::read_dir(root).bad_input(&name)? {
            let entry = entry.bad_input(&name)?;
            let fname = entry.file_name().to_string_lossy().into_owned();
            if !fname.starts_with('.') && entry.path().is_dir() {
                classes.push(fname);
            }
        }
        classes.sort();
        if classes.is_empty() {
            return Err(bad_input(format!("{name}: empty dataset: no class directories (expected root/<class>/*.png|jpg|jpeg|webp)")));
        }
        let mut candidates: Vec<(PathBuf, u32)> = Vec::new();
        for (label, class) in classes.iter().enumerate() {
            let mut found = Vec::new();
            collect_images(&root.join(class), 0, &mut found)?;
            found.sort();
            if found.is_empty() {
                eprintln!("warning: {}: class '{class}' has no images", root.join(class).display());
            }
            candidates.extend(found.into_iter().map(|p| (p, label as u32)));
        }
        // Header checks in parallel; `collect` keeps the sorted order.
        let checked: Vec<std::result::Result<(), String>> = candidates.par_iter().map(|(p, _)| probe(p)).collect();
        let mut files = Vec::with_capacity(candidates.len());
        let mut skipped = Vec::new();
        for ((path, label), ok) in candidates.into_iter().zip(checked) {
            match ok {
                Ok(()) => files.push((path, label)),
                Err(reason) => {
                    let s = Skipped { path, reason };
                    eprintln!("{}", s.warning());
                    skipped.push(s);
                }
            }
        }
        if files.is_empty() {
            let extra = if skipped.is_empty() { String::new() } else { format!(" ({} unreadable files skipped)", skipped.len()) };
            return Err(bad_input(format!(
                "{name}: empty dataset: no readable .png/.jpg/.jpeg/.webp image under its {} class directories{extra}",
                classes.len()
            )));
        }
        Ok(ImageFolder { root: root.to_path_buf(), classes, files, skipped })
    }

    /// Files left out because their header could not be read.
    pub fn skipped(&self) -> &[Skipped] {
        &self.skipped
    }

    pub fn skipped_count(&self) -> usize {
        self.skipped.len()
    }

    /// Path of sample `i`.
    pub fn path(&self, i: usize) -> &Path {
        &self.files[i].0
    }
}

fn collect_images(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) -> Result<()> {
    if depth > MAX_DEPTH {
        return Ok(());
    }
    let name = dir.display();
    for entry in std::fs::read_dir(dir).bad_input(&name)? {
        let path = entry.bad_input(&name)?.path();
        let hidden = path.file_name().is_some_and(|f| f.to_string_lossy().starts_with('.'));
        if hidden {
            continue;
        }
        if path.is_dir() {
            collect_images(&path, depth + 1, out)?;
        } else if has_image_extension(&path) {
            out.push(path);
        }
    }
    Ok(())
}

pub fn has_image_extension(path: &Path) -> bool {
    path.extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.as_str()))
}

/// Read only the header: format from the content, non-zero dimensions.
pub fn probe(path: &Path) -> std::result::Result<(), String> {
    let reader = ImageReader::open(path).map_err(|e| e.to_string())?.with_guessed_format().map_err(|e| e.to_string())?;
    if reader.format().is_none() {
        return Err("unknown image format".into());
    }
    let (w, h) = reader.into_dimensions().map_err(|e| e.to_string())?;
    if w == 0 || h == 0 {
        return Err(format!("empty image ({w}x{h})"));
    }
    Ok(())
}

/// Decode any supported image file to RGB8 (alpha composited on white).
/// Errors are bad input naming the file.
pub fn decode_rgb(path: &Path) -> Result<RgbImage> {
    let name = path.display();
    let img = ImageReader::open(path)
        .bad_input(&name)?
        .with_guessed_format()
        .bad_input(&name)?
        .decode()
        .bad_input(&name)?;
    Ok(to_rgb8_on_white(img))
}

impl Dataset for ImageFolder {
    fn len(&self) -> usize {
        self.files.len()
    }
    fn class_names(&self) -> &[String] {
        &self.classes
    }
    fn label(&self, i: usize) -> u32 {
        self.files[i].1
    }
    fn image(&self, i: usize) -> Result<RgbImage> {
        decode_rgb(&self.files[i].0)
    }
    fn describe(&self) -> String {
        let skipped = if self.skipped.is_empty() { String::new() } else { format!(", {} unreadable skipped", self.skipped.len()) };
        format!("{} (ImageFolder: {} images, {} classes{skipped})", self.root.display(), self.files.len(), self.classes.len())
    }
}

//! The `--data` argument shared by every binary.
//!
//! | spec | dataset |
//! |---|---|
//! | `fashion-mnist` | Fashion-MNIST train split (60,000) from the asset cache |
//! | `fashion-mnist-test` | Fashion-MNIST test split (10,000) from the asset cache |
//! | `emoji` | all base emoji (see [`super::emoji`]) from the asset cache |
//! | `DIR` with `emoji.json` | the emoji layout |
//! | `DIR` with `train-images-idx3-ubyte[.gz]` (else `t10k-…`) | that IDX pair |
//! | `FILE` named `*images-idx3*` | that IDX images file, labels from the same name with `labels-idx1` |
//! | any other `DIR` | ImageFolder `DIR/<class>/*.{png,jpg,jpeg,webp}` |
//!
//! The keywords always mean the asset cache (`$EOSTOK_ASSETS`, default
//! `~/.cache/eostok`); write `./emoji` for a local directory of that name.
//! IDX class names: `classes.txt` next to the files (one per line) if
//! present, else the Fashion-MNIST names when the directory is named
//! `fashion-mnist` (as in the cache and the test fixtures), else "0", "1", ...

use super::emoji::EmojiDataset;
use super::folder::ImageFolder;
use super::idx::{fashion_mnist_classes, find_idx_file, IdxDataset, Split};
use super::Dataset;
use anyhow::Result;
use eostok_models::exit::{bad_input, BadInputExt};
use eostok_models::nets::assets::{asset_dir, FETCH_HINT};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The dataset keywords and what they mean.
pub const DATA_KEYWORDS: [(&str, &str); 3] = [
    ("fashion-mnist", "Fashion-MNIST train split, 60,000 28x28 grey images, 10 classes"),
    ("fashion-mnist-test", "Fashion-MNIST test split, 10,000 images"),
    ("emoji", "Noto Color Emoji 64x64, base emoji only, label = category (9 classes)"),
];

/// Open the dataset named by `spec`. `assets` overrides the cache directory.
pub fn resolve_data(spec: &str, assets: Option<&Path>) -> Result<Arc<dyn Dataset>> {
    let cache = assets.map(Path::to_path_buf).unwrap_or_else(asset_dir);
    match spec {
        "fashion-mnist" | "fashion-mnist-test" => {
            let dir = cache.join("fashion-mnist");
            let split = if spec == "fashion-mnist" { Split::Train } else { Split::Test };
            let name = format!("{}-images-idx3-ubyte.gz", split.prefix());
            if !dir.join(&name).is_file() {
                return Err(not_cached(spec, &cache, &format!("fashion-mnist/{name}")));
            }
            Ok(Arc::new(IdxDataset::fashion_mnist(&dir, split)?))
        }
        "emoji" => {
            let dir = cache.join("emoji");
            if !dir.join("emoji.json").is_file() {
                return Err(not_cached(spec, &cache, "emoji/emoji.json"));
            }
            Ok(Arc::new(EmojiDataset::open(&dir)?))
        }
        _ => open_path(Path::new(spec)),
    }
}

fn not_cached(spec: &str, cache: &Path, rel: &str) -> anyhow::Error {
    bad_input(format!("--data {spec}: the asset cache {} has no {rel}; {FETCH_HINT}", cache.display()))
}

fn open_path(p: &Path) -> Result<Arc<dyn Dataset>> {
    if !p.exists() {
        let words: Vec<&str> = DATA_KEYWORDS.iter().map(|(k, _)| *k).collect();
        return Err(bad_input(format!("--data {}: no such file or directory, and not one of {}", p.display(), words.join(", "))));
    }
    if p.is_file() {
        let fname = p.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
        if !fname.contains("images-idx3") {
            return Err(bad_input(format!(
                "--data {}: a file must be an IDX images file (*images-idx3-ubyte[.gz]); otherwise give a directory",
                p.display()
            )));
        }
        let labels = p.with_file_name(fname.replace("images-idx3", "labels-idx1"));
        let dir = p.parent().unwrap_or(Path::new("."));
        return Ok(Arc::new(IdxDataset::open(p, &labels, idx_class_names(dir)?)?));
    }
    if p.join("emoji.json").is_file() {
        return Ok(Arc::new(EmojiDataset::open(p)?));
    }
    for split in [Split::Train, Split::Test] {
        if let Ok(images) = find_idx_file(p, split.prefix(), "images-idx3") {
            let labels = find_idx_file(p, split.prefix(), "labels-idx1")?;
            return Ok(Arc::new(IdxDataset::open(&images, &labels, idx_class_names(p)?)?));
        }
    }
    Ok(Arc::new(ImageFolder::open(p)?))
}

/// Class names for an IDX directory (rule in the module docs).
fn idx_class_names(dir: &Path) -> Result<Option<Vec<String>>> {
    let list: PathBuf = dir.join("classes.txt");
    if list.is_file() {
        let text = std::fs::read_to_string(&list).bad_input(list.display())?;
        let names: Vec<String> = text.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect();
        if names.is_empty() {
            return Err(bad_input(format!("{}: no class names", list.display())));
        }
        return Ok(Some(names));
    }
    let dir_name = dir.canonicalize().ok().and_then(|d| d.file_name().map(|f| f.to_string_lossy().into_owned()));
    if dir_name.as_deref() == Some("fashion-mnist") {
        return Ok(Some(fashion_mnist_classes()));
    }
    Ok(None)
}

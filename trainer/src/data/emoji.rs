//! The emoji set of npm `emoji-datasource-google`: `ROOT/emoji.json` +
//! `ROOT/img/google/64/*.png` (64x64 RGBA Noto Color Emoji).
//!
//! Which images, and their labels:
//! * one sample per top-level `emoji.json` entry (the base emoji, in file
//!   order); the skin-tone images listed in an entry's `skin_variations`
//!   are never used, so a person emoji appears once, in its default tone;
//! * entries without `image` or `category`, with `has_img_google: false`,
//!   or in the category `Component` (the five skin-tone swatches, which are
//!   colour patches rather than pictures) are left out;
//! * label = `category`, classes = the remaining category names sorted
//!   (9 in emoji-datasource-google 16.0.0: 1,906 images);
//! * an entry whose PNG is missing or has an unreadable header is skipped
//!   with a warning and counted in [`EmojiDataset::skipped`];
//! * RGBA is composited on white.

use super::folder::{decode_rgb, probe, Skipped};
use super::Dataset;
use anyhow::Result;
use eostok_models::exit::{bad_input, BadInputExt};
use image::RgbImage;
use rayon::prelude::*;
use serde::Deserialize;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Where the 64 px images live below the root.
pub const IMAGE_DIR: &str = "img/google/64";
/// Categories that are not used as classes.
pub const EXCLUDED_CATEGORIES: [&str; 1] = ["Component"];

#[derive(Deserialize)]
struct Entry {
    image: Option<String>,
    category: Option<String>,
    has_img_google: Option<bool>,
}

pub struct EmojiDataset {
    root: PathBuf,
    classes: Vec<String>,
    files: Vec<(PathBuf, u32)>,
    skipped: Vec<Skipped>,
}

impl EmojiDataset {
    /// Read `root/emoji.json` and check every selected image's header.
    pub fn open(root: &Path) -> Result<Self> {
        let json_path = root.join("emoji.json");
        let jname = json_path.display();
        if !json_path.is_file() {
            return Err(bad_input(format!("{jname}: no such file (the emoji set is ROOT/emoji.json + ROOT/{IMAGE_DIR}/*.png)")));
        }
        let text = std::fs::read(&json_path).bad_input(&jname)?;
        let entries: Vec<Entry> = serde_json::from_slice(&text).bad_input(&jname)?;
        let mut chosen: Vec<(String, String)> = Vec::new(); // (image file name, category)
        for e in entries {
            let (Some(image), Some(category)) = (e.image, e.category) else { continue };
            if e.has_img_google == Some(false) || EXCLUDED_CATEGORIES.contains(&category.as_str()) {
                continue;
            }
            chosen.push((image, category));
        }
        let classes: Vec<String> = chosen.iter().map(|(_, c)| c.clone()).collect::<BTreeSet<_>>().into_iter().collect();
        let img_dir = root.join(IMAGE_DIR);
        let checked: Vec<(PathBuf, u32, std::result::Result<(), String>)> = chosen
            .par_iter()
            .map(|(image, category)| {
                let path = img_dir.join(image);
                // `classes` was built from these categories: always found.
                let label = classes.binary_search(category).unwrap_or_default() as u32;
                // A name is a plain file name; anything else could leave the set's directory.
                let ok = if image.contains(['/', '\\']) || image.starts_with('.') {
                    Err(format!("image name '{image}' in {jname} is not a plain file name"))
                } else if !path.is_file() {
                    Err("no such file".to_string())
                } else {
                    probe(&path)
                };
                (path, label, ok)
            })
            .collect();
        let mut files = Vec::with_capacity(checked.len());
        let mut skipped = Vec::new();
        for (path, label, ok) in checked {
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
            return Err(bad_input(format!(
                "{}: empty dataset: no usable emoji image ({} entries selected, {} unreadable)",
                root.display(),
                chosen.len(),
                skipped.len()
            )));
        }
        Ok(EmojiDataset { root: root.to_path_buf(), classes, files, skipped })
    }

    /// Selected entries whose image was missing or unreadable.
    pub fn skipped(&self) -> &[Skipped] {
        &self.skipped
    }

    /// Path of sample `i`.
    pub fn path(&self, i: usize) -> &Path {
        &self.files[i].0
    }
}

impl Dataset for EmojiDataset {
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
        format!("{} (emoji: {} images, {} categories)", self.root.display(), self.files.len(), self.classes.len())
    }
}

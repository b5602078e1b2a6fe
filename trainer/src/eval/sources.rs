//! Where evaluated images come from (`--real SRC`, `--fake SRC`).
//!
//! | SRC | images |
//! |---|---|
//! | `fashion-mnist`, `fashion-mnist-test`, `emoji`, an IDX or ImageFolder path | a dataset (see `data::resolve`) |
//! | a directory holding images directly (no class folders) | a flat folder, sorted by name, no labels |
//! | a `.gguf` file (or any file starting with `GGUF`) | class-conditional samples from the model (eostok-runtime, CPU) |
//! | a dataset or folder, then `:K/M` (e.g. `emoji:1/2`) | part K of M disjoint parts of it |
//!
//! Parts give a real floor for a set with one split: `--real emoji:1/2
//! --fake emoji:2/2` compares two halves that share no image. The parts come
//! from one fixed shuffle (not `--seed`), so part K is the same set whatever
//! the seed; `--seed` then picks the first `n` inside it.
//!
//! Selection of `n` images:
//! * datasets and folders: the first `n` of a seeded shuffle of the
//!   samples (of one class with `--class`); fewer when the set is smaller;
//! * models: `--class all` spreads `n` over the classes (class `c` gets
//!   `n / C` images, the first `n % C` classes one more), in class order;
//!   images are generated in batches of [`GEN_BATCH`], batch `j` with its
//!   own seed `mix(seed, j)` — the same `n`, seed and model always give the
//!   same images, whatever the thread count.
//!
//! Every image is brought to `size` x `size` RGB8 (centre crop + CatmullRom
//! resize, `data::transform::prepare`; generated images are quantised to
//! 8 bits as a PNG would be), then to [-1, 1] floats.

use crate::data::folder::{decode_rgb, has_image_extension};
use crate::data::{epoch_order, prepare, resolve_data, to_chw_pm1, Dataset};
use anyhow::Result;
use candle_core::{Device, Tensor};
use eostok_models::exit::{bad_input, BadInputExt};
use eostok_models::gguf_schema::SamplingRecommendation;
use eostok_models::sampling::{SamplingChoice, SplitMix64, TokenSampling};
use eostok_runtime::generate::{generate, GenerateOptions};
use eostok_runtime::gguf::GgufFile;
use eostok_runtime::image_out::to_rgb8;
use eostok_runtime::model::{sampling_of, Model};
use image::RgbImage;
use rayon::prelude::*;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Images generated per sampler call.
pub const GEN_BATCH: usize = 50;
/// Images decoded per batch from datasets and folders.
pub const LOAD_BATCH: usize = 32;

/// Sampling settings for model sources.
#[derive(Debug, Clone)]
pub struct SampleSettings {
    pub sampling: TokenSampling,
    pub cfg_scale: f32,
}

impl Default for SampleSettings {
    fn default() -> Self {
        SampleSettings { sampling: TokenSampling { temperature: 1.0, top_k: 0, top_p: 1.0 }, cfg_scale: 1.0 }
    }
}

impl From<&SamplingChoice> for SampleSettings {
    fn from(c: &SamplingChoice) -> Self {
        SampleSettings { sampling: c.sampling, cfg_scale: c.cfg_scale }
    }
}

/// The sampling flags as given (`None`: not given). A model source fills
/// the rest from its file's recommended sampling (`eostok.sampling.*`),
/// then from the defaults (temperature 1, top-k 0, top-p 1, cfg 1).
#[derive(Debug, Clone, Default)]
pub struct SamplingFlags {
    pub temperature: Option<f64>,
    pub top_k: Option<usize>,
    pub top_p: Option<f64>,
    pub cfg_scale: Option<f32>,
}

impl SamplingFlags {
    /// The values given are in range (else exit 2).
    pub fn check(&self) -> Result<()> {
        let ok = self.temperature.is_none_or(|t| t >= 0.0) && self.top_p.is_none_or(|p| p > 0.0 && p <= 1.0) && self.cfg_scale.is_none_or(f32::is_finite);
        if !ok {
            return Err(bad_input("--temperature must be >= 0, --top-p in (0, 1], --cfg finite"));
        }
        Ok(())
    }

    /// The flags, else what `rec` recommends, else the defaults.
    pub fn resolve(&self, rec: &SamplingRecommendation) -> SamplingChoice {
        rec.resolve(self.temperature, self.top_k, self.top_p, self.cfg_scale)
    }
}

/// The sampling settings a run used, as its output states them.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SamplingUsed {
    pub temperature: f64,
    pub top_k: usize,
    pub top_p: f64,
    pub cfg: f32,
    /// The settings taken from the file's recommendation, e.g. `["cfg 1.5"]`.
    pub from_file: Vec<String>,
}

impl From<&SamplingChoice> for SamplingUsed {
    fn from(c: &SamplingChoice) -> Self {
        SamplingUsed { temperature: c.sampling.temperature, top_k: c.sampling.top_k, top_p: c.sampling.top_p, cfg: c.cfg_scale, from_file: c.from_file.clone() }
    }
}

impl SamplingUsed {
    /// One line for text output.
    pub fn describe(&self) -> String {
        let mut s = format!("temperature {}, top-k {}, top-p {}, cfg {}", self.temperature, self.top_k, self.top_p, self.cfg);
        if !self.from_file.is_empty() {
            s += &format!(" ({} from the file's recommendation)", self.from_file.join(", "));
        }
        s
    }
}

pub enum SourceKind {
    Dataset(Arc<dyn Dataset>),
    Flat(Vec<PathBuf>),
    Gguf(Box<GgufFile>),
}

pub struct Source {
    /// As the user wrote it.
    pub spec: String,
    pub kind: SourceKind,
    /// `:K/M`: only part K (1-based) of M disjoint parts.
    pub part: Option<(usize, usize)>,
}

/// The fixed shuffle that deals a set's images into parts.
const PART_SEED: u64 = 0x9A27_5EED;

/// `SPEC:K/M` -> (`SPEC`, K, M) when the suffix is two runs of digits (a number too large
/// for `usize` reads as 0, which the caller refuses).
fn split_part(spec: &str) -> Option<(&str, usize, usize)> {
    let (base, part) = spec.rsplit_once(':')?;
    let (k, m) = part.split_once('/')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    (!base.is_empty() && digits(k) && digits(m)).then(|| (base, k.parse().unwrap_or(0), m.parse().unwrap_or(0)))
}

/// What to draw from a source.
#[derive(Debug, Clone)]
pub enum Plan {
    /// Dataset sample indices or flat-folder file indices.
    Indices(Vec<usize>),
    /// One class id per generated image.
    Classes(Vec<u32>),
}

impl Plan {
    pub fn len(&self) -> usize {
        match self {
            Plan::Indices(v) => v.len(),
            Plan::Classes(v) => v.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn is_gguf(p: &Path) -> bool {
    if p.extension().is_some_and(|e| e.eq_ignore_ascii_case("gguf")) {
        return true;
    }
    let mut magic = [0u8; 4];
    p.is_file() && std::fs::File::open(p).and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic)).is_ok() && &magic == b"GGUF"
}

/// Image files directly inside `dir` (sorted), if it has no sub-directories.
fn flat_images(dir: &Path) -> Option<Vec<PathBuf>> {
    let mut files = Vec::new();
    for e in std::fs::read_dir(dir).ok()? {
        let p = e.ok()?.path();
        let hidden = p.file_name().is_some_and(|f| f.to_string_lossy().starts_with('.'));
        if hidden {
            continue;
        }
        if p.is_dir() {
            return None;
        }
        if has_image_extension(&p) {
            files.push(p);
        }
    }
    files.sort();
    (!files.is_empty()).then_some(files)
}

impl Source {
    pub fn open(spec: &str) -> Result<Source> {
        // A path that exists wins over the `:K/M` reading of its name.
        if let Some((base, k, m)) = split_part(spec).filter(|_| !Path::new(spec).exists()) {
            if m == 0 || k == 0 || k > m {
                return Err(bad_input(format!("{spec}: a part is :K/M with 1 <= K <= M (e.g. emoji:1/2)")));
            }
            let mut src = Source::open(base)?;
            if src.is_model() {
                return Err(bad_input(format!("{spec}: parts (:K/M) select from datasets and folders, not from a model")));
            }
            src.spec = spec.to_string();
            src.part = Some((k, m));
            return Ok(src);
        }
        let p = Path::new(spec);
        let kind = if is_gguf(p) {
            let f = GgufFile::open(p).bad_input(p.display())?;
            // Validate now, so a bad file fails before any work.
            Model::load(&f).map_err(|e| bad_input(format!("{}: {e}", p.display())))?;
            sampling_of(&f).map_err(|e| bad_input(format!("{}: {e}", p.display())))?;
            SourceKind::Gguf(Box::new(f))
        } else if let Some(files) = p.is_dir().then(|| flat_images(p)).flatten() {
            SourceKind::Flat(files)
        } else {
            SourceKind::Dataset(resolve_data(spec, None)?)
        };
        Ok(Source { spec: spec.to_string(), kind, part: None })
    }

    /// Whether item `i` of `len` is in this source's part (always, without one).
    fn in_part(&self, len: usize) -> impl Fn(usize) -> bool {
        let member: Option<Vec<bool>> = self.part.map(|(k, m)| {
            let (order, _) = epoch_order(len, PART_SEED, 0, false);
            let mut member = vec![false; len];
            for (pos, &i) in order.iter().enumerate() {
                member[i as usize] = pos % m == k - 1;
            }
            member
        });
        move |i| member.as_ref().is_none_or(|m| m[i])
    }

    /// The sampling a model source's file recommends (checked; a bad value is
    /// exit 2 naming the file and key); none for other sources.
    pub fn recommended_sampling(&self) -> Result<SamplingRecommendation> {
        match &self.kind {
            SourceKind::Gguf(f) => sampling_of(f).map_err(|e| bad_input(format!("{}: {e}", self.spec))),
            _ => Ok(SamplingRecommendation::default()),
        }
    }

    /// `dataset`, `folder` or `gguf`.
    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            SourceKind::Dataset(_) => "dataset",
            SourceKind::Flat(_) => "folder",
            SourceKind::Gguf(_) => "gguf",
        }
    }

    pub fn is_model(&self) -> bool {
        matches!(self.kind, SourceKind::Gguf(_))
    }

    /// One line for logs.
    pub fn describe(&self) -> String {
        match &self.kind {
            SourceKind::Dataset(d) => match self.part {
                Some((k, m)) => format!("{}, part {k} of {m}", d.describe()),
                None => d.describe(),
            },
            SourceKind::Flat(f) => format!("{} ({} images, flat folder)", self.spec, f.len()),
            SourceKind::Gguf(f) => match Model::load(f) {
                Ok(m) => format!("{} (model '{}', {} px, {} classes)", self.spec, m.cfg.name, m.cfg.image_size, m.cfg.num_classes),
                Err(_) => self.spec.clone(),
            },
        }
    }

    /// The images' own side: the model's image size, else the shorter side
    /// of the first image.
    pub fn native_size(&self) -> Result<usize> {
        let img = match &self.kind {
            SourceKind::Gguf(f) => return Ok(Model::load(f)?.cfg.image_size),
            SourceKind::Dataset(d) => d.image(0)?,
            SourceKind::Flat(f) => decode_rgb(&f[0])?,
        };
        Ok(img.width().min(img.height()) as usize)
    }

    /// Class names, when the source has labels.
    pub fn class_names(&self) -> Option<Vec<String>> {
        match &self.kind {
            SourceKind::Dataset(d) => Some(d.class_names().to_vec()),
            SourceKind::Flat(_) => None,
            SourceKind::Gguf(f) => Model::load(f).ok().map(|m| (0..m.cfg.num_classes).map(|i| m.cfg.class_name(i)).collect()),
        }
    }

    /// Resolve `--class` (`all`, an id, or a name) against this source's
    /// classes: None = all.
    pub fn class_filter(&self, class: &str) -> Result<Option<u32>> {
        if class == "all" {
            return Ok(None);
        }
        if let SourceKind::Gguf(f) = &self.kind {
            return Ok(Some(Model::load(f)?.class_id(class)?));
        }
        let names = self.class_names().ok_or_else(|| bad_input(format!("--class {class}: {} is a folder without classes; use --class all", self.spec)))?;
        if let Ok(id) = class.parse::<usize>() {
            if id < names.len() {
                return Ok(Some(id as u32));
            }
            return Err(bad_input(format!("--class {id}: {} has classes 0..{}", self.spec, names.len())));
        }
        let norm = |s: &str| s.to_lowercase().replace(['_', ' ', '/'], "-");
        names
            .iter()
            .position(|c| norm(c) == norm(class))
            .map(|i| Some(i as u32))
            .ok_or_else(|| bad_input(format!("--class {class}: not a class of {} ({})", self.spec, names.join(", "))))
    }

    /// Choose `n` images (see the module docs).
    pub fn plan(&self, n: usize, class: Option<u32>, seed: u64) -> Result<Plan> {
        match &self.kind {
            SourceKind::Gguf(f) => {
                let classes = match class {
                    Some(c) => vec![c; n],
                    None => {
                        let nc = Model::load(f)?.cfg.num_classes;
                        (0..nc).flat_map(|c| std::iter::repeat_n(c as u32, n / nc + usize::from(c < n % nc))).collect()
                    }
                };
                Ok(Plan::Classes(classes))
            }
            SourceKind::Dataset(d) => {
                let (order, _) = epoch_order(d.len(), seed, 0, false);
                let in_part = self.in_part(d.len());
                let picked: Vec<usize> =
                    order.into_iter().map(|i| i as usize).filter(|&i| in_part(i) && class.is_none_or(|c| d.label(i) == c)).take(n).collect();
                if picked.is_empty() {
                    return Err(bad_input(format!("{}: no image of the selected class", self.spec)));
                }
                Ok(Plan::Indices(picked))
            }
            SourceKind::Flat(files) => {
                let (order, _) = epoch_order(files.len(), seed, 0, false);
                let in_part = self.in_part(files.len());
                Ok(Plan::Indices(order.into_iter().map(|i| i as usize).filter(|&i| in_part(i)).take(n).collect()))
            }
        }
    }

    /// Call `f` with consecutive batches of the planned images as
    /// `[B,3,size,size]` tensors in [-1, 1], and the number of images so far.
    pub fn for_each_batch(
        &self,
        plan: &Plan,
        size: usize,
        seed: u64,
        settings: &SampleSettings,
        device: &Device,
        mut f: impl FnMut(Tensor) -> Result<()>,
    ) -> Result<()> {
        let to_tensor = |imgs: Vec<RgbImage>| -> Result<Tensor> {
            let b = imgs.len();
            let data: Vec<f32> = imgs.iter().flat_map(to_chw_pm1).collect();
            Ok(Tensor::from_vec(data, (b, 3, size, size), device)?)
        };
        match (&self.kind, plan) {
            (SourceKind::Gguf(file), Plan::Classes(classes)) => {
                let model = Model::load(file)?;
                for (j, chunk) in classes.chunks(GEN_BATCH).enumerate() {
                    let ids = generate_batch(&model, chunk, j, seed, settings)?;
                    let images = model.decoder.decode(&ids)?;
                    f(decoded_to_tensor(&images, chunk.len(), model.cfg.channels, model.cfg.image_size, size, device)?)?;
                }
                Ok(())
            }
            (SourceKind::Dataset(d), Plan::Indices(idx)) => {
                for chunk in idx.chunks(LOAD_BATCH) {
                    let imgs = chunk.par_iter().map(|&i| d.get(i, size, false).map(|(img, _)| img)).collect::<Result<Vec<_>>>()?;
                    f(to_tensor(imgs)?)?;
                }
                Ok(())
            }
            (SourceKind::Flat(files), Plan::Indices(idx)) => {
                for chunk in idx.chunks(LOAD_BATCH) {
                    let imgs = chunk.par_iter().map(|&i| decode_rgb(&files[i]).map(|img| prepare(img, size, false))).collect::<Result<Vec<_>>>()?;
                    f(to_tensor(imgs)?)?;
                }
                Ok(())
            }
            _ => Err(anyhow::anyhow!("plan does not match the source")),
        }
    }

    /// What identifies this source's images for the statistics cache, or
    /// None when they must not be cached (generated images).
    pub fn cache_identity(&self) -> Option<String> {
        match &self.kind {
            SourceKind::Dataset(d) => Some(format!("{} | {}", self.spec, d.describe())),
            SourceKind::Flat(f) => {
                let dir = std::fs::canonicalize(&self.spec).unwrap_or_else(|_| PathBuf::from(&self.spec));
                // Names and sizes: a changed file set gives another key.
                let mut h = Fnv::default();
                for p in f {
                    h.write(p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default().as_bytes());
                    h.write(&std::fs::metadata(p).map(|m| m.len()).unwrap_or(0).to_le_bytes());
                }
                Some(format!("{} | {} files | {:016x}", dir.display(), f.len(), h.0))
            }
            SourceKind::Gguf(_) => None,
        }
    }
}

/// The tokens of generation batch `j` of a model source: the images of
/// `chunk` (at most [`GEN_BATCH`] classes, batch `j` of the plan's classes)
/// sampled together with the seed `batch_seed(seed, j)`, all latent tokens
/// each. Model sources generate exactly this way (`eostok-bench precision`
/// calls it to keep the tokens).
pub fn generate_batch(model: &Model, chunk: &[u32], j: usize, seed: u64, settings: &SampleSettings) -> Result<Vec<Vec<u32>>> {
    let opts = GenerateOptions { sampling: settings.sampling, cfg_scale: settings.cfg_scale, seed: batch_seed(seed, j) };
    Ok(generate(model, chunk, model.cfg.latent_tokens, &opts, false, |_| {})?.ids)
}

/// `b` decoded images (`[B, channels, image_size, image_size]` in about
/// [-1, 1], as the decoder returns them) as model sources hand them to the
/// feature nets: quantised to 8 bits as a PNG would be, brought to `size`,
/// then `[B, 3, size, size]` in [-1, 1].
pub fn decoded_to_tensor(images: &[f32], b: usize, channels: usize, image_size: usize, size: usize, device: &Device) -> Result<Tensor> {
    let data: Vec<f32> = (0..b).flat_map(|i| to_chw_pm1(&prepare(to_rgb8(images, i, channels, image_size), size, false))).collect();
    Ok(Tensor::from_vec(data, (b, 3, size, size), device)?)
}

/// The seed of generation batch `j`.
pub fn batch_seed(seed: u64, j: usize) -> u64 {
    let mut r = SplitMix64::new(seed ^ (j as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    r.next_u64()
}

/// FNV-1a 64, for cache keys.
#[derive(Debug, Clone, Copy)]
pub struct Fnv(pub u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    pub fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= b as u64;
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

//! `eostok-bench precision`: sample quality against quantization precision.
//!
//! The checkpoint's EMA weights are quantized (the quantize crate's library, as
//! `eostok-quantize` does) to each `--types` entry into `bench-data/precision/<type>.gguf`.
//! Each file then samples the same `n` images (the class spread and batch seeds of
//! `eostok-eval fd`'s model sources: `eval::sources::generate_batch`), timed on the CPU
//! runtime, and is compared with the f32 file:
//!
//! * token agreement under the same seed: the fraction of token positions equal to f32's
//!   and the fraction of images whose whole sequence is equal;
//! * PSNR of the decoder given identical tokens: f32's token sequences decoded with this
//!   file's decoder against the f32 decoder's images (on [0, 1] after clamping, over every
//!   pixel of every image; f32 itself: infinite, shown "—", JSON `null`);
//! * Fréchet distances on EfficientNet-Lite0 and DINOv2-S CLS features against `--real`
//!   (real statistics cached exactly as `eostok-eval fd` caches them), printed as
//!   `FD_effnet-lite0` / `FD_dinov2` — a Fréchet distance on these nets is not FID;
//! * the real floor: FD of `--real` against `--floor` (the train set), `n` images each.
//!
//! Bits per weight are those of the weight matrices as written (read back from the GGUF's
//! tensor table), and the file size is the written file's: k-quants fall back to legacy
//! types where rows are not multiples of 256, and the table lists the actual matrix types.

use crate::util;
use anyhow::{anyhow, Context, Result};
use candle_core::Device;
use eostok_models::checkpoint::{self, WeightSet};
use eostok_models::exit::bad_input;
use eostok_models::sampling::TokenSampling;
use eostok_models::shapes::Kind;
use eostok_models::Config;
use eostok_quantize::{quantize, Options, QuantType};
use eostok_runtime::gguf::GgufFile;
use eostok_runtime::model::Model;
use eostok_train::eval::cache::{self, CacheKey, CACHE_VERSION};
use eostok_train::eval::fd::{frechet_distance_auto, Stats};
use eostok_train::eval::fd_cmd::FAKE_SUBSET_SALT;
use eostok_train::eval::features::{Extractor, FeatureNet, FeatureSet};
use eostok_train::eval::progress_bar;
use eostok_train::eval::sources::{decoded_to_tensor, generate_batch, Plan, SampleSettings, Source, GEN_BATCH};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The `resize` field of `eostok-eval fd`'s cache keys (trainer/src/eval/fd_cmd.rs): the
/// same key finds the same cached real statistics. A unit test checks the two agree.
pub const FD_CMD_RESIZE: &str = "centre-crop + catmull-rom to size, then the net's bicubic";

#[derive(clap::Args, Debug, Clone)]
pub struct PrecisionArgs {
    /// Checkpoint directory (config.json + ema.safetensors); its EMA weights are quantized.
    #[arg(long, default_value = "runs/demo")]
    pub checkpoint: PathBuf,
    /// Precisions to compare (f32 is always run: it is the reference).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "f32,f16,q8_0,q4_0,q4_1,q4_k,q6_k,mixed")]
    pub types: Vec<QuantType>,
    /// Images per type (spread evenly over the classes; image i has the same class and
    /// batch seed in every type), and real images per side.
    #[arg(short = 'n', default_value_t = 500)]
    pub n: usize,
    /// Feature nets for the Fréchet distances: effnet-lite0, dinov2, or none.
    #[arg(long, default_value = "effnet-lite0,dinov2")]
    pub features: String,
    /// Real images: fashion-mnist-test, or a dataset/folder as in `eostok-eval fd --real`.
    #[arg(long, default_value = "fashion-mnist-test")]
    pub real: String,
    /// The floor's other side (FD of --real against it, n images each), or none.
    #[arg(long, default_value = "fashion-mnist")]
    pub floor: String,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Directory of the real-statistics cache (default: the asset cache; files under eval-stats/).
    #[arg(long)]
    pub cache: Option<PathBuf>,
    /// Neither read nor write cached statistics.
    #[arg(long)]
    pub no_cache: bool,
    /// Sampling temperature (0 = greedy).
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f64,
    /// Top-k (0 = off).
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    /// Top-p (1 = off).
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f64,
    /// Classifier-free guidance scale (1 = off).
    #[arg(long = "cfg", default_value_t = 1.0)]
    pub cfg_scale: f32,
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Where the GGUF files go (default: bench-data/precision, or $EOSTOK_BENCH_DATA/precision).
    #[arg(long)]
    pub out_dir: Option<PathBuf>,
    /// Also write DOCS_DIR/precision.md and DOCS_DIR/precision.png.
    #[arg(long)]
    pub write_docs: bool,
    #[arg(long, default_value = "docs")]
    pub docs_dir: PathBuf,
    /// A sentence added to precision.md (e.g. why -n differs from the default).
    #[arg(long)]
    pub note: Option<String>,
    /// One JSON object per row instead of a table.
    #[arg(long)]
    pub json: bool,
    /// No progress bars.
    #[arg(short, long)]
    pub quiet: bool,
}

/// One precision's measurements.
struct TypeRow {
    ty: QuantType,
    path: PathBuf,
    file_bytes: u64,
    /// Bits per weight of the weight matrices as written.
    matrix_bpw: f64,
    /// Actual matrix types and their counts.
    matrix_types: BTreeMap<String, usize>,
    /// Matrices whose type differs from the requested one (the quantizer's fallbacks).
    fell_back: usize,
    ar_secs: f64,
    decode_secs: f64,
    tokens: Vec<Vec<u32>>,
    /// Against f32 (filled once f32 has run).
    token_agree: f64,
    seq_agree: f64,
    /// MSE on [0, 1] of f32's tokens decoded here vs by f32's decoder.
    decode_mse: f64,
    /// One per feature net.
    fd: Vec<f64>,
}

impl TypeRow {
    fn psnr(&self) -> f64 {
        if self.decode_mse <= 0.0 {
            f64::INFINITY
        } else {
            10.0 * (1.0 / self.decode_mse).log10()
        }
    }
    fn tokens_per_s(&self) -> f64 {
        let t: usize = self.tokens.iter().map(Vec::len).sum();
        t as f64 / self.ar_secs.max(1e-9)
    }
    fn images_per_s(&self) -> f64 {
        self.tokens.len() as f64 / (self.ar_secs + self.decode_secs).max(1e-9)
    }
    /// "q4_k×8 q4_1×12 f16×1"; one name when every matrix has it.
    fn types_text(&self) -> String {
        if self.matrix_types.len() == 1 {
            return self.matrix_types.keys().next().cloned().unwrap_or_default();
        }
        let mut v: Vec<(&String, &usize)> = self.matrix_types.iter().collect();
        v.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        v.iter().map(|(t, c)| format!("{t}×{c}")).collect::<Vec<_>>().join(" ")
    }
    fn fallback_text(&self) -> String {
        if self.fell_back == 0 {
            "no".into()
        } else {
            format!("{} of {}", self.fell_back, self.matrix_types.values().sum::<usize>())
        }
    }
}

/// The floor: FD of the real set against another real set, per net.
struct Floor {
    spec: String,
    n: usize,
    fd: Vec<f64>,
}

fn parse_features(s: &str) -> Result<Vec<FeatureNet>> {
    let t = s.trim().to_ascii_lowercase();
    if t == "none" || t.is_empty() {
        return Ok(vec![]);
    }
    FeatureNet::parse_list(s)
}

/// The checkpoint's config, or a bad-input error naming what is missing.
fn open_checkpoint(dir: &Path) -> Result<Config> {
    if !dir.is_dir() {
        return Err(bad_input(format!("{}: no such checkpoint directory (want config.json + ema.safetensors)", dir.display())));
    }
    for f in [checkpoint::CONFIG_FILE, checkpoint::EMA_FILE] {
        let p = dir.join(f);
        if !p.is_file() {
            return Err(bad_input(format!("{}: not found; {} is not a checkpoint directory with EMA weights", p.display(), dir.display())));
        }
    }
    checkpoint::load_config(dir)
}

pub fn run(a: &PrecisionArgs) -> Result<()> {
    let t_start = Instant::now();
    if a.n == 0 {
        return Err(bad_input("-n must be positive"));
    }
    // Everything that can be wrong with the input is found before any work.
    let cfg = open_checkpoint(&a.checkpoint)?;
    let nets = parse_features(&a.features)?;
    let mut types: Vec<QuantType> = vec![QuantType::F32];
    for &t in &a.types {
        if !types.contains(&t) {
            types.push(t);
        }
    }
    let dev = Device::Cpu;
    let extractors = nets.iter().map(|&net| Extractor::load(net, None, &dev)).collect::<Result<Vec<_>>>()?;
    let (real, floor_src) = if nets.is_empty() {
        (None, None)
    } else {
        let real = Source::open(&a.real)?;
        if real.is_model() {
            return Err(bad_input(format!("--real {}: give a dataset or an image folder, not a model", a.real)));
        }
        let floor = match a.floor.as_str() {
            "none" => None,
            f => Some(Source::open(f)?),
        };
        (Some(real), floor)
    };
    let out_dir = match &a.out_dir {
        Some(d) => d.clone(),
        None => util::data_dir()?.join("precision"),
    };
    std::fs::create_dir_all(&out_dir).map_err(|e| bad_input(format!("{}: cannot create: {e}", out_dir.display())))?;
    if a.write_docs {
        for f in ["precision.md", "precision.png"] {
            eostok_models::exit::check_output_file(&a.docs_dir.join(f))?;
        }
    }
    let settings = SampleSettings {
        sampling: TokenSampling { temperature: a.temperature, top_k: a.top_k, top_p: a.top_p },
        cfg_scale: a.cfg_scale,
    };
    let size = cfg.image_size;
    eprintln!(
        "precision: {} ('{}', EMA), types {}, n={} at {size} px, features {}",
        a.checkpoint.display(),
        cfg.name,
        types.iter().map(|t| t.name()).collect::<Vec<_>>().join(","),
        a.n,
        if nets.is_empty() { "none".to_string() } else { nets.iter().map(|n| n.name()).collect::<Vec<_>>().join(",") }
    );

    // Real statistics first (cached like `eostok-eval fd`), then the floor.
    let cache_dir = a.cache.clone().unwrap_or_else(eostok_models::nets::asset_dir);
    let mut real_stats: Vec<(Stats, Vec<f32>)> = vec![];
    let mut floor = None;
    if let Some(real) = &real {
        let plan = real.plan(a.n, None, a.seed)?;
        real_stats = side_stats(real, &plan, a.seed, size, &extractors, &cache_dir, a, "real")?;
        if let Some(fs) = &floor_src {
            // The fake side of `eostok-eval fd --real REAL --fake FLOOR`: another shuffle.
            let fseed = a.seed ^ FAKE_SUBSET_SALT;
            let plan = fs.plan(a.n, None, fseed)?;
            let stats = side_stats(fs, &plan, fseed, size, &extractors, &cache_dir, a, "floor")?;
            let fd = real_stats.iter().zip(&stats).map(|(r, f)| frechet_distance_auto(&r.0, &r.1, &f.0, &f.1).fd).collect();
            floor = Some(Floor { spec: fs.spec.clone(), n: plan.len(), fd });
        }
    }

    // Classes: the plan of a model source (`--class all`), the same for every type.
    let mut rows: Vec<TypeRow> = vec![];
    let mut reference: Option<(Vec<Vec<u32>>, Vec<f32>)> = None;
    for &ty in &types {
        let path = out_dir.join(format!("{}.gguf", ty.name()));
        eprintln!("{}: quantizing to {}", ty.name(), path.display());
        let opts = Options { ty, weights: WeightSet::Ema, keep_f32: vec![], allow_requantize: false, with_encoder: false, progress: !a.quiet };
        let report = quantize(&a.checkpoint, &path, &opts)?;
        let fell_back = report.tensors.iter().filter(|t| t.note.is_some()).count();
        let file_bytes = std::fs::metadata(&path).with_context(|| format!("{}: cannot stat", path.display()))?.len();
        let file = GgufFile::open(&path).map_err(|e| anyhow!("{}: {e}", path.display()))?;
        let (matrix_bpw, matrix_types) = matrix_bits(&file, &cfg);
        let model = Model::load(&file)?;
        let src = Source::open(path.to_str().ok_or_else(|| anyhow!("{}: not UTF-8", path.display()))?)?;
        let Plan::Classes(classes) = src.plan(a.n, None, a.seed)? else { return Err(anyhow!("a model source plans classes")) };

        let bar = progress_bar(classes.len(), ty.name(), !a.quiet);
        let (mut ar_secs, mut decode_secs) = (0.0, 0.0);
        let mut tokens: Vec<Vec<u32>> = Vec::with_capacity(classes.len());
        let mut own_images: Vec<f32> = vec![];
        let mut sets = vec![FeatureSet::default(); extractors.len()];
        for (j, chunk) in classes.chunks(GEN_BATCH).enumerate() {
            let t = Instant::now();
            let ids = generate_batch(&model, chunk, j, a.seed, &settings)?;
            ar_secs += t.elapsed().as_secs_f64();
            let t = Instant::now();
            let images = model.decoder.decode(&ids)?;
            decode_secs += t.elapsed().as_secs_f64();
            if !extractors.is_empty() {
                let x = decoded_to_tensor(&images, chunk.len(), cfg.channels, cfg.image_size, size, &dev)?;
                for (e, set) in extractors.iter().zip(sets.iter_mut()) {
                    set.push(e.run(&x)?, chunk.len());
                }
            }
            if reference.is_none() {
                own_images.extend_from_slice(&images);
            }
            tokens.extend(ids);
            bar.inc(chunk.len() as u64);
        }
        bar.finish_and_clear();
        if reference.is_none() {
            reference = Some((tokens.clone(), own_images));
        }
        let (ref_tokens, ref_images) = reference.as_ref().expect("f32 runs first");
        let (token_agree, seq_agree) = agreement(ref_tokens, &tokens);
        // f32's tokens through this decoder.
        let mut se = 0.0f64;
        let mut count = 0usize;
        let per_image = cfg.channels * cfg.image_size * cfg.image_size;
        for (k, chunk) in ref_tokens.chunks(GEN_BATCH).enumerate() {
            let images = model.decoder.decode(chunk)?;
            let want = &ref_images[k * GEN_BATCH * per_image..][..images.len()];
            for (x, y) in images.iter().zip(want) {
                let d = unit(*x) - unit(*y);
                se += d * d;
            }
            count += images.len();
        }
        let decode_mse = se / count.max(1) as f64;
        let fd = real_stats
            .iter()
            .zip(&sets)
            .zip(&nets)
            .map(|((r, s), net)| {
                let st = Stats::from_features(&s.features, net.dim());
                frechet_distance_auto(&r.0, &r.1, &st, &s.features).fd
            })
            .collect();
        let row = TypeRow { ty, path, file_bytes, matrix_bpw, matrix_types, fell_back, ar_secs, decode_secs, tokens, token_agree, seq_agree, decode_mse, fd };
        eprintln!(
            "{}: {:.1} tokens/s, token agreement {:.3}, PSNR {}{}",
            ty.name(),
            row.tokens_per_s(),
            row.token_agree,
            psnr_text(row.psnr()),
            row.fd.iter().zip(&nets).map(|(f, n)| format!(", {} {f:.2}", n.fd_name())).collect::<String>()
        );
        rows.push(row);
    }
    // Output in the order asked for (f32 first when it was not asked for).
    let order: Vec<QuantType> = if a.types.contains(&QuantType::F32) { a.types.clone() } else { types.clone() };
    let mut sorted: Vec<&TypeRow> = vec![];
    for t in &order {
        if let Some(r) = rows.iter().find(|r| r.ty == *t) {
            if !sorted.iter().any(|s| s.ty == *t) {
                sorted.push(r);
            }
        }
    }
    let ctx = Context_ { cfg: &cfg, nets: &nets, real: real.as_ref().map(|r| r.spec.clone()), floor: floor.as_ref(), n: a.n, secs: t_start.elapsed().as_secs_f64() };
    print_table(&sorted, &ctx, a);
    if a.write_docs {
        let md = a.docs_dir.join("precision.md");
        write_atomic(&md, docs_markdown(&sorted, &ctx, a).as_bytes())?;
        let png = a.docs_dir.join("precision.png");
        if nets.is_empty() {
            eprintln!("no feature nets: {} not drawn", png.display());
        } else {
            crate::chart::precision_chart(&png, &sorted.iter().map(|r| chart_point(r)).collect::<Vec<_>>(), &nets, floor.as_ref().map(|f| f.fd.as_slice()), &cfg.name, a.n)?;
        }
        eprintln!("wrote {} and {}", md.display(), png.display());
    }
    Ok(())
}

fn chart_point(r: &TypeRow) -> crate::chart::PrecisionPoint {
    crate::chart::PrecisionPoint { label: r.ty.name().to_string(), bpw: r.matrix_bpw, mib: util::mib(r.file_bytes as f64), fd: r.fd.clone() }
}

/// [-1, 1] decoder output to [0, 1], clamped as an image would be.
fn unit(v: f32) -> f64 {
    ((v as f64 + 1.0) * 0.5).clamp(0.0, 1.0)
}

/// (fraction of positions equal, fraction of whole sequences equal).
pub fn agreement(a: &[Vec<u32>], b: &[Vec<u32>]) -> (f64, f64) {
    let (mut pos, mut same, mut total) = (0usize, 0usize, 0usize);
    for (x, y) in a.iter().zip(b) {
        pos += x.iter().zip(y).filter(|(p, q)| p == q).count();
        total += x.len().max(y.len());
        same += usize::from(x == y);
    }
    (pos as f64 / total.max(1) as f64, same as f64 / a.len().max(1) as f64)
}

/// Bits per weight of the weight matrices as written, and their types with counts.
fn matrix_bits(file: &GgufFile, cfg: &Config) -> (f64, BTreeMap<String, usize>) {
    let matrices: std::collections::HashSet<String> =
        eostok_models::tensor_specs(cfg).into_iter().filter(|s| s.kind == Kind::Matrix && s.shape.len() >= 2).map(|s| s.name).collect();
    let (mut bits, mut elems) = (0u64, 0u64);
    let mut types = BTreeMap::new();
    for t in file.tensors().iter().filter(|t| matrices.contains(&t.name)) {
        bits += t.n_bytes * 8;
        elems += t.n_elements();
        *types.entry(t.ggml_type.name().to_string()).or_insert(0) += 1;
    }
    (bits as f64 / elems.max(1) as f64, types)
}

/// Features of a real side for every net: cached statistics where present (the key
/// `eostok-eval fd` uses), else one pass over the images, then cached.
#[allow(clippy::too_many_arguments)]
fn side_stats(
    src: &Source,
    plan: &Plan,
    seed: u64,
    size: usize,
    extractors: &[Extractor],
    cache_dir: &Path,
    a: &PrecisionArgs,
    label: &str,
) -> Result<Vec<(Stats, Vec<f32>)>> {
    let identity = if a.no_cache { None } else { src.cache_identity() };
    let key = |net: FeatureNet| -> Option<CacheKey> {
        identity.as_ref().map(|id| CacheKey {
            version: CACHE_VERSION,
            source: id.clone(),
            n: a.n,
            class: "all".into(),
            seed,
            features: net.name().to_string(),
            image_size: size,
            resize: FD_CMD_RESIZE.into(),
            weights: eostok_train::eval::features::keyed_weights(net, None).map(|p| CacheKey::weights_identity(&p)),
        })
    };
    let mut out: Vec<Option<(Stats, Vec<f32>)>> = extractors
        .iter()
        .map(|e| {
            let k = key(e.net())?;
            let c = cache::load(cache_dir, &k)?;
            eprintln!("{label} statistics ({}) from the cache {}", e.net().name(), cache::path_for(cache_dir, &k).display());
            Some((c.stats, c.features))
        })
        .collect();
    let missing: Vec<usize> = (0..extractors.len()).filter(|&i| out[i].is_none()).collect();
    if !missing.is_empty() {
        eprintln!("{label}: {} -> {} images at {size} px", src.describe(), plan.len());
        let bar = progress_bar(plan.len(), label, !a.quiet);
        let mut sets = vec![FeatureSet::default(); missing.len()];
        src.for_each_batch(plan, size, seed, &SampleSettings::default(), &Device::Cpu, |x| {
            let b = x.dim(0)?;
            for (&i, set) in missing.iter().zip(sets.iter_mut()) {
                set.push(extractors[i].run(&x)?, b);
            }
            bar.inc(b as u64);
            Ok(())
        })?;
        bar.finish_and_clear();
        for (&i, set) in missing.iter().zip(sets) {
            let net = extractors[i].net();
            let stats = Stats::from_features(&set.features, net.dim());
            if let Some(k) = key(net) {
                match cache::save(cache_dir, &k, &stats, &set.features) {
                    Ok(p) => eprintln!("cached {label} statistics ({}) in {}", net.name(), p.display()),
                    Err(e) => eprintln!("warning: could not cache the {label} statistics: {e:#}"),
                }
            }
            out[i] = Some((stats, set.features));
        }
    }
    Ok(out.into_iter().map(|o| o.expect("every net has statistics")).collect())
}

fn psnr_text(p: f64) -> String {
    if p.is_infinite() {
        "—".into()
    } else {
        format!("{p:.2}")
    }
}

/// What the table and the docs say around the rows.
struct Context_<'a> {
    cfg: &'a Config,
    nets: &'a [FeatureNet],
    real: Option<String>,
    floor: Option<&'a Floor>,
    n: usize,
    secs: f64,
}

fn row_json(r: &TypeRow, ctx: &Context_) -> Value {
    let psnr = r.psnr();
    let mut fd = serde_json::Map::new();
    for (net, f) in ctx.nets.iter().zip(&r.fd) {
        fd.insert(net.fd_name(), json!(f));
    }
    json!({
        "bench": "precision",
        "config": ctx.cfg.name,
        "type": r.ty.name(),
        "file": r.path.display().to_string(),
        "file_bytes": r.file_bytes,
        "matrix_bits_per_weight": r.matrix_bpw,
        "matrix_types": r.matrix_types,
        "fell_back": r.fell_back,
        "n": r.tokens.len(),
        "tokens_per_s": r.tokens_per_s(),
        "images_per_s": r.images_per_s(),
        "ar_seconds": r.ar_secs,
        "decode_seconds": r.decode_secs,
        "token_agreement": r.token_agree,
        "sequence_agreement": r.seq_agree,
        "decode_mse": r.decode_mse,
        // null = infinite (the decoders agree exactly).
        "psnr_db": if psnr.is_finite() { json!(psnr) } else { Value::Null },
        "fd": fd,
        "real": ctx.real,
    })
}

fn floor_json(f: &Floor, ctx: &Context_) -> Value {
    let mut fd = serde_json::Map::new();
    for (net, v) in ctx.nets.iter().zip(&f.fd) {
        fd.insert(net.fd_name(), json!(v));
    }
    json!({"bench": "precision-floor", "real": ctx.real, "other": f.spec, "n": f.n, "fd": fd})
}

fn print_table(rows: &[&TypeRow], ctx: &Context_, a: &PrecisionArgs) {
    if a.json {
        for r in rows {
            println!("{}", row_json(r, ctx));
        }
        if let Some(f) = ctx.floor {
            println!("{}", floor_json(f, ctx));
        }
        return;
    }
    crate::preamble(false, a.threads);
    println!(
        "# {} ('{}', EMA) n={} seed {}, T={} top-k {} top-p {} cfg {}; agreement and PSNR against f32{}",
        a.checkpoint.display(),
        ctx.cfg.name,
        ctx.n,
        a.seed,
        a.temperature,
        a.top_k,
        a.top_p,
        a.cfg_scale,
        ctx.real.as_ref().map(|r| format!("; FD against {r} (n={})", ctx.n)).unwrap_or_default()
    );
    let mut cols: Vec<(String, usize)> = vec![
        ("type".into(), 6),
        ("bits/w".into(), 6),
        ("MiB".into(), 7),
        ("tokens/s".into(), 9),
        ("images/s".into(), 8),
        ("tok agree".into(), 9),
        ("seq agree".into(), 9),
        ("PSNR dB".into(), 7),
    ];
    for n in ctx.nets {
        cols.push((n.fd_name(), n.fd_name().len().max(8)));
    }
    cols.push(("fell back".into(), 9));
    cols.push(("matrices".into(), 8));
    let col_refs: Vec<(&str, usize)> = cols.iter().map(|(n, w)| (n.as_str(), *w)).collect();
    let mut t = util::Table::new(false, &col_refs);
    for r in rows {
        let mut cells = measured_cells(r);
        cells.push(r.fallback_text());
        cells.push(r.types_text());
        t.row(&cells, Value::Null);
    }
    if let Some(f) = ctx.floor {
        let parts: Vec<String> = ctx.nets.iter().zip(&f.fd).map(|(n, v)| format!("{} {v:.2}", n.fd_name())).collect();
        println!("# real floor: {} vs {} (n={} each): {}", ctx.real.as_deref().unwrap_or("?"), f.spec, f.n, parts.join(", "));
    }
}

/// The measured columns of a row, as the stdout table and precision.md print them.
fn measured_cells(r: &TypeRow) -> Vec<String> {
    let mut cells = vec![
        r.ty.name().to_string(),
        format!("{:.2}", r.matrix_bpw),
        format!("{:.3}", util::mib(r.file_bytes as f64)),
        format!("{:.1}", r.tokens_per_s()),
        format!("{:.2}", r.images_per_s()),
        format!("{:.4}", r.token_agree),
        format!("{:.4}", r.seq_agree),
        psnr_text(r.psnr()),
    ];
    cells.extend(r.fd.iter().map(|f| format!("{f:.2}")));
    cells
}

/// `precision.md`: the table, the machine, the command, the date.
fn docs_markdown(rows: &[&TypeRow], ctx: &Context_, a: &PrecisionArgs) -> String {
    let (model, flags) = util::cpu_description();
    let args: Vec<String> = std::env::args().skip(1).map(|s| shell_quote(&s)).collect();
    let mut s = String::new();
    s += "# Precision vs sample quality\n\n";
    s += &format!("Generated by `eostok-bench precision` on {} — do not edit by hand; rerun:\n\n", utc_now());
    s += &format!("```sh\ncargo run --release -p eostok-benches --bin eostok-bench -- {}\n```\n\n", args.join(" "));
    s += &format!(
        "Checkpoint `{}` (config `{}`, EMA weights) quantized to each type with the quantize crate (`bench-data/precision/<type>.gguf`). \
         Each file samples the same {} images ({} per class over {} classes; image i has the same class and batch seed in every type; \
         temperature {}, top-k {}, top-p {}, CFG {}, seed {}) on the CPU runtime with {} threads.\n\n",
        a.checkpoint.display(),
        ctx.cfg.name,
        ctx.n,
        ctx.n / ctx.cfg.num_classes.max(1),
        ctx.cfg.num_classes,
        a.temperature,
        a.top_k,
        a.top_p,
        a.cfg_scale,
        a.seed,
        a.threads
    );
    if let Some(note) = &a.note {
        s += &format!("**Note:** {note}\n\n");
    }
    s += &format!("Machine: {model} [{}], {} cores. Whole run: {:.1} min.\n\n", flags.join(" "), util::nproc(), ctx.secs / 60.0);
    let mut head = vec!["type", "bits/weight (matrices)", "file MiB", "tokens/s", "images/s", "token agreement", "sequence agreement", "PSNR dB (same tokens)"]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>();
    head.extend(ctx.nets.iter().map(|n| n.fd_name()));
    head.push("matrix types as written".into());
    s += &format!("| {} |\n|{}\n", head.join(" | "), "---|".repeat(head.len()));
    for r in rows {
        let mut cells = measured_cells(r);
        let fb = if r.fell_back > 0 { format!(" ({} fell back)", r.fallback_text()) } else { String::new() };
        cells.push(format!("{}{fb}", r.types_text()));
        s += &format!("| {} |\n", cells.join(" | "));
    }
    if let Some(f) = ctx.floor {
        let parts: Vec<String> = ctx.nets.iter().zip(&f.fd).map(|(n, v)| format!("{} **{v:.2}**", n.fd_name())).collect();
        s += &format!(
            "\nReal floor (`{}` vs `{}`, {} images each, the same subsets as `eostok-eval fd --real {} --fake {} -n {} --size {}`): {}.\n",
            ctx.real.as_deref().unwrap_or("?"),
            f.spec,
            f.n,
            ctx.real.as_deref().unwrap_or("?"),
            f.spec,
            f.n,
            ctx.cfg.image_size,
            parts.join(", ")
        );
    }
    s += "\n## Columns\n\n";
    s += "- **bits/weight (matrices)**: bits per weight of the weight matrices as written (read back from the GGUF's tensor table); \
          vectors stay f32 and the codebook/token embedding f16 in every type, so the file size says the rest.\n";
    s += "- **matrix types as written**: k-quants need rows that are multiples of 256 and legacy quants multiples of 32; other rows fall back \
          (q4_k → q4_1, q6_k → q8_0, legacy → f16), and this column lists what was actually written with counts.\n";
    s += "- **tokens/s, images/s**: AR sampling only, and AR + decoding, in batches of 50 (wall clock, this machine).\n";
    s += "- **token agreement**: fraction of token positions equal to the f32 file's under the same seed; **sequence agreement**: fraction of images whose whole sequence is equal.\n";
    s += "- **PSNR (same tokens)**: the f32 run's token sequences decoded by this file's decoder, against the f32 decoder's images ([0, 1] after clamping, all pixels of all images); — = identical.\n";
    if !ctx.nets.is_empty() {
        s += &format!(
            "- **FD_…**: Fréchet distance between the samples and `{}` ({} images, statistics cached as by `eostok-eval fd`) on EfficientNet-Lite0 (1280-d pool) / DINOv2-S (384-d CLS) features. \
              These are not FID (FID is defined on pytorch-fid's Inception-v3 features) and are comparable only with each other at the same n.\n",
            ctx.real.as_deref().unwrap_or("?"),
            ctx.n
        );
        s += "\n![FD vs bits per weight and file size](precision.png)\n";
    }
    s
}

/// `s` as one POSIX shell word: unchanged when it is plain, else single-quoted with
/// each `'` written as `'\''`.
pub fn shell_quote(s: &str) -> String {
    let plain = !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "_-./,:=@%+".contains(c));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// Write `bytes` to `path` through a temporary file and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_file_name(format!(".{}.tmp-{}", path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default(), std::process::id()));
    std::fs::write(&tmp, bytes).map_err(|e| bad_input(format!("{}: cannot write: {e}", tmp.display())))?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        bad_input(format!("{}: cannot write: {e}", path.display()))
    })
}

/// "YYYY-MM-DD HH:MM UTC" from the system clock.
pub fn utc_now() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0) as i64;
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02} UTC", rem / 3600, rem % 3600 / 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_key_resize_matches_eostok_eval_fd() {
        let src = include_str!("../../trainer/src/eval/fd_cmd.rs");
        assert!(src.contains(&format!("\"{FD_CMD_RESIZE}\"")), "fd_cmd.rs's cache key changed: update FD_CMD_RESIZE");
    }

    #[test]
    fn agreement_counts_positions_and_sequences() {
        let a = vec![vec![1, 2, 3, 4], vec![5, 6, 7, 8]];
        let b = vec![vec![1, 2, 3, 4], vec![5, 0, 7, 0]];
        assert_eq!(agreement(&a, &b), (0.75, 0.5));
        assert_eq!(agreement(&a, &a), (1.0, 1.0));
    }

    #[test]
    fn shell_words_survive_quoting() {
        assert_eq!(shell_quote("runs/demo"), "runs/demo");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("the repo's (32.8%)"), "'the repo'\\''s (32.8%)'");
        assert_eq!(shell_quote(""), "''");
    }

    #[test]
    fn date_format() {
        let s = utc_now();
        assert!(s.len() == 20 && s.ends_with(" UTC") && s.starts_with("20"), "{s}");
    }
}

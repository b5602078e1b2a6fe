//! Side by side: the same GGUF file through llama.cpp (`llama-bench`), candle and us
//! (`vs-llama`, plain Llama files with our presets' AR dimensions), and the EOSTok AR model
//! in candle against our runtime (`vs-candle`).

use crate::decode::tokens_per_s;
use crate::gen::{eostok_model, llama_model};
use crate::util::{data_dir, Stats, Table};
use anyhow::{bail, Context, Result};
use candle_core::quantized::{gguf_file::Content, QMatMul};
use candle_core::{DType, Device, Module, Tensor, D};
use candle_transformers::models::quantized_llama::ModelWeights;
use eostok_models::nn::{ArTransformer, KvCache, ParamStore};
use eostok_models::sampling::argmax;
use eostok_models::Config;
use eostok_runtime::gguf::GgufFile;
use eostok_runtime::model::llama::Llama;
use eostok_runtime::model::Model;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// What `llama-bench -o json` reported for one run.
pub struct LlamaRun {
    pub tokens_per_s: f64,
    pub info: serde_json::Value,
}

pub fn llama_bench_path() -> Option<PathBuf> {
    std::env::var_os("LLAMA_BENCH").map(PathBuf::from)
}

/// One `llama-bench -t T -p 0 -n N -r 1 -o json` run.
pub fn run_llama_bench(
    bin: &Path,
    model: &Path,
    threads: usize,
    tokens: usize,
) -> Result<LlamaRun> {
    let out = std::process::Command::new(bin)
        .args(["-m"])
        .arg(model)
        .args([
            "-t",
            &threads.to_string(),
            "-p",
            "0",
            "-n",
            &tokens.to_string(),
            "-r",
            "1",
            "-o",
            "json",
        ])
        .output()
        .with_context(|| format!("{}: cannot run", bin.display()))?;
    if !out.status.success() {
        bail!(
            "llama-bench on {} failed: {}",
            model.display(),
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .rev()
                .take(5)
                .collect::<Vec<_>>()
                .join(" | ")
        );
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "llama-bench output: {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })?;
    let row = v
        .as_array()
        .and_then(|a| a.first())
        .cloned()
        .context("llama-bench printed no result")?;
    let ts = row["avg_ts"].as_f64().context("llama-bench: no avg_ts")?;
    let keep = [
        "build_commit",
        "build_number",
        "cpu_info",
        "backends",
        "flash_attn",
        "n_threads",
        "type_k",
        "type_v",
        "model_type",
        "model_size",
        "n_gen",
        "use_mmap",
    ];
    let info = serde_json::Value::Object(
        keep.iter()
            .filter_map(|k| row.get(*k).map(|x| (k.to_string(), x.clone())))
            .collect(),
    );
    Ok(LlamaRun {
        tokens_per_s: ts,
        info,
    })
}

/// Our tokens/s on a Llama file: `tokens` steps from position 0.
fn ours_llama(m: &Llama, tokens: usize) -> Result<f64> {
    let mut st = m.start();
    let t = Instant::now();
    let mut tok = 1u32;
    for _ in 0..tokens {
        let l = m.step(&mut st, tok)?;
        tok = (argmax(&l) as u32 % (m.cfg.vocab as u32 - 3)) + 3;
    }
    Ok(tokens as f64 / t.elapsed().as_secs_f64())
}

fn candle_llama(m: &mut ModelWeights, tokens: usize) -> Result<f64> {
    m.clear_kv_cache();
    let dev = Device::Cpu;
    let t = Instant::now();
    let mut tok = 1u32;
    for pos in 0..tokens {
        let l: Vec<f32> = m
            .forward(&Tensor::new(&[[tok]], &dev)?, pos)?
            .flatten_all()?
            .to_vec1()?;
        tok = (argmax(&l) as u32 % (l.len() as u32 - 3)) + 3;
    }
    Ok(tokens as f64 / t.elapsed().as_secs_f64())
}

pub struct VsRow {
    pub config: String,
    pub ty: String,
    pub ours: Stats,
    pub llama: Option<Stats>,
    pub candle: Option<Stats>,
    pub ratio_llama: Option<Stats>,
    pub ratio_candle: Option<Stats>,
}

#[allow(clippy::too_many_arguments)]
pub fn vs_llama(
    configs: &[String],
    types: &[String],
    threads: usize,
    tokens: usize,
    rounds: usize,
    with_candle: bool,
    chart: Option<&Path>,
    json: bool,
) -> Result<Vec<VsRow>> {
    let dir = data_dir()?;
    let bin = llama_bench_path();
    match &bin {
        None => eprintln!("LLAMA_BENCH is not set: llama.cpp is ABSENT from this run (build it with scripts/build-llama-bench, then LLAMA_BENCH=bench-data/llama.cpp/build/bin/llama-bench)"),
        Some(b) if !b.exists() => bail!("LLAMA_BENCH={}: no such file (build it with scripts/build-llama-bench)", b.display()),
        _ => {}
    }
    let mut files = vec![];
    for c in configs {
        for t in types {
            files.push((
                Config::load(c).map(|c| c.name).unwrap_or(c.clone()),
                t.clone(),
                llama_model(&dir, c, t)?,
            ));
        }
    }
    let ggufs: Vec<GgufFile> = files
        .iter()
        .map(|(_, _, p)| GgufFile::open(p))
        .collect::<Result<_, _>>()?;
    let ours: Vec<Llama> = ggufs.iter().map(Llama::load).collect::<Result<_>>()?;
    let dev = Device::Cpu;
    let mut candle: Vec<Option<ModelWeights>> = vec![];
    for (_, _, p) in &files {
        candle.push(if with_candle {
            let mut r = std::fs::File::open(p)?;
            let c = Content::read(&mut r)?;
            Some(ModelWeights::from_gguf(c, &mut r, &dev)?)
        } else {
            None
        });
    }
    let n = files.len();
    let (mut o, mut l, mut c) = (vec![vec![]; n], vec![vec![]; n], vec![vec![]; n]);
    let mut info = serde_json::Value::Null;
    for (i, m) in ours.iter().enumerate() {
        ours_llama(m, 4)?; // page in
        if let Some(cm) = candle[i].as_mut() {
            candle_llama(cm, 2)?;
        }
    }
    // Interleaved: every round runs every file through each engine in turn.
    for r in 0..rounds.max(1) {
        for i in 0..n {
            if let Some(b) = &bin {
                let run = run_llama_bench(b, &files[i].2, threads, tokens)?;
                l[i].push(run.tokens_per_s);
                info = run.info;
            }
            o[i].push(ours_llama(&ours[i], tokens)?);
            if let Some(cm) = candle[i].as_mut() {
                c[i].push(candle_llama(cm, tokens)?);
            }
            eprintln!(
                "round {} {} {}: ours {:.1} llama.cpp {} candle {} tok/s",
                r + 1,
                files[i].0,
                files[i].1,
                o[i].last().unwrap(),
                l[i].last().map(|x| format!("{x:.1}")).unwrap_or("-".into()),
                c[i].last().map(|x| format!("{x:.1}")).unwrap_or("-".into())
            );
        }
    }
    if !info.is_null() && !json {
        println!("llama.cpp: {info}");
    }
    let mut table = Table::new(
        json,
        &[
            ("model", 6),
            ("type", 5),
            ("MB/token", 8),
            ("ours tok/s", 20),
            ("llama.cpp tok/s", 20),
            ("candle tok/s", 20),
            ("ours/llama.cpp", 20),
            ("ours/candle", 20),
        ],
    );
    let ratio = |a: &[f64], b: &[f64]| {
        if b.is_empty() {
            None
        } else {
            Some(Stats::of(
                &a.iter().zip(b).map(|(x, y)| x / y).collect::<Vec<_>>(),
            ))
        }
    };
    let mut rows = vec![];
    for i in 0..n {
        let opt = |v: &Vec<f64>| {
            if v.is_empty() {
                None
            } else {
                Some(Stats::of(v))
            }
        };
        let row = VsRow {
            config: files[i].0.clone(),
            ty: files[i].1.clone(),
            ours: Stats::of(&o[i]),
            llama: opt(&l[i]),
            candle: opt(&c[i]),
            ratio_llama: ratio(&o[i], &l[i]),
            ratio_candle: ratio(&o[i], &c[i]),
        };
        let show = |s: &Option<Stats>, p| s.map(|s| s.show(p)).unwrap_or("-".into());
        let mb = ours[i].weight_bytes_per_step() as f64 / 1e6;
        table.row(
            &[row.config.clone(), row.ty.clone(), format!("{mb:.0}"), row.ours.show(1), show(&row.llama, 1), show(&row.candle, 1), show(&row.ratio_llama, 2), show(&row.ratio_candle, 2)],
            serde_json::json!({"bench": "vs-llama", "model": format!("llama-{}", row.config), "type": row.ty, "threads": threads, "tokens": tokens, "rounds": rounds,
                "weight_bytes_per_token": ours[i].weight_bytes_per_step(),
                "ours_tokens_per_s": row.ours.json(), "llama_cpp_tokens_per_s": row.llama.map(|s| s.json()), "candle_tokens_per_s": row.candle.map(|s| s.json()),
                "ours_over_llama_cpp": row.ratio_llama.map(|s| s.json()), "ours_over_candle": row.ratio_candle.map(|s| s.json()), "llama_cpp": info}),
        );
        rows.push(row);
    }
    if let Some(path) = chart {
        crate::chart::tokens_chart(path, &rows, threads)?;
        eprintln!("chart: {}", path.display());
    }
    Ok(rows)
}

/// The EOSTok AR transformer in candle with quantized matrices (`QMatMul`) read from the
/// same GGUF file, one token per step with a KV cache: the f32 reference's maths
/// (`eostok_models::nn::ar`) with candle's quantized matmul.
struct QBlock {
    attn_norm: Tensor,
    ffn_norm: Tensor,
    q: QMatMul,
    k: QMatMul,
    v: QMatMul,
    o: QMatMul,
    gate: QMatMul,
    up: QMatMul,
    down: QMatMul,
    /// [6][1, 1, D]: shift_a, scale_a, gate_a, shift_m, scale_m, gate_m.
    m: Vec<Tensor>,
    cache: Option<(Tensor, Tensor)>,
}

struct QAr {
    token_embd: Tensor,
    pos_embd: Tensor,
    blocks: Vec<QBlock>,
    output_norm: Tensor,
    output: QMatMul,
    heads: usize,
    eps: f64,
}

impl QAr {
    fn load(path: &Path, cfg: &Config, class: u32) -> Result<(QAr, Tensor)> {
        let dev = Device::Cpu;
        let mut r = std::fs::File::open(path)?;
        let c = Content::read(&mut r)?;
        let mut t = |n: &str| c.tensor(&mut r, n, &dev);
        let token_embd = t("token_embd.weight")?.dequantize(&dev)?;
        let pos_embd = t("pos_embd.weight")?.dequantize(&dev)?;
        let cls = t("cls_embd.weight")?
            .dequantize(&dev)?
            .narrow(0, class as usize, 1)?;
        let adaln_w = QMatMul::from_qtensor(t("adaln.weight")?)?;
        let adaln_b = t("adaln.bias")?.dequantize(&dev)?;
        let shared = adaln_w.forward(&cls.silu()?)?.broadcast_add(&adaln_b)?;
        let mut blocks = vec![];
        for i in 0..cfg.ar.depth {
            let mut p = |s: &str| t(&format!("blk.{i}.{s}"));
            let bias = p("adaln.bias")?.dequantize(&dev)?;
            let m = shared
                .broadcast_add(&bias)?
                .unsqueeze(1)?
                .chunk(6, D::Minus1)?;
            blocks.push(QBlock {
                attn_norm: p("attn_norm.weight")?.dequantize(&dev)?,
                ffn_norm: p("ffn_norm.weight")?.dequantize(&dev)?,
                q: QMatMul::from_qtensor(p("attn_q.weight")?)?,
                k: QMatMul::from_qtensor(p("attn_k.weight")?)?,
                v: QMatMul::from_qtensor(p("attn_v.weight")?)?,
                o: QMatMul::from_qtensor(p("attn_output.weight")?)?,
                gate: QMatMul::from_qtensor(p("ffn_gate.weight")?)?,
                up: QMatMul::from_qtensor(p("ffn_up.weight")?)?,
                down: QMatMul::from_qtensor(p("ffn_down.weight")?)?,
                m,
                cache: None,
            });
        }
        let q = QAr {
            token_embd,
            pos_embd,
            blocks,
            output_norm: t("output_norm.weight")?.dequantize(&dev)?,
            output: QMatMul::from_qtensor(t("output.weight")?)?,
            heads: cfg.ar.heads,
            eps: cfg.rms_eps,
        };
        Ok((q, cls.unsqueeze(1)?))
    }

    fn reset(&mut self) {
        self.blocks.iter_mut().for_each(|b| b.cache = None);
    }

    /// x: [1, 1, D] at position `pos` -> logits [K].
    fn step(&mut self, x: &Tensor, pos: usize) -> Result<Vec<f32>> {
        let mut x = x.broadcast_add(&self.pos_embd.narrow(0, pos, 1)?)?;
        let d = x.dim(2)?;
        let (h, hd) = (self.heads, d / self.heads);
        for b in self.blocks.iter_mut() {
            let m = &b.m;
            let a = candle_nn::ops::rms_norm(&x, &b.attn_norm, self.eps as f32)?;
            let a = a.broadcast_mul(&(&m[1] + 1.0)?)?.broadcast_add(&m[0])?;
            let split = |t: Tensor| t.reshape((1, 1, h, hd))?.transpose(1, 2)?.contiguous();
            let q = split(b.q.forward(&a)?)?;
            let (mut k, mut v) = (split(b.k.forward(&a)?)?, split(b.v.forward(&a)?)?);
            if let Some((pk, pv)) = &b.cache {
                k = Tensor::cat(&[pk, &k], 2)?;
                v = Tensor::cat(&[pv, &v], 2)?;
            }
            b.cache = Some((k.clone(), v.clone()));
            let att = (q.matmul(&k.t()?)? / (hd as f64).sqrt())?;
            let att = candle_nn::ops::softmax_last_dim(&att)?.matmul(&v)?;
            let att = att.transpose(1, 2)?.reshape((1, 1, d))?;
            x = (x + b.o.forward(&att)?.broadcast_mul(&m[2])?)?;
            let f = candle_nn::ops::rms_norm(&x, &b.ffn_norm, self.eps as f32)?;
            let f = f.broadcast_mul(&(&m[4] + 1.0)?)?.broadcast_add(&m[3])?;
            let g = (b.gate.forward(&f)?.silu()? * b.up.forward(&f)?)?;
            x = (x + b.down.forward(&g)?.broadcast_mul(&m[5])?)?;
        }
        let x = candle_nn::ops::rms_norm(&x, &self.output_norm, self.eps as f32)?;
        Ok(self.output.forward(&x)?.flatten_all()?.to_vec1()?)
    }

    fn tokens_per_s(&mut self, cls: &Tensor, tokens: usize) -> Result<f64> {
        self.reset();
        let t = Instant::now();
        let mut x = cls.clone();
        for pos in 0..tokens {
            let l = self.step(&x, pos)?;
            let id = argmax(&l) as u32;
            x = self.token_embd.narrow(0, id as usize, 1)?.unsqueeze(0)?;
        }
        Ok(tokens as f64 / t.elapsed().as_secs_f64())
    }
}

/// The f32 reference (`eostok_models::nn::ArTransformer`) on the file's AR weights.
struct RefAr {
    ar: ArTransformer,
    modulation: Tensor,
    cls: Tensor,
}

impl RefAr {
    fn load(path: &Path, cfg: &Config) -> Result<RefAr> {
        let dev = Device::Cpu;
        let mut r = std::fs::File::open(path)?;
        let c = Content::read(&mut r)?;
        let names: Vec<String> = c
            .tensor_infos
            .keys()
            .filter(|n| {
                !n.starts_with("dec.") && !n.starts_with("quant.") && !n.starts_with("enc.")
            })
            .cloned()
            .collect();
        let mut map = HashMap::new();
        for n in names {
            map.insert(n.clone(), c.tensor(&mut r, &n, &dev)?.dequantize(&dev)?);
        }
        let store = ParamStore::from_tensors(map);
        let ar = ArTransformer::new(&store.var_builder(DType::F32, &dev), cfg)?;
        let cls = ar.class_embedding(&Tensor::new(&[1u32], &dev)?)?;
        let modulation = ar.modulation(&cls)?;
        Ok(RefAr {
            ar,
            modulation,
            cls: cls.unsqueeze(1)?,
        })
    }

    fn tokens_per_s(&self, tokens: usize) -> Result<f64> {
        let mut cache = KvCache::new(self.ar.depth());
        let t = Instant::now();
        let mut x = self.cls.clone();
        for _ in 0..tokens {
            let l: Vec<f32> = self
                .ar
                .forward_embeddings(&x, &self.modulation, Some(&mut cache))?
                .flatten_all()?
                .to_vec1()?;
            let id = argmax(&l) as u32;
            x = self.ar.token_embd.narrow(0, id as usize, 1)?.unsqueeze(0)?;
        }
        Ok(tokens as f64 / t.elapsed().as_secs_f64())
    }
}

pub fn vs_candle(
    configs: &[String],
    types: &[String],
    threads: usize,
    tokens: usize,
    rounds: usize,
    json: bool,
) -> Result<()> {
    let dir = data_dir()?;
    let mut table = Table::new(
        json,
        &[
            ("config", 6),
            ("type", 5),
            ("candle path", 22),
            ("ours tok/s", 20),
            ("candle tok/s", 20),
            ("ours/candle", 20),
        ],
    );
    for config in configs {
        let cfg = Config::load(config)
            .map_err(|e| eostok_models::exit::bad_input(format!("--configs: {e}")))?;
        for ty in types {
            let path = eostok_model(&dir, config, ty)?;
            let file = GgufFile::open(&path)?;
            let model = Model::load(&file)?;
            let tokens = tokens.min(cfg.latent_tokens);
            let (mut o, mut c) = (vec![], vec![]);
            let what;
            if ty == "f32" {
                what = "nn::ArTransformer f32";
                let r = RefAr::load(&path, &cfg)?;
                r.tokens_per_s(2)?;
                tokens_per_s(&model, 4, 1, 0)?;
                for i in 0..rounds.max(1) {
                    o.push(tokens_per_s(&model, tokens, 1, i as u64)?);
                    c.push(r.tokens_per_s(tokens)?);
                }
            } else {
                what = "QMatMul AR";
                let (mut q, cls) = QAr::load(&path, &cfg, 1)?;
                q.tokens_per_s(&cls, 2)?;
                tokens_per_s(&model, 4, 1, 0)?;
                for i in 0..rounds.max(1) {
                    o.push(tokens_per_s(&model, tokens, 1, i as u64)?);
                    c.push(q.tokens_per_s(&cls, tokens)?);
                }
            }
            let (os, cs) = (Stats::of(&o), Stats::of(&c));
            let ratio = Stats::of(&o.iter().zip(&c).map(|(a, b)| a / b).collect::<Vec<_>>());
            table.row(
                &[cfg.name.clone(), ty.clone(), what.into(), os.show(1), cs.show(1), ratio.show(2)],
                serde_json::json!({"bench": "vs-candle", "config": cfg.name, "type": ty, "candle": what, "threads": threads, "tokens": tokens,
                    "ours_tokens_per_s": os.json(), "candle_tokens_per_s": cs.json(), "ours_over_candle": ratio.json()}),
            );
        }
    }
    Ok(())
}

//! Weights stay file-backed: opening a GGUF and generating from it grows
//! the process's private memory by the KV cache and activations, not by the
//! weight size (`/proc/self/smaps_rollup`). One test in its own binary, so
//! no other test allocates in this process meanwhile.

use candle_core::{DType, Device};
use eostok_models::checkpoint::{self, WeightSet};
use eostok_models::nn::Eostok;
use eostok_models::sampling::TokenSampling;
use eostok_models::Config;
use eostok_quantize::{quantize, Options, QuantType};
use eostok_runtime::generate::{generate, GenerateOptions};
use eostok_runtime::gguf::GgufFile;
use eostok_runtime::model::Model;

/// (Private_Dirty + Private_Clean, Rss) in bytes, or None off Linux.
fn memory() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/self/smaps_rollup").ok()?;
    let field = |name: &str| -> u64 {
        text.lines().find(|l| l.starts_with(name)).and_then(|l| l.split_whitespace().nth(1)).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0) * 1024
    };
    Some((field("Private_Dirty:") + field("Anonymous:").saturating_sub(field("Private_Dirty:")), field("Rss:")))
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn release_free_heap() {
    extern "C" {
        fn malloc_trim(pad: usize) -> i32;
    }
    // SAFETY: glibc's malloc_trim has no preconditions.
    unsafe {
        malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn release_free_heap() {}

#[test]
fn weights_are_not_copied_into_private_memory() {
    if memory().is_none() {
        eprintln!("SKIPPED: no /proc/self/smaps_rollup on this system");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // An AR model large enough that a copy would show: ~70 MB at f32.
    let cfg = Config::from_json(r#"{"base": "tiny", "ar": {"width": 512, "depth": 4, "heads": 8, "ffn_hidden": 1536}, "codebook_size": 4096}"#).unwrap();
    let ck = dir.path().join("ck");
    {
        let (_, store) = Eostok::random(&cfg, 1, DType::F32, &Device::Cpu).unwrap();
        let w = store.vars().into_iter().map(|(k, v)| (k, v.as_tensor().clone())).collect();
        checkpoint::write_initial(&ck, &cfg, &w, false).unwrap();
    }
    let file = dir.path().join("m.gguf");
    let opts = Options { ty: QuantType::F32, weights: WeightSet::Ema, keep_f32: vec![], allow_requantize: false, with_encoder: false, progress: false };
    quantize(&ck, &file, &opts).unwrap();
    let size = std::fs::metadata(&file).unwrap().len();

    // Give freed heap (from building the file) back to the OS, so a copy of
    // the weights could not hide in memory the allocator still holds.
    release_free_heap();
    let (private_before, _) = memory().unwrap();
    let f = GgufFile::open(&file).unwrap();
    let model = Model::load(&f).unwrap();
    let classes = [1u32, 2];
    let g = generate(&model, &classes, cfg.latent_tokens, &GenerateOptions { sampling: TokenSampling::default(), cfg_scale: 2.0, seed: 0 }, false, |_| {}).unwrap();
    let _img = model.decoder.decode(&g.ids).unwrap();
    let (private_after, rss_after) = memory().unwrap();
    let grown = private_after.saturating_sub(private_before);
    eprintln!("file {size} B, private memory grew by {grown} B, RSS {rss_after} B");
    // KV cache: 4 rows x 16 positions x 512 x 4 layers x 2 x 4 B = 1 MiB;
    // activations and logits a few MiB more. A copy of the weights would add `size`.
    assert!(grown < size / 4, "private memory grew by {grown} B for a {size} B file: weights were copied");
}

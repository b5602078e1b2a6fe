//! The fuzz targets. Each runs one input through a parser and everything the
//! tools build on its result, and returns a signature (see [`crate::Target`]).
//! A target never panics on any input; the driver treats a panic, an abort
//! or a hang as a bug.

use crate::container;
use crate::shape_of;
use candle_core::Device;
use eostok_models::checkpoint;
use eostok_models::sampling::TokenSampling;
use eostok_models::Config;
use eostok_runtime::generate::{generate, GenerateOptions};
use eostok_runtime::gguf::{GgufError, GgufFile};
use eostok_runtime::model::Model;
use eostok_runtime::quant::dequantize_row;
use std::path::Path;

/// The GGUF reader over the bytes, then what `eostok-run` and
/// `eostok-quantize` do with an opened file.
pub fn gguf(bytes: &[u8]) -> String {
    let file = match GgufFile::from_bytes(bytes) {
        Ok(f) => f,
        Err(e) => return format!("open: {}", gguf_error_kind(&e)),
    };
    // Everything a tool may touch on an opened file.
    let meta = file.metadata();
    for (k, _) in meta.iter() {
        let _ = (meta.get_u32(k), meta.get_u64(k), meta.get_f32(k), meta.get_str(k), meta.get_str_array(k), meta.get_bool(k));
    }
    let mut row = Vec::new();
    for t in file.tensors() {
        let v = file.tensor(&t.name).expect("a listed tensor is found");
        assert_eq!(v.data.len() as u64, t.n_bytes);
        let _ = v.as_f32();
        // Dequantize the first and the last row (bounded work per tensor).
        let n = t.row_len().min(1 << 16) as usize;
        if n as u64 == t.row_len() {
            row.resize(n, 0f32);
            for i in [0, t.n_rows().saturating_sub(1) as usize] {
                let r = v.row(i).expect("row inside a validated tensor");
                let _ = dequantize_row(t.ggml_type, r, &mut row);
            }
        }
    }
    let info = eostok_runtime::info::describe(&file, "fuzz");
    assert!(info.len() < 64 * 1024 + 200 * (file.metadata().len() + file.tensors().len()), "--info output is bounded");
    let model = match Model::load(&file) {
        Ok(m) => m,
        Err(e) => return format!("load: {}", shape_of(&e.to_string())),
    };
    for spec in ["0", "1", "99999999999999999999", "sneaker", "", "all"] {
        let _ = model.class_id(spec);
    }
    // A loadable file runs: two tokens, plain and guided, then the decoder.
    let null = model.ar.null_class();
    let classes = [0u32, null.saturating_sub(1)];
    for (temperature, cfg_scale) in [(1.0, 1.0), (0.0, 3.0)] {
        let opts = GenerateOptions { sampling: TokenSampling { temperature, top_k: 3, top_p: 0.9 }, cfg_scale, seed: 1 };
        match generate(&model, &classes, 2, &opts, false, |_| {}) {
            Ok(g) => {
                if let Err(e) = model.decoder.decode(&g.ids) {
                    return format!("decode: {}", shape_of(&e.to_string()));
                }
            }
            Err(e) => return format!("generate: {}", shape_of(&e.to_string())),
        }
    }
    "runs".into()
}

fn gguf_error_kind(e: &GgufError) -> String {
    let dbg = format!("{e:?}");
    let kind: String = dbg.chars().take_while(|c| c.is_alphanumeric()).collect();
    match e {
        // The tensor problem and the field named are the interesting part.
        GgufError::BadTensor { problem, .. } => {
            let p = format!("{problem:?}");
            format!("{kind}/{}", p.chars().take_while(|c| c.is_alphanumeric()).collect::<String>())
        }
        // Which field, by its first word ("length", "ne[N]", "value", ...).
        GgufError::Truncated { what, .. } | GgufError::CountTooLarge { what, .. } | GgufError::StringTooLong { what, .. } => {
            format!("{kind}/{}", shape_of(what.split_whitespace().next().unwrap_or("")))
        }
        _ => kind,
    }
}

/// A checkpoint's three files as the tools load them: `config.json` through
/// `Config::from_json` (validation included), `model.safetensors` through
/// candle's loader and the shape check against the config (what resume and
/// the quantizer do), `state.json` through the trainer's `TrainState` and
/// its checks.
pub fn checkpoint(input: &[u8]) -> String {
    let [config, weights, state] = container::unpack(input);
    let mut sig = String::new();
    let cfg = match std::str::from_utf8(&config).map_err(|e| e.to_string()).and_then(|t| Config::from_json(t).map_err(|e| e.to_string())) {
        Ok(c) => {
            // Whatever validation accepted must be usable: counting parameters
            // and listing tensors must not overflow or take forever.
            let specs = eostok_models::tensor_specs(&c);
            let _ = eostok_models::shapes::count_specs(&specs);
            let meta = eostok_models::gguf_schema::config_to_metadata(&c);
            assert!(!meta.is_empty());
            sig.push_str("config ok");
            Some(c)
        }
        Err(e) => {
            sig.push_str(&format!("config: {}", shape_of(&e)));
            None
        }
    };
    match candle_core::safetensors::load_buffer(&weights, &Device::Cpu) {
        Ok(w) => {
            sig.push_str(" | weights ok");
            if let Some(cfg) = &cfg {
                match checkpoint::check_weights(Path::new("model.safetensors"), cfg, &w) {
                    Ok(()) => sig.push_str(" | match"),
                    Err(e) => sig.push_str(&format!(" | check: {}", shape_of(&e.to_string()).chars().take(40).collect::<String>())),
                }
            }
        }
        Err(e) => sig.push_str(&format!(" | weights: {}", shape_of(&e.to_string()).chars().take(60).collect::<String>())),
    }
    #[cfg(feature = "state")]
    match serde_json::from_slice::<eostok_train::fit::TrainState>(&state) {
        Ok(s) => match eostok_train::faults::check_state(&s) {
            Ok(()) => sig.push_str(" | state ok"),
            Err(e) => sig.push_str(&format!(" | state check: {}", shape_of(&e.to_string()))),
        },
        Err(e) => sig.push_str(&format!(" | state: {}", shape_of(&e.to_string()).chars().take(40).collect::<String>())),
    }
    #[cfg(not(feature = "state"))]
    let _ = state;
    sig
}

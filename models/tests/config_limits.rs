//! Config validation against hostile JSON: negative, zero and absurd sizes,
//! and sizes that are each fine but whose products are not, all give a clear
//! error before anything is allocated.

use eostok_models::{param_counts, Config, PRESETS};

fn err(json: &str) -> String {
    match Config::from_json(json) {
        Ok(c) => panic!("accepted {json}: {c:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn presets_pass_and_the_checked_count_matches_the_tensor_list() {
    for name in PRESETS {
        let c = Config::preset(name).unwrap();
        c.validate().unwrap();
        let checked = c.checked_param_count().unwrap() as f64;
        let listed = { let p = param_counts(&c); (p.total + p.vfm_projectors) as f64 };
        assert!((checked - listed).abs() / listed < 0.01, "{name}: {checked} vs {listed}");
    }
}

#[test]
fn negative_zero_and_huge_sizes_are_clear_errors() {
    let e = err(r#"{"base": "tiny", "codebook_size": -1}"#);
    assert!(e.contains("invalid config") && e.contains("-1"), "{e}");
    assert!(err(r#"{"base": "tiny", "latent_tokens": 0}"#).contains("latent_tokens = 0"));
    assert!(err(r#"{"base": "tiny", "image_size": 18446744073709551615}"#).contains("image_size"));
    assert!(err(r#"{"base": "tiny", "image_size": 1e300}"#).contains("invalid config"));
    assert!(err(r#"{"base": "tiny", "tau": -1}"#).contains("tau"));
    assert!(err(r#"{"base": "tiny", "class_dropout": 2}"#).contains("class_dropout"));
    assert!(err(r#"{"base": "tiny", "channels": 7}"#).contains("channels"));
    assert!(err(r#"[1, 2]"#).contains("invalid config"));
    assert!(err(r#"{"base": 5}"#).contains("invalid config"));
}

#[test]
fn products_of_allowed_sizes_are_bounded() {
    // Every width at the per-dimension limit: each value alone passes.
    let e = err(r#"{"base": "tiny", "encoder": {"width": 65536, "depth": 2, "heads": 1, "mlp_ratio": 16}}"#);
    assert!(e.contains("parameters") && e.contains("2^34"), "{e}");
    let e = err(r#"{"base": "tiny", "ar": {"width": 64, "depth": 65536, "heads": 4, "ffn_hidden": 192}}"#);
    assert!(e.contains("ar.depth = 65536"), "{e}");
    let e = err(r#"{"base": "tiny", "image_size": 65536, "patch_size": 1}"#);
    assert!(e.contains("sequence"), "{e}");
    let e = err(r#"{"base": "tiny", "codebook_size": 65536, "codebook_dim": 65536, "ar": {"width": 65536, "depth": 4, "heads": 1, "ffn_hidden": 65536}}"#);
    assert!(e.contains("parameters"), "{e}");
}

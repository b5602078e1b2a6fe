//! Structure tests of the candle modules on the `tiny` preset: masks checked
//! by perturbation, the created tensors against the canonical list, KV-cached
//! sampling against full forward passes, nested-dropout truncation.

use candle_core::{DType, Device, IndexOp, Tensor};
use eostok_models::nn::{Eostok, GenerateOptions};
use eostok_models::sampling::TokenSampling;
use eostok_models::{tensor_specs, Config};

fn tiny() -> (Config, Eostok) {
    let cfg = Config::preset("tiny").unwrap();
    let (model, _) = Eostok::random(&cfg, 7, DType::F32, &Device::Cpu).unwrap();
    (cfg, model)
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
}

/// Add noise to sequence position `pos` of h [B, S, D].
fn perturb(h: &Tensor, pos: usize) -> Tensor {
    let (b, s, d) = h.dims3().unwrap();
    let mut noise = vec![0f32; b * s * d];
    for bi in 0..b {
        for j in 0..d {
            noise[bi * s * d + pos * d + j] = ((j * 7 + bi) % 11) as f32 * 0.3 - 1.5;
        }
    }
    (h + Tensor::from_vec(noise, (b, s, d), &Device::Cpu).unwrap()).unwrap()
}

#[test]
fn created_tensors_match_the_canonical_list() {
    let cfg = Config::preset("tiny").unwrap();
    let (_, store) = Eostok::random(&cfg, 1, DType::F32, &Device::Cpu).unwrap();
    let vars = store.vars();
    let specs = tensor_specs(&cfg);
    assert_eq!(vars.len(), specs.len());
    for s in specs {
        let v = vars.get(&s.name).unwrap_or_else(|| panic!("module did not create {}", s.name));
        assert_eq!(v.dims(), s.shape.as_slice(), "{}", s.name);
    }
}

#[test]
fn init_is_deterministic_per_seed() {
    let cfg = Config::preset("tiny").unwrap();
    let a = Eostok::random(&cfg, 5, DType::F32, &Device::Cpu).unwrap().1.vars();
    let b = Eostok::random(&cfg, 5, DType::F32, &Device::Cpu).unwrap().1.vars();
    let c = Eostok::random(&cfg, 6, DType::F32, &Device::Cpu).unwrap().1.vars();
    let name = "enc.blk.0.attn_qkv.weight";
    assert_eq!(max_abs_diff(a[name].as_tensor(), b[name].as_tensor()), 0.0);
    assert!(max_abs_diff(a[name].as_tensor(), c[name].as_tensor()) > 0.0);
}

#[test]
fn encoder_mask_by_perturbation() {
    let (cfg, m) = tiny();
    let (np, l) = (cfg.num_patches(), cfg.latent_tokens);
    let x = Tensor::randn(0f32, 1.0, (2, 3, 32, 32), &Device::Cpu).unwrap();
    let h0 = m.encoder.embed(&x).unwrap();
    let base = m.encoder.forward_tokens(&h0).unwrap();
    // A later query (index 9) never changes earlier queries or any patch.
    let q = 9;
    let out = m.encoder.forward_tokens(&perturb(&h0, np + q)).unwrap();
    assert_eq!(max_abs_diff(&base.i((.., ..np + q, ..)).unwrap(), &out.i((.., ..np + q, ..)).unwrap()), 0.0);
    assert!(max_abs_diff(&base.i((.., np + q.., ..)).unwrap(), &out.i((.., np + q.., ..)).unwrap()) > 1e-4, "perturbation must reach query {q} and later");
    // The first query changes every later query but still no patch.
    let out = m.encoder.forward_tokens(&perturb(&h0, np)).unwrap();
    assert_eq!(max_abs_diff(&base.i((.., ..np, ..)).unwrap(), &out.i((.., ..np, ..)).unwrap()), 0.0);
    for j in 0..l {
        assert!(max_abs_diff(&base.i((.., np + j, ..)).unwrap(), &out.i((.., np + j, ..)).unwrap()) > 0.0, "query {j}");
    }
    // A patch reaches every query (query -> patch is allowed).
    let out = m.encoder.forward_tokens(&perturb(&h0, 3)).unwrap();
    assert!(max_abs_diff(&base.i((.., np, ..)).unwrap(), &out.i((.., np, ..)).unwrap()) > 0.0);
}

#[test]
fn decoder_mask_by_perturbation() {
    let (cfg, m) = tiny();
    let (np, l, d) = (cfg.num_patches(), cfg.latent_tokens, cfg.codebook_dim);
    let z = Tensor::randn(0f32, 1.0, (2, l, d), &Device::Cpu).unwrap();
    let h0 = m.decoder.embed(&z).unwrap();
    let (base, _) = m.decoder.forward_tokens(&h0, None).unwrap();
    // Latents never see mask tokens.
    for pos in [l, l + 5, l + np - 1] {
        let (out, _) = m.decoder.forward_tokens(&perturb(&h0, pos), None).unwrap();
        assert_eq!(max_abs_diff(&base.i((.., ..l, ..)).unwrap(), &out.i((.., ..l, ..)).unwrap()), 0.0, "mask token {pos} leaked into latents");
        assert!(max_abs_diff(&base.i((.., l.., ..)).unwrap(), &out.i((.., l.., ..)).unwrap()) > 0.0);
    }
    // Latents are causal among themselves; the last latent reaches the masks.
    let (out, _) = m.decoder.forward_tokens(&perturb(&h0, l - 1), None).unwrap();
    assert_eq!(max_abs_diff(&base.i((.., ..l - 1, ..)).unwrap(), &out.i((.., ..l - 1, ..)).unwrap()), 0.0);
    assert!(max_abs_diff(&base.i((.., l.., ..)).unwrap(), &out.i((.., l.., ..)).unwrap()) > 1e-5);
}

#[test]
fn nested_dropout_decodes_only_the_kept_prefix() {
    let (cfg, m) = tiny();
    let (l, d) = (cfg.latent_tokens, cfg.codebook_dim);
    let z = Tensor::randn(0f32, 1.0, (2, l, d), &Device::Cpu).unwrap();
    let keep = [5usize, 11];
    let img = m.decoder.forward(&z, Some(&keep)).unwrap().image;
    // Change every latent after the prefix of sample 0 and after the prefix of sample 1.
    let noise = Tensor::randn(0f32, 1.0, (2, l, d), &Device::Cpu).unwrap();
    let mut m0 = vec![0f32; 2 * l * d];
    for (b, &k) in keep.iter().enumerate() {
        for t in k..l {
            for j in 0..d {
                m0[(b * l + t) * d + j] = 1.0;
            }
        }
    }
    let sel = Tensor::from_vec(m0, (2, l, d), &Device::Cpu).unwrap();
    let z2 = (&z + (noise * sel).unwrap()).unwrap();
    let img2 = m.decoder.forward(&z2, Some(&keep)).unwrap().image;
    assert_eq!(max_abs_diff(&img, &img2), 0.0);
    // Truncating the input to the prefix gives the same image.
    let short = m.decoder.forward(&z.narrow(1, 0, 5).unwrap().narrow(0, 0, 1).unwrap(), None).unwrap().image;
    assert!(max_abs_diff(&img.narrow(0, 0, 1).unwrap(), &short) < 1e-5);
    // And without the keep mask the tail matters.
    let full = m.decoder.forward(&z2, None).unwrap().image;
    assert!(max_abs_diff(&img2, &full) > 1e-4);
}

#[test]
fn kv_cached_sampling_matches_full_forward() {
    let (cfg, m) = tiny();
    let classes = [3u32, 7];
    for cfg_scale in [1.0, 2.5] {
        let opts = GenerateOptions { sampling: TokenSampling { temperature: 1.0, top_k: 0, top_p: 1.0 }, cfg_scale, seed: 11 };
        let trace = eostok_models::nn::sample_tokens(&m.ar, &classes, cfg.latent_tokens, &opts, true).unwrap();
        assert_eq!(trace.logits.len(), cfg.latent_tokens);
        let null = cfg.null_class() as u32;
        for step in 0..cfg.latent_tokens {
            let prefix: Vec<u32> = trace.ids.iter().flat_map(|r| r[..step].to_vec()).collect();
            let ids = Tensor::from_vec(prefix, (2, step), &Device::Cpu).unwrap();
            let full = |c: &[u32]| {
                let l = m.ar.forward_ids(&ids, &Tensor::new(c, &Device::Cpu).unwrap()).unwrap();
                l.i((.., step, ..)).unwrap().to_vec2::<f32>().unwrap()
            };
            let cond = full(&classes);
            let uncond = full(&[null, null]);
            for b in 0..2 {
                let mut want = cond[b].clone();
                if cfg_scale != 1.0 {
                    eostok_models::sampling::guide(&mut want, &uncond[b], cfg_scale as f32);
                }
                let got = &trace.logits[step][b];
                let err = want.iter().zip(got).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
                let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
                assert!(err <= 1e-5 * scale.max(1.0), "step {step} row {b} cfg {cfg_scale}: err {err}");
            }
        }
    }
}

#[test]
fn generation_is_seeded_and_decodes_images() {
    let (cfg, m) = tiny();
    let opts = GenerateOptions { seed: 3, ..Default::default() };
    let (ids_a, img_a) = m.generate(&[1, 2], &opts).unwrap();
    let (ids_b, _) = m.generate(&[1, 2], &opts).unwrap();
    let (ids_c, _) = m.generate(&[1, 2], &GenerateOptions { seed: 4, ..Default::default() }).unwrap();
    assert_eq!(ids_a, ids_b);
    assert_ne!(ids_a, ids_c);
    assert_eq!(img_a.dims(), &[2, 3, cfg.image_size, cfg.image_size]);
    assert!(ids_a.iter().flatten().all(|&t| (t as usize) < cfg.codebook_size));
}

#[test]
fn checkpoint_tensors_round_trip_into_a_model() {
    let cfg = Config::preset("tiny").unwrap();
    let (m, store) = Eostok::random(&cfg, 2, DType::F32, &Device::Cpu).unwrap();
    let tensors = store.vars().into_iter().map(|(k, v)| (k, v.as_tensor().copy().unwrap())).collect();
    let (m2, _) = Eostok::from_tensors(&cfg, tensors, DType::F32, &Device::Cpu).unwrap();
    let ids = Tensor::new(&[[1u32, 2, 3, 4]], &Device::Cpu).unwrap();
    assert_eq!(max_abs_diff(&m.decode_ids(&ids).unwrap(), &m2.decode_ids(&ids).unwrap()), 0.0);
    // A missing tensor is an error naming it.
    let mut tensors: std::collections::HashMap<String, Tensor> = store.vars().into_iter().map(|(k, v)| (k, v.as_tensor().clone())).collect();
    tensors.remove("quant.codebook.weight");
    let err = Eostok::from_tensors(&cfg, tensors, DType::F32, &Device::Cpu).err().unwrap().to_string();
    assert!(err.contains("quant.codebook.weight"), "{err}");
}

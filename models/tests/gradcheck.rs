//! Finite-difference gradient checks (f64) of every module used in training.
//! candle's fused norms/softmax/sdpa drop gradients silently; these tests
//! fail if a module loses its gradient or computes a wrong one.

use candle_core::{DType, Device, Module, Tensor, Var};
use eostok_models::nn::layers::{attention, mask_from, LayerNorm, Linear, Projector, RmsNorm, SwiGlu, VitBlock};
use eostok_models::nn::{ArTransformer, Ibq, ParamStore};
use eostok_models::Config;

const DEV: Device = Device::Cpu;
const REL_TOL: f64 = 1e-4;

fn randn(shape: &[usize], seed: u64) -> Tensor {
    let mut rng = eostok_models::sampling::SplitMix64::new(seed);
    let n: usize = shape.iter().product();
    Tensor::from_vec((0..n).map(|_| rng.normal()).collect::<Vec<f64>>(), shape, &DEV).unwrap()
}

/// A scalar that mixes every output element with a fixed random weight.
fn project(out: &Tensor, seed: u64) -> Tensor {
    (out * randn(out.dims(), seed)).unwrap().sum_all().unwrap()
}

fn value(t: &Tensor) -> f64 {
    t.to_scalar::<f64>().unwrap()
}

/// Compare backprop gradients of `f` w.r.t. each var against central
/// differences of `surrogate` (the same function unless a straight-through
/// estimator makes the forward piecewise constant).
fn check_with(name: &str, vars: &[(&str, &Var)], f: &dyn Fn() -> Tensor, surrogate: &dyn Fn() -> Tensor) {
    let loss = f();
    let grads = loss.backward().unwrap();
    for (vname, var) in vars {
        let g = grads.get(var.as_tensor()).unwrap_or_else(|| panic!("{name}: no gradient reached {vname}"));
        let g: Vec<f64> = g.flatten_all().unwrap().to_vec1().unwrap();
        let x0: Vec<f64> = var.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
        let n = x0.len();
        let picks: Vec<usize> = (0..n.min(10)).map(|i| (i * 7919 + 13) % n).collect();
        let mut nonzero = false;
        for &i in &picks {
            let h = 1e-6 * x0[i].abs().max(1.0);
            let at = |delta: f64| {
                let mut x = x0.clone();
                x[i] += delta;
                var.set(&Tensor::from_vec(x, var.shape(), &DEV).unwrap()).unwrap();
                value(&surrogate())
            };
            let fd = (at(h) - at(-h)) / (2.0 * h);
            var.set(&Tensor::from_vec(x0.clone(), var.shape(), &DEV).unwrap()).unwrap();
            let err = (g[i] - fd).abs() / g[i].abs().max(fd.abs()).max(1e-8);
            assert!(err <= REL_TOL, "{name}: d/d{vname}[{i}] backprop {} vs finite difference {fd} (rel err {err:.2e})", g[i]);
            nonzero |= g[i] != 0.0;
        }
        assert!(nonzero, "{name}: gradient of {vname} is zero at every checked entry");
    }
}

fn check(name: &str, vars: &[(&str, &Var)], f: &dyn Fn() -> Tensor) {
    check_with(name, vars, f, f)
}

fn var(shape: &[usize], seed: u64) -> Var {
    Var::from_tensor(&randn(shape, seed)).unwrap()
}

/// All parameters a module created, as (name, var).
fn params(store: &ParamStore) -> Vec<(String, Var)> {
    store.vars().into_iter().collect()
}

fn check_module(name: &str, store: &ParamStore, x: &Var, f: &dyn Fn(&Tensor) -> Tensor) {
    let ps = params(store);
    let mut vars: Vec<(&str, &Var)> = ps.iter().map(|(n, v)| (n.as_str(), v)).collect();
    vars.push(("input", x));
    check(name, &vars, &|| project(&f(x.as_tensor()), 99));
}

/// Non-trivial parameter values: perturb every param away from its init
/// (norm weights of exactly 1 and zero biases would hide some errors).
fn jitter(store: &ParamStore, seed: u64) {
    for (i, (_, v)) in store.vars().into_iter().enumerate() {
        let t = (v.as_tensor() + (randn(v.dims(), seed + i as u64) * 0.1).unwrap()).unwrap();
        v.set(&t).unwrap();
    }
}

#[test]
fn layer_norm_and_rms_norm() {
    let store = ParamStore::random(1);
    let vb = store.var_builder(DType::F64, &DEV);
    let ln = LayerNorm::new(&vb, "ln", 8, 1e-6).unwrap();
    let rms = RmsNorm::new(&vb, "rms", 8, 1e-5).unwrap();
    jitter(&store, 10);
    let x = var(&[3, 5, 8], 2);
    check_module("layer_norm+rms_norm", &store, &x, &|x| (ln.forward(x).unwrap() + rms.forward(x).unwrap()).unwrap());
}

#[test]
fn masked_attention() {
    let (q, k, v) = (var(&[2, 2, 5, 4], 3), var(&[2, 2, 5, 4], 4), var(&[2, 2, 5, 4], 5));
    let mask = mask_from(5, 5, DType::F64, &DEV, |i, j| j <= i || j == 4).unwrap();
    check("attention", &[("q", &q), ("k", &k), ("v", &v)], &|| {
        project(&attention(q.as_tensor(), k.as_tensor(), v.as_tensor(), Some(&mask)).unwrap(), 6)
    });
}

#[test]
fn vit_block_and_linear() {
    let store = ParamStore::random(2);
    let vb = store.var_builder(DType::F64, &DEV);
    let cfg = eostok_models::VitConfig { width: 8, depth: 1, heads: 2, mlp_ratio: 2 };
    let blk = VitBlock::new(&vb, "blk", &cfg, 1e-6).unwrap();
    jitter(&store, 20);
    let x = var(&[2, 6, 8], 7);
    let mask = mask_from(6, 6, DType::F64, &DEV, |i, j| j < 4 || j <= i).unwrap();
    check_module("vit_block", &store, &x, &|x| blk.forward(x, Some(&mask)).unwrap());
}

#[test]
fn swiglu_and_projector() {
    let store = ParamStore::random(3);
    let vb = store.var_builder(DType::F64, &DEV);
    let mlp = SwiGlu::new(&vb, "blk", 6, 10).unwrap();
    let proj = Projector::new(&vb, "proj", 6, 7, 3).unwrap();
    let lin = Linear::new(&vb, "lin", 6, 3, true).unwrap();
    jitter(&store, 30);
    let x = var(&[2, 3, 6], 8);
    check_module("swiglu+projector+linear", &store, &x, &|x| {
        let a = mlp.forward(x).unwrap().sum_keepdim(2).unwrap();
        (proj.forward(x).unwrap() + lin.forward(x).unwrap()).unwrap().broadcast_add(&a).unwrap()
    });
}

#[test]
fn adaln_ar_transformer() {
    let mut cfg = Config::preset("tiny").unwrap();
    cfg.ar = eostok_models::ArConfig { width: 8, depth: 2, heads: 2, ffn_hidden: 12 };
    cfg.codebook_size = 6;
    cfg.latent_tokens = 4;
    cfg.num_classes = 3;
    let store = ParamStore::random(4);
    let ar = ArTransformer::new(&store.var_builder(DType::F64, &DEV), &cfg).unwrap();
    jitter(&store, 40);
    // Soft inputs as a differentiable input: the AR gradient w.r.t. Ind.
    let ind = Var::from_tensor(&candle_nn::ops::softmax(&randn(&[2, 4, 6], 9), 2).unwrap()).unwrap();
    let classes = Tensor::new(&[0u32, 3], &DEV).unwrap();
    let ps = params(&store);
    let mut vars: Vec<(&str, &Var)> = ps.iter().map(|(n, v)| (n.as_str(), v)).collect();
    vars.push(("ind", &ind));
    check("ar_transformer(adaln)", &vars, &|| project(&ar.forward_soft(ind.as_tensor(), &classes).unwrap(), 12));
}

#[test]
fn ibq_straight_through_matches_its_soft_surrogate() {
    let mut cfg = Config::preset("tiny").unwrap();
    cfg.codebook_size = 7;
    cfg.codebook_dim = 4;
    cfg.tau = 0.3;
    let store = ParamStore::random(5);
    let ibq = Ibq::new(&store.var_builder(DType::F64, &DEV), &cfg).unwrap();
    let codebook = store.vars()["quant.codebook.weight"].clone();
    let z = var(&[2, 3, 4], 11);
    // Forward is a hard code: z_q equals the looked-up code rows.
    let out = ibq.forward(z.as_tensor()).unwrap();
    let hard = ibq.lookup(&out.ids).unwrap();
    let diff = (&out.z_q - &hard).unwrap().abs().unwrap().max_keepdim(0).unwrap().max_keepdim(1).unwrap().max_keepdim(2).unwrap();
    assert!(value(&diff.squeeze(0).unwrap().squeeze(0).unwrap().squeeze(0).unwrap()) < 1e-12);
    // Backward: d/dθ of  H·Ĉ(C) + p(z, C)·Ĉ₀,  with H the one-hot and Ĉ₀ the
    // normalised codebook frozen at the current point (p − sg(p) is 0 there,
    // so its product with dĈ vanishes). Central differences of this surrogate
    // are the exact straight-through gradient.
    let hard = (&out.ind - (&out.probs - out.probs.detach()).unwrap()).unwrap().detach().reshape((6, 7)).unwrap();
    let cb0 = ibq.normalized_codebook().unwrap().detach();
    let soft = || {
        let cb = ibq.normalized_codebook().unwrap();
        let zn = eostok_models::nn::layers::l2_normalize(z.as_tensor()).unwrap();
        let logits = (zn.reshape((6, 4)).unwrap().matmul(&cb.t().unwrap()).unwrap() / cfg.tau).unwrap();
        let p = candle_nn::ops::softmax(&logits, 1).unwrap();
        let zq = (hard.matmul(&cb).unwrap() + p.matmul(&cb0).unwrap()).unwrap();
        project(&zq.reshape((2, 3, 4)).unwrap(), 13)
    };
    check_with("ibq_ste", &[("z", &z), ("codebook", &codebook)], &|| project(&ibq.forward(z.as_tensor()).unwrap().z_q, 13), &soft);
}

#[test]
fn fused_candle_ops_really_lose_gradients() {
    // Guards the premise of this file: if candle fixes its fused ops, we want
    // to know (they are faster); if a module of ours used them, the checks
    // above would fail with "no gradient reached".
    let x = var(&[2, 4], 1);
    let y = candle_nn::ops::softmax_last_dim(&x.as_tensor().to_dtype(DType::F32).unwrap()).unwrap();
    let g = y.sum_all().unwrap().backward().unwrap();
    assert!(g.get(x.as_tensor()).is_none(), "candle's fused softmax now has a backward pass");
}

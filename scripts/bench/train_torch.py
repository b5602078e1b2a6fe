#!/usr/bin/env python3
"""The EOSTok joint E2E training step in PyTorch (CPU), for `eostok-bench train`.

Same architecture, shapes, initial scales and losses as the Rust trainer
(models/src/nn/*.rs, trainer/src/joint.rs, loss.rs, optim.rs) without the
pretrained nets (LPIPS/VFM off):

  L = L2(recon) + 1e-3*(codebook + 0.25*commit) + 0.01*entropy
      + 0.1*CE(AR(soft Ind^T E), ids) + 1.0*L2(D(STE(softmax(AR logits)) C^), x)

with per-sample nested dropout (p 0.5) masking the decoder's latents, class
dropout 0.1, then backward, global-norm clipping at 1.0, Adam with two groups
(tokenizer beta2 0.999, AR beta2 0.95; lr 1e-4, eps 1e-8) and an EMA (0.999)
of every parameter. One fixed batch of uniform [-1, 1] images (no data
loading), like the Rust side. Prints one JSON object on stdout.

Usage: train_torch.py --config tiny|small | --config-json JSON
       [--batch 64] [--steps 5] [--warmup 1] [--threads 2]
       [--expect-params TRAINED,TOTAL]   (assert within 1%)
"""

import argparse
import json
import math
import resource
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

MASKED = -1e9
INIT_STD = 0.02

# The presets of models/src/config.rs that this script knows without --config-json.
PRESETS = {
    "tiny": dict(name="tiny", image_size=32, channels=3, patch_size=8, latent_tokens=16, codebook_dim=16,
                 codebook_size=256, tau=0.1, encoder=dict(width=64, depth=2, heads=4, mlp_ratio=4),
                 decoder=dict(width=64, depth=2, heads=4, mlp_ratio=4),
                 ar=dict(width=64, depth=2, heads=4, ffn_hidden=192), num_classes=10, norm_eps=1e-6,
                 rms_eps=1e-5, class_dropout=0.1, vfm=dict(dim=384, projector_hidden=128, decoder_layer=0)),
    "small": dict(name="small", image_size=32, channels=3, patch_size=4, latent_tokens=32, codebook_dim=16,
                  codebook_size=512, tau=0.1, encoder=dict(width=128, depth=3, heads=4, mlp_ratio=4),
                  decoder=dict(width=128, depth=3, heads=4, mlp_ratio=4),
                  ar=dict(width=192, depth=4, heads=6, ffn_hidden=512), num_classes=10, norm_eps=1e-6,
                  rms_eps=1e-5, class_dropout=0.1, vfm=dict(dim=384, projector_hidden=512, decoder_layer=0)),
}


def linear(inp, out, bias=True):
    m = nn.Linear(inp, out, bias=bias)
    nn.init.normal_(m.weight, 0.0, INIT_STD)
    if bias:
        nn.init.zeros_(m.bias)
    return m


def table(rows, cols, std=INIT_STD):
    return nn.Parameter(torch.randn(rows, cols) * std)


def patchify(x, p):
    b, c, h, w = x.shape
    gh, gw = h // p, w // p
    return x.reshape(b, c, gh, p, gw, p).permute(0, 2, 4, 3, 5, 1).reshape(b, gh * gw, p * p * c)


def unpatchify(x, p, c):
    b, n, _ = x.shape
    g = int(round(math.sqrt(n)))
    return x.reshape(b, g, g, p, p, c).permute(0, 5, 1, 3, 2, 4).reshape(b, c, g * p, g * p)


def attention(q, k, v, mask):
    # torch 1.13 has no scaled_dot_product_attention; the same as layers.rs `attention`.
    scores = (q * (1.0 / math.sqrt(q.shape[-1]))) @ k.transpose(-2, -1)
    if mask is not None:
        scores = scores + mask
    return torch.softmax(scores, dim=-1) @ v


def split_heads(x, h):
    b, t, d = x.shape
    return x.reshape(b, t, h, d // h).transpose(1, 2)


def merge_heads(x):
    b, h, t, hd = x.shape
    return x.transpose(1, 2).reshape(b, t, h * hd)


def mask_from(rows, cols, visible):
    m = torch.full((rows, cols), MASKED)
    for i in range(rows):
        for j in range(cols):
            if visible(i, j):
                m[i, j] = 0.0
    return m


class VitBlock(nn.Module):
    def __init__(self, c, eps):
        super().__init__()
        d = c["width"]
        self.heads = c["heads"]
        self.attn_norm = nn.LayerNorm(d, eps=eps)
        self.qkv = linear(d, 3 * d)
        self.attn_out = linear(d, d)
        self.ffn_norm = nn.LayerNorm(d, eps=eps)
        self.up = linear(d, c["mlp_ratio"] * d)
        self.down = linear(c["mlp_ratio"] * d, d)

    def forward(self, x, mask):
        q, k, v = self.qkv(self.attn_norm(x)).chunk(3, dim=-1)
        a = attention(split_heads(q, self.heads), split_heads(k, self.heads), split_heads(v, self.heads), mask)
        x = x + self.attn_out(merge_heads(a))
        return x + self.down(F.gelu(self.up(self.ffn_norm(x)), approximate="tanh"))


class Projector(nn.Module):
    """REPA projector (part of the checkpoint; unused with VFM off, but in the EMA)."""

    def __init__(self, inp, hidden, out):
        super().__init__()
        self.layers = nn.ModuleList([linear(inp, hidden), linear(hidden, hidden), linear(hidden, out)])


class Encoder(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        e = cfg["encoder"]
        self.p = cfg["patch_size"]
        self.n = (cfg["image_size"] // self.p) ** 2
        pd = self.p * self.p * cfg["channels"]
        self.patch_embd = linear(pd, e["width"])
        self.pos_embd = table(self.n, e["width"])
        self.queries = table(cfg["latent_tokens"], e["width"])
        self.blocks = nn.ModuleList([VitBlock(e, cfg["norm_eps"]) for _ in range(e["depth"])])
        self.output_norm = nn.LayerNorm(e["width"], eps=cfg["norm_eps"])
        self.latent_proj = linear(e["width"], cfg["codebook_dim"])
        s = self.n + cfg["latent_tokens"]
        n = self.n
        self.register_buffer("mask", mask_from(s, s, lambda i, j: j < n if i < n else (j < n or j <= i)), persistent=False)

    def forward(self, x):
        b = x.shape[0]
        patches = self.patch_embd(patchify(x, self.p)) + self.pos_embd
        h = torch.cat([patches, self.queries.unsqueeze(0).expand(b, -1, -1)], 1)
        for blk in self.blocks:
            h = blk(h, self.mask)
        h = self.output_norm(h)
        return self.latent_proj(h[:, self.n:]), h[:, : self.n]


def l2_normalize(x):
    return x / (x.pow(2).sum(-1, keepdim=True) + 1e-12).sqrt()


def straight_through_one_hot(probs):
    ids = probs.argmax(-1)
    hard = F.one_hot(ids, probs.shape[-1]).to(probs.dtype)
    return hard + (probs - probs.detach()), ids


class Ibq(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.codebook = table(cfg["codebook_size"], cfg["codebook_dim"], 1.0)
        self.tau = cfg["tau"]

    def forward(self, z):
        b, l, d = z.shape
        cb = l2_normalize(self.codebook)
        z_norm = l2_normalize(z)
        probs = torch.softmax(z_norm.reshape(b * l, d) @ cb.t() / self.tau, -1)
        ind, ids = straight_through_one_hot(probs)
        z_q = (ind @ cb).reshape(b, l, d)
        k = cb.shape[0]
        return z_q, ind.reshape(b, l, k), probs.reshape(b, l, k), ids.reshape(b, l), z_norm

    def embed_one_hot(self, ind):
        cb = l2_normalize(self.codebook)
        return ind @ cb


class Decoder(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        dc = cfg["decoder"]
        self.p, self.c = cfg["patch_size"], cfg["channels"]
        self.n = (cfg["image_size"] // self.p) ** 2
        self.latent_proj = linear(cfg["codebook_dim"], dc["width"])
        self.latent_pos = table(cfg["latent_tokens"], dc["width"])
        self.mask_token = nn.Parameter(torch.randn(dc["width"]) * INIT_STD)
        self.pos_embd = table(self.n, dc["width"])
        self.blocks = nn.ModuleList([VitBlock(dc, cfg["norm_eps"]) for _ in range(dc["depth"])])
        self.output_norm = nn.LayerNorm(dc["width"], eps=cfg["norm_eps"])
        self.pixel_out = linear(dc["width"], self.p * self.p * self.c)

    def mask(self, k, keep):
        """[B,1,S,S] additive mask: latent i sees latents 0..=i; a mask token sees the
        kept latents and every mask token (decoder.rs `decoder_visible`)."""
        s = k + self.n
        i = torch.arange(s).unsqueeze(1)
        j = torch.arange(s).unsqueeze(0)
        keep = torch.tensor(keep).clamp(1, k).view(-1, 1, 1)
        vis = torch.where(i < k, j <= i, (j >= k) | (j < keep))
        return torch.where(vis, 0.0, MASKED).unsqueeze(1)

    def forward(self, z_q, keep):
        b, k, _ = z_q.shape
        lat = self.latent_proj(z_q) + self.latent_pos[:k]
        masks = (self.pos_embd + self.mask_token).unsqueeze(0).expand(b, -1, -1)
        h = torch.cat([lat, masks], 1)
        mask = self.mask(k, keep)
        for blk in self.blocks:
            h = blk(h, mask)
        h = self.output_norm(h)
        return unpatchify(self.pixel_out(h[:, k:]), self.p, self.c)


class RmsNorm(nn.Module):
    def __init__(self, d, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class ArBlock(nn.Module):
    def __init__(self, a, eps):
        super().__init__()
        d, h = a["width"], a["ffn_hidden"]
        self.heads = a["heads"]
        self.attn_norm = RmsNorm(d, eps)
        self.q, self.k, self.v, self.o = (linear(d, d, False) for _ in range(4))
        self.ffn_norm = RmsNorm(d, eps)
        self.gate, self.up, self.down = linear(d, h, False), linear(d, h, False), linear(h, d, False)
        self.adaln_bias = nn.Parameter(torch.zeros(6 * d))

    def forward(self, x, modulation, mask):
        sa, ca, ga, sm, cm, gm = (modulation + self.adaln_bias).unsqueeze(1).chunk(6, -1)
        h = self.attn_norm(x) * (1 + ca) + sa
        a = attention(split_heads(self.q(h), self.heads), split_heads(self.k(h), self.heads),
                      split_heads(self.v(h), self.heads), mask)
        x = x + self.o(merge_heads(a)) * ga
        h = self.ffn_norm(x) * (1 + cm) + sm
        return x + self.down(F.silu(self.gate(h)) * self.up(h)) * gm


class Ar(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        a = cfg["ar"]
        d, k, l = a["width"], cfg["codebook_size"], cfg["latent_tokens"]
        self.token_embd = table(k, d)
        self.pos_embd = table(l, d)
        self.cls_embd = table(cfg["num_classes"] + 1, d)
        self.adaln = linear(d, 6 * d)
        self.blocks = nn.ModuleList([ArBlock(a, cfg["rms_eps"]) for _ in range(a["depth"])])
        self.output_norm = RmsNorm(d, cfg["rms_eps"])
        self.output = linear(d, k, False)
        self.null_class = cfg["num_classes"]
        self.class_dropout = cfg["class_dropout"]
        self.register_buffer("mask", mask_from(l, l, lambda i, j: j <= i), persistent=False)

    def forward_train(self, ind, classes):
        b, l, k = ind.shape
        drop = torch.rand(b) < self.class_dropout
        classes = torch.where(drop, torch.full_like(classes, self.null_class), classes)
        cls = self.cls_embd[classes]
        tokens = ind[:, : l - 1].reshape(b * (l - 1), k) @ self.token_embd
        x = torch.cat([cls.unsqueeze(1), tokens.reshape(b, l - 1, -1)], 1) + self.pos_embd[:l]
        modulation = self.adaln(F.silu(cls))
        for blk in self.blocks:
            x = blk(x, modulation, self.mask)
        return self.output(self.output_norm(x))


class Eostok(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.ibq = Ibq(cfg)
        self.decoder = Decoder(cfg)
        self.ar = Ar(cfg)
        v = cfg.get("vfm")
        self.vfm_enc = Projector(cfg["encoder"]["width"], v["projector_hidden"], v["dim"]) if v else None
        self.vfm_dec = Projector(cfg["decoder"]["width"], v["projector_hidden"], v["dim"]) if v else None


def entropy_penalty(probs):
    k = probs.shape[-1]
    p = probs.reshape(-1, k)
    eps = 1e-8
    per_token = -(p * (p + eps).log()).sum(1).mean()
    avg = p.mean(0)
    return per_token - (-(avg * (avg + eps).log()).sum())


def joint_loss(m, x, classes, gen):
    """trainer/src/joint.rs `joint_forward` with LPIPS and VFM off (default weights)."""
    cfg = m.cfg
    b, l = x.shape[0], cfg["latent_tokens"]
    z, _h_enc = m.encoder(x)
    z_q, ind, probs, ids, z_norm = m.ibq(z)
    logits = m.ar.forward_train(ind, classes)
    ntp = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids.reshape(-1))
    # Nested dropout: with p 0.5 a sample keeps a random prefix 1..L.
    u = torch.rand(b, generator=gen)
    k = torch.randint(1, l + 1, (b,), generator=gen)
    keep = torch.where(u < 0.5, k, torch.full_like(k, l)).tolist()
    ind_ar, _ = straight_through_one_hot(torch.softmax(logits, -1))
    z_apr = m.ibq.embed_one_hot(ind_ar)
    image = m.decoder(torch.cat([z_q, z_apr], 0), keep + keep)
    recon, apr = image[:b], image[b:]
    l2 = F.mse_loss(recon, x)
    commit = F.mse_loss(z_q, z_norm.detach()) + 0.25 * F.mse_loss(z_norm, z_q.detach())
    ent = entropy_penalty(probs)
    apr_l2 = F.mse_loss(apr, x)
    return l2 + 1e-3 * commit + 0.01 * ent + 0.1 * ntp + 1.0 * apr_l2


def count(params):
    return sum(p.numel() for p in params)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="tiny", choices=sorted(PRESETS))
    ap.add_argument("--config-json", help="a full eostok Config as JSON (overrides --config)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--expect-params", help="TRAINED,TOTAL parameter counts of ours; assert within 1%%")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    cfg = json.loads(a.config_json) if a.config_json else PRESETS[a.config]
    m = Eostok(cfg)
    trained = count(m.encoder.parameters()) + count(m.ibq.parameters()) + count(m.decoder.parameters()) + count(m.ar.parameters())
    total = count(m.parameters())
    if a.expect_params:
        et, etot = (int(v) for v in a.expect_params.split(","))
        for what, ours, theirs in (("trained", et, trained), ("total", etot, total)):
            if abs(theirs - ours) > 0.01 * ours:
                sys.exit(f"train_torch.py: {what} parameters {theirs} differ from ours {ours} by more than 1%")
    tok = [p for n, p in m.named_parameters() if not n.startswith("ar.")]
    arp = list(m.ar.parameters())
    opt = torch.optim.Adam([dict(params=tok, betas=(0.9, 0.999)), dict(params=arp, betas=(0.9, 0.95))], lr=1e-4, eps=1e-8)
    params = list(m.parameters())
    ema = [p.detach().clone() for p in params]

    gen = torch.Generator().manual_seed(a.seed ^ 0xBA7C)
    s = cfg["image_size"]
    x = torch.rand(a.batch, cfg["channels"], s, s, generator=gen) * 2 - 1
    classes = torch.arange(a.batch) % cfg["num_classes"]

    def rss_kb(key):
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
        return 0

    rss_before = rss_kb("VmRSS") * 1024
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        hwm_reset = True
    except OSError:
        hwm_reset = False
    times, cpu, first, last = [], [], float("nan"), float("nan")
    for i in range(a.warmup + a.steps):
        t0 = time.perf_counter()
        c0 = time.process_time()  # CPU seconds of every thread, like /proc/self/stat
        opt.zero_grad(set_to_none=True)
        loss = joint_loss(m, x, classes, gen)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        with torch.no_grad():
            torch._foreach_mul_(ema, 0.999)
            torch._foreach_add_(ema, params, alpha=0.001)
        lv = loss.item()
        if i >= a.warmup:
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
        if i == 0:
            first = lv
        last = lv
    if not math.isfinite(last):
        sys.exit(f"train_torch.py: loss is {last}")
    print(json.dumps({
        "impl": "pytorch", "torch": torch.__version__, "config": cfg["name"], "phase": "e2e", "batch": a.batch,
        "threads": torch.get_num_threads(), "steps": len(times), "step_s": times,
        "steps_per_s": len(times) / sum(times),
        "cpu_s": cpu, "cpu_s_per_step": sum(cpu) / len(cpu), "rss_before_bytes": rss_before,
        "peak_rss_bytes": rss_kb("VmHWM") * 1024, "hwm_reset": hwm_reset,
        "ru_maxrss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "params_trained": trained, "params_total": total, "loss_first": first, "loss_last": last,
    }))


if __name__ == "__main__":
    main()

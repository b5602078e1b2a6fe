"""Plain-numpy reference implementations (float32, NCHW) of the three frozen nets.

They read the converted safetensors (names as written by the convert_*.py
scripts) and exist to produce golden outputs for the Rust tests and to check
the conversions independently of the source frameworks.
"""
import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

# ----------------------------------------------------------------------------- ops


def conv2d(x, w, b=None, stride=1, pad=(0, 0, 0, 0), groups=1):
    """x [N,C,H,W], w [O,C/groups,kh,kw]; pad = (top, bottom, left, right)."""
    t, bo, l, r = pad
    if any(pad):
        x = np.pad(x, ((0, 0), (0, 0), (t, bo), (l, r)))
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    oh, ow = (h - kh) // stride + 1, (wd - kw) // stride + 1
    if groups == 1:
        if kh == 1 and kw == 1:
            xs = x[:, :, ::stride, ::stride][:, :, :oh, :ow]
            y = np.einsum("nchw,oc->nohw", xs, w[:, :, 0, 0], optimize=True)
        else:
            win = sliding_window_view(x, (kh, kw), axis=(2, 3))[:, :, ::stride, ::stride][:, :, :oh, :ow]
            # win [N,C,oh,ow,kh,kw]
            cols = win.transpose(0, 2, 3, 1, 4, 5).reshape(n * oh * ow, c * kh * kw)
            y = (cols @ w.reshape(o, -1).T).reshape(n, oh, ow, o).transpose(0, 3, 1, 2)
    else:
        assert groups == c == o and cg == 1, "only depthwise grouped convs are supported"
        y = np.zeros((n, o, oh, ow), np.float32)
        for i in range(kh):
            for j in range(kw):
                patch = x[:, :, i:i + stride * (oh - 1) + 1:stride, j:j + stride * (ow - 1) + 1:stride]
                y += patch * w[None, :, 0, i, j, None, None]
    if b is not None:
        y = y + b[None, :, None, None]
    return np.ascontiguousarray(y, dtype=np.float32)


def relu(x):
    return np.maximum(x, 0, dtype=np.float32)


def max_pool(x, k, s):
    win = sliding_window_view(x, (k, k), axis=(2, 3))[:, :, ::s, ::s]
    return np.ascontiguousarray(win.max(axis=(4, 5)))


def layer_norm(x, w, b, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return ((x - mu) / np.sqrt(var + eps) * w + b).astype(np.float32)


_erf = np.frompyfunc(math.erf, 1, 1)


def gelu_erf(x):
    return (0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)).astype(np.float64))).astype(np.float32)


def softmax(x, axis=-1):
    m = x.max(axis=axis, keepdims=True)
    e = np.exp(x - m)
    return e / e.sum(axis=axis, keepdims=True)


# ------------------------------------------------------------------ bicubic resize


def _cubic_weights(t, a=-0.75):
    """Keys cubic convolution weights for offsets t in [0,1): taps at -1,0,1,2."""
    def w1(d):  # |d| <= 1
        return ((a + 2) * d - (a + 3)) * d * d + 1

    def w2(d):  # 1 < |d| < 2
        return ((a * d - 5 * a) * d + 8 * a) * d - 4 * a

    return np.stack([w2(t + 1), w1(t), w1(1 - t), w2(2 - t)], axis=-1)


def bicubic_resize_torch(x, out_h, out_w, a=-0.75):
    """torch F.interpolate(mode='bicubic', align_corners=False, antialias=False) for
    an [N,C,H,W] array (also ONNX Resize cubic, half_pixel, a=-0.75, exclude_outside=0).
    Out-of-range taps are clamped to the border."""
    n, c, h, w = x.shape

    def axis_matrix(insz, outsz):
        scale = insz / outsz
        m = np.zeros((outsz, insz), np.float64)
        for o in range(outsz):
            src = (o + 0.5) * scale - 0.5
            i0 = math.floor(src)
            ws = _cubic_weights(np.array(src - i0), a)
            for k, wt in zip(range(-1, 3), ws):
                m[o, min(max(i0 + k, 0), insz - 1)] += wt
        return m

    mh, mw = axis_matrix(h, out_h), axis_matrix(w, out_w)
    y = np.einsum("oh,nchw,pw->ncop", mh, x.astype(np.float64), mw)
    return y.astype(np.float32)


# ------------------------------------------------------------------------ DINOv2


def dinov2_pos_embed(W, h_patches, w_patches):
    pe = W["pos_embed"]  # [1, 1370, D]
    d = pe.shape[-1]
    n = pe.shape[1] - 1
    g = int(round(math.sqrt(n)))
    if h_patches == g and w_patches == g:
        return pe
    grid = pe[:, 1:].reshape(1, g, g, d).transpose(0, 3, 1, 2)
    grid = bicubic_resize_torch(grid, h_patches, w_patches)
    grid = grid.transpose(0, 2, 3, 1).reshape(1, h_patches * w_patches, d)
    return np.concatenate([pe[:, :1], grid], axis=1)


def dinov2_forward(W, x, depth=12, heads=6, eps=1e-6):
    """x [N,3,H,W] normalised -> last hidden state after the final norm [N,1+P,D]."""
    n = x.shape[0]
    pw = W["patch_embed.proj.weight"]
    p = pw.shape[-1]
    tok = conv2d(x, pw, W["patch_embed.proj.bias"], stride=p)  # [N,D,h,w]
    _, d, hp, wp = tok.shape
    tok = tok.reshape(n, d, hp * wp).transpose(0, 2, 1)
    cls = np.broadcast_to(W["cls_token"], (n, 1, d))
    h = np.concatenate([cls, tok], axis=1) + dinov2_pos_embed(W, hp, wp)
    hd = d // heads
    for i in range(depth):
        b = f"blocks.{i}."
        y = layer_norm(h, W[b + "norm1.weight"], W[b + "norm1.bias"], eps)
        qkv = y @ W[b + "attn.qkv.weight"].T + W[b + "attn.qkv.bias"]
        t = qkv.shape[1]
        qkv = qkv.reshape(n, t, 3, heads, hd).transpose(2, 0, 3, 1, 4)
        q, k, v = qkv[0] * (hd ** -0.5), qkv[1], qkv[2]
        att = softmax(q @ k.transpose(0, 1, 3, 2))
        o = (att @ v).transpose(0, 2, 1, 3).reshape(n, t, d)
        o = o @ W[b + "attn.proj.weight"].T + W[b + "attn.proj.bias"]
        h = h + W[b + "ls1.gamma"] * o
        y = layer_norm(h, W[b + "norm2.weight"], W[b + "norm2.bias"], eps)
        y = gelu_erf(y @ W[b + "mlp.fc1.weight"].T + W[b + "mlp.fc1.bias"])
        y = y @ W[b + "mlp.fc2.weight"].T + W[b + "mlp.fc2.bias"]
        h = (h + W[b + "ls2.gamma"] * y).astype(np.float32)
    return layer_norm(h, W["norm.weight"], W["norm.bias"], eps)


# ------------------------------------------------------------------------- LPIPS

LPIPS_SHIFT = np.array([-0.030, -0.088, -0.188], np.float32)
LPIPS_SCALE = np.array([0.458, 0.448, 0.450], np.float32)
VGG_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]
VGG_TAPS = [1, 3, 6, 9, 12]  # conv indices (0-based) whose ReLU output is tapped
ALEX_CONVS = [  # (stride, padding, maxpool(3,2) after the ReLU?)
    (4, 2, True), (1, 2, True), (1, 1, False), (1, 1, False), (1, 1, False)]


def vgg_features(W, x):
    outs, k = [], 0
    for v in VGG_CFG:
        if v == "M":
            x = max_pool(x, 2, 2)
            continue
        x = relu(conv2d(x, W[f"features.{k}.weight"], W[f"features.{k}.bias"], 1, (1, 1, 1, 1)))
        if k in VGG_TAPS:
            outs.append(x)
        k += 1
        if k == 13:
            break
    return outs


def alex_features(W, x):
    outs = []
    for k, (s, p, pool) in enumerate(ALEX_CONVS):
        x = relu(conv2d(x, W[f"features.{k}.weight"], W[f"features.{k}.bias"], s, (p, p, p, p)))
        outs.append(x)
        if pool:
            x = max_pool(x, 3, 2)
    return outs


def lpips(W, x, y, net):
    """x, y [N,3,H,W] in [-1,1] -> (total [N], per-layer [N,5])."""
    feats = vgg_features if net == "vgg" else alex_features
    sx = (x - LPIPS_SHIFT[None, :, None, None]) / LPIPS_SCALE[None, :, None, None]
    sy = (y - LPIPS_SHIFT[None, :, None, None]) / LPIPS_SCALE[None, :, None, None]
    layers = []
    for t, (f0, f1) in enumerate(zip(feats(W, sx.astype(np.float32)), feats(W, sy.astype(np.float32)))):
        n0 = f0 / (np.sqrt((f0 ** 2).sum(1, keepdims=True)) + 1e-10)
        n1 = f1 / (np.sqrt((f1 ** 2).sum(1, keepdims=True)) + 1e-10)
        d = (n0 - n1) ** 2
        lin = W[f"lin.{t}.weight"][0, :, 0, 0]
        layers.append(np.einsum("nchw,c->nhw", d, lin).mean(axis=(1, 2)))
    per = np.stack(layers, axis=1).astype(np.float32)
    return per.sum(1).astype(np.float32), per


# ------------------------------------------------------------- EfficientNet-Lite0

EFFNET_BLOCKS = [  # lukemelas BlockArgs for efficientnet-lite0 (no SE)
    dict(repeats=1, kernel=3, stride=1, expand=1, cin=32, cout=16),
    dict(repeats=2, kernel=3, stride=2, expand=6, cin=16, cout=24),
    dict(repeats=2, kernel=5, stride=2, expand=6, cin=24, cout=40),
    dict(repeats=3, kernel=3, stride=2, expand=6, cin=40, cout=80),
    dict(repeats=3, kernel=5, stride=1, expand=6, cin=80, cout=112),
    dict(repeats=4, kernel=5, stride=2, expand=6, cin=112, cout=192),
    dict(repeats=1, kernel=3, stride=1, expand=6, cin=192, cout=320),
]
EFFNET_BN_EPS = 1e-3


def same_pad(size, k, s):
    """TF 'SAME' padding (before, after) for one axis."""
    out = -(-size // s)
    total = max((out - 1) * s + k - size, 0)
    return total // 2, total - total // 2


def _bn(W, p, x):
    sc = W[p + ".weight"] / np.sqrt(W[p + ".running_var"] + EFFNET_BN_EPS)
    return (x - W[p + ".running_mean"][None, :, None, None]) * sc[None, :, None, None] + W[p + ".bias"][None, :, None, None]


def _relu6(x):
    return np.clip(x, 0, 6).astype(np.float32)


def _conv_same(x, w, s, groups=1):
    k = w.shape[-1]
    pt, pb = same_pad(x.shape[2], k, s)
    pl, pr = same_pad(x.shape[3], k, s)
    return conv2d(x, w, None, s, (pt, pb, pl, pr), groups)


def effnet_block_list():
    out = []
    for a in EFFNET_BLOCKS:
        for r in range(a["repeats"]):
            out.append(dict(kernel=a["kernel"], stride=a["stride"] if r == 0 else 1, expand=a["expand"],
                            cin=a["cin"] if r == 0 else a["cout"], cout=a["cout"]))
    return out


def effnet_forward(W, x):
    """x [N,3,224,224] normalised -> (pooled features [N,1280], logits [N,1000])."""
    x = _relu6(_bn(W, "_bn0", _conv_same(x, W["_conv_stem.weight"], 2)))
    for i, a in enumerate(effnet_block_list()):
        p = f"_blocks.{i}."
        inp = x
        if a["expand"] != 1:
            x = _relu6(_bn(W, p + "_bn0", _conv_same(x, W[p + "_expand_conv.weight"], 1)))
        x = _relu6(_bn(W, p + "_bn1", _conv_same(x, W[p + "_depthwise_conv.weight"], a["stride"], groups=x.shape[1])))
        x = _bn(W, p + "_bn2", _conv_same(x, W[p + "_project_conv.weight"], 1)).astype(np.float32)
        if a["stride"] == 1 and a["cin"] == a["cout"]:
            x = x + inp
    x = _relu6(_bn(W, "_bn1", _conv_same(x, W["_conv_head.weight"], 1)))
    feat = x.mean(axis=(2, 3)).astype(np.float32)
    logits = (feat @ W["_fc.weight"].T + W["_fc.bias"]).astype(np.float32)
    return feat, logits

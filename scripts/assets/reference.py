"""Produce golden outputs for the Rust tests into ASSETS/reference/.

  dinov2-ref.safetensors  input [1,3,224,224] (chelsea, ImageNet-normalised), output [1,257,384]
                          from onnxruntime on reference/dinov2-s-backbone.onnx, image_u8 [224,224,3],
                          pos_embed_224 [1,257,384]
  lpips-ref.safetensors   x, y [2,3,64,64] in [-1,1]; vgg [2], alex [2]; vgg_layers, alex_layers [2,5]
  effnet-ref.safetensors  input [2,3,224,224] ((u8-127)/128; chelsea, coffee), features [2,1280], logits [2,1000]
  effnet-ref.json         top-5 (index, label, softmax prob) for both photos

The photos reference/chelsea.png and reference/coffee.png are scikit-image's
sample images (CC0), put there by scripts/fetch-assets.

Preprocessing (both nets): PIL.Image.open(png).convert('RGB').resize((224, 224), Image.BICUBIC)
(the whole image, aspect ratio not kept; PIL's bicubic is antialiased when downscaling).

usage: reference.py ASSETS_DIR
"""
import json
import os
import sys

import numpy as np
from PIL import Image
from safetensors.numpy import load_file

import nn_numpy as nn
from common import write_json, write_safetensors

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)
CAT_CLASSES = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat


def load_rgb(path):
    return Image.open(path).convert("RGB")


def resize_u8(img, w, h):
    return np.asarray(img.resize((w, h), Image.BICUBIC), dtype=np.uint8)


def to_nchw(a):
    return np.ascontiguousarray(a.transpose(2, 0, 1)[None], dtype=np.float32)


def dinov2_ref(assets, ref, chelsea):
    import onnxruntime as ort

    u8 = resize_u8(chelsea, 224, 224)
    x = to_nchw(((u8.astype(np.float32) / 255.0) - IMAGENET_MEAN) / IMAGENET_STD)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    sess = ort.InferenceSession(os.path.join(ref, "dinov2-s-backbone.onnx"), so,
                                providers=["CPUExecutionProvider"])
    (out,) = sess.run(None, {"input_image": x})
    assert out.shape == (1, 257, 384), out.shape
    W = load_file(os.path.join(assets, "dinov2-s.safetensors"))
    pe = nn.dinov2_pos_embed(W, 16, 16)
    pe_err = float(np.abs(pe - W["pos_embed_224"]).max())
    mine = nn.dinov2_forward(W, x)
    err = float(np.abs(mine - out).max())
    cos = float((mine[0, 0] @ out[0, 0]) / np.linalg.norm(mine[0, 0]) / np.linalg.norm(out[0, 0]))
    print(f"dinov2: onnxruntime output {out.shape}, |numpy(converted weights) - ort|max = {err:.2e}, "
          f"CLS cosine {cos:.6f}; numpy bicubic pos-embed vs graph |diff|max = {pe_err:.2e}")
    if err > 1e-2 or pe_err > 1e-4:
        raise SystemExit("dinov2: converted weights do not reproduce the ONNX backbone")
    write_safetensors(os.path.join(ref, "dinov2-ref.safetensors"),
                      {"input": x, "output": out.astype(np.float32), "image_u8": u8,
                       "pos_embed_224": W["pos_embed_224"]},
                      {"image": "reference/chelsea.png", "preprocess": "PIL bicubic resize to 224x224, /255, ImageNet mean/std",
                       "producer": "onnxruntime %s, reference/dinov2-s-backbone.onnx" % ort.__version__,
                       "numpy_max_abs_diff": f"{err:.3e}"})
    return {"max_abs_diff_numpy_vs_ort": err, "pos_embed_bicubic_max_abs_diff": pe_err,
            "output_mean": float(out.mean()), "output_std": float(out.std()),
            "cls_first5": [float(v) for v in out[0, 0, :5]]}


def lpips_ref(assets, ref, chelsea, coffee):
    c = resize_u8(chelsea, 150, 100)  # (w, h)
    k = resize_u8(coffee, 96, 64)
    to_pm1 = lambda a: to_nchw(a.astype(np.float32) / 127.5 - 1.0)
    x0, y0 = to_pm1(c[18:82, 43:107]), to_pm1(c[21:85, 48:112])  # crop and a (3,5)-px shifted crop
    x1 = to_pm1(k[:, 16:80])
    noise = np.random.default_rng(0).standard_normal(x1.shape).astype(np.float32) * 0.1
    y1 = np.clip(x1 + noise, -1.0, 1.0).astype(np.float32)
    x, y = np.concatenate([x0, x1]), np.concatenate([y0, y1])
    out = {"x": x, "y": y}
    summary = {}
    for net, fname in (("vgg", "lpips-vgg.safetensors"), ("alex", "lpips-alex.safetensors")):
        W = load_file(os.path.join(assets, fname))
        tot, per = nn.lpips(W, x, y, net)
        same, _ = nn.lpips(W, x, x, net)
        assert np.abs(same).max() < 1e-6
        out[net], out[net + "_layers"] = tot, per
        summary[net] = [float(v) for v in tot]
    write_safetensors(os.path.join(ref, "lpips-ref.safetensors"), out,
                      {"pairs": "0: chelsea 64x64 crop vs crop shifted by (3,5) px; 1: coffee crop vs + N(0,0.1) noise (numpy PCG64 seed 0), clipped",
                       "range": "[-1,1] NCHW", "producer": "scripts/assets/nn_numpy.py lpips()"})
    print(f"lpips: vgg {summary['vgg']}, alex {summary['alex']}")
    return summary


def effnet_ref(assets, ref, photos, labels):
    W = load_file(os.path.join(assets, "efficientnet-lite0.safetensors"))
    xs = []
    for img in photos.values():
        u8 = resize_u8(img, 224, 224)
        xs.append(to_nchw((u8.astype(np.float32) - 127.0) / 128.0))
    x = np.concatenate(xs)
    feat, logits = nn.effnet_forward(W, x)
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    res = {}
    for i, name in enumerate(photos):
        top = np.argsort(-probs[i])[:5]
        res[name] = [{"index": int(j), "label": labels[int(j)], "prob": round(float(probs[i, j]), 5)} for j in top]
        print(f"effnet top-5 {name}: " + "; ".join(f"{r['index']} {r['label'].split(',')[0]} {r['prob']:.3f}" for r in res[name]))
    if not any(r["index"] in CAT_CLASSES for r in res["chelsea"]):
        raise SystemExit("effnet: no cat class (281-285) in chelsea's top-5: conversion is broken")
    write_safetensors(os.path.join(ref, "effnet-ref.safetensors"),
                      {"input": x, "features": feat, "logits": logits},
                      {"images": "chelsea, coffee", "preprocess": "PIL bicubic resize to 224x224, (u8-127)/128"})
    write_json(os.path.join(ref, "effnet-ref.json"), {
        "weights": "efficientnet-lite0.safetensors",
        "images": {n: f"reference/{n}.png" for n in photos},
        "batch_order": list(photos),
        "preprocess": "PIL Image.resize((224,224), BICUBIC) of the whole RGB image, then (u8 - 127) / 128, NCHW",
        "tensors": "effnet-ref.safetensors: input [2,3,224,224], features [2,1280] (after head relu6 + global mean), logits [2,1000]",
        "top5": res,
    })
    return res


def main():
    assets = sys.argv[1]
    ref = os.path.join(assets, "reference")
    chelsea = load_rgb(os.path.join(ref, "chelsea.png"))
    coffee = load_rgb(os.path.join(ref, "coffee.png"))
    with open(os.path.join(assets, "imagenet-classes.json")) as f:
        labels = json.load(f)
    d = dinov2_ref(assets, ref, chelsea)
    l = lpips_ref(assets, ref, chelsea, coffee)
    e = effnet_ref(assets, ref, {"chelsea": chelsea, "coffee": coffee}, labels)
    write_json(os.path.join(ref, "summary.json"), {"dinov2": d, "lpips": l, "effnet_top5": e})


if __name__ == "__main__":
    main()

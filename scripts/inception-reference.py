#!/usr/bin/env python3
"""pytorch-fid's own InceptionV3 (FID variant) with seeded random weights, for the
parity test of eostok's candle port (models/src/nets/inception.rs). Writes into
DIR (default: $EOSTOK_ASSETS or ~/.cache/eostok, then inception-parity/):

  weights.safetensors   the random state dict (the layout of pt_inception-2015-12-05)
  io.safetensors        input images in (0, 1) [B,3,H,W], pool3 features [B,2048]
                        (pytorch-fid's InceptionV3, resize_input and normalize_input
                        on) and fc logits [B,1008]

Needs torch, torchvision, pytorch-fid and safetensors (pip); the real FID weights are
not needed (pytorch-fid's download is replaced by the random net). Run:
  python3 -m venv /tmp/tv && /tmp/tv/bin/pip install torch torchvision pytorch-fid==0.3.0 safetensors
  /tmp/tv/bin/python scripts/inception-reference.py
then `cargo test --release -p eostok-train --test eval inception` compares.
"""
import os
import sys

import torch
from safetensors.torch import save_file
import pytorch_fid.inception as pfi


def random_fid_inception():
    """fid_inception_v3() without the download: same modules, seeded random weights and
    batch-norm statistics (so the folding of BN into the convs is exercised)."""
    net = pfi._inception_v3(num_classes=1008, aux_logits=False, weights=None)
    net.Mixed_5b = pfi.FIDInceptionA(192, pool_features=32)
    net.Mixed_5c = pfi.FIDInceptionA(256, pool_features=64)
    net.Mixed_5d = pfi.FIDInceptionA(288, pool_features=64)
    net.Mixed_6b = pfi.FIDInceptionC(768, channels_7x7=128)
    net.Mixed_6c = pfi.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6d = pfi.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6e = pfi.FIDInceptionC(768, channels_7x7=192)
    net.Mixed_7b = pfi.FIDInceptionE_1(1280)
    net.Mixed_7c = pfi.FIDInceptionE_2(2048)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, m in net.named_modules():
            if isinstance(m, torch.nn.Conv2d):
                fan_in = m.in_channels * m.kernel_size[0] * m.kernel_size[1]
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (2.0 / fan_in) ** 0.5)
            elif isinstance(m, torch.nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(0.5 + torch.rand(n, generator=g))
                m.bias.copy_(0.2 * torch.randn(n, generator=g))
                m.running_mean.copy_(0.2 * torch.randn(n, generator=g))
                m.running_var.copy_(0.5 + torch.rand(n, generator=g))
            elif isinstance(m, torch.nn.Linear):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (1.0 / m.in_features) ** 0.5)
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
    return net.eval()


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("EOSTOK_ASSETS", os.path.expanduser("~/.cache/eostok"))
    out = os.path.join(root, "inception-parity")
    os.makedirs(out, exist_ok=True)
    inception = random_fid_inception()
    pfi.fid_inception_v3 = lambda: inception  # InceptionV3 builds its blocks from this
    model = pfi.InceptionV3([pfi.InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).eval()
    g = torch.Generator().manual_seed(1)
    x = torch.rand((2, 3, 64, 64), generator=g)
    with torch.no_grad():
        feat = model(x)[0].squeeze(-1).squeeze(-1)
        logits = inception.fc(feat)
    state = {k: v.contiguous() for k, v in inception.state_dict().items() if not k.endswith("num_batches_tracked")}
    save_file(state, os.path.join(out, "weights.safetensors"))
    save_file({"images01": x.contiguous(), "features": feat.contiguous(), "logits": logits.contiguous()},
              os.path.join(out, "io.safetensors"))
    print(f"wrote {out}: {len(state)} tensors; features mean |f| {feat.abs().mean():.4f}, torch {torch.__version__}")


if __name__ == "__main__":
    main()

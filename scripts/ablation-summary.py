#!/usr/bin/env python3
"""Summarise runs/ablation/<arm>-s<seed>/ (written by scripts/ablation) as a
markdown table: mean ± half-range over seeds per arm."""
import json, os, re, sys
from collections import defaultdict

root = sys.argv[1] if len(sys.argv) > 1 else "runs/ablation"

def load(p):
    try:
        with open(p) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None

def last_metrics(d, k=5):
    try:
        lines = [json.loads(l) for l in open(os.path.join(d, "metrics.jsonl")) if l.strip()]
    except OSError:
        return {}
    tail = lines[-k:]
    out = {}
    for key in ("ar_top1", "codebook_usage", "perplexity", "l2", "ntp"):
        vals = [m[key] for m in tail if key in m]
        if vals:
            out[key] = sum(vals) / len(vals)
    return out

arms = defaultdict(dict)
for name in sorted(os.listdir(root)):
    m = re.fullmatch(r"(.+)-s(\d+)", name)
    d = os.path.join(root, name)
    if not m or not os.path.isfile(os.path.join(d, "eval.json")):
        continue
    row = {}
    fd = load(os.path.join(d, "fd.json")) or {}
    for met in fd.get("metrics", []):
        row[met["fd_name"]] = met["fd"]
        if met.get("features") == "effnet-lite0" or "effnet" in met["fd_name"]:
            row["precision"], row["recall"] = met.get("precision"), met.get("recall")
    cl = load(os.path.join(d, "classify.json"))
    if cl:
        row["class_acc"] = cl["accuracy"]
    rc = load(os.path.join(d, "recon.json"))
    if rc:
        row["recon_l2"], row["recon_psnr"], row["recon_lpips"] = rc["l2"], rc["psnr"], rc.get("lpips")
        row["test_usage"], row["test_ppl"] = rc["codebook_usage"], rc["perplexity"]
    lm = last_metrics(d)
    row["ar_top1"] = lm.get("ar_top1")
    arms[m.group(1)][int(m.group(2))] = row

cols = [("FD_effnet-lite0", "FD_effnet-lite0", 2), ("FD_dinov2", "FD_dinov2", 1), ("class_acc", "class acc", 3),
        ("precision", "precision", 3), ("recall", "recall", 3), ("test_usage", "codebook usage", 3),
        ("test_ppl", "perplexity", 1), ("ar_top1", "AR top-1", 3), ("recon_l2", "recon L2", 4), ("recon_psnr", "PSNR", 2)]

def cell(vals, nd):
    vals = [v for v in vals if v is not None]
    if not vals:
        return "–"
    mean = sum(vals) / len(vals)
    if len(vals) == 1:
        return f"{mean:.{nd}f}"
    return f"{mean:.{nd}f} ± {(max(vals) - min(vals)) / 2:.{nd}f}"

print("| arm | seeds | " + " | ".join(c[1] for c in cols) + " |")
print("|---|---|" + "---|" * len(cols))
for arm, seeds in arms.items():
    cells = [cell([seeds[s].get(c[0]) for s in seeds], c[2]) for c in cols]
    print(f"| {arm} | {len(seeds)} | " + " | ".join(cells) + " |")
for name, what in [("floor-fmnist.json", "Fashion-MNIST test vs train"), ("floor-emoji.json", "emoji, two disjoint halves")]:
    floor = load(os.path.join(root, name))
    if floor:
        parts = [f"{m['fd_name']} {m['fd']:.2f}" for m in floor.get("metrics", [])]
        n = min(s.get("n", 0) for s in (floor.get("real", {}), floor.get("fake", {}))) or os.environ.get("N", "?")
        print(f"\nReal floor ({what}, n={n}): " + ", ".join(parts))
print("\nmean ± half the range over seeds; codebook usage/perplexity/recon on 500 test images; AR top-1 = mean of the last 5 logged training steps.")

#!/usr/bin/env python3
"""Assembles benches/RESULTS.md from the tables of one run:
    python3 benches/make-results.py [DIR]
DIR: bench-data/device (scripts/device-bench, the default) or bench-data/results
(benches/results.sh on this machine)."""
import os, subprocess, glob, sys
root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
res = sys.argv[1] if len(sys.argv) > 1 else os.path.join(root, "bench-data", "device")
def block(*names):
    out = ""
    for name in names:
        p = os.path.join(res, name + ".txt")
        if os.path.exists(p) and os.path.getsize(p) > 0:
            out += "```\n" + open(p).read().rstrip() + "\n```\n"
    return out or "_(not run in this session: see below)_\n"
commit = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
ver = "; ".join(l.strip() for l in open(os.path.join(root, "bench-data/llama.cpp/VERSION")) if l.strip()) if os.path.exists(os.path.join(root, "bench-data/llama.cpp/VERSION")) else "absent"
body = open(os.path.join(root, "benches", "RESULTS.head.md")).read()
out = body.format(commit=commit, llama_version=ver,
    roofline=block("roofline"), vs_llama_t1=block("vs-llama-t1"), vs_llama_t2=block("vs-llama-t2"),
    decode="".join(block(f"decode-B-{t}") for t in ["q4_0", "q8_0", "f16"]), vs_candle=block("vs-candle"),
    kernels=block("kernels"), image=block("image", "image-q4_0", "image-B"), memory=block("memory"),
    pool="".join(block(n) for n in ["decode-B-q4_0-rayon", "decode-B-q8_0-rayon", "image-rayon"]))
open(os.path.join(root, "benches", "RESULTS.md"), "w").write(out)

#!/usr/bin/env python3
"""Assembles benches/RESULTS.md from bench-data/results/*.txt (written by benches/results.sh)."""
import os, subprocess, glob
root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
res = os.path.join(root, "bench-data", "results")
def block(name):
    p = os.path.join(res, name + ".txt")
    if not os.path.exists(p) or os.path.getsize(p) == 0:
        return "_(not run in this session: see below)_\n"
    return "```\n" + open(p).read().rstrip() + "\n```\n"
commit = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
ver = "; ".join(l.strip() for l in open(os.path.join(root, "bench-data/llama.cpp/VERSION")) if l.strip()) if os.path.exists(os.path.join(root, "bench-data/llama.cpp/VERSION")) else "absent"
body = open(os.path.join(root, "benches", "RESULTS.head.md")).read()
out = body.format(commit=commit, llama_version=ver,
    roofline=block("roofline"), vs_llama_t1=block("vs-llama-t1"), vs_llama_t2=block("vs-llama-t2"),
    decode="".join(block(f"decode-B-{t}") for t in ["q4_0", "q8_0", "f16"]), vs_candle=block("vs-candle"),
    kernels=block("kernels"), image=block("image-q4_0") + block("image-B"), memory=block("memory"))
open(os.path.join(root, "benches", "RESULTS.md"), "w").write(out)

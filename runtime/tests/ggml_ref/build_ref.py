#!/usr/bin/env python3
"""Builds a small C program from ggml's own reference quantizers, for the opt-in
tests/ggml_c_reference.rs check that our Rust ports are bit-exact.

usage: build_ref.py <ggml checkout> <output binary>
(e.g. a checkout of github.com/ggml-org/ggml; needs gcc with _Float16 support)
"""
import os
import re
import subprocess
import sys
import tempfile

ggml, out = sys.argv[1], sys.argv[2]


def read(path):
    text = open(os.path.join(ggml, path)).read()
    # One branch of this #ifdef has an unbalanced loop header; keep the normal branch.
    return re.sub(r"#ifdef HAVE_BUGGY_APPLE_LINKER.*?#else\n(.*?)#endif\n", r"\1", text, flags=re.S)


def function(text, signature):
    start = text.index(signature)
    depth, i = 0, text.index("{", start)
    while True:
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            return text[start : i + 1]
        i += 1


quants = read("src/ggml-quants.c")
functions = [
    function(quants, s)
    for s in [
        "static inline int nearest_int(",
        "static float make_qx_quants(",
        "static float make_qkx2_quants(",
        "static inline void get_scale_min_k4(",
    ]
    + [f"void quantize_row_{t}_ref(" for t in ["q4_0", "q4_1", "q8_0", "q8_1", "q4_K", "q6_K", "q8_K"]]
]

prelude = r"""
#include <assert.h>
#include <float.h>
#include <math.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#define GGML_RESTRICT restrict
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))
#define GROUP_MAX_EPS 1e-15f
static inline uint16_t f2h(float f) { _Float16 h = (_Float16)f; uint16_t u; memcpy(&u, &h, 2); return u; }
static inline float h2f(uint16_t u) { _Float16 h; memcpy(&h, &u, 2); return (float)h; }
#define GGML_FP32_TO_FP16(x) f2h(x)
#define GGML_FP16_TO_FP32(x) h2f(x)
#define GGML_COMMON_DECL_C
#include "ggml-common.h"
"""

main = r"""
/* usage: ref <type> <n> <in.f32> <out.bin>: quantizes n floats with ggml's *_ref quantizer */
#define CASE(name, block, qk) \
    if (!strcmp(ty, #name)) { sz = n / qk * sizeof(block); y = calloc(1, sz); quantize_row_##name##_ref(x, y, n); }
int main(int argc, char **argv) {
    if (argc != 5) return 2;
    const char *ty = argv[1];
    long n = atol(argv[2]);
    float *x = malloc(n * 4);
    FILE *f = fopen(argv[3], "rb");
    if (!f || fread(x, 4, n, f) != (size_t)n) return 3;
    fclose(f);
    size_t sz = 0; void *y = NULL;
    CASE(q4_0, block_q4_0, 32) CASE(q4_1, block_q4_1, 32) CASE(q8_0, block_q8_0, 32)
    CASE(q8_1, block_q8_1, 32) CASE(q4_K, block_q4_K, 256) CASE(q6_K, block_q6_K, 256)
    CASE(q8_K, block_q8_K, 256)
    if (!y) return 2;
    f = fopen(argv[4], "wb");
    fwrite(y, 1, sz, f);
    fclose(f);
    return 0;
}
"""

with tempfile.TemporaryDirectory() as tmp:
    c = os.path.join(tmp, "ref.c")
    open(c, "w").write(prelude + "\n\n".join(functions) + main)
    # No FMA contraction: the Rust ports round every multiply and add separately.
    subprocess.check_call(["gcc", "-O2", "-ffp-contract=off", "-std=gnu11", "-w", "-I", os.path.join(ggml, "src"), c, "-o", out, "-lm"])

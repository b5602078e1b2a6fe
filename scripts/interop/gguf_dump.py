#!/usr/bin/env python3
"""Dump a GGUF file with the reference Python reader (PyPI `gguf`, gguf-py).

usage: gguf_dump.py IN.gguf OUT_DIR

Writes OUT_DIR/index.json with the metadata, every tensor's name, shape
(ggml order, ne[0] first), type name and byte size, and OUT_DIR/<i>.f32 with
the tensor dequantized by gguf-py (raw little-endian float32). The Rust
interop tests compare all of it with our reader and our dequantization.
"""
import json
import os
import sys

import numpy as np
import gguf


def field_value(field):
    t = field.types[0]
    if t == gguf.GGUFValueType.STRING:
        return bytes(field.parts[field.data[0]]).decode("utf-8")
    if t == gguf.GGUFValueType.ARRAY:
        if field.types[1] == gguf.GGUFValueType.STRING:
            return [bytes(field.parts[i]).decode("utf-8") for i in field.data]
        return [field.parts[i].tolist()[0] for i in field.data]
    return field.parts[field.data[0]].tolist()[0]


def main():
    src, out = sys.argv[1], sys.argv[2]
    os.makedirs(out, exist_ok=True)
    reader = gguf.GGUFReader(src)
    meta = {k: field_value(f) for k, f in reader.fields.items() if not k.startswith("GGUF.")}
    tensors = []
    for i, t in enumerate(reader.tensors):
        values = gguf.quants.dequantize(t.data, t.tensor_type).astype("<f4")
        values.tofile(os.path.join(out, f"{i}.f32"))
        tensors.append({
            "name": t.name,
            "ne": [int(x) for x in t.shape],
            "type": t.tensor_type.name,
            "n_bytes": int(t.n_bytes),
            "file": f"{i}.f32",
        })
    with open(os.path.join(out, "index.json"), "w") as f:
        json.dump({"gguf_version": int(reader.fields["GGUF.version"].parts[-1][0]), "metadata": meta, "tensors": tensors}, f)


if __name__ == "__main__":
    main()

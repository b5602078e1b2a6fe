"""Helpers shared by the asset converters (numpy + safetensors only)."""
import hashlib
import json
import os
import struct

import numpy as np
from safetensors.numpy import load_file


def sha256_file(path, bufsize=1 << 20):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(bufsize)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


_ST_DTYPES = {np.dtype(np.float32): "F32", np.dtype(np.float16): "F16", np.dtype(np.int64): "I64",
              np.dtype(np.int32): "I32", np.dtype(np.uint8): "U8", np.dtype(np.int8): "I8",
              np.dtype(np.bool_): "BOOL"}


def write_safetensors(path, tensors, metadata=None):
    """Write a .safetensors file deterministically (byte-identical on every run).

    The safetensors library serialises `__metadata__` from a hash map, so its
    key order (and the file's sha256) changes from run to run; this writer keeps
    the tensors in the given order and the metadata keys sorted.  Tensors are
    contiguous little-endian; the header is space-padded to a multiple of 8.
    The result is re-read with safetensors.numpy.load_file as a check.
    """
    header, blobs, off = {}, [], 0
    if metadata:
        header["__metadata__"] = {k: (v if isinstance(v, str) else json.dumps(v)) for k, v in sorted(metadata.items())}
    # widest dtypes first (stable), so every tensor's data stays aligned to its item size
    order = sorted(tensors, key=lambda k: -np.asarray(tensors[k]).dtype.itemsize)
    for k in order:
        v = np.ascontiguousarray(tensors[k])
        if v.dtype not in _ST_DTYPES:
            raise TypeError(f"{k}: unsupported dtype {v.dtype}")
        b = v.astype(v.dtype.newbyteorder("<"), copy=False).tobytes()
        header[k] = {"dtype": _ST_DTYPES[v.dtype], "shape": list(v.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)
    back = load_file(tmp)
    for k, v in tensors.items():
        if back[k].shape != tuple(np.shape(v)) or not np.array_equal(back[k], v):
            raise RuntimeError(f"{path}: {k} did not round-trip")
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def write_json(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=False)
        f.write("\n")
    os.replace(tmp, path)


def summarize(tensors, limit=None):
    items = list(tensors.items())
    if limit:
        items = items[:limit]
    return {k: list(v.shape) for k, v in items}

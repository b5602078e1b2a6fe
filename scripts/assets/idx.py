"""Minimal IDX (MNIST / Fashion-MNIST) reader/writer, gzip aware.

Format: big-endian magic (0x00 0x00 dtype ndim; 0x08 = u8, so 2051 for
3-d images and 2049 for 1-d labels), ndim big-endian u32 dims, raw data.

usage: idx.py check FILE.gz EXPECTED_SHAPE  (e.g. 60000x28x28)
"""
import gzip
import struct
import sys

import numpy as np

_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
           0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def read_idx(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    zero, code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or code not in _DTYPES:
        raise ValueError(f"{path}: bad IDX magic")
    dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    dt = np.dtype(_DTYPES[code])
    body = data[4 + 4 * ndim:]
    if len(body) != int(np.prod(dims)) * dt.itemsize:
        raise ValueError(f"{path}: size mismatch for dims {dims}")
    return np.frombuffer(body, dt).reshape(dims)


def write_idx_gz(path, arr):
    """Write a u8 array as gzipped IDX, deterministically (mtime 0, no file name)."""
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    header = struct.pack(">HBB", 0, 0x08, arr.ndim) + struct.pack(">" + "I" * arr.ndim, *arr.shape)
    with open(path, "wb") as raw:
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as f:
            f.write(header + arr.tobytes())


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] != "check":
        raise SystemExit(__doc__)
    a = read_idx(sys.argv[2])
    want = tuple(int(x) for x in sys.argv[3].split("x"))
    if a.shape != want:
        raise SystemExit(f"{sys.argv[2]}: shape {a.shape}, expected {want}")

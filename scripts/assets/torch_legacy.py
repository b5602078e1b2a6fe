"""Numpy-only reader for legacy (pre-zip, torch < 1.6) ``torch.save`` files.

Layout: magic pickle, protocol pickle, sys-info pickle, the state-dict pickle
(tensors are persistent references to storages), the list of storage keys, then
for each storage an ``<i64 numel>`` followed by the raw little-endian data.
Tensors may be views with arbitrary strides, so they are rebuilt with
``as_strided`` and copied to contiguous arrays (ignoring strides gives garbage).
"""
import collections
import pickle
import struct

import numpy as np

_DT = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}
_MAGIC = 0x1950A86A20F9469CFC6C


class _Storage:
    def __init__(self, key, dtype):
        self.key, self.dtype = key, dtype


def _rebuild(storage, offset, size, stride, *_rest):
    return (storage, offset, tuple(size), tuple(stride))


class _Unpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if name in ("_rebuild_tensor_v2", "_rebuild_tensor"):
            return _rebuild
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module == "torch" and name in _DT:
            return name
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")

    def persistent_load(self, pid):
        # ('storage', storage_type, key, location, numel[, view_metadata])
        return _Storage(pid[2], _DT[pid[1]])


def load_legacy_state_dict(path):
    """Return an ordered dict name -> contiguous numpy array."""
    with open(path, "rb") as f:
        magic = pickle.load(f)
        if magic != _MAGIC:
            raise ValueError(f"{path}: not a legacy torch file (magic {magic!r})")
        pickle.load(f)  # protocol version
        pickle.load(f)  # sys info
        sd = _Unpickler(f).load()
        keys = pickle.load(f)
        dtypes = {}
        for st, _off, _size, _stride in sd.values():
            dtypes[st.key] = st.dtype
        raw = {}
        for k in keys:
            (n,) = struct.unpack("<q", f.read(8))
            dt = np.dtype(dtypes[k])
            buf = f.read(n * dt.itemsize)
            if len(buf) != n * dt.itemsize:
                raise ValueError(f"{path}: truncated storage {k}")
            raw[k] = np.frombuffer(buf, dt)
    out = collections.OrderedDict()
    for name, (st, off, size, stride) in sd.items():
        b = raw[st.key]
        if size:
            v = np.lib.stride_tricks.as_strided(
                b[off:], size, tuple(s * b.itemsize for s in stride)
            )
        else:
            v = b[off:off + 1].reshape(())
        out[name] = np.ascontiguousarray(v).copy()
    return out

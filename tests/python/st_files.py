"""A minimal safetensors reader/writer in numpy for the tests (independent of the code under test).

Tensors are (safetensors dtype, numpy array); BF16 arrays hold uint16 bits, F8_E4M3 uint8 bits.
"""
import json
import struct

import numpy as np

_NUMPY = {
    "BOOL": np.bool_, "U8": np.uint8, "I8": np.int8, "I16": np.int16, "U16": np.uint16, "I32": np.int32,
    "I64": np.int64, "F16": np.float16, "BF16": np.uint16, "F32": np.float32, "F64": np.float64, "F8_E4M3": np.uint8,
}


def read(path):
    """Returns ({name: (dtype, array)}, metadata)."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    meta = header.pop("__metadata__", {})
    base = 8 + n
    out = {}
    for name, e in header.items():
        b, end = e["data_offsets"]
        arr = np.frombuffer(data[base + b:base + end], dtype=_NUMPY[e["dtype"]]).reshape(e["shape"]).copy()
        out[name] = (e["dtype"], arr)
    return out, meta


def write(path, tensors, metadata=None):
    header = {}
    blobs = []
    offset = 0
    for name, (dtype, arr) in tensors.items():
        raw = np.ascontiguousarray(arr, dtype=_NUMPY[dtype]).tobytes()
        header[name] = {"dtype": dtype, "shape": list(np.shape(arr)), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    if metadata:
        header["__metadata__"] = metadata
    text = json.dumps(header).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for raw in blobs:
            f.write(raw)

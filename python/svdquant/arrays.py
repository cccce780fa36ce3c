"""bfloat16 for numpy, which has no such dtype: arrays of its bits (uint16).

The extension takes a uint16 array with dtype="bfloat16" (Layer.forward) and returns bfloat16
results, tensors and weights as uint16 bits; these two helpers convert to and from float32
(round to nearest even, as svdquant and torch round). An ml_dtypes.bfloat16 array goes in as
`layer(bfloat16_bits(x), dtype="bfloat16")` (a view, no copy).
"""
import numpy as np


def bfloat16_bits(a):
    """float32 (or anything numpy converts to it) -> uint16 bits of bfloat16, round to nearest even."""
    a = np.asarray(a)
    if a.dtype.name == "bfloat16":  # ml_dtypes
        return a.view(np.uint16)
    f = np.ascontiguousarray(a, dtype=np.float32)
    u = f.view(np.uint32).astype(np.uint64)
    nan = np.isnan(f)
    rounded = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    out = rounded.astype(np.uint16)
    out[nan] = ((u[nan] >> 16) | 0x40).astype(np.uint16)  # quiet NaN, sign kept
    return out


def from_bfloat16_bits(bits):
    """uint16 bits of bfloat16 -> float32 (exact)."""
    b = np.asarray(bits)
    if b.dtype.name == "bfloat16":
        b = b.view(np.uint16)
    if b.dtype != np.uint16:
        raise TypeError(f"from_bfloat16_bits: expected uint16 bits, got {b.dtype}")
    return (b.astype(np.uint32) << 16).view(np.float32)

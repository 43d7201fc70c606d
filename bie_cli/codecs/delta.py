"""Delta coding of integer sequences, wrapping modulo 2**bits.

``encode(values)[0] = values[0]`` and ``encode(values)[i] = values[i] -
values[i-1]`` computed on the unsigned view, so every integer dtype round
trips bit-exactly (overflow wraps both ways). Sorted indices, position ids
and counters become small or constant, which zstd and rle then squeeze.
"""

from __future__ import annotations

import numpy as np

_UNSIGNED = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}


def encode(values: np.ndarray) -> np.ndarray:
    flat = np.ascontiguousarray(values).reshape(-1)
    unsigned = flat.view(_UNSIGNED[flat.dtype.itemsize])
    out = np.empty_like(unsigned)
    if unsigned.size:
        out[0] = unsigned[0]
        np.subtract(unsigned[1:], unsigned[:-1], out=out[1:])
    return out.view(flat.dtype)


def decode(deltas: np.ndarray) -> np.ndarray:
    flat = np.ascontiguousarray(deltas).reshape(-1)
    unsigned = flat.view(_UNSIGNED[flat.dtype.itemsize])
    # dtype= keeps the sum in the element width, so it wraps like the encoder
    return np.cumsum(unsigned, dtype=unsigned.dtype).view(flat.dtype)

"""Run-length coding of fixed-size elements, with literal escapes.

Byte layout: a sequence of tokens, read until ``count`` elements are out::

    varint (length << 1) | 1, then one element (itemsize bytes)   a run
    varint (length << 1),     then length elements                a literal

``varint`` is unsigned LEB128; ``length >= 1``; the tokens must produce
exactly ``count`` elements and use every byte. Elements compare as bytes, so
NaN payloads and -0.0 are just values. Data with no runs becomes one literal:
``itemsize * count`` plus a varint (at most 10 bytes).
"""

from __future__ import annotations

import numpy as np

from . import _jit


def _element_keys(data: np.ndarray, itemsize: int) -> np.ndarray:
    """A view in which equal elements compare equal (rows for itemsizes above 8)."""
    if itemsize in (1, 2, 4, 8):
        return data.view({1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}[itemsize])
    if itemsize % 8 == 0:
        return data.view(np.uint64).reshape(-1, itemsize // 8)
    return data.reshape(-1, itemsize)


def default_min_run(itemsize: int) -> int:
    """Shortest run worth a token: a run costs a varint and one element, and splits a literal."""
    return max(2, -(-4 // itemsize) + 1)


def encode(data: np.ndarray, itemsize: int, min_run: int | None = None) -> bytes:
    """``data``: uint8 array of n * itemsize bytes."""
    _rle_numba = _jit.kernels("_rle_numba")  # through _jit: numba without its SciPy probe

    data = np.ascontiguousarray(data, dtype=np.uint8).reshape(-1)
    count = data.size // itemsize
    if count == 0:
        return b""
    keys = _element_keys(data, itemsize)
    changed = keys[1:] != keys[:-1]
    if changed.ndim == 2:
        changed = changed.any(axis=1)
    run_starts = np.flatnonzero(np.concatenate(([True], changed)))
    run_lengths = np.diff(np.append(run_starts, count))
    return _rle_numba.encode(data, itemsize, run_starts, run_lengths, min_run or default_min_run(itemsize)).tobytes()


def decode(payload: bytes | memoryview, count: int, itemsize: int) -> np.ndarray:
    """Inverse of :func:`encode`: ``count * itemsize`` bytes, or ``ValueError``."""
    _rle_numba = _jit.kernels("_rle_numba")

    raw = np.frombuffer(payload, dtype=np.uint8)
    out = np.empty(count * itemsize, dtype=np.uint8)
    if count == 0:
        if raw.size:
            raise ValueError("rle payload has bytes but no elements")
        return out
    if _rle_numba.decode(raw, count, itemsize, out) != 0:
        raise ValueError("rle payload is corrupt (bad token, overrun or trailing bytes)")
    return out

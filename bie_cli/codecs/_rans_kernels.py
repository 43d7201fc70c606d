"""Numba kernels for :mod:`bie_cli.codecs.static_rans` (imported lazily: numba is slow to import).

The coder is Fabian Giesen's byte-wise rANS (``rans_byte.h``, public domain):
32-bit state in [L, 256*L) with L = 2**23, renormalised a byte at a time,
division replaced by a reciprocal multiply. Every value fits in int64, so no
unsigned arithmetic (which numba would promote to float) is needed.
"""

from __future__ import annotations

import numpy as np
from numba import njit

RANS_L = 1 << 23


@njit(nogil=True, cache=True)
def encode(symbols, freq, start, scale_bits):  # pragma: no cover - compiled
    n_sym = freq.shape[0]
    x_max = np.zeros(n_sym, dtype=np.int64)
    rcp = np.zeros(n_sym, dtype=np.int64)
    rcp_shift = np.zeros(n_sym, dtype=np.int64)
    bias = np.zeros(n_sym, dtype=np.int64)
    cmpl = np.zeros(n_sym, dtype=np.int64)
    total = np.int64(1) << scale_bits
    for s in range(n_sym):
        f = freq[s]
        if f == 0:
            continue
        x_max[s] = ((RANS_L >> scale_bits) << 8) * f
        cmpl[s] = total - f
        if f < 2:
            rcp[s] = (np.int64(1) << 32) - 1
            rcp_shift[s] = 0
            bias[s] = start[s] + total - 1
        else:
            shift = 0
            while f > (np.int64(1) << shift):
                shift += 1
            rcp[s] = ((np.int64(1) << (shift + 31)) + f - 1) // f
            rcp_shift[s] = shift - 1
            bias[s] = start[s]
    n = symbols.shape[0]
    # each symbol emits at most 2 bytes when freq >= 1 and scale_bits <= 15
    out = np.empty(2 * n + 8, dtype=np.uint8)
    pos = out.shape[0]
    x = np.int64(RANS_L)
    for i in range(n - 1, -1, -1):
        s = symbols[i]
        xm = x_max[s]
        while x >= xm:
            pos -= 1
            out[pos] = x & 0xFF
            x >>= 8
        q = ((x * rcp[s]) >> 32) >> rcp_shift[s]
        x = x + bias[s] + q * cmpl[s]
    for _ in range(4):
        pos -= 1
        out[pos] = x & 0xFF
        x >>= 8
    return out[pos:].copy()


@njit(nogil=True, cache=True)
def decode(stream, count, freq, start, lut, scale_bits):  # pragma: no cover - compiled
    """Returns (symbols, status): status 0 ok, 1 truncated, 2 trailing bytes or bad final state."""
    out = np.empty(count, dtype=np.uint8)
    n = stream.shape[0]
    if n < 4:
        return out, 1
    x = np.int64(0)
    for k in range(4):
        x = (x << 8) | np.int64(stream[k])
    pos = 4
    mask = (np.int64(1) << scale_bits) - 1
    for i in range(count):
        slot = x & mask
        s = lut[slot]
        out[i] = s
        x = freq[s] * (x >> scale_bits) + slot - start[s]
        while x < RANS_L:
            if pos >= n:
                return out, 1
            x = (x << 8) | np.int64(stream[pos])
            pos += 1
    if pos != n or x != RANS_L:
        return out, 2
    return out, 0


@njit(nogil=True, cache=True)
def histogram(symbols):  # pragma: no cover - compiled
    counts = np.zeros(256, dtype=np.int64)
    for i in range(symbols.shape[0]):
        counts[symbols[i]] += 1
    return counts

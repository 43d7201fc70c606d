"""Numba kernels for :mod:`bie_cli.codecs.rle` (imported lazily)."""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(inline="always")
def _put_varint(out, pos, value):  # pragma: no cover - compiled
    while value >= 0x80:
        out[pos] = (value & 0x7F) | 0x80
        pos += 1
        value >>= 7
    out[pos] = value
    return pos + 1


@njit(nogil=True, cache=True)
def encode(data, itemsize, run_starts, run_lengths, min_run):  # pragma: no cover - compiled
    """Tokens for the runs of ``data`` (n * itemsize bytes): runs >= min_run become
    run tokens, shorter ones are gathered into literal tokens."""
    n_runs = run_starts.shape[0]
    out = np.empty(data.shape[0] + 10 * (n_runs + 1), dtype=np.uint8)
    pos = 0
    literal_start = 0  # first element of the pending literal
    literal_count = 0
    for r in range(n_runs + 1):
        is_run = r < n_runs and run_lengths[r] >= min_run
        if (is_run or r == n_runs) and literal_count > 0:
            pos = _put_varint(out, pos, np.int64(literal_count) << 1)
            first = literal_start * itemsize
            size = literal_count * itemsize
            out[pos : pos + size] = data[first : first + size]
            pos += size
            literal_count = 0
        if r == n_runs:
            break
        if is_run:
            pos = _put_varint(out, pos, (np.int64(run_lengths[r]) << 1) | 1)
            first = run_starts[r] * itemsize
            out[pos : pos + itemsize] = data[first : first + itemsize]
            pos += itemsize
        else:
            if literal_count == 0:
                literal_start = run_starts[r]
            literal_count += run_lengths[r]
    return out[:pos].copy()


@njit(nogil=True, cache=True)
def decode(payload, count, itemsize, out):  # pragma: no cover - compiled
    """Fill ``out`` (count * itemsize bytes). Returns 0 ok, 1 corrupt (bad varint,
    overrun, zero-length token, trailing bytes or too few elements)."""
    pos = 0
    end = payload.shape[0]
    filled = 0
    while filled < count:
        value = np.int64(0)
        shift = 0
        while True:
            if pos >= end or shift > 56:
                return 1
            byte = np.int64(payload[pos])
            pos += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                break
        length = value >> 1
        if length == 0 or length > count - filled:
            return 1
        at = filled * itemsize
        if value & 1:
            if pos + itemsize > end:
                return 1
            for k in range(length):
                out[at + k * itemsize : at + (k + 1) * itemsize] = payload[pos : pos + itemsize]
            pos += itemsize
        else:
            size = length * itemsize
            if pos + size > end:
                return 1
            out[at : at + size] = payload[pos : pos + size]
            pos += size
        filled += length
    if pos != end:
        return 1
    return 0

"""Numba kernels for ``quant`` (imported lazily by :mod:`bie_cli.kernels.quant`).

Every kernel is ``parallel=True`` over rows (or blocks of rows) with
``prange``; each output row is written by exactly one iteration, so there are
no races. ``fastmath`` is limited to reassociation and contraction (what the
vectorizer needs for reductions); NaN/Inf keep IEEE semantics.
Inner loops run over slices, so indices start at 0 and LLVM vectorizes them
without wraparound checks.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ._numba_common import FASTMATH


@njit(nogil=True, cache=True)
def group_sums(x, group_size, groups):  # pragma: no cover - compiled
    """Σ x over each group of ``group_size`` elements (the last may be shorter)."""
    sums = np.zeros(groups, dtype=np.float32)
    n = x.shape[0]
    for g in range(groups):
        start = g * group_size
        stop = min(start + group_size, n)
        total = np.float32(0.0)
        for j in range(start, stop):
            total += x[j]
        sums[g] = total
    return sums


@njit(nogil=True, cache=True)
def split_pairs(x, group_size, groups):  # pragma: no cover - compiled
    """x at even and at odd positions (odd one zero-padded), and the group sums."""
    n = x.shape[0]
    half = (n + 1) // 2
    even = np.zeros(half, dtype=np.float32)
    odd = np.zeros(half, dtype=np.float32)
    for k in range(n // 2):
        even[k] = x[2 * k]
        odd[k] = x[2 * k + 1]
    if n & 1:
        even[half - 1] = x[n - 1]
    return even, odd, group_sums(x, group_size, groups)


@njit(parallel=True, nogil=True, cache=True, fastmath=FASTMATH)
def matvec_nibbles(codes, zero, scale, offset, group_bytes, x_even, x_odd, x_sums,
                   fix_ptr, fix_col, fix_delta, x, y):  # pragma: no cover - compiled
    rows, row_bytes = codes.shape
    groups = scale.shape[1]
    affine = offset.shape[0] > 0
    for i in prange(rows):
        row = codes[i]
        total = np.float32(0.0)
        for g in range(groups):
            start = g * group_bytes
            stop = min(start + group_bytes, row_bytes)
            c = row[start:stop]
            e = x_even[start:stop]
            o = x_odd[start:stop]
            acc = np.float32(0.0)
            for k in range(c.shape[0]):
                v = np.int32(c[k])
                acc += np.float32((v & 15) - zero) * e[k] + np.float32((v >> 4) - zero) * o[k]
            total += scale[i, g] * acc
            if affine:
                total += offset[i, g] * x_sums[g]
        for k in range(fix_ptr[i], fix_ptr[i + 1]):
            total += fix_delta[k] * x[fix_col[k]]
        y[i] = total


@njit(parallel=True, nogil=True, cache=True, fastmath=FASTMATH)
def matvec_bytes(codes, scale, offset, group_size, x_sums,
                 fix_ptr, fix_col, fix_delta, x, y):  # pragma: no cover - compiled
    rows, cols = codes.shape
    groups = scale.shape[1]
    affine = offset.shape[0] > 0
    for i in prange(rows):
        row = codes[i]
        total = np.float32(0.0)
        for g in range(groups):
            start = g * group_size
            stop = min(start + group_size, cols)
            c = row[start:stop]
            xs = x[start:stop]
            acc = np.float32(0.0)
            for k in range(c.shape[0]):
                acc += np.float32(c[k]) * xs[k]
            total += scale[i, g] * acc
            if affine:
                total += offset[i, g] * x_sums[g]
        for k in range(fix_ptr[i], fix_ptr[i + 1]):
            total += fix_delta[k] * x[fix_col[k]]
        y[i] = total


@njit(nogil=True, cache=True, fastmath=FASTMATH)
def _dequantize_row(codes, nibbles, zero, scale, offset, group_size, out):  # pragma: no cover - compiled
    """ŵ of one row into ``out`` (length cols rounded up to even)."""
    groups = scale.shape[0]
    cols = out.shape[0]
    for g in range(groups):
        start = g * group_size
        stop = min(start + group_size, cols)
        s = scale[g]
        o = offset[g] if offset.shape[0] > 0 else np.float32(0.0)
        if nibbles:
            c = codes[start // 2 : (stop + 1) // 2]
            w = out[start : start + 2 * c.shape[0]]
            for k in range(c.shape[0]):
                v = np.int32(c[k])
                w[2 * k] = np.float32((v & 15) - zero) * s + o
                w[2 * k + 1] = np.float32((v >> 4) - zero) * s + o
        else:
            c = codes[start:stop]
            w = out[start:stop]
            for j in range(c.shape[0]):
                w[j] = np.float32(c[j]) * s + o


@njit(nogil=True, cache=True, fastmath=FASTMATH)
def dequantize_rows(codes, nibbles, zero, scale, offset, group_size,
                    fix_ptr, fix_col, fix_delta, start, out):  # pragma: no cover - compiled
    """Rows ``start : start + len(out)`` of Ŵ into ``out`` (width: cols rounded up to even).

    Deliberately not parallel: it alternates with BLAS calls, and two thread
    pools that spin-wait (numba's OpenMP workers, OpenBLAS's) handing the cores
    back and forth measured 20-100x slower on 2 cores than this serial loop
    plus a multi-threaded sgemm.
    """
    affine = offset.shape[0] > 0
    no_offset = np.zeros(0, dtype=np.float32)
    for r in range(out.shape[0]):
        i = start + r
        _dequantize_row(codes[i], nibbles, zero, scale[i], offset[i] if affine else no_offset, group_size, out[r])
        for k in range(fix_ptr[i], fix_ptr[i + 1]):
            out[r, fix_col[k]] += fix_delta[k]

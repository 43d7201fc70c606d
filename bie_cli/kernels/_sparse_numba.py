"""Numba kernels for the index-storage forms (``sdr``, ``bie-blocked``, sparse ``bie-binary``).

``prange`` over rows; each output row is written by one iteration only.
Inner loops run over slices (indices from 0, no wraparound checks), so LLVM
turns ``acc += val[k] * x[col[k]]`` into vector gathers.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ._numba_common import FASTMATH


@njit(parallel=True, nogil=True, cache=True, fastmath=FASTMATH)
def rows_matvec(ptr, col, val, x, y):  # pragma: no cover - compiled
    for i in prange(y.shape[0]):
        c = col[ptr[i] : ptr[i + 1]]
        v = val[ptr[i] : ptr[i + 1]]
        acc = np.float32(0.0)
        for k in range(c.shape[0]):
            acc += v[k] * x[np.int64(c[k])]
        y[i] = acc


@njit(parallel=True, nogil=True, cache=True, fastmath=FASTMATH)
def rows_matmul(ptr, col, val, X, Y):  # pragma: no cover - compiled
    batch = X.shape[1]
    for i in prange(Y.shape[0]):
        y = Y[i]
        for b in range(batch):
            y[b] = 0.0
        for k in range(ptr[i], ptr[i + 1]):
            v = val[k]
            xr = X[np.int64(col[k])]
            for b in range(batch):
                y[b] += v * xr[b]


@njit(parallel=True, nogil=True, cache=True, fastmath=FASTMATH)
def signed_matvec(ptr, split, col, scale, x, y):  # pragma: no cover - compiled
    """y_i = a_i·(Σ x over the row's positive positions − Σ x over its negative ones): additions only."""
    for i in prange(y.shape[0]):
        positive = col[ptr[i] : split[i]]
        negative = col[split[i] : ptr[i + 1]]
        plus = np.float32(0.0)
        for k in range(positive.shape[0]):
            plus += x[np.int64(positive[k])]
        minus = np.float32(0.0)
        for k in range(negative.shape[0]):
            minus += x[np.int64(negative[k])]
        y[i] = scale[i] * (plus - minus)


@njit(parallel=True, nogil=True, cache=True, fastmath=FASTMATH)
def signed_matmul(ptr, split, col, scale, X, Y):  # pragma: no cover - compiled
    batch = X.shape[1]
    for i in prange(Y.shape[0]):
        y = Y[i]
        for b in range(batch):
            y[b] = 0.0
        for k in range(ptr[i], split[i]):
            xr = X[np.int64(col[k])]
            for b in range(batch):
                y[b] += xr[b]
        for k in range(split[i], ptr[i + 1]):
            xr = X[np.int64(col[k])]
            for b in range(batch):
                y[b] -= xr[b]
        a = scale[i]
        for b in range(batch):
            y[b] *= a

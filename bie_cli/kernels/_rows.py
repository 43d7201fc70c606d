"""The row-compressed kernel form shared by ``sdr`` and ``bie-blocked``.

:class:`RowSparseMatrix`: for row ``i`` the elements ``ptr[i]:ptr[i+1]`` of
``col`` (column, uint16 when the row has at most 65,536 columns, else int32)
and ``val`` (float32), columns ascending. Half the index bytes of
scipy's int32 CSR. The numba matvec multiplies 4 weights at a time, their
``x[col]`` loaded one by one into a vector (``_sparse_numba.row_dot``: on
the benchmark machine that beat LLVM's AVX-512 gathers).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

_REFERENCE_BLOCK_ROWS = 256


def index_dtype(cols: int) -> np.dtype:
    return np.dtype(np.uint16) if cols <= 1 << 16 else np.dtype(np.int32)


@dataclass
class RowSparseMatrix:
    rows: int
    cols: int
    ptr: np.ndarray
    col: np.ndarray
    val: np.ndarray

    @property
    def nbytes(self) -> int:
        return self.ptr.nbytes + self.col.nbytes + self.val.nbytes

    @property
    def nnz(self) -> int:
        return int(self.val.size)


def from_coordinates(rows: int, cols: int, r: np.ndarray, c: np.ndarray, values: np.ndarray) -> RowSparseMatrix:
    """Build from (row, column, value) triples in any order (each position at most once).

    Entries equal to ±0.0 are dropped: lossless ``sdr`` keeps -0.0 (a pruned
    negative weight) bit for bit, but it adds nothing to a product (unless
    ``x`` holds Inf or NaN, where the dense product would give NaN).
    """
    values = np.asarray(values, dtype=np.float32)
    keep = values != 0
    r = np.asarray(r, dtype=np.int64)[keep]
    c = np.asarray(c, dtype=np.int64)[keep]
    values = values[keep]
    key = r * cols + c
    if key.size > 1 and (np.diff(key) <= 0).any():
        order = np.argsort(key, kind="stable")
        r, c, values = r[order], c[order], np.asarray(values)[order]
    ptr = np.zeros(rows + 1, dtype=np.int64)
    np.cumsum(np.bincount(r, minlength=rows), out=ptr[1:])
    # copies: the kernel form must not keep views into a container's memory map
    return RowSparseMatrix(rows, cols, ptr, c.astype(index_dtype(cols)), np.array(values, dtype=np.float32))


def concat(parts: list[RowSparseMatrix]) -> RowSparseMatrix:
    ptr = [np.zeros(1, np.int64)]
    done = 0
    for part in parts:
        ptr.append(part.ptr[1:] + done)
        done += part.nnz
    return RowSparseMatrix(
        sum(p.rows for p in parts), parts[0].cols, np.concatenate(ptr),
        np.concatenate([p.col for p in parts]), np.concatenate([p.val for p in parts]),
    )


# -- numpy reference: the specification ------------------------------------------------
def dense_block(m: RowSparseMatrix, start: int, stop: int) -> np.ndarray:
    """Rows [start, stop) of Ŵ: zeros, with val[k] at (row of k, col[k])."""
    block = np.zeros((stop - start, m.cols), dtype=np.float32)
    lo, hi = m.ptr[start], m.ptr[stop]
    local_rows = np.repeat(np.arange(stop - start), np.diff(m.ptr[start : stop + 1]))
    block[local_rows, m.col[lo:hi]] = m.val[lo:hi]
    return block


def reference_matmul(m: RowSparseMatrix, X: np.ndarray, out: np.ndarray) -> None:
    """``out = Ŵ @ X``, a block of rows of Ŵ at a time."""
    for start in range(0, m.rows, _REFERENCE_BLOCK_ROWS):
        stop = min(start + _REFERENCE_BLOCK_ROWS, m.rows)
        out[start:stop] = dense_block(m, start, stop) @ X


def reference_matvec(m: RowSparseMatrix, x: np.ndarray, out: np.ndarray) -> None:
    reference_matmul(m, x[:, None], out[:, None])


# -- numba -----------------------------------------------------------------------------------
@functools.cache
def _numba_kernels():
    """The numba kernel module, imported on first use (an import statement per call costs 0.2 µs)."""
    from . import _sparse_numba

    return _sparse_numba


def numba_matvec(m: RowSparseMatrix, x: np.ndarray, out: np.ndarray) -> None:
    _numba_kernels().rows_matvec(m.ptr, m.col, m.val, x, out)


def numba_matmul(m: RowSparseMatrix, X: np.ndarray, out: np.ndarray) -> None:
    _numba_kernels().rows_matmul(m.ptr, m.col, m.val, X, out)


def warmup() -> None:
    for cols in (4, 1 << 17):  # uint16 and int32 column indices
        m = from_coordinates(3, cols, np.array([0, 0, 2]), np.array([1, 3, 2]), np.ones(3, np.float32))
        numba_matvec(m, np.ones(cols, np.float32), np.empty(3, np.float32))
        numba_matmul(m, np.ones((cols, 2), np.float32), np.empty((3, 2), np.float32))

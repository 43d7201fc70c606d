"""Kernels for ``bie-binary`` (significant set + one sign bit per kept weight + a scale per row).

ŵ_ij = a_i·sign(w_ij) on the kept set S, 0 elsewhere, so
``y_i = a_i·(Σ_{j∈S⁺} x_j − Σ_{j∈S⁻} x_j)``: additions only. Two kernel forms,
chosen per chunk by what is smaller to read:

* sparse (kept density < 1/4): :class:`SignedRows`: per row the positive
  positions then the negative ones (uint16 columns, 2 bytes per kept
  weight), ``split[i]`` where the negatives start, ``scale[i] = a_i``;
* dense (density ≥ 1/4, e.g. τ = 0 sign binarization): the ``quant``
  nibble form with codes 8 + {−1, 0, +1} and one scale per row (4 bits a
  weight; the same vectorized kernel as 4-bit ``quant``).

Both come from the strategy's own parser (:func:`bie_cli.strategies.bie_binary.unpack`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import _rows
from . import quant as quant_kernels

STRATEGY = "bie-binary"
SPARSE_BELOW = 0.25


@dataclass
class SignedRows:
    rows: int
    cols: int
    ptr: np.ndarray
    split: np.ndarray
    col: np.ndarray
    scale: np.ndarray

    @property
    def nbytes(self) -> int:
        return self.ptr.nbytes + self.split.nbytes + self.col.nbytes + self.scale.nbytes


def from_chunk(payload, meta: dict, shape: tuple[int, ...], dtype: str):
    from ..strategies import bie_binary

    parsed = bie_binary.unpack(payload, meta, shape, dtype)
    rows, cols = shape[0], int(np.prod(shape[1:], dtype=np.int64))
    r, c = np.divmod(parsed.kept, max(cols, 1))
    row_scale = np.zeros(rows, dtype=np.float32)
    row_scale[r] = parsed.scale[parsed.inverse]
    if parsed.kept.size >= SPARSE_BELOW * rows * cols:
        return _dense(rows, cols, r, c, parsed.negative, row_scale)
    negative = parsed.negative.astype(np.int64)
    order = np.lexsort((c, negative, r))  # by row, positives first, then column
    r, c, negative = r[order], c[order], negative[order]
    ptr = np.zeros(rows + 1, dtype=np.int64)
    np.cumsum(np.bincount(r, minlength=rows), out=ptr[1:])
    split = ptr[:-1] + np.bincount(r, weights=1 - negative, minlength=rows).astype(np.int64)
    return SignedRows(rows, cols, ptr, split, c.astype(_rows.index_dtype(cols)), row_scale)


def _dense(rows, cols, r, c, negative, row_scale) -> quant_kernels.QuantMatrix:
    codes = np.full((rows, cols), 8, dtype=np.uint8)
    codes[r, c] = np.where(negative, 7, 9)
    return quant_kernels.build(codes, 4, max(cols, 1), row_scale.reshape(rows, 1), quant_kernels.NO_OFFSET)


def concat(parts):
    if all(isinstance(p, SignedRows) for p in parts):
        ptr, split, done = [np.zeros(1, np.int64)], [], 0
        for p in parts:
            ptr.append(p.ptr[1:] + done)
            split.append(p.split + done)
            done += int(p.ptr[-1])
        return SignedRows(sum(p.rows for p in parts), parts[0].cols, np.concatenate(ptr), np.concatenate(split),
                          np.concatenate([p.col for p in parts]), np.concatenate([p.scale for p in parts]))
    if all(isinstance(p, quant_kernels.QuantMatrix) for p in parts):
        return quant_kernels.concat(parts)
    return None


def kernel_form(m):
    """The dense form's row tiles (:func:`bie_cli.kernels.quant.kernel_form`); signed rows as they are."""
    return quant_kernels.kernel_form(m) if isinstance(m, quant_kernels.QuantMatrix) else m


# -- numpy reference: the specification ------------------------------------------------
def reference_matmul(m, X: np.ndarray, out: np.ndarray) -> None:
    """``out[i] = a_i·(Σ_{S⁺ of row i} X[j] − Σ_{S⁻ of row i} X[j])``."""
    if isinstance(m, quant_kernels.QuantMatrix):
        quant_kernels.reference_matmul(m, X, out)
        return
    for i in range(m.rows):
        plus = X[m.col[m.ptr[i] : m.split[i]].astype(np.int64)].sum(axis=0, dtype=np.float32)
        minus = X[m.col[m.split[i] : m.ptr[i + 1]].astype(np.int64)].sum(axis=0, dtype=np.float32)
        out[i] = m.scale[i] * (plus - minus)


def reference_matvec(m, x: np.ndarray, out: np.ndarray) -> None:
    reference_matmul(m, x[:, None], out[:, None])


# -- numba -------------------------------------------------------------------------------
def numba_matvec(m, x: np.ndarray, out: np.ndarray) -> None:
    if isinstance(m, quant_kernels.QuantMatrix):
        quant_kernels.numba_matvec(m, x, out)
        return
    from . import _sparse_numba as kernels

    kernels.signed_matvec(m.ptr, m.split, m.col, m.scale, x, out)


def numba_matmul(m, X: np.ndarray, out: np.ndarray) -> None:
    if isinstance(m, quant_kernels.QuantMatrix):
        quant_kernels.numba_matmul(m, X, out)
        return
    from . import _sparse_numba as kernels

    kernels.signed_matmul(m.ptr, m.split, m.col, m.scale, X, out)


def warmup() -> None:
    m = SignedRows(2, 4, np.array([0, 2, 3], np.int64), np.array([1, 3], np.int64),
                   np.array([0, 2, 1], np.uint16), np.ones(2, np.float32))
    numba_matvec(m, np.ones(4, np.float32), np.empty(2, np.float32))
    numba_matmul(m, np.ones((4, 2), np.float32), np.empty((2, 2), np.float32))
    quant_kernels.warmup()

"""Kernels for ``sdr`` (positions of the active elements + their values).

Kernel form: :class:`~bie_cli.kernels._rows.RowSparseMatrix` (row pointers,
uint16 columns, float32 values), built once from the strategy's own parser
(:func:`bie_cli.strategies.sdr.unpack`: positions decoded from their gaps or
bitmap, values from their byte planes or int8/int4/fp16 codes).
"""

from __future__ import annotations

import numpy as np

from . import _rows
from ._rows import RowSparseMatrix, concat, kernel_form, numba_matmul, numba_matvec, reference_matmul, reference_matvec

STRATEGY = "sdr"
__all__ = ["STRATEGY", "concat", "from_chunk", "kernel_form", "numba_matmul", "numba_matvec", "reference_matmul",
           "reference_matvec", "warmup"]


def from_chunk(payload, meta: dict, shape: tuple[int, ...], dtype: str) -> RowSparseMatrix:
    from ..strategies import sdr

    positions, values = sdr.unpack(payload, meta, shape, dtype)
    rows, cols = shape[0], int(np.prod(shape[1:], dtype=np.int64))
    r, c = np.divmod(positions, max(cols, 1))
    return _rows.from_coordinates(rows, cols, r, c, values.astype(np.float32))


def warmup() -> None:
    _rows.warmup()

"""Kernels for ``bie-blocked`` (tile occupancy + per-tile local indices or masks + values).

The strategy's parser (:meth:`bie_cli.strategies.bie_blocked.BlockedStrategy.unpack`)
turns the tiles into (row, column, value) triples; the kernel form is the
row-compressed :class:`~bie_cli.kernels._rows.RowSparseMatrix` (uint16
columns, float32 values) that ``sdr`` uses too.

Why not walk the tiles themselves: at the benchmark sizes ``x`` (≤ 16 KiB)
sits in L1 whatever the order, and inside a 16×16 tile at 90% sparsity a row
holds 1.6 elements on average, so per-tile-row loops cost more than they
save. Even 256-column bands (8-bit local columns, one run per row and band)
measured 0.61 ms against 0.30 ms for the row-compressed form (4096×4096, 90%
sparse, 2 threads; docs/kernels.md).
"""

from __future__ import annotations

import numpy as np

from . import _rows
from ._rows import RowSparseMatrix, concat, kernel_form, numba_matmul, numba_matvec, reference_matmul, reference_matvec

STRATEGY = "bie-blocked"
__all__ = ["STRATEGY", "concat", "from_chunk", "kernel_form", "numba_matmul", "numba_matvec", "reference_matmul",
           "reference_matvec", "warmup"]


def from_chunk(payload, meta: dict, shape: tuple[int, ...], dtype: str) -> RowSparseMatrix:
    from ..strategies import registry

    r, c, values = registry.get(STRATEGY).unpack(payload, meta, shape, dtype)
    rows, cols = shape[0], int(np.prod(shape[1:], dtype=np.int64))
    return _rows.from_coordinates(rows, cols, r, c, values.astype(np.float32))


def warmup() -> None:
    _rows.warmup()

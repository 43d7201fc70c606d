"""Kernels for ``bie-bitplane`` (sign-magnitude codes stored as bit planes).

Bit planes are how the codes are *stored* (each plane entropy-coded, top
planes readable alone); a kernel wants each weight's code in one place. At
load time the strategy's own parser (:func:`bie_cli.strategies.bie_bitplane.unpack`)
decodes the planes once and the signed levels ``±q`` (ŵ = ±q·s_r) go into
the ``quant`` kernel form: two a byte as ``8 + level`` when k ≤ 4 (|q| ≤ 7),
else one int8 a weight, with one scale per row and no offset. The products
are then the same vectorized kernels as 4-/8-bit ``quant``.

k = 1 (ŵ = ±s_r for every element) is the level ±1. Progressive reads
(``decode_planes(bits=m < k)``) put codes at bucket midpoints, which are not
integers; kernels always use every stored plane, as ``decode`` does.
"""

from __future__ import annotations

import numpy as np

from . import quant as quant_kernels
from .quant import QuantMatrix, concat, kernel_form, numba_matmul, numba_matvec, reference_matmul, reference_matvec

STRATEGY = "bie-bitplane"
__all__ = ["STRATEGY", "concat", "from_chunk", "kernel_form", "numba_matmul", "numba_matvec", "reference_matmul",
           "reference_matvec", "warmup"]


def from_chunk(payload, meta: dict, shape: tuple[int, ...], dtype: str) -> QuantMatrix:
    from ..strategies import bie_bitplane

    parsed = bie_bitplane.unpack(payload, meta, shape, dtype, bits=8)
    rows, cols = shape[0], int(np.prod(shape[1:], dtype=np.int64))
    magnitude = np.ones(rows * cols, np.int16) if parsed.code is None else parsed.code.astype(np.int16)
    level = np.where(parsed.negative, -magnitude, magnitude).reshape(rows, cols)
    scale = parsed.scale.astype(np.float32).reshape(rows, 1)
    if parsed.k <= 4:  # |level| <= 7: 4-bit codes 8 + level
        return quant_kernels.build((level + 8).astype(np.uint8), 4, max(cols, 1), scale, quant_kernels.NO_OFFSET)
    return quant_kernels.build((level + 128).astype(np.uint8), 8, max(cols, 1), scale, quant_kernels.NO_OFFSET)


def warmup() -> None:
    quant_kernels.warmup()

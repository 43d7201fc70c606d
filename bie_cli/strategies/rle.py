"""``rle``: run-length coding of repeated element values, for any dtype.

For masks, constant tensors and zero-filled buffers. Short runs are gathered
into literal tokens, and a chunk that would grow is stored raw
(``meta = {"stored": "raw"}``), so incompressible data costs nothing but
the meta. Byte layout: :mod:`bie_cli.codecs.rle`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import dtypes
from .base import Strategy, decode_if_raw, from_bytes, smaller_or_raw


@dataclass(frozen=True)
class RleConfig:
    #: shortest run coded as a run; 0 picks by element size (2 for 4-byte elements)
    min_run: int = 0

    def __post_init__(self) -> None:
        if self.min_run < 0 or self.min_run == 1:
            raise ValueError(f"min_run must be 0 (automatic) or at least 2, got {self.min_run}")


class RleStrategy(Strategy):
    id = "rle"
    lossless = True
    description = "run-length coding of repeated values (masks, constants, zeros)"
    Config = RleConfig

    def encode(self, chunk: np.ndarray, config: RleConfig) -> tuple[bytes, dict]:
        from ..codecs import rle

        data = np.ascontiguousarray(chunk).reshape(-1).view(np.uint8)
        return smaller_or_raw(rle.encode(data, chunk.dtype.itemsize, config.min_run or None), data)

    def decode(self, payload, meta, shape, dtype) -> np.ndarray:
        from ..codecs import rle

        raw = decode_if_raw(payload, meta, shape, dtype)
        if raw is not None:
            return raw
        if meta:
            raise ValueError(f"rle meta has unknown keys {sorted(meta)}")
        itemsize = dtypes.get(dtype).itemsize
        count = dtypes.nbytes(dtype, tuple(shape)) // itemsize
        return from_bytes(rle.decode(payload, count, itemsize), shape, dtype)

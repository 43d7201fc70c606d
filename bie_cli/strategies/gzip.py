"""``gzip``: DEFLATE over the element bytes, for parity with CortexSDR's archives."""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from .. import dtypes
from .base import Strategy, as_bytes, from_bytes


@dataclass(frozen=True)
class GzipConfig:
    level: int = 6

    def __post_init__(self) -> None:
        if not 0 <= self.level <= 9:
            raise ValueError(f"level must be between 0 and 9, got {self.level}")


class GzipStrategy(Strategy):
    id = "gzip"
    lossless = True
    description = "gzip (DEFLATE) over the element bytes (raw when that is smaller)"
    Config = GzipConfig

    def encode(self, chunk: np.ndarray, config: GzipConfig) -> tuple[bytes, dict]:
        data = as_bytes(chunk)
        # mtime=0 in a fixed gzip header keeps the bytes deterministic.
        compressor = zlib.compressobj(config.level, zlib.DEFLATED, 31)
        packed = compressor.compress(data) + compressor.flush()
        if len(packed) >= len(data):
            return bytes(data), {"stored": "raw"}
        return packed, {}

    def decode(self, payload, meta, shape, dtype) -> np.ndarray:
        if meta.get("stored") == "raw":
            return from_bytes(payload, shape, dtype)
        size = dtypes.nbytes(dtype, tuple(shape))
        decompressor = zlib.decompressobj(31)
        data = decompressor.decompress(payload, size)
        if decompressor.unconsumed_tail or not decompressor.eof:
            raise ValueError("gzip stream is longer than the chunk's shape allows or truncated")
        return from_bytes(data, shape, dtype)

"""``zstd``: Zstandard over the element bytes; stores raw when that is not smaller."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import zstandard

from .. import dtypes
from .base import Strategy, as_bytes, from_bytes

# Long-range matching and dictionary training buy nothing on float weights;
# plain levels keep the payload decodable by any zstd.


@dataclass(frozen=True)
class ZstdConfig:
    level: int = 3

    def __post_init__(self) -> None:
        if not -7 <= self.level <= 22:
            raise ValueError(f"level must be between -7 and 22, got {self.level}")


class ZstdStrategy(Strategy):
    id = "zstd"
    lossless = True
    description = "Zstandard over the element bytes (raw when that is smaller)"
    Config = ZstdConfig

    def encode(self, chunk: np.ndarray, config: ZstdConfig) -> tuple[bytes, dict]:
        data = as_bytes(chunk)
        packed = zstandard.ZstdCompressor(level=config.level).compress(data)
        if len(packed) >= len(data):
            return bytes(data), {"stored": "raw"}
        return packed, {}

    def decode(self, payload, meta, shape, dtype) -> np.ndarray:
        if meta.get("stored") == "raw":
            return from_bytes(payload, shape, dtype)
        data = _decompress(payload, shape, dtype)
        return from_bytes(data, shape, dtype)


def _decompress(payload, shape, dtype) -> bytes:
    size = dtypes.nbytes(dtype, tuple(shape))
    # max_output_size bounds the allocation to what the shape says, so a
    # hostile frame cannot claim gigabytes.
    return zstandard.ZstdDecompressor().decompress(payload, max_output_size=max(size, 1))

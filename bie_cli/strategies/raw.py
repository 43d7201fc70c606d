"""``raw``: the element bytes as they are. The baseline every strategy falls back to."""

from __future__ import annotations

import numpy as np

from .base import NoConfig, Strategy, as_bytes, from_bytes


class RawStrategy(Strategy):
    id = "raw"
    lossless = True
    description = "element bytes stored as they are (little-endian)"

    def encode(self, chunk: np.ndarray, config: NoConfig) -> tuple[bytes, dict]:
        return bytes(as_bytes(chunk)), {}

    def decode(self, payload, meta, shape, dtype) -> np.ndarray:
        return from_bytes(payload, shape, dtype)

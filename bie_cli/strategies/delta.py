"""``delta``: delta coding of integer tensors, then ``zstd``, ``rle`` or ``raw``.

For position ids, token type ids, sorted index buffers: differences of
neighbouring elements (in row-major order within the chunk, wrapping modulo
2**bits) are small or constant. A separate strategy rather than an option on
``zstd``/``rle`` so those stay single-purpose; ``inner`` names the coder
applied to the deltas, and the meta records it with the inner meta, so
decoding never relies on a default.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from .base import Strategy

INNER_STRATEGIES = ("zstd", "rle", "raw")
_INTEGER_DTYPES = frozenset({"U8", "I8", "U16", "I16", "U32", "I32", "U64", "I64"})


@dataclass(frozen=True)
class DeltaConfig:
    inner: Literal["zstd", "rle", "raw"] = "zstd"
    #: zstd level when inner is zstd
    level: int = 3

    def __post_init__(self) -> None:
        if self.inner not in INNER_STRATEGIES:
            raise ValueError(f"inner must be one of {', '.join(INNER_STRATEGIES)}, got {self.inner!r}")
        if not -7 <= self.level <= 22:
            raise ValueError(f"level must be between -7 and 22, got {self.level}")


class DeltaStrategy(Strategy):
    id = "delta"
    lossless = True
    dtypes = _INTEGER_DTYPES
    description = "integer deltas (wrapping) coded by zstd, rle or raw"
    Config = DeltaConfig

    def encode(self, chunk: np.ndarray, config: DeltaConfig) -> tuple[bytes, dict]:
        from ..codecs import delta
        from .registry import get

        inner = get(config.inner)
        inner_config = inner.config_from_dict({"level": config.level} if config.inner == "zstd" else {})
        deltas = delta.encode(chunk).reshape(chunk.shape)
        payload, inner_meta = inner.encode(deltas, inner_config)
        return payload, {"inner": config.inner, "inner_meta": inner_meta}

    def decode(self, payload, meta, shape, dtype) -> np.ndarray:
        from ..codecs import delta
        from .registry import get

        inner_id = meta.get("inner")
        if inner_id not in INNER_STRATEGIES or not isinstance(meta.get("inner_meta"), dict):
            raise ValueError(f"delta meta names no valid inner strategy: {meta!r}")
        deltas = get(inner_id).decode(payload, meta["inner_meta"], shape, dtype)
        return delta.decode(deltas).reshape(shape)

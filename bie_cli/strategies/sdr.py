"""``sdr``: sparse distributed representation by index storage.

The positions of the chunk's active elements (delta-coded gaps, entropy
coded, or an entropy-coded bitmap when that is smaller; see
:mod:`bie_cli.codecs.positions`) plus their values. Active means "bit
pattern not all zero", so with the default ``values=exact`` the chunk comes
back bit for bit (-0.0, NaN payloads and all): lossless for every dtype.

* ``density=d`` keeps only the ``round(d * n)`` largest-magnitude elements of
  each chunk (magnitude pruning; ties by position) and drops the rest: lossy.
  Chunks are whole rows, so this is per tensor when the tensor fits one chunk.
* ``values=fp16|int8|int4`` quantizes the kept values (hybrid prune +
  quantize): fp16, or symmetric int8/int4 with one scale per row that holds
  values. Floats only.

Payload: positions section (``meta["positions"]`` bytes) | values section
(the rest). Layout: docs/strategies/sdr.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from .. import dtypes
from ..codecs import positions as position_codec
from . import _quant_common as common
from . import _sparse_common as sparse
from .base import Strategy


@dataclass(frozen=True)
class SdrConfig:
    values: Literal["exact", "fp16", "int8", "int4"] = "exact"
    density: float | None = None

    def __post_init__(self) -> None:
        sparse.check_density(self.density)


class SdrStrategy(Strategy):
    id = "sdr"
    kernels = "bie_cli.kernels.sdr"
    lossless = True  # with the default config; see is_lossless
    description = "index storage: entropy-coded gaps (or bitmap) of nonzeros + values (exact or fp16/int8/int4)"
    Config = SdrConfig

    def is_lossless(self, config: SdrConfig) -> bool:
        return sparse.keeps_every_value(config)

    def encode(self, chunk: np.ndarray, config: SdrConfig) -> tuple[bytes, dict]:
        flat = sparse.flat_elements(chunk)
        active = sparse.active_positions(flat, config.density)
        _, row_length = common.row_shape(chunk.shape)
        value_rows = active // max(row_length, 1)
        value_bytes, value_meta = sparse.encode_values(flat[active], value_rows, config.values, self.id)
        position_bytes = position_codec.encode(active, flat.size)
        meta = {"count": int(active.size), "positions": len(position_bytes), "values": config.values, **value_meta}
        return position_bytes + value_bytes, meta

    def decode(self, payload, meta, shape, dtype) -> np.ndarray:
        shape = tuple(shape)
        active, values = unpack(payload, meta, shape, dtype)
        out = np.zeros(math.prod(shape), dtype=dtypes.get(dtype).numpy)
        out[active] = values
        return out.reshape(shape)


def unpack(payload, meta: dict, shape: tuple[int, ...], dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """Parse and check a payload without expanding it: (sorted flat positions, their values).

    ``decode`` scatters these into zeros; the matmul kernels
    (``bie_cli.kernels.sdr``) build their row-compressed form from them.
    """
    shape = tuple(shape)
    n = math.prod(shape)
    count = common.meta_int(meta, "count", 0, n)
    position_length = common.meta_int(meta, "positions", 0, len(payload))
    mode = common.meta_choice(meta, "values", sparse.VALUE_MODES)
    data = np.frombuffer(payload, dtype=np.uint8)
    active = position_codec.decode(data[:position_length], n)
    if active.size != count:
        raise ValueError(f"positions hold {active.size} elements, meta says {count}")
    _, row_length = common.row_shape(shape)
    values = sparse.decode_values(data[position_length:], meta, mode, active // max(row_length, 1), dtype)
    return active, values

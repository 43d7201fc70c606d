"""``bie-blocked``: tiles, a tile-occupancy set, and per non-empty tile local indices or a mask.

The chunk, as a (rows, row_length) matrix, is cut into ``tile`` x ``tile``
tiles (the last tile row and column may be smaller), numbered row-major.
Stored:

* the set of non-empty tiles (:mod:`bie_cli.codecs.positions`: a bitmap or
  gaps, whichever is smaller);
* per non-empty tile, its element count and whether it is stored as local
  indices (1 byte each when tile**2 <= 256, else 2) or as a mask (one bit per
  element of the tile), whichever is smaller for that tile;
* the values of the active elements in tile order (tile by tile, row-major
  inside a tile): ``exact`` (lossless) or quantized (``fp16``/``int8``/``int4``).

Everything a tile needs is local to it, which is what a cache-friendly
kernel wants. With ``entropy=auto`` each byte stream (counts, modes, indices,
masks) is rANS-coded when that is smaller; ``entropy=none`` keeps them raw so
a kernel can walk the payload directly. Active elements and ``density`` are
as in ``sdr``. Layout: docs/strategies/bie-blocked.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from .. import dtypes
from ..codecs import positions as position_codec
from ..codecs import rans
from . import _quant_common as common
from . import _sparse_common as sparse
from .base import Strategy, rans_if_smaller

MAX_TILE = 256
_STREAMS = ("counts", "modes", "indices", "masks")


@dataclass(frozen=True)
class BlockedConfig:
    tile: int = 16
    values: Literal["exact", "fp16", "int8", "int4"] = "exact"
    density: float | None = None
    entropy: Literal["auto", "none"] = "auto"

    def __post_init__(self) -> None:
        if not 2 <= self.tile <= MAX_TILE:
            raise ValueError(f"tile must be between 2 and {MAX_TILE}, got {self.tile}")
        sparse.check_density(self.density)


@dataclass(frozen=True)
class TileGrid:
    rows: int
    cols: int
    tile: int

    @property
    def tile_rows(self) -> int:
        return -(-self.rows // self.tile)

    @property
    def tile_cols(self) -> int:
        return -(-self.cols // self.tile)

    @property
    def count(self) -> int:
        return self.tile_rows * self.tile_cols

    @property
    def index_width(self) -> int:
        return 1 if self.tile * self.tile <= 256 else 2

    def dims(self, tile_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(first row, first column, height, width) of each tile."""
        tr, tc = np.divmod(tile_ids, self.tile_cols)
        r0, c0 = tr * self.tile, tc * self.tile
        return r0, c0, np.minimum(self.tile, self.rows - r0), np.minimum(self.tile, self.cols - c0)


def _code_stream(data: np.ndarray, entropy: str) -> tuple[str, bytes]:
    data = np.ascontiguousarray(data, dtype=np.uint8).reshape(-1)
    coded = rans_if_smaller(data, data.size) if entropy == "auto" else None
    return ("rans", coded) if coded is not None else ("raw", data.tobytes())


def _stream(kind: str, data: np.ndarray, size: int, name: str) -> np.ndarray:
    if kind == "rans":
        return rans.decode_symbols(data, size, np.uint8)
    if data.size != size:
        raise ValueError(f"{name} stream holds {data.size} bytes, expected {size}")
    return data


class BlockedStrategy(Strategy):
    id = "bie-blocked"
    kernels = "bie_cli.kernels.blocked"
    lossless = True  # with the default config; see is_lossless
    description = "tiles: occupancy set + per-tile local 8/16-bit indices or mask + values (exact or quantized)"
    Config = BlockedConfig

    def is_lossless(self, config: BlockedConfig) -> bool:
        return sparse.keeps_every_value(config)

    def encode(self, chunk: np.ndarray, config: BlockedConfig) -> tuple[bytes, dict]:
        flat = sparse.flat_elements(chunk)
        active = sparse.active_positions(flat, config.density)
        rows, cols = common.row_shape(chunk.shape)
        grid = TileGrid(rows, cols, config.tile)
        r, c = np.divmod(active, max(cols, 1))
        tile_ids = (r // grid.tile) * grid.tile_cols + c // grid.tile
        order = np.argsort(tile_ids, kind="stable")  # tile order; row-major inside a tile
        tile_ids, r, c = tile_ids[order], r[order], c[order]
        occupied, counts = np.unique(tile_ids, return_counts=True)
        r0, c0, height, width = grid.dims(occupied)
        first = np.repeat(np.arange(occupied.size), counts)
        local = (r - r0[first]) * width[first] + (c - c0[first])
        mask_bytes = (height * width + 7) // 8
        use_mask = mask_bytes < counts * grid.index_width
        element_mask = use_mask[first]
        index_dtype = "<u1" if grid.index_width == 1 else "<u2"
        streams = {
            "counts": (counts - 1).astype(index_dtype).view(np.uint8),
            "modes": np.packbits(use_mask.astype(np.uint8), bitorder="little"),
            "indices": local[~element_mask].astype(index_dtype).view(np.uint8),
            "masks": self._masks(local[element_mask], first[element_mask], use_mask, mask_bytes),
        }
        value_bytes, value_meta = sparse.encode_values(flat[active[order]], r, config.values, self.id)
        occupancy = position_codec.encode(occupied, grid.count)
        parts, kinds, lengths = [occupancy], [], [len(occupancy)]
        for name in _STREAMS:
            kind, data = _code_stream(streams[name], config.entropy)
            parts.append(data)
            kinds.append(kind)
            lengths.append(len(data))
        meta = {"tile": config.tile, "count": int(active.size), "tiles": int(occupied.size),
                "sections": lengths, "coding": kinds, "values": config.values, **value_meta}
        return b"".join(parts) + value_bytes, meta

    @staticmethod
    def _masks(local: np.ndarray, owner: np.ndarray, use_mask: np.ndarray, mask_bytes: np.ndarray) -> np.ndarray:
        """Mask-mode tiles' masks, each ``mask_bytes`` long, bit ``local`` set (little-endian bits)."""
        sizes = np.where(use_mask, mask_bytes, 0)
        starts = np.cumsum(sizes) - sizes
        bits = np.zeros(int(sizes.sum()) * 8, dtype=np.uint8)
        bits[starts[owner] * 8 + local] = 1
        return np.packbits(bits, bitorder="little")

    def decode(self, payload, meta, shape, dtype) -> np.ndarray:
        shape = tuple(shape)
        n = math.prod(shape)
        _, cols = common.row_shape(shape)
        r, c, values = self.unpack(payload, meta, shape, dtype)
        out = np.zeros(n, dtype=dtypes.get(dtype).numpy)
        out[r * cols + c] = values
        return out.reshape(shape)

    def unpack(self, payload, meta, shape, dtype) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Parse and check a payload without expanding it: (rows, columns, values) of the active
        elements, in tile order. ``decode`` scatters them; ``bie_cli.kernels.blocked`` reads them."""
        shape = tuple(shape)
        n = math.prod(shape)
        rows, cols = common.row_shape(shape)
        tile = common.meta_int(meta, "tile", 2, MAX_TILE)
        count = common.meta_int(meta, "count", 0, n)
        grid = TileGrid(rows, cols, tile)
        occupied_count = common.meta_int(meta, "tiles", 0, grid.count)
        mode = common.meta_choice(meta, "values", sparse.VALUE_MODES)
        lengths, kinds = meta.get("sections"), meta.get("coding")
        if not (isinstance(lengths, list) and len(lengths) == 5 and isinstance(kinds, list) and len(kinds) == 4
                and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in lengths)
                and all(k in ("raw", "rans") for k in kinds)):
            raise ValueError("meta sections/coding malformed")
        reader = common.PayloadReader(payload)
        occupied = position_codec.decode(reader.take(lengths[0]), grid.count)
        if occupied.size != occupied_count:
            raise ValueError(f"occupancy holds {occupied.size} tiles, meta says {occupied_count}")
        width_bytes = grid.index_width
        index_dtype = "<u1" if width_bytes == 1 else "<u2"
        raw = {name: reader.take(length) for name, length in zip(_STREAMS, lengths[1:], strict=True)}
        counts = _stream(kinds[0], raw["counts"], occupied.size * width_bytes, "counts").view(index_dtype)
        counts = counts.astype(np.int64) + 1
        r0, c0, height, width = grid.dims(occupied)
        sizes = height * width
        if (counts > sizes).any() or int(counts.sum()) != count:
            raise ValueError("tile counts do not fit their tiles or the element count")
        modes = np.unpackbits(_stream(kinds[1], raw["modes"], (occupied.size + 7) // 8, "modes"), bitorder="little")
        if modes[occupied.size:].any():
            raise ValueError("mode bits have nonzero padding")
        use_mask = modes[: occupied.size].astype(bool)
        first = np.repeat(np.arange(occupied.size), counts)
        element_mask = use_mask[first]
        n_indexed = int((~element_mask).sum())
        local = np.empty(count, dtype=np.int64)
        indices = _stream(kinds[2], raw["indices"], n_indexed * width_bytes, "indices").view(index_dtype)
        local[~element_mask] = indices
        mask_bytes = np.where(use_mask, (sizes + 7) // 8, 0)
        mask_data = _stream(kinds[3], raw["masks"], int(mask_bytes.sum()), "masks")
        local[element_mask] = self._mask_locals(mask_data, mask_bytes, sizes, counts, use_mask)
        # positions strictly increasing (tile order, then local order) and inside their tile
        key = first * (tile * tile) + local
        if (local >= sizes[first]).any() or (count > 1 and (np.diff(key) <= 0).any()):
            raise ValueError("local indices out of their tile or not increasing")
        r = r0[first] + local // width[first]
        c = c0[first] + local % width[first]
        values = sparse.decode_values(reader.rest(), meta, mode, r, dtype)
        return r, c, values

    @staticmethod
    def _mask_locals(data, mask_bytes, sizes, counts, use_mask) -> np.ndarray:
        bits = np.unpackbits(data, bitorder="little")
        set_bits = np.flatnonzero(bits)
        ends = np.cumsum(mask_bytes) * 8
        owner = np.searchsorted(ends, set_bits, side="right")
        starts = ends - mask_bytes * 8
        local = set_bits - starts[owner]
        if (local >= sizes[owner]).any():
            raise ValueError("mask has bits set outside its tile")
        per_tile = np.bincount(owner, minlength=sizes.size)
        if (per_tile[use_mask] != counts[use_mask]).any():
            raise ValueError("mask bit counts disagree with the tile counts")
        return local

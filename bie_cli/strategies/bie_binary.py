"""``bie-binary``: the significant set, one sign bit per kept weight, one scale per row.

S = {|w| > τ}: τ is ``threshold``, or, with ``density=d < 1``, the cut that
keeps the ``round(d * n)`` largest magnitudes of the chunk (never an exact
zero). The reconstruction is ŵ = a_r · sign(w) on S and 0 elsewhere, with
a_r = mean |w| over the kept weights of row r (the least-squares scale for a
sign pattern). The defaults ``threshold=0, density=1`` keep every nonzero
weight: plain 1-bit sign binarization of a dense matrix, and "positions +
signs" of a pruned one.

Payload: positions (:mod:`bie_cli.codecs.positions`: bitmap or gaps,
whichever is smaller) | one scale per row that holds kept weights (f16 when
every scale is a normal f16, else f32/f64) | sign bits (packed, or rANS when
smaller). Layout: docs/strategies/bie-binary.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..codecs import positions as position_codec
from ..codecs import rans
from . import _quant_common as common
from . import _sparse_common as sparse
from .base import Strategy, rans_if_smaller, require_finite


@dataclass(frozen=True)
class BinaryConfig:
    threshold: float = 0.0
    density: float = 1.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.threshold) and self.threshold >= 0):
            raise ValueError(f"threshold must be a finite number >= 0, got {self.threshold}")
        sparse.check_density(self.density)
        if self.threshold > 0 and self.density < 1:
            raise ValueError("give threshold or density, not both")


def encode_signs(negative: np.ndarray) -> tuple[str, bytes]:
    """One bit per kept weight (1 = negative): packed, or rANS over the packed bytes when smaller."""
    packed = np.packbits(negative.astype(np.uint8), bitorder="little")
    coded = rans_if_smaller(packed, packed.size)
    return ("rans", coded) if coded is not None else ("packed", packed.tobytes())


def decode_signs(kind: str, data: np.ndarray, count: int) -> np.ndarray:
    nbytes = (count + 7) // 8
    if kind == "rans":
        packed = rans.decode_symbols(data, nbytes, np.uint8)
    elif kind == "packed":
        if data.size != nbytes:
            raise ValueError(f"sign section holds {data.size} bytes, {count} signs need {nbytes}")
        packed = data
    else:
        raise ValueError(f"unknown sign section kind {kind!r}")
    bits = np.unpackbits(packed, bitorder="little")
    if bits[count:].any():
        raise ValueError("sign section has nonzero padding bits")
    return bits[:count].astype(bool)


class BinaryStrategy(Strategy):
    id = "bie-binary"
    kernels = "bie_cli.kernels.binary"
    lossless = False
    dtypes = common.FLOAT_DTYPES
    description = "significant set (bitmap or gaps) + 1 sign bit per kept weight + per-row mean |w|"
    Config = BinaryConfig

    def encode(self, chunk: np.ndarray, config: BinaryConfig) -> tuple[bytes, dict]:
        dtype_name = common.dtype_name_of(chunk)
        self.check_dtype(dtype_name)
        rows = common.as_rows(chunk)
        flat = rows.reshape(-1)
        require_finite(self.id, flat, "the chunk holds NaN/Inf; binarization needs finite weights")
        mags = np.abs(flat)
        if config.density < 1:
            kept = sparse.top_positions(mags, config.density)
            kept = kept[mags[kept] > 0]
        else:
            kept = np.flatnonzero(mags > config.threshold)
        row_length = max(rows.shape[1], 1)
        value_rows = kept // row_length
        present, inverse, counts = np.unique(value_rows, return_inverse=True, return_counts=True)
        sums = np.bincount(inverse, weights=mags[kept].astype(np.float64), minlength=present.size)
        mean = sums / np.maximum(counts, 1)
        scale_dtype = common.choose_scale_dtype("auto", "channel", mean)
        sign_kind, sign_bytes = encode_signs(flat[kept] < 0)
        position_bytes = position_codec.encode(kept, flat.size)
        meta = {"count": int(kept.size), "positions": len(position_bytes), "scale_dtype": scale_dtype,
                "signs": sign_kind}
        return position_bytes + common.scale_bytes(mean, scale_dtype) + sign_bytes, meta

    def decode(self, payload, meta, shape, dtype) -> np.ndarray:
        shape = tuple(shape)
        parsed = unpack(payload, meta, shape, dtype)
        out = np.zeros(math.prod(shape), dtype=parsed.scale.dtype)
        scale = parsed.scale[parsed.inverse]
        out[parsed.kept] = np.where(parsed.negative, -scale, scale)
        return common.finish(out, shape, dtype)


@dataclass(frozen=True)
class BinaryChunk:
    """A parsed payload (:func:`unpack`): ŵ[kept[i]] = ±scale[inverse[i]] (minus where ``negative[i]``).

    ``kept``: sorted flat positions; ``scale``: one per row that holds kept
    weights, in row order; ``inverse``: each kept weight's index into ``scale``.
    """

    kept: np.ndarray
    negative: np.ndarray
    scale: np.ndarray
    inverse: np.ndarray


def unpack(payload, meta: dict, shape: tuple[int, ...], dtype: str) -> BinaryChunk:
    """Parse and check a payload without expanding it (``decode`` and ``bie_cli.kernels.binary`` use it)."""
    shape = tuple(shape)
    BinaryStrategy().check_dtype(dtype)
    n = math.prod(shape)
    count = common.meta_int(meta, "count", 0, n)
    position_length = common.meta_int(meta, "positions", 0, len(payload))
    scale_dtype = common.meta_choice(meta, "scale_dtype", ("f16", "f32", "f64"))
    sign_kind = common.meta_choice(meta, "signs", ("packed", "rans"))
    reader = common.PayloadReader(payload)
    kept = position_codec.decode(reader.take(position_length), n)
    if kept.size != count:
        raise ValueError(f"positions hold {kept.size} elements, meta says {count}")
    _, row_length = common.row_shape(shape)
    present, inverse = np.unique(kept // max(row_length, 1), return_inverse=True)
    work = common.work_dtype(dtype)
    scale = reader.array(common.SCALE_DTYPES[scale_dtype], present.size).astype(work)
    negative = decode_signs(sign_kind, reader.rest(), count)
    return BinaryChunk(kept, negative, scale, inverse.reshape(-1))

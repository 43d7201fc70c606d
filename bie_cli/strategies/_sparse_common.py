"""Plumbing shared by the index-storage strategies ``sdr`` and ``bie-blocked``
(and the significant-set selection of ``bie-binary``).

* which elements are *active*: every element whose bit pattern is not all
  zeros (so -0.0 and NaN are kept and come back bit for bit), or, with
  ``density``, the largest-magnitude fraction of the chunk;
* the values section: the active elements' values, ``exact`` (byte planes,
  each rANS-coded when that is smaller: lossless for every dtype) or
  quantized for the hybrid (prune + quantize) modes: ``fp16``, or ``int8`` /
  ``int4`` with one symmetric scale per row that holds values.
"""

from __future__ import annotations

import math

import numpy as np

from .. import dtypes
from ..codecs import bitpack, byteplanes, rans
from ..errors import BadInputError
from . import _quant_common as common
from .base import rans_if_smaller, require_finite

VALUE_MODES = ("exact", "fp16", "int8", "int4")
_INT_BITS = {"int8": 8, "int4": 4}


def check_density(density: float | None, name: str = "density") -> None:
    if density is not None and not (math.isfinite(density) and 0.0 < density <= 1.0):
        raise ValueError(f"{name} must be in (0, 1], got {density}")


def flat_elements(chunk: np.ndarray) -> np.ndarray:
    """The chunk as a contiguous 1-D array (row-major: row r, column c at r*row_length + c)."""
    return np.ascontiguousarray(chunk).reshape(-1)


def nonzero_positions(flat: np.ndarray) -> np.ndarray:
    """Positions of elements whose bytes are not all zero."""
    itemsize = flat.dtype.itemsize
    if itemsize in (1, 2, 4, 8):
        bits = flat.view(np.dtype(f"u{itemsize}"))
        return np.flatnonzero(bits)
    return np.flatnonzero(flat.view(np.uint8).reshape(-1, itemsize).any(axis=1))


def magnitudes(flat: np.ndarray) -> np.ndarray:
    """|x| as float64, NaN counted as the largest magnitude (so it is kept, exactly)."""
    if flat.dtype == np.bool_:
        return flat.astype(np.float64)
    mags = np.abs(flat.astype(np.complex128 if flat.dtype.kind == "c" else np.float64))
    return np.where(np.isnan(mags), np.inf, mags)


def top_positions(mags: np.ndarray, density: float) -> np.ndarray:
    """Sorted positions of the ``round(density * n)`` largest magnitudes.

    Ties at the cut are broken by position (lowest first), so the choice is
    deterministic and does not depend on the sort algorithm.
    """
    n = mags.size
    keep = min(n, max(0, round(density * n)))
    if keep == 0:
        return np.zeros(0, dtype=np.int64)
    if keep == n:
        return np.arange(n, dtype=np.int64)
    cut = np.partition(mags, n - keep)[n - keep]  # the keep-th largest magnitude
    above = np.flatnonzero(mags > cut)
    ties = np.flatnonzero(mags == cut)[: keep - above.size]
    return np.union1d(above, ties).astype(np.int64)


def active_positions(flat: np.ndarray, density: float | None) -> np.ndarray:
    """The positions a sparse strategy stores: every nonzero element, or with a
    ``density`` the largest magnitudes (magnitude pruning, lossy)."""
    if density is None:
        return nonzero_positions(flat)
    return top_positions(magnitudes(flat), density)


def keeps_every_value(config) -> bool:
    """A sparse config is lossless when values are stored exactly and nothing is pruned."""
    return config.values == "exact" and (config.density is None or config.density >= 1.0)


def is_float(dtype_name: str) -> bool:
    return dtype_name in common.FLOAT_DTYPES


# -- values section ---------------------------------------------------------------------
def encode_values(values: np.ndarray, value_rows: np.ndarray, mode: str, strategy_id: str) -> tuple[bytes, dict]:
    """Code the active elements' values (1-D, the chunk's dtype); ``value_rows`` gives each one's row."""
    dtype_name = dtypes.from_numpy(values.dtype).name
    if mode == "exact":
        return byteplanes.encode(values.view(np.uint8), values.dtype.itemsize), {}
    if not is_float(dtype_name):
        raise BadInputError(
            f"strategy {strategy_id!r}: values={mode} quantizes floats; {dtype_name} needs values=exact"
        )
    work = values.astype(common.work_dtype(dtype_name))
    require_finite(strategy_id, work, f"values={mode} needs finite values; the chunk holds NaN/Inf "
                   "(use values=exact to store them)")
    if mode == "fp16":
        half = np.clip(work, -65504.0, 65504.0).astype("<f2")
        return byteplanes.encode(half.view(np.uint8), 2), {}
    bits = _INT_BITS[mode]
    top = (1 << (bits - 1)) - 1
    rows, inverse = np.unique(value_rows, return_inverse=True)
    peak = np.zeros(rows.size, dtype=work.dtype)
    np.maximum.at(peak, inverse, np.abs(work))
    scale_dtype = common.choose_scale_dtype("auto", "channel", peak / top)
    scale = common.round_scales(peak / top, scale_dtype, work.dtype)
    inv = np.divide(1.0, scale, out=np.zeros_like(scale), where=scale != 0)
    codes = np.clip(np.rint(work * inv[inverse]), -top, top).astype(np.int64) + top
    codes = codes.astype(np.uint8)
    kind, code_bytes = _encode_codes(codes, bits)
    return common.scale_bytes(scale, scale_dtype) + code_bytes, {"scale_dtype": scale_dtype, "codes": kind}


def _encode_codes(codes: np.ndarray, bits: int) -> tuple[str, bytes]:
    packed = bitpack.pack_bits(codes, bits)
    coded = rans_if_smaller(codes, len(packed))
    return ("rans", coded) if coded is not None else ("packed", packed)


def decode_values(data, meta: dict, mode: str, value_rows: np.ndarray, dtype_name: str) -> np.ndarray:
    """Inverse of :func:`encode_values`: the values in the chunk's dtype."""
    count = value_rows.size
    np_dtype = dtypes.get(dtype_name).numpy
    if mode == "exact":
        raw = byteplanes.decode(data, count, np_dtype.itemsize)
        return raw.view(np_dtype)
    if not is_float(dtype_name):
        raise ValueError(f"values={mode} is not valid for {dtype_name}")
    work = common.work_dtype(dtype_name)
    if mode == "fp16":
        half = byteplanes.decode(data, count, 2).view("<f2")
        return common.finish(half.astype(work), (count,), dtype_name)
    bits = _INT_BITS.get(mode)
    if bits is None:
        raise ValueError(f"unknown values mode {mode!r}")
    top = (1 << (bits - 1)) - 1
    scale_dtype = common.meta_choice(meta, "scale_dtype", ("f16", "f32", "f64"))
    kind = common.meta_choice(meta, "codes", ("packed", "rans"))
    rows, inverse = np.unique(value_rows, return_inverse=True)
    reader = common.PayloadReader(data)
    scale = reader.array(common.SCALE_DTYPES[scale_dtype], rows.size).astype(work)
    data = reader.rest()
    codes = rans.decode_symbols(data, count, np.uint8) if kind == "rans" else bitpack.unpack_bits(data, bits, count)
    if codes.size and int(codes.max()) > 2 * top:
        raise ValueError(f"value code {int(codes.max())} out of range (max {2 * top})")
    out = (codes.astype(work) - work.type(top)) * scale[inverse]
    return common.finish(out, (count,), dtype_name)

"""Plumbing shared by the lossy strategies ``quant``, ``nf4`` and ``ternary``.

* rows and scale units: a chunk is whole rows (first axis); a rank-1 chunk is
  one row. A *scale unit* is the whole chunk (``tensor``), one row
  (``channel``) or ``group_size`` consecutive elements of a row (``group``;
  the last group of a row may be shorter). Units are laid out as a
  (units, unit_length) matrix; short last groups are padded by repeating the
  row's last element, which changes no min/max/absmax, and the padding codes
  are never stored.
* non-finite values: refused, or with ``allow_nonfinite`` stored exactly
  (positions + original bytes) and quantized as 0.
* code sections: bit-packed, or rANS-coded (the shared coder
  :mod:`bie_cli.codecs.rans`, uint8 symbols) when that is smaller.
* little-endian float arrays for scales, and a bounds-checked payload reader.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .. import dtypes
from ..codecs import bitpack, rans
from .base import nonfinite_positions, rans_if_smaller

FLOAT_DTYPES = frozenset({"F32", "F16", "BF16", "F64"})
SCALE_DTYPES = {"f16": np.dtype("<f2"), "f32": np.dtype("<f4"), "f64": np.dtype("<f8")}
_F16_MIN_NORMAL = 2.0**-14
_F16_MAX = 65504.0
_F32_MIN_NORMAL = float(np.finfo(np.float32).tiny)
_F32_MAX = float(np.finfo(np.float32).max)


def work_dtype(dtype_name: str) -> np.dtype:
    """float64 for F64 chunks, float32 otherwise (bf16/f16 are upcast for the math)."""
    return np.dtype(np.float64) if dtype_name == "F64" else np.dtype(np.float32)


def row_shape(shape: tuple[int, ...]) -> tuple[int, int]:
    """(rows, row_length) of a chunk: the first axis is rows; rank 0/1 is one row."""
    count = math.prod(shape)
    if len(shape) < 2:
        return (1 if count else 0), count
    rows = shape[0]
    return rows, (count // rows if rows else 0)


def as_rows(chunk: np.ndarray) -> np.ndarray:
    """The chunk as a C-contiguous (rows, row_length) array in the working float type."""
    from ..dtypes import from_numpy

    name = from_numpy(chunk.dtype).name
    rows, length = row_shape(chunk.shape)
    return np.ascontiguousarray(chunk, dtype=work_dtype(name)).reshape(rows, length)


def dtype_name_of(chunk: np.ndarray) -> str:
    return dtypes.from_numpy(chunk.dtype).name


# -- elements stored exactly ---------------------------------------------------------
def exact_section(chunk: np.ndarray, positions: np.ndarray) -> bytes:
    """u64 flat positions, then those elements' original bytes (``restore_exact`` reads it)."""
    if positions.size == 0:
        return b""
    original = np.ascontiguousarray(chunk).reshape(-1)[positions]
    return positions.astype("<u8").tobytes() + original.tobytes()


def exact_section_size(count: int, dtype_name: str) -> int:
    return count * (8 + dtypes.get(dtype_name).itemsize)


def read_exact(section: np.ndarray, count: int, dtype_name: str, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(int64 flat positions, original values) of the exactly stored elements of a ``size``-element chunk."""
    np_dtype = dtypes.get(dtype_name).numpy
    if count == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np_dtype)
    reader = PayloadReader(section)
    positions = reader.array("<u8", count)
    values = reader.array(np_dtype, count)
    if int(positions.max()) >= size:
        raise ValueError("exactly stored element outside the chunk")
    return positions.astype(np.int64), values


def restore_exact(out: np.ndarray, section: np.ndarray, count: int, dtype_name: str) -> None:
    """Write the exactly stored elements back into ``out``."""
    if count == 0:
        return
    flat = out.reshape(-1)
    positions, values = read_exact(section, count, dtype_name, flat.size)
    flat[positions] = values


# -- scale units ---------------------------------------------------------------------
@dataclass(frozen=True)
class UnitLayout:
    rows: int
    row_length: int
    granularity: str
    group_size: int  # elements per unit along a row (== row_length for channel)

    @property
    def groups_per_row(self) -> int:
        if self.granularity == "tensor":
            return 1
        return -(-self.row_length // self.group_size) if self.row_length else 0

    @property
    def count(self) -> int:
        """Number of scale units."""
        if self.granularity == "tensor":
            return 1 if self.rows * self.row_length else 0
        return self.rows * self.groups_per_row

    @property
    def padded(self) -> bool:
        return self.granularity == "group" and self.groups_per_row * self.group_size != self.row_length


def layout_for(rows: int, row_length: int, granularity: str, group_size: int) -> UnitLayout:
    if granularity == "group":
        size = max(1, min(group_size, row_length))
    elif granularity == "channel":
        size = row_length
    else:
        size = rows * row_length
    return UnitLayout(rows, row_length, granularity, size)


def to_units(x: np.ndarray, layout: UnitLayout) -> np.ndarray:
    """(rows, row_length) -> (units, unit_length), padding short last groups."""
    if layout.granularity == "tensor":
        return x.reshape(1, -1)
    if layout.granularity == "channel":
        return x
    width = layout.groups_per_row * layout.group_size
    if width != layout.row_length:
        x = np.pad(x, ((0, 0), (0, width - layout.row_length)), mode="edge")
    return x.reshape(-1, layout.group_size)


def finite_units(strategy_id: str, rows: np.ndarray, layout: UnitLayout, allow_nonfinite: bool, stats):
    """``(rows, units, stats(units), exact)`` with NaN/Inf elements set aside.

    ``stats`` returns a tuple whose last item is the per-unit sum of squares: a
    non-finite sum is how a NaN/Inf is noticed without a second pass over the
    data. Such elements are refused unless ``allow_nonfinite``; allowed ones are
    zeroed in a copy of ``rows`` (the caller's chunk is left alone) and their
    flat positions returned, to be stored exactly.
    """
    units = to_units(rows, layout)
    found = stats(units)
    exact = np.zeros(0, dtype=np.int64)
    if not np.isfinite(found[-1].sum()):  # NaN/Inf somewhere (or an F64 sum overflow)
        exact = nonfinite_positions(strategy_id, rows, allow_nonfinite)
        if exact.size:
            rows = rows.copy()
            rows.reshape(-1)[exact] = 0.0
            units = to_units(rows, layout)
            found = stats(units)
    return rows, units, found, exact


def from_units(u: np.ndarray, layout: UnitLayout) -> np.ndarray:
    """(units, unit_length) -> (rows, row_length), dropping padding."""
    x = u.reshape(layout.rows, -1)
    if x.shape[1] != layout.row_length:
        x = x[:, : layout.row_length]
    return x


def unit_codes_to_rows(codes: np.ndarray, layout: UnitLayout) -> np.ndarray:
    return np.ascontiguousarray(from_units(codes, layout)).reshape(-1)


def rows_codes_to_units(codes: np.ndarray, layout: UnitLayout) -> np.ndarray:
    x = codes.reshape(layout.rows, layout.row_length)
    return to_units(x, layout)


# -- scales ------------------------------------------------------------------------------
def choose_scale_dtype(requested: str, granularity: str, *arrays: np.ndarray) -> str:
    """``auto``: f16 when every value is 0 or a normal f16, else f32, else f64.

    One per-tensor scale costs nothing, so it is never f16. f64 is only needed
    for F64 tensors with values beyond float32's range.
    """
    if requested != "auto":
        return requested
    magnitudes = [np.abs(v[v != 0]) for v in arrays]
    magnitudes = [a for a in magnitudes if a.size]
    if any(a.max() > _F32_MAX or a.min() < _F32_MIN_NORMAL for a in magnitudes):
        return "f64"
    if granularity == "tensor":
        return "f32"
    if any(a.min() < _F16_MIN_NORMAL or a.max() > _F16_MAX for a in magnitudes):
        return "f32"
    return "f16"


def round_scales(values: np.ndarray, scale_dtype: str, work: np.dtype) -> np.ndarray:
    """The values as they will be stored (so codes are chosen against the stored scale)."""
    return values.astype(SCALE_DTYPES[scale_dtype]).astype(work)


def scale_bytes(values: np.ndarray, scale_dtype: str) -> bytes:
    return values.astype(SCALE_DTYPES[scale_dtype]).tobytes()


# -- code sections --------------------------------------------------------------------
def encode_codes(codes: np.ndarray, bits: int, counts: np.ndarray | None, entropy: str) -> tuple[str, bytes]:
    """Store uint8 codes as ``packed`` (b bits each), ``trits`` (bits=0: 5 a byte) or ``rans``.

    ``counts``, when given, is the codes' histogram (any length covering the
    largest code); ``rans`` is chosen only when its stream is really smaller.
    """
    codes = np.ascontiguousarray(codes, dtype=np.uint8).reshape(-1)
    if bits == 0:
        packed_len = bitpack.trit_packed_size(codes.size)
    else:
        packed_len = bitpack.packed_size(codes.size, bits)
    if entropy == "auto" and codes.size:
        if counts is None:
            counts = rans.histogram(codes)
        # the precision that suits the histogram: at the coder's default 14 bits
        # every code loses ~1e-3 bit, which 4-bit and ternary codes need not pay
        coded = rans_if_smaller(codes, packed_len, counts, rans.scale_bits_for_size(counts))
        if coded is not None:
            return "rans", coded
    if bits == 0:
        return "trits", bitpack.pack_trits(codes)
    return "packed", bitpack.pack_bits(codes, bits)


def decode_codes(kind: str, data, bits: int, count: int, top: int) -> np.ndarray:
    """Inverse of :func:`encode_codes`; every code is checked to be <= ``top``."""
    if kind == "rans":
        # the stream's table may only hold codes 0..top, so no decoded code exceeds it
        codes = rans.decode_symbols(data, count, np.uint8, alphabet=top + 1)
    elif kind == "packed" and bits >= 1:
        codes = bitpack.unpack_bits(data, bits, count)
    elif kind == "trits" and bits == 0:
        codes = bitpack.unpack_trits(data, count)
    else:
        raise ValueError(f"unknown code section kind {kind!r}")
    if codes.size and int(codes.max()) > top:
        raise ValueError(f"code {int(codes.max())} out of range (max {top})")
    return codes


# -- payload reading --------------------------------------------------------------------
class PayloadReader:
    """Sequential, bounds-checked reads from a payload; ``ValueError`` on overrun."""

    def __init__(self, payload: bytes | memoryview) -> None:
        self.data = np.frombuffer(payload, dtype=np.uint8)
        self.pos = 0

    def take(self, nbytes: int) -> np.ndarray:
        if nbytes < 0 or self.pos + nbytes > self.data.size:
            raise ValueError(
                f"payload truncated: needs {nbytes} bytes at offset {self.pos}, has {self.data.size - self.pos}"
            )
        out = self.data[self.pos : self.pos + nbytes]
        self.pos += nbytes
        return out

    def array(self, dtype, count: int) -> np.ndarray:
        dtype = np.dtype(dtype)
        return self.take(dtype.itemsize * count).view(dtype)

    def rest(self) -> np.ndarray:
        out = self.data[self.pos :]
        self.pos = self.data.size
        return out


def meta_int(meta: dict, key: str, low: int, high: int) -> int:
    value = meta.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"meta {key}={value!r} is not an integer in [{low}, {high}]")
    return value


def meta_choice(meta: dict, key: str, choices: tuple) -> object:
    value = meta.get(key)
    if value not in choices or isinstance(value, bool) != isinstance(choices[0], bool):
        raise ValueError(f"meta {key}={value!r} is not one of {choices}")
    return value


def finish(values: np.ndarray, shape: tuple[int, ...], dtype_name: str) -> np.ndarray:
    """Cast decoded floats to the chunk's dtype (clipped to its finite range) and shape."""
    np_dtype = dtypes.get(dtype_name).numpy
    if dtype_name == "F16":
        values = np.clip(values, -_F16_MAX, _F16_MAX)
    return values.astype(np_dtype).reshape(shape)


@dataclass(frozen=True)
class ScaledMeta:
    """What ``quant`` and ``ternary`` meta say about a chunk's layout (checked)."""

    layout: UnitLayout
    rows: int
    row_length: int
    scale_dtype: str
    codes: str
    n_exact: int


def parse_scaled_meta(meta: dict, shape: tuple[int, ...], code_kinds: tuple[str, ...]) -> ScaledMeta:
    """Validate the layout part of the meta against the chunk's shape."""
    granularity = meta_choice(meta, "granularity", ("tensor", "channel", "group"))
    group_size = meta_int(meta, "group_size", 0, 1 << 62)
    scale_dtype = meta_choice(meta, "scale_dtype", ("f16", "f32", "f64"))
    kind = meta_choice(meta, "codes", code_kinds)
    n_exact = meta_int(meta, "exact", 0, 1 << 62) if "exact" in meta else 0
    rows, row_length = row_shape(shape)
    layout = layout_for(rows, row_length, granularity, group_size)
    if granularity == "group" and layout.count and layout.group_size != group_size:
        raise ValueError(f"meta group_size={group_size} does not fit rows of {row_length}")
    return ScaledMeta(layout, rows, row_length, scale_dtype, kind, n_exact)


def check_empty_payload(reader: PayloadReader) -> None:
    if len(reader.rest()):
        raise ValueError("payload of an empty chunk is not empty")

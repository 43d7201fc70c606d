"""``bie-bitplane``: k-bit sign-magnitude codes stored as bit planes, most significant first.

Per row r, a scale s_r = max|w| / (2**(k-1) - 1) and a magnitude code
q = round(|w| / s_r) in [0, 2**(k-1) - 1]: one sign bit and k-1 magnitude
bits. Each magnitude plane (bit k-2 first) is packed one bit per element and
coded on its own (all-zero, rANS over the packed bytes, or packed), so sparse
high planes shrink to almost nothing. The sign plane is stored sparsely: the
sign of an element travels in the section of the plane where its code gets
its first set bit (elements whose code is 0 need no sign), so reading the top
planes also gives every sign those planes need. With k = 1 there is only a
sign plane (every element) and s_r = mean |w| (ŵ = ±s_r).

Progressive: ``bits=m`` reads the scales and the top m-1 magnitude planes
and gives an m-bit reconstruction. With r = k - m low bits missing, the known
part of the code q_m = (q >> r) << r is rebuilt at its bucket's midpoint,
q_m + (2**r - 1)/2, except q_m = 0, which stays 0 (a dead zone: the zeros
of a pruned matrix stay zeros). m = 1 therefore gives zeros when k > 1.

The payload starts with a directory holding every section's kind, length
and XXH3-64, and the directory's own XXH3-64, so :meth:`decode_planes` can
check and read only the sections it needs: a reader of a memory-mapped file
touches only those bytes. Layout: docs/strategies/bie-bitplane.md.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Literal

import numpy as np
import xxhash

from ..codecs import intcode, rans
from . import _quant_common as common
from .base import Strategy, rans_if_smaller, require_finite
from .bie_binary import decode_signs, encode_signs

MAGIC = b"BIEP"
VERSION = 1
DIRECTORY_HEAD = struct.Struct("<4sBBBB")  # magic, version, k, scale dtype code, section count
SECTION = struct.Struct("<B7xQQ")  # kind, length, xxh3-64
DIRECTORY_HASH = struct.Struct("<Q")
PACKED, RANS, ZERO = 0, 1, 2
_KIND_NAMES = {PACKED: "packed", RANS: "rans", ZERO: "zero"}
_SCALE_CODES = ("f16", "f32", "f64")
_SIGN_KINDS = ("packed", "rans")


@dataclass(frozen=True)
class BitplaneConfig:
    bits: int = 8
    entropy: Literal["auto", "none"] = "auto"

    def __post_init__(self) -> None:
        if not 1 <= self.bits <= 8:
            raise ValueError(f"bits must be between 1 and 8, got {self.bits}")


def section_count(k: int) -> int:
    """Scales plus k-1 magnitude planes (k >= 2), or scales plus the sign plane (k = 1)."""
    return 1 + max(k - 1, 1)


def directory_size(k: int) -> int:
    return DIRECTORY_HEAD.size + SECTION.size * section_count(k) + DIRECTORY_HASH.size


def _split_section(data) -> tuple[tuple[int, np.ndarray], str, np.ndarray]:
    """A magnitude section: (plane kind, plane bytes), sign kind, sign bytes."""
    raw = np.frombuffer(data, dtype=np.uint8)
    if raw.size < 2:
        raise ValueError("bitplane section is truncated")
    kind = int(raw[0])
    length, pos = intcode.get_varint(raw, 1)
    if pos + length + 1 > raw.size:
        raise ValueError("bitplane section is truncated")
    sign_code = int(raw[pos + length])
    if sign_code >= len(_SIGN_KINDS):
        raise ValueError(f"unknown sign section kind {sign_code}")
    return (kind, raw[pos : pos + length]), _SIGN_KINDS[sign_code], raw[pos + length + 1 :]


def _code_plane(bits: np.ndarray, entropy: str) -> tuple[int, bytes]:
    if not bits.any():
        return ZERO, b""
    packed = np.packbits(bits, bitorder="little")
    coded = rans_if_smaller(packed, packed.size) if entropy == "auto" else None
    return (RANS, coded) if coded is not None else (PACKED, packed.tobytes())


def _plane_bits(kind: int, data, count: int) -> np.ndarray:
    nbytes = (count + 7) // 8
    if kind == ZERO:
        if len(data):
            raise ValueError("an all-zero plane has bytes")
        return np.zeros(count, dtype=np.uint8)
    if kind == RANS:
        packed = rans.decode_symbols(data, nbytes, np.uint8)
    elif kind == PACKED:
        packed = np.frombuffer(data, dtype=np.uint8)
        if packed.size != nbytes:
            raise ValueError(f"plane holds {packed.size} bytes, {count} elements need {nbytes}")
    else:
        raise ValueError(f"unknown plane kind {kind}")
    bits = np.unpackbits(packed, bitorder="little")
    if bits[count:].any():
        raise ValueError("plane has nonzero padding bits")
    return bits[:count]


@dataclass(frozen=True)
class Directory:
    k: int
    scale_dtype: str
    sections: list[tuple[int, int, int, int]]  # (kind, offset, length, xxh3)


def read_directory(payload) -> Directory:
    """Parse and check the directory (the only bytes read besides the sections used)."""
    view = memoryview(payload)
    if len(view) < DIRECTORY_HEAD.size:
        raise ValueError("bitplane payload shorter than its directory")
    magic, version, k, scale_code, count = DIRECTORY_HEAD.unpack_from(view)
    if magic != MAGIC or version != VERSION:
        raise ValueError("bitplane directory has the wrong magic or version")
    if not 1 <= k <= 8 or count != section_count(k) or scale_code >= len(_SCALE_CODES):
        raise ValueError("bitplane directory fields out of range")
    size = directory_size(k)
    if len(view) < size:
        raise ValueError("bitplane payload shorter than its directory")
    (stored,) = DIRECTORY_HASH.unpack_from(view, size - DIRECTORY_HASH.size)
    if xxhash.xxh3_64_intdigest(view[: size - DIRECTORY_HASH.size]) != stored:
        raise ValueError("bitplane directory checksum mismatch")
    sections = []
    offset = size
    for index in range(count):
        kind, length, digest = SECTION.unpack_from(view, DIRECTORY_HEAD.size + index * SECTION.size)
        if kind not in _KIND_NAMES:
            raise ValueError(f"unknown section kind {kind}")
        sections.append((kind, offset, length, digest))
        offset += length
    if offset != len(view):
        raise ValueError(f"bitplane sections end at {offset}, payload has {len(view)} bytes")
    return Directory(k, _SCALE_CODES[scale_code], sections)


def bytes_for_bits(payload, bits: int) -> int:
    """Payload bytes a decode at ``bits`` planes reads: directory, scales and the top planes."""
    directory = read_directory(payload)
    planes = 1 if directory.k == 1 else min(bits, directory.k) - 1
    used = directory.sections[: 1 + planes]
    return directory_size(directory.k) + sum(length for _, _, length, _ in used)


class BitplaneStrategy(Strategy):
    id = "bie-bitplane"
    kernels = "bie_cli.kernels.bitplane"
    lossless = False
    progressive = True
    dtypes = common.FLOAT_DTYPES
    description = "k-bit sign-magnitude codes as bit planes, each entropy-coded; progressive (decode top m planes)"
    Config = BitplaneConfig

    def encode(self, chunk: np.ndarray, config: BitplaneConfig) -> tuple[bytes, dict]:
        dtype_name = common.dtype_name_of(chunk)
        self.check_dtype(dtype_name)
        rows = common.as_rows(chunk)
        require_finite(self.id, rows, "the chunk holds NaN/Inf; bit planes need finite weights")
        k = config.bits
        mags = np.abs(rows)
        if k == 1:
            raw_scale = mags.mean(axis=1, dtype=np.float64) if rows.shape[1] else np.zeros(rows.shape[0])
        else:
            raw_scale = (mags.max(axis=1) if rows.shape[1] else np.zeros(rows.shape[0])) / ((1 << (k - 1)) - 1)
        scale_dtype = common.choose_scale_dtype("auto", "channel", np.asarray(raw_scale))
        scale = common.round_scales(np.asarray(raw_scale), scale_dtype, rows.dtype)
        negative = (rows < 0).reshape(-1)
        sections = [(PACKED, common.scale_bytes(scale, scale_dtype))]
        if k == 1:
            sections.append(_code_plane(negative.astype(np.uint8), config.entropy))
        else:
            top = (1 << (k - 1)) - 1
            inv = np.divide(1.0, scale, out=np.zeros_like(scale), where=scale != 0)
            q = np.clip(np.rint(mags * inv[:, None]), 0, top).astype(np.uint8).reshape(-1)
            significant = np.zeros(q.size, dtype=bool)
            for bit in range(k - 2, -1, -1):
                plane = ((q >> bit) & 1).astype(bool)
                kind, data = _code_plane(plane.astype(np.uint8), config.entropy)
                sign_kind, sign_data = encode_signs(negative[plane & ~significant])
                significant |= plane
                body = bytearray([kind])
                intcode.put_varint(body, len(data))
                body += data
                body.append(_SIGN_KINDS.index(sign_kind))
                sections.append((kind, bytes(body) + sign_data))
        directory = bytearray(DIRECTORY_HEAD.pack(MAGIC, VERSION, k, _SCALE_CODES.index(scale_dtype), len(sections)))
        for kind, data in sections:
            directory += SECTION.pack(kind, len(data), xxhash.xxh3_64_intdigest(data))
        directory += DIRECTORY_HASH.pack(xxhash.xxh3_64_intdigest(bytes(directory)))
        meta = {"bits": k, "planes": [_KIND_NAMES[kind] for kind, _ in sections[1:]],
                "section_bytes": [len(data) for _, data in sections]}
        return bytes(directory) + b"".join(data for _, data in sections), meta

    def decode(self, payload, meta, shape, dtype) -> np.ndarray:
        return self.decode_planes(payload, meta, shape, dtype, 8)

    def decode_planes(self, payload, meta, shape, dtype, bits: int) -> np.ndarray:
        shape = tuple(shape)
        parsed = unpack(payload, meta, shape, dtype, bits)
        k, m = parsed.k, parsed.m
        rows, row_length = common.row_shape(shape)
        work = parsed.scale.dtype
        if k == 1:
            magnitude = np.ones(rows * row_length, dtype=work)
        else:
            code = parsed.code
            missing = k - m
            magnitude = code.astype(work)
            if missing:
                magnitude = np.where(code > 0, magnitude + work.type(((1 << missing) - 1) / 2), 0).astype(work)
        values = magnitude.reshape(rows, row_length) * parsed.scale[:, None]
        values = np.where(parsed.negative.reshape(rows, row_length), -values, values)
        return common.finish(values, shape, dtype)


@dataclass(frozen=True)
class BitplaneChunk:
    """A payload parsed down to integer codes (:func:`unpack`), not yet scaled.

    ``k`` bits stored, ``m`` read. With ``k >= 2``, ``code`` holds the top
    ``m - 1`` magnitude bits of each element in place (the low ``k - m`` bits
    zero) and ``negative`` its sign; with ``k = 1`` every element is
    ``±scale`` and ``code`` is None. ``scale`` is one per row.
    ``decode_planes`` and ``bie_cli.kernels.bitplane`` both read this.
    """

    k: int
    m: int
    scale: np.ndarray
    code: np.ndarray | None
    negative: np.ndarray


def unpack(payload, meta: dict, shape: tuple[int, ...], dtype: str, bits: int = 8) -> BitplaneChunk:
    """Check the directory and the sections the top ``bits`` planes need, and parse them."""
    shape = tuple(shape)
    BitplaneStrategy().check_dtype(dtype)
    if isinstance(bits, bool) or not isinstance(bits, int) or bits < 1:
        raise ValueError(f"bits must be a positive integer, got {bits!r}")
    view = memoryview(payload)
    directory = read_directory(view)
    k = directory.k
    if meta.get("bits", k) != k:
        raise ValueError(f"meta says {meta.get('bits')!r} bits, payload directory says {k}")
    m = min(bits, k)
    rows, row_length = common.row_shape(shape)
    n = rows * row_length

    def section(index: int) -> memoryview:
        _, offset, length, digest = directory.sections[index]
        data = view[offset : offset + length]
        if xxhash.xxh3_64_intdigest(data) != digest:
            raise ValueError(f"bitplane section {index} checksum mismatch")
        return data

    scale_np = common.SCALE_DTYPES[directory.scale_dtype]
    scale_data = section(0)
    if len(scale_data) != rows * scale_np.itemsize:
        raise ValueError(f"scale section holds {len(scale_data)} bytes, {rows} rows need {rows * scale_np.itemsize}")
    work = common.work_dtype(dtype)
    scale = np.frombuffer(scale_data, dtype=scale_np).astype(work)
    if k == 1:
        negative = _plane_bits(directory.sections[1][0], section(1), n).astype(bool)
        return BitplaneChunk(k, m, scale, None, negative)
    negative = np.zeros(n, dtype=bool)
    significant = np.zeros(n, dtype=bool)
    code = np.zeros(n, dtype=np.int32)
    for index in range(1, m):
        plane, signs_kind, sign_data = _split_section(section(index))
        bits_ = _plane_bits(plane[0], plane[1], n).astype(bool)
        new = bits_ & ~significant
        negative[new] = decode_signs(signs_kind, sign_data, int(new.sum()))
        significant |= bits_
        code |= bits_.astype(np.int32) << (k - 1 - index)  # section 1 holds bit k-2
    return BitplaneChunk(k, m, scale, code, negative)

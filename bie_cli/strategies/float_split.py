"""``float-split``: bit-exact float coding by splitting elements into modelled streams.

Each element's top 16 bits (sign, exponent, top mantissa bits) are its
*head*. The head's magnitude without its ``low_bits`` lowest bits is a
*symbol* (exponent and top mantissa bits, up to 12 bits), coded with static
rANS using a table fitted to this chunk, so the mantissa bits in the symbol
are modelled given the exponent. The sign and the low bits (the *residual*)
and the lower mantissa bytes (*tail planes*, one per byte position) are close
to uniform; each is stored raw, zstd-coded (catches repeated values) or
rANS-coded, whichever is smallest. ``low_bits`` is chosen per chunk from the
head histogram by estimated size. Stream layout: :mod:`bie_cli.codecs.float_planes`;
payload format: docs/strategies/float-split.md.

Only bytes move, so NaN payloads, infinities, subnormals and -0.0 survive.
C64/C128 are coded as pairs of F32/F64. A chunk that would not shrink is
stored raw (``meta = {"stored": "raw"}``).
"""

from __future__ import annotations

import struct
import threading
from dataclasses import dataclass

import numpy as np
import zstandard

from .. import dtypes
from ..codecs import _jit, float_planes, rans
from .base import Strategy, decode_if_raw, from_bytes, smaller_or_raw_parts

FORMAT_VERSION = 1
CODING_RAW, CODING_ZSTD, CODING_RANS = 0, 1, 2
_STREAM_HEADER = struct.Struct("<BI")  # coding, length
_ZSTD_SAMPLE = 16 << 10
_ZSTD_SAMPLES = 8
# bytes per element component: complex numbers are pairs of floats
_COMPONENT_SIZE = {"F8_E4M3": 1, "F8_E5M2": 1, "F16": 2, "BF16": 2, "F32": 4, "F64": 8, "C64": 4, "C128": 8}


@dataclass(frozen=True)
class FloatSplitConfig:
    #: zstd level tried on residual and tail planes (they are near-uniform: a
    #: fast level finds the repeats there are; higher levels cost time, not bytes)
    zstd_level: int = 1
    #: low magnitude bits left out of the rANS symbol (stored beside the
    #: sign); None chooses per chunk. 16-bit heads: 3..7; 1-byte floats: 0..5
    low_bits: int | None = None

    def __post_init__(self) -> None:
        if not -7 <= self.zstd_level <= 22:
            raise ValueError(f"zstd_level must be between -7 and 22, got {self.zstd_level}")
        if self.low_bits is not None and not 0 <= self.low_bits <= 7:
            raise ValueError(f"low_bits must be between 0 and 7, got {self.low_bits}")


class FloatSplitStrategy(Strategy):
    id = "float-split"
    lossless = True
    dtypes = frozenset(_COMPONENT_SIZE)
    description = "floats split into sign/exponent symbols (rANS) and mantissa planes; bit-exact"
    Config = FloatSplitConfig

    def encode(self, chunk: np.ndarray, config: FloatSplitConfig) -> tuple[bytes, dict]:
        parts, meta = self.encode_parts(chunk, config)
        return parts[0] if meta else b"".join(parts), meta  # the join is the only copy of the coded streams

    def encode_parts(self, chunk: np.ndarray, config: FloatSplitConfig) -> tuple[list, dict]:
        setup = _SETUPS.get((chunk.dtype, config))
        if setup is None:
            setup = _setup(chunk.dtype, config)
        itemsize, candidates = setup[0], setup[1]
        data = chunk.reshape(-1) if chunk.flags.c_contiguous else np.ascontiguousarray(chunk).reshape(-1)
        data = data.view(_UINT8)
        count = data.size // itemsize
        if count == 0:
            return smaller_or_raw_parts([], data)
        parts = _encode_compiled(data, itemsize, candidates, config) if itemsize > 1 else None
        if parts is None:
            parts = _encode_stepwise(data, itemsize, count, candidates, config)
        return smaller_or_raw_parts(parts, data)

    def decode(self, payload, meta, shape, dtype) -> np.ndarray:
        raw = decode_if_raw(payload, meta, shape, dtype)
        if raw is not None:
            return raw
        return self._decode(payload, meta, shape, dtype, None)

    def decode_into(self, payload, meta, shape, dtype, out: np.ndarray) -> np.ndarray:
        """The compiled decoder writes the elements straight into ``out`` (no copy); other
        paths copy their result there."""
        if meta:  # stored raw (or unknown keys: decode raises)
            return super().decode_into(payload, meta, shape, dtype, out)
        return self._decode(payload, meta, shape, dtype, out)

    def _decode(self, payload, meta, shape, dtype, out: np.ndarray | None) -> np.ndarray:
        if meta:
            raise ValueError(f"float-split meta has unknown keys {sorted(meta)}")
        itemsize = _COMPONENT_SIZE[dtype]
        total = dtypes.nbytes(dtype, tuple(shape))
        count = total // itemsize
        data = _decode_elements(memoryview(payload).cast("B"), count, itemsize, out)
        if out is not None and data is not out:
            if len(data) != len(out):
                return from_bytes(data, shape, dtype)  # raises: the wrong length
            np.copyto(out, np.frombuffer(data, dtype=np.uint8))
            data = out
        return from_bytes(data, shape, dtype)


_UINT8 = np.dtype(np.uint8)
#: (numpy dtype, config) -> (bytes per component, low_bits candidates): what encode_parts
#: looked up for every chunk, once per dtype and config
_SETUPS: dict = {}


def _setup(np_dtype: np.dtype, config: FloatSplitConfig) -> tuple[int, tuple[int, ...]]:
    itemsize = _component_size(np_dtype)
    setup = _SETUPS[(np_dtype, config)] = (itemsize, _candidates(itemsize, config))
    return setup


def _component_size(np_dtype: np.dtype) -> int:
    """Bytes per float component of a numpy dtype."""
    return _COMPONENT_SIZE[dtypes.from_numpy(np_dtype).name]


def _decode_elements(payload: memoryview, count: int, itemsize: int, out: np.ndarray | None = None) -> np.ndarray:
    """The element bytes; the compiled decoder writes them into ``out`` when given (uint8 of
    ``count * itemsize``), other paths into arrays of their own."""
    head_bytes = float_planes.head_bytes_for(itemsize)
    n_tails = itemsize - head_bytes
    if len(payload) < 3:
        raise ValueError("float-split payload shorter than its header")
    version, low_bits, n_streams = payload[0], payload[1], payload[2]
    if version != FORMAT_VERSION:
        raise ValueError(f"float-split payload version {version} is not supported (expected {FORMAT_VERSION})")
    if low_bits not in float_planes.low_bits_range(itemsize):
        raise ValueError(f"float-split low_bits {low_bits} out of range")
    if n_streams != 2 + n_tails:
        raise ValueError(f"float-split payload has {n_streams} streams, {itemsize}-byte elements need {2 + n_tails}")
    streams = []
    positions = []
    pos = 3
    for _ in range(n_streams):
        if pos + _STREAM_HEADER.size > len(payload):
            raise ValueError("float-split payload truncated in a stream header")
        coding, length = _STREAM_HEADER.unpack_from(payload, pos)
        pos += _STREAM_HEADER.size
        if pos + length > len(payload):
            raise ValueError("float-split stream runs past the payload")
        streams.append((coding, payload[pos : pos + length]))
        positions.append((coding, pos, length))
        pos += length
    if pos != len(payload):
        raise ValueError("float-split payload has trailing bytes")
    symbol_coding, symbol_bytes = streams[0]
    if symbol_coding != CODING_RANS:
        raise ValueError("float-split symbol stream must be rANS-coded")
    if head_bytes == 2 and not _jit.prefer_numpy(count):
        data = _decode_compiled(payload, positions, streams, count, itemsize, low_bits, out)
        if data is not None:
            return data
    residual = _decode_byte_plane(*streams[1], float_planes.residual_size(count, low_bits))
    alphabet = 1 << (8 * head_bytes - 1 - low_bits)
    if itemsize == 4 and low_bits in (3, 7):  # F32 as the encoder writes it: planes joined in place
        planes = [_decode_byte_plane(coding, body, count) for coding, body in streams[2:]]
        symbols = rans.decode_symbols(symbol_bytes, count, np.uint16, alphabet)
        return float_planes.join32(symbols, residual, planes[0], planes[1], low_bits)
    if itemsize == 2 and low_bits in (3, 7):  # F16/BF16 as the encoder writes them
        symbols = rans.decode_symbols(symbol_bytes, count, np.uint16, alphabet)
        return float_planes.join16(symbols, residual, low_bits)
    tails = np.empty((n_tails, count), dtype=np.uint8)
    for t, (coding, body) in enumerate(streams[2:]):
        tails[t] = _decode_byte_plane(coding, body, count)
    symbols = rans.decode_symbols(symbol_bytes, count, np.uint16, alphabet)
    return float_planes.join(symbols, residual, tails, itemsize, low_bits)


def _decode_compiled(payload: memoryview, positions: list, streams: list, count: int, itemsize: int,
                     low_bits: int, out: np.ndarray | None = None) -> np.ndarray | None:
    """The element bytes from one GIL-free kernel call (``codecs/_float_split_numba.decode_split``)
    after zstd; None when a stream is wrong in any way (the stepwise decoder then raises the error)."""
    zstarts = np.zeros(len(positions), dtype=np.int64)
    zdata = _EMPTY
    zstd_planes = []
    at = 0
    for k, (coding, body) in enumerate(streams):
        if coding == CODING_ZSTD and k:
            size = float_planes.residual_size(count, low_bits) if k == 1 else count
            try:
                plane = _decompressor().decompress(body, max_output_size=max(size, 1))
            except zstandard.ZstdError:
                return None
            if len(plane) != size:
                return None
            zstd_planes.append(plane)
            zstarts[k] = at
            at += size
    if zstd_planes:
        zdata = np.frombuffer(zstd_planes[0] if len(zstd_planes) == 1 else b"".join(zstd_planes), dtype=np.uint8)
    array = np.frombuffer(payload, dtype=np.uint8)
    array.flags.writeable = False  # one compiled signature, whatever buffer the payload came in
    codings, starts, lengths = np.array(positions, dtype=np.int64).T.copy()  # three C-contiguous rows
    if out is None:
        out = np.empty(count * itemsize, dtype=np.uint8)
    status = _jit.kernels("_float_split_numba").decode_split(array, codings, starts, lengths, zdata, zstarts,
                                                              count, itemsize, low_bits, out)
    return None if status else out


_EMPTY = np.frombuffer(b"", dtype=np.uint8)


def _candidates(itemsize: int, config: FloatSplitConfig) -> tuple[int, ...]:
    """The ``low_bits`` the encoder chooses from: the configured one clamped to what this
    element size allows, or the preferred ones."""
    if config.low_bits is None:
        return float_planes.preferred_low_bits(itemsize)
    valid = float_planes.low_bits_range(itemsize)
    return (min(max(config.low_bits, valid.start), valid.stop - 1),)


#: candidates -> (candidates as an int64 array, kernel for each element size): built once
_COMPILED: dict = {}
_ENCODE_KERNEL = {2: "encode16", 4: "encode32", 8: "encode64"}


def _compiled_setup(candidates: tuple[int, ...]) -> tuple:
    module = _jit.kernels("_float_split_numba")
    setup = _COMPILED[candidates] = (np.array(candidates, dtype=np.int64),
                                     {size: getattr(module, kernel) for size, kernel in _ENCODE_KERNEL.items()})
    return setup


def _encode_compiled(data: np.ndarray, itemsize: int, candidates: tuple[int, ...], config) -> list | None:
    """The payload's parts from one GIL-free kernel call (``codecs/_float_split_numba``) plus
    zstd; None when the kernel defers to :func:`_encode_stepwise` (same bytes either way)."""
    setup = _COMPILED.get(candidates)
    if setup is None:
        setup = _compiled_setup(candidates)
    words = float_planes.element_words(data, itemsize)
    status, low_bits, symbol_stream, residual, tails, estimates, coded, spans = setup[1][itemsize](words, setup[0])
    if status:
        return None
    n_tails = tails.shape[0]
    parts = [bytes((FORMAT_VERSION, low_bits, 2 + n_tails)), symbol_stream]
    compressor = _compressor(config.zstd_level)
    estimates, spans = estimates.tolist(), spans.tolist()
    for p, plane in enumerate([residual, *tails]):
        parts += _smallest_byte_coding(plane, compressor, (estimates[p], coded[spans[2 * p]:spans[2 * p + 1]]))
    return parts


def _encode_stepwise(data: np.ndarray, itemsize: int, count: int, candidates: tuple[int, ...], config) -> list:
    """The payload's parts kernel by kernel, Python in between: 1-byte floats, and the rare
    chunk whose size estimate sits too close to a rounding edge for the compiled path."""
    heads, tails = float_planes.heads_and_tails(data, itemsize)
    low_bits, symbol_counts = _choose_low_bits(heads, itemsize, count, candidates)
    symbols, residual = float_planes.split_heads(heads, itemsize, low_bits)
    parts = [bytes([FORMAT_VERSION, low_bits, 2 + tails.shape[0]])]
    parts += _stream_parts(CODING_RANS, rans.encode_symbol_parts(symbols, symbol_counts))
    compressor = _compressor(config.zstd_level)
    for plane in [residual, *tails]:
        parts += _smallest_byte_coding(plane, compressor)
    return parts


_LOCAL = threading.local()


def _compressor(level: int) -> zstandard.ZstdCompressor:
    """A zstd compressor of ``level`` for this thread, reused (its context and buffers too):
    zstd's output does not depend on what a context compressed before."""
    compressors = getattr(_LOCAL, "compressors", None)
    if compressors is None:
        compressors = _LOCAL.compressors = {}
    compressor = compressors.get(level)
    if compressor is None:
        compressor = compressors[level] = zstandard.ZstdCompressor(level=level)
    return compressor


def _decompressor() -> zstandard.ZstdDecompressor:
    """A zstd decompressor for this thread, reused: making one (its context) costs ~40 us,
    ten times the decode of a small chunk (a bias vector) that has a zstd-coded plane."""
    decompressor = getattr(_LOCAL, "decompressor", None)
    if decompressor is None:
        decompressor = _LOCAL.decompressor = zstandard.ZstdDecompressor()
    return decompressor


def _choose_low_bits(heads: np.ndarray, itemsize: int, count: int, candidates) -> tuple[int, np.ndarray]:
    """The ``low_bits`` with the smallest estimated size (rANS symbols + raw
    residuals), and its symbol histogram.

    Wider symbols model more mantissa bits given the exponent but cost a
    bigger table, which small chunks cannot pay back. One histogram, at the
    fewest low bits; the others are sums of its neighbouring counts.
    """
    finest = min(candidates)
    base = float_planes.symbol_histogram(heads, itemsize, finest)
    if len(candidates) == 1:
        return finest, base
    best = None
    for low_bits in candidates:
        counts = float_planes.coarser_counts(base, low_bits - finest)
        size = rans.fast_estimate_size(counts) + float_planes.residual_size(count, low_bits)
        if best is None or size < best[0]:
            best = (size, low_bits, counts)
    return best[1], best[2]


def _stream_parts(coding: int, body_parts: list) -> list:
    """Header and body of one stream given as buffers to concatenate (as bytes: ``len`` of each
    is its size, as :meth:`Strategy.encode_parts` promises)."""
    body_parts = [memoryview(part).cast("B") for part in body_parts]
    return [_STREAM_HEADER.pack(coding, sum(len(part) for part in body_parts)), *body_parts]


def _stream(coding: int, body) -> list:
    """Header and body of one stream, as parts for ``bytes.join``."""
    return [_STREAM_HEADER.pack(coding, len(body)), body]


def _smallest_byte_coding(plane: np.ndarray, compressor, precomputed: tuple | None = None) -> list:
    """The plane raw, zstd-coded or rANS-coded: whichever is smallest. ``precomputed``: the
    compiled path's (rANS size estimate, rANS stream), the stream empty when the estimate
    was not below 98 % of the raw size (then it is not below that of zstd's either)."""
    raw = memoryview(np.ascontiguousarray(plane)).cast("B")
    best = (CODING_RAW, raw)
    if not len(raw):
        return _stream(*best)
    if _zstd_may_help(raw, compressor):
        packed = compressor.compress(raw)
        if len(packed) < len(best[1]):
            best = (CODING_ZSTD, packed)
    # rANS only pays on skewed planes (e.g. truncated mantissas); estimate first
    if precomputed is None:
        counts = rans.histogram(plane, 256)
        if rans.fast_estimate_size(counts) < 0.98 * len(best[1]):
            coded = rans.encode_symbols(plane, counts)
            if len(coded) < len(best[1]):
                best = (CODING_RANS, coded)
    else:
        estimate, coded = precomputed
        if estimate < 0.98 * len(best[1]) and len(coded) < len(best[1]):
            best = (CODING_RANS, coded)
    return _stream(*best)


def _zstd_may_help(raw: memoryview, compressor) -> bool:
    """Near-uniform planes are the common case; skip the full zstd pass when
    none of a few 16 KiB samples spread over the plane shrinks by 1 %.
    (Repeats can be local, as in MiniLM's word embeddings: hence several samples.)"""
    if len(raw) <= 16 * _ZSTD_SAMPLE:
        return True
    step = len(raw) // _ZSTD_SAMPLES
    for k in range(_ZSTD_SAMPLES):
        sample = raw[k * step : k * step + _ZSTD_SAMPLE]
        if len(compressor.compress(sample)) < 0.99 * len(sample):
            return True
    return False


def _decode_byte_plane(coding: int, body: memoryview, size: int) -> np.ndarray:
    """A plane as a read-only uint8 array whatever its coding (the join kernels then
    have one signature to compile and cache, not one per mix of codings)."""
    if coding == CODING_RAW:
        plane = np.frombuffer(body, dtype=np.uint8)
    elif coding == CODING_ZSTD:
        # max_output_size bounds the allocation to what the shape says
        plane = np.frombuffer(_decompressor().decompress(body, max_output_size=max(size, 1)), dtype=np.uint8)
    elif coding == CODING_RANS:
        plane = rans.decode_symbols(body, size, np.uint8)
    else:
        raise ValueError(f"float-split stream coding {coding} is unknown")
    if plane.size != size:
        raise ValueError(f"float-split plane holds {plane.size} bytes, expected {size}")
    plane.flags.writeable = False
    return plane

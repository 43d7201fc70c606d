"""float-split's encoding of a chunk of 16-bit-head floats in one compiled call (imported lazily).

Everything :meth:`FloatSplitStrategy.encode <bie_cli.strategies.float_split.FloatSplitStrategy.encode>`
did between kernels in Python (choosing ``low_bits``, the rANS model and
stream of the symbols, each plane's histogram, size estimate and rANS
stream) runs here without the GIL, so encoder threads overlap; only zstd (its
own GIL-free C calls) and the final join stay in Python. The bytes are those of
the step-by-step path (``float_split._encode_stepwise``), which the strategy
takes whenever this kernel reports a status: a size estimate too close to a
rounding edge to match numpy's (see ``_rans_numba.estimate_bounds``).

These kernels call those of ``_rans_numba`` and ``_float_planes_numba`` (last touched for
``_rans_numba.encode_into``, the decoder's unsigned indices and the ``low_bits`` 3 joins,
session 7; ``join32``'s two-element steps, the vector encoder of ``_rans_vector_encode`` (and its
shared ``symbol_fields``) and
the decoder's renormalisation as a select, session 9). numba's cache of a function is invalidated only by changes to its own file (a
hash of its content: ``touch`` does not do it): after editing one of those kernels, change
this file too (a comment will do) or clear ``__pycache__``. ``tests/test_float_split.py`` compares both paths.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ._float_planes_numba import (
    heads_tails32,
    heads_tails64,
    join16_in_place,
    join32,
    join_heads16,
    residual16,
    split_heads,
)
from ._rans_numba import (
    decode,
    estimate_bounds,
    masked_histogram,
    normalise,
    read_table,
    scale_bits_for,
    slot_table,
    stream_head,
)
from ._rans_vector_encode import encode_into

CODING_RANS = 2
STATE_BYTES = 32  # rans._STATE_BYTES
MAX_SCALE_BITS = 15  # rans.MAX_SCALE_BITS
DEFAULT_MAX_SCALE_BITS = 14  # rans.DEFAULT_MAX_SCALE_BITS
#: table bytes rans' encode_stream may write besides the words: scale, two varints, the
#: table (at most 10 bytes an entry), the states
_HEAD_BOUND = 1 + 20 + 32


@njit(inline="always")
def _total_present(counts):  # pragma: no cover - compiled
    total = np.int64(0)
    present = np.int64(0)
    for s in range(counts.shape[0]):
        total += counts[s]
        present += counts[s] > 0
    return total, present


@njit(inline="always")
def _region(n, n_sym):  # pragma: no cover - compiled
    """uint16 slots a stream of ``n`` symbols of an ``n_sym`` alphabet may need, with its
    5-byte stream header: the words (at most one per symbol, plus one scratch slot) and the
    head (:data:`_HEAD_BOUND` plus 10 bytes a table entry)."""
    return n + 1 + (5 + _HEAD_BOUND + 10 * n_sym + 1) // 2 + 1


@njit(nogil=True, cache=True)
def _rans_into(values, mask, shift, counts, buf, end):  # pragma: no cover - compiled
    """``rans.encode_symbols`` of the symbols ``(values & mask) >> shift`` (each below
    ``counts.shape[0]``, which the callers guarantee) with ``counts`` as the model, written
    into the uint16 buffer ``buf`` so that it ends at slot ``end`` (the words where the
    encoder leaves them: no copy); ``_region(n, n_sym)`` slots before ``end`` must be free.
    Returns the byte offset of the stream in ``buf.view(np.uint8)``, or -1 when the model
    cannot code them (the caller then takes the stepwise path)."""
    total, present = _total_present(counts)
    scale_bits = scale_bits_for(total, present, MAX_SCALE_BITS, DEFAULT_MAX_SCALE_BITS)
    if (np.int64(1) << scale_bits) < present:
        return -1
    freq = normalise(counts, scale_bits)
    start = np.zeros(freq.shape[0], dtype=np.int64)
    for s in range(1, freq.shape[0]):
        start[s] = start[s - 1] + freq[s - 1]
    states, pos = encode_into(values, mask, shift, freq, start, scale_bits, buf, end)
    head = stream_head(freq, scale_bits, states)
    at = 2 * pos - head.shape[0]
    out = buf.view(np.uint8)
    for k in range(head.shape[0]):
        out[at + k] = head[k]
    return at


@njit(nogil=True, cache=True)
def _encode_heads(heads, tails, candidates):  # pragma: no cover - compiled
    n = heads.shape[0]
    status = 0
    # low_bits: one histogram at the finest candidate, coarser ones by summing (_choose_low_bits)
    finest = candidates[0]
    for c in candidates:
        finest = min(finest, c)
    base = masked_histogram(heads, 0x7FFF, finest, np.int64(1) << (15 - finest))
    low_bits = finest
    counts = base
    if candidates.shape[0] > 1:
        best_size = np.int64(-1)
        for c in candidates:
            group = np.int64(1) << (c - finest)
            coarse = np.zeros(base.shape[0] // group, dtype=np.int64)
            for s in range(base.shape[0]):
                coarse[s // group] += base[s]
            low, high = estimate_bounds(coarse, STATE_BYTES, MAX_SCALE_BITS, DEFAULT_MAX_SCALE_BITS)
            if low != high:
                status = 1
            size = low + (n * (c + 1) + 7) // 8
            if best_size < 0 or size < best_size:
                best_size, low_bits, counts = size, c, coarse
    if low_bits == 3 or low_bits == 7:
        residual = residual16(heads, low_bits)
    else:
        residual = split_heads(heads, 16, low_bits)[1]
    # the symbol stream, (heads & 0x7FFF) >> low_bits coded straight from the heads, after
    # its stream header (coding, u32 length)
    sym = np.empty(_region(n, counts.shape[0]), dtype=np.uint16)
    sym_at = _rans_into(heads, np.int64(0x7FFF), np.int64(low_bits), counts, sym, sym.shape[0])
    if sym_at < 0:
        empty = sym.view(np.uint8)[:0]
        return 2, low_bits, empty, residual, tails, np.zeros(0, np.int64), empty, np.zeros(0, np.int64)
    sym8 = sym.view(np.uint8)
    length = 2 * sym.shape[0] - sym_at
    sym8[sym_at - 5] = CODING_RANS
    for k in range(4):
        sym8[sym_at - 4 + k] = (length >> (8 * k)) & 0xFF
    # each plane: its 256-bin histogram, the size estimate, and its rANS stream when the estimate
    # says rANS may beat raw (the caller compares it with zstd as _smallest_byte_coding did);
    # plane p's stream is coded[spans[2p]:spans[2p + 1]], empty when not coded
    n_planes = 1 + tails.shape[0]
    estimates = np.zeros(n_planes, dtype=np.int64)
    spans = np.zeros(2 * n_planes, dtype=np.int64)
    ends = np.zeros(n_planes, dtype=np.int64)
    end = np.int64(0)
    for p in range(n_planes):
        end += _region(residual.shape[0] if p == 0 else n, 256)
        ends[p] = end
    coded = np.empty(end, dtype=np.uint16)
    for p in range(n_planes):
        plane = residual if p == 0 else tails[p - 1]
        plane_counts = masked_histogram(plane, 0xFF, 0, 256)
        low, high = estimate_bounds(plane_counts, STATE_BYTES, MAX_SCALE_BITS, DEFAULT_MAX_SCALE_BITS)
        if low != high:
            status = 1
        estimates[p] = low
        if plane.shape[0] and low < 0.98 * plane.shape[0]:
            at = _rans_into(plane, np.int64(0xFF), np.int64(0), plane_counts, coded, ends[p])
            if at < 0:
                status = 2
            else:
                spans[2 * p] = at
                spans[2 * p + 1] = 2 * ends[p]
    return status, low_bits, sym8[sym_at - 5 :], residual, tails, estimates, coded.view(np.uint8), spans


@njit(nogil=True, cache=True)
def encode16(heads, candidates):  # pragma: no cover - compiled
    """F16/BF16 (the heads are the elements): see :func:`encode_split`."""
    return _encode_heads(heads, np.empty((0, heads.shape[0]), dtype=np.uint8), candidates)


@njit(nogil=True, cache=True)
def encode32(words, candidates):  # pragma: no cover - compiled
    """F32 / C64 as uint32 words: heads and tail planes in one pass (``heads_tails32``), then
    :func:`encode_split`."""
    heads, tails = heads_tails32(words)
    return _encode_heads(heads, tails, candidates)


@njit(nogil=True, cache=True)
def encode64(words, candidates):  # pragma: no cover - compiled
    """F64 / C128 as uint64 words (``heads_tails64``), then :func:`encode_split`."""
    heads, tails = heads_tails64(words)
    return _encode_heads(heads, tails, candidates)


# -- decoding ---------------------------------------------------------------------------------
CODING_RAW, CODING_ZSTD = 0, 1
RANS_L = 1 << 15


@njit(inline="always")
def _varint(raw, pos):  # pragma: no cover - compiled
    """``varint.get(raw, pos, max_bits=42)``; (-1, pos) where that raises."""
    value = np.int64(0)
    shift = 0
    while True:
        if pos >= raw.shape[0]:
            return np.int64(-1), pos
        byte = np.int64(raw[pos])
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            if value >> 42:
                return np.int64(-1), pos
            return value, pos
        shift += 7
        if shift >= 49:
            return np.int64(-1), pos


@njit(nogil=True, cache=True)
def rans_decode(raw, count, alphabet, out):  # pragma: no cover - compiled
    """``rans.decode_symbols(raw, count, out.dtype, alphabet)`` into ``out``: 0, or non-zero
    wherever that raises (the caller then asks it, for its error)."""
    n = raw.shape[0]
    if n < 1:
        return 3
    scale_bits = np.int64(raw[0])
    if scale_bits < 1 or scale_bits > MAX_SCALE_BITS:
        return 3
    first, pos = _varint(raw, 1)
    if first < 0:
        return 3
    entries, pos = _varint(raw, pos)
    if entries < 0 or first + entries > min(alphabet, 1 << 16):
        return 3
    freq = np.zeros(first + entries, dtype=np.int64)
    pos = read_table(raw, pos, freq[first:])
    if pos < 0:
        return 3
    total = np.int64(0)
    for s in range(freq.shape[0]):
        total += freq[s]
    if count and total != np.int64(1) << scale_bits:
        return 3
    if n < pos + STATE_BYTES or (n - pos - STATE_BYTES) % 2:
        return 3
    states = np.empty(8, dtype=np.int64)
    for lane in range(8):
        at = pos + 4 * lane
        states[lane] = (np.int64(raw[at]) | (np.int64(raw[at + 1]) << 8) | (np.int64(raw[at + 2]) << 16)
                        | (np.int64(raw[at + 3]) << 24))
    body = pos + STATE_BYTES
    n_words = (n - body) // 2
    if count == 0:
        if n_words:
            return 3
        for lane in range(8):
            if states[lane] != RANS_L:
                return 3
        return 0
    for lane in range(8):
        if states[lane] < RANS_L or states[lane] >= RANS_L << 16:
            return 3
    words = np.zeros(n_words + 8, dtype=np.uint16)
    # unsigned indices (body >= 0, checked above): no wraparound checks, so LLVM vectorises it
    ubody = np.uint64(body)
    for k in range(n_words):
        at = ubody + np.uint64(2) * np.uint64(k)
        words[np.uint64(k)] = np.uint16(raw[at]) | (np.uint16(raw[at + np.uint64(1)]) << 8)
    table = slot_table(freq, scale_bits)
    return decode(words, states, count, table, scale_bits, out)


@njit(nogil=True, cache=True)
def _plane_into(payload, coding, start, length, zdata, zstart, dest):  # pragma: no cover - compiled
    """A byte plane of ``dest.shape[0]`` bytes into ``dest`` whatever its coding
    (``_decode_byte_plane``); returns the status."""
    size = dest.shape[0]
    if coding == CODING_RAW:
        if length != size:
            return 4
        for k in range(size):
            dest[k] = payload[start + k]
        return 0
    if coding == CODING_ZSTD:  # decompressed by the caller, its size checked there
        for k in range(size):
            dest[k] = zdata[zstart + k]
        return 0
    if coding != CODING_RANS:
        return 5
    return rans_decode(payload[start : start + length], size, 256, dest)


@njit(inline="always")
def _plane_view(payload, coding, start, length, zdata, zstart, size):  # pragma: no cover - compiled
    """A raw or zstd-coded byte plane of ``size`` bytes where it already is (a view of the
    payload or of ``zdata``, no copy); status 4 (raw of the wrong length) or -1 (rANS-coded,
    the caller decodes it) with an empty view otherwise."""
    if coding == CODING_RAW:
        if length != size:
            return 4, payload[start : start]
        return 0, payload[start : start + size]
    if coding == CODING_ZSTD:  # decompressed by the caller, its size checked there
        return 0, zdata[zstart : zstart + size]
    return -1, payload[start : start]


@njit(inline="always")
def _plane(payload, coding, start, length, zdata, zstart, size):  # pragma: no cover - compiled
    """A byte plane of ``size`` bytes: where it is (``_plane_view``), or rANS-decoded into a
    new array; with the status."""
    status, plane = _plane_view(payload, coding, start, length, zdata, zstart, size)
    if status < 0:
        decoded = np.empty(size, dtype=np.uint8)
        status = _plane_into(payload, coding, start, length, zdata, zstart, decoded)
        plane = decoded
    return status, plane


@njit(nogil=True, cache=True)
def decode_split(payload, codings, starts, lengths, zdata, zstarts, count, itemsize, low_bits, out):  # pragma: no cover
    """A chunk of 16-bit-head floats into ``out`` (uint8, ``count * itemsize``): every stream
    decoded and the elements joined in one call. Streams (symbols, residual, tail planes) are
    given by coding, start and length in ``payload`` (read-only); zstd-coded planes already
    decompressed into ``zdata`` (read-only) at ``zstarts``. Raw and zstd planes are read where
    they are, not copied (residuals of ``low_bits`` 3 and 7, which the joins read without
    padding; F32's two tail planes). Returns 0, or non-zero wherever the stepwise decoder raises."""
    n_tails = itemsize - 2
    residual_bytes = (count * (low_bits + 1) + 7) // 8
    whole = low_bits == 3 or low_bits == 7  # the joins read no byte past the residual
    status, residual = _plane_view(payload, codings[1], starts[1], lengths[1], zdata, zstarts[1], residual_bytes)
    if status > 0:
        return status
    if status < 0 or not whole:
        padded = np.zeros(residual_bytes + 8, dtype=np.uint8)  # join_heads16 reads past the end
        status = _plane_into(payload, codings[1], starts[1], lengths[1], zdata, zstarts[1], padded[:residual_bytes])
        if status:
            return status
        residual = padded
    if itemsize == 4 and whole:
        status, high = _plane(payload, codings[2], starts[2], lengths[2], zdata, zstarts[2], count)
        if status:
            return status
        status, low = _plane(payload, codings[3], starts[3], lengths[3], zdata, zstarts[3], count)
        if status:
            return status
        if codings[0] != CODING_RANS:
            return 5
        symbols = np.empty(count, dtype=np.uint16)
        status = rans_decode(payload[starts[0] : starts[0] + lengths[0]], count, np.int64(1) << (15 - low_bits),
                             symbols)
        if status:
            return status
        join32(symbols, residual, high, low, low_bits, out.view(np.uint32))
        return 0
    tails = np.empty((n_tails, count), dtype=np.uint8)
    for t in range(n_tails):
        status = _plane_into(payload, codings[2 + t], starts[2 + t], lengths[2 + t], zdata, zstarts[2 + t], tails[t])
        if status:
            return status
    if codings[0] != CODING_RANS:
        return 5
    alphabet = np.int64(1) << (15 - low_bits)
    if itemsize == 2:  # the symbols decode straight into the output, completed there
        out16 = out.view(np.uint16)
        status = rans_decode(payload[starts[0] : starts[0] + lengths[0]], count, alphabet, out16)
        if status:
            return status
        join16_in_place(residual, low_bits, out16)
        return 0
    symbols = np.empty(count, dtype=np.uint16)
    status = rans_decode(payload[starts[0] : starts[0] + lengths[0]], count, alphabet, symbols)
    if status:
        return status
    join_heads16(symbols, residual, tails, itemsize, low_bits, out, out.view(np.uint16))
    return 0

"""Static order-0 rANS for byte symbols (quantization codes, trits...).

Stream layout (all integers little-endian)::

    u8   scale_bits          frequencies sum to 2**scale_bits (10..15)
    u8   first_symbol        lowest symbol with a frequency entry
    u8   last_symbol         highest symbol with a frequency entry (>= first)
    u16  freq[last - first + 1]
    ...  rANS bytes: 4-byte big-endian initial state, then renormalisation bytes

The symbol count is not stored: the caller knows it from the tensor shape.
The decoder checks the table sums to 2**scale_bits, that no symbol with zero
frequency can be produced, that the stream is neither truncated nor padded and
that the final state is the encoder's initial one, so a corrupt stream raises
``ValueError`` instead of decoding to garbage.

This is a self-contained stopgap so quantization codes get entropy coded now;
payloads name their coder, so a shared coder can be added beside it later.
"""

from __future__ import annotations

import math

import numpy as np

SCALE_BITS = 14
_HEADER = 3


def _normalise(counts: np.ndarray, scale_bits: int) -> np.ndarray:
    """Integer frequencies summing to 2**scale_bits, >= 1 for every present symbol."""
    total = int(counts.sum())
    target = 1 << scale_bits
    freq = (counts * target) // total
    freq[(counts > 0) & (freq == 0)] = 1
    diff = target - int(freq.sum())
    # hand the rounding slack to (or take it from) the most frequent symbols;
    # deterministic: argmax/argsort with a stable kind.
    if diff > 0:
        freq[int(np.argmax(counts))] += diff
    while diff < 0:
        order = np.argsort(-freq, kind="stable")
        for s in order:
            if diff == 0:
                break
            take = min(-diff, int(freq[s]) - 1)
            if take <= 0:
                break
            freq[s] -= take
            diff += take
    return freq


def estimate_size(counts: np.ndarray) -> int:
    """Approximate stream bytes for a histogram (Shannon bound plus the table)."""
    total = int(counts.sum())
    present = counts[counts > 0]
    if total == 0:
        return _HEADER + 2 + 4
    p = present / total
    bits = float(-(present * np.log2(p)).sum())
    nz = np.flatnonzero(counts)
    return _HEADER + 2 * (int(nz[-1]) - int(nz[0]) + 1) + 4 + math.ceil(bits / 8)


def encode(symbols: np.ndarray, counts: np.ndarray | None = None, scale_bits: int = SCALE_BITS) -> bytes:
    """rANS-code uint8 symbols; ``counts`` (a 256-bin histogram) is computed when omitted."""
    from . import _rans_kernels as kernels

    symbols = np.ascontiguousarray(symbols, dtype=np.uint8).reshape(-1)
    if counts is None:
        counts = kernels.histogram(symbols)
    counts = np.asarray(counts, dtype=np.int64)
    if symbols.size == 0:
        return bytes([scale_bits, 0, 0]) + (1 << scale_bits).to_bytes(2, "little") + b"\x00\x80\x00\x00"
    freq = _normalise(counts, scale_bits)
    start = np.zeros(256, dtype=np.int64)
    start[1:] = np.cumsum(freq)[:-1]
    nz = np.flatnonzero(freq)
    first, last = int(nz[0]), int(nz[-1])
    body = kernels.encode(symbols, freq, start, scale_bits)
    header = bytes([scale_bits, first, last]) + freq[first : last + 1].astype("<u2").tobytes()
    return header + body.tobytes()


def decode(data: bytes | memoryview | np.ndarray, count: int) -> np.ndarray:
    """Inverse of :func:`encode`: ``count`` uint8 symbols, or ``ValueError``."""
    from . import _rans_kernels as kernels

    raw = np.frombuffer(data, dtype=np.uint8) if not isinstance(data, np.ndarray) else data
    if raw.size < _HEADER:
        raise ValueError("rANS stream shorter than its header")
    scale_bits, first, last = int(raw[0]), int(raw[1]), int(raw[2])
    if not 10 <= scale_bits <= 15 or last < first:
        raise ValueError("rANS stream header is corrupt")
    table_end = _HEADER + 2 * (last - first + 1)
    if raw.size < table_end:
        raise ValueError("rANS stream truncated in its frequency table")
    freq = np.zeros(256, dtype=np.int64)
    freq[first : last + 1] = raw[_HEADER:table_end].view("<u2")
    if int(freq.sum()) != 1 << scale_bits:
        raise ValueError("rANS frequency table does not sum to 2**scale_bits")
    if count == 0:
        if raw.size != table_end + 4:
            raise ValueError("rANS stream has trailing bytes")
        return np.zeros(0, dtype=np.uint8)
    start = np.zeros(256, dtype=np.int64)
    start[1:] = np.cumsum(freq)[:-1]
    lut = np.repeat(np.arange(256, dtype=np.uint8), freq)
    symbols, status = kernels.decode(raw[table_end:], count, freq, start, lut, scale_bits)
    if status == 1:
        raise ValueError("rANS stream is truncated")
    if status != 0:
        raise ValueError("rANS stream is corrupt (bad final state or trailing bytes)")
    return symbols

"""Static order-0 rANS for uint8 or uint16 symbols: the shared entropy coder.

Use it for any stream of small integers whose histogram is skewed (float
exponents, quantization codes, gaps)::

    from bie_cli.codecs import rans
    data = rans.encode_symbols(symbols)              # bytes, self-describing
    back = rans.decode_symbols(data, len(symbols))   # uint16 by default
    assert (back == symbols).all()

``encode_symbols`` takes an optional precomputed histogram (``counts``) so a
caller that already has one (to choose a model) does not count twice.
``estimate_size(counts)`` predicts the stream size within a few bytes.
The symbol count is not stored: the caller knows it (from a tensor shape).

Stream layout (integers little-endian, ``varint`` = unsigned LEB128)::

    u8       scale_bits S    frequencies sum to 2**S, 1 <= S <= 15
    varint   first           lowest symbol in the table
    varint   entries         table length (symbols first .. first+entries-1)
    table    per symbol: varint freq; a 0 is followed by varint k, the number
             of further zero entries (runs of absent symbols cost two bytes)
    u32[8]   final encoder states of lanes 0..7 (each in [2**15, 2**31))
    u16[...] renormalisation words, in the order the decoder reads them

Symbol ``i`` is coded by lane ``i % 8``; decoding lane ``l`` with state ``x``:
``slot = x & (2**S-1)``, ``s`` = the symbol whose cumulative range holds
``slot``, ``x = freq[s] * (x >> S) + slot - start[s]``, then while
``x < 2**15``: ``x = (x << 16) | next_word``. After the last symbol every
state is 2**15 and every word has been read; anything else is corrupt.

Decoding raises ``ValueError`` on any inconsistency (table not summing to
2**S, truncated or padded stream, states out of range), never reads out of
bounds, and allocates at most ``count`` symbols plus a 2**S lookup table.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from . import _jit, varint

MAX_SCALE_BITS = 15
#: the encoder's precision cap: on float weights 2**14 loses nothing measurable
#: against 2**15 and halves the table (smaller header, decode table in cache)
DEFAULT_MAX_SCALE_BITS = 14
MAX_ALPHABET = 1 << 16
LANES = 8
RANS_L = 1 << 15
_STATE_BYTES = 4 * LANES


def _get_varint(raw, pos: int) -> tuple[int, int]:
    # table entries are frequencies and symbol indices: far below 2**42
    return varint.get(raw, pos, max_bits=42, what="rANS table varint")


# -- model ---------------------------------------------------------------------
def histogram(symbols: np.ndarray, alphabet: int | None = None) -> np.ndarray:
    """Counts per symbol value (int64, length ``alphabet`` or max+1)."""
    _rans_numba = _jit.kernels("_rans_numba")

    symbols = _as_symbols(symbols)
    if alphabet is None:
        alphabet = 256 if symbols.dtype == np.uint8 else (int(symbols.max()) + 1 if symbols.size else 1)
    return _rans_numba.histogram(symbols, alphabet)


def choose_scale_bits(counts: np.ndarray) -> int:
    """Precision: enough for every present symbol, no more than the data can use.

    Frequencies more precise than the sample size only make the table bigger.
    """
    return _scale_bits(int(counts.sum()), int(np.count_nonzero(counts)))


def _scale_bits(total: int, present: int) -> int:
    need = max(1, math.ceil(math.log2(max(present, 1))) + 1)
    want = max(total, 1).bit_length() + 1
    return max(min(DEFAULT_MAX_SCALE_BITS, want), min(need, MAX_SCALE_BITS))


#: measured coding loss of this coder, in bits a symbol: about
#: ``0.005 * (2**S / RANS_L) ** 2`` (1.2e-3 at S = 14, a quarter of that per
#: bit less; the same within a third on MiniLM's 4-bit, 8-bit and ternary codes)
_CODING_LOSS = 0.005


def scale_bits_for_size(counts: np.ndarray, low: int = 10, high: int = DEFAULT_MAX_SCALE_BITS) -> int:
    """The precision in [low, high] whose stream is estimated smallest.

    Weighs what coarser frequencies cost (exact, from :func:`normalise`) and
    the table against the coder's loss, which grows fourfold per bit of
    precision: a small alphabet over many symbols does best well below
    :func:`choose_scale_bits`' 14 bits, a wide one with rare tails at 14.
    Costs a few :func:`normalise` calls on the histogram, nothing per symbol.
    """
    counts = np.asarray(counts, dtype=np.int64)
    present = counts > 0
    n_present = int(np.count_nonzero(present))
    total = int(counts.sum())
    low = max(low, math.ceil(math.log2(max(n_present, 1))) + 1)
    high = min(max(high, low), MAX_SCALE_BITS)
    best, best_bits = high, math.inf
    for scale_bits in range(low, high + 1):
        freq = normalise(counts, scale_bits)[present]
        model = float((counts[present] * (scale_bits - np.log2(freq))).sum())
        table = 8 * (n_present + int(np.count_nonzero(freq >= 128)))
        loss = total * _CODING_LOSS * 4.0 ** (scale_bits - 15)
        if model + table + loss < best_bits:
            best, best_bits = scale_bits, model + table + loss
    return best


def normalise(counts: np.ndarray, scale_bits: int) -> np.ndarray:
    """Integer frequencies summing to 2**scale_bits, >= 1 for every present symbol.

    Deterministic (stable sorts only), so identical input gives identical bytes.
    """
    counts = np.asarray(counts, dtype=np.int64)
    total = int(counts.sum())
    target = 1 << scale_bits
    freq = np.zeros_like(counts)
    if total == 0:
        return freq
    freq[:] = (counts * target + total // 2) // total
    freq[(counts > 0) & (freq == 0)] = 1
    diff = target - int(freq.sum())
    if diff > 0:
        freq[int(np.argmax(counts))] += diff
    elif diff < 0:
        # take the excess from the largest frequencies, never below 1
        for s in np.argsort(-freq, kind="stable"):
            take = min(-diff, int(freq[s]) - 1)
            if take > 0:
                freq[s] -= take
                diff += take
            if diff == 0:
                break
    return freq


def estimate_size(counts: np.ndarray) -> int:
    """Approximate stream bytes for a histogram: Shannon bound plus table and states."""
    counts = np.asarray(counts, dtype=np.int64)
    nonzero = np.flatnonzero(counts)
    if nonzero.size == 0:
        return 3 + _STATE_BYTES
    present = counts[nonzero]
    total = int(present.sum())
    bits = float(-(present * np.log2(present / total)).sum())
    span = int(nonzero[-1]) - int(nonzero[0]) + 1
    scale_bits = _scale_bits(total, present.size)
    # table: ~1 byte per frequency below 128, 2 above; zero runs ~2 bytes
    big = int(np.count_nonzero(present * (1 << scale_bits) >= 128 * total))
    table = 4 + present.size + big + 2 * max(0, span - present.size) // 4
    return table + _STATE_BYTES + math.ceil(bits / 8) + 2


def fast_estimate_size(counts: np.ndarray) -> int:
    """:func:`estimate_size` in one compiled call (the same integer: it falls back to
    :func:`estimate_size` when the two could round differently). For hot loops."""
    _rans_numba = _jit.kernels("_rans_numba")

    counts = np.asarray(counts, dtype=np.int64)
    low, high = _rans_numba.estimate_bounds(counts, _STATE_BYTES, MAX_SCALE_BITS, DEFAULT_MAX_SCALE_BITS)
    return int(low) if low == high else estimate_size(counts)


def _as_symbols(symbols: np.ndarray) -> np.ndarray:
    symbols = np.ascontiguousarray(symbols).reshape(-1)
    if symbols.dtype not in (np.uint8, np.uint16):
        raise TypeError(f"symbols must be uint8 or uint16, got {symbols.dtype}")
    return symbols


# -- public API ----------------------------------------------------------------
def encode_symbols(symbols: np.ndarray, counts: np.ndarray | None = None, scale_bits: int | None = None) -> bytes:
    """rANS-code a 1-D uint8/uint16 array; ``counts`` must be its histogram if given."""
    return b"".join(encode_symbol_parts(symbols, counts, scale_bits))


def encode_symbol_parts(symbols: np.ndarray, counts: np.ndarray | None = None,
                        scale_bits: int | None = None) -> list:
    """:func:`encode_symbols` as a list of buffers whose concatenation is the stream, for
    callers that join it into a bigger payload (one copy of the words instead of two)."""
    _rans_numba = _jit.kernels("_rans_numba")

    symbols = _as_symbols(symbols)
    if counts is None:
        counts = histogram(symbols)
    counts = np.ascontiguousarray(counts, dtype=np.int64)
    if scale_bits is None:
        scale_bits = choose_scale_bits(counts)
    if not 1 <= scale_bits <= MAX_SCALE_BITS or (1 << scale_bits) < np.count_nonzero(counts):
        raise ValueError(f"scale_bits {scale_bits} cannot hold {np.count_nonzero(counts)} symbols")
    head, words = _rans_numba.encode_stream(symbols, counts, scale_bits)
    if head.size == 0:
        raise ValueError("counts is shorter than the largest symbol")
    return [head, words.astype("<u2", copy=False)]


class ParsedStream(NamedTuple):
    """A validated stream, ready for a decode kernel (see :func:`parse_stream`)."""

    scale_bits: int
    freq: np.ndarray  # int64, indexed by symbol
    states: np.ndarray  # int64[LANES]
    words: np.ndarray  # uint16 renormalisation words plus LANES zero words of padding
    table: np.ndarray  # int64 per slot: symbol | freq << 16 | (slot - start) << 32


def parse_stream(data: bytes | memoryview | np.ndarray, count: int, alphabet: int = MAX_ALPHABET) -> ParsedStream:
    """Check a stream's header against ``count`` symbols below ``alphabet``; ``ValueError`` if corrupt.

    For callers that run their own decode kernel on the parsed pieces;
    everyone else calls :func:`decode_symbols`.
    """
    # a uint8 view, not a copy: the stream can be most of a 4 MiB chunk
    raw = np.frombuffer(data, dtype=np.uint8) if not isinstance(data, np.ndarray) else data.reshape(-1).view(np.uint8)
    if len(raw) < 1:
        raise ValueError("rANS stream is empty")
    scale_bits = int(raw[0])
    if not 1 <= scale_bits <= MAX_SCALE_BITS:
        raise ValueError(f"rANS scale_bits {scale_bits} out of range")
    first, pos = _get_varint(raw, 1)
    entries, pos = _get_varint(raw, pos)
    if first + entries > min(alphabet, MAX_ALPHABET):
        raise ValueError("rANS table holds symbols outside the alphabet")
    freq = np.zeros(first + entries, dtype=np.int64)
    small = _jit.prefer_numpy(count)
    if small:
        pos = _read_table_python(raw, pos, freq[first:])
    else:
        _rans_numba = _jit.kernels("_rans_numba")

        pos = _rans_numba.read_table(raw, pos, freq[first:])
    if pos < 0:
        raise ValueError("rANS frequency table is corrupt")
    if count and int(freq.sum()) != 1 << scale_bits:
        raise ValueError("rANS frequency table does not sum to 2**scale_bits")
    if len(raw) < pos + _STATE_BYTES or (len(raw) - pos - _STATE_BYTES) % 2:
        raise ValueError("rANS stream is truncated")
    states = raw[pos : pos + _STATE_BYTES].view("<u4").astype(np.int64)
    body = raw[pos + _STATE_BYTES :].view("<u2")
    if count == 0:
        if body.size or (states != RANS_L).any():
            raise ValueError("rANS stream has data but no symbols")
    elif ((states < RANS_L) | (states >= RANS_L << 16)).any():
        raise ValueError("rANS state out of range")
    # padded with LANES zero words so decoders can renormalise without branches
    words = np.zeros(body.size + LANES, dtype=np.uint16)
    words[: body.size] = body
    if not count:
        table = np.zeros(1, dtype=np.int64)
    elif small:
        table = _slot_table_numpy(freq)
    else:
        _rans_numba = _jit.kernels("_rans_numba")

        table = _rans_numba.slot_table(freq, scale_bits)
    return ParsedStream(scale_bits, freq, states, words, table)


def check_status(status: int) -> None:
    """Turn a decode kernel's status into ``ValueError`` (0 is success)."""
    if status == 1:
        raise ValueError("rANS stream is truncated")
    if status != 0:
        raise ValueError("rANS stream is corrupt (bad final state or trailing words)")


def decode_symbols(
    data: bytes | memoryview | np.ndarray, count: int, dtype=np.uint16, alphabet: int | None = None
) -> np.ndarray:
    """Inverse of :func:`encode_symbols`: ``count`` symbols as ``dtype`` (uint8 or uint16).

    ``alphabet``: refuse (``ValueError``) a stream whose table holds symbols at
    or above it; defaults to what ``dtype`` can hold.
    """
    dtype = np.dtype(dtype)
    if dtype not in (np.uint8, np.uint16):
        raise TypeError(f"dtype must be uint8 or uint16, got {dtype}")
    limit = np.iinfo(dtype).max + 1
    stream = parse_stream(data, count, limit if alphabet is None else min(alphabet, limit))
    out = np.empty(count, dtype=dtype)
    if count and _jit.prefer_numpy(count):
        check_status(_decode_python(stream.words, stream.states, count, stream.table, stream.scale_bits, out))
    elif count:
        _rans_numba = _jit.kernels("_rans_numba")

        check_status(_rans_numba.decode(stream.words, stream.states, count, stream.table, stream.scale_bits, out))
    return out


# -- numpy paths for small streams (see _jit.py); same results and statuses as _rans_numba --
def _read_table_python(raw: np.ndarray, pos: int, values: np.ndarray) -> int:
    """``_rans_numba.read_table`` line for line: the end position, or -1 if corrupt."""
    data = raw.tobytes()  # indexing bytes is several times faster than indexing an array
    n, end, i, zero_run = values.shape[0], len(data), 0, False

    def varint_at(pos: int) -> tuple[int, int]:
        value = shift = 0
        while True:
            if pos >= end or shift > 35:
                return -1, pos
            byte = data[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                return value, pos

    while i < n:
        value, pos = varint_at(pos)
        if value < 0:
            return -1
        if zero_run:
            if i + value > n:
                return -1
            i += value  # values is zero-initialised
            zero_run = False
        else:
            values[i] = value
            i += 1
            zero_run = value == 0
    if zero_run:  # a final 0 must still be followed by its run length, and that length is 0
        value, pos = varint_at(pos)
        if value != 0:
            return -1
    return pos


def _slot_table_numpy(freq: np.ndarray) -> np.ndarray:
    """``_rans_numba.slot_table`` in numpy: per slot, symbol | freq << 16 | (slot - start) << 32."""
    symbols = np.repeat(np.arange(freq.shape[0], dtype=np.int64), freq)
    starts = np.cumsum(freq) - freq
    offsets = np.arange(symbols.shape[0], dtype=np.int64) - starts[symbols]
    return symbols | (freq[symbols] << 16) | (offsets << 32)


def _decode_python(words: np.ndarray, states: np.ndarray, count: int, table: np.ndarray, scale_bits: int,
                  out: np.ndarray) -> int:
    """``_rans_numba.decode`` in plain Python: 0 ok, 1 truncated, 2 corrupt.

    Python ints on lists beat numpy here: eight lanes are too few to vectorise,
    and a list lookup costs less than a numpy call. Lanes renormalise in lane
    order after each group of eight, as the numba loop does.
    """
    n_words = words.shape[0] - LANES
    mask = (1 << scale_bits) - 1
    entries = table.tolist()
    body = words[:n_words].tolist()
    x = [int(state) for state in states]
    symbols = [0] * count
    pos = 0
    whole = count - count % LANES
    for i in range(0, whole, LANES):
        for lane in range(LANES):
            entry = entries[x[lane] & mask]
            symbols[i + lane] = entry & 0xFFFF
            x[lane] = ((entry >> 16) & 0xFFFF) * (x[lane] >> scale_bits) + (entry >> 32)
        for lane in range(LANES):
            if x[lane] < RANS_L:
                if pos >= n_words:
                    return 1
                x[lane] = (x[lane] << 16) | body[pos]
                pos += 1
    for i in range(whole, count):  # the last count % 8 symbols, one at a time
        lane = i % LANES
        entry = entries[x[lane] & mask]
        symbols[i] = entry & 0xFFFF
        state = ((entry >> 16) & 0xFFFF) * (x[lane] >> scale_bits) + (entry >> 32)
        if state < RANS_L:
            if pos >= n_words:
                return 1
            state = (state << 16) | body[pos]
            pos += 1
        x[lane] = state
    out[:] = symbols
    if pos != n_words or any(state != RANS_L for state in x):
        return 2
    return 0

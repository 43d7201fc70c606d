"""Non-negative integers (gaps, counts) as rANS-coded tokens plus raw low bits.

Each value ``v`` becomes a *token* and ``nbits`` raw bits (JPEG XL's
"hybrid uint" with ``lsb_in_token = 0``), for a split exponent ``e`` and
``m`` mantissa bits in the token (``0 <= m <= e <= 12``):

* ``v < 2**e``: token ``v``, no raw bits;
* otherwise, with ``n = floor(log2 v)`` (so ``n >= e``): token
  ``2**e + ((n - e) << m) + ((v >> (n - m)) & (2**m - 1))`` and the
  ``n - m`` low bits of ``v`` stored raw.

Small values (the bulk of a geometric gap distribution) are coded exactly by
the entropy coder; large ones cost their class plus uniform low bits, so the
rANS table stays small at any sparsity. The encoder picks ``(e, m)`` per
stream from one histogram, by estimated size.

Stream layout (integers little-endian, ``varint`` = unsigned LEB128)::

    u8      e
    u8      m
    varint  token_bytes        length of the rANS stream that follows
    bytes   tokens             bie_cli.codecs.rans stream of ``count`` uint16 tokens
    bytes   raw                every value's raw bits, value after value, each
                               least significant bit first, in one little-endian
                               bit stream; exactly ceil(total_bits / 8) bytes,
                               padding bits zero

``count`` is not stored (the caller knows it). Decoding checks every field
and raises ``ValueError`` on anything an encoder could not have written.
"""

from __future__ import annotations

import numpy as np

from . import rans, varint

MAX_SPLIT = 12
MAX_MANTISSA = 3
#: values must stay below 2**MAX_VALUE_BITS (positions in a chunk are far below)
MAX_VALUE_BITS = 62
_KEY_DIRECT = 1 << MAX_SPLIT


def _floor_log2(values: np.ndarray) -> np.ndarray:
    """floor(log2 v) for v >= 1 (exact: frexp of an exactly representable float)."""
    # int64 -> float64 rounds above 2**53; a rounded-up value can only cross a
    # power of two from below, so correct by checking the power itself.
    _, exponent = np.frexp(values.astype(np.float64))
    n = exponent.astype(np.int64) - 1
    too_big = (np.int64(1) << n) > values
    n[too_big] -= 1
    return n


def _split(values: np.ndarray, e: int, m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(tokens uint16, raw values int64, raw bit counts int64)."""
    tokens = values.copy()
    nbits = np.zeros(values.size, dtype=np.int64)
    big = values >= (1 << e)
    if big.any():
        v = values[big]
        n = _floor_log2(v)
        top = (v >> (n - m)) & ((1 << m) - 1)
        tokens[big] = (1 << e) + ((n - e) << m) + top
        nbits[big] = n - m
    raw = values & ((np.int64(1) << nbits) - 1)
    return tokens.astype(np.uint16), raw, nbits


def _pack_raw(raw: np.ndarray, nbits: np.ndarray) -> bytes:
    total = int(nbits.sum())
    if total == 0:
        return b""
    owner = np.repeat(np.arange(raw.size), nbits)
    starts = np.cumsum(nbits) - nbits
    shift = np.arange(total, dtype=np.int64) - starts[owner]
    bits = ((raw[owner] >> shift) & 1).astype(np.uint8)
    return np.packbits(bits, bitorder="little").tobytes()


def _unpack_raw(data: np.ndarray, nbits: np.ndarray) -> np.ndarray:
    total = int(nbits.sum())
    if data.size != (total + 7) // 8:
        raise ValueError(f"intcode raw section holds {data.size} bytes, tokens need {(total + 7) // 8}")
    out = np.zeros(nbits.size, dtype=np.int64)
    if total == 0:
        return out
    bits = np.unpackbits(data, bitorder="little")
    if bits[total:].any():
        raise ValueError("intcode raw section has nonzero padding bits")
    owner = np.repeat(np.arange(nbits.size), nbits)
    starts = np.cumsum(nbits) - nbits
    shift = np.arange(total, dtype=np.int64) - starts[owner]
    np.add.at(out, owner, bits[:total].astype(np.int64) << shift)
    return out


def _choose(values: np.ndarray) -> tuple[int, int]:
    """The (e, m) with the smallest estimated stream, from one histogram of value classes."""
    # key: the value itself below 2**12; above, 2**12 + 8*(n-12) + the 3 bits below the top bit
    small = values < _KEY_DIRECT
    keys = values.copy()
    if (~small).any():
        v = values[~small]
        n = _floor_log2(v)
        keys[~small] = _KEY_DIRECT + 8 * (n - MAX_SPLIT) + ((v >> (n - 3)) & 7)
    hist = np.bincount(keys, minlength=_KEY_DIRECT)
    present = np.flatnonzero(hist)
    weights = hist[present]
    key_n = np.where(present < _KEY_DIRECT, 0, MAX_SPLIT + (present - _KEY_DIRECT) // 8)
    key_top3 = np.where(present < _KEY_DIRECT, 0, (present - _KEY_DIRECT) % 8)
    direct = present < _KEY_DIRECT
    direct_n = _floor_log2(np.maximum(present, 1))
    direct_top3 = ((present << 3) >> direct_n) & 7
    key_n = np.where(direct, direct_n, key_n)
    key_top3 = np.where(direct, direct_top3, key_top3)
    best = None
    for e in range(MAX_SPLIT + 1):
        for m in range(min(e, MAX_MANTISSA) + 1):
            escaped = present >= (1 << e)
            token = np.where(escaped, (1 << e) + ((key_n - e) << m) + (key_top3 >> (3 - m)), present)
            raw_bits = int((weights * np.where(escaped, key_n - m, 0)).sum())
            counts = np.bincount(token, weights=weights).astype(np.int64)
            size = rans.estimate_size(counts) + (raw_bits + 7) // 8
            if best is None or size < best[0]:
                best = (size, e, m)
    return best[1], best[2]


def encode_uints(values: np.ndarray) -> bytes:
    """Code a 1-D array of integers in [0, 2**62)."""
    values = np.ascontiguousarray(values, dtype=np.int64).reshape(-1)
    if values.size and (int(values.min()) < 0 or int(values.max()) >> MAX_VALUE_BITS):
        raise ValueError("intcode values must be in [0, 2**62)")
    e, m = _choose(values) if values.size else (0, 0)
    tokens, raw, nbits = _split(values, e, m)
    coded = rans.encode_symbols(tokens)
    head = bytearray([e, m])
    put_varint(head, len(coded))
    return bytes(head) + coded + _pack_raw(raw, nbits)


def decode_uints(data: bytes | memoryview | np.ndarray, count: int) -> np.ndarray:
    """Inverse of :func:`encode_uints`: ``count`` int64 values."""
    raw = np.frombuffer(data, dtype=np.uint8) if not isinstance(data, np.ndarray) else data
    if raw.size < 3:
        raise ValueError("intcode stream is truncated")
    e, m = int(raw[0]), int(raw[1])
    if e > MAX_SPLIT or m > min(e, MAX_MANTISSA):
        raise ValueError(f"intcode parameters e={e} m={m} out of range")
    token_bytes, pos = get_varint(raw, 2)
    if pos + token_bytes > raw.size:
        raise ValueError("intcode token stream is truncated")
    tokens = rans.decode_symbols(raw[pos : pos + token_bytes], count, np.uint16).astype(np.int64)
    direct = tokens < (1 << e)
    t = tokens - (1 << e)
    n = np.where(direct, 0, e + (t >> m))
    if (n > MAX_VALUE_BITS).any():
        raise ValueError("intcode token out of range")
    nbits = np.where(direct, 0, n - m)
    low = _unpack_raw(raw[pos + token_bytes :], nbits)
    top = ((np.int64(1) << m) | (t & ((1 << m) - 1))) << nbits
    return np.where(direct, tokens, top | low)


def put_varint(out: bytearray, value: int) -> None:
    varint.put(out, value)


def get_varint(raw, pos: int) -> tuple[int, int]:
    return varint.get(raw, pos, max_bits=63, what="intcode varint")



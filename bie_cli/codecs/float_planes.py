"""Split floats into entropy-friendly symbols and near-uniform planes, and join them back.

Every element (``itemsize`` bytes, little-endian) is cut into

* its **head**: the top two bytes (sign, exponent, top mantissa bits; the
  whole element for F16/BF16) or, for 1-byte floats, its only byte;
* the head's **symbol**: its magnitude bits (head without the sign) above
  the lowest ``low_bits``: ``(head & (2**(W-1) - 1)) >> low_bits`` for a
  W-bit head — exponent and top mantissa bits, coded jointly so the
  mantissa bits are modelled given the exponent;
* its **residual**: ``(sign << low_bits) | (head & (2**low_bits - 1))``,
  ``low_bits + 1`` bits; the sign is kept out of the symbol because it is a
  fair coin independent of the magnitude, and leaving it out halves the
  symbol table;
* **tail planes**: the remaining ``itemsize - head_bytes`` bytes, one plane
  per byte position, most significant first.

Residuals are packed ``low_bits + 1`` bits each into one little-endian bit
stream (element ``i`` at bits ``i*w .. i*w+w-1``, last byte zero-padded), the
bit order of :func:`bie_cli.codecs.bitpack.pack_bits`.

Only bytes move, no float arithmetic, so NaN payloads, infinities,
subnormals and -0.0 come back bit for bit. ``split_reference`` is the numpy
definition the numba kernels are tested against.
"""

from __future__ import annotations

import numpy as np

from . import _jit


def head_bytes_for(itemsize: int) -> int:
    return 1 if itemsize == 1 else 2


def low_bits_range(itemsize: int) -> range:
    """Valid ``low_bits``: symbols of at most 12 bits, residuals of at most 8."""
    magnitude_bits = 8 * head_bytes_for(itemsize) - 1
    return range(max(0, magnitude_bits - 12), min(7, magnitude_bits - 1) + 1)


def preferred_low_bits(itemsize: int) -> tuple[int, ...]:
    """What the encoder chooses from. For 16-bit heads only whole-nibble and
    whole-byte residuals (3 and 7): decoding them is a straight loop, and on
    MiniLM the other widths gained under 0.05 %."""
    return (3, 7) if head_bytes_for(itemsize) == 2 else tuple(low_bits_range(itemsize))


def head_histogram(data: np.ndarray, itemsize: int) -> np.ndarray:
    """Counts of every head value (2**8 or 2**16 bins)."""
    _float_planes_numba = _jit.kernels("_float_planes_numba")

    return _float_planes_numba.head_histogram(data, itemsize, head_bytes_for(itemsize))


def magnitude_counts(head_counts: np.ndarray) -> np.ndarray:
    """Histogram of the heads without their sign bit."""
    return head_counts.reshape(2, -1).sum(axis=0)


def symbol_counts(magnitudes: np.ndarray, low_bits: int) -> np.ndarray:
    """Histogram of the symbols from :func:`magnitude_counts`."""
    return magnitudes.reshape(-1, 1 << low_bits).sum(axis=1)


def split(data: np.ndarray, itemsize: int, low_bits: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Element bytes (uint8, n * itemsize) -> (symbols uint16[n], packed residuals, tails[planes, n])."""
    _check(itemsize, low_bits)
    heads, tails = heads_and_tails(data, itemsize)
    symbols, residual = split_heads(heads, itemsize, low_bits)
    return symbols, residual, tails


def heads_and_tails(data: np.ndarray, itemsize: int) -> tuple[np.ndarray, np.ndarray]:
    """Element bytes (uint8, n * itemsize) -> (heads[n], tails[planes, n]) in one pass.

    Heads are uint16 (the top two bytes) or, for 1-byte floats, uint8; tail
    plane t is byte ``planes - 1 - t`` of every element (most significant first)."""
    _float_planes_numba = _jit.kernels("_float_planes_numba")

    data = np.ascontiguousarray(data, dtype=np.uint8).reshape(-1)
    data = data[: data.size - data.size % itemsize]
    n = data.size // itemsize
    if itemsize == 1:
        return data, np.empty((0, n), dtype=np.uint8)
    words = element_words(data, itemsize)
    if itemsize == 2:
        return words, np.empty((0, n), dtype=np.uint8)
    if itemsize == 4:
        return _float_planes_numba.heads_tails32(words)
    return _float_planes_numba.heads_tails64(words)


_WORDS = {size: np.dtype(f"<u{size}") for size in (2, 4, 8)}  # parsing the string cost ~1.7 µs a chunk


def element_words(data: np.ndarray, itemsize: int) -> np.ndarray:
    """Element bytes (contiguous uint8, a multiple of ``itemsize`` > 1) as little-endian unsigned
    words, aligned: numba compiles unaligned arrays separately, so those are copied."""
    words = data.view(_WORDS[itemsize])
    if not words.flags.aligned:  # what numba looks at (cheaper than ``words.ctypes.data``)
        words = words.copy()
    return words


def split_heads(heads: np.ndarray, itemsize: int, low_bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Heads from :func:`heads_and_tails` -> (symbols uint16[n], packed residuals)."""
    _float_planes_numba = _jit.kernels("_float_planes_numba")

    _check(itemsize, low_bits)
    if head_bytes_for(itemsize) == 2 and low_bits in (3, 7):
        return _float_planes_numba.split_heads16(heads, low_bits)
    return _float_planes_numba.split_heads(heads, 8 * head_bytes_for(itemsize), low_bits)


def symbol_histogram(heads: np.ndarray, itemsize: int, low_bits: int) -> np.ndarray:
    """Histogram of the symbols of ``heads`` from :func:`heads_and_tails` (int64, one
    count per symbol): ``symbol_counts(magnitude_counts(head_histogram(...)), low_bits)``
    counted directly, in a table of the symbols' size rather than of every head value."""
    _rans_numba = _jit.kernels("_rans_numba")

    head_bits = 8 * head_bytes_for(itemsize)
    return _rans_numba.masked_histogram(heads, (1 << (head_bits - 1)) - 1, low_bits, 1 << (head_bits - 1 - low_bits))


def coarser_counts(counts: np.ndarray, extra_bits: int) -> np.ndarray:
    """Symbol counts for ``extra_bits`` more low bits, from those of fewer."""
    return counts.reshape(-1, 1 << extra_bits).sum(axis=1) if extra_bits else counts


def residual_size(count: int, low_bits: int) -> int:
    return (count * (low_bits + 1) + 7) // 8


def join(symbols: np.ndarray, residual: np.ndarray, tails: np.ndarray, itemsize: int, low_bits: int) -> np.ndarray:
    """Inverse of :func:`split`: the element bytes. ``ValueError`` when the parts disagree."""
    _check(itemsize, low_bits)
    n = symbols.shape[0]
    head_bytes = head_bytes_for(itemsize)
    if residual.shape[0] != residual_size(n, low_bits):
        raise ValueError("residual stream length does not match the element count")
    if tails.shape != (itemsize - head_bytes, n):
        raise ValueError("tail planes do not match the element count")
    if n and int(symbols.max()) >> (8 * head_bytes - 1 - low_bits):
        raise ValueError("symbol out of range for the head width")
    if _jit.prefer_numpy(n):
        return join_reference(symbols, residual, tails, itemsize, low_bits)
    out = np.empty(n * itemsize, dtype=np.uint8)
    if head_bytes == 2:
        padded = np.zeros(residual.size + 8, dtype=np.uint8)
        padded[: residual.size] = residual
        _jit.kernels("_float_planes_numba").join_heads16(symbols, padded, tails, itemsize, low_bits, out, out.view(np.uint16))
    else:
        _jit.kernels("_float_planes_numba").join(symbols, residual, tails, itemsize, head_bytes, low_bits, out)
    return out


def join32(symbols: np.ndarray, residual: np.ndarray, high: np.ndarray, low: np.ndarray, low_bits: int) -> np.ndarray:
    """:func:`join` for 4-byte elements and ``low_bits`` 3 or 7, from the two tail planes
    (``high``: byte 1, ``low``: byte 0) given separately: no copy into a planes array.
    The symbols must be below 2**(15 - low_bits) (``rans.decode_symbols``' alphabet checks it)."""
    if low_bits not in (3, 7):
        raise ValueError(f"join32 handles low_bits 3 and 7, not {low_bits}")
    n = symbols.shape[0]
    if residual.shape[0] != residual_size(n, low_bits):
        raise ValueError("residual stream length does not match the element count")
    if high.shape != (n,) or low.shape != (n,):
        raise ValueError("tail planes do not match the element count")
    if _jit.prefer_numpy(n):
        return join_reference(symbols, residual, np.stack([high, low]), 4, low_bits)
    _float_planes_numba = _jit.kernels("_float_planes_numba")
    out = np.empty(n, dtype="<u4")
    _float_planes_numba.join32(symbols, residual, high, low, low_bits, out)
    return out.view(np.uint8)


def join16(symbols: np.ndarray, residual: np.ndarray, low_bits: int) -> np.ndarray:
    """:func:`join` for 2-byte elements and ``low_bits`` 3 or 7: whole-byte and whole-nibble
    residuals need no padding. The symbols must be below 2**(15 - low_bits)
    (``rans.decode_symbols``' alphabet checks it)."""
    if low_bits not in (3, 7):
        raise ValueError(f"join16 handles low_bits 3 and 7, not {low_bits}")
    n = symbols.shape[0]
    if residual.shape[0] != residual_size(n, low_bits):
        raise ValueError("residual stream length does not match the element count")
    if _jit.prefer_numpy(n):
        return join_reference(symbols, residual, np.empty((0, n), dtype=np.uint8), 2, low_bits)
    _float_planes_numba = _jit.kernels("_float_planes_numba")
    out = np.empty(n, dtype="<u2")
    _float_planes_numba.join_heads16(symbols, residual, np.empty((0, n), dtype=np.uint8), 2, low_bits,
                                     out.view(np.uint8), out)
    return out.view(np.uint8)


def _check(itemsize: int, low_bits: int) -> None:
    if itemsize not in (1, 2, 4, 8):
        raise ValueError(f"itemsize must be 1, 2, 4 or 8, got {itemsize}")
    if low_bits not in low_bits_range(itemsize):
        raise ValueError(f"low_bits {low_bits} out of range for {itemsize}-byte elements")


# -- numpy reference ------------------------------------------------------------
def split_reference(data: np.ndarray, itemsize: int, low_bits: int):
    head_bytes = head_bytes_for(itemsize)
    head_bits = 8 * head_bytes
    planes = data.reshape(-1, itemsize)
    head = planes[:, -1].astype(np.uint16)
    if head_bytes == 2:
        head = (head << 8) | planes[:, -2]
    symbols = ((head & ((1 << (head_bits - 1)) - 1)) >> low_bits).astype(np.uint16)
    sign = head >> (head_bits - 1)
    residual_values = ((sign << low_bits) | (head & ((1 << low_bits) - 1))).astype(np.uint8)
    bits = np.unpackbits(residual_values[:, None], axis=1, bitorder="little")[:, : low_bits + 1]
    residual = np.packbits(bits.reshape(-1), bitorder="little")
    tails = np.ascontiguousarray(planes[:, : itemsize - head_bytes][:, ::-1].T)
    return symbols, residual, tails


def join_reference(symbols: np.ndarray, residual: np.ndarray, tails: np.ndarray, itemsize: int,
                   low_bits: int) -> np.ndarray:
    """Inverse of :func:`split_reference`; :func:`join` uses it for small inputs (see _jit.py)."""
    head_bytes = head_bytes_for(itemsize)
    n = symbols.shape[0]
    bits = np.unpackbits(residual, bitorder="little")[: n * (low_bits + 1)].reshape(n, low_bits + 1)
    residual_values = np.packbits(bits, axis=1, bitorder="little")[:, 0].astype(np.uint16)
    sign = residual_values >> low_bits
    head = (sign << (8 * head_bytes - 1)) | (symbols.astype(np.uint16) << low_bits) | (
        residual_values & ((1 << low_bits) - 1))
    planes = np.empty((n, itemsize), dtype=np.uint8)
    planes[:, -1] = head >> 8 if head_bytes == 2 else head
    if head_bytes == 2:
        planes[:, -2] = head & 0xFF
    planes[:, : itemsize - head_bytes] = tails[::-1].T
    return planes.reshape(-1)

"""Numba kernels for :mod:`bie_cli.codecs.float_planes` (imported lazily)."""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(nogil=True, cache=True)
def head_histogram(data, itemsize, head_bytes):  # pragma: no cover - compiled
    counts = np.zeros(np.int64(1) << (8 * head_bytes), dtype=np.int64)
    n = data.shape[0] // itemsize
    top = itemsize - 1
    if head_bytes == 2:
        for i in range(n):
            base = i * itemsize + top
            counts[(np.int64(data[base]) << 8) | data[base - 1]] += 1
    else:
        for i in range(n):
            counts[data[i * itemsize + top]] += 1
    return counts


@njit(nogil=True, cache=True)
def split_heads(heads, head_bits, low_bits):  # pragma: no cover - compiled
    """``heads`` (uint8 or uint16) -> (symbols, packed residuals).

    symbol = magnitude bits above ``low_bits``; residual = sign, then the
    ``low_bits`` low bits: ``(sign << low_bits) | low``, ``low_bits + 1`` bits.
    Separate simple passes that LLVM unrolls; one fused loop ran several times slower.
    """
    n = heads.shape[0]
    width = low_bits + 1
    sign_shift = head_bits - 1
    magnitude = (1 << sign_shift) - 1
    mask = (1 << low_bits) - 1
    symbols = np.empty(n, dtype=np.uint16)
    for i in range(n):
        symbols[i] = (heads[i] & magnitude) >> low_bits
    # residuals of eight elements fill exactly ``width`` bytes (little-endian)
    n_groups = (n + 7) // 8
    residual = np.zeros(n_groups * width + 8, dtype=np.uint8)
    for g in range(n_groups):
        window = np.int64(0)
        stop = min(8, n - 8 * g)
        for k in range(stop):
            h = np.int64(heads[8 * g + k])
            window |= (((h >> sign_shift) << low_bits) | (h & mask)) << (k * width)
        at = g * width
        for k in range(8):  # bytes past this group's are overwritten by the next group
            residual[at + k] = (window >> (8 * k)) & 0xFF
    return symbols, residual[: (n * width + 7) // 8]


@njit(nogil=True, cache=True)
def tail_planes(data, itemsize, n_tails):  # pragma: no cover - compiled
    """Plane t is byte (n_tails - 1 - t) of every element: most significant first."""
    n = data.shape[0] // itemsize
    tails = np.empty((n_tails, n), dtype=np.uint8)
    for t in range(n_tails):
        byte = n_tails - 1 - t
        for i in range(n):
            tails[t, i] = data[i * itemsize + byte]
    return tails


@njit(nogil=True, cache=True)
def join(symbols, residual, tails, itemsize, head_bytes, low_bits, out):  # pragma: no cover - compiled
    """Inverse of ``split_heads`` + ``tail_planes`` into ``out`` (uint8, n * itemsize).
    Lengths are checked by the caller."""
    n = symbols.shape[0]
    n_tails = itemsize - head_bytes
    width = low_bits + 1
    sign_shift = 8 * head_bytes - 1
    wmask = (np.int64(1) << width) - 1
    mask = (np.int64(1) << low_bits) - 1
    top = itemsize - 1
    n_residual = residual.shape[0]
    for i in range(n):
        bit = i * width
        b = bit >> 3
        window = np.int64(residual[b])
        if b + 1 < n_residual:
            window |= np.int64(residual[b + 1]) << 8
        r = (window >> (bit & 7)) & wmask
        head = ((r >> low_bits) << sign_shift) | (np.int64(symbols[i]) << low_bits) | (r & mask)
        base = i * itemsize
        if head_bytes == 2:
            out[base + top] = head >> 8
            out[base + top - 1] = head & 0xFF
        else:
            out[base + top] = head
        for t in range(n_tails):
            out[base + n_tails - 1 - t] = tails[t, i]


@njit(nogil=True, cache=True)
def join_heads16(symbols, residual, tails, itemsize, low_bits, out8, out16):  # pragma: no cover - compiled
    """``join`` for 16-bit heads, with straight loops for whole-byte and
    whole-nibble residuals (``low_bits`` 7 and 3, what the encoder picks).
    ``residual`` carries 8 zero bytes of padding; ``out16`` is ``out8`` as uint16."""
    n = symbols.shape[0]
    half = itemsize // 2
    width = low_bits + 1
    lmask = (1 << low_bits) - 1
    if width == 8 and half == 1:  # F16/BF16, byte residuals: a loop LLVM vectorises
        for i in range(n):
            r = np.int64(residual[i])
            out16[i] = ((r >> 7) << 15) | (np.int64(symbols[i]) << 7) | (r & 0x7F)
    elif width == 4 and half == 1:
        for i in range(n):
            r = (np.int64(residual[i >> 1]) >> ((i & 1) << 2)) & 0xF
            out16[i] = ((r >> 3) << 15) | (np.int64(symbols[i]) << 3) | (r & 0x7)
    elif width == 8:
        for i in range(n):
            r = np.int64(residual[i])
            out16[i * half + half - 1] = ((r >> 7) << 15) | (np.int64(symbols[i]) << 7) | (r & 0x7F)
    elif width == 4:
        for i in range(n):
            r = (np.int64(residual[i >> 1]) >> ((i & 1) << 2)) & 0xF
            out16[i * half + half - 1] = ((r >> 3) << 15) | (np.int64(symbols[i]) << 3) | (r & 0x7)
    else:
        rmask = (1 << width) - 1
        for i in range(n):
            bit = i * width
            b = bit >> 3
            r = ((np.int64(residual[b]) | (np.int64(residual[b + 1]) << 8)) >> (bit & 7)) & rmask
            out16[i * half + half - 1] = ((r >> low_bits) << 15) | (np.int64(symbols[i]) << low_bits) | (r & lmask)
    n_tails = itemsize - 2
    for t in range(n_tails):
        byte = n_tails - 1 - t  # plane t is byte (n_tails - 1 - t): most significant first
        plane = tails[t]
        for i in range(n):
            out8[i * itemsize + byte] = plane[i]


@njit(nogil=True, cache=True)
def join16_in_place(residual, low_bits, out):  # pragma: no cover - compiled
    """``join_heads16`` for 2-byte elements whose symbols are already in ``out`` (uint16[n]):
    each element completed where it is, so the decoder needs no symbols array. One array read
    and written at the same index: LLVM vectorises it (with the symbols in an array of their
    own that might overlap ``out``, its run-time alias check would fall back to scalar code).
    ``residual``: no padding needed at ``low_bits`` 3 and 7, 8 bytes of it otherwise."""
    n = out.shape[0]
    if low_bits == 7:
        for i in range(n):
            r = np.int64(residual[i])
            out[i] = ((r >> 7) << 15) | (np.int64(out[i]) << 7) | (r & 0x7F)
    elif low_bits == 3:  # a byte holds two elements' residuals: one byte a step, no variable shift
        for j in range(n >> 1):
            r = np.int64(residual[j])
            a = r & 0xF
            b = r >> 4
            out[2 * j] = ((a >> 3) << 15) | (np.int64(out[2 * j]) << 3) | (a & 0x7)
            out[2 * j + 1] = ((b >> 3) << 15) | (np.int64(out[2 * j + 1]) << 3) | (b & 0x7)
        if n & 1:
            a = np.int64(residual[n >> 1]) & 0xF
            out[n - 1] = ((a >> 3) << 15) | (np.int64(out[n - 1]) << 3) | (a & 0x7)
    else:
        width = low_bits + 1
        rmask = (1 << width) - 1
        lmask = (1 << low_bits) - 1
        for i in range(n):
            bit = i * width
            b = bit >> 3
            r = ((np.int64(residual[b]) | (np.int64(residual[b + 1]) << 8)) >> (bit & 7)) & rmask
            out[i] = ((r >> low_bits) << 15) | (np.int64(out[i]) << low_bits) | (r & lmask)


@njit(nogil=True, cache=True)
def heads_tails32(words):  # pragma: no cover - compiled
    """4-byte elements as uint32: (heads = top 16 bits, tail planes [byte 1, byte 0]) in one pass."""
    n = words.shape[0]
    heads = np.empty(n, dtype=np.uint16)
    tails = np.empty((2, n), dtype=np.uint8)
    for i in range(n):
        v = words[i]
        heads[i] = v >> 16
        tails[0, i] = (v >> 8) & 0xFF
        tails[1, i] = v & 0xFF
    return heads, tails


@njit(nogil=True, cache=True)
def heads_tails64(words):  # pragma: no cover - compiled
    """8-byte elements as uint64: (heads = top 16 bits, tail planes [byte 5 .. byte 0]) in one pass."""
    n = words.shape[0]
    heads = np.empty(n, dtype=np.uint16)
    tails = np.empty((6, n), dtype=np.uint8)
    for i in range(n):
        v = words[i]
        heads[i] = v >> 48
        for t in range(6):
            tails[t, i] = (v >> (8 * (5 - t))) & 0xFF
    return heads, tails


@njit(nogil=True, cache=True)
def split_heads16(heads, low_bits):  # pragma: no cover - compiled
    """``split_heads`` for 16-bit heads and ``low_bits`` 3 or 7 (what the encoder picks):
    whole-nibble and whole-byte residuals, straight loops LLVM vectorises."""
    n = heads.shape[0]
    symbols = np.empty(n, dtype=np.uint16)
    for i in range(n):
        symbols[i] = (heads[i] & 0x7FFF) >> low_bits
    return symbols, residual16(heads, low_bits)


@njit(nogil=True, cache=True)
def residual16(heads, low_bits):  # pragma: no cover - compiled
    """The residual plane of :func:`split_heads16` (sign and ``low_bits`` 3 or 7 low bits), without
    the symbols: the encoder takes those from the heads as it codes them."""
    n = heads.shape[0]
    if low_bits == 7:
        residual = np.empty(n, dtype=np.uint8)
        for i in range(n):
            h = heads[i]
            residual[i] = ((h >> 8) & 0x80) | (h & 0x7F)
    else:  # low_bits == 3: element 2j in the low nibble of byte j, 2j + 1 in the high one
        residual = np.empty((n + 1) // 2, dtype=np.uint8)
        for j in range(n // 2):
            a = heads[2 * j]
            b = heads[2 * j + 1]
            residual[j] = ((a >> 12) & 0x8) | (a & 0x7) | ((b >> 8) & 0x80) | ((b & 0x7) << 4)
        if n & 1:
            a = heads[n - 1]
            residual[n // 2] = ((a >> 12) & 0x8) | (a & 0x7)
    return residual


@njit(nogil=True, cache=True)
def join32(symbols, residual, high, low, low_bits, out):  # pragma: no cover - compiled
    """Inverse of ``heads_tails32`` + ``split_heads16`` for 4-byte elements and ``low_bits``
    3 or 7, into ``out`` (uint32[n]); ``high``/``low`` are the tail planes (bytes 1 and 0).
    Lengths are checked by the caller; ``symbols`` and ``out`` are C-contiguous (native arrays:
    little-endian, as everywhere in this package)."""
    n = symbols.shape[0]
    if low_bits == 7:
        for i in range(n):
            r = np.uint32(residual[i])
            head = ((r & 0x80) << 8) | (np.uint32(symbols[i]) << 7) | (r & 0x7F)
            out[i] = (head << 16) | (np.uint32(high[i]) << 8) | np.uint32(low[i])
        return
    # low_bits 3: a residual byte holds two elements' nibbles. Two elements a step as one
    # uint64 of two uint32 lanes (symbol pairs read as uint32, written as uint64): no variable
    # shift and no interleaved stores, so LLVM vectorises it (0.33 -> 0.22-0.25 ns an element)
    m = n >> 1
    pairs = symbols[: 2 * m].view(np.uint32)
    out2 = out[: 2 * m].view(np.uint64)
    lane = np.uint64(32)
    half = np.uint64(0xFFFF)
    for j in range(m):
        r = np.uint64(residual[j])
        s = np.uint64(pairs[j])
        nib = (r & np.uint64(0xF)) | ((r >> np.uint64(4)) << lane)  # residual a in lane 0, b in lane 1
        sym = (s & half) | ((s >> np.uint64(16)) << lane)
        hi = np.uint64(high[2 * j]) | (np.uint64(high[2 * j + 1]) << lane)
        lo = np.uint64(low[2 * j]) | (np.uint64(low[2 * j + 1]) << lane)
        out2[j] = (((nib & np.uint64(0x800000008)) << np.uint64(28)) | (sym << np.uint64(19))
                   | ((nib & np.uint64(0x700000007)) << np.uint64(16)) | (hi << np.uint64(8)) | lo)
    if n & 1:
        r = np.uint32(residual[n >> 1]) & 0xF
        head = ((r & 0x8) << 12) | (np.uint32(symbols[n - 1]) << 3) | (r & 0x7)
        out[n - 1] = (head << 16) | (np.uint32(high[n - 1]) << 8) | np.uint32(low[n - 1])

"""Numba kernels for :mod:`bie_cli.codecs.rans` (imported lazily: numba is slow to import).

Interleaved rANS after Fabian Giesen's ``rans_word`` (public domain): eight
independent 31-bit states in [L, L * 2**16) with L = 2**15, renormalised
16 bits at a time, the encoder's division replaced by a reciprocal multiply
(``rans_byte.h``: ``RansEncSymInit``). States stay below 2**31 and
reciprocals below 2**32, so every product fits in int64; numba promotes mixed
unsigned/signed arithmetic to float, so everything here is int64.

Symbol ``i`` uses lane ``i % 8``: eight dependency chains keep the CPU busy
while each waits on its table lookup (measured 1.3 ns/symbol against 1.8
with four lanes).
"""

from __future__ import annotations

import numpy as np
from numba import njit

RANS_L = 1 << 15
LANES = 8


@njit(inline="always")
def decode_step(x, table, mask, scale_bits):  # pragma: no cover - compiled
    """One symbol from state ``x``: returns (new state before renormalisation, symbol).
    ``x`` is a valid state (>= 0: the callers check the initial states and every later one
    is freq * (x >> scale) + bias), so the slot is indexed unsigned (no wraparound check)."""
    e = table[np.uint64(x & mask)]
    return ((e >> 16) & 0xFFFF) * (x >> scale_bits) + (e >> 32), e & 0xFFFF


@njit(inline="always")
def renormalise(x, words, pos):  # pragma: no cover - compiled
    """Shift in ``words[pos]`` only when ``x`` fell below L, as a select on an unsigned compare:
    a conditional move and an add-with-carry per lane, fewer instructions than shifting by
    ``r << 4`` and masking the word (168 against 176 per 8 symbols, session 9). The word is read
    either way; ``pos`` only grows from 0, so it is indexed unsigned; the callers bound it from above."""
    y = (x << 16) | np.int64(words[np.uint64(pos)])
    r = np.uint64(x) < np.uint64(RANS_L)
    return (y if r else x), pos + np.int64(r)


@njit(nogil=True, cache=True)
def histogram(symbols, alphabet):  # pragma: no cover - compiled
    """Counts per symbol. Four tables taken in turn: runs of one symbol (a weight matrix's
    common exponents) would otherwise wait on the previous increment of the same counter."""
    return masked_histogram(symbols, 0xFFFF, 0, alphabet)


@njit(nogil=True, cache=True)
def masked_histogram(values, mask, shift, alphabet):  # pragma: no cover - compiled
    """Counts of ``(values & mask) >> shift`` (every one below ``alphabet``)."""
    n = values.shape[0]
    tables = np.zeros((4, alphabet), dtype=np.int64)
    whole = n - (n & 3)
    for i in range(0, whole, 4):
        tables[0, (np.int64(values[i]) & mask) >> shift] += 1
        tables[1, (np.int64(values[i + 1]) & mask) >> shift] += 1
        tables[2, (np.int64(values[i + 2]) & mask) >> shift] += 1
        tables[3, (np.int64(values[i + 3]) & mask) >> shift] += 1
    for i in range(whole, n):
        tables[0, (np.int64(values[i]) & mask) >> shift] += 1
    counts = np.empty(alphabet, dtype=np.int64)
    for s in range(alphabet):
        counts[s] = tables[0, s] + tables[1, s] + tables[2, s] + tables[3, s]
    return counts


@njit(inline="always")
def encode_step(x, s, info, words, pos):  # pragma: no cover - compiled
    """Push symbol ``s`` onto state ``x``; returns (state, pos). Branchless renormalisation:
    the word is always written at ``pos - 1`` and kept only if ``pos`` moves."""
    r = np.int64(x >= info[s, 0])
    words[np.uint64(pos - 1)] = x & 0xFFFF  # unsigned: no negative-index check (numba's wraparound)
    pos -= r
    x >>= r << 4
    q = ((x * info[s, 1]) >> 32) >> info[s, 2]
    return x + info[s, 3] + q * info[s, 4], pos


@njit(inline="always")
def symbol_fields(f, start_s, scale_bits):  # pragma: no cover - compiled
    """An encoder's fields for a symbol of frequency ``f`` >= 1 starting at ``start_s``:
    (x_max, reciprocal, reciprocal shift, bias, 2**scale - f), after ``RansEncSymInit``;
    ``q = ((x * reciprocal) >> 32) >> shift`` is ``x // f`` for every state x < 2**31."""
    total = np.int64(1) << scale_bits
    x_max = ((RANS_L >> scale_bits) << 16) * f
    if f < 2:
        return x_max, (np.int64(1) << 32) - 1, np.int64(0), start_s + total - 1, total - f
    shift_f = 0
    while f > (np.int64(1) << shift_f):
        shift_f += 1
    return x_max, ((np.int64(1) << (shift_f + 31)) + f - 1) // f, np.int64(shift_f - 1), np.int64(start_s), total - f


@njit(nogil=True, cache=True)
def encode(symbols, freq, start, scale_bits):  # pragma: no cover - compiled
    """Returns (states[LANES], words): words are read front to back by the decoder.
    (The vector form of :func:`encode_into`: the same words, eight lanes a step.)"""
    # at most one 16-bit word per symbol (scale_bits <= 15), plus one slot so
    # the branchless write at pos - 1 never leaves the buffer
    words = np.empty(symbols.shape[0] + 1, dtype=np.uint16)
    states, pos = _vector.encode_into(symbols, np.int64(-1), np.int64(0), freq, start, scale_bits, words, words.shape[0])
    return states, words[pos:]  # a view: the caller copies it once, into its payload


@njit(nogil=True, cache=True)
def encode_into(values, mask, shift, freq, start, scale_bits, words, end):  # pragma: no cover - compiled
    """:func:`encode` of the symbols ``(values[i] & mask) >> shift`` (so a caller can code
    part of each value without a symbols array), writing the words backwards so that they end
    at ``words[end]``: returns (states[LANES], pos) with the words in ``words[pos:end]``.
    ``words[end - n - 1:end]`` must be free (n = ``values.shape[0]``; the slot before the
    first word is scratch). The reference of ``_rans_vector_encode.encode_into`` (the same
    bytes, eight lanes a step), which the encoders call."""
    n_sym = freq.shape[0]
    # per symbol: x_max, reciprocal, reciprocal shift, bias, 2**scale - freq (one cache line)
    info = np.zeros((n_sym, 5), dtype=np.int64)
    for s in range(n_sym):
        if freq[s]:
            info[s, 0], info[s, 1], info[s, 2], info[s, 3], info[s, 4] = symbol_fields(freq[s], start[s], scale_bits)
    n = values.shape[0]
    pos = end
    states = np.full(LANES, RANS_L, dtype=np.int64)
    whole = n - (n & (LANES - 1))
    # unsigned indices, mask and shift: numba checks a signed index for wraparound, and those
    # checks (and the registers they hold) cost a third of the loop
    m = np.uint64(mask)
    sh = np.uint64(shift)
    # the last n % 8 symbols first (the decoder reads them last)
    for i in range(n - 1, whole - 1, -1):
        lane = i & (LANES - 1)
        states[lane], pos = encode_step(states[lane], (np.uint64(values[i]) & m) >> sh, info, words, pos)
    x0, x1, x2, x3 = states[0], states[1], states[2], states[3]
    x4, x5, x6, x7 = states[4], states[5], states[6], states[7]
    for k in range(whole // LANES - 1, -1, -1):
        i = np.uint64(k) * np.uint64(LANES)
        x7, pos = encode_step(x7, (np.uint64(values[i + np.uint64(7)]) & m) >> sh, info, words, pos)
        x6, pos = encode_step(x6, (np.uint64(values[i + np.uint64(6)]) & m) >> sh, info, words, pos)
        x5, pos = encode_step(x5, (np.uint64(values[i + np.uint64(5)]) & m) >> sh, info, words, pos)
        x4, pos = encode_step(x4, (np.uint64(values[i + np.uint64(4)]) & m) >> sh, info, words, pos)
        x3, pos = encode_step(x3, (np.uint64(values[i + np.uint64(3)]) & m) >> sh, info, words, pos)
        x2, pos = encode_step(x2, (np.uint64(values[i + np.uint64(2)]) & m) >> sh, info, words, pos)
        x1, pos = encode_step(x1, (np.uint64(values[i + np.uint64(1)]) & m) >> sh, info, words, pos)
        x0, pos = encode_step(x0, (np.uint64(values[i]) & m) >> sh, info, words, pos)
    states = np.array([x0, x1, x2, x3, x4, x5, x6, x7], dtype=np.int64)
    return states, pos


@njit(nogil=True, cache=True)
def slot_table(freq, scale_bits):  # pragma: no cover - compiled
    """Per slot: symbol | freq << 16 | (slot - start) << 32, so decoding is one load."""
    table = np.empty(np.int64(1) << scale_bits, dtype=np.int64)
    slot = 0
    for s in range(freq.shape[0]):
        for k in range(freq[s]):  # slot only grows from 0: unsigned (the callers check the sum)
            table[np.uint64(slot)] = s | (freq[s] << 16) | (np.int64(k) << 32)
            slot += 1
    return table


@njit(nogil=True, cache=True)
def decode_tail(words, pos, n_words, states, first, count, table, scale_bits, out):  # pragma: no cover - compiled
    """Symbols ``first..count-1`` one at a time, then the end-of-stream checks.

    Returns 0 ok, 1 truncated, 2 trailing words or bad final state.
    """
    mask = (np.int64(1) << scale_bits) - 1
    for i in range(first, count):  # first >= 0 and pos >= 0 (decode's): unsigned indices
        lane = np.uint64(i) & np.uint64(LANES - 1)
        x, s = decode_step(states[lane], table, mask, scale_bits)
        out[np.uint64(i)] = s
        if x < RANS_L:
            if pos >= n_words:
                return 1
            x = (x << 16) | np.int64(words[np.uint64(pos)])
            pos += 1
        states[lane] = x
    if pos != n_words:
        return 2
    for lane in range(LANES):
        if states[lane] != RANS_L:
            return 2
    return 0


@njit(nogil=True, cache=True)
def decode(words, states_in, count, table, scale_bits, out):  # pragma: no cover - compiled
    """Fill ``out[:count]``; returns 0 ok, 1 truncated, 2 trailing words or bad final state.

    ``words`` carries LANES zero words of padding after the real ones, so the
    renormalisation reads without a branch; ``pos`` is checked once per group
    of eight (at most eight reads), so it never runs past the padding. The states must lie
    in [L, L * 2**16) (``rans.parse_stream`` and ``_float_split_numba.rans_decode`` check
    them): every later state then does too, which is what the unsigned slot index relies on.
    """
    n_words = words.shape[0] - LANES
    mask = (np.int64(1) << scale_bits) - 1
    x0, x1, x2, x3 = states_in[0], states_in[1], states_in[2], states_in[3]
    x4, x5, x6, x7 = states_in[4], states_in[5], states_in[6], states_in[7]
    pos = 0
    whole = count - (count & (LANES - 1))
    # unsigned indices (out, the table slots, pos): numba checks a signed index for
    # wraparound, and those checks (and the registers they hold) cost spills in this loop
    for k in range(whole // LANES):
        if pos > n_words:
            return 1
        i = np.uint64(k) * np.uint64(LANES)
        x0, out[i] = decode_step(x0, table, mask, scale_bits)
        x1, out[i + np.uint64(1)] = decode_step(x1, table, mask, scale_bits)
        x2, out[i + np.uint64(2)] = decode_step(x2, table, mask, scale_bits)
        x3, out[i + np.uint64(3)] = decode_step(x3, table, mask, scale_bits)
        x4, out[i + np.uint64(4)] = decode_step(x4, table, mask, scale_bits)
        x5, out[i + np.uint64(5)] = decode_step(x5, table, mask, scale_bits)
        x6, out[i + np.uint64(6)] = decode_step(x6, table, mask, scale_bits)
        x7, out[i + np.uint64(7)] = decode_step(x7, table, mask, scale_bits)
        x0, pos = renormalise(x0, words, pos)
        x1, pos = renormalise(x1, words, pos)
        x2, pos = renormalise(x2, words, pos)
        x3, pos = renormalise(x3, words, pos)
        x4, pos = renormalise(x4, words, pos)
        x5, pos = renormalise(x5, words, pos)
        x6, pos = renormalise(x6, words, pos)
        x7, pos = renormalise(x7, words, pos)
    if pos > n_words:
        return 1
    states = np.array([x0, x1, x2, x3, x4, x5, x6, x7], dtype=np.int64)
    return decode_tail(words, pos, n_words, states, whole, count, table, scale_bits, out)


@njit(nogil=True, cache=True)
def write_table(values, out):  # pragma: no cover - compiled
    """Frequencies as varints, each 0 followed by the count of further zeros; returns bytes written.

    ``out`` must hold 10 bytes per value.
    """
    pos = 0
    i = 0
    n = values.shape[0]
    while i < n:
        value = values[i]
        i += 1
        if value == 0:
            run = 0
            while i < n and values[i] == 0:
                run += 1
                i += 1
            out[pos] = 0
            pos += 1
            value = run
        while value >= 0x80:
            out[pos] = (value & 0x7F) | 0x80
            pos += 1
            value >>= 7
        out[pos] = value
        pos += 1
    return pos


@njit(nogil=True, cache=True)
def read_table(raw, pos, values):  # pragma: no cover - compiled
    """Inverse of ``write_table`` into ``values``; returns the end position, or -1 if corrupt."""
    n = values.shape[0]
    end = raw.shape[0]
    i = 0
    zero_run = False
    while i < n:
        value = np.int64(0)
        shift = 0
        while True:
            if pos >= end or shift > 35:
                return -1
            byte = np.int64(raw[pos])
            pos += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                break
        if zero_run:
            if i + value > n:
                return -1
            for _ in range(value):
                values[i] = 0
                i += 1
            zero_run = False
        else:
            values[i] = value
            i += 1
            zero_run = value == 0
    if zero_run:  # a final 0 must still be followed by its run length
        value = np.int64(0)
        shift = 0
        while True:
            if pos >= end or shift > 35:
                return -1
            byte = np.int64(raw[pos])
            pos += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                break
        if value != 0:
            return -1
    return pos


@njit(inline="always")
def scale_bits_for(total, present, max_scale_bits, default_max_scale_bits):  # pragma: no cover - compiled
    """``rans._scale_bits``: the table's precision for ``total`` symbols of ``present`` kinds."""
    need = max(1, np.int64(np.ceil(np.log2(max(present, 1)))) + 1)
    want = np.int64(1)
    t = max(total, 1)
    while t > 0:
        want += 1
        t >>= 1
    return max(min(default_max_scale_bits, want), min(need, max_scale_bits))


@njit(nogil=True, cache=True)
def estimate_bounds(counts, state_bytes, max_scale_bits, default_max_scale_bits):  # pragma: no cover - compiled
    """``rans.estimate_size`` computed here, as (low, high): the estimate with the Shannon
    bound's sum taken 1e-9 smaller and larger. A float sum in another order than numpy's
    differs by far less (positive terms: ~n * 2**-53), so when low == high it is the value
    ``estimate_size`` returns; otherwise the caller asks ``estimate_size``."""
    n = counts.shape[0]
    total = np.int64(0)
    present = np.int64(0)
    first = np.int64(-1)
    last = np.int64(-1)
    for s in range(n):
        c = counts[s]
        if c > 0:
            total += c
            present += 1
            if first < 0:
                first = s
            last = s
    if present == 0:
        return 3 + state_bytes, 3 + state_bytes
    bits = 0.0
    for s in range(n):
        c = counts[s]
        if c > 0:
            bits -= c * np.log2(c / total)
    scale_bits = scale_bits_for(total, present, max_scale_bits, default_max_scale_bits)
    big = np.int64(0)
    for s in range(n):
        c = counts[s]
        if c > 0 and c * (np.int64(1) << scale_bits) >= 128 * total:
            big += 1
    span = last - first + 1
    table = 4 + present + big + 2 * max(0, span - present) // 4
    low = table + state_bytes + np.int64(np.ceil(bits * (1 - 1e-9) / 8)) + 2
    high = table + state_bytes + np.int64(np.ceil(bits * (1 + 1e-9) / 8)) + 2
    return low, high


@njit(nogil=True, cache=True)
def normalise(counts, scale_bits):  # pragma: no cover - compiled
    """``rans.normalise`` (the same integers: see there)."""
    n = counts.shape[0]
    target = np.int64(1) << scale_bits
    total = np.int64(0)
    for s in range(n):
        total += counts[s]
    freq = np.zeros(n, dtype=np.int64)
    if total == 0:
        return freq
    # only present symbols divide: a float's 4,096-symbol alphabet holds a few hundred, and the
    # divisions of the absent ones (each 0) and a sort of the whole table were most of a small
    # tensor's encode (~200 us of ~250 for 384 BF16 elements)
    fsum = np.int64(0)
    givers = 0  # frequencies of 2 or more: the only ones the excess can be taken from
    for s in range(n):
        if counts[s] > 0:
            f = max((counts[s] * target + total // 2) // total, np.int64(1))
            freq[s] = f
            fsum += f
            givers += f > 1
    diff = target - fsum
    if diff > 0:
        freq[np.argmax(counts)] += diff
    elif diff < 0:
        # take the excess from the largest frequencies, never below 1, in the order of a stable
        # sort of all of them: sorting only those that can give keeps that order among them
        index = np.empty(givers, dtype=np.int64)
        k = 0
        for s in range(n):
            if freq[s] > 1:
                index[k] = s
                k += 1
        order = index[np.argsort(-freq[index], kind="mergesort")]
        for k in range(givers):
            s = order[k]
            take = min(-diff, freq[s] - 1)
            if take > 0:
                freq[s] -= take
                diff += take
            if diff == 0:
                break
    return freq


@njit(nogil=True, cache=True)
def encode_stream(symbols, counts, scale_bits):  # pragma: no cover - compiled
    """The whole of ``rans.encode_symbols`` after the argument checks: returns (head, words)
    where head is the table and the final states and words the renormalisation words
    (a view), or (empty, empty) when a symbol is not below ``counts.shape[0]``."""
    n_sym = counts.shape[0]
    top = 0
    for i in range(symbols.shape[0]):
        top = max(top, np.int64(symbols[i]))
    if symbols.shape[0] and top >= n_sym:
        return np.empty(0, dtype=np.uint8), np.empty(0, dtype=np.uint16)
    freq = normalise(counts, scale_bits)
    start = np.zeros(n_sym, dtype=np.int64)
    for s in range(1, n_sym):
        start[s] = start[s - 1] + freq[s - 1]
    states, words = encode(symbols, freq, start, scale_bits)
    return stream_head(freq, scale_bits, states), words


@njit(nogil=True, cache=True)
def stream_head(freq, scale_bits, states):  # pragma: no cover - compiled
    """The bytes of a stream before its words: scale_bits, the table (first symbol and entry
    count as varints, then :func:`write_table`) and the final states."""
    n_sym = freq.shape[0]
    first = -1
    last = -1
    for s in range(n_sym):
        if freq[s] != 0:
            if first < 0:
                first = s
            last = s
    entries = last - first + 1 if first >= 0 else 0
    head = np.empty(1 + 20 + 10 * entries + 4 * LANES, dtype=np.uint8)
    head[0] = scale_bits
    pos = 1
    for value in (max(first, 0), entries):
        while value >= 0x80:
            head[pos] = (value & 0x7F) | 0x80
            pos += 1
            value >>= 7
        head[pos] = value
        pos += 1
    if entries:
        pos += write_table(freq[first : last + 1], head[pos:])
    for lane in range(LANES):
        x = states[lane]
        for k in range(4):
            head[pos] = (x >> (8 * k)) & 0xFF
            pos += 1
    return head[:pos]


# the vector encoder builds on this module's names; bound last so either module may be imported first
from . import _rans_vector_encode as _vector  # noqa: E402

"""Numba kernels of ``tcq`` (imported lazily, never by ``bie --help``): the Viterbi search
that picks each row's codes and the trellis walk that decodes them.

The trellis is Ungerboeck's 4-state one as trellis-coded quantization uses it
(Marcellin & Fischer 1990): the fine grid k·d is split into four subsets
D_j = {k ≡ j mod 4}; from each state two branches leave, each labelled with a
subset, so every state allows one union codebook, A0 = D0 ∪ D2 (even k) on
states 0 and 2, A1 = D1 ∪ D3 (odd k) on states 1 and 3. A code is the index
m = k >> 1 in the union codebook of the current state (stored as m + 128);
the decoder recovers k = 2m + (k's parity from the state), hence the subset,
the branch and the next state. Every row starts in state 0 (rows decode on
their own). Rounding is ``floor(v + 0.5)`` and ties keep the first branch and
the lowest state: the same codes on every machine.
"""

from __future__ import annotations

import numpy as np

from ..codecs._jit import import_numba

import_numba()  # numba's first import without its SciPy probe, whoever imports this module (codecs/_jit.py)
from numba import njit  # noqa: E402

#: TRELLIS[state, branch] = (subset, next state)
TRELLIS = np.array([[[0, 0], [2, 1]], [[1, 2], [3, 3]], [[2, 0], [0, 1]], [[3, 2], [1, 3]]], dtype=np.int64)
#: |x / d| beyond this is stored exactly (codes m = k >> 1 must fit -128..127)
LIMIT = 254.0


@njit(nogil=True, cache=True, inline="always")
def _nearest(v, sub):  # pragma: no cover - compiled
    """The point of subset ``sub`` (k ≡ sub mod 4) nearest v, kept within -256..255."""
    k = 4 * np.int64(np.floor((v - sub) * 0.25 + 0.5)) + sub
    if k > 255:
        k -= 4
    elif k < -256:
        k += 4
    return k


@njit(nogil=True, cache=True)
def viterbi_codes(rows, mul):  # pragma: no cover - compiled
    """codes (uint8, m + 128), the elements beyond :data:`LIMIT` (bool), the codes' 256-bin
    histogram and each row's squared error in units of its step (elements beyond the limit,
    stored exactly, count 0); row r's grid step is 1 / mul[r] (mul 0: every value 0).
    The transitions of :data:`TRELLIS` are written out: state 0 and 2 lead to 0 and 1
    (through D0/D2 and D2/D0), states 1 and 3 to 2 and 3 (D1/D3, D3/D1); a tie keeps
    the lower predecessor."""
    n_rows, length = rows.shape
    codes = np.empty((n_rows, length), dtype=np.uint8)
    beyond = np.zeros((n_rows, length), dtype=np.bool_)
    counts = np.zeros(256, dtype=np.int64)
    errors = np.empty(n_rows)
    point = np.empty((length, 4), dtype=np.int16)
    back = np.empty((length, 4), dtype=np.int8)
    inf = np.inf
    for r in range(n_rows):
        m = mul[r]
        row = rows[r]
        c0, c1, c2, c3 = 0.0, inf, inf, inf
        for i in range(length):
            v = row[i] * m
            far = not (abs(v) <= LIMIT)
            if far:
                beyond[r, i] = True
                v = 0.0
            k0 = _nearest(v, 0)
            k1 = _nearest(v, 1)
            k2 = _nearest(v, 2)
            k3 = _nearest(v, 3)
            if far:
                e0 = e1 = e2 = e3 = 0.0
            else:
                e0 = (v - k0) * (v - k0)
                e1 = (v - k1) * (v - k1)
                e2 = (v - k2) * (v - k2)
                e3 = (v - k3) * (v - k3)
            a, b = c0 + e0, c2 + e2  # -> state 0
            if a <= b:
                n0, point[i, 0], back[i, 0] = a, k0, 0
            else:
                n0, point[i, 0], back[i, 0] = b, k2, 2
            a, b = c0 + e2, c2 + e0  # -> state 1
            if a <= b:
                n1, point[i, 1], back[i, 1] = a, k2, 0
            else:
                n1, point[i, 1], back[i, 1] = b, k0, 2
            a, b = c1 + e1, c3 + e3  # -> state 2
            if a <= b:
                n2, point[i, 2], back[i, 2] = a, k1, 1
            else:
                n2, point[i, 2], back[i, 2] = b, k3, 3
            a, b = c1 + e3, c3 + e1  # -> state 3
            if a <= b:
                n3, point[i, 3], back[i, 3] = a, k3, 1
            else:
                n3, point[i, 3], back[i, 3] = b, k1, 3
            c0, c1, c2, c3 = n0, n1, n2, n3
        s, best = 0, c0
        if c1 < best:
            s, best = 1, c1
        if c2 < best:
            s, best = 2, c2
        if c3 < best:
            s, best = 3, c3
        errors[r] = best
        for i in range(length - 1, -1, -1):
            code = (np.int64(point[i, s]) >> 1) + 128
            codes[r, i] = code
            counts[code] += 1
            s = back[i, s]
    return codes, beyond, counts, errors


@njit(nogil=True, cache=True)
def trellis_values(codes, step, table, out):  # pragma: no cover - compiled
    """Decode: out[r, i] = k · step[r] along the trellis from state 0 in every row."""
    n_rows, length = codes.shape
    for r in range(n_rows):
        d = step[r]
        s = 0
        for i in range(length):
            k = 2 * (np.int64(codes[r, i]) - 128) + (table[s, 0, 0] & 1)
            sub = k & 3
            b = 0 if table[s, 0, 0] == sub else 1
            s = table[s, b, 1]
            out[r, i] = k * d

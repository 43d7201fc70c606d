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


#: rows searched at once: the add-compare-select of the 4 states runs across them (AVX2: 4 f64
#: lanes a vector, 4 vectors a step; 8 and 32 measured slower)
LANES = 16


@njit(nogil=True, cache=True, inline="always")
def _nearest_f(v, sub):  # pragma: no cover - compiled
    """The point of subset ``sub`` (k ≡ sub mod 4) nearest v, kept within -256..255: 4·floor((v -
    sub)/4 + 0.5) + sub in float64 (exact: small integers), the clamp as selects."""
    k = 4.0 * np.floor((v - sub) * 0.25 + 0.5) + sub
    k = k - 4.0 if k > 255.0 else k
    return k + 4.0 if k < -256.0 else k


@njit(nogil=True, cache=True)
def viterbi_codes(rows, mul):  # pragma: no cover - compiled
    """codes (uint8, m + 128), the elements beyond :data:`LIMIT` (bool), the codes' 256-bin
    histogram and each row's squared error in units of its step (elements beyond the limit,
    stored exactly, count 0); row r's grid step is 1 / mul[r] (mul 0: every value 0).
    The transitions of :data:`TRELLIS` are written out: state 0 and 2 lead to 0 and 1
    (through D0/D2 and D2/D0), states 1 and 3 to 2 and 3 (D1/D3, D3/D1); a tie keeps
    the lower predecessor.

    :data:`LANES` rows are searched together, element i of all of them before element
    i + 1, with selects instead of branches so the inner loop over rows vectorises; every
    lane does exactly the scalar search's float64 operations, so the codes, the path and
    its error are the same bit for bit. The survivor paths keep the predecessor state
    and the code of the branch taken (int8, uint8); the rows' tracebacks run interleaved."""
    n_rows, length = rows.shape
    codes = np.empty((n_rows, length), dtype=np.uint8)
    beyond = np.zeros((n_rows, length), dtype=np.bool_)
    counts = np.zeros(256, dtype=np.int64)
    errors = np.empty(n_rows)
    lanes = LANES
    values = np.zeros((length, lanes))
    near = np.ones((length, lanes))
    back = np.empty((length, 4, lanes), dtype=np.int8)
    chosen = np.empty((length, 4, lanes), dtype=np.uint8)
    cost = np.empty((4, lanes))
    state = np.zeros(lanes, dtype=np.int64)
    tally = np.zeros((4, 256), dtype=np.int64)  # 4 histograms: no store-to-load stall on runs of one code
    inf = np.inf
    for base in range(0, n_rows, lanes):
        used = min(lanes, n_rows - base)
        for j in range(lanes):
            if j < used:
                m = mul[base + j]
                row = rows[base + j]
                for i in range(length):
                    v = row[i] * m
                    if abs(v) <= LIMIT:
                        values[i, j] = v
                        near[i, j] = 1.0
                    else:
                        beyond[base + j, i] = True
                        values[i, j] = 0.0
                        near[i, j] = 0.0
            else:
                for i in range(length):
                    values[i, j] = 0.0
                    near[i, j] = 1.0
            cost[0, j], cost[1, j], cost[2, j], cost[3, j] = 0.0, inf, inf, inf
        for i in range(length):
            vi = values[i]
            wi = near[i]
            bi = back[i]
            ci = chosen[i]
            for j in range(lanes):
                v = vi[j]
                w = wi[j]
                k0 = _nearest_f(v, 0)
                k1 = _nearest_f(v, 1)
                k2 = _nearest_f(v, 2)
                k3 = _nearest_f(v, 3)
                d0 = v - k0
                d1 = v - k1
                d2 = v - k2
                d3 = v - k3
                e0 = d0 * d0 * w
                e1 = d1 * d1 * w
                e2 = d2 * d2 * w
                e3 = d3 * d3 * w
                p0, p1, p2, p3 = cost[0, j], cost[1, j], cost[2, j], cost[3, j]
                a, b = p0 + e0, p2 + e2  # -> state 0
                t0 = a <= b
                n0 = a if t0 else b
                a, b = p0 + e2, p2 + e0  # -> state 1
                t1 = a <= b
                n1 = a if t1 else b
                a, b = p1 + e1, p3 + e3  # -> state 2
                t2 = a <= b
                n2 = a if t2 else b
                a, b = p1 + e3, p3 + e1  # -> state 3
                t3 = a <= b
                n3 = a if t3 else b
                cost[0, j], cost[1, j], cost[2, j], cost[3, j] = n0, n1, n2, n3
                bi[0, j] = np.int8(0) if t0 else np.int8(2)
                bi[1, j] = np.int8(0) if t1 else np.int8(2)
                bi[2, j] = np.int8(1) if t2 else np.int8(3)
                bi[3, j] = np.int8(1) if t3 else np.int8(3)
                ci[0, j] = np.uint8(np.int64(k0 if t0 else k2) // 2 + 128)  # the code the branch stores
                ci[1, j] = np.uint8(np.int64(k2 if t1 else k0) // 2 + 128)
                ci[2, j] = np.uint8(np.int64(k1 if t2 else k3) // 2 + 128)
                ci[3, j] = np.uint8(np.int64(k3 if t3 else k1) // 2 + 128)
        for j in range(used):  # the best end state of each row
            s, best = 0, cost[0, j]
            for q in range(1, 4):
                if cost[q, j] < best:
                    s, best = q, cost[q, j]
            errors[base + j] = best
            state[j] = s
        for i in range(length - 1, -1, -1):  # the rows' tracebacks interleaved: independent chains
            ci = chosen[i]
            bi = back[i]
            for j in range(used):
                s = state[j]
                p = np.int64(bi[s, j])
                code = np.int64(ci[s, j])
                codes[base + j, i] = code
                tally[j & 3, code] += 1
                state[j] = p
    for h in range(4):
        for code in range(256):
            counts[code] += tally[h, code]
    return codes, beyond, counts, errors


#: rows decoded together by :func:`trellis_values`: each row's walk is one chain of dependent
#: table lookups, so independent rows side by side keep the core busy
DECODE_ROWS = 8


@njit(nogil=True, cache=True)
def trellis_values(codes, step, table, out):  # pragma: no cover - compiled
    """Decode: out[r, i] = k · step[r] along the trellis from state 0 in every row.
    k = 2(code - 128) + p with p the parity of state s's points; k mod 4 = 2·(code & 1) + p
    names the branch, so the next state is a lookup by (s, code & 1). The walk (one chain of
    dependent lookups per row) runs first, :data:`DECODE_ROWS` rows side by side, leaving
    each element's parity; the values then follow in one vectorised pass per row."""
    n_rows, length = codes.shape
    parity = np.empty(4, dtype=np.uint8)  # k's parity in each state
    after = np.empty((4, 2), dtype=np.uint8)  # after[state, code & 1]: the next state
    for s in range(4):
        parity[s] = table[s, 0, 0] & 1
        for b in range(2):
            sub = table[s, b, 0]
            after[s, (sub >> 1) & 1] = table[s, b, 1]
    group = DECODE_ROWS
    states = np.zeros(group, dtype=np.uint8)
    odd = np.empty((group, length), dtype=np.uint8)
    for base in range(0, n_rows, group):
        used = min(group, n_rows - base)
        for j in range(used):
            states[j] = 0
        for i in range(length):
            for j in range(used):
                s = states[j]
                odd[j, i] = parity[s]
                states[j] = after[s, codes[base + j, i] & 1]
        for j in range(used):
            d = step[base + j]
            row = codes[base + j]
            target = out[base + j]
            flags = odd[j]
            for i in range(length):
                target[i] = (2 * (np.int64(row[i]) - 128) + np.int64(flags[i])) * d

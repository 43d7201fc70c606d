"""Numba kernel for measuring the whole step ladder on a sample in one pass (imported lazily).

``quant:bits=8,granularity=tensor,step=s`` codes element x as
``clip(floor(x * mul + add + 0.5), 0, top)`` with ``mul = 1 / scale``, decodes it as
``(code - add) * scale`` and stores the elements beyond the range exactly. Everything
the planner needs from one such encode — the codes' histogram, how many elements are
stored exactly, the squared error of the rest — follows from that rule, for every
step at once: no payload, no rANS stream, no decode. The arithmetic is
:func:`bie_cli.strategies._quant_kernels.affine_codes`' and ``QuantStrategy.decode``'s
in the same types (float32 products for float32 tensors), so the codes are the ones
the encoder chooses.
"""

from __future__ import annotations

import numpy as np

from ..codecs._jit import import_numba

import_numba()  # numba's first import without its SciPy probe, whoever imports this module (codecs/_jit.py)
from numba import njit  # noqa: E402


@njit(nogil=True, cache=True)
def ladder_stats(values, muls, adds, scales, top, single):  # pragma: no cover - compiled
    """``single``: the values are float32 (decoded values are rounded to it).

    Per step k: (histogram of codes [k, top + 1], elements stored exactly [k],
    sum of squared errors of the others [k], float64)."""
    steps = muls.shape[0]
    n = values.shape[0]
    counts = np.zeros((steps, top + 1), dtype=np.int64)
    exact = np.zeros(steps, dtype=np.int64)
    sse = np.zeros(steps)
    for k in range(steps):
        m = muls[k]
        a = adds[k] + 0.5
        offset = adds[k]
        s = scales[k]
        row = counts[k]
        total = 0.0
        clipped = 0
        for i in range(n):
            x = values[i]
            v = np.floor(x * m + a)
            if v < 0.0:
                row[0] += 1
                clipped += 1
            elif v > top:
                row[top] += 1
                clipped += 1
            else:
                c = np.int64(v)
                row[c] += 1
                # (c - offset) * s is exact in float64 (an 8-bit integer times a float32);
                # rounding it once to float32 is the float32 product decode computes
                decoded = (np.float64(c) - np.float64(offset)) * np.float64(s)
                if single:
                    decoded = np.float64(np.float32(decoded))
                d = decoded - np.float64(x)
                total += d * d
        exact[k] = clipped
        sse[k] = total
    return counts, exact, sse


@njit(nogil=True, cache=True)
def squared_error(reference, decoded):  # pragma: no cover - compiled
    """(sum of squared differences, sum of squared reference values), float64, skipping
    non-finite reference elements as :class:`bie_cli.metrics.ErrorStats` does."""
    sse = 0.0
    ssr = 0.0
    for i in range(reference.shape[0]):
        r = np.float64(reference[i])
        if not np.isfinite(r):
            continue
        d = np.float64(decoded[i]) - r
        sse += d * d
        ssr += r * r
    return sse, ssr


@njit(nogil=True, cache=True)
def group_stats(units, muls, scales, half, top, single):  # pragma: no cover - compiled
    """A symmetric group grid (``quant:bits=b,group_size=g``) on (groups, g) ``units``: its codes'
    histogram [top + 1] and the squared error of its decode, as ``QuantStrategy`` computes them."""
    counts = np.zeros(top + 1, dtype=np.int64)
    sse = 0.0
    a = np.float64(half) + 0.5
    for u in range(units.shape[0]):
        m = muls[u]
        s = np.float64(scales[u])
        row = units[u]
        for i in range(units.shape[1]):
            x = row[i]
            v = np.floor(x * m + a)
            c = v if v > 0.0 else 0.0
            c = c if c < top else top
            code = np.int64(c)
            counts[code] += 1
            decoded = (np.float64(code) - half) * s
            if single:
                decoded = np.float64(np.float32(decoded))
            d = decoded - np.float64(x)
            sse += d * d
    return counts, sse

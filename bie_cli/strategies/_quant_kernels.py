"""Numba kernels for the quantization strategies (imported lazily, never by ``bie --help``).

All take a (units, unit_length) float array — one scale unit (tensor, row or
group) per row — and release the GIL, so the pipeline's thread pool runs
chunks in parallel. Rounding is ``floor(v + 0.5)`` everywhere: the same codes
on every machine and thread count.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit


@njit(nogil=True, cache=True)
def affine_codes(units, mul, add, top):  # pragma: no cover - compiled
    """codes = clip(floor(x * mul[u] + add[u] + 0.5), 0, top), their 256-bin histogram, how many clipped."""
    n_units, length = units.shape
    codes = np.empty((n_units, length), dtype=np.uint8)
    counts = np.zeros(256, dtype=np.int64)
    clipped = 0
    for u in range(n_units):
        m = mul[u]
        a = add[u] + 0.5
        for i in range(length):
            v = math.floor(units[u, i] * m + a)
            if v < 0.0:
                v = 0.0
                clipped += 1
            elif v > top:
                v = top
                clipped += 1
            c = np.uint8(v)
            codes[u, i] = c
            counts[c] += 1
    return codes, counts, clipped


@njit(nogil=True, cache=True)
def histogram(codes):  # pragma: no cover - compiled
    counts = np.zeros(256, dtype=np.int64)
    flat = codes.reshape(-1)
    for i in range(flat.shape[0]):
        counts[flat[i]] += 1
    return counts


@njit(nogil=True, cache=True)
def codebook_codes(units, mul, midpoints):  # pragma: no cover - compiled
    """Index of the nearest codebook entry to x * mul[u]; ``midpoints`` sorted ascending."""
    n_units, length = units.shape
    n_mid = midpoints.shape[0]
    codes = np.empty((n_units, length), dtype=np.uint8)
    for u in range(n_units):
        m = mul[u]
        for i in range(length):
            v = units[u, i] * m
            lo = 0
            hi = n_mid
            while lo < hi:  # first midpoint >= v
                mid = (lo + hi) >> 1
                if midpoints[mid] < v:
                    lo = mid + 1
                else:
                    hi = mid
            codes[u, i] = lo
    return codes


@njit(nogil=True, cache=True)
def mse_clip_search(units, low, high, ratios, levels, symmetric):  # pragma: no cover - compiled
    """Per unit, the ratio r minimising squared error when the range is shrunk by r.

    Symmetric: ``high`` is the signed extreme m, step d = -m*r/(levels/2), codes
    in [0, levels-1] around levels/2. Asymmetric: the range [low, high] shrinks
    about its midpoint to half-width r*(high-low)/2.
    """
    n_units, length = units.shape
    best = np.ones(n_units)
    top = levels - 1.0
    half_levels = levels / 2.0
    for u in range(n_units):
        best_err = np.inf
        for k in range(ratios.shape[0]):
            r = ratios[k]
            if symmetric:
                d = -high[u] * r / half_levels
                if d == 0.0:
                    best[u] = 1.0
                    break
                lo_val = 0.0
                zp = half_levels
                inv = 1.0 / d
            else:
                mid = 0.5 * (low[u] + high[u])
                half = 0.5 * (high[u] - low[u]) * r
                d = 2.0 * half / top
                if d == 0.0:
                    best[u] = 1.0
                    break
                lo_val = mid - half
                zp = 0.0
                inv = 1.0 / d
            err = 0.0
            for i in range(length):
                x = units[u, i]
                if symmetric:
                    q = math.floor(x * inv + zp + 0.5)
                else:
                    q = math.floor((x - lo_val) * inv + 0.5)
                if q < 0.0:
                    q = 0.0
                elif q > top:
                    q = top
                if symmetric:
                    e = (q - zp) * d - x
                else:
                    e = lo_val + q * d - x
                err += e * e
                if err >= best_err:
                    break
            if err < best_err:
                best_err = err
                best[u] = r
    return best


@njit(nogil=True, cache=True)
def octav_clip(magnitudes, start, bits, iterations):  # pragma: no cover - compiled
    """OCTAV fixed point s <- E[|x| 1(|x|>s)] / (4**-bits/3 P(|x|<=s) + P(|x|>s)), per unit."""
    n_units, length = magnitudes.shape
    noise = 4.0 ** (-bits) / 3.0
    out = np.empty(n_units)
    for u in range(n_units):
        s = start[u]
        for _ in range(iterations):
            total_out = 0.0
            n_out = 0
            for i in range(length):
                a = magnitudes[u, i]
                if a > s:
                    total_out += a
                    n_out += 1
            denominator = noise * (length - n_out) + n_out
            if denominator <= 0.0 or total_out <= 0.0:
                break
            new = total_out / denominator
            if abs(new - s) <= 1e-7 * s:
                s = new
                break
            s = new
        out[u] = s
    return out


@njit(nogil=True, cache=True)
def unit_stats(units):  # pragma: no cover - compiled
    """Per unit: min, max and sum of squares (float64); a NaN/Inf anywhere makes its sum non-finite."""
    n_units, length = units.shape
    low = np.empty(n_units)
    high = np.empty(n_units)
    squares = np.empty(n_units)
    for u in range(n_units):
        lo = np.inf
        hi = -np.inf
        acc = 0.0
        for i in range(length):
            v = np.float64(units[u, i])
            if v < lo:
                lo = v
            if v > hi:
                hi = v
            acc += v * v
        low[u] = lo
        high[u] = hi
        squares[u] = acc
    return low, high, squares


@njit(nogil=True, cache=True)
def saturated(units, mul, add, top):  # pragma: no cover - compiled
    """Mask of elements whose code falls outside [0, top] before clipping."""
    n_units, length = units.shape
    mask = np.zeros((n_units, length), dtype=np.bool_)
    for u in range(n_units):
        m = mul[u]
        a = add[u] + 0.5
        for i in range(length):
            v = math.floor(units[u, i] * m + a)
            if v < 0.0 or v > top:
                mask[u, i] = True
    return mask

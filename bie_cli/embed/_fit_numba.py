"""numba kernel for ITQ (imported lazily by :mod:`bie_cli.embed.fit`).

Each ITQ round needs the cross product ``M = V^T B`` of the rows ``V`` and their
codes ``B = sign(VR)``. After the first rounds only a small fraction of the
signs flip (3% after one round, under 1% after ten, 0.1% after fifty on
MiniLM), so instead of a dense [w, n] x [n, w] product each round updates ``M``
by the flipped entries only: a flip of ``B[i, j]`` adds ``-/+ 2 V[i, :]`` to
column ``j``.
"""

from __future__ import annotations

from numba import njit


@njit(nogil=True, cache=True)
def update_cross(v, codes, negative, cross_t):
    """``codes = vR`` float32 [n, w]; ``negative`` bool [n, w]: the signs of the previous round
    (updated in place); ``cross_t`` float64 [w, d] = ``(v^T B)^T`` for those signs, updated in place
    to the new ones (B = -1 where ``codes < 0``, else +1). Returns how many signs flipped."""
    n, w = codes.shape
    d = v.shape[1]
    flips = 0
    for i in range(n):
        for j in range(w):
            now = codes[i, j] < 0
            if now != negative[i, j]:
                negative[i, j] = now
                flips += 1
                step = -2.0 if now else 2.0
                for a in range(d):
                    cross_t[j, a] += step * v[i, a]
    return flips

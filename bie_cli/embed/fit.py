"""``fit``: learn a :class:`BinaryCodec` from a sample of embedding vectors.

Methods (measured on MiniLM, see docs/embed.md and BENCHMARKS.md):

* ``sign``: sign at zero of the (truncated) dimensions, the usual binary
  quantization and the baseline everything is compared with;
* ``adaptive`` (default): centre on half the sample mean (``CENTER_FRACTION``;
  the whole mean with merged bits or ``levels=2``), PCA to the wanted number
  of components, an ITQ rotation (alternate the binary codes and the orthogonal
  Procrustes rotation that best fits them), thresholds at 0 after centring
  (medians measured worse);
* ``trained``: starts from ``adaptive`` and fine-tunes the projection and the
  thresholds with a soft quantizer (temperature tanh, straight-through sign)
  on a similarity-preserving loss, in torch on CPU (see :mod:`.trained`).

``bits`` counts output bits; ``dims`` truncates the input first; ``merge``
makes that many output bits from two components each (the embedding seed's
``0 if a < k1 and b < k2 else 1``), so ``bits = keep + merge`` from
``keep + 2 * merge`` components; ``levels=2`` makes two bits (three levels,
cut at -/+0.5 standard deviations) from each of ``bits / 2`` components.
Fit on the vectors you will index when you can: more rows give a better
rotation (ITQ uses up to 20,000).
"""

from __future__ import annotations

import time

import numpy as np

from ..errors import BadInputError
from .codec import METHODS, BinaryCodec, check_vectors, normalize

ITQ_ITERATIONS = 50
ITQ_MAX_ROWS = 20_000
#: ITQ stops once a round flips fewer than this fraction of the signs (on MiniLM the 50th round still
#: flips 0.08%, and 15 or 25 rounds instead of 50 lost 0.3-0.9 points fitted on the corpus)
ITQ_TOLERANCE = 1e-4
#: the Procrustes step's pull towards the previous rotation (in units of the largest singular value)
POLAR_PULL = 1e-5
ITQ_SEED = 0
#: a merged bit is 0 only if both components are below their thresholds: put each
#: threshold at the sqrt(1/2) quantile so that happens half the time (a balanced bit)
MERGE_QUANTILE = float(np.sqrt(0.5))
#: levels=2: a component's two bits are cut at -/+ this many of its standard deviations
#: (three levels, Hamming distance = level difference; 0.4-0.6 measured alike on MiniLM, 0.3 and 0.8 worse)
DOUBLE_BIT_SPREAD = 0.5
#: levels when not given (adaptive and trained, without merged bits)
DEFAULT_LEVELS = 1
#: one bit per component (no merged bits): centre on this fraction of the sample mean, not the whole
#: mean. Sign codes estimate the angle between centred vectors, but the truth is the cosine of the raw
#: ones (MiniLM's mean has norm 0.35): full centring balances the bits but distorts that angle, no
#: centring keeps the angle but wastes bits. Measured on MiniLM (docs/embed.md, fifth round, 4 ITQ seeds):
#: 0.5 gave +1.1 points at 384 bits and +0.8 at 192 from a 2,000-row sample, +1.6 / +0.9 fitted on the
#: corpus; on a second corpus +1.9 / +0.5 and +2.0 / +0.9 (0.3-0.75 measured alike)
CENTER_FRACTION = 0.5
#: ... unless that leaves an offset over this fraction of the rows' rms distance to the mean (data with a
#: dominant common direction would get nearly constant bits): then the centre moves closer to the mean.
#: On MiniLM (rms distance 0.93, mean 0.35) the bound is 0.47 of the mean, so CENTER_FRACTION holds
MAX_OFFSET = 0.2


def fit(
    vectors: np.ndarray,
    *,
    bits: int | None = None,
    method: str = "adaptive",
    dims: int | None = None,
    merge: int | None = None,
    levels: int | None = None,
    seed: int = ITQ_SEED,
) -> BinaryCodec:
    """Learn a codec from ``vectors`` (float [n, d], n >= 2): see the module docstring."""
    if method not in METHODS:
        raise BadInputError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    sample = check_vectors(vectors, None, "sample vectors")
    count, input_dim = sample.shape
    if count < 2:
        raise BadInputError("need at least 2 sample vectors to fit a codec")
    dims = input_dim if dims is None else int(dims)
    if not 0 < dims <= input_dim:
        raise BadInputError(f"--dims {dims} must be between 1 and the vectors' {input_dim} dimensions")
    merge = 0 if merge is None else int(merge)
    bits = (dims - merge if method == "sign" else dims) if bits is None else int(bits)
    if bits < 1:
        raise BadInputError(f"--bits must be at least 1; got {bits}")
    levels = (1 if method == "sign" or merge else DEFAULT_LEVELS) if levels is None else int(levels)
    if levels not in (1, 2):
        raise BadInputError(f"levels={levels}: 1 (one bit per component) or 2 (two bits, three levels)")
    if levels == 2:
        if method == "sign" or merge:
            raise BadInputError("levels=2 needs a learned projection and no merged bits (method adaptive or trained)")
        if bits % 2:
            raise BadInputError(f"levels=2 makes two bits per component: bits must be even; got {bits}")
    if merge < 0 or merge > bits:
        raise BadInputError(f"merge={merge} must be between 0 and bits={bits}")
    keep, components = bits - merge, (bits // 2 if levels == 2 else bits + merge)
    if components > dims:
        raise BadInputError(
            f"{bits} bits with {merge} merged need {components} components; only {dims} dimensions"
            + (" (sign quantization uses the first dimensions as they are)" if method == "sign" else "")
        )
    if keep < 1:
        raise BadInputError("at least one output bit must come from a single component (merge < bits)")
    started = time.perf_counter()
    x = normalize(sample[:, :dims])
    if method == "sign":
        codec = _fit_sign(x, input_dim, dims, keep, components)
    elif levels == 2:
        codec = _fit_double_bit(x, input_dim, dims, bits, seed)
    else:
        codec = _fit_adaptive(x, input_dim, dims, keep, components, seed, partial=components == keep)
    if method == "trained":
        from .trained import train

        codec = train(codec, x, seed=seed)
    if levels == 2:
        codec.info["levels"] = 2
    codec.info = {"sample": count, "seconds": round(time.perf_counter() - started, 3), **codec.info}
    return codec


def _fit_sign(x, input_dim, dims, keep, components) -> BinaryCodec:
    """Sign at zero of the first ``components`` dimensions (merged ones at their balanced quantiles)."""
    thresholds = np.zeros(components, dtype=np.float32)
    if components > keep:
        thresholds[keep:] = np.quantile(x[:, keep:components], MERGE_QUANTILE, axis=0)
    projection = None if components == dims else np.eye(dims, components, dtype=np.float32)
    return BinaryCodec("sign", input_dim, dims, keep, np.zeros(dims, np.float32), thresholds, projection)


def center_fraction(x: np.ndarray) -> float:
    """The fraction of the mean to centre on: ``CENTER_FRACTION``, or more if the remaining offset
    would exceed ``MAX_OFFSET`` of the rows' rms distance to the mean."""
    mean = x.mean(axis=0)
    norm = float(np.linalg.norm(mean))
    spread = float(np.sqrt(np.square(x - mean).sum(axis=1).mean()))
    if norm == 0.0:
        return 1.0
    return min(1.0, max(CENTER_FRACTION, 1.0 - MAX_OFFSET * spread / norm))


def _fit_adaptive(x, input_dim, dims, keep, components, seed, partial=False) -> BinaryCodec:
    fraction = center_fraction(x) if partial else 1.0
    center = x.mean(axis=0) * np.float32(fraction)
    centered = x - center
    # PCA from the second moment about the centre (the covariance when it is the mean; every
    # direction, even with fewer samples than dimensions), in decreasing order so that truncation
    # drops the least informative
    with _one_blas_thread():
        _, vectors = np.linalg.eigh(centered.T.astype(np.float64) @ centered)
    pca = np.ascontiguousarray(vectors[:, ::-1][:, :components], dtype=np.float32)  # [dims, components]
    # ITQ on the single-bit components only: merged ones keep their PCA axes. Every row up to
    # 20,000 and 50 rounds: on MiniLM, 10,000 rows / 50 rounds gave +1.2 points at 384 bits and
    # +1.6 at 192 over 5,000 rows / 10 rounds (100 rounds: no better).
    rows = centered if len(centered) <= ITQ_MAX_ROWS else centered[
        np.sort(np.random.default_rng(seed).choice(len(centered), ITQ_MAX_ROWS, replace=False))]
    rotation = itq_rotation(rows @ pca[:, :keep], seed)
    projection = np.concatenate([pca[:, :keep] @ rotation, pca[:, keep:]], axis=1)
    z = centered @ projection
    # single bits cut at 0 after centring (on the mean, or CENTER_FRACTION of it): medians measured worse
    thresholds = np.zeros(components, dtype=np.float32)
    if components > keep:
        thresholds[keep:] = np.quantile(z[:, keep:], MERGE_QUANTILE, axis=0)
    codec = BinaryCodec("adaptive", input_dim, dims, keep, center, thresholds.astype(np.float32), projection)
    codec.info["center_fraction"] = round(fraction, 4)
    return codec


def _fit_double_bit(x, input_dim, dims, bits, seed) -> BinaryCodec:
    """``bits / 2`` PCA + ITQ components, each cut at ``-/+ DOUBLE_BIT_SPREAD`` standard deviations into
    two bits (``z >= -a``, ``z >= a``): three levels whose Hamming distance is their difference, the
    double-bit quantization of Kong & Li (2012). The codec stores it as a projection with each
    column twice and the two thresholds."""
    single = _fit_adaptive(x, input_dim, dims, bits // 2, bits // 2, seed)
    spread = ((x - single.center) @ single.projection).std(axis=0) * DOUBLE_BIT_SPREAD
    thresholds = np.stack([-spread, spread], axis=1).reshape(-1).astype(np.float32)
    projection = np.repeat(single.projection, 2, axis=1)
    return BinaryCodec("adaptive", input_dim, dims, bits, single.center, thresholds, projection)


def itq_rotation(
    v: np.ndarray, seed: int = ITQ_SEED, iterations: int | None = None, *, tolerance: float | None = None
) -> np.ndarray:
    """Iterative quantization (Gong & Lazebnik): the orthogonal R minimising ||sign(vR) - vR||.

    ``iterations`` rounds (``ITQ_ITERATIONS``) of ``B = sign(vR)`` then the Procrustes
    ``R = polar(v^T B)``; the cross product ``v^T B`` is updated by the flipped signs only (a numba
    kernel, :mod:`._fit_numba`) and the polar factor comes from the eigenvectors of ``M^T M`` (half
    the cost of an SVD; :func:`_polar`). Stops early once a round flips fewer than ``tolerance`` of the signs.
    """
    from ._fit_numba import update_cross

    iterations = ITQ_ITERATIONS if iterations is None else int(iterations)
    tolerance = ITQ_TOLERANCE if tolerance is None else float(tolerance)
    width = v.shape[1]
    rng = np.random.default_rng(seed)
    rotation, _ = np.linalg.qr(rng.standard_normal((width, width)))
    rotation = rotation.astype(np.float32)
    v = np.ascontiguousarray(v, dtype=np.float32)
    codes = np.empty_like(v)  # vR, one buffer for every round
    negative = np.zeros(v.shape, dtype=bool)  # B = +1 everywhere: v^T B is every column's sum of v
    cross_t = np.repeat(v.sum(axis=0, dtype=np.float64)[None, :], width, axis=0)  # (v^T B)^T
    limit = tolerance * v.size
    with _one_blas_thread():
        for round_ in range(iterations):
            np.matmul(v, rotation, out=codes)
            if round_ == 0:  # most signs change: one dense product
                np.less(codes, 0, out=negative)
                cross_t = (np.where(negative, np.float32(-1), np.float32(1)).T @ v).astype(np.float64)
            elif update_cross(v, codes, negative, cross_t) < limit:
                break  # B unchanged (up to tolerance): so is the Procrustes rotation fitting it
            rotation = _polar(cross_t.T, rotation.astype(np.float64)).astype(np.float32)
    return rotation


def _polar(m: np.ndarray, previous: np.ndarray) -> np.ndarray:
    """The Procrustes rotation: the orthogonal factor U W^T of m = U S W^T, from the eigenvectors of
    m^T m (half the cost of an SVD). ``m`` is rank-deficient when the rows have a direction without
    variance (MiniLM's have one), where any rotation fits as well: a pull of POLAR_PULL x the largest
    singular value towards the ``previous`` rotation settles it (and keeps m^T m well conditioned)."""
    scale = np.sqrt(np.abs(m).sum(axis=0).max() * np.abs(m).sum(axis=1).max())  # >= the largest singular value
    m = m + (POLAR_PULL * scale) * previous
    values, vectors = np.linalg.eigh(m.T @ m)
    return (m @ vectors / np.sqrt(values)) @ vectors.T


def _one_blas_thread():
    """Small matrices: BLAS threads only add synchronisation, and on a busy machine their spinning
    made ITQ 6x slower (measured); threadpoolctl is optional."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        import contextlib

        return contextlib.nullcontext()
    return threadpool_limits(1)

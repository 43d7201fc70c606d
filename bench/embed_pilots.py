"""Pilots for issue #14's symmetric Hamming goals (recall@10, printed; not a BENCHMARKS.md section).

    HF_HUB_OFFLINE=1 python -m bench.embed_pilots alloc        # variable bit allocation over PCA components
    HF_HUB_OFFLINE=1 python -m bench.embed_pilots seeds        # ITQ restarts, and self-supervised proxies for them
    HF_HUB_OFFLINE=1 python -m bench.embed_pilots rounds       # ITQ rounds (0 = a random rotation), several seeds
    HF_HUB_OFFLINE=1 python -m bench.embed_pilots neighbours   # ITQ fitted on neighbourhood means
    HF_HUB_OFFLINE=1 python -m bench.embed_pilots rect         # 192 bits from PCA 208-256 by a rectangular ITQ
    HF_HUB_OFFLINE=1 python -m bench.embed_pilots spherical    # spherical hashing, searched by Hamming distance
    HF_HUB_OFFLINE=1 python -m bench.embed_pilots anisotropic  # ITQ under ScaNN's anisotropic loss
    HF_HUB_OFFLINE=1 python -m bench.embed_pilots fitspeed     # coarse-to-fine ITQ with early stop vs 50 full rounds

Same vectors and truth as bench/bench_embed.py (cached MiniLM embeddings, exact float32
cosine top-10 of the 1,000 queries over the 10,000 corpus passages). Codecs are fitted on
the 2,000-passage fit sample unless a line says otherwise; the queries only score them.
Every variant is expressed as an ordinary ``BinaryCodec`` (a projection and one threshold
per output bit), so the search is the plain popcount Hamming search.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from bench import embed_corpus
from bie_cli.embed import fit, search
from bie_cli.embed.codec import BinaryCodec, normalize
from bie_cli.embed.evaluate import exact_topk, recall_at_k
from bie_cli.embed.fit import _one_blas_thread, itq_rotation

K = 10
#: Gaussian MSE of the best 1-level-pair quantizers, in units of the variance: sign (two
#: levels) and the optimal three levels (cuts at +/-0.612 sigma); reverse water-filling
#: gives each bit to the component whose distortion it lowers most
GAUSS_MSE_1BIT, GAUSS_MSE_3LEVEL, THREE_LEVEL_CUT = 1 - 2 / np.pi, 0.1902, 0.612


def load():
    v = embed_corpus.embeddings()
    data = {"fit": normalize(v["fit"]), "corpus": normalize(v["corpus"]), "queries": normalize(v["queries"])}
    data["sample"] = np.concatenate([data["fit"], normalize(v["fit_extra"])]) if "fit_extra" in v else data["fit"]
    data["truth"] = exact_topk(data["corpus"], data["queries"], K)
    sign = {bits: recall(data, fit(data["fit"], method="sign", bits=bits)) for bits in (384, 192)}
    return data, sign


def recall(data, codec) -> float:
    codes, query_codes = codec.encode(data["corpus"]), codec.encode(data["queries"])
    return recall_at_k(search(codes, query_codes, K)[0], data["truth"])


def show(sign, bits, label, values) -> None:
    values = [float(v) for v in np.atleast_1d(values)]
    mean = float(np.mean(values))
    print(f"{bits} bits | {label} | " + " ".join(f"{v:.4f}" for v in values)
          + f" | mean {mean:.4f} ({100 * (mean - sign[bits]):+.1f} over sign)", flush=True)


def pca(x):
    center = x.mean(axis=0)
    centered = x - center
    with _one_blas_thread():
        eigenvalues, vectors = np.linalg.eigh(centered.T.astype(np.float64) @ centered)
    return center, np.maximum(eigenvalues[::-1], 0) / len(x), np.ascontiguousarray(vectors[:, ::-1], np.float32)


def waterfill(variances, budget):
    """Bits per component (0, 1 or 2) by reverse water-filling on the Gaussian distortions."""
    gains = np.concatenate([(1 - GAUSS_MSE_1BIT) * variances, (GAUSS_MSE_1BIT - GAUSS_MSE_3LEVEL) * variances])
    allocation = np.zeros(len(variances), dtype=int)
    np.add.at(allocation, np.argsort(-gains, kind="stable")[:budget] % len(variances), 1)
    return allocation


def variable_codec(x, two, one, *, joint, seed=0, cut=THREE_LEVEL_CUT) -> BinaryCodec:
    """``two`` components with two bits (thermometer: cuts at -/+cut sigma, Hamming = level
    difference) and ``one`` with one bit. ``joint``: one ITQ over all ``two + one`` PCA
    components, the two-bit ones being the rotated columns of highest variance; otherwise the
    top ``two`` PCA components and the next ``one`` get an ITQ rotation each."""
    center, _, vectors = pca(x)
    centered = x - center
    if joint:
        basis = vectors[:, :two + one]
        basis = basis @ itq_rotation(centered @ basis, seed)
        basis = basis[:, np.argsort(-(centered @ basis).std(axis=0), kind="stable")]
    else:
        groups = [vectors[:, :two], vectors[:, two:two + one]]
        basis = np.concatenate([g @ itq_rotation(centered @ g, seed) if g.shape[1] > 1 else g
                                for g in groups if g.shape[1]], axis=1)
    double = basis[:, :two]
    spread = (centered @ double).std(axis=0) * cut
    projection = np.concatenate([np.repeat(double, 2, axis=1), basis[:, two:]], axis=1)
    thresholds = np.concatenate([np.stack([-spread, spread], axis=1).reshape(-1), np.zeros(one)])
    return BinaryCodec("adaptive", x.shape[1], x.shape[1], projection.shape[1], center,
                       thresholds.astype(np.float32), projection.astype(np.float32))


def alloc(data, sign) -> None:
    _, variances, _ = pca(data["fit"])
    for bits, scan in ((192, (16, 32, 48, 64, 96)), (384, (32, 64, 96, 128))):
        allocation = waterfill(variances, bits)
        rule = (int((allocation == 2).sum()), int((allocation == 1).sum()))
        show(sign, bits, "PCA + ITQ, one bit per component (the default)", recall(data, fit(data["fit"], bits=bits)))
        for two in (rule[0], *scan):
            one = bits - 2 * two
            for joint in (False, True):
                label = (f"{two} x 2 bits + {one} x 1 bit{' (water-filling)' if two == rule[0] else ''}, "
                         f"{'one ITQ, 2 bits to the widest' if joint else 'ITQ per group'}")
                show(sign, bits, label, recall(data, variable_codec(data["fit"], two, one, joint=joint)))


def self_recall(codec, x) -> float:
    """Pseudo-queries: each row against the others (itself left out), truth by float cosine."""
    truth = exact_topk(x, x, K + 1)[:, 1:]
    codes = codec.encode(x)
    found = search(codes, codes, K + 1)[0]
    return recall_at_k(np.array([[j for j in row if j != i][:K] for i, row in enumerate(found)]), truth)


def held_out_recall(codec, rows, held) -> float:
    truth = exact_topk(rows, held, K)
    return recall_at_k(search(codec.encode(rows), codec.encode(held), K)[0], truth)


def seeds(data, sign, count=10) -> None:
    """Query recall of ITQ restarts and two proxies computed from the sample alone: every sample
    row as a pseudo-query against the others (in-sample), and a codec fitted on 4/5 of the
    sample scored with the last fifth as pseudo-queries (held out)."""
    for bits, source in ((384, "fit"), (192, "fit"), (192, "sample"), (384, "corpus")):
        x = data[source]
        cut = len(x) * 4 // 5
        rows = []
        for seed in range(count if source == "fit" else count // 2):
            codec = fit(x, bits=bits, seed=seed)
            proxies = [self_recall(codec, x)]
            if source != "corpus":
                part = fit(x[:cut], bits=bits, seed=seed)
                proxies.append(held_out_recall(part, x[:cut], x[cut:]))
            rows.append([recall(data, codec), *proxies])
        table = np.array(rows)
        show(sign, bits, f"PCA + ITQ fitted on {source}, seeds 0-{len(rows) - 1}", table[:, 0])
        for column, name in ((1, "in-sample"), (2, "held-out fifth")):
            if column < table.shape[1]:
                r = np.corrcoef(table[:, 0], table[:, column])[0, 1]
                chosen = table[np.argmax(table[:, column]), 0]
                print(f"    proxy {name}: correlation with query recall {r:+.2f}; the seed it picks: {chosen:.4f}")


def rounds(data, sign, seeds_=4) -> None:
    for bits in (384, 192):
        center, _, vectors = pca(data["fit"])
        basis, centered = vectors[:, :bits], data["fit"] - center
        for iterations in (0, 3, 10, 20, 50, 150):
            values = []
            for seed in range(seeds_):
                rotation = itq_rotation(centered @ basis, seed, iterations)
                values.append(recall(data, BinaryCodec("adaptive", 384, 384, bits, center, np.zeros(bits),
                                                       basis @ rotation)))
            show(sign, bits, f"PCA + ITQ, {iterations} rounds{' (a random rotation)' if not iterations else ''}",
                 values)


def neighbours(data, sign, seeds_=4) -> None:
    """ITQ's rotation fitted on each row's mean with its k nearest sample rows (by float cosine),
    so that hyperplanes avoid cutting through neighbourhoods; codes are still of the rows."""
    x = data["fit"]
    center, _, vectors = pca(x)
    centered = x - center
    nearest = exact_topk(x, x, 11)
    for bits in (384, 192):
        basis = vectors[:, :bits]
        for k in (0, 3, 10):
            target = centered[nearest[:, :k + 1]].mean(axis=1) if k else centered
            show(sign, bits, f"ITQ on the means of each row and its {k} nearest", [
                recall(data, BinaryCodec("adaptive", 384, 384, bits, center, np.zeros(bits),
                                         basis @ itq_rotation(target @ basis, seed))) for seed in range(seeds_)])


def anisotropic(data, sign, seeds_=4) -> None:
    """ITQ under ScaNN's anisotropic loss ``eta |r_par|^2 + |r_perp|^2`` for the reconstruction
    ``alpha * sign(u)`` of ``u = zR`` (one alpha for all rows, as Hamming distance has no per-row
    scale). Both residuals depend on a row only through ``|u|_1``, so the rotation step is ITQ's
    Procrustes step with row weights ``1 + (eta - 1)(1 - alpha |u|_1 / |u|^2)`` (the loss's slope)."""
    x = data["fit"]
    center, _, vectors = pca(x)
    centered = x - center
    for bits in (384, 192):
        basis = vectors[:, :bits]
        v = np.ascontiguousarray(centered @ basis, dtype=np.float32)
        for eta in (1, 4, 16):
            values = []
            for seed in range(seeds_):
                rotation, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((bits, bits)))
                rotation = rotation.astype(np.float32)
                with _one_blas_thread():
                    for _ in range(50):
                        u = v @ rotation
                        codes = np.sign(u)
                        l1, squares = np.abs(u).sum(axis=1), (u * u).sum(axis=1)
                        alpha = l1.sum() / u.size
                        weights = np.maximum(1 + (eta - 1) * (1 - alpha * l1 / squares), 0)
                        left, _, right = np.linalg.svd(v.T @ (codes * weights[:, None]))
                        rotation = (left @ right).astype(np.float32)
                values.append(recall(data, BinaryCodec("adaptive", 384, 384, bits, center, np.zeros(bits),
                                                       basis @ rotation)))
            show(sign, bits, f"anisotropic ITQ, eta {eta}{' (= ITQ)' if eta == 1 else ''}", values)


def rect(data, sign) -> None:
    """192 bits from the top 208-256 PCA components: R [w, 192] with orthonormal columns, the
    Procrustes step of ITQ on a rectangular matrix (u @ vt of the thin SVD)."""
    x = data["fit"]
    center, _, vectors = pca(x)
    centered = x - center
    for width in (208, 224, 256):
        basis = vectors[:, :width]
        v = np.ascontiguousarray(centered @ basis, dtype=np.float32)
        rotation, _ = np.linalg.qr(np.random.default_rng(0).standard_normal((width, 192)))
        with _one_blas_thread():
            for _ in range(50):
                u, _, vt = np.linalg.svd(v.T @ np.sign(v @ rotation), full_matrices=False)
                rotation = (u @ vt).astype(np.float32)
        show(sign, 192, f"PCA {width} -> 192 by a rectangular ITQ", recall(
            data, BinaryCodec("adaptive", 384, 384, 192, center, np.zeros(192), basis @ rotation)))


def spherical(data, sign) -> None:
    """Spherical hashing (Heo et al. 2012) searched by plain Hamming distance: bit k is 1 inside a
    hypersphere (pivot p_k, radius r_k at the median distance, so balanced); pivots move apart or
    together until every pair of bits is 1 together for about a quarter of the rows. On unit
    vectors ``|x - p|^2 <= r^2`` is ``x.p >= (1 + |p|^2 - r^2) / 2``: an ordinary codec."""
    x = data["fit"]
    n = len(x)
    for bits in (384, 192):
        for iterations in (30, 100):
            rng = np.random.default_rng(0)
            pivots = np.stack([x[rng.choice(n, 10, replace=False)].mean(axis=0) for _ in range(bits)])
            for step in range(iterations + 1):
                distances = (pivots * pivots).sum(axis=1)[None] - 2 * x @ pivots.T  # + |x|^2 = 1
                radii = np.median(distances, axis=0)
                if step == iterations:
                    break
                inside = (distances <= radii).astype(np.float32)
                force = (inside.T @ inside - n / 4) / (n / 4)
                np.fill_diagonal(force, 0)
                pivots = pivots + 0.5 * (force.sum(axis=1)[:, None] * pivots - force @ pivots) / bits
            # distances and radii leave out |x|^2 = 1: inside is |p|^2 - 2 x.p <= radius
            thresholds = ((pivots * pivots).sum(axis=1) - radii) / 2
            codec = BinaryCodec("adaptive", 384, 384, bits, np.zeros(384), thresholds, pivots.T.copy())
            show(sign, bits, f"spherical hashing, {iterations} rounds", recall(data, codec))


def _codec(center, projection, bits=None) -> BinaryCodec:
    bits = projection.shape[1] if bits is None else bits
    return BinaryCodec("adaptive", 384, 384, bits, np.asarray(center, np.float32), np.zeros(bits, np.float32),
                       np.ascontiguousarray(projection, dtype=np.float32))


def _sources(data):
    """``PILOT_SOURCES`` (default ``fit,corpus``): the rows the fifth round's pilots fit on."""
    return tuple((name, data[name]) for name in os.environ.get("PILOT_SOURCES", "fit,corpus").split(","))


def partial(data, sign, seeds_=4) -> None:
    """Fifth round, idea A: partial centring. Sign codes estimate the angle between the *centred*
    vectors, but the truth ranks by the cosine of the raw ones (|mean| = 0.35 on MiniLM): centre on
    ``alpha * mean`` (PCA of the second moment about that point, then ITQ), alpha 0 = no centring."""
    grid = os.environ.get("PILOT_GRID", "384:fit,corpus:0,0.5,0.75,1")  # bits:sources:alphas;...
    for part in grid.split(";"):
        bits, sources, alphas = part.split(":")
        bits = int(bits)
        for source in sources.split(","):
            x = data[source]
            mean = x.mean(axis=0)
            for alpha in map(float, alphas.split(",")):
                center = alpha * mean
                shifted = x - center
                with _one_blas_thread():
                    _, vectors = np.linalg.eigh(shifted.T.astype(np.float64) @ shifted)
                basis = np.ascontiguousarray(vectors[:, ::-1][:, :bits], np.float32)
                values = [recall(data, _codec(center, basis @ itq_rotation(shifted @ basis, seed)))
                          for seed in range(seeds_)]
                show(sign, bits, f"fitted on {source}: centre alpha={alpha} x mean, PCA + ITQ", values)


def block_rotation(v, blocks, seed, *, interleave=True):
    """ITQ within ``blocks`` groups of PCA components (component i in group i % blocks if
    interleaved, so every group spans the spectrum; else contiguous runs): a block-diagonal
    rotation with 384 * 384 / blocks parameters instead of 384 * 384."""
    width = v.shape[1]
    order = np.arange(width)
    groups = [order[g::blocks] for g in range(blocks)] if interleave else np.array_split(order, blocks)
    rotation = np.zeros((width, width), np.float32)
    for g, columns in enumerate(groups):
        rotation[np.ix_(columns, columns)] = itq_rotation(v[:, columns], seed * 1000 + g)
    return rotation


def blocks(data, sign, seeds_=4) -> None:
    """Fifth round, idea B: ITQ rotations with far fewer free parameters, so they cannot adapt to
    the rows they are fitted on: block-diagonal over groups of PCA components."""
    for source, x in _sources(data):
        center, _, vectors = pca(x)
        v = (x - center) @ vectors
        for count, interleave in ((48, True), (12, True), (12, False)):
            values = [recall(data, _codec(center, vectors @ block_rotation(v, count, seed, interleave=interleave)))
                      for seed in range(int(os.environ.get("PILOT_SEEDS", seeds_)))]
            show(sign, 384, f"fitted on {source}: ITQ in {count} {'interleaved' if interleave else 'contiguous'}"
                 f" blocks of {384 // count}", values)


def union(data, sign, seeds_=4) -> None:
    """Fifth round, idea C1: fit on the corpus and the 10,000-passage sample together (20,000 rows)."""
    seeds_ = int(os.environ.get("PILOT_SEEDS", seeds_))
    x = np.concatenate([data["corpus"], data["sample"]])
    show(sign, 384, "PCA + ITQ fitted on corpus + 10,000 sample", [recall(data, fit(x, seed=s)) for s in range(seeds_)])
    x = np.concatenate([data["corpus"], data["fit"]])
    show(sign, 384, "PCA + ITQ fitted on corpus + 2,000 sample", [recall(data, fit(x, seed=s)) for s in range(seeds_)])


def select_bits(bits_pm, nearest, rng, bits=384, positives=10, negatives=(10, 50), anchors=3000):
    """Greedy choice of ``bits`` columns of ``bits_pm`` (rows' candidate bits as +/-1) maximising the
    signal-to-noise ratio mean(M) / std(M) of the Hamming margin M = H(a, n) - H(a, p) over triplets:
    anchor a, p one of its ``positives`` nearest rows (float cosine), n one ranked ``negatives``."""
    n = len(bits_pm)
    chosen_anchors = rng.choice(n, min(anchors, n), replace=False)
    a = np.repeat(chosen_anchors, positives)
    p = nearest[chosen_anchors, 1:positives + 1].reshape(-1)
    neg = nearest[a, rng.integers(negatives[0] + 1, negatives[1] + 1, len(a))]
    c = bits_pm[a] * (bits_pm[p] - bits_pm[neg]) / 2  # per bit: cut(a, n) - cut(a, p), in {-1, 0, 1}
    c = np.ascontiguousarray(c, dtype=np.float32)
    t = len(c)
    mu = c.mean(axis=0)
    var_b = (c * c).mean(axis=0) - mu * mu
    margin = np.zeros(t, np.float32)
    m, var = 0.0, 0.0
    selected = np.zeros(c.shape[1], bool)
    order = []
    with _one_blas_thread():
        for _ in range(bits):
            cov = (margin @ c) / t - m * mu
            new_mean = m + mu
            new_var = var + var_b + 2 * cov
            score = new_mean / np.sqrt(np.maximum(new_var, 1e-12))
            score[selected] = -np.inf
            best = int(np.argmax(score))
            selected[best] = True
            order.append(best)
            margin += c[:, best]
            m, var = float(new_mean[best]), float(new_var[best])
    return np.array(order), m / np.sqrt(var)


def pool(data, sign) -> None:
    """Fifth round, idea C: an over-complete pool of candidate hyperplanes (several ITQ rotations,
    or PCA + random rotations) and a greedy choice of 384 of them by the margin SNR of neighbour
    triplets on the fit rows (no query involved)."""
    for source, x in _sources(data):
        center, _, vectors = pca(x)
        centered = x - center
        v = centered @ vectors
        sub = x if len(x) <= 4000 else x[np.random.default_rng(1).choice(len(x), 4000, replace=False)]
        sub_centered = sub - center
        nearest = exact_topk(sub, sub, 51)
        for kind, count in (("ITQ", 1), ("ITQ", 4), ("random", 4)):
            values, snrs = [], []
            for seed in range(int(os.environ.get("PILOT_SEEDS", 2))):
                rotations = [itq_rotation(v, seed * 10 + r, 50 if kind == "ITQ" else 0) for r in range(count)]
                directions = np.concatenate([vectors @ r for r in rotations], axis=1)
                bits_pm = np.sign(sub_centered @ directions).astype(np.float32)
                order, snr = select_bits(bits_pm, nearest, np.random.default_rng(seed))
                snrs.append(snr)
                values.append(recall(data, _codec(center, directions[:, np.sort(order)])))
            show(sign, 384, f"fitted on {source}: 384 of {count} {kind} rotations x 384 bits (margin SNR "
                 f"{np.mean(snrs):.3f})", values)


def second(data, sign, seeds_=4) -> None:
    """The met goals and the half-mean centring on another corpus (run with
    ``BIE_EMBED_PACKAGES=second``, e.g. ``BIE_EMBED_CORPUS=4000``): recall@10 at 384 and 192 bits,
    fitted on the fit sample and on the corpus, the default (half the mean) against the whole mean,
    and the asymmetric search's top 40 re-ranked by float."""
    from bie_cli.embed import search_asymmetric

    fit_mod = sys.modules["bie_cli.embed.fit"]
    print(f"corpus {len(data['corpus'])}, queries {len(data['queries'])}, fit {len(data['fit'])}; packages "
          f"{os.environ.get('BIE_EMBED_PACKAGES', 'the bench list')}; centre fraction on fit "
          f"{fit_mod.center_fraction(data['fit']):.3f}")
    for bits in (384, 192):
        for source in ("fit", "corpus"):
            for fraction in (fit_mod.CENTER_FRACTION, 1.0):
                saved = fit_mod.CENTER_FRACTION
                fit_mod.CENTER_FRACTION = fraction
                try:
                    codecs = [fit(data[source], bits=bits, seed=seed) for seed in range(seeds_)]
                finally:
                    fit_mod.CENTER_FRACTION = saved
                show(sign, bits, f"PCA + ITQ fitted on {source}, centre {fraction} x mean", [recall(data, c) for c in codecs])
                if fraction != 1.0:
                    rescored = []
                    for codec in codecs:
                        found = search_asymmetric(codec.encode(data["corpus"]), codec.query_weights(data["queries"]),
                                                  K, rescore=data["corpus"], queries=data["queries"], candidates=40)[0]
                        rescored.append(recall_at_k(found, data["truth"]))
                    print("    asymmetric, top 40 re-ranked by float: " + " ".join(f"{v:.4f}" for v in rescored)
                          + f" | mean {np.mean(rescored):.4f}", flush=True)
    codec = fit(data["fit"], method="sign")
    found = search(codec.encode(data["corpus"]), codec.encode(data["queries"]), K, rescore=data["corpus"],
                   queries=data["queries"], candidates=40)[0]
    print(f"sign at zero 384, Hamming top 40 re-ranked: {recall_at_k(found, data['truth']):.4f}")


def fitspeed(data, sign, seeds_=4) -> None:
    """The default fit's time and recall, and with other ITQ settings (BIE_FITSPEED="label=rounds,tolerance,pull;...")."""
    fit_module = sys.modules["bie_cli.embed.fit"]
    names = ("ITQ_ITERATIONS", "ITQ_TOLERANCE", "POLAR_PULL")
    variants = dict(v.split("=") for v in os.environ.get("BIE_FITSPEED", "default=").split(";"))
    saved = {name: getattr(fit_module, name) for name in names}
    for source in ("fit", "corpus"):
        for bits in (384, 192):
            for label, values_ in variants.items():
                for name, value in zip(names, values_.split(",") if values_ else (), strict=False):
                    setattr(fit_module, name, type(saved[name])(value))
                values, seconds = [], []
                for seed in range(seeds_):
                    started = time.perf_counter()
                    codec = fit(data[source], bits=bits, seed=seed)
                    seconds.append(time.perf_counter() - started)
                    values.append(recall(data, codec))
                for name in names:
                    setattr(fit_module, name, saved[name])
                show(sign, bits, f"fit on {source} ({len(data[source])}), {label} ({values_ or 'as set'}), "
                     f"fit {np.median(seconds):.2f} s median", values)


def main() -> None:
    pilots = {"alloc": alloc, "seeds": seeds, "rounds": rounds, "neighbours": neighbours, "rect": rect,
              "spherical": spherical, "anisotropic": anisotropic,
              "partial": partial, "blocks": blocks, "union": union, "pool": pool,
              "second": second, "fitspeed": fitspeed}
    chosen = sys.argv[1:] or list(pilots)
    unknown = [name for name in chosen if name not in pilots]
    if unknown:
        sys.exit(f"unknown pilot(s) {', '.join(unknown)}; choose from {', '.join(pilots)}")
    data, sign = load()
    print(f"sign at zero: 384 bits {sign[384]:.4f}, first 192 dims {sign[192]:.4f}; load {os.getloadavg()[0]:.1f}")
    for name in chosen:
        started = time.perf_counter()
        pilots[name](data, sign)
        print(f"({name}: {time.perf_counter() - started:.0f} s)", flush=True)


if __name__ == "__main__":
    main()

"""Embedding binary codes: recall and speed of ``bie_cli.embed`` against sign-at-zero and float search.

    HF_HUB_OFFLINE=1 python -m bench.bench_embed              # both halves, writes BENCHMARKS.md
    HF_HUB_OFFLINE=1 python -m bench.bench_embed --quality    # recall only (no timing)
    HF_HUB_OFFLINE=1 flock /tmp/bie-bench.lock python -m bench.bench_embed --timing
    HF_HUB_OFFLINE=1 python -m bench.bench_embed --write      # the section from the saved results only

all-MiniLM-L6-v2 (the packaged model) embeds docstring paragraphs of installed
packages (bench/embed_corpus.py: 1,000 queries, a 10,000-passage corpus and a
disjoint 2,000-passage fit sample, extended by 8,000 more for the rows fitted on the
10,000-passage sample; embeddings cached under bench/out/embed/).
Ground truth: exact float32 cosine top-10. Codecs are fitted on the fit sample,
or on the corpus where a row says so (never on the queries). Recall@10 by
Hamming distance and by asymmetric score (float query against the bits, over
the default Hamming shortlist), each also with its top 40 re-ranked by float.
sentence-transformers' ``quantize_embeddings(precision="ubinary")`` is checked
to give exactly the sign-at-zero codes. Speed: 100,000 codes, one thread
everywhere, one query at a time and batched, medians of interleaved rounds:
bie's numba Hamming top-10 and asymmetric search, numpy float32 exact search
(matrix product + argpartition; OpenBLAS pins unset), faiss ``IndexBinaryFlat``.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from bench import embed_corpus
from bench.report import machine_line, markdown_table, update_section
from bie_cli.embed import HammingIndex, fit, search, search_asymmetric
from bie_cli.embed.codec import normalize
from bie_cli.embed.evaluate import codec_recall, exact_topk, recall_at_k

K, CANDIDATES = 10, 40
#: the codec of the candidates curve: the fit() default at 384 bits
DEFAULT_384 = "adaptive (default): centre on half the mean, PCA + ITQ rotation"
SPEED_CODES, SPEED_QUERIES, SPEED_ROUNDS = 100_000, 200, 5

# (row label, fit options, fitted on): the sign-at-zero rows are the baselines of the goals.
# "fit": the 2,000-passage fit sample (disjoint from corpus and queries); "sample": that sample
# extended to 10,000 passages (still disjoint); "corpus": the 10,000 indexed passages themselves
# (what an index would train on; the queries stay unseen)
CONFIGS_384 = [
    ("sign at zero", {"method": "sign"}, "fit"),
    ("adaptive (default): centre on half the mean, PCA + ITQ rotation", {}, "fit"),
    ("adaptive, fitted on the 10,000-passage sample", {}, "sample"),
    ("adaptive, fitted on the corpus", {}, "corpus"),
    ("double-bit: PCA 192 + ITQ, two bits (three levels) each", {"levels": 2}, "fit"),
    ("double-bit, fitted on the corpus", {"levels": 2}, "corpus"),
    ("trained", {"method": "trained"}, "fit"),
]
CONFIGS_192 = [
    ("sign at zero, first 192 dims", {"method": "sign", "bits": 192}, "fit"),
    ("sign at zero, first 128 dims", {"method": "sign", "bits": 128}, "fit"),
    ("sign, first 128 dims + 64 bits merged from dims 128-255", {"method": "sign", "bits": 192, "merge": 64}, "fit"),
    ("sign, first 96 dims + 96 bits merged from dims 96-287", {"method": "sign", "bits": 192, "merge": 96}, "fit"),
    ("adaptive (default): PCA 192 + ITQ", {"bits": 192}, "fit"),
    ("adaptive PCA 192 + ITQ, fitted on the 10,000-passage sample", {"bits": 192}, "sample"),
    ("adaptive PCA 192 + ITQ, fitted on the corpus", {"bits": 192}, "corpus"),
    ("double-bit: PCA 96 + ITQ, two bits each", {"bits": 192, "levels": 2}, "fit"),
    ("adaptive: PCA 160 + ITQ", {"bits": 160}, "fit"),
    ("adaptive: PCA 128 + ITQ", {"bits": 128}, "fit"),
    ("adaptive: PCA 160 + ITQ, 32 bits merged from PCA 160-223", {"bits": 192, "merge": 32}, "fit"),
    ("adaptive: PCA 128 + ITQ, 64 bits merged from PCA 128-255", {"bits": 192, "merge": 64}, "fit"),
    ("trained, 192", {"method": "trained", "bits": 192}, "fit"),
]


def quality(vectors) -> tuple[list[list], dict]:
    corpus, queries = vectors["corpus"], vectors["queries"]
    truth = exact_topk(corpus, queries, K)
    rows, found = [], {}
    for label, options, fitted_on in CONFIGS_384 + CONFIGS_192:
        started = time.perf_counter()
        codec = fit(vectors[fitted_on], **options)
        seconds = time.perf_counter() - started
        result = codec_recall(label, codec, corpus, queries, truth, CANDIDATES)
        found[label] = (codec, result)
        rows.append([label, codec.bits, round(result.recall, 3), round(result.recall_rescored, 3),
                     *("-" if value is None else round(value, 3)
                       for value in (result.recall_asymmetric, result.recall_asymmetric_rescored)),
                     round(seconds, 2)])
        print(rows[-1], flush=True)
    return rows, found


#: ITQ restarts of the default codecs: the spread the seed-0 rows above sit in (seed 0 is fit's default)
SPREAD_SEEDS = 5
SPREAD_CONFIGS = ((384, "fit"), (384, "sample"), (384, "corpus"), (192, "fit"), (192, "sample"), (192, "corpus"))


def seed_spread(vectors) -> list[list]:
    """Hamming recall@10 of the default codec (PCA + ITQ) for ITQ seeds 0..SPREAD_SEEDS-1."""
    corpus, queries = vectors["corpus"], vectors["queries"]
    truth = exact_topk(corpus, queries, K)
    rows = []
    for bits, fitted_on in SPREAD_CONFIGS:
        values = []
        for seed in range(SPREAD_SEEDS):
            codec = fit(vectors[fitted_on], bits=bits, seed=seed)
            values.append(recall_at_k(search(codec.encode(corpus), codec.encode(queries), K)[0], truth))
        rows.append([bits, fitted_on, *(round(v, 3) for v in (values[0], min(values), float(np.mean(values)),
                                                                max(values)))])
        print(rows[-1], flush=True)
    return rows


def candidates_curve(vectors, codec) -> list[list]:
    """Recall@10 of a 384-bit codec when re-ranking more candidates by float; the asymmetric
    candidates over the default Hamming shortlist and over every code."""
    corpus, queries = normalize(vectors["corpus"]), normalize(vectors["queries"])
    truth = exact_topk(corpus, queries, K)
    codes, query_codes, weights = codec.encode(corpus), codec.encode(queries), codec.query_weights(queries)
    rows = [["none (top 10 of the codes)", round(recall_at_k(search(codes, query_codes, K)[0], truth), 3),
             round(recall_at_k(search_asymmetric(codes, weights, K)[0], truth), 3),
             round(recall_at_k(search_asymmetric(codes, weights, K, shortlist=0)[0], truth), 3)]]
    for width in (20, 40, 80, 120, 200):
        hamming = search(codes, query_codes, K, rescore=corpus, queries=queries, candidates=width)[0]
        asymmetric = search_asymmetric(codes, weights, K, rescore=corpus, queries=queries, candidates=width)[0]
        every = search_asymmetric(codes, weights, K, rescore=corpus, queries=queries, candidates=width,
                                  shortlist=0)[0]
        rows.append([width, *(round(recall_at_k(ids, truth), 3) for ids in (hamming, asymmetric, every))])
    return rows


def sentence_transformers_check(vectors) -> str:
    try:
        from sentence_transformers.util.quantization import quantize_embeddings
    except ImportError:
        try:
            from sentence_transformers.quantization import quantize_embeddings
        except ImportError:
            return "sentence-transformers is not installed: its quantize_embeddings was not compared."
    corpus = vectors["corpus"]
    theirs = quantize_embeddings(corpus, precision="ubinary")
    ours = fit(vectors["fit"], method="sign").encode(corpus)
    same = np.array_equal(theirs, ours)
    return (f"sentence-transformers {__import__('sentence_transformers').__version__} "
            f"`quantize_embeddings(precision=\"ubinary\")` on the corpus: "
            f"{'identical to' if same else 'DIFFERENT from'} bie's `sign` codes, so the sign-at-zero rows are its figures.")


#: environment variables that pin OpenBLAS to a kernel or cache size: unset for the float baseline
OPENBLAS_PINS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


def _reexec_without_openblas_pins() -> None:
    """OpenBLAS reads its pins when it loads: run this script again without them, so the float
    baseline gets the kernel OpenBLAS picks for this CPU."""
    if any(name in os.environ for name in OPENBLAS_PINS):
        env = {k: v for k, v in os.environ.items() if k not in OPENBLAS_PINS}
        os.execve(sys.executable, [sys.executable, "-m", "bench.bench_embed", *sys.argv[1:]], env)


def _one_thread() -> None:
    import numba

    numba.set_num_threads(1)
    try:
        import faiss

        faiss.omp_set_num_threads(1)
    except ImportError:
        pass
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)  # after faiss: its own OpenBLAS is loaded by then


def _blas_line() -> str:
    from threadpoolctl import threadpool_info

    parts = []
    for pool in threadpool_info():
        if pool.get("user_api") == "blas":
            path = pool.get("filepath", "")
            owner = next((name for name in ("numpy", "scipy", "torch", "faiss") if f"{os.sep}{name}" in path), "?")
            parts.append(f"{owner}: {pool.get('internal_api')} {pool.get('version')} "
                         f"(kernel {pool.get('architecture')}, {pool.get('num_threads')} thread)")
    return "BLAS loaded: " + ("; ".join(parts) or "none found") + "; OpenBLAS pins: none set"


#: the row the others are compared with: bie's Hamming search over a HammingIndex (built once)
BIE_ROW = "bie Hamming top-10, HammingIndex (AVX2 table lookups)"
#: rows of the speed table: (label, batched?) — one query at a time rows run ONE_BY_ONE queries
ONE_BY_ONE = 20
BATCH = 50


def speed(vectors, codec) -> tuple[list[list], dict]:
    """Milliseconds per query over 100,000 codes, one thread, medians of interleaved rounds.

    Every method runs one query at a time (a service answering one request) and
    batched (``BATCH`` queries per call: numpy's matrix product then runs as a
    GEMM near the CPU's peak, the strongest float baseline). Ratios are medians
    over rounds of (float time / bie time) in the same round.
    """
    _one_thread()
    rng = np.random.default_rng(0)
    base = vectors["corpus"]
    # 100,000 vectors: the corpus and noisy copies of it (speed does not depend on the values)
    tiles = [base] + [normalize(base + 0.05 * rng.standard_normal(base.shape).astype(np.float32))
                      for _ in range(SPEED_CODES // len(base) - 1)]
    database = np.ascontiguousarray(np.concatenate(tiles)[:SPEED_CODES])
    queries = normalize(vectors["queries"][:SPEED_QUERIES])
    codes, query_codes = codec.encode(database), codec.encode(queries)
    weights = codec.query_weights(queries)
    single = slice(0, ONE_BY_ONE)
    HammingIndex(codes[:1000])  # compile (or load from the cache) before timing the build
    started = time.perf_counter()
    prepared = HammingIndex(codes)  # built once, as faiss's index and numpy's matrix are
    build_ms = (time.perf_counter() - started) * 1e3

    def numpy_batched():
        for start in range(0, len(queries), BATCH):
            scores = queries[start:start + BATCH] @ database.T
            np.argpartition(-scores, K, axis=1)[:, :K]

    def numpy_single():
        for query in queries[single]:
            np.argpartition(-(database @ query), K)[:K]

    def hamming_batched():
        for start in range(0, len(queries), BATCH):
            search(codes, query_codes[start:start + BATCH], K)

    def hamming_single():
        for row in range(ONE_BY_ONE):
            search(codes, query_codes[row:row + 1], K)

    def index_batched():
        for start in range(0, len(queries), BATCH):
            search(prepared, query_codes[start:start + BATCH], K)

    def index_single():
        for row in range(ONE_BY_ONE):
            search(prepared, query_codes[row:row + 1], K)

    def asymmetric_batched():
        for start in range(0, len(queries), BATCH):
            search_asymmetric(prepared, weights[start:start + BATCH], K)

    def asymmetric_single():
        for row in range(ONE_BY_ONE):
            search_asymmetric(prepared, weights[row:row + 1], K)

    def asymmetric_every_batched():
        for start in range(0, len(queries), BATCH):
            search_asymmetric(codes, weights[start:start + BATCH], K, shortlist=0)

    runners = {  # name -> (function, queries per call, batched?)
        "numpy float32 exact (matrix product + argpartition)": ((numpy_batched, len(queries)),
                                                                (numpy_single, ONE_BY_ONE)),
        BIE_ROW: ((index_batched, len(queries)), (index_single, ONE_BY_ONE)),
        "bie Hamming top-10 on plain codes (numba popcount; table lookups from 128 queries a call)": (
            (hamming_batched, len(queries)), (hamming_single, ONE_BY_ONE)),
        "bie asymmetric top-10, default shortlist (Hamming top 100 over the HammingIndex, re-ranked by the float query)": (
            (asymmetric_batched, len(queries)), (asymmetric_single, ONE_BY_ONE)),
        "bie asymmetric top-10 over every code": ((asymmetric_every_batched, len(queries)), None),
    }
    faiss_version = None
    try:
        import faiss

        index = faiss.IndexBinaryFlat(codec.bits)
        index.add(codes)

        def faiss_batched():
            for start in range(0, len(queries), BATCH):
                index.search(query_codes[start:start + BATCH], K)

        def faiss_single():
            for row in range(ONE_BY_ONE):
                index.search(query_codes[row:row + 1], K)

        runners["faiss IndexBinaryFlat"] = ((faiss_batched, len(queries)), (faiss_single, ONE_BY_ONE))
        faiss_version = faiss.__version__
    except ImportError:
        pass
    calls = {(name, mode): pair for name, pairs in runners.items()
             for mode, pair in zip(("batched", "single"), pairs, strict=True) if pair is not None}
    for function, _ in calls.values():
        function()  # warm up (and compile)
    times = {key: [] for key in calls}
    for _ in range(SPEED_ROUNDS):
        for key, (function, count) in calls.items():
            started = time.perf_counter()
            function()
            times[key].append((time.perf_counter() - started) / count)
    bie = BIE_ROW

    def cell(name, mode):
        if (name, mode) not in times:
            return "-", "-"
        ours = times[(bie, mode)]
        ratio = statistics.median(t / b for t, b in zip(times[(name, mode)], ours, strict=True))
        return round(statistics.median(times[(name, mode)]) * 1e3, 3), round(ratio, 2)

    rows = [[name, *cell(name, "single"), *cell(name, "batched")] for name in runners]
    return rows, {"faiss": faiss_version, "blas": _blas_line(), "cpu": _cpu_name(), "index_ms": round(build_ms, 1),
                  "fastscan": prepared.transposed is not None}


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def fit_times(vectors) -> list[list]:
    """Fit on 10,000 vectors (the corpus: the fit sample is smaller), 384 bits."""
    rows = []
    for method in ("adaptive", "trained"):
        started = time.perf_counter()
        fit(vectors["corpus"], method=method)
        rows.append([method, round(time.perf_counter() - started, 2)])
        print(rows[-1], flush=True)
    return rows


SPREAD_WHERE = {"fit": "2,000-passage sample", "sample": "10,000-passage sample", "corpus": "the corpus"}
RESULTS = embed_corpus.CACHE / "bench-results.json"


def goals(rows: list[list], speed_rows: list[list], seeds: list[list] | None = None) -> str:
    """Issue #14's goals, from this run's rows (recall in points over the sign-at-zero baselines)."""
    by_label = {row[0]: row for row in rows}

    where = {"fit": "fitted on the 2,000-passage sample", "sample": "on the 10,000-passage sample",
             "corpus": "on the corpus itself"}

    def gains(baseline: str, configs: list[tuple]) -> str:
        base = by_label[baseline][2]
        return "; ".join(f"{where[fitted_on]} {by_label[label][2]:.3f} ({100 * (by_label[label][2] - base):+.1f})"
                         for label, _, fitted_on in configs if label in by_label)

    fits = [config for config in CONFIGS_384 if not config[1]]
    fits_192 = [config for config in CONFIGS_192 if config[1] == {"bits": 192}]
    rescored = "; ".join(f"{where[fitted_on]}: Hamming candidates {by_label[label][3]:.3f}, asymmetric candidates "
                         f"{by_label[label][5]:.3f}" for label, _, fitted_on in fits)
    def spread(bits: int, baseline: str) -> str:
        base = by_label[baseline][2]
        parts = [f"{SPREAD_WHERE[on]} {mean:.3f} ({100 * (mean - base):+.1f})"
                 for b, on, _, _, mean, _ in seeds or [] if b == bits]
        return f"; mean of ITQ seeds 0-{SPREAD_SEEDS - 1}: " + ", ".join(parts) if parts else ""

    speed = {row[0]: row for row in speed_rows}
    numpy_row = speed.get("numpy float32 exact (matrix product + argpartition)")
    faiss_row = speed.get("faiss IndexBinaryFlat")
    lines = [
        "Goals of issue #14 in this run (recall@10 over the baselines in points):",
        f"- 384 bits, symmetric Hamming, no rescoring, goal sign-at-zero ({by_label['sign at zero'][2]:.3f}) "
        f"+ 5, default codec (PCA + ITQ) {gains('sign at zero', fits)}{spread(384, 'sign at zero')}.",
        f"- 384 bits, top 40 re-ranked by float, goal 0.95: {rescored}.",
        f"- 192 bits, goal sign-at-zero on the first 192 dims ({by_label['sign at zero, first 192 dims'][2]:.3f}) "
        f"+ 10, default codec (PCA 192 + ITQ) {gains('sign at zero, first 192 dims', fits_192)}"
        f"{spread(192, 'sign at zero, first 192 dims')}.",
    ]
    if numpy_row:
        lines.append(f"- Search, goal 20x numpy float32 (numpy's time / bie's): one query at a time {numpy_row[2]}x; "
                     f"batched ({BATCH} queries per call, numpy's one matrix product against bie's table-lookup scan "
                     "over a HammingIndex) "
                     f"{numpy_row[4]}x.")
    if faiss_row:
        lines.append(f"- Search, goal within 2x of faiss IndexBinaryFlat: faiss takes {faiss_row[2]}x bie's time "
                     f"one query at a time, {faiss_row[4]}x batched.")
    return "\n".join(lines)


def main() -> None:
    """``--quality`` (recall; no timing) and ``--timing`` (fit and search speed, to run under the
    bench lock) can run separately; the section is written from the latest results of both."""
    import json

    _reexec_without_openblas_pins()
    parts = {arg.lstrip("-") for arg in sys.argv[1:]} or {"quality", "timing"}
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    vectors = embed_corpus.embeddings()
    vectors["sample"] = np.concatenate([vectors["fit"], vectors.pop("fit_extra")])
    if "quality" in parts:
        quality_rows, found = quality(vectors)
        results["quality"] = {
            "rows": quality_rows, "st_line": sentence_transformers_check(vectors),
            "curve": candidates_curve(vectors, found[DEFAULT_384][0]),
            "curve_codec": DEFAULT_384,
            "seeds": seed_spread(vectors),
            "sizes": {name: len(v) for name, v in vectors.items()},
        }
    if "timing" in parts:
        load = os.getloadavg()
        fit_rows = fit_times(vectors)
        speed_rows, speed_info = speed(vectors, fit(vectors["fit"]))
        results["timing"] = {"fit": fit_rows, "speed": speed_rows, **speed_info,
                             "load": [load[0], os.getloadavg()[0]], "machine": machine_line()}
    RESULTS.write_text(json.dumps(results))
    if "quality" not in results or "timing" not in results:
        print("run the other part to write BENCHMARKS.md", file=sys.stderr)
        return
    quality_part, timing = results["quality"], results["timing"]
    sizes = quality_part["sizes"]
    headers = ["codes", "bits", "recall@10, Hamming", "Hamming top 40 rescored by float",
               "recall@10, asymmetric", "asymmetric top 40 rescored by float", "fit s"]
    text = "\n\n".join([
        "## Embedding binary codes (`bie embed`)",
        "`HF_HUB_OFFLINE=1 python -m bench.bench_embed` — " + timing["machine"]
        + f"; load average {timing['load'][0]:.1f} before the timings, {timing['load'][1]:.1f} after "
        "(2 cores shared with other jobs: absolute times are noisy, ratios are from the same interleaved rounds).",
        f"all-MiniLM-L6-v2 on docstring paragraphs of installed packages: {sizes['corpus']:,} corpus passages, "
        f"{sizes['queries']:,} query passages, codecs fitted on {sizes['fit']:,} other passages "
        "(bench/embed_corpus.py) unless the row says *fitted on the "
        f"{sizes.get('sample', 10_000):,}-passage sample* (those {sizes['fit']:,} and more, still disjoint "
        "from corpus and queries) or *fitted on the corpus* "
        "(the indexed passages, as an index trains on its data; the queries are never seen). "
        "Truth: exact float32 cosine top-10. *Hamming*: symmetric, query codes against codes. "
        "*asymmetric*: the float query (its margins to the thresholds) scored against the codes' bits, "
        "over a shortlist of the 100 (400 when rescoring 40) Hamming-nearest codes; the index stores only the bits.",
        markdown_table(headers, quality_part["rows"]),
        "*fit s*: wall time of each fit in the quality run (not run quiet; the fit-time goal is the timing "
        "part's, below).",
        quality_part["st_line"],
        f"Re-ranking more candidates by float ({quality_part.get('curve_codec', 'default 384-bit codec')}); "
        "asymmetric candidates come from the default Hamming shortlist (10 per candidate, at least 100) "
        "or from every code:",
        markdown_table(["candidates re-ranked by float", "Hamming", "asymmetric, shortlist (default)",
                        "asymmetric, every code"], quality_part["curve"]),
        *([f"ITQ restarts: Hamming recall@10 of the default codec (PCA + ITQ) for seeds 0-{SPREAD_SEEDS - 1} "
           "(`fit(..., seed=)`; 0 is the default and the seed of the rows above; ITQ also turns float rounding "
           "differences into different optima, so other runs move these by about half a point). The proxies "
           "computed from the sample that were tried do not track query recall, so none picks the seed "
           "(docs/embed.md, bench/embed_pilots.py):",
           markdown_table(["bits", "fitted on", "seed 0", "min", "mean", "max"],
                          [[bits, SPREAD_WHERE[on], *values] for bits, on, *values in quality_part["seeds"]])]
          if "seeds" in quality_part else []),
        f"Search over {SPEED_CODES:,} codes of 384 bits ({timing.get('cpu', '')}), one thread everywhere "
        f"(numba, BLAS via threadpoolctl, faiss.omp_set_num_threads), median of {SPEED_ROUNDS} interleaved rounds; "
        f"one query at a time ({ONE_BY_ONE} queries) and batched ({SPEED_QUERIES} queries, {BATCH} per call: numpy "
        "does one matrix-matrix product per call, bie scans the codes once per block of up to 64 queries); "
        f"*x bie*: median over rounds of (its time / the time of `{BIE_ROW}` in the same round). "
        "The HammingIndex is built once before the timings (as faiss's index and numpy's matrix are): "
        f"{timing.get('index_ms', '?')} ms for the {SPEED_CODES:,} codes (a transposed copy, 2x their bytes; "
        f"table-lookup kernel {'used' if timing.get('fastscan', True) else 'NOT available: no AVX2'}). "
        f"{timing.get('blas', '')}; faiss-cpu {timing['faiss'] or 'not installed'}.",
        markdown_table(["search", "ms/query, one at a time", "x bie", "ms/query, batched", "x bie"],
                       timing["speed"]),
        "Fit time on the 10,000 corpus vectors (384 bits; `trained` is adaptive plus a fixed number of steps, one torch thread):",
        markdown_table(["method", "seconds"], timing["fit"]),
        goals(quality_part["rows"], timing["speed"], quality_part.get("seeds")),
    ])
    print(text)
    update_section("embed", text)


if __name__ == "__main__":
    main()

"""bie_cli.embed: codec invariants, search against the numpy definition, containers, CLI errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from bie_cli.embed import BinaryCodec, HammingIndex, fit, search, search_asymmetric, search_reference
from bie_cli.embed.codec import normalize
from bie_cli.embed.evaluate import exact_topk, recall_at_k
from bie_cli.embed.fit import CENTER_FRACTION, MAX_OFFSET, center_fraction, itq_rotation
from bie_cli.embed.search import fastscan_available, rescore_reference, search_asymmetric_reference
from bie_cli.embed.store import load_codes, save_codes
from bie_cli.errors import BadInputError

BIE_SCRIPT = Path(sys.executable).parent / "bie"  # the installed console script


def clustered(n: int, dim: int = 48, clusters: int = 12, seed: int = 0) -> np.ndarray:
    """Vectors around a few centres with a common offset: like embeddings, not centred at zero."""
    shared = np.random.default_rng(1234)  # one distribution; ``seed`` draws different vectors from it
    centres = shared.standard_normal((clusters, dim)) + 1.5 * shared.standard_normal(dim)
    scales = np.linspace(2.0, 0.3, dim)  # decaying variance per dimension, as in real embeddings
    rng = np.random.default_rng(seed)
    vectors = centres[rng.integers(0, clusters, n)] + 0.6 * rng.standard_normal((n, dim))
    return (vectors * scales).astype(np.float32)


@pytest.fixture(scope="module")
def sample() -> np.ndarray:
    return clustered(1200)


# -- codec and fit ------------------------------------------------------------------------------


CONFIGS = [
    {}, {"bits": 24}, {"bits": 24, "merge": 8}, {"dims": 32}, {"method": "sign"},
    {"method": "sign", "bits": 20, "merge": 6}, {"method": "sign", "dims": 30},
]


@pytest.mark.parametrize("options", CONFIGS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "default")
def test_fit_shapes_and_balanced_bits(sample, options):
    codec = fit(sample, **options)
    codes = codec.encode(sample)
    assert codes.dtype == np.uint8 and codes.shape == (len(sample), -(-codec.bits // 8))
    expected_bits = options.get("bits", options.get("dims", 48) - options.get("merge", 0) * (options.get("method") == "sign"))
    assert codec.bits == expected_bits
    if codec.method == "adaptive":
        # centring + rotation make every bit informative: none is (nearly) constant on the sample
        # (single bits are centred on only part of the mean, which leaves them less balanced)
        bits = np.unpackbits(codes, axis=1)[:, :codec.bits].mean(axis=0)
        partial = codec.info.get("center_fraction", 1.0) < 1
        assert np.all(np.abs(bits[:codec.keep] - 0.5) < (0.35 if partial else 0.2))
        if codec.merged:
            assert np.all(np.abs(bits[codec.keep:] - 0.5) < 0.15)


def test_center_fraction_is_half_the_mean_unless_the_offset_dominates():
    rng = np.random.default_rng(3)
    spread = rng.standard_normal((400, 32)).astype(np.float32)
    mean = np.zeros(32, np.float32)
    mean[0] = 1.0
    fractions = [center_fraction(spread * 0.1 + scale * mean) for scale in (0.05, 0.2, 1.0, 3.0)]
    assert fractions[0] == fractions[1] == CENTER_FRACTION  # a small mean: half of it
    assert CENTER_FRACTION < fractions[2] < fractions[3] < 1  # a dominant one: closer to all of it
    x = spread * 0.1 + 3.0 * mean  # the offset left is MAX_OFFSET of the rows' rms distance to the mean
    rms = np.sqrt(np.square(x - x.mean(axis=0)).sum(axis=1).mean())
    assert (1 - fractions[3]) * np.linalg.norm(x.mean(axis=0)) == pytest.approx(MAX_OFFSET * rms, rel=1e-4)
    codec = fit(spread * 0.1 + 0.2 * mean)
    np.testing.assert_allclose(codec.center, CENTER_FRACTION * normalize(spread * 0.1 + 0.2 * mean).mean(axis=0),
                               atol=1e-6)
    assert fit(spread * 0.1 + 0.3 * mean, bits=24, merge=4).info["center_fraction"] == 1.0  # merged: the mean


def test_itq_rotation_is_orthogonal_and_reduces_quantization_error(sample):
    centred = sample - sample.mean(axis=0)
    rotation = itq_rotation(centred[:, :16])
    np.testing.assert_allclose(rotation @ rotation.T, np.eye(16), atol=1e-5)

    def error(r):
        projected = centred[:, :16] @ r
        return np.square(np.sign(projected) - projected).sum()

    random_rotation, _ = np.linalg.qr(np.random.default_rng(5).standard_normal((16, 16)))
    assert error(rotation) < error(random_rotation)


def test_itq_rotation_matches_plain_itq_and_handles_a_null_direction():
    """The sparse cross-product update and the eigh polar factor give plain ITQ's rotation (dense
    products, SVD); a direction without variance (rank-deficient cross product) still gives a rotation."""
    v = np.random.default_rng(3).standard_normal((500, 24)).astype(np.float32) * np.linspace(1, 3, 24, dtype=np.float32)
    rotation, _ = np.linalg.qr(np.random.default_rng(0).standard_normal((24, 24)))
    rotation = rotation.astype(np.float32)
    for _ in range(4):
        u, _, wt = np.linalg.svd(v.T @ np.copysign(np.float32(1), v @ rotation))
        rotation = u @ wt
    np.testing.assert_allclose(itq_rotation(v, 0, 4), rotation, atol=1e-4)
    v[:, 5] = 0.0
    rotation = itq_rotation(v, 0, 6)
    np.testing.assert_allclose(rotation @ rotation.T, np.eye(24), atol=1e-4)


def test_adaptive_beats_sign_at_zero_on_offset_data(sample):
    """Vectors with a common offset: sign at zero wastes bits that are almost constant."""
    corpus, queries = clustered(1500, seed=1), clustered(100, seed=2)
    truth = exact_topk(corpus, queries, 10)

    def recall(codec):
        return recall_at_k(search(codec.encode(corpus), codec.encode(queries), 10)[0], truth)

    assert recall(fit(sample)) > recall(fit(sample, method="sign")) + 0.05


def test_trained_keeps_its_start_unless_it_wins_on_held_out_rows(sample):
    """method="trained" keeps its fine-tune only if it beats the adaptive start at Hamming recall of
    held-out rows (torch-free check of that choice: the training itself runs in the benchmark)."""
    from bie_cli.embed.trained import keep_better

    start = fit(sample, bits=24)
    worse = fit(sample, method="sign", bits=24)  # sign at zero of offset data: many wasted bits
    x = sample / np.linalg.norm(sample, axis=1, keepdims=True)
    validation, rest = np.arange(0, 1200, 5), np.setdiff1d(np.arange(1200), np.arange(0, 1200, 5))
    kept, info = keep_better(start, worse, x, validation, rest)
    assert info["validation_recall"]["trained"] < info["validation_recall"]["start"]
    assert kept.method == "trained" and kept.info == {}
    np.testing.assert_array_equal(kept.projection, start.projection)
    kept, info = keep_better(worse, start, x, validation, rest)
    assert info["kept"] == "trained" and kept is start


def test_double_bit_hamming_distance_counts_level_differences(sample):
    """levels=2: each component is cut at two thresholds into levels 0/1/2, stored as two bits, so the
    Hamming distance between two codes is the sum of the components' level differences."""
    codec = fit(sample, bits=24, levels=2)
    assert codec.bits == 24 and codec.projection.shape == (48, 24) and codec.info["levels"] == 2
    low, high = codec.thresholds[0::2], codec.thresholds[1::2]
    assert np.all(low < 0) and np.allclose(low, -high)
    z = codec.transform(sample[:40])[:, 0::2]  # each component once
    level = (z >= low).astype(int) + (z >= high)
    expected = np.abs(level[:, None, :] - level[None, :, :]).sum(axis=2)
    codes = codec.encode(sample[:40])
    distances = np.unpackbits(codes[:, None, :] ^ codes[None, :, :], axis=2).sum(axis=2)
    np.testing.assert_array_equal(distances, expected)


SMALL_CONFIGS = [{}, {"bits": 12}, {"bits": 11, "merge": 3}, {"method": "sign", "bits": 10, "merge": 4}]
_small_codecs: dict[int, BinaryCodec] = {}


def _small_codec(index: int) -> BinaryCodec:
    if index not in _small_codecs:
        _small_codecs[index] = fit(clustered(300, dim=19), **SMALL_CONFIGS[index])
    return _small_codecs[index]


@settings(max_examples=60, deadline=None)
@given(
    data=arrays(np.float32, st.tuples(st.integers(1, 20), st.just(19)),
                elements=st.floats(-4, 4, width=32, allow_subnormal=False)),
    index=st.integers(0, len(SMALL_CONFIGS) - 1),
)
@example(data=np.full((1, 19), 2.5566021e-23, dtype=np.float32), index=0)  # squares underflow float32
def test_encode_pack_invariants(data, index):
    codec = _small_codec(index)
    codes = codec.encode(data)
    assert codes.shape == (len(data), -(-codec.bits // 8))
    unpacked = np.unpackbits(codes, axis=1)
    # the bits are the thresholded components, most significant first; the padding is zero
    np.testing.assert_array_equal(unpacked[:, :codec.bits], codec.bits_of(codec.transform(data)))
    assert not unpacked[:, codec.bits:].any()
    # a row's code does not depend on the batch it was encoded in, nor on the vector's length
    # (x 4 is exact in floating point, so the normalised rows are identical)
    np.testing.assert_array_equal(codes[-1:], codec.encode(data[-1:]))
    np.testing.assert_array_equal(codes, codec.encode(data * 4))


# -- search ------------------------------------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(1, 300), queries=st.integers(1, 40), width=st.integers(1, 20),
    bits_used=st.integers(1, 4), seed=st.integers(0, 2**32 - 1), data=st.data(),
)
def test_search_matches_numpy_reference(n, queries, width, bits_used, seed, data):
    """Few distinct bits per byte, so distances tie a lot: ties must go to the lower id. From 16
    queries on, the blocked kernel runs (blocks of 16-32 queries, the last one partial)."""
    rng = np.random.default_rng(seed)
    mask = np.uint8((1 << bits_used) - 1)
    codes = rng.integers(0, 256, (n, width), dtype=np.uint8) & mask
    query_codes = rng.integers(0, 256, (queries, width), dtype=np.uint8) & mask
    k = data.draw(st.integers(1, n))
    expected_ids, expected_distances = search_reference(codes, query_codes, k)
    # plain codes (one query at a time, or the blocked popcount kernel) and a HammingIndex (the
    # table-lookup kernel on AVX2: n not a multiple of its 128-code groups, odd query counts)
    for index in (codes, HammingIndex(codes)):
        ids, distances = search(index, query_codes, k)
        np.testing.assert_array_equal(ids, expected_ids)
        np.testing.assert_array_equal(distances, expected_distances)


@pytest.mark.parametrize("k", [1, 7, 300, 2999, 3000])
def test_search_with_many_buffer_compactions_matches_numpy_reference(k):
    """3,000 codes overflow the kernel's candidate buffer (2k + 256) many times for small k; 3 bits per
    code make thousands of ties at the cutoff, which must still go to the lowest ids. 19 queries: the
    blocked kernel (one block of 16-19 and, on more threads, a partial one), and the table-lookup kernel
    over a HammingIndex."""
    rng = np.random.default_rng(k)
    codes = rng.integers(0, 8, (3000, 1), dtype=np.uint8)
    query_codes = rng.integers(0, 8, (19, 1), dtype=np.uint8)
    expected_ids, expected_distances = search_reference(codes, query_codes, k)
    for index in (codes, HammingIndex(codes)):
        ids, distances = search(index, query_codes, k)
        np.testing.assert_array_equal(ids, expected_ids)
        np.testing.assert_array_equal(distances, expected_distances)


@pytest.mark.parametrize("width", [48])
def test_table_lookup_search_of_wide_codes_matches_numpy_reference(width):
    """More than 63 nibble positions: the kernel's byte sums are widened to 16 bits in two chunks.
    130 queries also take the table-lookup path on plain codes (transposed per call). Two bits per byte
    make many ties; distances reach every part of [0, 8 * width]."""
    rng = np.random.default_rng(width)
    codes = rng.integers(0, 256, (700, width), dtype=np.uint8) & np.uint8(0x81)
    codes[:40] = 0  # distance = popcount of the query: a long run of equal distances
    codes[40:60] = 0xFF
    query_codes = rng.integers(0, 256, (130, width), dtype=np.uint8) & np.uint8(0x81)
    query_codes[0] = 0xFF  # its nearest codes are 40..59, then the ones with most bits set
    index = HammingIndex(codes)
    assert (index.transposed is not None) == fastscan_available()
    for k in (1, 25, 700):
        expected_ids, expected_distances = search_reference(codes, query_codes, k)
        for found in (search(index, query_codes, k), search(index, query_codes[:3], k),
                      search(codes, query_codes, k)):
            np.testing.assert_array_equal(found[0], expected_ids[:len(found[0])])
            np.testing.assert_array_equal(found[1], expected_distances[:len(found[1])])


def test_table_lookup_kernel_is_used_only_with_avx2(monkeypatch):
    """No AVX2 in numba's target (NUMBA_CPU_NAME=generic sets no features) or BIE_EMBED_FASTSCAN=0:
    the index keeps only the codes and the portable kernels give the same results."""
    from numba.core import config

    rng = np.random.default_rng(3)
    codes = rng.integers(0, 256, (300, 6), dtype=np.uint8)
    query_codes = rng.integers(0, 256, (20, 6), dtype=np.uint8)
    expected = search_reference(codes, query_codes, 5)
    monkeypatch.setattr(config, "CPU_FEATURES", "")
    assert not fastscan_available()
    monkeypatch.setattr(config, "CPU_FEATURES", None)
    monkeypatch.setenv("BIE_EMBED_FASTSCAN", "0")
    assert not fastscan_available()
    index = HammingIndex(codes)
    assert index.transposed is None and len(index) == 300 and index.shape == (300, 6)
    for found in (search(index, query_codes, 5), index.search(query_codes[:1], 5)):
        np.testing.assert_array_equal(found[0], expected[0][:len(found[0])])
        np.testing.assert_array_equal(found[1], expected[1][:len(found[1])])


@settings(max_examples=20, deadline=None)
@given(n=st.integers(2, 200), seed=st.integers(0, 2**32 - 1), data=st.data())
def test_rescoring_matches_numpy_reference(n, seed, data):
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 4, (n, 3), dtype=np.uint8)
    query_codes = rng.integers(0, 4, (5, 3), dtype=np.uint8)
    vectors = rng.integers(-3, 4, (n, 6)).astype(np.float32)  # small integers: exact ties in the dot products
    query_vectors = rng.integers(-3, 4, (5, 6)).astype(np.float32)
    k = data.draw(st.integers(1, n))
    candidates = data.draw(st.integers(k, n))
    ids, scores = search(codes, query_codes, k, rescore=vectors, queries=query_vectors, candidates=candidates)
    found, _ = search_reference(codes, query_codes, candidates)
    expected_ids, expected_scores = rescore_reference(found, vectors, query_vectors, k)
    np.testing.assert_array_equal(ids, expected_ids)
    np.testing.assert_allclose(scores, expected_scores)
    int8_ids, _ = search(codes, query_codes, k, rescore=vectors.astype(np.int8), queries=query_vectors,
                         candidates=candidates)
    np.testing.assert_array_equal(int8_ids, expected_ids)
    index_ids, _ = search(HammingIndex(codes), query_codes, k, rescore=vectors, queries=query_vectors,
                          candidates=candidates)
    np.testing.assert_array_equal(index_ids, expected_ids)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 200), bits=st.integers(1, 40), seed=st.integers(0, 2**32 - 1), data=st.data())
def test_asymmetric_search_matches_numpy_reference(n, bits, seed, data):
    """Small integer weights: float32 sums are exact, so ties are real and must go to the lower id."""
    rng = np.random.default_rng(seed)
    codes = np.packbits(rng.integers(0, 2, (n, bits), dtype=np.uint8), axis=1)
    weights = rng.integers(-2, 3, (4, bits)).astype(np.float32)
    k = data.draw(st.integers(1, n))
    ids, scores = search_asymmetric(codes, weights, k, shortlist=0)
    expected_ids, expected_scores = search_asymmetric_reference(codes, weights, k)
    np.testing.assert_array_equal(ids, expected_ids)
    np.testing.assert_array_equal(scores, expected_scores)
    # the shortlist comes from the same Hamming search whether the codes are plain or an index
    for found, expected in zip(search_asymmetric(HammingIndex(codes), weights, k),
                               search_asymmetric(codes, weights, k), strict=True):
        np.testing.assert_array_equal(found, expected)


@settings(max_examples=20, deadline=None)
@given(n=st.integers(1, 200), bits=st.integers(1, 40), seed=st.integers(0, 2**32 - 1), data=st.data())
def test_asymmetric_shortlist_reranks_the_hamming_nearest(n, bits, seed, data):
    """shortlist=m: the asymmetric order among the m Hamming-nearest codes to the query's sign bits."""
    rng = np.random.default_rng(seed)
    codes = np.packbits(rng.integers(0, 2, (n, bits), dtype=np.uint8), axis=1)
    weights = rng.integers(-2, 3, (4, bits)).astype(np.float32)
    k = data.draw(st.integers(1, n))
    shortlist = data.draw(st.integers(k, n + 5))
    ids, scores = search_asymmetric(codes, weights, k, shortlist=shortlist)
    near, _ = search_reference(codes, np.packbits(weights >= 0, axis=1), min(shortlist, n))
    for row in range(len(weights)):
        pool = np.sort(near[row])
        pool_ids, pool_scores = search_asymmetric_reference(codes[pool], weights[row:row + 1], k)
        np.testing.assert_array_equal(ids[row], pool[pool_ids[0]])
        np.testing.assert_array_equal(scores[row], pool_scores[0])
    if shortlist >= n:
        np.testing.assert_array_equal(ids, search_asymmetric_reference(codes, weights, k)[0])


def test_rescoring_every_candidate_is_exact_search(sample):
    codec = fit(sample, bits=16)
    corpus, queries = clustered(400, seed=3), clustered(20, seed=4)
    from bie_cli.embed.codec import normalize

    ids, _ = search(codec.encode(corpus), codec.encode(queries), 10, rescore=normalize(corpus),
                    queries=normalize(queries), candidates=len(corpus))
    np.testing.assert_array_equal(ids, exact_topk(corpus, queries, 10))


# -- containers ----------------------------------------------------------------------------


@pytest.mark.parametrize("options", [{}, {"bits": 24, "merge": 8}, {"method": "sign"}], ids=["adaptive", "merged", "sign"])
def test_codec_and_codes_round_trip_through_containers(sample, tmp_path, options):
    codec = fit(sample, **options)
    path = tmp_path / "codec.cai"
    codec.save(path)
    loaded = BinaryCodec.load(path)
    assert loaded.fingerprint() == codec.fingerprint() and loaded.bits == codec.bits
    np.testing.assert_array_equal(loaded.encode(sample), codec.encode(sample))
    codes_path = tmp_path / "codes.cai"
    save_codes(codec.encode(sample), codec, codes_path)
    np.testing.assert_array_equal(load_codes(codes_path, loaded), codec.encode(sample))
    other = fit(sample, bits=8)
    with pytest.raises(BadInputError, match="another codec"):
        load_codes(codes_path, other)
    with pytest.raises(BadInputError, match="not a bie embed codec"):
        BinaryCodec.load(codes_path)
    with pytest.raises(BadInputError, match="exists"):
        codec.save(path)


def test_inspect_and_verify_work_on_codec_files(sample, tmp_path):
    path = tmp_path / "codec.cai"
    fit(sample, bits=24).save(path)
    inspected = subprocess.run([str(BIE_SCRIPT), "inspect", str(path), "--json"], capture_output=True, text=True)
    assert inspected.returncode == 0, inspected.stderr
    report = json.loads(inspected.stdout)
    assert report["source_format"] == "bie-embed"
    assert {row["name"]: row["shape"] for row in report["tensor_table"]} == {
        "center": [48], "thresholds": [24], "projection": [48, 24]}
    verified = subprocess.run([str(BIE_SCRIPT), "verify", str(path)], capture_output=True, text=True)
    assert verified.returncode == 0 and "3/3 tensors pass" in verified.stdout


# -- bad input -----------------------------------------------------------------------------


def test_bad_inputs_raise_clear_errors(sample):
    codec = fit(sample, bits=16)
    with pytest.raises(BadInputError, match="48"):
        codec.encode(np.zeros((3, 40), np.float32))
    nan = sample[:5].copy()
    nan[3, 7] = np.nan
    with pytest.raises(BadInputError, match=r"NaN or infinite values in 1 row\(s\): 3"):
        codec.encode(nan)
    with pytest.raises(BadInputError, match="NaN"):
        fit(nan)
    with pytest.raises(BadInputError, match="empty"):
        fit(np.zeros((0, 48), np.float32))
    with pytest.raises(BadInputError, match="at least 2"):
        fit(sample[:1])
    with pytest.raises(BadInputError, match="levels=3"):
        fit(sample, levels=3)
    with pytest.raises(BadInputError, match="learned projection"):
        fit(sample, method="sign", levels=2)
    with pytest.raises(BadInputError, match="even"):
        fit(sample, bits=15, levels=2)
    codes = codec.encode(sample[:5])
    with pytest.raises(BadInputError, match="k=6"):
        search(codes, codes, 6)
    with pytest.raises(BadInputError, match="k=0"):
        search(codes, codes, 0)
    with pytest.raises(BadInputError, match="bytes per row"):
        search(codes, np.zeros((1, 3), np.uint8), 1)
    with pytest.raises(BadInputError, match="need 72 components"):
        fit(sample, bits=48, merge=24)
    with pytest.raises(BadInputError, match="unknown method"):
        fit(sample, method="median")
    with pytest.raises(BadInputError, match="query vectors"):
        search(codes, codes, 2, rescore=sample[:5])


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIE_SCRIPT), "embed", *args], capture_output=True, text=True, cwd=cwd)


def test_cli_fit_encode_search_and_errors(sample, tmp_path):
    np.save(tmp_path / "sample.npy", sample)
    np.save(tmp_path / "corpus.npy", sample[:300])
    np.save(tmp_path / "queries.npy", sample[300:310])
    assert _cli("fit", "sample.npy", "-o", "codec.cai", "--bits", "32", cwd=tmp_path).returncode == 0
    assert _cli("encode", "codec.cai", "corpus.npy", "-o", "codes.cai", cwd=tmp_path).returncode == 0
    result = _cli("search", "codes.cai", "--codec", "codec.cai", "--queries", "queries.npy", "-k", "5", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    codec = BinaryCodec.load(tmp_path / "codec.cai")
    expected, _ = search(codec.encode(sample[:300]), codec.encode(sample[300:310]), 5)
    assert json.loads(result.stdout)["ids"] == expected.tolist()
    result = _cli("search", "codes.cai", "--codec", "codec.cai", "--queries", "queries.npy", "-k", "5",
                  "--rescore", "corpus.npy", "--candidates", "300", "-o", "ids.npy", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    np.testing.assert_array_equal(np.load(tmp_path / "ids.npy"), exact_topk(sample[:300], sample[300:310], 5))

    bad = sample[:10].copy()
    bad[2, 0] = np.inf
    np.save(tmp_path / "bad.npy", bad)
    np.save(tmp_path / "narrow.npy", sample[:10, :40])
    np.save(tmp_path / "empty.npy", np.zeros((0, 48), np.float32))
    for args, message in [
        (("encode", "codec.cai", "narrow.npy", "-o", "x.cai"), "have 40 dimensions; the codec expects 48"),
        (("encode", "codec.cai", "bad.npy", "-o", "x.cai"), "NaN or infinite values in 1 row(s): 2"),
        (("fit", "empty.npy", "-o", "x.cai"), "is empty"),
        (("search", "codes.cai", "--codec", "codec.cai", "--queries", "queries.npy", "-k", "301"), "k=301"),
        (("search", "codes.cai", "--codec", "codec.cai", "--queries", "queries.npy", "--shortlist", "50"),
         "--shortlist only applies"),
        (("search", "codes.cai", "--codec", "codec.cai", "--queries", "queries.npy", "--asymmetric",
          "--shortlist", "3"), "shortlist=3 must be at least 10"),
        (("encode", "codec.cai", "corpus.npy", "-o", "codes.cai"), "exists; use --force"),
        (("fit", "sample.txt", "-o", "x.cai"), "no such file"),
    ]:
        result = _cli(*args, cwd=tmp_path)
        assert result.returncode == 2, (args, result.stderr)
        assert message in result.stderr and result.stderr.count("\n") == 1, (args, result.stderr)
    assert not (tmp_path / "x.cai").exists()

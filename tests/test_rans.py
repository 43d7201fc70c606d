"""The shared rANS coder (bie_cli.codecs.rans): round trips, sizes, hostile streams."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from bie_cli.codecs import _jit, rans


def _decode_both_ways(stream: bytes, count: int):
    """Decode with the numpy path and the numba path; each result is the array or the error message."""
    results = []
    for numpy_path in (True, False):
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(_jit, "prefer_numpy", lambda n, numpy_path=numpy_path: numpy_path)
            try:
                results.append(rans.decode_symbols(stream, count).tobytes())
            except ValueError as exc:
                results.append(str(exc))
    return results


@settings(max_examples=120, deadline=None)
@given(arrays(np.uint16, st.integers(0, 600), elements=st.integers(0, 4095)))
def test_uint16_symbols_round_trip(symbols):
    assert np.array_equal(rans.decode_symbols(rans.encode_symbols(symbols), symbols.size), symbols)


@settings(max_examples=100, deadline=None)
@given(arrays(np.uint8, st.integers(0, 600), elements=st.integers(0, 255)))
def test_uint8_symbols_round_trip(symbols):
    decoded = rans.decode_symbols(rans.encode_symbols(symbols), symbols.size, np.uint8)
    assert decoded.dtype == np.uint8 and np.array_equal(decoded, symbols)


def test_skewed_symbols_code_near_their_entropy():
    rng = np.random.default_rng(0)
    symbols = np.clip(rng.normal(2000, 20, 200_000), 0, 4095).astype(np.uint16)
    counts = rans.histogram(symbols)
    p = counts[counts > 0] / symbols.size
    entropy_bytes = -(p * np.log2(p)).sum() * symbols.size / 8
    size = len(rans.encode_symbols(symbols, counts))
    assert entropy_bytes < size < entropy_bytes * 1.01
    assert abs(rans.estimate_size(counts) - size) < 0.01 * size


def test_one_symbol_alphabet_costs_only_the_header():
    data = rans.encode_symbols(np.full(100_000, 7, dtype=np.uint16))
    assert len(data) < 64
    assert (rans.decode_symbols(data, 100_000) == 7).all()


def test_symbols_too_large_for_the_requested_dtype_are_refused():
    data = rans.encode_symbols(np.array([300, 1, 2], dtype=np.uint16))
    with pytest.raises(ValueError, match="alphabet"):
        rans.decode_symbols(data, 3, np.uint8)


def test_wrong_symbol_dtype_is_a_type_error():
    with pytest.raises(TypeError):
        rans.encode_symbols(np.arange(5, dtype=np.int32))


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 10_000), st.data())
def test_truncated_or_padded_streams_raise(seed, data):
    rng = np.random.default_rng(seed)
    symbols = rng.integers(0, 40, 300).astype(np.uint16)
    stream = rans.encode_symbols(symbols)
    cut = data.draw(st.integers(0, len(stream) - 1))
    with pytest.raises(ValueError):
        rans.decode_symbols(stream[:cut], symbols.size)
    with pytest.raises(ValueError):
        rans.decode_symbols(stream + b"\x00\x00", symbols.size)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.integers(0, 500))
def test_arbitrary_bytes_raise_value_error_or_decode_in_bounds(garbage, count):
    try:
        out = rans.decode_symbols(garbage, count)
    except ValueError:
        return
    assert out.shape == (count,)


def test_flipped_bytes_never_crash():
    rng = np.random.default_rng(1)
    symbols = np.clip(rng.normal(100, 5, 5000), 0, 4095).astype(np.uint16)
    stream = bytearray(rans.encode_symbols(symbols))
    detected = 0
    for position in range(len(stream)):
        corrupt = bytearray(stream)
        corrupt[position] ^= 0x5A
        try:
            out = rans.decode_symbols(bytes(corrupt), symbols.size)
        except ValueError:
            detected += 1
            continue
        assert out.shape == symbols.shape
    # the final-state check catches nearly every corruption
    assert detected > 0.95 * len(stream)


def test_scale_bits_for_size_picks_the_smallest_stream():
    rng = np.random.default_rng(2)
    narrow = np.clip(rng.normal(8, 2, 500_000), 0, 15).astype(np.uint8)  # 4-bit codes
    wide = np.clip(rng.normal(128, 12, 500_000), 0, 255).astype(np.uint8)  # 8-bit codes, rare tails
    chosen = {}
    for name, symbols in (("narrow", narrow), ("wide", wide)):
        counts = rans.histogram(symbols)
        chosen[name] = rans.scale_bits_for_size(counts)
        sizes = {bits: len(rans.encode_symbols(symbols, counts, bits)) for bits in range(10, 15)}
        assert sizes[chosen[name]] <= min(sizes.values()) * 1.0002
        assert sizes[chosen[name]] <= len(rans.encode_symbols(symbols, counts))
    assert chosen["narrow"] < chosen["wide"]


def test_scale_bits_for_size_leaves_room_for_every_symbol():
    counts = np.ones(3000, dtype=np.int64)
    assert 1 << rans.scale_bits_for_size(counts) >= 3000
    assert 1 <= rans.scale_bits_for_size(np.zeros(4, dtype=np.int64)) <= rans.MAX_SCALE_BITS


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 10_000), st.integers(0, 2_000), st.data())
def test_numpy_and_numba_decoders_agree_on_valid_and_damaged_streams(seed, count, data):
    """Small streams decode in numpy (no numba import, codecs/_jit.py); both paths must give the
    same symbols for every stream and the same error for every damaged one."""
    rng = np.random.default_rng(seed)
    symbols = np.minimum(rng.geometric(data.draw(st.sampled_from([0.02, 0.3, 0.9])), count), 4095).astype(np.uint16)
    stream = bytearray(rans.encode_symbols(symbols))
    numpy_result, numba_result = _decode_both_ways(bytes(stream), count)
    assert numpy_result == numba_result == symbols.tobytes()
    if stream:
        position = data.draw(st.integers(0, len(stream) - 1))
        stream[position] ^= data.draw(st.integers(1, 255))
        damaged = bytes(stream[: data.draw(st.integers(position, len(stream)))])
        numpy_result, numba_result = _decode_both_ways(damaged, count)
        assert numpy_result == numba_result


def _histograms(seed: int):
    """Histograms shaped like float-split's: dense, sparse, heavy-tailed, empty, one symbol."""
    rng = np.random.default_rng(seed)
    for size in (1, 2, 16, 256, 4096):
        yield rng.integers(0, 1000, size)
        sparse = np.zeros(size, dtype=np.int64)
        sparse[rng.integers(0, size, 3)] = rng.integers(1, 10**6, 3)
        yield sparse
        yield (rng.pareto(1.0, size) * 10).astype(np.int64)
        yield np.zeros(size, dtype=np.int64)


def test_compiled_estimate_and_normalise_equal_the_numpy_definitions():
    """The hot paths (one compiled call each) must give the integers the documented numpy
    code gives: coding decisions and stream bytes depend on them."""
    from bie_cli.codecs import _rans_numba

    for seed in range(3):
        for counts in _histograms(seed):
            counts = np.asarray(counts, dtype=np.int64)
            assert rans.fast_estimate_size(counts) == rans.estimate_size(counts)
            if counts.sum():
                scale_bits = rans.choose_scale_bits(counts)
                assert np.array_equal(_rans_numba.normalise(counts, scale_bits), rans.normalise(counts, scale_bits))


@settings(max_examples=300, deadline=None)
@given(st.integers(2, 4096),
       st.lists(st.tuples(st.integers(0, 4095), st.one_of(st.integers(1, 7), st.integers(1000, 10**6))),
                min_size=1, max_size=400),
       st.integers(0, 3))
def test_compiled_normalise_equals_the_numpy_definition_on_sparse_alphabets(size, entries, extra_bits):
    """A float's 4,096-symbol alphabet with a few hundred present, ties and many rare symbols
    (each raised to 1, so the excess is taken back from the largest, in a stable order): the
    compiled normalise skips the absent symbols and sorts only the ones that can give."""
    from bie_cli.codecs import _rans_numba

    counts = np.zeros(size, dtype=np.int64)
    for symbol, count in entries:
        counts[symbol % size] = count  # rare ones (many tied) and common ones
    # at most 3 bits above the fewest that hold every present symbol: most of them round to 1
    # or 2, so the excess is taken from many tied frequencies, not only from the largest
    fewest = max(int(np.count_nonzero(counts) - 1).bit_length(), 1)
    scale_bits = min(fewest + extra_bits, rans.MAX_SCALE_BITS)
    assert np.array_equal(_rans_numba.normalise(counts, scale_bits), rans.normalise(counts, scale_bits))


def test_counts_shorter_than_the_symbols_are_refused():
    with pytest.raises(ValueError, match="shorter"):
        rans.encode_symbols(np.array([0, 5], dtype=np.uint16), counts=np.array([1, 0, 0], dtype=np.int64))


def test_numba_is_imported_without_its_blas_probe(tmp_path, monkeypatch):
    """``_jit.import_without``: a module's optional import fails while it loads (numba's SciPy
    BLAS probe, a third of a second of start-up), then works again for everyone else."""
    (tmp_path / "bie_probe_optional.py").write_text("VALUE = 1\n")
    (tmp_path / "bie_probe_user.py").write_text(
        "try:\n    import bie_probe_optional\n    HAVE = True\nexcept ImportError:\n    HAVE = False\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("bie_probe_optional", "bie_probe_user"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    _jit.import_without("bie_probe_optional", "bie_probe_user")
    assert sys.modules["bie_probe_user"].HAVE is False
    assert "bie_probe_optional" not in sys.modules
    import bie_probe_optional

    assert bie_probe_optional.VALUE == 1
    # already imported: left alone, and the importer sees it
    monkeypatch.delitem(sys.modules, "bie_probe_user")
    _jit.import_without("bie_probe_optional", "bie_probe_user")
    assert sys.modules["bie_probe_user"].HAVE is True

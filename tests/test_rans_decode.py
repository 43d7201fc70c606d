"""``_rans_numba.decode`` (the 8-lane loop float-split and rANS byte planes decode with) against
the plain-Python decoder ``rans._decode_python``: the same status on real weights, random symbols
and cut, padded or bit-flipped streams, the same symbols when it succeeds, and no read past the
words (a guard page after them). Ported from session 9's vector-decoder tests."""

from __future__ import annotations

import ctypes
import mmap
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bie_cli.codecs import _jit, rans

_jit.import_numba()
from bie_cli.codecs import _rans_numba  # noqa: E402


def _decode_both(words, states, count, table, scale_bits, dtype=np.uint16, oracle=True):
    """Status and output of the numba loop; with ``oracle``, checked against the Python decoder."""
    out = np.full(count, 0xA5, dtype=dtype)
    status = _rans_numba.decode(words, states, count, table, scale_bits, out)
    if oracle:
        expected = np.full(count, 0xA5, dtype=dtype)
        assert status == rans._decode_python(words, states, count, table, scale_bits, expected)
        if status == 0:
            assert np.array_equal(out, expected)
    return status, out


def _round_trip(symbols: np.ndarray, dtype=np.uint16, oracle=True) -> None:
    alphabet = int(symbols.max()) + 1 if symbols.size else 1
    parsed = rans.parse_stream(rans.encode_symbols(symbols), symbols.size, alphabet)
    status, out = _decode_both(parsed.words, parsed.states, symbols.size, parsed.table, parsed.scale_bits, dtype,
                               oracle)
    assert status == 0
    assert np.array_equal(out, symbols)


@pytest.mark.parametrize("dtype", ["BF16", "F32"])
def test_real_weights(minilm_path, dtype):
    import ml_dtypes
    from safetensors.numpy import load_file

    weights = load_file(str(minilm_path))
    for name in ("embeddings.word_embeddings.weight", "encoder.layer.0.attention.self.query.weight",
                 "encoder.layer.3.intermediate.dense.bias"):
        values = weights[name].reshape(-1)
        if dtype == "BF16":
            heads = values.astype(ml_dtypes.bfloat16).view(np.uint16)
        else:
            heads = (values.view(np.uint32) >> 16).astype(np.uint16)
        for low_bits in (0, 3, 7, 8):  # float-split's head symbols: sign, exponent, top mantissa bits
            symbols = ((heads & 0x7FFF) >> low_bits).astype(np.uint16)
            _round_trip(symbols, oracle=symbols.size < 200_000)  # the Python oracle is slow on 11.7M symbols
            if symbols.max() < 256:
                _round_trip(symbols.astype(np.uint8), np.uint8, oracle=False)
        _round_trip(values.view(np.uint8)[:: values.itemsize].copy(), np.uint8, oracle=False)  # a byte plane


@pytest.mark.parametrize("count", range(0, 41))
def test_every_count_mod_8(count):
    rng = np.random.default_rng(count)
    _round_trip(rng.integers(0, 5, count).astype(np.uint16))
    _round_trip(np.zeros(count, dtype=np.uint8), np.uint8)


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 5000), st.sampled_from([2, 3, 16, 256, 4096, 65536]), st.floats(0.01, 0.99),
       st.integers(0, 2**32 - 1))
def test_random_symbols(count, alphabet, skew, seed):
    rng = np.random.default_rng(seed)
    symbols = np.minimum(rng.geometric(skew, count) - 1, alphabet - 1).astype(np.uint16)
    _round_trip(symbols)
    if alphabet <= 256:
        _round_trip(symbols.astype(np.uint8), np.uint8)


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 3000), st.sampled_from([2, 40, 256]), st.integers(0, 2**32 - 1), st.integers(0, 64),
       st.integers(0, 8))
def test_corrupt_streams(count, alphabet, seed, cut, flips):
    """Words cut off the end, words added, bits flipped: the Python decoder's status."""
    rng = np.random.default_rng(seed)
    symbols = np.minimum(rng.geometric(0.2, count) - 1, alphabet - 1).astype(np.uint16)
    parsed = rans.parse_stream(rans.encode_symbols(symbols), count, alphabet)
    body = parsed.words[: parsed.words.size - 8].copy()
    if cut <= body.size:
        body = body[: body.size - cut]
    else:
        body = np.concatenate([body, rng.integers(0, 1 << 16, cut - body.size).astype(np.uint16)])
    for _ in range(flips):
        if body.size:
            body[rng.integers(body.size)] ^= np.uint16(1 << int(rng.integers(16)))
    words = np.concatenate([body, np.zeros(8, dtype=np.uint16)])
    status, _ = _decode_both(words, parsed.states, count, parsed.table, parsed.scale_bits)
    if cut == 0 and flips == 0:
        assert status == 0


def _guarded_words(body: np.ndarray):
    """``body`` plus 8 zero words ending exactly at a PROT_NONE page: a read past them faults."""
    page = mmap.PAGESIZE
    nbytes = 2 * (body.size + 8)
    pages = -(-nbytes // page)
    buf = mmap.mmap(-1, (pages + 1) * page)
    base = ctypes.addressof(ctypes.c_char.from_buffer(buf))
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.mprotect(ctypes.c_void_p(base + pages * page), ctypes.c_size_t(page), 0) == 0
    start = pages * page - nbytes
    words = np.frombuffer(buf, dtype=np.uint16, count=body.size + 8, offset=start)
    words[: body.size] = body
    words[body.size:] = 0
    return buf, words


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mprotect through libc")
@pytest.mark.parametrize("seed", range(12))
def test_truncated_streams_stay_in_bounds(seed):
    """Streams cut short (every state forced to renormalise: symbols of frequency 1 in 2**15)
    decode up to the padding and stop there; the guard page after it is never touched."""
    rng = np.random.default_rng(seed)
    count = int(rng.integers(8, 4000))
    symbols = rng.integers(0, 4096, count).astype(np.uint16)
    parsed = rans.parse_stream(rans.encode_symbols(symbols, scale_bits=15), count, 4096)
    body = parsed.words[: parsed.words.size - 8]
    for keep in sorted({0, 1, 7, 8, 9, int(rng.integers(body.size + 1)), body.size // 2, max(body.size - 1, 0)}):
        buf, words = _guarded_words(body[:keep])
        status, _ = _decode_both(words, parsed.states, count, parsed.table, parsed.scale_bits)
        assert status == (0 if keep == body.size else 1)
        del words
        buf.close()


def test_states_at_the_limits():
    """States at L and just below L * 2**16 (the range the callers allow)."""
    table = _rans_numba.slot_table(np.array([1, 2**15 - 1], dtype=np.int64), 15)
    for value in (rans.RANS_L, (rans.RANS_L << 16) - 1):
        states = np.full(8, value, dtype=np.int64)
        words = np.zeros(40 + 8, dtype=np.uint16)
        _decode_both(words, states, 37, table, 15)
        _decode_both(words, states, 37, table, 15, np.uint8)

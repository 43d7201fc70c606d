"""The vector rANS encoder (codecs/_rans_vector_encode.py) writes the scalar encoder's bytes.

Every case codes the same symbols with ``_rans_numba.encode_into`` (the reference) and with
``_rans_vector_encode.vector_encode_into`` / ``encode_into``, and compares the final states and
the words, and that neither writes outside ``words[end - n - 1:end]``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bie_cli.codecs import rans
from bie_cli.codecs._rans_numba import encode_into as scalar_encode_into
from bie_cli.codecs._rans_vector_encode import PERMUTATIONS, encode_into, vector_encode_into

GUARD = 37  # sentinel slots on either side of the region the encoders may write


def model(symbols: np.ndarray, alphabet: int, scale_bits: int | None = None):
    counts = np.bincount(symbols.astype(np.int64), minlength=alphabet).astype(np.int64)
    if scale_bits is None:
        scale_bits = rans.choose_scale_bits(counts)
    freq = rans.normalise(counts, scale_bits).astype(np.int64)
    start = np.zeros(alphabet, dtype=np.int64)
    start[1:] = np.cumsum(freq)[:-1]
    return freq, start, scale_bits


def run(encoder, values, mask, shift, freq, start, scale_bits):
    n = values.shape[0]
    words = np.full(GUARD + n + 1 + GUARD, 0xA5A5, dtype=np.uint16)
    end = GUARD + n + 1
    signed_mask = np.array(mask & 0xFFFFFFFFFFFFFFFF, dtype=np.uint64).view(np.int64)[()]
    states, pos = encoder(values, signed_mask, np.int64(shift), freq, start, scale_bits, words, end)
    assert end - n - 1 <= pos <= end
    assert (words[: end - n - 1] == 0xA5A5).all() and (words[end:] == 0xA5A5).all()
    return np.asarray(states).copy(), words[pos:end].copy()


def check(values, mask=-1, shift=0, alphabet=None, scale_bits=None):
    values = np.ascontiguousarray(values)
    symbols = (values.astype(np.uint64) & np.uint64(mask & 0xFFFFFFFFFFFFFFFF)) >> np.uint64(shift)
    if alphabet is None:
        alphabet = int(symbols.max()) + 1 if symbols.size else 1
    freq, start, scale_bits = model(symbols, alphabet, scale_bits)
    if symbols.size and (freq[symbols.astype(np.int64)] == 0).any():
        pytest.skip("scale too small for this alphabet")
    ref_states, ref_words = run(scalar_encode_into, values, mask, shift, freq, start, scale_bits)
    for encoder in (vector_encode_into, encode_into):
        states, words = run(encoder, values, mask, shift, freq, start, scale_bits)
        assert np.array_equal(states, ref_states)
        assert np.array_equal(words, ref_words), (values.shape[0], alphabet, scale_bits)
    return ref_words


def test_permutation_table_moves_words_to_the_top_in_lane_order():
    table = PERMUTATIONS.reshape(256, 16)
    for mask in range(256):
        lanes = [j for j in range(8) if mask >> j & 1]
        top = table[mask].reshape(8, 2)[8 - len(lanes) :]
        assert top[:, 0].tolist() == [2 * lane for lane in lanes]
        assert top[:, 1].tolist() == [2 * lane + 1 for lane in lanes]


@pytest.mark.parametrize("n", list(range(0, 41)) + [4095, 4096, 4097, 65536 + 3, 99_993, 99_999, 100_000])
def test_every_length_mod_8(n):
    rng = np.random.default_rng(n)
    check(np.minimum(rng.geometric(0.05, n), 255).astype(np.uint8), alphabet=256)


@pytest.mark.parametrize("scale_bits", range(1, 16))
def test_single_symbol_alphabet_every_scale(scale_bits):
    # freq = 2**scale: x_max = 2**31, the lane never renormalises
    for n in (7, 8, 9, 1000, 20_001):
        check(np.full(n, 3, dtype=np.uint16), alphabet=5, scale_bits=scale_bits)


@pytest.mark.parametrize("scale_bits", [8, 12, 14, 15])
def test_frequency_one_symbols(scale_bits):
    rng = np.random.default_rng(scale_bits)
    n = 50_000
    symbols = np.zeros(n, dtype=np.uint16)
    rare = n // 3 + rng.choice(n - n // 3, 40, replace=False)
    symbols[rare] = 1 + np.arange(40)  # 40 symbols seen once: freq 1 each
    symbols[: n // 3] = 41 + rng.integers(0, 3, n // 3)
    freq, _, _ = model(symbols, 44, scale_bits)
    assert (freq[1:41] == 1).all()
    check(symbols, alphabet=44, scale_bits=scale_bits)


def test_max_scale_bits_big_alphabet():
    rng = np.random.default_rng(5)
    symbols = rng.integers(0, 30_000, 200_001).astype(np.uint16)
    check(symbols, alphabet=32_768, scale_bits=15)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.uint32, np.uint64, np.int16, np.int32])
def test_element_types_mask_and_shift(dtype):
    rng = np.random.default_rng(1)
    info = np.iinfo(dtype)
    values = rng.integers(info.min, info.max, 30_011, dtype=dtype, endpoint=True)
    bits = info.bits
    check(values, mask=0xFF << (bits - 8), shift=bits - 8, alphabet=256)
    check(values, mask=0x7FF, shift=3, alphabet=256)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(0, 5000),
    alphabet=st.sampled_from([1, 2, 3, 16, 255, 256, 1000, 4096]),
    skew=st.floats(0.0, 8.0),
    scale_bits=st.one_of(st.none(), st.integers(12, 15)),
    seed=st.integers(0, 2**32 - 1),
)
def test_random_symbols(n, alphabet, skew, scale_bits, seed):
    rng = np.random.default_rng(seed)
    weights = np.exp(-skew * np.arange(alphabet) / max(alphabet - 1, 1) * 4)
    symbols = rng.choice(alphabet, n, p=weights / weights.sum()).astype(np.uint16)
    check(symbols, alphabet=alphabet, scale_bits=scale_bits)


def _bf16_bits(weights: np.ndarray) -> np.ndarray:
    import ml_dtypes

    return np.ascontiguousarray(weights.astype(ml_dtypes.bfloat16)).reshape(-1).view(np.uint16)


def test_real_minilm_heads_and_planes(minilm_path):
    from safetensors.numpy import load_file

    tensors = load_file(str(minilm_path))
    names = [name for name in sorted(tensors) if tensors[name].dtype == np.float32][:12]
    for name in names:
        f32 = np.ascontiguousarray(tensors[name]).reshape(-1)
        bf16 = _bf16_bits(f32)
        for low_bits in (0, 3, 7):  # float-split's symbol streams of BF16 heads
            check(bf16, mask=0x7FFF, shift=low_bits, alphabet=1 << (15 - low_bits))
        check(bf16, mask=0xFF, shift=0, alphabet=256)  # a residual-like byte plane
        words = f32.view(np.uint32)
        check((words >> 16).astype(np.uint16), mask=0x7FFF, shift=7, alphabet=256)  # F32 heads
        for k in (0, 8):  # F32 tail planes
            check(((words >> k) & 0xFF).astype(np.uint8), mask=0xFF, shift=0, alphabet=256)


def test_float_split_round_trips_minilm_bf16(minilm_path):
    from safetensors.numpy import load_file

    from bie_cli.codecs import _jit

    fs = _jit.kernels("_float_split_numba")
    weight = load_file(str(minilm_path))["encoder.layer.0.attention.self.query.weight"].reshape(-1)
    heads = _bf16_bits(weight)
    status, low_bits, sym, *_ = fs.encode16(heads, np.array([0, 3, 7]))
    assert status in (0, 1)
    count = heads.shape[0]
    stream = bytes(sym[5:])
    alphabet = 1 << (15 - low_bits)
    decoded = rans.decode_symbols(stream, count, np.uint16, alphabet)
    assert np.array_equal(decoded, (heads & 0x7FFF) >> low_bits)


_SUBPROCESS = """
import numpy as np, sys
sys.path.insert(0, {tests!r})
from test_rans_vector_encode import check
from bie_cli.codecs import _rans_vector_encode as V
rng = np.random.default_rng(3)
for n in (0, 5, 8, 13, 1000, 30_007):
    check(np.minimum(rng.geometric(0.02, n), 255).astype(np.uint8), alphabet=256)
    check(rng.integers(0, 4000, n).astype(np.uint16), alphabet=4096, scale_bits=15)
print("VECTOR_OK", V.encode_into.__module__, flush=True)
"""


@pytest.mark.parametrize("cpu", ["x86-64", "haswell"])
def test_other_targets_same_bytes(cpu, tmp_path):
    """x86-64 (no AVX2: LLVM scalarises the IR, ``encode_into`` takes the scalar loop) and
    haswell (AVX2 without AVX-512) give the same bytes. NUMBA_CPU_FEATURES="" makes numba take
    the CPU's own features (else it keeps the host's, AVX-512 here, whatever the name)."""
    env = {**os.environ, "NUMBA_CPU_NAME": cpu, "NUMBA_CPU_FEATURES": "", "NUMBA_CACHE_DIR": str(tmp_path / "nc")}
    root = Path(__file__).resolve().parents[1]
    env["PYTHONPATH"] = os.pathsep.join([str(root), env.get("PYTHONPATH", "")])
    done = subprocess.run(
        [sys.executable, "-c", _SUBPROCESS.format(tests=str(root / "tests"))], env=env, capture_output=True, timeout=900
    )
    assert b"VECTOR_OK" in done.stdout, done.stderr.decode()[-1500:]

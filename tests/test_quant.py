"""Quantization strategies (quant, nf4, ternary) and their codecs: bounds, threads, goldens, hostile payloads."""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bie_cli.codecs import bitpack, static_rans
from bie_cli.errors import BadInputError, UnsupportedDtypeError
from bie_cli.metrics import error_stats
from bie_cli.strategies import get

GOLDEN = Path(__file__).parent / "golden" / "strategies"
LOSSY = ["quant", "nf4", "ternary"]


def _round_trip(strategy_id: str, chunk: np.ndarray, dtype: str = "F32", **options):
    strategy = get(strategy_id)
    payload, meta = strategy.encode(chunk, strategy.config_from_dict(options))
    meta = json.loads(json.dumps(meta))
    decoded = strategy.decode(memoryview(payload), meta, chunk.shape, dtype)
    return payload, meta, decoded


# -- codecs -------------------------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(bits=st.integers(1, 8), data=st.data())
def test_bitpack_round_trips(bits, data):
    codes = np.array(data.draw(st.lists(st.integers(0, (1 << bits) - 1), max_size=70)), dtype=np.uint8)
    packed = bitpack.pack_bits(codes, bits)
    assert len(packed) == bitpack.packed_size(codes.size, bits)
    assert np.array_equal(bitpack.unpack_bits(packed, bits, codes.size), codes)


def test_bitpack_layout_is_lsb_first_and_checks_length():
    assert bitpack.pack_bits(np.array([1, 2, 3], np.uint8), 3) == bytes([0b11010001, 0])
    with pytest.raises(ValueError, match="need"):
        bitpack.unpack_bits(b"\x00", 3, 3)


@settings(max_examples=40, deadline=None)
@given(trits=st.lists(st.integers(0, 2), max_size=40))
def test_trits_pack_five_to_a_byte(trits):
    codes = np.array(trits, dtype=np.uint8)
    packed = bitpack.pack_trits(codes)
    assert len(packed) == -(-len(trits) // 5)
    assert np.array_equal(bitpack.unpack_trits(packed, len(trits)), codes)


def test_trit_byte_above_242_is_refused():
    with pytest.raises(ValueError, match="242"):
        bitpack.unpack_trits(b"\xf3", 5)


@settings(max_examples=40, deadline=None)
@given(symbols=st.lists(st.integers(0, 255), max_size=300), skew=st.integers(1, 256))
def test_rans_round_trips(symbols, skew):
    data = (np.array(symbols, dtype=np.int64) % skew).astype(np.uint8)
    stream = static_rans.encode(data)
    assert np.array_equal(static_rans.decode(stream, data.size), data)


def test_rans_reaches_the_entropy_and_rejects_corruption():
    rng = np.random.default_rng(0)
    data = np.clip(np.round(rng.standard_normal(200_000) * 3) + 100, 0, 255).astype(np.uint8)
    counts = np.bincount(data, minlength=256)
    p = counts[counts > 0] / data.size
    entropy_bytes = -(p * np.log2(p)).sum() * data.size / 8
    stream = static_rans.encode(data)
    assert len(stream) < entropy_bytes * 1.005 + 100
    with pytest.raises(ValueError):
        static_rans.decode(stream[:-3], data.size)
    with pytest.raises(ValueError):
        static_rans.decode(stream + b"\x00", data.size)
    broken = bytearray(stream)
    broken[5] ^= 0xFF  # frequency table no longer sums to 2**scale_bits
    with pytest.raises(ValueError):
        static_rans.decode(bytes(broken), data.size)


# -- error bounds ---------------------------------------------------------------------
@pytest.mark.parametrize("bits", [2, 3, 4, 5, 8])
@pytest.mark.parametrize("symmetric", [True, False])
def test_uniform_input_error_is_within_half_a_step(bits, symmetric):
    rng = np.random.default_rng(bits)
    x = rng.uniform(-1, 1, size=(64, 128)).astype(np.float32)
    _, _, decoded = _round_trip("quant", x, bits=bits, symmetric=symmetric, group_size=32)
    groups = x.reshape(-1, 32)
    if symmetric:  # step = largest magnitude / 2**(b-1); the far side may clip by one more step
        step = np.abs(groups).max(axis=1) / (1 << (bits - 1))
        bound = step
    else:
        step = (groups.max(axis=1) - groups.min(axis=1)) / ((1 << bits) - 1)
        bound = step / 2
    error = np.abs(decoded - x).reshape(-1, 32)
    assert (error <= bound[:, None] * 1.002 + 1e-7).all()
    # uniform input, uniform grid: MSE close to step**2 / 12 (symmetric grids lose
    # one level on the far side of zero, which shows at 2-3 bits)
    mse = float(((decoded - x) ** 2).mean())
    if not symmetric or bits >= 4:
        assert mse == pytest.approx(float((step**2).mean()) / 12, rel=0.25)


@pytest.mark.parametrize("step", [0.05, 0.2, 0.4])
def test_step_mode_relative_mse_is_step_squared_over_12(step):
    x = np.random.default_rng(7).uniform(-1, 1, size=(32, 256)).astype(np.float32)
    _, _meta, decoded = _round_trip("quant", x, bits=8, step=step, granularity="channel")
    rms = np.sqrt(np.mean(x.astype(np.float64) ** 2, axis=1, keepdims=True))
    assert (np.abs(decoded - x) <= step * rms / 2 * 1.002).all()
    assert error_stats(x, decoded).relative_mse == pytest.approx(step**2 / 12, rel=0.1)


def test_step_mode_stores_values_beyond_the_code_range_exactly():
    x = np.random.default_rng(7).uniform(-1, 1, size=(32, 256)).astype(np.float32)
    x[3, 17], x[9, 0] = 500.0, -300.0  # far outside the 8-bit grid of step 0.05 * RMS
    _, meta, decoded = _round_trip("quant", x, bits=8, step=0.05, granularity="tensor")
    assert meta["exact"] == 2 and decoded[3, 17] == 500.0 and decoded[9, 0] == -300.0
    rms = float(np.sqrt(np.mean(x.astype(np.float64) ** 2)))
    assert np.abs(decoded - x).max() <= 0.05 * rms / 2 * 1.002


@pytest.mark.parametrize("clip", ["mse", "octav"])
def test_clipping_lowers_error_on_heavy_tailed_weights(clip):
    rng = np.random.default_rng(3)
    x = rng.standard_t(3, size=(64, 256)).astype(np.float32)
    base = error_stats(x, _round_trip("quant", x, bits=3, granularity="channel")[2]).sum_squared_error
    clipped = error_stats(x, _round_trip("quant", x, bits=3, granularity="channel", clip=clip)[2]).sum_squared_error
    assert clipped < 0.9 * base


def test_entropy_coding_is_smaller_than_packing_on_peaked_codes():
    x = np.random.default_rng(1).standard_normal((128, 512)).astype(np.float32)
    coded, meta, _ = _round_trip("quant", x, bits=6, granularity="channel")
    packed, packed_meta, _ = _round_trip("quant", x, bits=6, granularity="channel", entropy="none")
    assert meta["codes"] == "rans" and packed_meta["codes"] == "packed"
    assert len(coded) < 0.9 * len(packed)


def test_nf4_matches_its_codebook_and_sizes():
    from bie_cli.strategies.nf4 import NF4_CODEBOOK

    x = np.random.default_rng(2).standard_normal((16, 256)).astype(np.float32)
    payload, _, decoded = _round_trip("nf4", x, entropy="none")
    assert len(payload) * 8 / x.size == 4.5
    blocks = x.reshape(-1, 64)
    absmax = np.abs(blocks).max(axis=1, keepdims=True)
    nearest = NF4_CODEBOOK[np.abs(blocks[..., None] / absmax[..., None] - NF4_CODEBOOK).argmin(-1)] * absmax
    assert np.allclose(decoded.reshape(-1, 64), nearest, atol=1e-6)
    dq_payload, _, dq_decoded = _round_trip("nf4", x, entropy="none", double_quant=True)
    assert len(dq_payload) * 8 / x.size < 4.2
    assert error_stats(x, dq_decoded).relative_mse < 1.1 * error_stats(x, decoded).relative_mse


def test_ternary_is_bitnet_absmean_and_handles_padding():
    x = np.random.default_rng(4).standard_normal((3, 37)).astype(np.float32)  # 111 trits: 23 bytes, padded
    payload, meta, decoded = _round_trip("ternary", x, granularity="tensor", entropy="none")
    gamma = np.abs(x).mean()
    expected = np.clip(np.floor(x / gamma + 0.5), -1, 1) * np.float32(gamma)
    assert np.allclose(decoded, expected, rtol=1e-6)
    assert meta["codes"] == "trits" and len(payload) == 4 + 23
    fit = _round_trip("ternary", x, granularity="tensor", scale="fit")[2]
    assert error_stats(x, fit).sum_squared_error < error_stats(x, decoded).sum_squared_error


# -- inputs the strategies refuse or must keep ----------------------------------------
@pytest.mark.parametrize("strategy_id", LOSSY)
def test_nonfinite_is_refused_by_default_and_stored_exactly_when_allowed(strategy_id):
    x = np.random.default_rng(5).standard_normal((8, 64)).astype(np.float32)
    x[2, 3], x[5, 60], x[7, 0] = np.nan, np.inf, -np.inf
    with pytest.raises(BadInputError, match="allow_nonfinite=true"):
        _round_trip(strategy_id, x)
    _, meta, decoded = _round_trip(strategy_id, x, allow_nonfinite=True)
    assert meta["exact"] == 3
    assert np.isnan(decoded[2, 3]) and decoded[5, 60] == np.inf and decoded[7, 0] == -np.inf
    finite = np.isfinite(x)
    assert np.isfinite(decoded[finite]).all()


@pytest.mark.parametrize("strategy_id", LOSSY)
@pytest.mark.parametrize("dtype", [np.int32, np.uint8, np.bool_])
def test_integer_and_bool_tensors_are_refused(strategy_id, dtype):
    with pytest.raises(UnsupportedDtypeError, match="does not accept dtype"):
        get(strategy_id).encode(np.zeros((4, 4), dtype=dtype), get(strategy_id).default_config())


@pytest.mark.parametrize("strategy_id", LOSSY)
@pytest.mark.parametrize("np_dtype,name", [(np.float16, "F16"), (ml_dtypes.bfloat16, "BF16"), (np.float64, "F64")])
def test_decode_returns_the_original_dtype(strategy_id, np_dtype, name):
    x = (np.random.default_rng(6).standard_normal((10, 48)) * 0.02).astype(np_dtype)
    _, _, decoded = _round_trip(strategy_id, x, name)
    assert decoded.dtype == np.dtype(np_dtype) and decoded.shape == x.shape


@pytest.mark.parametrize("options", [{"bits": 1}, {"bits": 9}, {"group_size": 0}, {"step": -1.0},
                                     {"step": 0.2, "clip": "mse"}, {"clip": "median"}])
def test_bad_quant_options_are_refused(options):
    with pytest.raises(BadInputError):
        get("quant").config_from_dict(options)


# -- threads and determinism ------------------------------------------------------------
@pytest.mark.parametrize("strategy_id,options", [("quant", {}), ("quant", {"bits": 8, "step": 0.1}),
                                                 ("quant", {"clip": "mse", "symmetric": False}),
                                                 ("nf4", {"double_quant": True}), ("ternary", {})])
def test_codes_are_identical_across_threads(strategy_id, options):
    strategy = get(strategy_id)
    config = strategy.config_from_dict(options)
    chunk = np.random.default_rng(8).standard_normal((512, 384)).astype(np.float32)
    reference = strategy.encode(chunk, config)
    results: list = [None] * 4

    def work(i: int) -> None:
        results[i] = strategy.encode(chunk, config)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for payload, meta in results:
        assert payload == reference[0] and meta == reference[1]


# -- hostile payloads ------------------------------------------------------------------------
@pytest.mark.parametrize("strategy_id", LOSSY)
def test_truncated_or_padded_payloads_raise_value_error(strategy_id):
    x = np.random.default_rng(9).standard_normal((16, 64)).astype(np.float32)
    strategy = get(strategy_id)
    payload, meta = strategy.encode(x, strategy.default_config())
    for bad in (payload[:-1], payload[: len(payload) // 2], payload + b"\x00", b""):
        with pytest.raises(ValueError):
            strategy.decode(bad, meta, x.shape, "F32")


@pytest.mark.parametrize("strategy_id,key,value", [("quant", "bits", 99), ("quant", "codes", "gzip"),
                                                   ("quant", "exact", -1), ("nf4", "block_size", "64"),
                                                   ("ternary", "scale_dtype", "f8")])
def test_bad_meta_raises_value_error(strategy_id, key, value):
    x = np.random.default_rng(10).standard_normal((4, 64)).astype(np.float32)
    strategy = get(strategy_id)
    payload, meta = strategy.encode(x, strategy.default_config())
    with pytest.raises(ValueError):
        strategy.decode(payload, {**meta, key: value}, x.shape, "F32")


# -- golden payloads: codes bit-identical to a fresh encode, error within bounds -------------
def _quant_goldens():
    for meta_path in sorted(GOLDEN.glob("*/*.json")):
        if meta_path.parent.name in LOSSY:
            yield pytest.param(meta_path, id=f"{meta_path.parent.name}/{meta_path.stem}")


@pytest.mark.parametrize("meta_path", list(_quant_goldens()))
def test_golden_payload_matches_a_fresh_encode(meta_path):
    from golden.make_strategy_golden import golden_input

    case = json.loads(meta_path.read_text())
    strategy = get(meta_path.parent.name)
    payload = meta_path.with_suffix(".bin").read_bytes()
    original = golden_input(case)
    fresh_payload, fresh_meta = strategy.encode(original, strategy.config_from_dict(case["config"]))
    assert fresh_payload == payload and fresh_meta == case["meta"]
    decoded = strategy.decode(memoryview(payload), case["meta"], tuple(case["shape"]), case["dtype"])
    assert hashlib.sha256(np.ascontiguousarray(decoded).tobytes()).hexdigest() == case["decoded_sha256"]
    limit = 0.5 if strategy.id == "ternary" else 0.05
    assert error_stats(original, decoded).relative_mse < limit


@pytest.mark.real_model
def test_step_mode_on_a_real_minilm_weight_beats_half_of_q4_0_error(minilm_path):
    from safetensors.numpy import load_file

    weight = load_file(str(minilm_path))["encoder.layer.0.intermediate.dense.weight"]
    payload, meta, decoded = _round_trip("quant", weight, bits=8, step=0.2, granularity="tensor")
    bits_per_weight = (len(payload) + len(json.dumps(meta))) * 8 / weight.size
    assert bits_per_weight < 4.5
    assert error_stats(weight, decoded).relative_mse < 0.5 * 0.0077  # Q4_0 measures 0.0077 on this model

"""float-split: bit-exact round trips over dtypes, shapes and special values; fallback; hostile payloads."""

from __future__ import annotations

import subprocess
import sys

import ml_dtypes
import numpy as np
import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes

from bie_cli import dtypes
from bie_cli.codecs import float_planes
from bie_cli.strategies import get

STRATEGY = get("float-split")
FLOAT_DTYPES = ["F32", "F16", "BF16", "F64", "F8_E4M3", "F8_E5M2", "C64", "C128"]
_UNSIGNED = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}


def _round_trip(chunk: np.ndarray, dtype_name: str, **config) -> tuple[bytes, dict]:
    payload, meta = STRATEGY.encode(chunk, STRATEGY.config_from_dict(config))
    decoded = STRATEGY.decode(memoryview(payload), meta, chunk.shape, dtype_name)
    assert decoded.dtype == dtypes.get(dtype_name).numpy and decoded.shape == chunk.shape
    assert decoded.tobytes() == np.ascontiguousarray(chunk).tobytes()
    return payload, meta


def _weights_with_specials(draw, dtype_name: str, shape) -> np.ndarray:
    """Weight-like values (so the coded path is taken) with arbitrary bit patterns mixed in."""
    np_dtype = dtypes.get(dtype_name).numpy
    count = int(np.prod(shape))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    values = (rng.standard_normal(count) * draw(st.sampled_from([1e-3, 0.05, 1.0, 300.0])))
    if dtype_name.startswith("C"):
        values = values + 1j * rng.standard_normal(count)
    chunk = values.astype(np_dtype)
    bits = chunk.view(_UNSIGNED[chunk.itemsize] if chunk.itemsize <= 8 else np.uint64).copy()
    # overwrite a drawn fraction with raw bit patterns: NaN payloads, infinities, subnormals, -0.0
    mask = rng.random(bits.size) < draw(st.sampled_from([0.0, 0.01, 0.3, 1.0]))
    bits[mask] = rng.integers(0, np.iinfo(bits.dtype).max, int(mask.sum()), dtype=bits.dtype, endpoint=True)
    return bits.view(np_dtype).reshape(shape)


@settings(max_examples=120, deadline=None)
@given(st.sampled_from(FLOAT_DTYPES), array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=40), st.data())
def test_round_trip_is_bit_exact(dtype_name, shape, data):
    chunk = _weights_with_specials(data.draw, dtype_name, shape)
    low_bits = data.draw(st.sampled_from([None, 0, 3, 4, 7]))  # clamped per element size
    _round_trip(chunk, dtype_name, low_bits=low_bits)


@pytest.mark.parametrize("dtype_name", ["F32", "F16", "BF16", "F64"])
def test_every_special_value_survives(dtype_name):
    np_dtype = dtypes.get(dtype_name).numpy
    unsigned = _UNSIGNED[np_dtype.itemsize]
    rng = np.random.default_rng(0)
    chunk = (rng.standard_normal(4000) * 0.05).astype(np_dtype)
    bits = chunk.view(unsigned)
    info_bits = 8 * np_dtype.itemsize
    sign = unsigned(1) << unsigned(info_bits - 1)
    specials = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0], dtype=np_dtype).view(unsigned)
    bits[:5] = specials
    bits[5] = specials[0] | unsigned(1)  # NaN with a payload
    bits[6] = specials[0] | sign | unsigned(3)  # negative NaN with a payload
    bits[7] = unsigned(1)  # smallest subnormal
    bits[8] = sign | unsigned(1)  # negative subnormal
    _payload, meta = _round_trip(chunk, dtype_name)
    assert meta == {}  # the coded path, not the raw fallback


@pytest.mark.parametrize("dtype_name", ["F32", "BF16", "F16", "F64"])
def test_weights_compress_better_than_zstd(dtype_name):
    import zstandard

    rng = np.random.default_rng(1)
    chunk = (rng.standard_normal((256, 256)) * 0.05).astype(dtypes.get(dtype_name).numpy)
    payload, _meta = _round_trip(chunk, dtype_name)
    zstd_size = len(zstandard.ZstdCompressor(level=19).compress(chunk.tobytes()))
    assert len(payload) < 0.97 * zstd_size


def test_residual_width_follows_the_chunk_size():
    """Small chunks cannot pay for a 4096-symbol table; large ones gain from it."""
    rng = np.random.default_rng(2)
    large = (rng.standard_normal(200_000) * 0.05).astype(ml_dtypes.bfloat16)
    small = large[:300]
    assert STRATEGY.encode(large, STRATEGY.default_config())[0][1] < STRATEGY.encode(small, STRATEGY.default_config())[0][1]


@pytest.mark.parametrize("dtype_name", ["F32", "BF16", "F8_E5M2"])
def test_incompressible_chunks_fall_back_to_raw(dtype_name):
    np_dtype = dtypes.get(dtype_name).numpy
    rng = np.random.default_rng(3)
    chunk = rng.integers(0, 256, 4000 * np_dtype.itemsize, dtype=np.uint8).view(np_dtype)
    payload, meta = _round_trip(chunk, dtype_name)
    assert meta == {"stored": "raw"} and len(payload) == chunk.nbytes


def test_real_minilm_tensor_beats_zstd(minilm_path):
    import zstandard
    from safetensors.numpy import load_file

    weight = load_file(str(minilm_path))["encoder.layer.0.attention.self.query.weight"]
    payload, _ = _round_trip(weight, "F32")
    assert weight.nbytes / len(payload) > 1.19
    assert len(payload) < len(zstandard.ZstdCompressor(level=19).compress(weight.tobytes()))


@pytest.mark.parametrize("itemsize", [1, 2, 4, 8])
@pytest.mark.parametrize("count", [0, 1, 8, 37])
def test_numba_split_matches_numpy_reference(itemsize, count):
    data = np.random.default_rng(itemsize).integers(0, 256, count * itemsize, dtype=np.uint8)
    for low_bits in float_planes.low_bits_range(itemsize):
        parts = float_planes.split(data, itemsize, low_bits)
        for got, want in zip(parts, float_planes.split_reference(data, itemsize, low_bits), strict=False):
            assert np.array_equal(got, want)
        assert np.array_equal(float_planes.join(*parts, itemsize, low_bits), data)
        assert np.array_equal(float_planes.join_reference(*parts, itemsize, low_bits), data)


def test_sign_is_not_part_of_the_symbol():
    chunk = np.array([1.5, -1.5, 0.25, -0.25], dtype=np.float32)
    symbols, _residual, _ = float_planes.split(chunk.view(np.uint8), 4, 4)
    assert symbols[0] == symbols[1] and symbols[2] == symbols[3]


def _encoded(dtype_name="F32", shape=(64, 48)):
    chunk = (np.random.default_rng(4).standard_normal(shape) * 0.05).astype(dtypes.get(dtype_name).numpy)
    payload, meta = STRATEGY.encode(chunk, STRATEGY.default_config())
    assert meta == {}
    return chunk, payload


@pytest.mark.parametrize("dtype_name", ["F32", "BF16", "F8_E4M3"])
def test_every_truncation_is_refused(dtype_name):
    chunk, payload = _encoded(dtype_name)
    for cut in range(0, len(payload), max(1, len(payload) // 300)):
        with pytest.raises(ValueError):
            STRATEGY.decode(payload[:cut], {}, chunk.shape, dtype_name)
    with pytest.raises(ValueError, match="trailing"):
        STRATEGY.decode(payload + b"\x00", {}, chunk.shape, dtype_name)


def test_flipped_bytes_raise_or_decode_to_the_right_shape():
    chunk, payload = _encoded("BF16")
    for position in range(0, len(payload), 3):
        corrupt = bytearray(payload)
        corrupt[position] ^= 0xFF
        try:
            decoded = STRATEGY.decode(bytes(corrupt), {}, chunk.shape, "BF16")
        except ValueError:
            continue
        assert decoded.shape == chunk.shape


@pytest.mark.parametrize("header, message", [
    (bytes([2, 4, 4]), "version"),
    (bytes([1, 13, 4]), "low_bits"),
    (bytes([1, 4, 3]), "streams"),
])
def test_bad_headers_are_named(header, message):
    chunk, payload = _encoded("F32")
    with pytest.raises(ValueError, match=message):
        STRATEGY.decode(header + payload[3:], {}, chunk.shape, "F32")


def test_payload_for_another_shape_is_refused():
    _chunk, payload = _encoded("F32")
    with pytest.raises(ValueError):
        STRATEGY.decode(payload, {}, (64, 47), "F32")


def test_unknown_meta_is_refused():
    chunk, payload = _encoded("F32")
    with pytest.raises(ValueError, match="unknown keys"):
        STRATEGY.decode(payload, {"future": 1}, chunk.shape, "F32")


@pytest.mark.parametrize("values", [{"low_bits": 8}, {"zstd_level": 30}])
def test_invalid_config_is_refused(values):
    from bie_cli.errors import BadInputError

    with pytest.raises(BadInputError):
        STRATEGY.config_from_dict(values)


def test_importing_the_lossless_strategies_does_not_import_numba():
    code = (
        "import sys; import bie_cli.strategies.float_split, bie_cli.strategies.rle, bie_cli.strategies.delta;"
        "import bie_cli.codecs.rans, bie_cli.codecs.float_planes, bie_cli.codecs.rle;"
        "assert 'numba' not in sys.modules, 'numba imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def _stepwise_only(monkeypatch):
    from bie_cli.strategies import float_split

    monkeypatch.setattr(float_split, "_encode_compiled", lambda *args: None)
    monkeypatch.setattr(float_split, "_decode_compiled", lambda *args: None)


@pytest.mark.parametrize("dtype_name", ["F32", "BF16", "F16", "F64", "C64"])
def test_compiled_chunk_path_matches_the_stepwise_one(dtype_name, monkeypatch):
    """One kernel call per chunk (encode and decode) gives the stepwise path's bytes, and a
    damaged payload the same error, on weights, skewed and repetitive planes, every low_bits."""
    from bie_cli.strategies import float_split

    rng = np.random.default_rng(11)
    np_dtype = dtypes.get(dtype_name).numpy
    weights = (rng.standard_normal(6001) * 0.05).astype(np_dtype)  # odd: the joins' last nibble
    chunks = [weights, (weights * 64).round().astype(np_dtype), np.tile(weights[:37], 100), weights[:8]]
    configs = [STRATEGY.default_config()] + [STRATEGY.config_from_dict({"low_bits": b}) for b in (3, 5, 7)]
    cases = [(chunk, config) for chunk in chunks for config in configs]
    compiled = [STRATEGY.encode(chunk, config) for chunk, config in cases]
    damaged = []
    for payload, meta in compiled[:8]:
        for _ in range(6):
            broken = bytearray(payload)
            broken[rng.integers(3, len(broken))] ^= 1 << int(rng.integers(0, 8))
            damaged.append((bytes(broken[: len(broken) - int(rng.integers(0, 2))]), meta))

    def outcome(payload, meta, shape):
        try:
            return STRATEGY.decode(memoryview(payload), meta, shape, dtype_name).tobytes()
        except (ValueError, zstandard.ZstdError) as exc:  # a damaged zstd plane: zstd's own error
            return f"{type(exc).__name__}: {exc}"

    decoded = [outcome(p, m, weights.shape) for p, m in damaged]
    calls = []
    monkeypatch.setattr(float_split, "_decode_compiled",
                        lambda *args, real=float_split._decode_compiled: calls.append(1) or real(*args))
    for (chunk, _), (payload, meta) in zip(cases, compiled, strict=True):
        if not meta:
            assert STRATEGY.decode(memoryview(payload), meta, chunk.shape, dtype_name).tobytes() == chunk.tobytes()
    assert calls  # the compiled decoder was used
    _stepwise_only(monkeypatch)
    assert [STRATEGY.encode(chunk, config) for chunk, config in cases] == compiled
    assert [outcome(p, m, weights.shape) for p, m in damaged] == decoded


def test_encode_parts_join_to_the_payload():
    chunk = (np.random.default_rng(12).standard_normal(5000) * 0.05).astype(np.float32)
    parts, meta = STRATEGY.encode_parts(chunk, STRATEGY.default_config())
    assert len(parts) > 1 and sum(len(part) for part in parts) == len(b"".join(parts))
    assert (b"".join(parts), meta) == STRATEGY.encode(chunk, STRATEGY.default_config())

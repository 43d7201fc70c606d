"""rle and delta: bit-exact round trips for every dtype, bounded growth, hostile payloads."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes

from bie_cli import dtypes
from bie_cli.codecs import rle as rle_codec
from bie_cli.strategies import get

RLE = get("rle")
DELTA = get("delta")
ALL_DTYPES = sorted(dtypes.ALL_NAMES)
INTEGER_DTYPES = ["U8", "I8", "U16", "I16", "U32", "I32", "U64", "I64"]


def _runny(draw, dtype_name: str, shape) -> np.ndarray:
    """Arbitrary bit patterns drawn from a small pool, in runs of random lengths."""
    np_dtype = dtypes.get(dtype_name).numpy
    count = int(np.prod(shape))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    pool = rng.integers(0, 256, (draw(st.integers(1, 5)), np_dtype.itemsize), dtype=np.uint8)
    lengths = rng.geometric(1 / draw(st.sampled_from([1, 3, 50])), count + 1)
    picks = np.repeat(rng.integers(0, len(pool), lengths.size), lengths)[:count]
    data = pool[picks].reshape(-1)
    if dtype_name == "BOOL":
        data = data & 1
    return data.view(np_dtype).reshape(shape)


def _round_trip(strategy, chunk, dtype_name, **config):
    payload, meta = strategy.encode(chunk, strategy.config_from_dict(config))
    decoded = strategy.decode(memoryview(payload), meta, chunk.shape, dtype_name)
    assert decoded.dtype == dtypes.get(dtype_name).numpy and decoded.shape == chunk.shape
    assert decoded.tobytes() == np.ascontiguousarray(chunk).tobytes()
    return payload, meta


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(ALL_DTYPES), array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=30), st.data())
def test_rle_round_trip_is_bit_exact(dtype_name, shape, data):
    chunk = _runny(data.draw, dtype_name, shape)
    _round_trip(RLE, chunk, dtype_name, min_run=data.draw(st.sampled_from([0, 2, 5])))


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(INTEGER_DTYPES), array_shapes(min_dims=0, max_dims=2, min_side=0, max_side=40),
       st.sampled_from(["zstd", "rle", "raw"]), st.data())
def test_delta_round_trip_is_bit_exact_including_overflow(dtype_name, shape, inner, data):
    np_dtype = dtypes.get(dtype_name).numpy
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    # full-range values make the deltas wrap around
    chunk = rng.integers(0, 256, int(np.prod(shape)) * np_dtype.itemsize, dtype=np.uint8).view(np_dtype).reshape(shape)
    _round_trip(DELTA, chunk, dtype_name, inner=inner)


def test_constant_and_zero_tensors_shrink_to_a_few_bytes():
    payload, meta = _round_trip(RLE, np.zeros((512, 512), dtype=np.float32), "F32")
    assert meta == {} and len(payload) < 16
    payload, _ = _round_trip(RLE, np.full(100_000, True), "BOOL")
    assert len(payload) < 16


def test_attention_mask_like_runs_compress():
    mask = np.tril(np.ones((256, 256), dtype=np.bool_))
    payload, meta = _round_trip(RLE, mask, "BOOL")
    assert meta == {} and len(payload) < mask.nbytes / 20


@pytest.mark.parametrize("dtype_name", ["U8", "F32", "C128"])
def test_incompressible_data_grows_by_at_most_a_few_bytes(dtype_name):
    np_dtype = dtypes.get(dtype_name).numpy
    data = np.random.default_rng(0).integers(0, 256, 5000 * np_dtype.itemsize, dtype=np.uint8)
    # the codec alone: one literal token, at most a 10-byte varint
    assert len(rle_codec.encode(data, np_dtype.itemsize)) <= data.size + 10
    # the strategy: raw fallback, not a byte more
    payload, meta = _round_trip(RLE, data.view(np_dtype), dtype_name)
    assert meta == {"stored": "raw"} and len(payload) == data.size


def test_position_ids_become_one_run_with_delta():
    position_ids = np.arange(512, dtype=np.int64).reshape(1, 512)
    payload, meta = _round_trip(DELTA, position_ids, "I64", inner="rle")
    assert meta == {"inner": "rle", "inner_meta": {}} and len(payload) < 24
    zstd_payload, _ = _round_trip(DELTA, position_ids, "I64", inner="zstd")
    assert len(zstd_payload) < 40


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=120), st.integers(0, 60), st.sampled_from([1, 2, 4, 8, 16]))
def test_rle_decoder_refuses_garbage_without_overrunning(garbage, count, itemsize):
    try:
        out = rle_codec.decode(garbage, count, itemsize)
    except ValueError:
        return
    assert out.size == count * itemsize


def test_rle_truncations_and_trailing_bytes_raise():
    chunk = np.repeat(np.arange(40, dtype=np.float32), 7)
    payload, meta = RLE.encode(chunk, RLE.default_config())
    assert meta == {}
    for cut in range(len(payload)):
        with pytest.raises(ValueError):
            RLE.decode(payload[:cut], meta, chunk.shape, "F32")
    with pytest.raises(ValueError):
        RLE.decode(payload + b"\x00", meta, chunk.shape, "F32")


@pytest.mark.parametrize("meta", [{}, {"inner": "gzip", "inner_meta": {}}, {"inner": "rle"}])
def test_delta_refuses_meta_without_a_valid_inner(meta):
    with pytest.raises(ValueError, match="inner"):
        DELTA.decode(b"", meta, (0,), "I64")


def test_delta_refuses_float_dtypes():
    from bie_cli.errors import UnsupportedDtypeError

    with pytest.raises(UnsupportedDtypeError):
        DELTA.check_dtype("F32")

"""``sdr`` and its codecs (positions, intcode, byte planes), and the 95% goal measured from stored bytes."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from bie_cli import dtypes
from bie_cli.codecs import byteplanes, intcode, positions
from bie_cli.errors import BadInputError
from bie_cli.strategies import get

SDR = get("sdr")
FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _sparse(shape, density, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    values = rng.standard_normal(shape).astype(dtype)
    values[rng.random(shape) >= density] = 0
    return values


def _round_trip(strategy, chunk, **options):
    config = strategy.config_from_dict(options)
    payload, meta = strategy.encode(chunk, config)
    name = dtypes.from_numpy(chunk.dtype).name
    return strategy.decode(memoryview(payload), meta, chunk.shape, name), payload, meta


# -- codecs -------------------------------------------------------------------------------
@FAST
@given(st.lists(st.integers(0, (1 << 62) - 1), max_size=200), st.integers(0, 60))
def test_intcode_round_trips_any_values(values, small):
    array = np.array(values + [small] * small, dtype=np.int64)
    data = intcode.encode_uints(array)
    assert np.array_equal(intcode.decode_uints(data, array.size), array)


@FAST
@given(st.integers(1, 5000), st.floats(0.0, 1.0), st.integers(0, 2**32 - 1))
def test_positions_round_trip(n, density, seed):
    rng = np.random.default_rng(seed)
    chosen = np.flatnonzero(rng.random(n) < density)
    data = positions.encode(chosen, n)
    assert np.array_equal(positions.decode(data, n), chosen)


def test_positions_choose_the_smaller_representation():
    rng = np.random.default_rng(0)
    n = 1 << 16
    very_sparse = np.sort(rng.choice(n, 30, replace=False))
    assert positions.kind_of(positions.encode(very_sparse, n)) == "gaps"
    half = np.flatnonzero(rng.random(n) < 0.5)
    # a random half set costs a bit per position whichever way: the raw bitmap is smallest
    assert positions.kind_of(positions.encode(half, n)) == "bitmap"
    assert len(positions.encode(half, n)) <= n // 8 + 4
    assert positions.kind_of(positions.encode(np.arange(n), n)) == "all"
    assert positions.kind_of(positions.encode(np.zeros(0, np.int64), n)) == "none"


@pytest.mark.parametrize("density", [0.5, 0.1, 0.05, 0.01])
def test_positions_are_within_two_percent_of_the_entropy_bound(density):
    rng = np.random.default_rng(1)
    n = 1 << 20
    chosen = np.flatnonzero(rng.random(n) < density)
    p = chosen.size / n
    bound_bytes = -(p * math.log2(p) + (1 - p) * math.log2(1 - p)) * n / 8
    assert len(positions.encode(chosen, n)) <= 1.02 * bound_bytes + 64


def test_byteplanes_round_trip_and_skewed_top_plane_shrinks():
    rng = np.random.default_rng(2)
    values = (rng.standard_normal(10000) * 0.02).astype(np.float32)
    data = byteplanes.encode(values.view(np.uint8), 4)
    assert np.array_equal(byteplanes.decode(data, values.size, 4).view(np.float32), values)
    assert len(data) < 0.9 * values.nbytes  # the sign/exponent plane codes to a couple of bits


@pytest.mark.parametrize("bad", [b"", b"\x04", b"\x04\x05", b"\x02\x01\x00", b"\x04\x02\x00\x00\x05"])
def test_positions_reject_garbage(bad):
    with pytest.raises(ValueError):
        positions.decode(bad, 16)


def test_positions_reject_count_above_range_and_positions_past_the_end():
    with pytest.raises(ValueError, match="claims"):
        positions.decode(positions.encode(np.arange(10), 10)[:1] + b"\x0b", 10)
    data = positions.encode(np.array([3, 9]), 10)
    with pytest.raises(ValueError):
        positions.decode(data, 8)


# -- sdr -----------------------------------------------------------------------------------
@FAST
@given(
    hnp.arrays(
        st.sampled_from([np.float32, np.float16, np.float64, np.int8, np.int32, np.uint16, np.bool_]),
        hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=12),
    ),
    st.floats(0.0, 1.0),
)
def test_sdr_exact_is_bit_exact(array, zero_fraction):
    array = np.array(array)
    flat = array.reshape(-1)
    flat[np.random.default_rng(0).random(flat.size) < zero_fraction] = 0
    decoded, _, _ = _round_trip(SDR, array)
    assert decoded.dtype == array.dtype and decoded.shape == array.shape
    assert decoded.tobytes() == array.tobytes()


def test_sdr_keeps_negative_zero_and_nan_payloads():
    raw = np.array([0, 0x80000000, 0x7FC00001, 0, 0x3F800000, 0], dtype=np.uint32)
    chunk = raw.view(np.float32).reshape(2, 3)
    decoded, _, meta = _round_trip(SDR, chunk)
    assert decoded.view(np.uint32).tolist() == chunk.view(np.uint32).tolist()
    assert meta["count"] == 3


def test_sdr_density_keeps_exactly_the_largest_magnitudes():
    chunk = _sparse((64, 100), 1.0, seed=3)
    decoded, _, meta = _round_trip(SDR, chunk, density=0.1)
    kept = decoded != 0
    assert kept.sum() == meta["count"] == 640
    assert np.array_equal(decoded[kept], chunk[kept])  # kept values exact
    assert np.abs(chunk[~kept]).max() <= np.abs(chunk[kept]).min()
    assert SDR.is_lossless(SDR.config_from_dict({})) and not SDR.is_lossless(SDR.config_from_dict({"density": 0.1}))


@pytest.mark.parametrize("mode,max_rel_error", [("fp16", 1e-3), ("int8", 1 / 254 + 1e-6), ("int4", 1 / 14 + 1e-6)])
def test_sdr_quantized_values_error_is_bounded_by_the_row_grid(mode, max_rel_error):
    chunk = _sparse((50, 200), 0.1, seed=4)
    decoded, _, _ = _round_trip(SDR, chunk, values=mode)
    row_peak = np.abs(chunk).max(axis=1, keepdims=True)
    assert ((decoded != 0) <= (chunk != 0)).all()  # positions are exact
    assert (np.abs(decoded - chunk) <= max_rel_error * row_peak * 1.001).all()
    assert not SDR.is_lossless(SDR.config_from_dict({"values": mode}))


def test_sdr_refuses_quantizing_integers_and_nan():
    with pytest.raises(BadInputError, match="values=exact"):
        SDR.encode(np.arange(10, dtype=np.int32), SDR.config_from_dict({"values": "int8"}))
    with pytest.raises(BadInputError, match="NaN"):
        SDR.encode(np.array([1.0, np.nan], np.float32), SDR.config_from_dict({"values": "int8"}))
    with pytest.raises(BadInputError):
        SDR.config_from_dict({"density": "0"})


def test_sdr_positions_section_is_near_the_bound_at_95_percent():
    chunk = _sparse((512, 1024), 0.05, seed=5)
    _, _payload, meta = _round_trip(SDR, chunk)
    p = np.count_nonzero(chunk) / chunk.size
    h = -(p * math.log2(p) + (1 - p) * math.log2(1 - p))
    assert meta["positions"] * 8 <= 1.02 * h * chunk.size


# -- the goal, from the bytes of real .cai files ------------------------------------------
@pytest.fixture(scope="module")
def pruned_95(tmp_path_factory):
    from safetensors.numpy import save_file

    rng = np.random.default_rng(95)
    w = rng.standard_normal((1024, 1024)).astype(np.float32)
    w[np.abs(w) <= np.quantile(np.abs(w), 0.95)] = 0
    path = tmp_path_factory.mktemp("goal") / "pruned.safetensors"
    save_file({"w": w}, str(path))
    return w, path


@pytest.mark.parametrize("spec,bound_kind,min_ratio", [
    ("sdr", "exact", 15.5), ("bie-blocked", "exact", 15.5), ("bie-binary", "sign", 85.0)])
def test_goal_95_percent_ratios_from_stored_bytes(pruned_95, tmp_path, spec, bound_kind, min_ratio):
    import bie_cli

    w, source = pruned_95
    target = tmp_path / "out.cai"
    stats = bie_cli.compress_model(source, target, strategy=spec)
    stored = target.stat().st_size
    assert stats.stored_bytes == stored
    n = w.size
    p = np.count_nonzero(w) / n
    bound_bits = -(p * math.log2(p) + (1 - p) * math.log2(1 - p)) * n + (32 if bound_kind == "exact" else 1) * p * n
    assert stored * 8 <= 1.10 * bound_bits, f"{spec}: {stored * 8 / n:.3f} bits/element"
    assert w.nbytes / stored >= min_ratio
    with bie_cli.open_container(target) as container:
        decoded = container["w"]
    if spec != "bie-binary":
        assert decoded.tobytes() == w.tobytes()  # lossless, bit-exact

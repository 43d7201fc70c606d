"""``bie-binary``, ``bie-bitplane`` (progressive reads through the container) and ``bie-blocked``."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import bie_cli
from bie_cli import dtypes
from bie_cli.errors import BadInputError, CorruptContainerError
from bie_cli.strategies import get
from bie_cli.strategies.bie_bitplane import bytes_for_bits, read_directory

BINARY, BITPLANE, BLOCKED = get("bie-binary"), get("bie-bitplane"), get("bie-blocked")
FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _sparse(shape, density, seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    values = (rng.standard_normal(shape) * scale).astype(np.float32)
    values[rng.random(shape) >= density] = 0
    return values


def _round_trip(strategy, chunk, **options):
    payload, meta = strategy.encode(chunk, strategy.config_from_dict(options))
    meta = json.loads(json.dumps(meta))
    name = dtypes.from_numpy(chunk.dtype).name
    return strategy.decode(memoryview(payload), meta, chunk.shape, name), payload, meta


# -- bie-binary ------------------------------------------------------------------------------
def test_binary_is_sign_times_row_mean_on_the_nonzeros():
    chunk = _sparse((40, 64), 0.1, seed=1)
    decoded, _, _ = _round_trip(BINARY, chunk)
    nonzero = chunk != 0
    assert np.array_equal(decoded != 0, nonzero)
    assert np.array_equal(np.sign(decoded), np.sign(chunk))
    for row, original in zip(decoded, chunk, strict=True):
        if original.any():
            mean = np.abs(original[original != 0]).mean()
            assert np.allclose(np.abs(row[row != 0]), mean, rtol=1e-3)  # f16 scale


def test_binary_dense_defaults_are_one_bit_sign_binarization():
    chunk = _sparse((32, 256), 1.0, seed=2)
    decoded, payload, _meta = _round_trip(BINARY, chunk)
    assert np.array_equal(np.sign(decoded), np.sign(chunk))
    assert len(payload) <= chunk.size / 8 + 2 * 32 + 16  # signs + f16 scales, positions free ("all")


def test_binary_threshold_and_density_select_the_significant_set():
    chunk = _sparse((20, 50), 1.0, seed=3)
    decoded, _, _ = _round_trip(BINARY, chunk, threshold=1.0)
    assert np.array_equal(decoded != 0, np.abs(chunk) > 1.0)
    decoded, _, meta = _round_trip(BINARY, chunk, density=0.2)
    assert meta["count"] == 200 == np.count_nonzero(decoded)
    assert np.abs(chunk[decoded == 0]).max() <= np.abs(chunk[decoded != 0]).min()
    with pytest.raises(BadInputError, match="not both"):
        BINARY.config_from_dict({"threshold": 0.5, "density": 0.5})
    with pytest.raises(BadInputError, match="NaN"):
        BINARY.encode(np.array([[1.0, np.inf]], np.float32), BINARY.default_config())


# -- bie-bitplane ------------------------------------------------------------------------------
@pytest.mark.parametrize("k", [2, 4, 8])
def test_bitplane_full_decode_error_is_half_a_step(k):
    chunk = _sparse((30, 80), 0.5, seed=4)
    decoded, _, _ = _round_trip(BITPLANE, chunk, bits=k)
    step = np.abs(chunk).max(axis=1, keepdims=True) / ((1 << (k - 1)) - 1)
    assert (np.abs(decoded - chunk) <= step * 0.5001 + 1e-7).all()


def test_bitplane_progressive_error_shrinks_with_every_plane_and_reads_fewer_bytes():
    chunk = _sparse((64, 256), 0.3, seed=5)
    payload, meta = BITPLANE.encode(chunk, BITPLANE.default_config())
    errors, sizes = [], []
    for m in range(2, 9):
        decoded = BITPLANE.decode_planes(payload, meta, chunk.shape, "F32", m)
        errors.append(float(((decoded - chunk) ** 2).sum()))
        sizes.append(bytes_for_bits(payload, m))
    assert all(a > b for a, b in itertools.pairwise(errors))
    assert all(a < b for a, b in itertools.pairwise(sizes)) and sizes[-1] == len(payload)
    full = BITPLANE.decode(payload, meta, chunk.shape, "F32")
    assert np.array_equal(full, BITPLANE.decode_planes(payload, meta, chunk.shape, "F32", 8))
    # pruned zeros stay zero at every m (dead zone), never become +midpoint
    assert (BITPLANE.decode_planes(payload, meta, chunk.shape, "F32", 3)[chunk == 0] == 0).all()


def test_bitplane_progressive_decode_touches_only_the_planes_it_needs():
    chunk = _sparse((16, 128), 0.5, seed=6)
    payload, meta = BITPLANE.encode(chunk, BITPLANE.default_config())
    expected = BITPLANE.decode_planes(payload, meta, chunk.shape, "F32", 4)
    damaged = bytearray(payload)
    used = bytes_for_bits(payload, 4)
    damaged[used:] = bytes(len(payload) - used)  # wipe every plane below the top 4
    assert np.array_equal(BITPLANE.decode_planes(bytes(damaged), meta, chunk.shape, "F32", 4), expected)
    with pytest.raises(ValueError, match="checksum"):
        BITPLANE.decode(bytes(damaged), meta, chunk.shape, "F32")


def test_bitplane_one_bit_is_sign_times_row_mean():
    chunk = _sparse((8, 32), 1.0, seed=7)
    decoded, _, _ = _round_trip(BITPLANE, chunk, bits=1)
    assert np.allclose(np.abs(decoded), np.abs(chunk).mean(axis=1, keepdims=True), rtol=1e-3)
    assert np.array_equal(decoded < 0, chunk < 0)


def test_bitplane_goal_8_bits_decode_at_4_from_half_the_bytes():
    rng = np.random.default_rng(8)
    w = rng.standard_normal((1024, 1024)).astype(np.float32)
    w[np.abs(w) <= np.quantile(np.abs(w), 0.95)] = 0
    payload, _meta = BITPLANE.encode(w, BITPLANE.default_config())
    assert bytes_for_bits(payload, 4) <= len(payload) / 2
    assert read_directory(payload).k == 8


@pytest.fixture()
def bitplane_container(tmp_path):
    from safetensors.numpy import save_file

    w = _sparse((300, 64), 0.2, seed=9, scale=0.02)
    bias = np.linspace(-1, 1, 64, dtype=np.float32)
    source = tmp_path / "m.safetensors"
    save_file({"w": w, "b": bias}, str(source))
    target = tmp_path / "m.cai"
    # small chunks: the progressive path must work chunk by chunk
    bie_cli.compress_model(source, target, strategy="bie-bitplane", rules=["b=zstd"], chunk_size=64 * 64 * 4)
    return w, bias, source, target


def _payload_offsets(target, name):
    from bie_cli.formats.cai.reader import ContainerReader

    with ContainerReader(target) as reader:
        entry = reader.entry(name)
        spans = []
        for number, ref in enumerate(entry.chunks):
            payload = reader.read_chunk(entry, number).payload
            start = ref.offset + ref.length - len(payload)
            spans.append((start, len(payload), bytes_for_bits(payload, 4)))
            del payload
    return spans


def test_container_reads_at_bits_touch_only_the_top_planes(bitplane_container):
    _w, bias, _, target = bitplane_container
    with bie_cli.open_container(target, bits=4) as container:
        expected = container["w"]
        assert np.array_equal(container["b"], bias)  # not progressive: decoded in full
    spans = _payload_offsets(target, "w")
    data = bytearray(target.read_bytes())
    for start, length, used in spans:
        data[start + used : start + length] = bytes(length - used)  # damage the low planes
    target.write_bytes(bytes(data))
    with bie_cli.open_container(target, bits=4) as container:
        assert np.array_equal(container["w"], expected)
        assert np.array_equal(container.read("w", 70, 130), expected[70:130])
    with bie_cli.open_container(target) as container, pytest.raises(CorruptContainerError, match="checksum"):
        container["w"]


def test_container_bits_damage_in_a_top_plane_is_caught(bitplane_container):
    _, _, _, target = bitplane_container
    start, _length, used = _payload_offsets(target, "w")[0]
    data = bytearray(target.read_bytes())
    data[start + used - 1] ^= 0xFF
    target.write_bytes(bytes(data))
    with bie_cli.open_container(target, bits=4) as container, pytest.raises(CorruptContainerError, match="checksum"):
        container["w"]


def test_decompress_bits_from_the_api_and_the_cli(bitplane_container, tmp_path):
    from safetensors.numpy import load_file

    from bie_cli.cli.app import main

    w, bias, _, target = bitplane_container
    with bie_cli.open_container(target, bits=3) as container:
        at_three = container["w"]
    out = tmp_path / "three.safetensors"
    assert main(["decompress", str(target), "-o", str(out), "--bits", "3", "-q"]) == 0
    loaded = load_file(str(out))
    assert np.array_equal(loaded["w"], at_three) and np.array_equal(loaded["b"], bias)
    full = tmp_path / "full.safetensors"
    bie_cli.decompress_model(target, full)
    assert ((load_file(str(full))["w"] - w) ** 2).sum() < ((at_three - w) ** 2).sum()
    assert main(["decompress", str(target), "-o", str(tmp_path / "x.safetensors"), "--bits", "0", "-q"]) == 2
    with pytest.raises(BadInputError, match="positive"):
        bie_cli.open_container(target, bits=0)


# -- bie-blocked -------------------------------------------------------------------------------
@FAST
@given(
    hnp.arrays(st.sampled_from([np.float32, np.float16, np.int16, np.uint8]),
               hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=40)),
    st.floats(0.0, 1.0),
    st.sampled_from([2, 3, 16, 17, 64]),
)
def test_blocked_exact_is_bit_exact(array, zero_fraction, tile):
    array = np.array(array)
    flat = array.reshape(-1)
    flat[np.random.default_rng(1).random(flat.size) < zero_fraction] = 0
    decoded, _, _ = _round_trip(BLOCKED, array, tile=tile)
    assert decoded.dtype == array.dtype and decoded.shape == array.shape
    assert decoded.tobytes() == array.tobytes()


def test_blocked_chooses_mask_for_dense_tiles_and_indices_for_sparse_ones():
    chunk = np.zeros((32, 32), np.float32)
    chunk[:16, :16] = 1.0  # one full tile: a mask (32 bytes) beats 256 indices
    chunk[20, 30] = 2.0  # one lone element: one index beats a mask
    decoded, _payload, meta = _round_trip(BLOCKED, chunk, entropy="none")
    assert decoded.tobytes() == chunk.tobytes()
    counts_len, _modes_len, indices_len, masks_len = meta["sections"][1:]
    assert (counts_len, indices_len, masks_len) == (2, 1, 32)
    decoded, _, meta = _round_trip(BLOCKED, chunk, tile=32, entropy="none")  # 1024-element tiles: 16-bit indices
    assert decoded.tobytes() == chunk.tobytes() and meta["sections"][1] == 2


def test_blocked_quantized_and_pruned_are_lossy_and_say_so():
    chunk = _sparse((64, 64), 0.3, seed=10)
    decoded, _, _ = _round_trip(BLOCKED, chunk, values="int8")
    assert ((decoded != 0) <= (chunk != 0)).all()  # tiny values may round to code 0, nothing appears
    assert np.abs(decoded - chunk).max() <= np.abs(chunk).max() / 254 * 1.001
    assert not BLOCKED.is_lossless(BLOCKED.config_from_dict({"values": "int8"}))
    assert not BLOCKED.is_lossless(BLOCKED.config_from_dict({"density": 0.5}))
    assert BLOCKED.is_lossless(BLOCKED.default_config())


# -- every strategy: hostile payloads raise ValueError, never crash -----------------------------
@pytest.mark.parametrize("strategy_id,options", [
    ("sdr", {}), ("sdr", {"values": "int4"}), ("bie-binary", {}), ("bie-bitplane", {"bits": 5}),
    ("bie-blocked", {}), ("bie-blocked", {"entropy": "none"})])
def test_corrupt_payloads_raise_value_error(strategy_id, options):
    strategy = get(strategy_id)
    chunk = _sparse((24, 40), 0.2, seed=11)
    chunk[0, :40] = np.linspace(-1, 1, 40)  # one dense row: mask tiles and bitmaps too
    payload, meta = strategy.encode(chunk, strategy.config_from_dict(options))
    rng = np.random.default_rng(12)
    cases = [payload[:cut] for cut in range(0, len(payload), max(1, len(payload) // 40))]
    for _ in range(150):
        damaged = bytearray(payload)
        for position in rng.integers(0, len(payload), 3):
            damaged[position] = rng.integers(0, 256)
        cases.append(bytes(damaged))
    for case in cases:
        try:
            out = strategy.decode(memoryview(case), meta, chunk.shape, "F32")
        except ValueError:
            continue
        assert out.shape == chunk.shape and out.dtype == np.float32
    for key in set(meta) - {"planes", "section_bytes"}:  # a lying meta field (bitplane's two are informational)
        bad = dict(meta, **{key: 10**12 if not isinstance(meta[key], str) else "zzz"})
        with pytest.raises((ValueError, BadInputError)):
            strategy.decode(memoryview(payload), bad, chunk.shape, "F32")


def test_pipeline_records_per_config_losslessness(tmp_path):
    from safetensors.numpy import save_file

    source = tmp_path / "m.safetensors"
    save_file({"w": _sparse((64, 64), 0.1, seed=13)}, str(source))
    exact = bie_cli.compress_model(source, tmp_path / "a.cai", strategy="sdr")
    pruned = bie_cli.compress_model(source, tmp_path / "b.cai", strategy="sdr:density=0.05")
    assert exact.tensors[0].lossless and exact.tensors[0].error is None
    assert not pruned.tensors[0].lossless and pruned.tensors[0].error["relative_mse"] > 0
    report = bie_cli.verify_container(tmp_path / "b.cai", against=source)
    assert report.ok

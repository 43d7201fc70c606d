"""safetensors and PyTorch readers/writers: every dtype, sharding, metadata, nesting, tied weights."""

from __future__ import annotations

from collections import OrderedDict

import ml_dtypes
import numpy as np
import pytest
from conftest import write_safetensors
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import bie_cli
from bie_cli import dtypes
from bie_cli.formats import safetensors as st_format

NUMPY_DTYPES = {
    "F32": np.float32, "F16": np.float16, "F64": np.float64, "BF16": ml_dtypes.bfloat16,
    "F8_E4M3": ml_dtypes.float8_e4m3fn, "F8_E5M2": ml_dtypes.float8_e5m2,
    "I8": np.int8, "I16": np.int16, "I32": np.int32, "I64": np.int64,
    "U8": np.uint8, "U16": np.uint16, "U32": np.uint32, "U64": np.uint64, "BOOL": np.bool_,
}


def _random_bytes_array(rng, dtype_name, shape):
    itemsize = dtypes.get(dtype_name).itemsize
    count = int(np.prod(shape)) if shape else 1
    if dtype_name == "BOOL":
        return (rng.random(count) > 0.5).reshape(shape)
    raw = rng.integers(0, 256, count * itemsize, dtype=np.uint8)  # every bit pattern, NaNs included
    return raw.view(NUMPY_DTYPES[dtype_name]).reshape(shape)


@pytest.mark.parametrize("dtype_name", sorted(NUMPY_DTYPES))
def test_every_safetensors_dtype_round_trips_bit_exact(tmp_path, dtype_name):
    rng = np.random.default_rng(1)
    tensors = {"a": _random_bytes_array(rng, dtype_name, (17, 5)), "b": _random_bytes_array(rng, dtype_name, ())}
    src = write_safetensors(tmp_path / "in.safetensors", tensors, metadata={"k": "v"})
    bie_cli.compress_model(src, tmp_path / "m.cai", chunk_size=64)
    bie_cli.decompress_model(tmp_path / "m.cai", tmp_path / "out.safetensors")
    assert (tmp_path / "out.safetensors").read_bytes()[8:].count(b'"__metadata__":{"k":"v"}') == 1
    with st_format.open(str(tmp_path / "out.safetensors")) as back:
        for name, want in tensors.items():
            got = back.read(name)
            assert got.dtype == want.dtype and got.shape == want.shape
            assert got.tobytes() == want.tobytes()
    from safetensors import safe_open

    with safe_open(str(tmp_path / "out.safetensors"), framework="pt") as reference:  # the reference reader agrees
        assert sorted(reference.keys()) == ["a", "b"]
        assert reference.metadata() == {"k": "v"}


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    array=hnp.arrays(
        dtype=st.sampled_from([np.float32, np.float16, np.int64, np.uint8, np.bool_]),
        shape=hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=9),
    ),
    chunk_size=st.integers(1, 300),
    strategy=st.sampled_from(["raw", "zstd", "gzip:level=1"]),
)
def test_round_trip_property(tmp_path_factory, array, chunk_size, strategy):
    tmp = tmp_path_factory.mktemp("prop")
    src = write_safetensors(tmp / "in.safetensors", {"x": array})
    bie_cli.compress_model(src, tmp / "m.cai", chunk_size=chunk_size, strategy=strategy)
    with bie_cli.open_container(tmp / "m.cai") as container:
        got = container["x"]
    assert got.shape == array.shape and got.dtype == array.dtype
    assert got.tobytes() == np.ascontiguousarray(array).tobytes()


@pytest.mark.parametrize("layout", ["index", "directory"])
def test_sharded_checkpoint(tmp_path, layout):
    import json

    shards = tmp_path / "ckpt"
    shards.mkdir()
    rng = np.random.default_rng(2)
    first = {"layer.0.w": rng.standard_normal((8, 4)).astype(np.float32), "layer.0.b": np.ones(4, np.float32)}
    second = {"layer.1.w": rng.standard_normal((8, 4)).astype(np.float32)}
    write_safetensors(shards / "model-00001-of-00002.safetensors", first, {"format": "pt"})
    write_safetensors(shards / "model-00002-of-00002.safetensors", second, {"format": "pt"})
    if layout == "index":
        weight_map = {**dict.fromkeys(first, "model-00001-of-00002.safetensors"), **dict.fromkeys(second, "model-00002-of-00002.safetensors")}
        (shards / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": 1}, "weight_map": weight_map}))
    bie_cli.compress_model(shards, tmp_path / "m.cai")
    report = bie_cli.verify_container(tmp_path / "m.cai", against=shards)
    assert report.ok and len(report.tensors) == 3
    bie_cli.decompress_model(tmp_path / "m.cai", tmp_path / "merged.safetensors")
    with st_format.open(str(tmp_path / "merged.safetensors")) as merged:
        for name, want in {**first, **second}.items():
            assert merged.read(name).tobytes() == want.tobytes()


def test_missing_shard_is_a_clear_error(tmp_path):
    import json

    from bie_cli.errors import BadInputError

    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"w": "gone.safetensors"}}))
    with pytest.raises(BadInputError, match=r"gone\.safetensors"):
        bie_cli.compress_model(tmp_path / "ckpt", tmp_path / "m.cai")


# -- PyTorch ---------------------------------------------------------------------------------


def _torch_round_trip(tmp_path, obj):
    import torch

    src = tmp_path / "in.pt"
    torch.save(obj, src)
    bie_cli.compress_model(src, tmp_path / "m.cai")
    assert bie_cli.verify_container(tmp_path / "m.cai", against=src).ok
    bie_cli.decompress_model(tmp_path / "m.cai", tmp_path / "out.pt")
    return torch.load(tmp_path / "out.pt", weights_only=True)


def _same_tensor(a, b) -> bool:
    import torch

    return a.dtype == b.dtype and a.shape == b.shape and a.contiguous().view(-1).view(torch.uint8).equal(b.contiguous().view(-1).view(torch.uint8))


def test_pytorch_dtypes_and_key_order(tmp_path):
    import torch

    state = OrderedDict()
    state["z.last_first"] = torch.randn(3, 4, dtype=torch.bfloat16)
    state["a.half"] = torch.randn(5, dtype=torch.float16)
    state["m.f8"] = torch.randn(4, 4).to(torch.float8_e4m3fn)
    state["ids"] = torch.arange(10)
    state["mask"] = torch.rand(3, 3) > 0.5
    state["u16"] = torch.arange(6, dtype=torch.int32).to(torch.uint16)
    state["scalar"] = torch.tensor(2.5)
    state["empty"] = torch.zeros(0, 3)
    state["c64"] = torch.randn(3, dtype=torch.complex64)
    back = _torch_round_trip(tmp_path, state)
    assert isinstance(back, OrderedDict) and list(back) == list(state)
    for key in state:
        assert _same_tensor(state[key], back[key]), key


def test_pytorch_wrappers_nesting_and_plain_values(tmp_path):
    import torch

    checkpoint = {
        "epoch": 7,
        "lr": float("nan"),
        "state_dict": {"enc.weight": torch.randn(4, 3), "enc.bias": torch.randn(3)},
        "note": "hello",
        "shape": torch.Size([2, 3]),
    }
    src = tmp_path / "wrapped.pt"
    torch.save(checkpoint, src)
    with bie_cli.formats.open_checkpoint(str(src)) as source:
        assert [t.name for t in source.tensors] == ["enc.weight", "enc.bias"]  # bare state-dict names
    back = _torch_round_trip(tmp_path, checkpoint)
    assert list(back) == list(checkpoint)
    assert back["epoch"] == 7 and back["note"] == "hello" and back["shape"] == torch.Size([2, 3])
    assert back["lr"] != back["lr"]  # NaN survives
    for key in checkpoint["state_dict"]:
        assert _same_tensor(checkpoint["state_dict"][key], back["state_dict"][key])


def test_pytorch_nested_lists_and_non_contiguous(tmp_path):
    import torch

    base = torch.randn(6, 8)
    obj = {"layers": [{"w": base.t()}, {"w": base[::2]}], "pair": (torch.ones(2), torch.zeros(1))}
    back = _torch_round_trip(tmp_path, obj)
    assert _same_tensor(back["layers"][0]["w"], base.t().contiguous())
    assert _same_tensor(back["layers"][1]["w"], base[::2].contiguous())
    assert isinstance(back["pair"], tuple) and _same_tensor(back["pair"][0], torch.ones(2))


def test_tied_weights_are_stored_once_and_retied(tmp_path):
    import torch

    shared = torch.randn(50, 20)
    state = {"embed.weight": shared, "head.weight": shared, "other": torch.randn(3)}
    back = _torch_round_trip(tmp_path, state)
    with bie_cli.open_container(tmp_path / "m.cai") as container:
        assert sorted(container) == ["embed.weight", "other"]
    assert back["head.weight"].data_ptr() == back["embed.weight"].data_ptr()
    assert _same_tensor(back["head.weight"], shared)


def test_load_state_dict_feeds_a_module(tmp_path):
    import torch

    model = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    torch.save(model.state_dict(), tmp_path / "m.pt")
    bie_cli.compress_model(tmp_path / "m.pt", tmp_path / "m.cai")
    fresh = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    fresh.load_state_dict(bie_cli.load_state_dict(tmp_path / "m.cai"))
    x = torch.randn(3, 8)
    assert torch.equal(fresh(x), model(x))


def test_decompress_one_tensor(tmp_path, small_model):
    bie_cli.compress_model(small_model, tmp_path / "m.cai")
    bie_cli.decompress_model(tmp_path / "m.cai", tmp_path / "one.safetensors", tensors=["encoder.bias"])
    with st_format.open(str(tmp_path / "one.safetensors")) as one:
        assert [t.name for t in one.tensors] == ["encoder.bias"]

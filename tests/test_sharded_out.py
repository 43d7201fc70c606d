"""Sharded safetensors out: a container made from a shard directory decompresses to the same files."""

from __future__ import annotations

import json
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import bie_cli
from tests.conftest import write_safetensors


def _minilm_shards(minilm_path: Path, directory: Path, with_index: bool = True) -> dict[str, np.ndarray]:
    """Three shards of real MiniLM weights (F32 and a BF16 copy), written by the reference library."""
    from safetensors.numpy import load_file

    weights = load_file(str(minilm_path))
    names = sorted(weights)[:24]
    tensors = {name: weights[name] for name in names}
    tensors["bf16." + names[0]] = weights[names[0]].astype(ml_dtypes.bfloat16)
    directory.mkdir()
    groups = [list(tensors)[i::3] for i in range(3)]
    weight_map = {}
    for number, group in enumerate(groups, 1):
        file_name = f"model-{number:05d}-of-00003.safetensors"
        write_safetensors(directory / file_name, {n: tensors[n] for n in group}, {"format": "pt", "shard": str(number)})
        weight_map.update(dict.fromkeys(group, file_name))
    if with_index:
        index = {"metadata": {"total_size": sum(a.nbytes for a in tensors.values())}, "weight_map": weight_map}
        (directory / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    return tensors


def _files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def test_sharded_directory_comes_back_byte_identical(minilm_path, tmp_path, bie):
    source = tmp_path / "ckpt"
    tensors = _minilm_shards(minilm_path, source)
    bie_cli.compress_model(source, tmp_path / "m.cai", threads=2)
    bie_cli.decompress_model(tmp_path / "m.cai", str(tmp_path / "out") + "/", threads=2)
    assert _files(tmp_path / "out") == _files(source)
    # the CLI, into an existing empty directory, from a stream on stdin
    (tmp_path / "cli").mkdir()
    result = bie("decompress", "-", "-o", str(tmp_path / "cli"), "--quiet", stdin=(tmp_path / "m.cai").read_bytes())
    assert result.exit_code == 0, result.stderr
    assert _files(tmp_path / "cli") == _files(source)
    # a non-empty directory is refused without --force, and nothing in it changes
    before = _files(tmp_path / "cli")
    result = bie("decompress", str(tmp_path / "m.cai"), "-o", str(tmp_path / "cli"))
    assert result.exit_code == 2 and "not empty" in result.stderr
    assert _files(tmp_path / "cli") == before
    # row ranges and single tensors still read straight from the container
    name = next(n for n, a in tensors.items() if a.ndim == 2 and a.shape[0] > 10)
    with bie_cli.open_container(tmp_path / "m.cai") as container:
        assert np.array_equal(container.read(name, 3, 9), tensors[name][3:9])


def test_subset_to_directory_rebuilds_headers_and_index(minilm_path, tmp_path):
    from safetensors.numpy import load_file

    source = tmp_path / "ckpt"
    tensors = _minilm_shards(minilm_path, source)
    bie_cli.compress_model(source, tmp_path / "m.cai")
    wanted = [n for n in tensors if n.endswith("bias")][:3]
    bie_cli.decompress_model(tmp_path / "m.cai", str(tmp_path / "part") + "/", tensors=wanted)
    index = json.loads((tmp_path / "part" / "model.safetensors.index.json").read_text())
    assert sorted(index["weight_map"]) == sorted(wanted)
    loaded = {}
    for file_name in set(index["weight_map"].values()):
        loaded.update(load_file(str(tmp_path / "part" / file_name)))
    assert sorted(loaded) == sorted(wanted)
    for name in wanted:
        assert loaded[name].tobytes() == tensors[name].tobytes()


def test_directory_output_needs_a_sharded_container(tmp_path, small_model, bie):
    bie_cli.compress_model(small_model, tmp_path / "m.cai")
    result = bie("decompress", str(tmp_path / "m.cai"), "-o", str(tmp_path / "out") + "/")
    assert result.exit_code == 2 and "sharded" in result.stderr
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary left


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    shapes=st.lists(st.tuples(st.integers(0, 7), st.integers(1, 5)), min_size=1, max_size=7),
    shard_of=st.lists(st.integers(0, 2), min_size=7, max_size=7),
    dtype=st.sampled_from(["float32", "float16", "int8", "bfloat16"]),
    index=st.booleans(),
    chunk_size=st.sampled_from([16, 1 << 20]),
)
def test_sharded_round_trip_property(tmp_path_factory, shapes, shard_of, dtype, index, chunk_size):
    base = tmp_path_factory.mktemp("shards")
    source = base / "ckpt"
    source.mkdir()
    rng = np.random.default_rng(len(shapes))
    np_dtype = ml_dtypes.bfloat16 if dtype == "bfloat16" else np.dtype(dtype)
    shards: dict[str, dict[str, np.ndarray]] = {}
    for number, shape in enumerate(shapes):
        file_name = f"part-{shard_of[number]}.safetensors"
        shards.setdefault(file_name, {})[f"t{number}"] = (rng.standard_normal(shape) * 10).astype(np_dtype)
    for file_name, tensors in shards.items():
        write_safetensors(source / file_name, tensors, {"name": file_name})
    if index:
        weight_map = {name: file_name for file_name, tensors in shards.items() for name in tensors}
        (source / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    bie_cli.compress_model(source, base / "m.cai", chunk_size=chunk_size)
    bie_cli.decompress_model(base / "m.cai", str(base / "out") + "/")
    assert _files(base / "out") == _files(source)
    # two decoders writing their chunks at their offsets: the same bytes
    bie_cli.decompress_model(base / "m.cai", str(base / "out2") + "/", threads=2)
    assert _files(base / "out2") == _files(source)


@pytest.mark.parametrize("threads", [1, 2])
def test_a_wrong_digest_leaves_no_directory(tmp_path, request, threads):
    """Chunks are written where they belong as they decode; a tensor that fails its digest
    still leaves neither the directory nor a temporary one."""
    from bie_cli.errors import CorruptContainerError

    source = tmp_path / "ckpt"
    source.mkdir()
    rng = np.random.default_rng(5)
    for number in range(3):
        write_safetensors(source / f"part-{number}.safetensors",
                          {f"t{number}.{k}": rng.standard_normal((40, 8)).astype(np.float32) for k in range(3)}, {})
    bie_cli.compress_model(source, tmp_path / "m.cai", chunk_size=256)
    request.getfixturevalue("wrong_digests")  # after compressing: only the decode's digests are wrong
    with pytest.raises(CorruptContainerError, match="do not match the stored digest"):
        bie_cli.decompress_model(tmp_path / "m.cai", str(tmp_path / "out") + "/", threads=threads)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt", "m.cai"]


def test_hostile_shard_name_is_refused(tmp_path):
    from bie_cli.errors import CorruptContainerError
    from bie_cli.formats.base import TensorInfo
    from bie_cli.formats.safetensors_sharded import write_directory

    metadata = {"safetensors": {"shards": {"files": {"../evil.safetensors": ["t"]}}}}
    with pytest.raises(CorruptContainerError, match="plain file name"):
        write_directory(str(tmp_path), [TensorInfo("t", "F32", (1,))], iter([]), metadata, {})
    assert list(tmp_path.iterdir()) == []

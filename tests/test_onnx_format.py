"""ONNX in and out: real models shipped by PyPI packages, a synthetic model, external data.

Every round trip ends with ``onnx.checker.check_model(full_check=True)`` on
the written file and ONNX Runtime outputs compared bit for bit with the
original's on fixed inputs.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx_helpers import (
    assert_bit_identical,
    fixed_feeds,
    real_onnx_models,
    require_real_models,
    run_model,
    session,
    synthetic_feeds,
    synthetic_model,
)

import bie_cli
from bie_cli import dtypes
from bie_cli.errors import BadInputError
from bie_cli.formats import onnx as onnx_format
from bie_cli.formats.base import TensorInfo


def check(path: Path) -> None:
    onnx.checker.check_model(str(path), full_check=True)


def all_chunks(source, rows_per_chunk: int | None = None):
    """Every tensor as row chunks, in order (several chunks per tensor when asked)."""
    for info in source.tensors:
        step = rows_per_chunk or info.rows
        for start in range(0, info.rows, step):
            yield info.name, source.read(info.name, start, min(info.rows, start + step))


def round_trip(src: Path, dst: Path, external_data: bool | None = None, rows_per_chunk: int | None = 3) -> dict:
    with onnx_format.open(str(src)) as source:
        onnx_format.write(str(dst), source.tensors, all_chunks(source, rows_per_chunk), source.metadata,
                          source.blobs, external_data=external_data)
        return source.metadata


@pytest.fixture
def synthetic(tmp_path: Path) -> Path:
    path = tmp_path / "synthetic.onnx"
    onnx.save(synthetic_model(), str(path))
    return path


# -- real models -------------------------------------------------------------------------

REAL = real_onnx_models()
REAL_IDS = [f"{p.parent.parent.name}/{p.name}" if p.parent.name != "data" else p.name for p in REAL]


def test_real_models_are_installed() -> None:
    models = require_real_models()
    assert len(models) >= 7
    kinds = set()
    for path in models:
        with onnx_format.open(str(path)) as source:
            kinds |= {entry["kind"] for entry in source.metadata["onnx"]["tensors"]}
            kinds |= {"subgraph" for entry in source.metadata["onnx"]["tensors"] if "/" in entry["where"]}
    # between them they cover every place a weight can live
    assert {"initializer", "constant.value", "subgraph"} <= kinds


@pytest.mark.real_model
@pytest.mark.parametrize("path", REAL, ids=REAL_IDS)
def test_real_model_round_trip_embedded(path: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.onnx"
    round_trip(path, out)
    check(out)
    assert_bit_identical(path, out)
    # the wire-level walk copies every other byte, so a lossless rebuild is the same file
    assert out.read_bytes() == path.read_bytes()


@pytest.mark.real_model
@pytest.mark.parametrize("path", REAL, ids=REAL_IDS)
def test_real_model_round_trip_external(path: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.onnx"
    round_trip(path, out, external_data=True)
    assert (tmp_path / "out.onnx.data").exists()
    assert sorted(os.listdir(tmp_path)) == ["out.onnx", "out.onnx.data"]
    check(out)
    assert_bit_identical(path, out)


@pytest.mark.real_model
def test_real_model_source_holds_no_weights(tmp_path: Path) -> None:
    """The blob is the graph only; the weights are read from the file on demand."""
    models = require_real_models()
    path = next(p for p in models if p.name == "silero_vad.onnx")  # weights in Constant nodes, in If branches
    with onnx_format.open(str(path)) as source:
        weights = sum(dtypes.nbytes(info.dtype, info.shape) for info in source.tensors)
        # the graph, plus a marker per extracted tensor (its name and some 40 bytes)
        markers = sum(len(info.name) + 48 for info in source.tensors)
        assert len(source.blobs["onnx.model"]) < path.stat().st_size - weights + markers
        assert len(source.blobs["onnx.model"]) < path.stat().st_size / 10
        names = [info.name for info in source.tensors]
        assert len(names) == len(set(names))
        assert any("encoder.0.reparam_conv.weight" in n for n in names)


# -- through the public API and the CLI --------------------------------------------------------


@pytest.mark.real_model
@pytest.mark.parametrize("path", REAL, ids=REAL_IDS)
def test_real_model_compress_decompress_verify(path: Path, tmp_path: Path) -> None:
    cai, out = tmp_path / "m.cai", tmp_path / "m.onnx"
    bie_cli.compress_model(path, cai, strategy="zstd")
    bie_cli.decompress_model(cai, out)
    check(out)
    assert_bit_identical(path, out)
    report = bie_cli.verify_container(cai, against=path)
    assert report.ok, [t for t in report.tensors if t.status != "ok"]
    assert sorted(os.listdir(tmp_path)) == ["m.cai", "m.onnx"]


@pytest.mark.real_model
def test_cli_round_trip(bie, tmp_path: Path) -> None:
    models = require_real_models()
    path = next(p for p in models if p.name == "silero_vad_16k_op15.onnx")  # initializers + Constants + If
    cai = tmp_path / "vad.cai"
    result = bie("compress", str(path), "-o", str(cai), "--strategy", "zstd")
    assert result.exit_code == 0, result.stderr
    result = bie("decompress", str(cai), "-o", str(tmp_path / "vad.onnx"))
    assert result.exit_code == 0, result.stderr
    result = bie("decompress", str(cai), "-o", str(tmp_path / "ext.onnx"), "--external-data")
    assert result.exit_code == 0, result.stderr
    result = bie("decompress", str(cai), "-o", str(tmp_path / "vad.safetensors"))
    assert result.exit_code == 0, result.stderr
    result = bie("verify", str(cai), "--against", str(path))
    assert result.exit_code == 0, result.stdout + result.stderr
    assert sorted(os.listdir(tmp_path)) == ["ext.onnx", "ext.onnx.data", "vad.cai", "vad.onnx", "vad.safetensors"]
    for out in ("vad.onnx", "ext.onnx"):
        check(tmp_path / out)
        assert_bit_identical(path, tmp_path / out)
    # weights only: the safetensors file holds exactly the tensors bie extracted, bit for bit
    from safetensors.numpy import load_file

    weights = load_file(str(tmp_path / "vad.safetensors"))
    with onnx_format.open(str(path)) as source:
        assert sorted(weights) == sorted(info.name for info in source.tensors)
        for info in source.tensors:
            assert weights[info.name].tobytes() == source.read(info.name).tobytes()


# -- synthetic model: every place a weight can live -------------------------------------------------


def test_synthetic_names_and_places(synthetic: Path) -> None:
    with onnx_format.open(str(synthetic)) as source:
        infos = {info.name: (info.dtype, info.shape) for info in source.tensors}
        meta = source.metadata["onnx"]
    assert infos == {
        "W": ("F32", (16, 16)), "B": ("F32", (16,)), "H": ("F16", (16, 16)), "BF": ("BF16", (16,)),
        "Q4_scale": ("F32", ()), "C1": ("F32", (16, 16)), "CF": ("F32", (32,)), "CI": ("I64", (32,)),
        "SUB_C": ("F32", (16,)), "SUB_W": ("F32", (16,)),
    }
    kinds = {entry["name"]: (entry["kind"], entry["where"], entry["storage"]) for entry in meta["tensors"]}
    assert kinds["B"] == ("initializer", "graph", "typed")
    assert kinds["CF"][0] == "constant.value_floats" and kinds["CI"][0] == "constant.value_ints"
    assert kinds["SUB_W"] == ("initializer", "graph/If:branch/then_branch", "raw")
    assert kinds["SUB_C"] == ("constant.value", "graph/If:branch/else_branch", "raw")
    assert {k["name"]: k["reason"] for k in meta["kept_in_graph"]} == {
        "Q4": "ONNX data type 22 has no bie dtype", "NAMES": "string tensor",
    }
    assert meta["small_constants_in_graph"] == 1  # the [2, 16] shape
    assert meta["opset_import"] == [{"domain": "", "version": 21}] and meta["ir_version"] == 10


def test_synthetic_read_rows(synthetic: Path) -> None:
    from onnx import numpy_helper

    model = onnx.load(str(synthetic))
    expected = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    with onnx_format.open(str(synthetic)) as source:
        np.testing.assert_array_equal(source.read("W", 3, 7), expected["W"][3:7])
        np.testing.assert_array_equal(source.read("B"), expected["B"])
        assert source.read("BF").dtype == np.dtype("bfloat16") and source.read("BF").tobytes() == expected["BF"].tobytes()
        assert source.read("Q4_scale").shape == ()
        assert source.read("CI").dtype == np.int64
        chunk = source.read("W", 0, 2)
        chunk[0, 0] = 42.0  # writable, and a copy: the next read is unchanged
        assert source.read("W", 0, 1)[0, 0] == expected["W"][0, 0]


@pytest.mark.parametrize("external_data", [False, True])
def test_synthetic_round_trip(synthetic: Path, tmp_path: Path, external_data: bool) -> None:
    out = tmp_path / "out" / "model.onnx"
    out.parent.mkdir()
    round_trip(synthetic, out, external_data=external_data, rows_per_chunk=5)
    check(out)
    for cond in (True, False):  # both If branches
        assert_bit_identical(synthetic, out, synthetic_feeds(cond=cond))
    rebuilt = onnx.load(str(out), load_external_data=False)
    initializers = {t.name: t for t in rebuilt.graph.initializer}
    assert len(initializers["B"].float_data) == 16  # typed storage comes back typed
    assert [t.name for t in rebuilt.graph.initializer] == ["W", "B", "H", "BF", "Q4", "Q4_scale"]
    assert (initializers["W"].data_location == 1) == external_data  # 1 KiB: goes external
    assert initializers["H"].data_location == 0  # 512 B: below EXTERNAL_MIN_BYTES
    assert sorted(os.listdir(out.parent)) == (["model.onnx", "model.onnx.data"] if external_data else ["model.onnx"])
    if not external_data:
        original = onnx.load(str(synthetic))
        assert rebuilt.SerializeToString() == original.SerializeToString()


def test_lossy_weights_keep_the_graph_valid(synthetic: Path, tmp_path: Path) -> None:
    """A lossy strategy hands back the same dtype and shape with other values: the graph stays valid."""
    out = tmp_path / "lossy.onnx"
    with onnx_format.open(str(synthetic)) as source:
        def rounded():
            for name, chunk in all_chunks(source):
                if chunk.dtype == np.float32:
                    chunk = chunk.astype(np.float16).astype(np.float32)  # what an 8-bit-ish quantizer does
                yield name, chunk

        onnx_format.write(str(out), source.tensors, rounded(), source.metadata, source.blobs)
    check(out)
    feeds = synthetic_feeds()
    expected, actual = run_model(synthetic, feeds), run_model(out, feeds)
    np.testing.assert_allclose(actual[0], expected[0], rtol=0.05, atol=1.0)
    assert [a.shape for a in actual] == [e.shape for e in expected]


def test_changed_dtype_or_shape_is_refused(synthetic: Path, tmp_path: Path) -> None:
    out = tmp_path / "bad.onnx"
    with onnx_format.open(str(synthetic)) as source:
        tensors = [TensorInfo(t.name, "F16", t.shape) if t.name == "W" else t for t in source.tensors]
        with pytest.raises(BadInputError, match=r"tensor 'W' is F16 \[16, 16\] but the ONNX graph needs F32"):
            onnx_format.write(str(out), tensors, all_chunks(source), source.metadata, source.blobs)
        tensors = [TensorInfo(t.name, t.dtype, (256,)) if t.name == "W" else t for t in source.tensors]
        with pytest.raises(BadInputError, match="a strategy changed its dtype or shape"):
            onnx_format.write(str(out), tensors, all_chunks(source), source.metadata, source.blobs)
        with pytest.raises(BadInputError, match="needs tensor 'W'"):
            onnx_format.write(str(out), source.tensors[1:], all_chunks(source), source.metadata, source.blobs)
    assert os.listdir(tmp_path) == ["synthetic.onnx"]


def test_write_failure_leaves_nothing(synthetic: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.onnx"
    with onnx_format.open(str(synthetic)) as source:
        def failing():
            for number, item in enumerate(all_chunks(source)):
                if number == 4:
                    raise OSError("disk full")
                yield item

        with pytest.raises(OSError, match="disk full"):
            onnx_format.write(str(out), source.tensors, failing(), source.metadata, source.blobs, external_data=True)
    assert os.listdir(tmp_path) == ["synthetic.onnx"]


def test_sniff(synthetic: Path, tmp_path: Path) -> None:
    assert onnx_format.sniff(str(synthetic))
    (tmp_path / "x.safetensors").write_bytes(b"\x08\x01\x00\x00\x00\x00\x00\x00{}")
    (tmp_path / "x.json").write_text('{"a": 1}')
    (tmp_path / "empty.onnx").write_bytes(b"")
    for name in ("x.safetensors", "x.json", "empty.onnx"):
        assert not onnx_format.sniff(str(tmp_path / name))
    assert not onnx_format.sniff(str(tmp_path))
    assert not onnx_format.sniff(str(tmp_path / "missing.onnx"))


def test_name_collisions_get_suffixes(tmp_path: Path) -> None:
    """A subgraph initializer named like a main-graph Constant output gets '#1'; the first keeps the name."""
    from onnx import TensorProto, helper, numpy_helper

    values = [np.full((4, 4), i, dtype=np.float32) for i in range(3)]
    sub = helper.make_graph([helper.make_node("Identity", ["K"], ["o"])], "sub", [],
                           [helper.make_tensor_value_info("o", TensorProto.FLOAT, [4, 4])],
                           initializer=[numpy_helper.from_array(values[1], "K")])
    graph = helper.make_graph(
        [helper.make_node("Constant", [], ["K"], value=numpy_helper.from_array(values[0])),
         helper.make_node("Constant", [], [""], value=numpy_helper.from_array(values[2])),
         helper.make_node("If", ["c"], ["r"], then_branch=sub, else_branch=sub)],
        "g", [helper.make_tensor_value_info("c", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("r", TensorProto.FLOAT, [4, 4])],
    )
    path = tmp_path / "collide.onnx"
    onnx.save(helper.make_model(graph), str(path))
    with onnx_format.open(str(path)) as source:
        names = [info.name for info in source.tensors]
        assert names == ["K", "constant", "K#1", "K#2"]
        assert source.read("K#1")[0, 0] == 1 and source.read("constant")[0, 0] == 2
        out = tmp_path / "out.onnx"
        onnx_format.write(str(out), source.tensors, all_chunks(source), source.metadata, source.blobs)
    assert out.read_bytes() == path.read_bytes()


# -- external data -------------------------------------------------------------------------


def external_model(directory: Path, rows: int = 3200, columns: int = 4096) -> Path:
    """A ~50 MB model whose weights (an initializer and a Constant) live in external data."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(5)
    weight = rng.standard_normal((rows, columns), dtype=np.float32)
    constant = rng.standard_normal((columns,), dtype=np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["xw"]),
         helper.make_node("Constant", [], ["bias"], value=numpy_helper.from_array(constant, "bias")),
         helper.make_node("Add", ["xw", "bias"], ["y"])],
        "external", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, rows])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, columns])],
        initializer=[numpy_helper.from_array(weight, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = directory / "big.onnx"
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="weights.bin", size_threshold=1024, convert_attribute=True)
    return path


def test_external_data_50mb_round_trip(tmp_path: Path) -> None:
    source_dir, out_dir = tmp_path / "src", tmp_path / "out"
    source_dir.mkdir()
    out_dir.mkdir()
    path = external_model(source_dir)
    assert path.stat().st_size < 4096 and (source_dir / "weights.bin").stat().st_size > 50_000_000
    cai = out_dir / "big.cai"
    bie_cli.compress_model(path, cai, strategy="zstd")
    out = out_dir / "big.onnx"
    bie_cli.decompress_model(cai, out)  # default: external, like the source
    assert sorted(os.listdir(out_dir)) == ["big.cai", "big.onnx", "big.onnx.data"]
    check(out)
    feeds = fixed_feeds(session(path))
    assert_bit_identical(path, out, feeds)
    rebuilt = onnx.load(str(out), load_external_data=False)
    (weight,) = rebuilt.graph.initializer
    entries = {e.key: e.value for e in weight.external_data}
    assert entries["location"] == "big.onnx.data" and int(entries["offset"]) % onnx_format.ALIGN_LARGE == 0
    bias = rebuilt.graph.node[1].attribute[0].t
    assert bias.data_location == 1  # the Constant's tensor is back in external data too
    assert bie_cli.verify_container(cai, against=path).ok
    embedded = out_dir / "embedded.onnx"
    bie_cli.decompress_model(cai, embedded, external_data=False)
    assert "embedded.onnx.data" not in os.listdir(out_dir)
    assert_bit_identical(path, embedded, feeds)


def test_auto_external_over_the_protobuf_limit(synthetic: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(onnx_format.writer, "PROTOBUF_LIMIT", 2048)  # the module that applies it
    out = tmp_path / "auto.onnx"
    round_trip(synthetic, out)
    assert (tmp_path / "auto.onnx.data").exists()
    check(out)
    with pytest.raises(BadInputError, match="over protobuf's 2 GB limit for one file; use --external-data"):
        round_trip(synthetic, tmp_path / "refused.onnx", external_data=False)
    assert not (tmp_path / "refused.onnx").exists()


def test_pipeline_temporary_name_gives_the_data_file_name(synthetic: Path, tmp_path: Path) -> None:
    temporary = tmp_path / ".final.onnx.ab12_xyz.partial"
    round_trip(synthetic, temporary, external_data=True)
    assert (tmp_path / "final.onnx.data").exists()
    assert onnx_format.writer._final_name("x/y.onnx", "z/final.onnx") == "final.onnx"


def test_container_without_graph_cannot_become_onnx(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="holds no ONNX graph"):
        onnx_format.write(str(tmp_path / "x.onnx"), [], iter(()), {}, {})

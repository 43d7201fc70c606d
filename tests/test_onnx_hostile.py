"""Bad ONNX input: truncated files, non-models, broken external data. Clear errors, exit 2, no output."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from onnx_helpers import synthetic_model

from bie_cli.errors import EXIT_BAD_INPUT, BadInputError
from bie_cli.formats import onnx as onnx_format

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402


@pytest.fixture
def model_bytes() -> bytes:
    return synthetic_model().SerializeToString()


def external_model(directory: Path, location: str = "weights.bin", write_data: bool = True,
                   offset: int = 0, length: int | None = None) -> Path:
    """A model whose initializer 'W' ([64, 64] F32) points at external data ``location``."""
    weight = np.arange(64 * 64, dtype=np.float32).reshape(64, 64)
    tensor = TensorProto(name="W", data_type=TensorProto.FLOAT, dims=[64, 64])
    tensor.data_location = TensorProto.EXTERNAL
    entries = {"location": location, "offset": str(offset)}
    if length is not None:
        entries["length"] = str(length)
    for key, value in entries.items():
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])], initializer=[tensor],
    )
    path = directory / "model.onnx"
    path.write_bytes(helper.make_model(graph).SerializeToString())
    if write_data:
        (directory / "weights.bin").write_bytes(b"\0" * offset + weight.tobytes())
    return path


# -- truncated and not-a-model --------------------------------------------------------------


@pytest.mark.parametrize("keep", [1, 7, 100, 0.5, -1])
def test_truncated_model(model_bytes: bytes, tmp_path: Path, keep) -> None:
    cut = keep if isinstance(keep, int) and keep > 0 else (len(model_bytes) - 1 if keep == -1 else int(len(model_bytes) * keep))
    path = tmp_path / "cut.onnx"
    path.write_bytes(model_bytes[:cut])
    with pytest.raises(onnx_format.OnnxModelError, match=r"cut\.onnx is truncated or not an ONNX model: "):
        onnx_format.open(str(path))


@pytest.mark.parametrize(
    "content, detail",
    [
        (b"", "the file is empty"),
        (b'{"not": "a model"}', ""),
        (b"PK\x03\x04" + b"\0" * 64, ""),
        (numpy_helper.from_array(np.ones(4, np.float32), "t").SerializeToString(), ""),  # a TensorProto
        (helper.make_model(helper.make_graph([], "g", [], [])).SerializeToString()[:2], ""),
        (b"\x08\x08\x12\x04spox", "it has no graph"),  # a ModelProto header with no graph
    ],
    ids=["empty", "json", "zip", "tensorproto", "two-bytes", "no-graph"],
)
def test_not_a_model(tmp_path: Path, content: bytes, detail: str) -> None:
    path = tmp_path / "x.onnx"
    path.write_bytes(content)
    with pytest.raises(onnx_format.OnnxModelError, match=r"x\.onnx is truncated or not an ONNX model: " + detail):
        onnx_format.open(str(path))
    assert not onnx_format.sniff(str(path))


def test_raw_data_shorter_than_dims(tmp_path: Path) -> None:
    tensor = numpy_helper.from_array(np.ones((4, 4), np.float32), "W")
    tensor.raw_data = tensor.raw_data[:20]
    graph = helper.make_graph([], "g", [], [helper.make_tensor_value_info("W", TensorProto.FLOAT, [4, 4])], initializer=[tensor])
    path = tmp_path / "short.onnx"
    path.write_bytes(helper.make_model(graph).SerializeToString())
    with pytest.raises(onnx_format.OnnxModelError, match=r"tensor 'W' holds 20 bytes of data but F32 \[4, 4\] needs 64"):
        onnx_format.open(str(path))


def test_deep_subgraph_nesting_is_refused(tmp_path: Path) -> None:
    output = [helper.make_tensor_value_info("o", TensorProto.FLOAT, [1])]
    leaf = helper.make_graph([helper.make_node("Constant", [], ["o"], value=numpy_helper.from_array(np.ones(1, np.float32)))], "b", [], output)
    body = leaf
    for _ in range(onnx_format.MAX_GRAPH_DEPTH + 1):
        # only one branch nests: nesting both would double the file at every level
        node = helper.make_node("If", ["c"], ["o"], then_branch=body, else_branch=leaf)
        body = helper.make_graph([node], "b", [], output)
    path = tmp_path / "deep.onnx"
    path.write_bytes(helper.make_model(body).SerializeToString())
    with pytest.raises(onnx_format.OnnxModelError, match="nest deeper than"):
        onnx_format.open(str(path))


# -- external data ---------------------------------------------------------------------------


def test_external_data_reads(tmp_path: Path) -> None:
    path = external_model(tmp_path, offset=128, length=64 * 64 * 4)
    with onnx_format.open(str(path)) as source:
        assert source.read("W", 1, 2)[0, 0] == 64.0
        assert source.metadata["onnx"]["external_data"] is True


def test_external_data_missing(tmp_path: Path) -> None:
    path = external_model(tmp_path, write_data=False)
    with pytest.raises(onnx_format.OnnxExternalDataError, match=r"^external data file 'weights.bin' for tensor 'W' is missing"):
        onnx_format.open(str(path))


def test_external_data_name_with_a_nul_byte(tmp_path: Path) -> None:
    """Found by fuzzing: os.stat raised ValueError ("embedded null byte"), an internal error."""
    path = external_model(tmp_path, location="weights\0.bin")
    with pytest.raises(onnx_format.OnnxExternalDataError, match=r"model\.onnx: external data file name for tensor 'W' holds a NUL byte") as caught:
        onnx_format.open(str(path))
    assert caught.value.exit_code == EXIT_BAD_INPUT


def test_external_data_too_short(tmp_path: Path) -> None:
    path = external_model(tmp_path)
    data = tmp_path / "weights.bin"
    data.write_bytes(data.read_bytes()[:1000])
    with pytest.raises(onnx_format.OnnxExternalDataError, match=r"'weights.bin' for tensor 'W' is too short: it has 1000 bytes"):
        onnx_format.open(str(path))


def test_external_data_offset_past_the_end(tmp_path: Path) -> None:
    path = external_model(tmp_path, write_data=False, offset=1 << 40)
    (tmp_path / "weights.bin").write_bytes(b"\0" * 16384)
    with pytest.raises(onnx_format.OnnxExternalDataError, match="is too short"):
        onnx_format.open(str(path))


def test_external_data_wrong_length(tmp_path: Path) -> None:
    path = external_model(tmp_path, length=100)
    with pytest.raises(onnx_format.OnnxExternalDataError, match="says its external data is 100 bytes but its dtype and shape need 16384"):
        onnx_format.open(str(path))


@pytest.mark.parametrize(
    "location, message",
    [("../weights.bin", "leaves the model's directory"),
     ("sub/../../weights.bin", "leaves the model's directory"),
     ("/etc/passwd", "is an absolute path"),
     ("C:\\weights.bin", "is an absolute path")],
)
def test_external_data_outside_the_directory(tmp_path: Path, location: str, message: str) -> None:
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    external_model(tmp_path)  # a real weights.bin one level up, which must not be read
    path = external_model(model_dir, location=location, write_data=False)
    with pytest.raises(onnx_format.OnnxExternalDataError, match=message):
        onnx_format.open(str(path))


def test_external_data_symlink_outside_the_directory(tmp_path: Path) -> None:
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    external_model(tmp_path)
    path = external_model(model_dir, location="link.bin", write_data=False)
    os.symlink(tmp_path / "weights.bin", model_dir / "link.bin")
    with pytest.raises(onnx_format.OnnxExternalDataError, match="resolves outside the model's directory"):
        onnx_format.open(str(path))


def test_external_data_bad_numbers(tmp_path: Path) -> None:
    path = external_model(tmp_path)
    model = onnx.load(str(path), load_external_data=False)
    model.graph.initializer[0].external_data[1].value = "12abc"
    path.write_bytes(model.SerializeToString())
    with pytest.raises(onnx_format.OnnxExternalDataError, match="non-numeric external data offset"):
        onnx_format.open(str(path))


# -- through the CLI: exit code 2, one line, nothing written -----------------------------------


def assert_names_the_problem(stderr: str, filename: str) -> None:
    # Format detection may refuse the file before bie's ONNX reader sees it (it does not sniff
    # as ONNX); either message names the file and says it is not a model bie can read.
    assert filename in stderr
    assert "is truncated or not an ONNX model" in stderr or "is not a checkpoint bie can read" in stderr
    assert "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1


def test_cli_truncated_model(bie, model_bytes: bytes, tmp_path: Path) -> None:
    path = tmp_path / "x.onnx"
    path.write_bytes(model_bytes[: len(model_bytes) // 2])
    result = bie("compress", str(path), "-o", str(tmp_path / "x.cai"))
    assert result.exit_code == EXIT_BAD_INPUT
    assert_names_the_problem(result.stderr, "x.onnx")
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert sorted(os.listdir(tmp_path)) == ["x.onnx"]


def test_cli_missing_external_data(bie, tmp_path: Path) -> None:
    path = external_model(tmp_path, write_data=False)
    result = bie("compress", str(path), "-o", str(tmp_path / "x.cai"))
    assert result.exit_code == EXIT_BAD_INPUT
    assert "external data file 'weights.bin' for tensor 'W' is missing" in result.stderr
    assert "Traceback" not in result.stderr
    assert sorted(os.listdir(tmp_path)) == ["model.onnx"]


def test_cli_not_a_model(bie, tmp_path: Path) -> None:
    path = tmp_path / "notes.onnx"
    path.write_text("these are not the weights you are looking for\n")
    result = bie("compress", str(path), "-o", str(tmp_path / "x.cai"))
    assert result.exit_code == EXIT_BAD_INPUT
    assert_names_the_problem(result.stderr, "notes.onnx")
    assert sorted(os.listdir(tmp_path)) == ["notes.onnx"]


def test_cli_safetensors_container_to_onnx(bie, small_model: Path, tmp_path: Path) -> None:
    cai = tmp_path / "small.cai"
    assert bie("compress", str(small_model), "-o", str(cai)).exit_code == 0
    result = bie("decompress", str(cai), "-o", str(tmp_path / "small.onnx"))
    assert result.exit_code == EXIT_BAD_INPUT
    assert "holds no ONNX graph" in result.stderr
    assert not (tmp_path / "small.onnx").exists()


def test_errors_are_bad_input() -> None:
    assert issubclass(onnx_format.OnnxModelError, BadInputError)
    assert issubclass(onnx_format.OnnxExternalDataError, BadInputError)

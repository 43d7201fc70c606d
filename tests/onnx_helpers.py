"""ONNX test helpers: real models shipped by PyPI packages, a synthetic model, fixed inputs.

The real models come from packages installed in the test environment
(``pip install --no-deps silero-vad magika``, done by ``make test``); tests
fail without them.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

REAL_MODEL_PACKAGES = {"silero_vad": "silero-vad", "magika": "magika"}


def _package_dir(module: str) -> Path | None:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def real_onnx_models() -> list[Path]:
    """Every .onnx file the model packages ship (found without importing them)."""
    found = []
    for module in REAL_MODEL_PACKAGES:
        directory = _package_dir(module)
        if directory is not None:
            found += sorted(directory.rglob("*.onnx"))
    return found


def require_real_models() -> list[Path]:
    models = real_onnx_models()
    missing = [pip for module, pip in REAL_MODEL_PACKAGES.items() if _package_dir(module) is None]
    if missing:  # `make test` installs them; a missing one is a broken set-up, not a skip
        pytest.fail(f"real ONNX models need: pip install --no-deps {' '.join(missing)}")
    return models


def fixed_feeds(session, seed: int = 0) -> dict[str, np.ndarray]:
    """Deterministic inputs for any model: dynamic dimensions become 1 (512 for a sample axis)."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for value in session.get_inputs():
        dims = list(value.shape)
        shape = []
        for index, dim in enumerate(dims):
            if isinstance(dim, int) and dim > 0:
                shape.append(dim)
            else:  # silero's audio input wants 512 samples at 16 kHz; elsewhere 1 is fine
                shape.append(512 if (value.name == "input" and index == len(dims) - 1) else 1)
        if value.name == "sr":
            feeds[value.name] = np.array(16000, dtype=np.int64)
        elif value.type == "tensor(float)":
            feeds[value.name] = (rng.standard_normal(shape) * 0.1).astype(np.float32)
        elif value.type == "tensor(int32)":
            feeds[value.name] = rng.integers(0, 256, shape).astype(np.int32)
        elif value.type == "tensor(int64)":
            feeds[value.name] = rng.integers(0, 4, shape).astype(np.int64)
        elif value.type == "tensor(bool)":
            feeds[value.name] = np.array(rng.random(shape) > 0.5)
        else:
            raise AssertionError(f"no fixed input for {value.name}: {value.type}")
    return feeds


def session(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # silero ships unused initializers; ORT warns about them
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_model(path: Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    return session(path).run(None, feeds)


def assert_bit_identical(original: Path, rebuilt: Path, feeds: dict[str, np.ndarray] | None = None) -> None:
    feeds = feeds if feeds is not None else fixed_feeds(session(original))
    expected, actual = run_model(original, feeds), run_model(rebuilt, feeds)
    assert len(expected) == len(actual)
    for index, (a, b) in enumerate(zip(expected, actual, strict=True)):
        assert a.dtype == b.dtype and a.shape == b.shape, f"output {index}"
        assert a.tobytes() == b.tobytes(), f"output {index} of {rebuilt.name} differs from {original.name}"


def synthetic_model(size: int = 16, seed: int = 3):
    """A small model with weights in every place bie extracts, and some it keeps in the graph.

    Inputs ``x`` (float [2, size]) and ``cond`` (bool scalar). Weights:
    initializers ``W`` (raw F32), ``B`` (F32 in ``float_data``), ``H`` (F16),
    ``BF`` (BF16); Constant ``C1`` (value, F32 [size, size]), ``CF`` (value_floats),
    ``CI`` (value_ints); inside the If branches an initializer ``SUB_W`` and a
    Constant ``SUB_C``; kept in the graph: a string Constant ``NAMES``, an INT4
    initializer ``Q4``, small shape constants.
    """
    import ml_dtypes
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    f32 = lambda *shape: rng.standard_normal(shape).astype(np.float32)  # noqa: E731
    w = numpy_helper.from_array(f32(size, size), "W")
    b = helper.make_tensor("B", TensorProto.FLOAT, [size], f32(size).tolist(), raw=False)  # typed storage
    h = numpy_helper.from_array(f32(size, size).astype(np.float16), "H")
    bf = helper.make_tensor("BF", TensorProto.BFLOAT16, [size], f32(size).astype(ml_dtypes.bfloat16).view(np.uint16).tobytes(), raw=True)
    q4 = helper.make_tensor("Q4", TensorProto.INT4, [size], rng.integers(-8, 8, size).tolist())
    q4_scale = numpy_helper.from_array(np.array(0.5, dtype=np.float32), "Q4_scale")
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["xw"]),
        helper.make_node("Add", ["xw", "B"], ["y1"]),
        helper.make_node("Cast", ["H"], ["h32"], to=TensorProto.FLOAT),
        helper.make_node("MatMul", ["y1", "h32"], ["y2"]),
        helper.make_node("Constant", [], ["C1"], value=numpy_helper.from_array(f32(size, size))),
        helper.make_node("MatMul", ["y2", "C1"], ["y3"]),
        helper.make_node("Constant", [], ["CF"], value_floats=f32(2 * size).tolist()),
        helper.make_node("Constant", [], ["shape"], value_ints=[2, size]),  # small: stays in the graph
        helper.make_node("Reshape", ["CF", "shape"], ["cf2"]),
        helper.make_node("Add", ["y3", "cf2"], ["y4"]),
        helper.make_node("Constant", [], ["CI"], value_ints=rng.integers(0, size, 2 * size).tolist()),
        helper.make_node("Gather", ["y4", "CI"], ["gathered"], axis=1),
        helper.make_node("Cast", ["BF"], ["bf32"], to=TensorProto.FLOAT),
        helper.make_node("Add", ["y4", "bf32"], ["y5"]),
        helper.make_node("DequantizeLinear", ["Q4", "Q4_scale"], ["q4out"]),
        helper.make_node("Constant", [], ["NAMES"], value=helper.make_tensor("names", TensorProto.STRING, [2], [b"a", b"b"])),
    ]
    then_graph = helper.make_graph(
        [helper.make_node("Add", ["y5", "SUB_W"], ["then_out"])], "then", [],
        [helper.make_tensor_value_info("then_out", TensorProto.FLOAT, [2, size])],
        initializer=[numpy_helper.from_array(f32(size), "SUB_W")],
    )
    else_graph = helper.make_graph(
        [helper.make_node("Constant", [], ["SUB_C"], value=numpy_helper.from_array(f32(size))),
         helper.make_node("Mul", ["y5", "SUB_C"], ["else_out"])], "else", [],
        [helper.make_tensor_value_info("else_out", TensorProto.FLOAT, [2, size])],
    )
    nodes.append(helper.make_node("If", ["cond"], ["branch"], then_branch=then_graph, else_branch=else_graph))
    graph = helper.make_graph(
        nodes, "synthetic",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, size]),
         helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("branch", TensorProto.FLOAT, [2, size]),
         helper.make_tensor_value_info("gathered", TensorProto.FLOAT, [2, 2 * size]),
         helper.make_tensor_value_info("q4out", TensorProto.FLOAT, [size]),
         helper.make_tensor_value_info("NAMES", TensorProto.STRING, [2])],
        initializer=[w, b, h, bf, q4, q4_scale],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], producer_name="bie-tests")
    model.ir_version = 10
    return model


def synthetic_feeds(size: int = 16, cond: bool = True) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(11)
    return {"x": rng.standard_normal((2, size)).astype(np.float32), "cond": np.array(cond)}

"""Malformed checkpoints and containers end in a BieError, never an internal error.

Seeded mutation fuzzing of every reader (the harness and its limits are in
tests/fuzzing.py): a few hundred cases per target here, ``make fuzz`` runs
10,000 (``FUZZ_CASES``; ``FUZZ_SEED`` picks other cases). A failure prints the
case, the mutation, the traceback and the command that replays it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from fuzzing import NORMAL_CASES, TARGETS, describe_failures, run_in_child


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_malformed_input_gives_a_bie_error(target: str) -> None:
    cases = int(os.environ.get("FUZZ_CASES") or NORMAL_CASES[target])
    seed = int(os.environ.get("FUZZ_SEED") or 0)
    result = run_in_child(target, cases, seed)
    assert not result["failures"], describe_failures(result)
    assert result["cases"] == cases
    # the mutations must reach both outcomes, or the fuzzer tests nothing
    assert result["rejected"] > 0 and result["accepted"] > 0, result


def test_a_damaged_pickle_is_a_bad_input_not_an_internal_error(tmp_path) -> None:
    """The issue's first escape, pinned: torch's unpickler raised IndexError."""
    from bie_cli.errors import EXIT_BAD_INPUT, BieError
    from bie_cli.formats import pytorch

    path = tmp_path / "model.pt"
    path.write_bytes(b"\x80\x02]q\x00(K\x01e\x85R.")  # REDUCE on an empty stack
    with pytest.raises(BieError, match=r"model\.pt as a PyTorch checkpoint \(truncated or corrupt\?\): IndexError") as caught:
        pytorch.open(str(path))
    assert caught.value.exit_code == EXIT_BAD_INPUT
    assert isinstance(caught.value.__cause__, IndexError)  # --debug shows where torch failed


# -- the escapes fuzzing found, pinned as plain tests ------------------------------------------


def test_onnx_name_that_is_not_utf8(tmp_path) -> None:
    """protobuf hands back bytes for a non-UTF-8 string; it was UnicodeDecodeError/TypeError later."""
    from onnx_helpers import synthetic_model

    from bie_cli.formats import onnx as onnx_format

    model = synthetic_model()
    name = model.graph.initializer[0].name.encode()
    data = model.SerializeToString()
    assert data.count(name) >= 1
    path = tmp_path / "bad-name.onnx"
    path.write_bytes(data.replace(name, b"\xff" * len(name)))
    with pytest.raises(onnx_format.OnnxModelError, match=r"bad-name\.onnx: .* is not UTF-8 text"):
        onnx_format.open(str(path))


def test_safetensors_header_nested_past_the_recursion_limit(tmp_path) -> None:
    from bie_cli.errors import BadInputError
    from bie_cli.formats import safetensors

    header = b"[" * 100_000 + b"]" * 100_000
    path = tmp_path / "deep.safetensors"
    path.write_bytes(len(header).to_bytes(8, "little") + header)
    with pytest.raises(BadInputError, match=r"deep\.safetensors is not a valid safetensors file: header is not valid JSON \(nested too deeply\)"):
        safetensors.open(str(path))


def test_shard_index_that_names_a_directory(tmp_path) -> None:
    import json

    import numpy as np

    from bie_cli.errors import BadInputError
    from bie_cli.formats import safetensors
    from bie_cli.formats.base import TensorInfo

    safetensors.write(str(tmp_path / "a.safetensors"), [TensorInfo("w", "F32", (2,))],
                      [("w", np.ones(2, np.float32))], {})
    (tmp_path / "sub").mkdir()
    index = {"weight_map": {"w": "a.safetensors", "v": "sub"}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(BadInputError, match=r"sub named in the index is missing or not a file"):
        safetensors.open(str(tmp_path))


def _stdout_of_script(script: str, path: Path) -> str:
    """Run ``script`` with ``path`` as its argument in a fresh interpreter (where it may lower its
    own memory limit) and return what it printed; the script itself must not fail."""
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)})
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def test_legacy_pickle_with_a_huge_string_length_allocates_nothing(tmp_path) -> None:
    """A legacy .pt file is read by torch's unpickler straight from the file: a damaged
    BINUNICODE length asked for 4 GiB before finding the file short (MemoryError under a limit)."""
    path = tmp_path / "legacy.pt"
    path.write_bytes(b"\x80\x02X\xff\xff\xff\xefabc")  # protocol 2, BINUNICODE of ~4 GiB, 3 bytes present
    script = (
        "import resource, sys\n"
        "from bie_cli.formats import pytorch\n"
        "from bie_cli.errors import BieError\n"
        "pytorch._torch()\n"
        "size = int(open('/proc/self/status').read().split('VmSize:')[1].split()[0]) * 1024\n"
        "resource.setrlimit(resource.RLIMIT_AS, (size + (512 << 20), resource.RLIM_INFINITY))\n"
        "try:\n"
        "    pytorch.open(sys.argv[1])\n"
        "except BieError as exc:\n"
        "    print(exc)\n"
    )
    assert "legacy.pt as a PyTorch checkpoint" in _stdout_of_script(script, path)


def test_piped_safetensors_declaring_a_huge_tensor_reads_only_what_arrives(tmp_path) -> None:
    """A pipe has no size to check offsets against: a header may declare 256 GiB. The reader
    must fail on the bytes that arrive, not ask the pipe for 256 GiB in one read."""
    import json

    header = json.dumps({"w": {"dtype": "F32", "shape": [1, 1 << 36], "data_offsets": [0, 1 << 38]}}).encode()
    data = len(header).to_bytes(8, "little") + header + b"\0" * 1000
    path = tmp_path / "huge.safetensors"
    path.write_bytes(data)
    script = (
        "import io, resource, sys\n"
        "from bie_cli.errors import BieError\n"
        "from bie_cli.formats import safetensors\n"
        "resource.setrlimit(resource.RLIMIT_AS, (4 << 30, resource.RLIM_INFINITY))\n"
        "source = safetensors.open_stream(io.BufferedReader(io.FileIO(sys.argv[1])), '-')\n"
        "try:\n"
        "    source.read('w')\n"
        "except BieError as exc:\n"
        "    print(exc)\n"
    )
    assert "file ended while reading tensor 'w' (truncated)" in _stdout_of_script(script, path)


def test_tensor_saved_with_requires_grad_reads(tmp_path) -> None:
    """Found by fuzzing (one bit of the pickle): torch rebuilds such a tensor with grad on,
    and .numpy() refused it - a legitimate checkpoint of Parameters did the same."""
    import numpy as np
    import torch

    from bie_cli.formats import pytorch

    path = tmp_path / "params.pt"
    torch.save({"w": torch.nn.Parameter(torch.arange(6.0).reshape(2, 3)), "b": torch.ones(3, requires_grad=True)}, path)
    with pytorch.open(str(path)) as source:
        assert np.array_equal(source.read("w"), np.arange(6.0, dtype=np.float32).reshape(2, 3))
        assert np.array_equal(source.read("b", 1, 3), np.ones(2, np.float32))

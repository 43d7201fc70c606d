"""End to end on the real all-MiniLM-L6-v2 checkpoint, through the command line, as a user would."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.real_model


def _load_torch(path):
    from safetensors.torch import load_file

    return load_file(str(path))


def _assert_same(a: dict, b: dict) -> None:
    assert list(a) == list(b) or sorted(a) == sorted(b)
    for name in a:
        assert a[name].dtype == b[name].dtype and a[name].shape == b[name].shape, name
        assert a[name].view(-1).view(dtype=__import__("torch").uint8).equal(b[name].view(-1).view(dtype=__import__("torch").uint8)), name


def test_minilm_compress_decompress_verify(bie, minilm_path, tmp_path):
    cai = tmp_path / "minilm.cai"
    result = bie("compress", str(minilm_path), "-o", str(cai), "--threads", "2")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""  # the summary goes to stderr
    result = bie("verify", str(cai), "--against", str(minilm_path))
    assert result.exit_code == 0, result.stdout
    assert "103/103" in result.stdout or "104/104" in result.stdout
    out = tmp_path / "out.safetensors"
    assert bie("decompress", str(cai), "-o", str(out)).exit_code == 0
    _assert_same(_load_torch(minilm_path), _load_torch(out))
    inspected = json.loads(bie("inspect", str(cai), "--json").stdout)
    assert inspected["tensors"] == len(_load_torch(minilm_path))
    assert inspected["stored_bytes"] == cai.stat().st_size
    assert inspected["ratio"] > 1.0


def test_minilm_through_pytorch_files(bie, minilm_path, tmp_path):
    import torch

    state = _load_torch(minilm_path)
    src = tmp_path / "minilm.pt"
    torch.save(state, src)
    cai = tmp_path / "minilm.cai"
    assert bie("compress", str(src), "-o", str(cai), "-q").exit_code == 0
    assert bie("verify", str(cai), "--against", str(src), "-q").exit_code == 0
    out = tmp_path / "back.pt"
    assert bie("decompress", str(cai), "-o", str(out), "-q").exit_code == 0
    back = torch.load(out, weights_only=True)
    assert list(back) == list(state)  # key order kept
    _assert_same(state, back)


def test_minilm_bf16_through_a_pipe(minilm_path, tmp_path):
    """`bie compress model -o - | bie decompress - -o out` gives the same tensors (BF16 too)."""
    import torch
    from safetensors.torch import save_file

    bf16 = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in _load_torch(minilm_path).items()}
    src = tmp_path / "bf16.safetensors"
    save_file(bf16, str(src))
    out = tmp_path / "piped.safetensors"
    command = (
        f"{sys.executable} -m bie_cli compress {src} -o - -q | "
        f"{sys.executable} -m bie_cli decompress - -o {out} -q"
    )
    completed = subprocess.run(["bash", "-o", "pipefail", "-c", command], capture_output=True, timeout=300)
    assert completed.returncode == 0, completed.stderr.decode()
    _assert_same(bf16, _load_torch(out))


def test_json_output_is_only_json(bie, minilm_path, tmp_path):
    cai = tmp_path / "m.cai"
    result = bie("compress", str(minilm_path), "-o", str(cai), "--json")
    stats = json.loads(result.stdout)
    assert stats["stored_bytes"] == cai.stat().st_size
    assert len(stats["tensors"]) == len(_load_torch(minilm_path))
    report = json.loads(bie("verify", str(cai), "--against", str(minilm_path), "--json").stdout)
    assert report["ok"] is True and report["exit_code"] == 0
    assert all(t["status"] == "ok" for t in report["tensors"])


def test_help_and_inspect_import_no_heavy_modules(minilm_path, tmp_path):
    import bie_cli

    cai = tmp_path / "m.cai"
    bie_cli.compress_model(minilm_path, cai)
    probe = (
        "import sys\n"
        "from bie_cli.cli.app import main\n"
        "for args in (['--help'], ['inspect', sys.argv[1]], ['inspect', sys.argv[1], '--json']):\n"
        "    main(args)\n"
        "heavy = sorted(m for m in ('torch', 'onnx', 'numba', 'onnxruntime', 'scipy') if m in sys.modules)\n"
        "print('HEAVY', heavy, file=sys.stderr)\n"
    )
    completed = subprocess.run([sys.executable, "-c", probe, str(cai)], capture_output=True, timeout=120)
    assert b"HEAVY []" in completed.stderr, completed.stderr.decode()[-500:]

"""Every command in the README's "Use" block runs, in order, on real files: docs cannot rot."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from conftest import REPO, write_safetensors


def _block(text: str, heading: str, language: str) -> str:
    section = text[text.index(heading):]
    match = re.search(rf"```{language}\n(.*?)```", section, re.S)
    assert match, f"no {language} block under {heading}"
    return match.group(1)


def _commands(block: str) -> list[str]:
    joined = block.replace("\\\n", " ")
    return [re.sub(r"\s+#.*$", "", line).strip() for line in joined.splitlines() if line.strip()]


def test_readme_use_examples_run(tmp_path):
    import torch
    from onnx_helpers import real_onnx_models

    readme = (REPO / "README.md").read_text()
    rng = np.random.default_rng(0)
    tensors = {"layer.weight": rng.standard_normal((32, 16)).astype(np.float32), "layer.bias": np.zeros(16, np.float32),
               "encoder.weight": rng.standard_normal((256, 256)).astype(np.float32)}  # big enough for a lossy budget
    write_safetensors(tmp_path / "model.safetensors", tensors)
    torch.save({k: torch.from_numpy(v) for k, v in tensors.items()}, tmp_path / "model.pt")
    (tmp_path / "ckpt_dir").mkdir()
    write_safetensors(tmp_path / "ckpt_dir" / "model-00001-of-00002.safetensors", {"a.weight": tensors["layer.weight"]})
    write_safetensors(tmp_path / "ckpt_dir" / "model-00002-of-00002.safetensors", {"a.bias": tensors["layer.bias"]})
    (tmp_path / "policy.toml").write_text(_block(readme, "### Choosing strategies", "toml"))
    shutil.copy(real_onnx_models()[0], tmp_path / "model.onnx")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    commands = _commands(_block(readme, "## Use", "sh"))
    assert len(commands) >= 10
    for command in commands:
        completed = subprocess.run(["bash", "-o", "pipefail", "-c", command], cwd=tmp_path, env=env,
                                   capture_output=True, timeout=300)
        assert completed.returncode == 0, f"{command!r} failed: {completed.stderr.decode()[-400:]}"
    assert (tmp_path / "restored.safetensors").exists() and (tmp_path / "restored.onnx").exists()
    assert (tmp_path / "inspect.json").read_text().lstrip().startswith("{")

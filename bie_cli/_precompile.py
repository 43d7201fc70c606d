"""Compile the numba kernels into numba's on-disk cache, so the first ``bie`` run does not.

numba compiles a kernel the first time it is called with a new argument type
and caches the machine code beside the module (``__pycache__/*.nbi|*.nbc``,
``cache=True``). On a fresh install that first call made the first ``bie
compress`` of MiniLM take 10 s instead of 1.3 s. ``setup.py`` runs this module
while the wheel is built, on the machine that installs it, and ships the
cache files in the wheel:

* the cache index is keyed by the source file's *content* hash (not its
  path or mtime), the numba version, and the CPU name and features, so the
  files stay valid once pip copies them into site-packages;
* on another CPU or numba version numba just ignores them and compiles as
  before, so a wheel built elsewhere is never wrong, only slower at first.

The workload is the real pipeline (compress, decompress and verify) on a small synthetic safetensors checkpoint, so the kernels compile
for exactly the argument types a real run passes (numba keys its cache by
them: readonly vs writable, layout, dtype). It covers the default lossless
strategies and ``quant`` (the README's lossy example).

``python -m bie_cli._precompile`` prints every kernel compiled and its time.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

import numpy as np


def _workload_tensors() -> dict[str, np.ndarray]:
    import ml_dtypes

    rng = np.random.default_rng(0)
    weights = (rng.standard_normal((96, 64)) * 0.05).astype(np.float32)
    weights[0, 0] = 40.0  # an outlier beyond quant's step grid: the path that stores it exactly
    return {
        "f32.weight": weights,
        "bf16.weight": weights.astype(ml_dtypes.bfloat16),
        "f16.weight": weights.astype(np.float16),
        "f64.weight": weights.astype(np.float64)[:8],
        "f8.weight": weights.astype(ml_dtypes.float8_e4m3fn),
        "bias": rng.standard_normal(64).astype(np.float32),
        "position_ids": np.arange(512, dtype=np.int64)[None, :],
        "token_type": np.zeros((4, 128), dtype=np.int64),
        "mask": rng.random((16, 16)) > 0.5,
        "counts": np.repeat(np.arange(32, dtype=np.int32), 16),
    }


def _write_checkpoint(path: str, tensors: dict[str, np.ndarray]) -> None:
    from . import dtypes
    from .formats import safetensors
    from .formats.base import TensorInfo

    infos = [TensorInfo(name, dtypes.from_numpy(array.dtype).name, array.shape) for name, array in tensors.items()]
    safetensors.write(path, infos, ((name, array) for name, array in tensors.items()), {})


def run_workload(directory: str) -> None:
    """compress / decompress / verify, lossless and quant, through the library API."""
    from .pipeline import compress_model, decompress_model, verify_container

    source = os.path.join(directory, "model.safetensors")
    _write_checkpoint(source, _workload_tensors())
    for name, strategy in (("lossless.cai", ""), ("quant.cai", "quant:bits=8,step=0.2,granularity=tensor")):
        container = os.path.join(directory, name)
        compress_model(source, container, strategy=strategy, chunk_size=4096)
        decompress_model(container, os.path.join(directory, name + ".safetensors"))
        report = verify_container(container, against=source)
        if not report.ok:
            raise RuntimeError(f"precompile workload failed to verify: {report.to_dict()}")


def compile_kernels() -> list[tuple[str, float]]:
    """Run the workload; return ``(kernel, seconds)`` for every compilation it caused."""
    from numba.core import event

    compiled: list[tuple[str, float]] = []
    starts: list[float] = []  # compilations nest (a kernel compiles the numba helpers it calls)

    class Timer(event.Listener):
        def on_start(self, ev) -> None:
            starts.append(time.perf_counter())

        def on_end(self, ev) -> None:
            seconds = time.perf_counter() - starts.pop()
            function = ev.data["dispatcher"].py_func
            if function.__module__.startswith("bie_cli"):
                compiled.append((f"{function.__module__}.{function.__qualname__}{ev.data['args']}", seconds))

    timer = Timer()
    event.register("numba:compile", timer)
    try:
        with tempfile.TemporaryDirectory(prefix="bie-precompile-") as directory:
            run_workload(directory)
    finally:
        event.unregister("numba:compile", timer)
    return compiled


def main() -> int:
    started = time.perf_counter()
    compiled = compile_kernels()
    if "--quiet" not in sys.argv:
        for name, seconds in compiled:
            print(f"{seconds:6.2f} s  {name}")
    print(f"bie: compiled {len(compiled)} numba kernels into the cache in {time.perf_counter() - started:.1f} s",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Peak resident memory of `bie compress` / `bie decompress` on a ~2 GB synthetic safetensors file.

    python -m bench.bench_memory [--size-gb 2.0] [--threads 2]

Each command runs in its own process; its peak RSS comes from the kernel
(``resource.getrusage(RUSAGE_CHILDREN).ru_maxrss`` in a fresh wrapper
process, so only that command is counted). The result goes into the
``memory`` section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.report import machine_line, markdown_table, update_section

_MEASURE = (
    "import resource, subprocess, sys, time\n"
    "start = time.perf_counter()\n"
    "code = subprocess.call(sys.argv[1:], stdout=subprocess.DEVNULL)\n"
    "elapsed = time.perf_counter() - start\n"
    "peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss\n"
    "print(code, peak_kib, elapsed)\n"
)


def measure(command: list[str]) -> tuple[int, float, float]:
    """Run ``command`` alone in a wrapper process; return (exit code, peak RSS MiB, seconds)."""
    output = subprocess.run([sys.executable, "-c", _MEASURE, *command], capture_output=True, text=True, check=True)
    code, peak_kib, elapsed = output.stdout.split()
    return int(code), int(peak_kib) / 1024, float(elapsed)


def make_model(path: Path, size_bytes: int) -> None:
    """A safetensors file of ``size_bytes`` written tensor by tensor (never all in memory)."""
    from bie_cli.formats.base import TensorInfo
    from bie_cli.formats.safetensors import write

    rows, cols = 4096, 4096  # 64 MiB float32 tensors
    count = max(1, size_bytes // (rows * cols * 4))
    infos = [TensorInfo(f"layers.{i}.weight", "F32", (rows, cols)) for i in range(count)]
    rng = np.random.default_rng(0)

    def chunks():
        for info in infos:
            for _ in range(0, rows, 512):
                yield info.name, (rng.standard_normal((512, cols), dtype=np.float32) * 0.02)

    write(str(path), infos, chunks(), {"safetensors": {"__metadata__": {"format": "pt"}}})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-gb", type=float, default=2.0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    bie = [sys.executable, "-m", "bie_cli"]
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
        tmp_path = Path(tmp)
        model = tmp_path / "big.safetensors"
        started = time.perf_counter()
        make_model(model, int(args.size_gb * (1 << 30)))
        print(f"made {model.stat().st_size / 2**30:.2f} GiB in {time.perf_counter() - started:.1f} s", file=sys.stderr)
        runs = [
            ("compress (default: float-split)", [*bie, "compress", str(model), "-o", str(tmp_path / "big.cai"), "-q", "-j", str(args.threads)]),
            ("verify --against", [*bie, "verify", str(tmp_path / "big.cai"), "--against", str(model), "-q"]),
            ("decompress -> safetensors", [*bie, "decompress", str(tmp_path / "big.cai"), "-o", str(tmp_path / "back.safetensors"), "-q"]),
        ]
        rows = []
        for label, command in runs:
            code, peak, seconds = measure(command)
            if code != 0:
                raise SystemExit(f"{label} failed with exit code {code}")
            rate = model.stat().st_size / seconds / 1e6
            rows.append([label, f"{peak:,.0f}", f"{seconds:.1f}", f"{rate:,.0f}"])
            print(json.dumps({"step": label, "peak_rss_mib": round(peak), "seconds": round(seconds, 2)}), file=sys.stderr)
        size = model.stat().st_size
    table = markdown_table(["step", "peak RSS (MiB)", "seconds", "MB/s"], rows)
    text = (
        "## Memory: streaming a large checkpoint\n\n"
        f"Synthetic safetensors file of {size / 2**30:.2f} GiB ({size // (4096 * 4096 * 4)} tensors of 4096x4096 F32), "
        f"`--threads {args.threads}`, default 4 MiB chunks. Peak RSS is the kernel's `ru_maxrss` for each command "
        f"run alone. Machine: {machine_line()}.\n\n"
        f"Command: `python -m bench.bench_memory --size-gb {args.size_gb} --threads {args.threads}`\n\n{table}\n"
    )
    print(table)
    update_section("memory", text)


if __name__ == "__main__":
    main()

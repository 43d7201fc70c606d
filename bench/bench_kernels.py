"""Matmul on the compressed form: bie kernels against dense numpy FP32 and scipy.sparse CSR.

For each matrix shape and sparsity, one random Gaussian matrix (pruned
entries exactly 0) is written to safetensors and compressed with every
strategy that has kernels; the kernels run on ``load_encoded`` of that
container, the baselines on the same matrix (dense: ``W @ X`` through
numpy's BLAS; CSR: ``scipy.sparse.csr_matrix(W) @ X``). Every (shape,
sparsity, batch, threads) row is measured back to back in one process, so
the ratios compare like with like. Batch 1 is ``matvec`` (dense ``W @ x``),
batch > 1 ``matmul``. Threads: ``numba.set_num_threads`` for the kernels and
``threadpoolctl`` for BLAS; scipy's CSR product is single-threaded.

Numba compile time is kept out of every timed call: the kernels are
compiled (or loaded from numba's cache) by ``kernels.warmup()`` first, each
signature is called once before it is timed, and the cold compile time is
measured separately in a subprocess with an empty cache directory.

    python -m bench.bench_kernels            # full grid, writes BENCHMARKS.md section "kernels"
    python -m bench.bench_kernels --quick    # small grid, prints only
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from bench.report import machine_line, markdown_table, update_section
else:
    from .report import machine_line, markdown_table, update_section

STRATEGIES = {
    "quant 4-bit": "quant:bits=4",
    "quant 8-bit": "quant:bits=8",
    "bie-bitplane 4-bit": "bie-bitplane:bits=4",
    "bie-binary": "bie-binary",
    "sdr": "sdr",
    "bie-blocked": "bie-blocked",
}
SHAPES = [(2048, 1024), (4096, 4096)]
SPARSITIES = [0.0, 0.9, 0.95]
BATCHES = [1, 16, 256]
THREADS = [1, 2]


def time_calls(calls: dict, budget: float = 0.3, rounds: int = 3, max_repeats: int = 400) -> dict:
    """Median seconds per call of each function, sampled round-robin.

    Each function gets one untimed call, then ``rounds`` rounds in which every
    function runs its share of the budget (at least 2 calls a round), so a
    burst of load from elsewhere on the machine hits all of them alike.
    """
    repeats = {}
    for name, function in calls.items():
        function()
        start = time.perf_counter()
        function()
        once = time.perf_counter() - start
        repeats[name] = int(min(max_repeats, max(2, budget / rounds / max(once, 1e-7))))
    samples = {name: [] for name in calls}
    for _ in range(rounds):
        for name, function in calls.items():
            for _ in range(repeats[name]):
                start = time.perf_counter()
                function()
                samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(times) for name, times in samples.items()}


def cold_compile_seconds() -> float:
    """Seconds ``kernels.warmup()`` takes with an empty numba cache (a subprocess, a temporary cache)."""
    probe = "import time, bie_cli.kernels as k; t = time.perf_counter(); k.warmup(); print(time.perf_counter() - t)"
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache}
        done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, check=True,
                              cwd=Path(__file__).resolve().parent.parent)
    return float(done.stdout.strip().splitlines()[-1])


def blas_line() -> str:
    """The BLAS libraries loaded, each named by the package that ships it (numpy's does ``W @ x``)."""
    from threadpoolctl import threadpool_info

    parts = []
    for pool in threadpool_info():
        if pool.get("user_api") == "blas":
            path = pool.get("filepath", "")
            owner = next((name for name in ("numpy", "scipy") if f"{os.sep}{name}.libs{os.sep}" in path), "?")
            parts.append(f"{owner}: {pool.get('internal_api')} {pool.get('version')} "
                         f"(kernel {pool.get('architecture')}, {pool.get('threading_layer')} threads)")
    return "; ".join(parts) or "unknown"


def encode_all(W: np.ndarray, workdir: Path, strategies: dict[str, str]) -> dict:
    from safetensors.numpy import save_file

    import bie_cli
    from bie_cli import kernels

    source = workdir / "w.safetensors"
    save_file({"w": W}, str(source))
    encoded = {}
    for label, spec in strategies.items():
        path = workdir / f"{label.replace(' ', '_')}.cai"
        bie_cli.compress_model(source, path, rules=[f"*={spec}"], force=True, threads=2)
        matrix = kernels.load_encoded(path, "w")
        with bie_cli.open_container(path) as container:
            W_hat = container["w"].astype(np.float64)
        x = np.random.default_rng(1).standard_normal(W.shape[1]).astype(np.float32)
        error = np.abs(matrix.matvec(x) - W_hat @ x).max() / max(np.abs(W_hat @ x).max(), 1e-30)
        assert error < 1e-4, f"{label}: kernel disagrees with the decode (relative error {error:.2e})"
        encoded[label] = matrix
        path.unlink()
    source.unlink()
    return encoded


def run(shapes, sparsities, batches, threads, strategies) -> tuple[list[dict], dict]:
    import numba
    import scipy.sparse
    from threadpoolctl import threadpool_limits

    from bie_cli import kernels

    os.environ[kernels.ENV_VAR] = "numba"
    started = time.perf_counter()
    warm = kernels.warmup()
    info = {"warmup_seconds": time.perf_counter() - started, "warmup": warm}
    rows = []
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        for shape in shapes:
            for sparsity in sparsities:
                W = rng.standard_normal(shape).astype(np.float32)
                if sparsity:
                    W[rng.random(shape) < sparsity] = 0.0
                csr = scipy.sparse.csr_matrix(W)
                encoded = encode_all(W, Path(tmp), strategies)
                for batch in batches:
                    X = rng.standard_normal((shape[1], batch)).astype(np.float32)
                    for count in threads:
                        numba.set_num_threads(count)
                        with threadpool_limits(limits=count, user_api="blas"):
                            row = measure(W, csr, encoded, X)
                        row.update(shape=shape, sparsity=sparsity, batch=batch, threads=count)
                        rows.append(row)
                        print(_line(row), flush=True)
    numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    return rows, info


def measure(W: np.ndarray, csr, encoded: dict, X: np.ndarray) -> dict:
    """Seconds per call of the baselines and every kernel, for one batch (1: matvec)."""
    from bie_cli import kernels

    if X.shape[1] == 1:
        x = np.ascontiguousarray(X[:, 0])
        y = np.empty(W.shape[0], np.float32)
        calls = {"dense": lambda: W @ x, "csr": lambda: csr @ x}
        calls.update({label: (lambda m=m: kernels.matvec(m, x, out=y)) for label, m in encoded.items()})
    else:
        Y = np.empty((W.shape[0], X.shape[1]), np.float32)
        calls = {"dense": lambda: W @ X, "csr": lambda: csr @ X}
        calls.update({label: (lambda m=m: kernels.matmul(m, X, out=Y)) for label, m in encoded.items()})
    seconds = time_calls(calls)
    return {"dense": seconds["dense"], "csr": seconds["csr"],
            "kernels": {label: (seconds[label], m.bits_per_weight) for label, m in encoded.items()}}


def _line(row: dict) -> str:
    cells = " ".join(f"{label}={s * 1e3:.3f}ms" for label, (s, _) in row["kernels"].items())
    return (f"{row['shape'][0]}x{row['shape'][1]} sparsity={row['sparsity']:.0%} batch={row['batch']} "
            f"threads={row['threads']} dense={row['dense'] * 1e3:.3f}ms csr={row['csr'] * 1e3:.3f}ms {cells}")


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.3f}" if seconds < 0.01 else f"{seconds * 1e3:.1f}"


def goals(rows: list[dict]) -> list[list]:
    out = []
    for row in rows:
        if row["batch"] != 1:
            continue
        shape = f"{row['shape'][0]}×{row['shape'][1]}"
        if row["sparsity"] in (0.9, 0.95):
            for label in ("bie-blocked", "sdr"):
                if label in row["kernels"]:
                    ratio = row["csr"] / row["kernels"][label][0]
                    out.append([f"{label} matvec ≥ 1.5× CSR", shape, f"{row['sparsity']:.0%}", row["threads"],
                                f"{ratio:.2f}×", "met" if ratio >= 1.5 else "**not met**"])
        if row["shape"] == (4096, 4096) and row["sparsity"] == 0.0:
            for label in ("quant 4-bit", "bie-bitplane 4-bit"):
                if label in row["kernels"]:
                    ratio = row["dense"] / row["kernels"][label][0]
                    out.append([f"{label} matvec ≥ dense FP32", shape, "0%", row["threads"],
                                f"{ratio:.2f}×", "met" if ratio >= 1.0 else "**not met**"])
    return out


def markdown(rows: list[dict], info: dict, command: str, load: str) -> str:
    labels = list(rows[0]["kernels"])
    bits = {}
    for row in rows:
        for label, (_, b) in row["kernels"].items():
            bits.setdefault((row["shape"], row["sparsity"]), {})[label] = b
    table = []
    for row in rows:
        cells = []
        for label in labels:
            seconds, _ = row["kernels"][label]
            cells.append(f"{_ms(seconds)} ({row['dense'] / seconds:.2f} / {row['csr'] / seconds:.2f})")
        table.append([f"{row['shape'][0]}×{row['shape'][1]}", f"{row['sparsity']:.0%}", row["batch"], row["threads"],
                      _ms(row["dense"]), _ms(row["csr"]), *cells])
    bits_rows = [[f"{shape[0]}×{shape[1]}", f"{sparsity:.0%}", *(f"{b[label]:.2f}" for label in labels)]
                 for (shape, sparsity), b in bits.items()]
    warm = ", ".join(f"{k} {v:.2f} s" for k, v in info["warmup"].items())
    return "\n\n".join([
        "## Matmul on the compressed form (`bie_cli.kernels`)",
        f"`{command}` — {machine_line()}; load average before the run: {load}, after: {info['load_after']} "
        "(the machine is shared; 2-thread rows are the ones other processes disturb most). "
        f"BLAS: {blas_line()}. numba {info['numba']} (threading layer {info['layer']}).",
        "Time per call is the median over repeated calls (one untimed call, then 3 round-robin rounds over "
        "all methods of a row, ≥ 2 calls each a round, about 0.3 s per method). "
        "Batch 1 is `matvec` (dense: `W @ x`), batch > 1 is `matmul` with `X` of shape [in, batch]. "
        "Cells: ms per call (speed-up vs dense FP32 numpy / vs scipy CSR; > 1 means the kernel is faster). "
        "Threads limit numba (`set_num_threads`) and BLAS (`threadpoolctl`); scipy's CSR product is "
        "always single-threaded. Matrices: Gaussian, pruned entries exactly 0, compressed by bie with the "
        "strategy's defaults except `bits`; the kernel result is checked against the decoded matrix first.",
        f"Numba compile time, excluded from every timing: cold compile of all kernels {info['cold_compile']:.1f} s "
        f"(empty cache, separate process); warm-up in this run (cache load) {info['warmup_seconds']:.2f} s ({warm}).",
        "### Goals (batch 1)",
        markdown_table(["goal", "shape", "sparsity", "threads", "measured", "result"], goals(rows)),
        "### Time per call",
        markdown_table(["shape", "sparsity", "batch", "threads", "dense FP32 ms", "CSR ms", *labels], table),
        "### Bits per weight the kernel reads (kernel-form arrays, not the file)",
        markdown_table(["shape", "sparsity", *labels], bits_rows),
    ])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2048x1024 only, batch 1 and 16; print, do not write")
    parser.add_argument("--no-write", action="store_true", help="print the table, leave BENCHMARKS.md alone")
    args = parser.parse_args(argv)
    import numba

    load = "{:.2f}, {:.2f}, {:.2f} (1, 5, 15 min)".format(*os.getloadavg())
    cold = cold_compile_seconds()
    if args.quick:
        rows, info = run(SHAPES[:1], SPARSITIES, [1, 16], THREADS, STRATEGIES)
    else:
        rows, info = run(SHAPES, SPARSITIES, BATCHES, THREADS, STRATEGIES)
    info.update(cold_compile=cold, numba=numba.__version__, layer=numba.threading_layer(),
                load_after="{:.2f}, {:.2f}, {:.2f}".format(*os.getloadavg()))
    command = "python -m bench.bench_kernels" + (" --quick" if args.quick else "")
    text = markdown(rows, info, command, load)
    print(text)
    if not (args.quick or args.no_write):
        update_section("kernels", text)


if __name__ == "__main__":
    main()

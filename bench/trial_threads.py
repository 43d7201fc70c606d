"""Trial (docs/kernels.md, "Threads: session 6, why 2 threads lose"): the 4-bit g32 row-tile
kernel at 11008x4096, batch 1, cold caches, 1 vs 2 threads, against variants of the same tile
code (outputs checked bit-identical to the 1-thread production kernel first):

- ``prod``: ``_quant_numba.tiled_matmul`` (``prange`` over tiles, prefetch 8 blocks = 1 KiB);
- ``halves pfN``: ``prange`` over 2 contiguous halves of whole tiles, prefetch N blocks (0 = off;
  ``pfNnta``: ``prefetchnta`` instead of ``prefetcht0``);
- ``pypair pfN``: a serial ``nogil`` kernel, the second half's call on a Python worker thread;
- numba's read of the same bytes and an ALU-only loop (bench_kernels ``--scaling``).

A round counts only if the ALU loop scaled >= 1.75x just before and just after it (the other core
was free); rounds run until ``R`` good ones or ``T`` seconds. Run under the shared bench lock:

    R=6 T=150 PF=0,8,16,32 flock /tmp/bie-bench.lock python bench/trial_threads.py
"""

from __future__ import annotations

import concurrent.futures
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _variants(prefetch: int, locality: int = 3):
    from numba import njit, prange

    from bie_cli.kernels import _quant_numba as q

    tile, finish = q._tile_kernel(1, prefetch, locality), q._finish

    @njit(parallel=True, nogil=True, fastmath=q.FASTMATH)
    def halves(codes, zero, scales, offset, gs, padded, sums, xq, xd, xz, fp, fc, fd, y, parts):
        rows, tiles, blocks = y.shape[0], codes.shape[0], padded.shape[1] // 32
        out = np.empty((1, tiles * 8), dtype=np.float32)
        per = (tiles + parts - 1) // parts
        for p in prange(parts):
            for t in range(p * per, min(tiles, p * per + per)):
                tile(codes, scales, t, xq, xd, xz, 0, zero, gs, blocks, out)
                for i in range(t * 8, min(t * 8 + 8, rows)):
                    y[i, 0] = finish(out[0, i], i, 0, offset, sums, fp, fc, fd, padded)

    @njit(nogil=True, fastmath=q.FASTMATH)
    def serial(codes, zero, scales, offset, gs, padded, sums, xq, xd, xz, fp, fc, fd, y, lo, hi, out):
        rows, blocks = y.shape[0], padded.shape[1] // 32
        for t in range(lo, hi):
            tile(codes, scales, t, xq, xd, xz, 0, zero, gs, blocks, out)
            for i in range(t * 8, min(t * 8 + 8, rows)):
                y[i, 0] = finish(out[0, i], i, 0, offset, sums, fp, fc, fd, padded)

    return halves, serial


def main() -> None:
    import numba

    from bench.bench_kernels import (
        ALU_STEPS,
        _stream_kernels,
        evict_caches,
        gated_rounds,
        random_quant_form,
        scaling_line,
        tiled_args,
    )
    from bie_cli.kernels import _quant_numba as q

    rows, cols, group = 11008, 4096, 32
    rng = np.random.default_rng(0)
    m = random_quant_form(rows, cols, group, rng)
    x = rng.standard_normal(cols).astype(np.float32)
    args = tiled_args(m, x)
    tiles, no_bias = m.codes.shape[0], np.zeros(0, np.float32)
    y, ref, out = np.empty((rows, 1), np.float32), np.empty((rows, 1), np.float32), np.empty((1, tiles * 8), np.float32)
    numba.set_num_threads(1)
    q.tiled_matmul(*args, no_bias, ref)
    pool = concurrent.futures.ThreadPoolExecutor(1)

    def prod():
        q.tiled_matmul(*args, no_bias, y)

    calls = {"prod prange(tiles)": (prod, prod)}
    for pf in os.environ.get("PF", "0,8,16,32,8nta").split(","):  # "8nta": 8 blocks, prefetchnta
        halves, serial = _variants(int(pf.removesuffix("nta")), 0 if pf.endswith("nta") else 3)

        def pair(serial=serial, half=tiles // 2):
            future = pool.submit(serial, *args, y, half, tiles, out)
            serial(*args, y, 0, half, out)
            future.result()

        calls[f"halves pf{pf}"] = (lambda h=halves: h(*args, y, 1), lambda h=halves: h(*args, y, 2))
        calls[f"pypair pf{pf}"] = (lambda s=serial: s(*args, y, 0, tiles, out), pair)
    stream, alu = _stream_kernels()
    read = np.ones((64, (m.codes.nbytes + m.scale_tiles.nbytes) // 512), np.uint64)
    calls["numba read"] = (lambda: stream(read),) * 2
    calls["ALU"] = (lambda: alu(ALU_STEPS),) * 2
    for name, pair_of_calls in calls.items():  # warm up; every variant's output equals the 1-thread kernel's
        for threads, function in zip((1, 2), pair_of_calls, strict=True):
            numba.set_num_threads(threads)
            y[:] = np.nan
            function()
            if name not in ("numba read", "ALU") and not np.array_equal(y, ref):
                raise SystemExit(f"{name}, {threads} threads: output differs from the 1-thread kernel")

    def one_round():
        current = {}
        for name, pair_of_calls in calls.items():
            for threads, function in zip((1, 2), pair_of_calls, strict=True):
                numba.set_num_threads(threads)
                seconds = []
                for _ in range(5):
                    if name != "ALU":
                        evict_caches()
                    start = time.perf_counter()
                    function()
                    seconds.append(time.perf_counter() - start)
                current[name, threads] = statistics.median(seconds)
        return current

    samples, good = gated_rounds(alu, one_round, int(os.environ.get("R", 6)), float(os.environ.get("T", 150)))
    pool.shutdown()
    if not good:
        return
    nbytes = read.nbytes
    for name in calls:
        print(scaling_line(f"{name:20s}", samples[name, 1], samples[name, 2], nbytes))


if __name__ == "__main__":
    main()

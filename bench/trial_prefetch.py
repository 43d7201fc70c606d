"""Trial (docs/kernels.md, "Session 8"): prefetch distance, prefetch level and the order the two
threads walk the tiles, for the 4-bit g32 row-tile kernel at 11008x4096, batch 1, timed as layers back
to back (``CHAIN`` copies in distinct memory, one call after the other; bench_kernels' 2-thread goal
protocol), 1 vs 2 threads:

- ``prod``: ``_quant_numba.tiled_matmul`` (``prange`` over tiles, ``prefetcht0`` 8 blocks = 1 KiB ahead);
- ``halves pfN[tK]``: ``prange`` over contiguous halves of whole tiles (what numba's static schedule
  gives), prefetch N blocks of 128 bytes ahead at locality K (3 ``prefetcht0``, 2 ``prefetcht1``,
  1 ``prefetcht2``, 0 ``prefetchnta``);
- ``stride pfN``: thread p takes tiles p, p + 2, p + 4, ... (both threads walk the same region of
  the matrix together instead of each its own half);
- ``numba read``: bench_kernels' read of as many bytes, ``CHAIN`` buffers back to back.

Outputs are checked bit-identical to the 1-thread production kernel first. A round counts only if
the ALU loop scaled >= 1.75x just before and after it; rounds run until ``R`` good ones or ``T`` s:

    R=8 T=200 VARIANTS=8,16,32,16t2,8t1 python bench/trial_prefetch.py
    R=10 T=200 VARIANTS= STRIDE=0 CHAIN=4,8,16 python bench/trial_prefetch.py   # is a chain of 4 cold?

(it compiles its variants first, then takes the shared bench lock, /tmp/bie-bench.lock, for the timing).
"""

from __future__ import annotations

import fcntl
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

#: chain lengths to time (each variant at each length): "4,8" checks that 4 copies are cold enough
CHAINS = [int(v) for v in os.environ.get("CHAIN", "4").split(",")]
CHAIN = max(CHAINS)
#: a round counts only if the ALU-only loop scaled at least this much before and after it
GATE = float(os.environ.get("GATE", 1.75))


def _stride(prefetch: int):
    from numba import njit, prange

    from bie_cli.kernels import _quant_numba as q

    tile, finish = q._tile_kernel(1, prefetch), q._finish

    @njit(parallel=True, nogil=True, fastmath=q.FASTMATH)
    def stride(codes, zero, scales, offset, gs, padded, sums, xq, xd, xz, fp, fc, fd, y, parts):
        rows, tiles, blocks = y.shape[0], codes.shape[0], padded.shape[1] // 32
        out = np.empty((1, tiles * 8), dtype=np.float32)
        for p in prange(parts):
            for t in range(p, tiles, parts):
                tile(codes, scales, t, xq, xd, xz, 0, zero, gs, blocks, out)
                for i in range(t * 8, min(t * 8 + 8, rows)):
                    y[i, 0] = finish(out[0, i], i, 0, offset, sums, fp, fc, fd, padded)

    return stride


def main() -> None:
    import numba

    from bench.bench_kernels import _stream_kernels, gated_rounds, random_quant_form, scaling_line, tiled_args
    from bench.trial_threads import _variants
    from bie_cli.kernels import _quant_numba as q

    rows, cols, group = 11008, 4096, 32
    rng = np.random.default_rng(0)
    m = random_quant_form(rows, cols, group, rng)
    x = rng.standard_normal(cols).astype(np.float32)
    copies = [(m.codes, m.scale_tiles)] + [(m.codes.copy(), m.scale_tiles.copy()) for _ in range(CHAIN - 1)]
    chain = [tiled_args(m, x, codes, scales) for codes, scales in copies]
    no_bias = np.zeros(0, np.float32)
    y, ref = np.empty((rows, 1), np.float32), np.empty((rows, 1), np.float32)
    numba.set_num_threads(1)
    q.tiled_matmul(*chain[0], no_bias, ref)

    def run_chain(kernel, parts=False, length=CHAIN):  # parts: the trial kernels take y and the number of parts
        def run(threads):
            for args in chain[:length]:
                if parts:
                    kernel(*args, y, threads)
                else:
                    kernel(*args, no_bias, y)
        return run

    calls, lengths = {}, {}

    def add(name, kernel, parts=False):
        for k in CHAINS:
            label = name if len(CHAINS) == 1 else f"{name} x{k}"
            calls[label], lengths[label] = run_chain(kernel, parts, k), k

    add("prod", q.tiled_matmul)
    for spec in filter(None, os.environ.get("VARIANTS", "8,16,32,16t2,8t1").split(",")):
        pf, _, locality = spec.partition("t")
        add(f"halves pf{spec}", _variants(int(pf), int(locality or 3))[0], True)
    if os.environ.get("STRIDE", "1") == "1":
        add("stride pf8", _stride(8), True)
    stream, alu = _stream_kernels()
    reads = [np.ones((64, (m.codes.nbytes + m.scale_tiles.nbytes) // 512), np.uint64) for _ in range(CHAIN)]

    for k in CHAINS:
        label = "numba read" if len(CHAINS) == 1 else f"numba read x{k}"
        calls[label], lengths[label] = (lambda threads, k=k: [stream(buffer) for buffer in reads[:k]]), k
    for name, run in calls.items():  # warm up; every variant's output equals the 1-thread kernel's
        for threads in (1, 2):
            numba.set_num_threads(threads)
            y[:] = np.nan
            run(threads)
            if not name.startswith("numba read") and not np.array_equal(y, ref):
                raise SystemExit(f"{name}, {threads} threads: output differs from the 1-thread kernel")

    lock = open(os.environ.get("LOCK", "/tmp/bie-bench.lock"), "a")  # held until the process exits
    fcntl.flock(lock, fcntl.LOCK_EX)
    def one_round():
        current = {}
        for name, run in calls.items():
            for threads in (1, 2):
                numba.set_num_threads(threads)
                run(threads)
                seconds = []
                for _ in range(5):
                    start = time.perf_counter()
                    run(threads)
                    seconds.append((time.perf_counter() - start) / lengths[name])
                current[name, threads] = statistics.median(seconds)
        return current

    samples, good = gated_rounds(alu, one_round, int(os.environ.get("R", 8)), float(os.environ.get("T", 200)), GATE)
    if not good:
        return
    nbytes = reads[0].nbytes
    for name in calls:
        print(scaling_line(f"{name:20s}", samples[name, 1], samples[name, 2], nbytes))


if __name__ == "__main__":
    main()

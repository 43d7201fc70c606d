"""Trial (docs/kernels.md, "Session 8"): does idle time before a call change what the 2-thread goal
measures? The 4-bit g32 kernel at 11008x4096, batch 1, as layers back to back (bench_kernels'
``chain_copies``: 4 copies, one call after the other), 1 and 2 threads, three ways a round:

- ``busy``: 5 chains right after one untimed chain (the ``--thread-goal`` protocol);
- ``idle 0.25 s``: each of 5 chains after 0.25 s of sleep (what ``--scaling``'s ``SETTLE`` pause does
  to its first call);
- ``idle, 10 calls``: 0.25 s of sleep, two untimed chains, then 10 timed (``--scaling``'s chain rows).

Rounds count only if the ALU loop scaled >= 1.75x before and after (10 good rounds or 600 s):

    flock /tmp/bie-bench.lock python bench/trial_idle.py
"""

import statistics
import sys
import time
from pathlib import Path

import numba
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench import bench_kernels as b
from bie_cli import kernels

kernels.warmup(["quant"])
rows, cols = 11008, 4096
rng = np.random.default_rng(0)
m = b.random_quant_form(rows, cols, 32, rng)
chain = b.chain_copies(kernels.EncodedMatrix("w", "quant", "F32", (rows, cols), (rows, cols), [(0, m)]))
x = rng.standard_normal(cols).astype(np.float32)
y = np.empty(rows, np.float32)
stream, alu = b._stream_kernels()


def run():
    t = time.perf_counter()
    for e in chain:
        kernels.matvec(e, x, out=y)
    return (time.perf_counter() - t) / len(chain)


def one_round():
    cur = {}
    for threads in (1, 2):
        numba.set_num_threads(threads)
        for mode in ("busy", "idle 0.25 s", "idle, 10 calls"):
            if mode == "busy":
                run()
                ts = [run() for _ in range(5)]
            elif mode == "idle 0.25 s":
                ts = []
                for _ in range(5):
                    time.sleep(0.25)
                    ts.append(run())
            else:
                time.sleep(0.25)
                run()
                run()
                ts = [run() for _ in range(10)]
            cur[mode, threads] = statistics.median(ts)
    return cur


samples, good = b.gated_rounds(alu, one_round, 10, 600.0)
for mode in ("busy", "idle 0.25 s", "idle, 10 calls"):
    one, two = samples[mode, 1], samples[mode, 2]
    print(f"{mode:15s} 1 thread {statistics.median(one)*1e3:.3f} ms  2 threads {statistics.median(two)*1e3:.3f} ms  "
          f"{statistics.median(a / b for a, b in zip(one, two, strict=True)):.2f}x")

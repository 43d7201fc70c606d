"""Trial (docs/kernels.md, "Session 8"): how long numba's OpenMP worker (GNU libgomp) spins after a
parallel call before it sleeps, and what waking it costs the next call. For each idle gap (the
calling thread sleeps that long after a 2-thread call), the latency of an empty 2-thread ``prange``
call, median and 90th percentile of ``N`` trials, and the CPU time the process burned during the
gap (the spinning worker's; the kernel charges another CPU's running thread at its ticks, so this
column means something only for gaps of 1 ms and more, to ~4 ms). ``GOMP_SPINCOUNT`` (read once, when libgomp starts) changes the
window; run it with and without:

    flock /tmp/bie-bench.lock python bench/trial_spin.py
    GOMP_SPINCOUNT=3000000 flock /tmp/bie-bench.lock python bench/trial_spin.py
"""

from __future__ import annotations

import os
import statistics
import time

import numpy as np

GAPS_US = (0, 20, 50, 100, 200, 500, 1000, 2000, 5000, 20000)


def main() -> None:
    import numba
    from numba import njit, prange

    @njit(parallel=True, nogil=True)
    def empty(out):
        for i in prange(2):
            out[i] += 1.0

    out = np.zeros(2)
    numba.set_num_threads(2)
    for _ in range(20):
        empty(out)
    trials = int(os.environ.get("N", 60))
    print("GOMP_SPINCOUNT", os.environ.get("GOMP_SPINCOUNT", "(default)"), "load",
          "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    for gap in GAPS_US:
        latency, burned = [], []
        for _ in range(trials):
            empty(out)
            cpu, wall = time.process_time(), time.perf_counter()
            while time.perf_counter() - wall < gap * 1e-6 and gap < 1000:
                pass  # a short gap: the calling thread busy-waits (sleep would oversleep)
            if gap >= 1000:
                time.sleep(gap * 1e-6)
            burned.append((time.process_time() - cpu) - (time.perf_counter() - wall if gap < 1000 else 0.0))
            start = time.perf_counter()
            empty(out)
            latency.append(time.perf_counter() - start)
        latency.sort()
        print(f"gap {gap:6d} us: empty 2-thread call {statistics.median(latency) * 1e6:7.1f} us median, "
              f"{latency[int(0.9 * len(latency))] * 1e6:7.1f} us p90; worker CPU during the gap "
              f"{statistics.median(burned) * 1e6:7.0f} us")


if __name__ == "__main__":
    main()

"""Trial (docs/kernels.md, "Session 8"): the 4-bit row-tile kernels at 11008x4096, batch 1, 1 vs 2
threads, with their packed arrays (codes and scale tiles) on 2 MiB pages or on 4 KiB pages, and
timed three ways:

- ``np1``: caches evicted by numpy's one-thread read of 128 MiB before each call (what
  bench_kernels' 2-thread goal row did): the OpenMP worker has gone to sleep, the call wakes it;
- ``both``: caches evicted by numba's read of 128 MiB on as many threads as the call uses (the
  ``--scaling`` rows "evicted by both threads");
- ``chain``: ``CHAIN`` distinct matrices (``CHAIN`` x 26.9 MiB, more than the 32 MiB L3) multiplied
  back to back with nothing in between, as the layers of a forward pass: each matrix is cold because
  the others evicted it, and the worker never sleeps. Time of one call = the chain's time / CHAIN.

``pages``: ``numpy`` (the arrays as ``kernel_form`` builds them: numpy asks for huge pages from
4 MiB on, so the codes are mostly huge), ``huge`` (copies in a 2 MiB-aligned anonymous mmap with
``MADV_HUGEPAGE``), ``small`` (``MADV_NOHUGEPAGE``: every page 4 KiB). The AnonHugePages of each
array's mapping (/proc/self/smaps) is printed. Every variant's output is checked bit-identical to
the one-thread kernel on the numpy arrays first. A round counts only if the ALU loop scaled >= 1.75x
just before and after it; rounds run until ``R`` good ones or ``T`` seconds:

    R=8 T=240 flock /tmp/bie-bench.lock python bench/trial_pages.py
"""

from __future__ import annotations

import dataclasses
import mmap
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

HUGE = 2 << 20
CHAIN = int(os.environ.get("CHAIN", 4))
_KEEP: list = []


def paged_copy(array: np.ndarray, advice: int) -> np.ndarray:
    """``array`` copied into a 2 MiB-aligned anonymous mapping advised ``advice`` before first touch."""
    size = -(-array.nbytes // HUGE) * HUGE
    region = mmap.mmap(-1, size + HUGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    base = np.frombuffer(region, np.uint8)
    start = (-base.ctypes.data) % HUGE
    region.madvise(advice, start, size)
    out = base[start : start + array.nbytes].view(array.dtype).reshape(array.shape)
    out[...] = array
    _KEEP.append(region)
    return out


def huge_kib(array: np.ndarray) -> tuple[int, int]:
    """(AnonHugePages KiB, size KiB) of the mapping holding ``array``'s first byte."""
    address = array.ctypes.data
    found, size, huge = False, 0, 0
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            head = line.split()
            if "-" in head[0] and len(head) >= 5 and not head[0].endswith(":"):
                lo, hi = (int(v, 16) for v in head[0].split("-"))
                found = lo <= address < hi
                size = (hi - lo) >> 10
            elif found and head[0] == "AnonHugePages:":
                huge = int(head[1])
                break
    return huge, size


def main() -> None:
    import numba

    from bench.bench_kernels import (
        _SCRATCH,
        _stream_kernels,
        evict_caches,
        gated_rounds,
        random_quant_form,
        scaling_line,
    )
    from bie_cli import kernels

    kernels.warmup(["quant"])
    rows, cols = 11008, 4096
    rng = np.random.default_rng(0)
    x = rng.standard_normal(cols).astype(np.float32)
    base, nbytes = {}, {}
    for g in (32, 64):
        base[g] = [random_quant_form(rows, cols, g, rng) for _ in range(CHAIN)]
        nbytes[g] = base[g][0].codes.nbytes + base[g][0].scale_tiles.nbytes
    forms = {}
    for g in (32, 64):
        forms[g, "numpy"] = base[g]
        for pages, advice in (("huge", mmap.MADV_HUGEPAGE), ("small", mmap.MADV_NOHUGEPAGE)):
            forms[g, pages] = [dataclasses.replace(m, codes=paged_copy(m.codes, advice),
                                                   scale_tiles=paged_copy(m.scale_tiles, advice)) for m in base[g]]
    encoded = {key: [kernels.EncodedMatrix("w", "quant", "F32", (rows, cols), (rows, cols), [(0, m)]) for m in ms]
               for key, ms in forms.items()}
    for (g, pages), ms in forms.items():
        codes, scales = huge_kib(ms[0].codes), huge_kib(ms[0].scale_tiles)
        print(f"g{g} {pages:5s}: codes {codes[0] / 1024:5.1f} MiB huge of a {codes[1] / 1024:6.1f} MiB mapping, "
              f"scales {scales[0] / 1024:5.1f} MiB huge of {scales[1] / 1024:6.1f} MiB", flush=True)
    y = np.empty(rows, np.float32)
    for g in (32, 64):  # every variant equals the one-thread kernel on numpy's arrays, bit for bit
        for i in range(CHAIN):
            numba.set_num_threads(1)
            want = kernels.matvec(encoded[g, "numpy"][i], x).copy()
            for pages in ("numpy", "huge", "small"):
                for threads in (1, 2):
                    numba.set_num_threads(threads)
                    assert np.array_equal(kernels.matvec(encoded[g, pages][i], x, out=y), want), (g, pages, threads)
    stream, alu = _stream_kernels()
    evict_caches()
    scratch = _SCRATCH[0].view(np.uint64).reshape(64, -1)
    evicts = {"np1": evict_caches, "both": lambda: stream(scratch)}

    def single(key):
        return lambda: kernels.matvec(encoded[key][0], x, out=y)

    def chain(key):
        def run():
            for e in encoded[key]:
                kernels.matvec(e, x, out=y)
        return run

    keys = list(forms)

    def one_round():
        current = {}
        for key in keys:
            for threads in (1, 2):
                numba.set_num_threads(threads)
                for evict_name, evict in evicts.items():
                    seconds = []
                    for _ in range(5):
                        evict()
                        start = time.perf_counter()
                        single(key)()
                        seconds.append(time.perf_counter() - start)
                    current[key, evict_name, threads] = statistics.median(seconds)
                run = chain(key)
                run()
                seconds = []
                for _ in range(5):
                    start = time.perf_counter()
                    run()
                    seconds.append((time.perf_counter() - start) / CHAIN)
                current[key, "chain", threads] = statistics.median(seconds)
        return current

    samples, good = gated_rounds(alu, one_round, int(os.environ.get("R", 8)), float(os.environ.get("T", 240)))
    if not good:
        return
    for evict_name in ("np1", "both", "chain"):
        for key in keys:
            print(scaling_line(f"{evict_name:5s} g{key[0]} {key[1]:5s}", samples[key, evict_name, 1],
                               samples[key, evict_name, 2], nbytes[key[0]]))


if __name__ == "__main__":
    main()

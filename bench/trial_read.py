"""Trial (docs/kernels.md, "Threads: session 7"): why bench/membw.c's C read scales 1.7-1.8x from 1 to
2 threads when numba's read of the same bytes scales ~1.5x. One process, one buffer (the size of the
4-bit g32 11008x4096 kernel form), interleaved, 1 and 2 threads of:

- ``C read``: bench/membw.c's loop (OpenMP static halves, ``total |= a[i]``: gcc -O3 makes one
  ``vpor`` of 32 bytes an iteration), built as a shared library and called through ctypes;
- ``C read x4``: the same with four accumulators (four ``vpor`` an iteration, as LLVM unrolls
  numba's read);
- ``numba read``: bench_kernels' ``stream`` (the ``--scaling`` read row);
- ``g32`` / ``g64``: the production 4-bit kernels (``kernels.matvec``), 11008x4096, batch 1;

each after evicting the caches two ways: ``np1`` (numpy's one-thread sum of 128 MiB, what
bench_kernels does: the other core's worker thread falls asleep) and ``c2`` (the C read of 128 MiB on
2 threads, what membw.c does: both cores just ran, OpenMP's worker still spinning). A round counts
only if an ALU-only loop scaled >= 1.75x just before and after it. Needs gcc. Run under the lock:

    R=6 T=200 flock /tmp/bie-bench.lock python bench/trial_read.py
"""

from __future__ import annotations

import ctypes
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SOURCE = r"""
#include <stdint.h>
#include <stddef.h>
uint64_t read1(const uint64_t *restrict a, size_t words, int threads) {
    uint64_t total = 0;
#pragma omp parallel for num_threads(threads) schedule(static) reduction(| : total)
    for (size_t i = 0; i < words; i++) total |= a[i];
    return total;
}
typedef uint64_t v4 __attribute__((vector_size(32)));
uint64_t read4(const uint64_t *restrict a, size_t words, int threads) {
    uint64_t total = 0;
#pragma omp parallel num_threads(threads) reduction(| : total)
    {
        int n = omp_get_num_threads(), t = omp_get_thread_num();
        size_t quads = words / 16, lo = quads * t / n, hi = quads * (t + 1) / n;
        const v4 *p = (const v4 *)a;
        v4 s0 = {0}, s1 = {0}, s2 = {0}, s3 = {0};
        for (size_t q = lo; q < hi; q++) {
            s0 |= p[4 * q]; s1 |= p[4 * q + 1]; s2 |= p[4 * q + 2]; s3 |= p[4 * q + 3];
        }
        v4 s = s0 | s1 | s2 | s3;
        total |= s[0] | s[1] | s[2] | s[3];
    }
    return total;
}
"""


def build(directory: str) -> ctypes.CDLL:
    source, library = Path(directory) / "read.c", Path(directory) / "libread.so"
    source.write_text("#include <omp.h>\n" + SOURCE)
    subprocess.run(["gcc", "-O3", "-march=native", "-fopenmp", "-shared", "-fPIC", str(source), "-o", str(library)],
                   check=True)
    lib = ctypes.CDLL(str(library))
    for name in ("read1", "read4"):
        getattr(lib, name).restype = ctypes.c_uint64
        getattr(lib, name).argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    return lib


def main() -> None:
    import numba

    from bench.bench_kernels import _stream_kernels, evict_caches, gated_rounds, random_quant_form, scaling_line
    from bie_cli import kernels

    kernels.warmup(["quant"])
    rows, cols = 11008, 4096
    rng = np.random.default_rng(0)
    x = rng.standard_normal(cols).astype(np.float32)
    encoded, nbytes = {}, {}
    for g in (32, 64):
        m = random_quant_form(rows, cols, g, rng)
        encoded[g] = kernels.EncodedMatrix("w", "quant", "F32", (rows, cols), (rows, cols), [(0, m)])
        nbytes[f"g{g}"] = m.codes.nbytes + m.scale_tiles.nbytes
    y = np.empty(rows, np.float32)
    stream, alu = _stream_kernels()
    buffer = np.ones((64, nbytes["g32"] // 512), np.uint64)
    scratch = np.ones((64, (128 << 20) // 512), np.uint64)
    with tempfile.TemporaryDirectory() as tmp:
        lib = build(tmp)
        calls = {
            "C read": lambda t: lib.read1(buffer.ctypes.data, buffer.size, t),
            "C read x4": lambda t: lib.read4(buffer.ctypes.data, buffer.size, t),
            "numba read": lambda t: stream(buffer),
            "g32": lambda t: kernels.matvec(encoded[32], x, out=y),
            "g64": lambda t: kernels.matvec(encoded[64], x, out=y),
        }
        evicts = {"np1": evict_caches, "c2": lambda: lib.read1(scratch.ctypes.data, scratch.size, 2)}
        for threads in (1, 2):
            numba.set_num_threads(threads)
            for call in calls.values():
                call(threads)

        def one_round():
            current = {}
            for evict_name, evict in evicts.items():
                for name, call in calls.items():
                    for threads in (1, 2):
                        seconds = []
                        for _ in range(5):
                            evict()
                            numba.set_num_threads(threads)
                            start = time.perf_counter()
                            call(threads)
                            seconds.append(time.perf_counter() - start)
                        current[evict_name, name, threads] = statistics.median(seconds)
            return current

        samples, good = gated_rounds(alu, one_round, int(os.environ.get("R", 6)), float(os.environ.get("T", 200)))
        if not good:
            return
        for evict_name in evicts:
            for name in calls:
                print(scaling_line(f"evict {evict_name:3s} {name:10s}", samples[evict_name, name, 1],
                                   samples[evict_name, name, 2], nbytes["g64" if name == "g64" else "g32"]))


if __name__ == "__main__":
    main()

"""Keep big buffers in the heap: glibc's malloc tuned for a streaming pipeline.

Every chunk the pipeline encodes or decodes allocates a few buffers of about
the chunk's size (the rows read, byte planes, symbols, the payload). glibc
serves allocations over its mmap threshold (128 KiB, raised automatically up
to the size of the last one freed) with fresh ``mmap`` pages and returns the
top of the heap to the kernel when more than twice that is free, so buffers of
a few MiB keep coming back as new pages: each page is faulted in and zeroed by
the kernel, and faults of two threads contend for the process's memory map.
On MiniLM-sized chunks that was ~450 MB of page faults per 270 MB encoded and
about 40 % of the encode CPU time.

:func:`tune` fixes the mmap threshold and the trim threshold at 32 MiB (the
mmap threshold's maximum), so freed chunk buffers are reused from the heap.
Memory stays bounded by what is live at once (chunks in flight), plus at most
the trim threshold kept free per malloc arena (one per thread). It is called once per process by compress,
decompress and verify; elsewhere (musl, macOS, Windows) it does nothing.
``BIE_MALLOC_TUNE=0`` turns it off.
"""

from __future__ import annotations

import os
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20
TRIM_THRESHOLD = 32 << 20

_done = False


def tune() -> bool:
    """Apply the settings (once per process); True when glibc accepted them."""
    global _done
    if _done:
        return False
    _done = True
    if not sys.platform.startswith("linux") or os.environ.get("BIE_MALLOC_TUNE", "1") == "0":
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))

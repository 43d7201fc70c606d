"""How codecs reach their numba kernels, and when they decode without them.

Importing numba and loading its cached kernels costs about half a second
(more on a loaded machine), more than decoding a small stream in numpy and
plain Python (rANS: ~1 µs a symbol). Until numba is loaded, streams below
``NUMPY_BELOW`` elements take that path, so ``bie verify`` of a small
container never imports numba; once numba is loaded (a big tensor needed it)
every stream takes the numba path. Both give the same bytes and the same
errors: tests/test_rans.py and tests/test_float_split.py compare them.
"""

from __future__ import annotations

import importlib
import sys

#: ~70 ms of Python rANS decoding on a quiet machine, a fraction of numba's import
NUMPY_BELOW = 1 << 16


def prefer_numpy(count: int) -> bool:
    return count < NUMPY_BELOW and "numba" not in sys.modules


_LOADED: dict = {}


def kernels(name: str):
    """A numba kernel module of this package, imported on first use (numba is slow to import);
    later calls are a dict lookup, cheaper than a function-level ``from . import`` in hot paths.
    Only fully imported modules are kept (``import_module`` waits for another thread's import)."""
    module = _LOADED.get(name)
    if module is None:
        import_numba()
        module = _LOADED[name] = importlib.import_module(f".{name}", __package__)
    return module


_BLAS = "scipy.linalg.cython_blas"


def import_numba() -> None:
    """Import numba without the SciPy import it does to probe for BLAS.

    ``numba.np.arraymath`` (loaded with the first kernel) imports ``scipy.linalg``
    only to learn whether a 1-D ``np.dot`` may call BLAS: a third of a second or
    more of every process's start-up that no bie kernel needs. With that import
    failing during numba's own import, a 1-D ``np.dot`` in numba code takes
    numba's plain loop; everything else that needs BLAS still imports SciPy when
    it is compiled (the block is lifted once numba is in)."""
    if "numba" not in sys.modules:
        import_without(_BLAS, "numba", "numba.np.arraymath")


def import_without(blocked: str, *modules: str) -> None:
    """Import ``modules`` while ``import blocked`` raises ImportError (unless ``blocked`` is
    imported already); afterwards ``blocked`` imports normally again."""
    block = blocked not in sys.modules
    if block:
        sys.modules[blocked] = None  # the import system's "not importable" marker
    try:
        for name in modules:
            importlib.import_module(name)
    finally:
        if block and blocked in sys.modules and sys.modules[blocked] is None:
            del sys.modules[blocked]

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
import os
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


def import_numba() -> None:
    """Import numba without the imports it makes only to probe for optional packages.

    * SciPy: ``numba/__init__`` imports it to check its version, and
      ``numba.np.arraymath`` (loaded with the first kernel) imports
      ``scipy.linalg`` only to learn whether a 1-D ``np.dot`` may call BLAS: a
      third of a second or more of every process's start-up that no bie kernel
      needs. With those imports failing during numba's own import, a 1-D
      ``np.dot`` in numba code takes numba's plain loop; everything else that
      needs BLAS imports SciPy when it is compiled (the block is lifted once
      numba is in).
    * PyYAML (~30 ms): numba's config imports it to read a ``.numba_config.yaml``
      in the working directory; blocked only when there is no such file."""
    if "numba" not in sys.modules:
        blocked = ["scipy"]
        if not os.path.isfile(".numba_config.yaml"):
            blocked.append("yaml")
        import_without(blocked, "numba", "numba.np.arraymath")


def import_without(blocked: str | list[str], *modules: str) -> None:
    """Import ``modules`` while ``import blocked`` (a name or a list) raises ImportError (unless
    it is imported already); afterwards each blocked name imports normally again."""
    names = [blocked] if isinstance(blocked, str) else list(blocked)
    block = [name for name in names if name not in sys.modules]
    for name in block:
        sys.modules[name] = None  # the import system's "not importable" marker
    try:
        for name in modules:
            importlib.import_module(name)
    finally:
        for name in block:
            if name in sys.modules and sys.modules[name] is None:
                del sys.modules[name]


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
import threading

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
      ``numba.np.arraymath`` (imported here: the cached kernels' environments need it) imports
      ``scipy.linalg`` only to learn whether a 1-D ``np.dot`` may call BLAS: a
      third of a second or more of every process's start-up that no bie kernel
      needs. With those imports failing during numba's own import, a 1-D
      ``np.dot`` in numba code takes numba's plain loop; everything else that
      needs BLAS imports SciPy when it is compiled (the block is lifted once
      numba is in).
    * PyYAML (~30 ms): numba's config imports it to read a ``.numba_config.yaml``
      in the working directory; blocked only when there is no such file.

    Then bie's cached kernels are set to load without numba's registries
    (:func:`_load_cached_kernels_lightly`)."""
    if _NUMBA_READY:
        return
    with _IMPORT_LOCK:  # one thread imports; the others wait for the whole of numba, not a part
        if _NUMBA_READY:
            return
        if "numba" not in sys.modules:
            # arraymath too: a cached kernel's environment imports it (and arrayobj, npyimpl)
            import_without(_optional_probes(), "numba", "numba.np.arraymath")
        _NUMBA_READY.append(_load_cached_kernels_lightly())


def _optional_probes() -> list[str]:
    blocked = ["scipy"]
    if not os.path.isfile(".numba_config.yaml"):
        blocked.append("yaml")
    return blocked


_NUMBA_READY: list = []  # [light] once numba is in: whether bie's cached kernels load without refresh()
_IMPORT_LOCK = threading.Lock()


def _load_cached_kernels_lightly() -> bool:
    """Load bie's cached kernels without refreshing numba's whole target context first.

    numba's ``Cache.load_overload`` calls ``target_context.refresh()`` before
    it reads a cached kernel: that imports and installs every typing and
    lowering registry (arrays, linalg, random, typed containers, jitclass,
    ``numpy.ma``... ~60 modules) and initialises the NRT: 0.15-0.3 s of
    GIL-held CPU on the first kernel of every process, under numba's compiler
    lock, so the other threads' first kernels wait for it. Registries type and
    lower code, i.e. they serve *compiling*; a cached kernel is machine code
    that needs the NRT's symbols (``rtsys.initialize``, ~30 ms) and nothing
    else. So for this package's kernels a load initialises the NRT and reads
    the cache; on a miss numba compiles as before, its compiler running the
    full ``refresh()`` first. Other packages' functions keep numba's
    behaviour, and so does everything with ``BIE_NUMBA_LIGHT_LOAD=0`` or a
    numba whose internals differ from the ones this relies on (0.59-0.68)."""
    if os.environ.get("BIE_NUMBA_LIGHT_LOAD") == "0":
        return False
    try:
        from numba.core import caching
        from numba.core.cpu import CPUContext
        from numba.core.runtime import rtsys
    except ImportError:
        return False
    cache_class = caching.Cache
    if not all(hasattr(cache_class, name) for name in ("_load_overload", "_guard_against_spurious_io_errors")):
        return False
    original = cache_class.load_overload

    def load_overload(self, sig, target_context):
        module = getattr(getattr(self, "_py_func", None), "__module__", None) or ""
        if type(target_context) is not CPUContext or not module.startswith(_PACKAGE):
            return original(self, sig, target_context)
        rtsys.initialize(target_context)
        with self._guard_against_spurious_io_errors():
            return self._load_overload(sig, target_context)
        return None  # the guard swallowed an I/O error (Windows): a miss, as in numba

    load_overload.__wrapped__ = original
    cache_class.load_overload = load_overload
    return True


_PACKAGE = __package__.split(".")[0] + "."


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



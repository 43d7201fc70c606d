"""Matrix products computed directly on compressed weights: ``y = Ŵ·x`` and ``Y = Ŵ·X``.

``Ŵ`` is what the tensor's strategy decodes to (its own ``decode``), but it
is never built: :func:`load_encoded` parses every chunk payload of a tensor
ONCE into the compact arrays a kernel reads (codes, scales, indices, signs),
and :func:`matvec` / :func:`matmul` read only those.

* Rows are output features: a ``[out, in]`` Linear weight, chunks are row
  ranges, so a product over the chunks is the concatenation of each chunk's
  product (the chunks of a tensor are merged into one kernel matrix when their
  layouts agree, so a call is one parallel loop over rows). Rank > 2 tensors
  are flattened to ``[shape[0], prod(shape[1:])]``; rank < 2 is refused.
* Arithmetic is float32 whatever the tensor's dtype; ``x`` is converted.
* Two backends with one signature per strategy family: ``numpy`` (the
  reference: it is the specification, written for clarity) and ``numba``
  (``nogil=True, cache=True``, ``prange`` over rows, each row written by one
  thread). ``BIE_KERNELS=numpy|numba`` selects; the default is numba.
  Numba is imported the first time a numba kernel runs, never by
  ``import bie_cli``; :func:`warmup` compiles (or loads from cache) every
  kernel up front and says how long it took.

A strategy brings its own kernels: its class attribute ``kernels`` names
the family module (``bie_cli.kernels.quant`` for ``quant``) or is an
object with the same functions, so a third-party strategy can ship kernels
too. Built in: ``quant``, ``sdr``, ``bie-binary``, ``bie-bitplane``,
``bie-blocked``. Layouts and measured speeds: docs/kernels.md.
"""

from __future__ import annotations

import importlib
import math
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import BadInputError, BieError, CorruptContainerError

BACKENDS = ("numba", "numpy")
#: how the code forms take ``x``: quantized to int8 per block of 32, or as float32
ACTIVATIONS = ("int8", "float32")
ENV_VAR = "BIE_KERNELS"

__all__ = ["ACTIVATIONS", "BACKENDS", "EncodedMatrix", "backend", "dense_gemm", "family", "has_kernels",
           "kernel_strategies", "load_encoded", "matmul", "matvec", "warmup"]
#: what a kernel family must define (``concat``, ``kernel_form``, ``numba_*`` and ``warmup`` are optional)
REQUIRED = ("from_chunk", "reference_matvec", "reference_matmul")

_GEMM: ContextVar[Callable | None] = ContextVar("bie_kernels_gemm", default=None)


def backend() -> str:
    """The backend ``BIE_KERNELS`` selects (``numba`` when unset)."""
    value = os.environ.get(ENV_VAR, "").strip().lower() or "numba"
    if value not in BACKENDS:
        raise BadInputError(f"{ENV_VAR}={value!r} is not a kernel backend; use one of: {', '.join(BACKENDS)}")
    return value


def _declared(strategy_id: str):
    """The ``kernels`` a strategy declares (``None`` for none, or an unknown or broken strategy)."""
    from ..strategies import registry

    try:
        return getattr(registry.get(strategy_id), "kernels", None)
    except BieError:
        return None


def has_kernels(strategy_id: str) -> bool:
    """Whether a strategy provides matmul kernels."""
    return _declared(strategy_id) is not None


def kernel_strategies() -> list[str]:
    """Ids of the known strategies (built in and plugins) that provide kernels."""
    from ..strategies import registry

    return [strategy_id for strategy_id in registry.known_ids() if has_kernels(strategy_id)]


def family(strategy_id: str):
    """The kernel family of a strategy (its ``kernels`` module, imported), or a clear error."""
    declared = _declared(strategy_id)
    if declared is None:
        raise BadInputError(
            f"no matmul kernel for strategy {strategy_id!r}; kernels exist for {', '.join(kernel_strategies())}"
        )
    module = importlib.import_module(declared) if isinstance(declared, str) else declared
    missing = [name for name in REQUIRED if not callable(getattr(module, name, None))]
    if missing:
        raise BadInputError(f"kernels of strategy {strategy_id!r} lack {', '.join(missing)}")
    return module


@dataclass
class EncodedMatrix:
    """A tensor in kernel form: ``parts`` are ``(row_start, family matrix)`` covering the rows in order.

    ``shape`` is the 2-D view the kernels use (``[rows, cols]``);
    ``tensor_shape`` the stored tensor's own shape.
    """

    name: str
    strategy: str
    dtype: str
    tensor_shape: tuple[int, ...]
    shape: tuple[int, int]
    parts: list[tuple[int, Any]] = field(default_factory=list)

    @property
    def family(self):
        """The kernel module of this strategy (looked up once)."""
        module = self.__dict__.get("_family")
        if module is None:
            module = self.__dict__["_family"] = family(self.strategy)
        return module

    @property
    def nbytes(self) -> int:
        """Bytes of the kernel arrays (what one product reads, besides x)."""
        return sum(part.nbytes for _, part in self.parts)

    @property
    def bits_per_weight(self) -> float:
        count = self.shape[0] * self.shape[1]
        return 8.0 * self.nbytes / count if count else 0.0

    def matvec(self, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        return matvec(self, x, out)

    def matmul(self, X: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        return matmul(self, X, out)

    def __repr__(self) -> str:
        return (
            f"EncodedMatrix({self.name!r}, strategy={self.strategy!r}, shape={self.shape}, "
            f"{len(self.parts)} part(s), {self.bits_per_weight:.2f} bits/weight)"
        )


def matrix_shape(shape: tuple[int, ...]) -> tuple[int, int]:
    """The 2-D view of a tensor of rank >= 2: first axis rows, the rest flattened."""
    return shape[0], math.prod(shape[1:])


def load_encoded(container_or_path, name: str, activations: str = "int8") -> EncodedMatrix:
    """Parse tensor ``name`` of a ``.cai`` file (a path, a ``Container`` or a ``StoredTensors``) into kernel form.

    Each chunk payload is checked and parsed once (entropy stages decoded,
    codes repacked for the kernels); no dense float matrix is made.
    ``activations``: ``"int8"`` (default) lets the code forms (``quant``,
    ``bie-bitplane``, dense ``bie-binary``) quantize ``x`` per block of 32 for
    integer dot products; ``"float32"`` keeps every product exact to float32
    (docs/kernels.md). Other forms are always float32.
    """
    from ..api import Container
    from ..tensorcodec import StoredTensors

    if activations not in ACTIVATIONS:
        raise BadInputError(f"activations={activations!r}; use one of: {', '.join(ACTIVATIONS)}")
    if isinstance(container_or_path, Container):
        return _load(container_or_path.info(name), container_or_path.stored_chunks(name), activations)
    if isinstance(container_or_path, StoredTensors):
        return _load(container_or_path.entry(name), container_or_path.stored_chunks(name), activations)
    with StoredTensors.open(container_or_path) as stored:
        return _load(stored.entry(name), stored.stored_chunks(name), activations)


def _load(entry, stored_chunks, activations: str) -> EncodedMatrix:
    module = family(entry.strategy)
    if len(entry.shape) < 2:
        raise BadInputError(f"tensor {entry.name!r} has shape {list(entry.shape)}; matmul kernels need rank >= 2")
    rows, cols = matrix_shape(entry.shape)
    parts = []
    for chunk in stored_chunks:
        try:
            part = module.from_chunk(chunk.payload, chunk.meta, chunk.shape, entry.dtype)
        except (BieError, ValueError) as exc:  # as the tensor layer's decode_chunk: the file is at fault
            raise CorruptContainerError(f"tensor {entry.name!r} chunk {chunk.number}: {exc}") from None
        expected_rows = chunk.row_stop - chunk.row_start
        if (part.rows, part.cols) != (expected_rows, cols):
            raise CorruptContainerError(
                f"tensor {entry.name!r} chunk {chunk.number}: parses to {part.rows}x{part.cols}, expected {expected_rows}x{cols}"
            )
        if hasattr(part, "activations"):
            part.activations = activations
        parts.append((chunk.row_start, part))
    if len(parts) > 1 and hasattr(module, "concat"):
        merged = module.concat([part for _, part in parts])
        if merged is not None:
            parts = [(0, merged)]
    if hasattr(module, "kernel_form"):  # a layout for the kernels, made once the parts are joined
        parts = [(start, module.kernel_form(part)) for start, part in parts]
    return EncodedMatrix(entry.name, entry.strategy, entry.dtype, tuple(entry.shape), (rows, cols), parts)


def _vector(x, cols: int) -> np.ndarray:
    if isinstance(x, np.ndarray) and x.dtype == np.float32 and x.ndim == 1 and x.flags.c_contiguous:
        if x.shape[0] != cols:
            raise BadInputError(f"matvec needs a vector of length {cols}, got shape {x.shape}")
        return x
    x = np.asarray(x)
    if x.ndim != 1 or x.shape[0] != cols:
        raise BadInputError(f"matvec needs a vector of length {cols}, got shape {x.shape}")
    return np.ascontiguousarray(x, dtype=np.float32)


def matvec(encoded: EncodedMatrix, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``Ŵ @ x`` as float32, shape ``[rows]``, with the selected backend."""
    rows, cols = encoded.shape
    x = _vector(x, cols)
    y = _output(out, (rows,))
    module = encoded.family
    run = module.reference_matvec if backend() == "numpy" else getattr(module, "numba_matvec", module.reference_matvec)
    parts = encoded.parts
    if len(parts) == 1:  # chunks merged (the usual case): no slicing of y
        run(parts[0][1], x, y)
        return y
    if not parts:  # a tensor with no elements has no chunks
        y.fill(0.0)
    for start, part in parts:
        run(part, x, y[start : start + part.rows])
    return y


def matmul(encoded: EncodedMatrix, X: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``Ŵ @ X`` as float32, shape ``[rows, batch]``, for ``X`` of shape ``[cols, batch]``."""
    rows, cols = encoded.shape
    X = np.asarray(X)
    if X.ndim != 2 or X.shape[0] != cols:
        raise BadInputError(f"matmul needs a matrix of shape [{cols}, batch], got {X.shape}")
    X = np.ascontiguousarray(X, dtype=np.float32)
    Y = _output(out, (rows, X.shape[1]))
    module = encoded.family
    run = module.reference_matmul if backend() == "numpy" else getattr(module, "numba_matmul", module.reference_matmul)
    if not encoded.parts:
        Y.fill(0.0)
    for start, part in encoded.parts:
        run(part, X, Y[start : start + part.rows])
    return Y


def _output(out: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray:
    if out is None:
        return np.empty(shape, dtype=np.float32)
    if out.shape != shape or out.dtype != np.float32 or not out.flags.c_contiguous:
        raise BadInputError(f"out must be a C-contiguous float32 array of shape {shape}")
    return out


@contextmanager
def dense_gemm(function: Callable[[np.ndarray, np.ndarray, np.ndarray], None]) -> Iterator[None]:
    """Within this context (this thread or task only), ``function(a, b, out)`` computes the
    dense tile products ``out = a @ b`` that :func:`matmul` uses for code forms at batch > 1.

    The default is numpy (its BLAS). ``bie_cli.nn`` passes torch's matmul: two thread pools
    that spin-wait (torch's OpenMP, OpenBLAS's) on the same cores measured 4-5x slower.
    """
    token = _GEMM.set(function)
    try:
        yield
    finally:
        _GEMM.reset(token)


def gemm(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    """``out = a @ b`` (float32) with the function :func:`dense_gemm` set, else numpy."""
    function = _GEMM.get()
    if function is None:
        np.matmul(a, b, out=out)
    else:
        function(a, b, out)


def warmup(strategies=None) -> dict[str, float]:
    """Compile (or load from numba's on-disk cache) every numba kernel; seconds per family.

    Benchmarks call this first and report it separately, so compile time never
    lands in a timed call.
    """
    seconds = {}
    for strategy_id in strategies or kernel_strategies():
        module = family(strategy_id)
        started = time.perf_counter()
        if hasattr(module, "warmup"):
            module.warmup()
        seconds[strategy_id] = time.perf_counter() - started
    return seconds

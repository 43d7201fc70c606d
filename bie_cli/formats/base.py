"""What every checkpoint format module provides.

Each module in ``bie_cli.formats`` (safetensors, pytorch, onnx) has the same
three functions:

* ``sniff(path) -> bool``: does this path look like the format? (cheap)
* ``open(path) -> CheckpointSource``: a lazy source; nothing but headers is read
* ``write(path, tensors, source_metadata, blobs)``: write a checkpoint from
  ``TensorInfo`` + a reader callable, streaming where the format allows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:  # annotations only; `bie inspect` reads containers without importing numpy
    import numpy as np


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str  # canonical name, see bie_cli.dtypes
    shape: tuple[int, ...]

    @property
    def rows(self) -> int:
        """Rows along the first axis (a 0-d tensor is one row)."""
        return self.shape[0] if self.shape else 1

    @property
    def numel(self) -> int:
        count = 1
        for dim in self.shape:
            count *= dim
        return count


@dataclass
class CheckpointSource:
    """A checkpoint opened lazily: tensor list up front, data on demand.

    ``read(name, row_start, row_stop)`` returns rows of one tensor as a numpy
    array of its canonical dtype. ``metadata`` is JSON-able structure that is
    not tensors (safetensors ``__metadata__``, PyTorch nesting and key order);
    ``blobs`` carries binary structure (an ONNX graph without weights).
    """

    format: str
    path: str
    tensors: list[TensorInfo]
    read_rows: Callable[[str, int, int], np.ndarray]
    metadata: dict = field(default_factory=dict)
    blobs: dict[str, bytes] = field(default_factory=dict)
    close_callbacks: list[Callable[[], None]] = field(default_factory=list)
    #: (tensors list, its length, {name: first index}): ``info`` is called for every chunk read,
    #: and a scan of a 1,000-tensor list per chunk held the GIL against the encoder threads
    _by_name: tuple | None = field(default=None, init=False, repr=False, compare=False)

    def info(self, name: str) -> TensorInfo:
        tensors = self.tensors
        index = self._by_name
        if index is None or index[0] is not tensors or index[1] != len(tensors):
            by_name: dict[str, int] = {}
            for k, tensor in enumerate(tensors):
                by_name.setdefault(tensor.name, k)
            index = self._by_name = (tensors, len(tensors), by_name)
        k = index[2].get(name)
        if k is not None and tensors[k].name == name:
            return tensors[k]
        for tensor in tensors:  # the list was changed in place: scan it, as before
            if tensor.name == name:
                self._by_name = None
                return tensor
        raise KeyError(name)

    def read(self, name: str, row_start: int | None = None, row_stop: int | None = None) -> np.ndarray:
        info = self.info(name)
        start = 0 if row_start is None else row_start
        stop = info.rows if row_stop is None else row_stop
        return self.read_rows(name, start, stop)

    def close(self) -> None:
        for callback in self.close_callbacks:
            callback()
        self.close_callbacks.clear()

    def __enter__(self) -> CheckpointSource:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class FormatModule(Protocol):
    name: str
    extensions: tuple[str, ...]

    def sniff(self, path: str) -> bool: ...

    def open(self, path: str) -> CheckpointSource: ...

    def write(
        self,
        path: str,
        tensors: list[TensorInfo],
        chunks: Iterable[tuple[str, np.ndarray]],
        metadata: dict,
        blobs: dict[str, bytes],
    ) -> None: ...

"""Reading containers from Python: ``open_container`` and ``load_state_dict``."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping

import numpy as np

from .formats.cai.reader import TensorEntry, check_bits
from .tensorcodec import StoredChunk, StoredTensors


class Container(Mapping):
    """A lazy, read-only mapping ``name -> numpy array`` over a ``.cai`` file.

    Nothing is decoded until a tensor is asked for; ``read(name, start, stop)``
    decodes only the chunks that hold those rows. Lossy tensors come back
    dequantized in their original dtype. Use as a context manager, or call
    :meth:`close`, to release the memory map.

    ``bits=m``: tensors of a progressive strategy (``bie-bitplane``) are
    rebuilt from their top ``m`` planes, reading only those bytes; other
    tensors ignore it.
    """

    def __init__(self, path: str | os.PathLike, bits: int | None = None) -> None:
        check_bits(bits)
        self._bits = bits
        self._stored = StoredTensors.open(path)
        self._reader = self._stored.reader

    @property
    def path(self) -> str:
        return self._reader.path

    @property
    def header(self) -> dict:
        return self._reader.header

    def info(self, name: str) -> TensorEntry:
        """Stored metadata of one tensor: dtype, shape, strategy, sizes, error statistics."""
        return self._reader.entry(name)

    def read(self, name: str, start: int | None = None, stop: int | None = None) -> np.ndarray:
        """Rows ``[start, stop)`` of a tensor (along its first axis)."""
        return self._stored.read_tensor(name, start, stop, self._bits)

    def stored_chunks(self, name: str) -> Iterator[StoredChunk]:
        """Tensor ``name``'s chunks as stored (payload, meta, rows), checksums checked, for code
        that computes on the encoded form (the matmul kernels) instead of decoding."""
        return self._stored.stored_chunks(name)

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._reader:
            raise KeyError(name)
        return self._stored.read_tensor(name, bits=self._bits)

    def __iter__(self) -> Iterator[str]:
        return (entry.name for entry in self._reader.entries)

    def __len__(self) -> int:
        return len(self._reader.entries)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._reader

    def close(self) -> None:
        self._reader.close()

    def __enter__(self) -> Container:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Container({self.path!r}, {len(self)} tensors)"


def open_container(path: str | os.PathLike, bits: int | None = None) -> Container:
    """A lazy mapping name -> array; ``bits=m`` decodes progressive tensors from their top m planes."""
    return Container(path, bits)


def load_state_dict(path: str | os.PathLike) -> dict:
    """Every tensor as a torch tensor (original dtype), keyed by name, for ``model.load_state_dict``."""
    from .formats.pytorch import from_numpy

    with Container(path) as container:
        return {name: from_numpy(container[name], container.info(name).dtype) for name in container}

"""The chunks ``bie plan -o plan.toml`` encoded, handed on to ``bie compress --policy plan.toml``.

A size budget makes the plan encode every chosen configuration on its whole tensor, chunked as
``compress`` will chunk it, for its exact bytes; ``compress --policy`` would encode the same
chunks again. ``bie plan -o plan.toml`` writes them to ``plan.toml.encoded`` (about the size of
the compressed model) and ``compress --policy plan.toml`` writes them from there instead.

Nothing stale is written: the file is used only when it was made by the same bie version and
the same strategy and codec code (a digest of their sources), for the same chunk size; a tensor
only when its dtype, shape, strategy, options and chunk rows are those ``compress`` plans; and a
chunk only when the digest of its original bytes, read from the source as ``compress`` reads
it, is the one the plan encoded, and its payload is intact (a digest of it). Every other chunk
is encoded as usual. The chunk's error is
measured by ``compress`` on the decoded payload, as for a chunk it encodes, so the container is
byte for byte the one ``compress --target-bits`` writes.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import struct
import threading
from pathlib import Path

from .. import __version__

#: the file beside a policy that holds its plan's encodes
SUFFIX = ".encoded"
_MAGIC = b"BIE-PLAN-ENCODED-1\n"
_TRAILER = struct.Struct("<QQ8s")  # index offset, index length, end magic
_END = b"BIEPLANE"


def path_for(policy: str | os.PathLike) -> str:
    return os.fspath(policy) + SUFFIX


@functools.cache
def code_digest() -> str:
    """A digest of the code that makes a chunk's bytes (strategies, codecs, chunking): a
    development checkout whose encoders changed without a version bump does not reuse bytes."""
    from ..formats.cai import spec

    root = Path(__file__).resolve().parent.parent
    digest = spec.new_digest()
    files = [root / "tensorcodec.py", *sorted((root / "strategies").rglob("*.py")), *sorted((root / "codecs").rglob("*.py"))]
    for file in files:
        digest.update(file.relative_to(root).as_posix().encode() + b"\0")
        digest.update(file.read_bytes())
    return digest.hexdigest()


def _identity(chunk_size: int) -> dict:
    return {"tool_version": __version__, "code": code_digest(), "chunk_size": chunk_size}


def write_or_warn(path: str, plan, chunk_size: int) -> tuple[int | None, str | None]:
    """:func:`write`, or when the disk refuses it (full, read-only, not permitted, a directory
    in the way) no file at all: ``(size, None)`` or ``(None, a one-line warning)``. The plan
    does not need the file (``compress --policy`` then encodes every chunk), so this never
    fails; an older file of that name is removed rather than left beside a new policy."""
    try:
        return write(path, plan, chunk_size), None
    except OSError as error:
        with contextlib.suppress(OSError):
            if not os.path.isdir(path):
                os.unlink(path)
        reason = error.strerror or str(error) or type(error).__name__
        return None, (f"{path} not written ({reason}); the plan is complete, `bie compress --policy` "
                      f"will encode every chunk itself")


def write(path: str, plan, chunk_size: int) -> int:
    """Write the chunks of every tensor of ``plan`` (a ``ModelPlan`` made with a spool) that
    its whole-tensor encodes kept, atomically (nothing is left on an error); its size."""
    from ..paths import atomic_output

    tensors = {}
    with atomic_output(path) as temporary, open(temporary, "wb") as out:
        out.write(_MAGIC)
        offset = len(_MAGIC)
        for tensor in plan.tensors:
            encoded = tensor.encoded
            if encoded is None or encoded.spooled is None:
                continue
            chunks = []
            for (start, stop, meta, length), (spooled_at, _, chunk_digest) in zip(encoded.chunks, encoded.spooled,
                                                                                 strict=True):
                payload = encoded.spool.get(spooled_at, length)
                out.write(payload)
                chunks.append([start, stop, meta, offset, length, chunk_digest, _payload_digest(payload)])
                offset += length
            info, choice = tensor.info, tensor.choice
            tensors[info.name] = {"dtype": info.dtype, "shape": list(info.shape), "strategy": choice.strategy,
                                  "config": choice.config_dict, "chunks": chunks}
        index = json.dumps({**_identity(chunk_size), "tensors": tensors}, sort_keys=True).encode()
        out.write(index)
        out.write(_TRAILER.pack(offset, len(index), _END))
    return offset + len(index) + _TRAILER.size


def _payload_digest(payload: bytes) -> str:
    from ..formats.cai import spec

    digest = spec.new_digest()
    digest.update(payload)
    return digest.hexdigest()


def _chunk_entry(entry) -> bool:
    return (isinstance(entry, list) and len(entry) == 7 and isinstance(entry[2], dict)
            and all(type(v) is int and v >= 0 for v in (entry[0], entry[1], entry[3], entry[4]))
            and isinstance(entry[5], str) and isinstance(entry[6], str))


def _as_json(value):
    return json.loads(json.dumps(value, sort_keys=True))


class Handoff:
    """An opened ``plan.toml.encoded``: :meth:`lookup` a tensor plan's chunks, :meth:`payload`
    one chunk's (positional reads: safe from several threads)."""

    def __init__(self, path: str, handle, index: dict) -> None:
        self.path, self._handle, self._tensors = path, handle, index["tensors"]
        #: chunks compress looked up here, and those it wrote from here
        self.chunks = self.reused = 0
        self._lock = threading.Lock()

    @classmethod
    def open(cls, policy: str | os.PathLike, chunk_size: int) -> Handoff | None:
        """The handoff beside ``policy``, or None when there is none or it cannot be used
        (another bie version or code, another chunk size, unreadable)."""
        path = path_for(policy)
        try:
            handle = open(path, "rb")  # closed by close()
        except OSError:
            return None
        try:
            size = os.fstat(handle.fileno()).st_size
            if size < len(_MAGIC) + _TRAILER.size or os.pread(handle.fileno(), len(_MAGIC), 0) != _MAGIC:
                raise ValueError
            at, length, end = _TRAILER.unpack(os.pread(handle.fileno(), _TRAILER.size, size - _TRAILER.size))
            if end != _END or at + length + _TRAILER.size != size:
                raise ValueError
            index = json.loads(os.pread(handle.fileno(), length, at))
            if {k: index.get(k) for k in ("tool_version", "code", "chunk_size")} != _identity(chunk_size):
                raise ValueError
            if not isinstance(index.get("tensors"), dict):
                raise ValueError
        except (ValueError, OSError, struct.error):
            handle.close()
            return None
        return cls(path, handle, index)

    def lookup(self, plan) -> list | None:
        """``[row_start, row_stop, meta, offset, length, chunk digest, payload digest]`` per chunk
        of the tensor ``plan`` (a ``TensorPlan`` of compress) when this file holds exactly that
        encode."""
        with self._lock:
            self.chunks += plan.chunk_count
        entry = self._tensors.get(plan.info.name)
        if (entry is None or entry.get("dtype") != plan.info.dtype or entry.get("shape") != list(plan.info.shape)
                or entry.get("strategy") != plan.strategy or entry.get("config") != _as_json(plan.config_dict)):
            return None
        chunks = entry.get("chunks")
        if (not isinstance(chunks, list) or not all(map(_chunk_entry, chunks))
                or [tuple(c[:2]) for c in chunks] != [plan.chunk_rows(n) for n in range(plan.chunk_count)]):
            return None
        return chunks

    def payload(self, entry: list) -> bytes | None:
        """The payload of one chunk ``entry`` (from :meth:`lookup`), or None when the file does
        not hold it intact."""
        _, _, _, offset, length, _, digest = entry
        try:
            data = os.pread(self._handle.fileno(), length, offset)
        except OSError:
            return None
        if len(data) != length or _payload_digest(data) != digest:
            return None
        with self._lock:
            self.reused += 1
        return data

    def close(self) -> None:
        self._handle.close()

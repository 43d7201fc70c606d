"""Sharded safetensors out: a container made from a sharded checkpoint back to its shards.

Compressing a sharded directory (or its ``*.index.json``) stores, besides the
tensors, each shard's header bytes and the index file verbatim as blobs (see
:func:`shard_blobs`); the header's ``source.metadata.safetensors.shards``
lists every shard's tensors in file order. :func:`write_directory` writes the
same shard files, the same index and the same ``__metadata__`` back,
byte-identical to the input: a safetensors data section is the tensors' bytes
back to back in header order with no holes (the format forbids them), so the
stored header plus the decoded tensors is the whole file.

With a subset of tensors (``--tensor``) the shards that hold them are written
with headers rebuilt for just those tensors (keeping each shard's
``__metadata__``) and an index that names only them.
"""

from __future__ import annotations

import builtins
import json
import os
from collections.abc import Iterable

import numpy as np

from ..errors import BadInputError, CorruptContainerError
from . import safetensors
from .base import TensorInfo

SHARD_BLOB = "safetensors.shard-header:"  # + shard file name
INDEX_BLOB = "safetensors.index:"  # + index file name


def shard_blobs(shard_headers: dict[str, bytes], index_path: str | None) -> dict[str, bytes]:
    """Blobs that let :func:`write_directory` rebuild the shards byte for byte."""
    blobs = {SHARD_BLOB + name: header for name, header in shard_headers.items()}
    if index_path is not None:
        with builtins.open(index_path, "rb") as handle:
            blobs[INDEX_BLOB + os.path.basename(index_path)] = handle.read()
    return blobs


def shard_layout(metadata: dict) -> dict[str, list[str]] | None:
    """``{shard file name: [tensor names in file order]}`` of a container made from
    a sharded safetensors checkpoint, else None."""
    shards = ((metadata.get("safetensors") or {}).get("shards") or {}).get("files")
    if not isinstance(shards, dict) or not all(
        isinstance(k, str) and isinstance(v, list) and all(isinstance(n, str) for n in v) for k, v in shards.items()
    ):
        return None
    return shards


def _safe_file_name(name: str) -> str:
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise CorruptContainerError(f"corrupt container: shard file name {name!r} is not a plain file name")
    return name


def write_directory(
    directory: str,
    tensors: list[TensorInfo],
    chunks: Iterable[tuple[str, np.ndarray]],
    metadata: dict,
    blobs: dict[str, bytes],
) -> list[str]:
    """Write the shards (and index) into the existing empty ``directory``; chunks arrive
    in ``tensors`` order. Returns the file names written."""
    shards = shard_files(tensors, metadata, blobs)
    stream = iter(chunks)
    pending: list[tuple[str, np.ndarray]] = []  # a chunk read past the end of a shard's tensors
    written = []
    for file_name, header, infos in shards:
        names = {info.name for info in infos}
        shard_chunks = _take_while(stream, pending, names)
        safetensors.write_data(os.path.join(directory, file_name), header, infos, shard_chunks)
        written.append(file_name)
    return written + write_index(directory, tensors, metadata, shards, blobs)


def shard_files(tensors: list[TensorInfo], metadata: dict,
                blobs: dict[str, bytes]) -> list[tuple[str, bytes, list[TensorInfo]]]:
    """``(file name, header bytes, tensors in file order)`` of every shard that holds
    ``tensors``, in ``tensors`` order (checked against the stored layout and headers)."""
    layout = shard_layout(metadata)
    if layout is None:
        raise BadInputError("this container was not made from a sharded safetensors checkpoint; "
                            "give an output file name instead of a directory")
    wanted = {info.name: info for info in tensors}
    complete = _complete(tensors, layout)
    # shards in the order their tensors come (the stored layout is a JSON object: key order is not kept)
    owner = {name: _safe_file_name(file_name) for file_name, names in layout.items() for name in names}
    by_shard: list[tuple[str, list[TensorInfo]]] = []
    for info in tensors:
        file_name = owner.get(info.name)
        if file_name is None:
            raise CorruptContainerError(f"corrupt container: shard layout does not name tensor {info.name!r}")
        if not by_shard or by_shard[-1][0] != file_name:
            if any(done == file_name for done, _ in by_shard):
                raise CorruptContainerError("corrupt container: a shard's tensors are not stored together")
            by_shard.append((file_name, []))
        by_shard[-1][1].append(info)
    shards = []
    for file_name, infos in by_shard:
        order = [n for n in layout[file_name] if n in wanted]
        if order != [info.name for info in infos]:
            raise CorruptContainerError(f"corrupt container: tensors of shard {file_name} are out of order")
        header = blobs.get(SHARD_BLOB + file_name)
        if header is None or not complete:
            header = safetensors.build_header(infos, _shard_metadata(header, metadata))
        else:
            _check_header(header, file_name, infos)
        shards.append((file_name, header, infos))
    return shards


def write_index(directory: str, tensors: list[TensorInfo], metadata: dict,
                shards: list[tuple[str, bytes, list[TensorInfo]]], blobs: dict[str, bytes]) -> list[str]:
    """Write the stored index file(s) into ``directory`` (for a subset of tensors, naming
    only them; ``shards`` from :func:`shard_files`); returns their names."""
    complete = _complete(tensors, shard_layout(metadata) or {})
    wanted = {info.name: info for info in tensors}
    written = []
    for name, data in blobs.items():
        if not name.startswith(INDEX_BLOB):
            continue
        index_name = _safe_file_name(name[len(INDEX_BLOB):])
        if not complete:
            data = _subset_index(data, wanted, [(file_name, infos) for file_name, _, infos in shards])
        with builtins.open(os.path.join(directory, index_name), "wb") as handle:
            handle.write(data)
        written.append(index_name)
    return written


def _complete(tensors: list[TensorInfo], layout: dict[str, list[str]]) -> bool:
    """Whether ``tensors`` are all the layout's tensors (not a ``--tensor`` subset)."""
    all_names = [name for names in layout.values() for name in names]
    names = {info.name for info in tensors}
    return len(names) == len(all_names) and names == set(all_names)


def _take_while(stream, pending: list, names: set[str]):
    """Chunks from ``stream`` while they belong to ``names``; the first that does not is kept in ``pending``."""
    while True:
        if pending:
            item = pending.pop()
        else:
            item = next(stream, None)
            if item is None:
                return
        if item[0] not in names:
            pending.append(item)
            return
        yield item


def _shard_metadata(header: bytes | None, metadata: dict) -> dict | None:
    """The shard's own ``__metadata__`` (from its stored header), else the container's."""
    if header is not None and len(header) > 8:
        try:
            parsed = json.loads(header[8:])
            if isinstance(parsed, dict) and isinstance(parsed.get("__metadata__"), dict):
                return parsed["__metadata__"]
        except (UnicodeDecodeError, json.JSONDecodeError):
            pass
    return (metadata.get("safetensors") or {}).get("__metadata__")


def _check_header(header: bytes, file_name: str, infos: list[TensorInfo]) -> None:
    """A stored header must describe exactly these tensors, back to back, or the shard
    written from it would not hold what the container decodes."""
    try:
        expected = safetensors.parse_header_bytes(header)
    except BadInputError as exc:
        raise CorruptContainerError(f"corrupt container: stored header of shard {file_name}: {exc}") from None
    if expected != [(info.name, info.dtype, tuple(info.shape)) for info in infos]:
        raise CorruptContainerError(f"corrupt container: stored header of shard {file_name} does not match its tensors")


def _subset_index(data: bytes, wanted: dict, by_shard) -> bytes:
    try:
        index = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError):
        index = {}
    if not isinstance(index, dict):
        index = {}
    owner = {info.name: file_name for file_name, infos in by_shard for info in infos}
    index["weight_map"] = {name: owner[name] for name in wanted}
    return (json.dumps(index, indent=2) + "\n").encode()

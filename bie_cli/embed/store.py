"""Codecs and codes as ``.cai`` containers, written by the ordinary compress pipeline.

A codec file holds its parameters as tensors (``center``, ``thresholds`` and,
unless the identity, ``projection``; float32, lossless) and the rest in the
header's source metadata under ``bie_embed`` (kind ``codec``: method, dims,
keep, bits, fingerprint). A codes file holds one uint8 tensor ``codes``
``[n, ceil(bits/8)]`` and the fingerprint of the codec that made it, so a
search with another codec is refused. Both are ordinary containers: ``bie
inspect`` and ``bie verify`` work on them, and they are written atomically
(temporary file, then rename).
"""

from __future__ import annotations

import os

import numpy as np

from .. import dtypes, pipeline
from ..errors import BadInputError
from ..formats.base import CheckpointSource, TensorInfo
from .codec import BinaryCodec

SOURCE_FORMAT = "bie-embed"
METADATA_KEY = "bie_embed"
FORMAT_VERSION = 1
CODES_TENSOR = "codes"


def _write(path, tensors: dict[str, np.ndarray], metadata: dict, force: bool) -> None:
    destination = os.fspath(path)
    infos = [TensorInfo(name, dtypes.from_numpy(array.dtype).name, tuple(array.shape)) for name, array in tensors.items()]
    source = CheckpointSource(
        SOURCE_FORMAT, os.path.basename(destination), infos,
        lambda name, start, stop: tensors[name][start:stop],
        metadata={METADATA_KEY: {"version": FORMAT_VERSION, **metadata}},
    )
    pipeline.compress_source(source, destination, force=force)  # lossless, written atomically


def _read(path, kind: str) -> tuple[dict, dict[str, np.ndarray]]:
    from ..api import open_container

    with open_container(path) as container:
        source = container.header.get("source") or {}
        metadata = (source.get("metadata") or {}).get(METADATA_KEY)
        if source.get("format") != SOURCE_FORMAT or not isinstance(metadata, dict) or metadata.get("kind") != kind:
            raise BadInputError(f"{os.fspath(path)} is not a bie embed {kind} file (made by `bie embed`)")
        if metadata.get("version") != FORMAT_VERSION:
            raise BadInputError(f"{os.fspath(path)}: embed {kind} version {metadata.get('version')} is not supported")
        return metadata, {name: container[name] for name in container}


def save_codec(codec: BinaryCodec, path, *, force: bool = False) -> None:
    _write(path, codec.parameters(), {"kind": "codec", **codec.metadata()}, force)


def load_codec(path) -> BinaryCodec:
    metadata, tensors = _read(path, "codec")
    try:
        codec = BinaryCodec(
            metadata["method"], int(metadata["input_dim"]), int(metadata["dims"]), int(metadata["keep"]),
            tensors["center"], tensors["thresholds"], tensors.get("projection"), metadata.get("info") or {},
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise BadInputError(f"{os.fspath(path)}: embed codec is missing or has a bad field ({exc})") from None
    if codec.fingerprint() != metadata.get("fingerprint"):
        raise BadInputError(f"{os.fspath(path)}: codec parameters do not match their recorded fingerprint")
    return codec


def save_codes(codes: np.ndarray, codec: BinaryCodec, path, *, force: bool = False) -> None:
    metadata = {"kind": "codes", "bits": codec.bits, "codec": codec.fingerprint(), "method": codec.method}
    _write(path, {CODES_TENSOR: np.ascontiguousarray(codes, dtype=np.uint8)}, metadata, force)


def load_codes(path, codec: BinaryCodec | None = None) -> np.ndarray:
    """The codes; with ``codec``, refuse codes another codec made."""
    metadata, tensors = _read(path, "codes")
    codes = tensors.get(CODES_TENSOR)
    if codes is None or codes.dtype != np.uint8 or codes.ndim != 2:
        raise BadInputError(f"{os.fspath(path)}: no uint8 [n, bytes] tensor {CODES_TENSOR!r}")
    if codec is not None and metadata.get("codec") != codec.fingerprint():
        raise BadInputError(f"{os.fspath(path)} was encoded with another codec; encode the vectors with this one")
    return codes

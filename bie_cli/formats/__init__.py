"""Checkpoint formats: one module per format, each with ``sniff``/``open``/``write``.

Modules are imported on first use, so looking at a ``.cai`` file never pulls in
torch or onnx.
"""

from __future__ import annotations

import os
from importlib import import_module
from types import ModuleType

from ..errors import BadInputError
from ..paths import STDIO
from .base import CheckpointSource, TensorInfo

# name -> (module, output extensions); order is the sniffing order.
_FORMATS: dict[str, tuple[str, tuple[str, ...]]] = {
    "safetensors": ("bie_cli.formats.safetensors", (".safetensors",)),
    "pytorch": ("bie_cli.formats.pytorch", (".pt", ".pth", ".bin", ".ckpt")),
    "onnx": ("bie_cli.formats.onnx", (".onnx",)),
}

FORMAT_NAMES = tuple(_FORMATS)


def module(name: str) -> ModuleType:
    try:
        module_name, _ = _FORMATS[name]
    except KeyError:
        raise BadInputError(
            f"unknown checkpoint format {name!r}; bie knows {', '.join(_FORMATS)}"
        ) from None
    return import_module(module_name)


def format_for_output(path: str, explicit: str | None = None) -> str:
    """The format to write ``path`` in: ``explicit`` if given, else from its extension."""
    if explicit:
        module(explicit)  # validates the name
        return explicit
    if path == STDIO:
        raise BadInputError("-o - writes to stdout and has no extension to tell the format; add --format safetensors or --format pytorch")
    extension = os.path.splitext(path)[1].lower()
    for name, (_, extensions) in _FORMATS.items():
        if extension in extensions:
            return name
    raise BadInputError(
        f"cannot tell the output format from {path!r}; use an extension "
        f"({', '.join(e for _, exts in _FORMATS.values() for e in exts)}) or --format"
    )


def detect(path: str) -> str:
    """The format of an existing checkpoint (file or sharded directory)."""
    if not os.path.exists(path):
        raise BadInputError(f"no such file or directory: {path}")
    extension = os.path.splitext(path)[1].lower()
    by_extension = [name for name, (_, extensions) in _FORMATS.items() if extension in extensions]
    for name in by_extension:
        if module(name).sniff(path):
            return name
    for name in _FORMATS:
        if name not in by_extension and module(name).sniff(path):
            return name
    if by_extension and not os.path.isdir(path):
        # The name says what it should be; that format's reader explains what is wrong with it.
        return by_extension[0]
    raise BadInputError(
        f"{path} is not a checkpoint bie can read (safetensors file or directory, "
        "PyTorch .pt/.pth/.bin, ONNX)"
    )


def open_checkpoint(path: str, format: str | None = None) -> CheckpointSource:
    """Open a checkpoint lazily; the format is sniffed unless given. ``-`` reads a safetensors stream from stdin."""
    if path == STDIO:
        return _open_stdin(format)
    name = format or detect(path)
    if not os.path.exists(path):
        raise BadInputError(f"no such file or directory: {path}")
    return module(name).open(path)


def _open_stdin(format: str | None) -> CheckpointSource:
    """safetensors is the one format that can be read front to back (header, then tensors in
    offset order); PyTorch files are zip archives and ONNX protobufs, read by seeking."""
    import sys

    from . import safetensors

    if format is not None:
        module(format)  # validates the name
        if format != safetensors.name:
            raise BadInputError(
                f"{format} checkpoints cannot be read from a pipe (their readers seek); give the file's path, "
                "or convert to safetensors"
            )
    stream = sys.stdin.buffer
    if sys.stdin.isatty():
        raise BadInputError("- reads the checkpoint from stdin, which is a terminal; pipe a file in or give its path")
    head = b""
    while len(head) < 9:
        block = stream.read(9 - len(head))
        if not block:
            break
        head += block
    if format is None and not safetensors.sniff_bytes(head):
        looks_like = " (it looks like a PyTorch zip archive)" if head.startswith(b"PK") else ""
        if not head:
            raise BadInputError("stdin is empty; pipe a safetensors file in")
        raise BadInputError(
            f"stdin is not a safetensors file{looks_like}; only safetensors can be read from a pipe: "
            "give the file's path (or --format safetensors if it is one)"
        )
    return safetensors.open_stream(stream, STDIO, prefix=head)


__all__ = ["FORMAT_NAMES", "CheckpointSource", "TensorInfo", "detect", "format_for_output", "module", "open_checkpoint"]

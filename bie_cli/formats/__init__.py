"""Checkpoint formats: one module per format, each with ``sniff``/``open``/``write``.

Modules are imported on first use, so looking at a ``.cai`` file never pulls in
torch or onnx.
"""

from __future__ import annotations

import os
from importlib import import_module
from types import ModuleType

from ..errors import BadInputError
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
    """Open a checkpoint lazily; the format is sniffed unless given."""
    name = format or detect(path)
    if not os.path.exists(path):
        raise BadInputError(f"no such file or directory: {path}")
    return module(name).open(path)


__all__ = ["FORMAT_NAMES", "CheckpointSource", "TensorInfo", "detect", "format_for_output", "module", "open_checkpoint"]

"""PyTorch checkpoints (``.pt/.pth/.bin``) in and out.

Loading always uses ``torch.load(weights_only=True)`` (memory-mapped when the
file is in the zip format), so a pickle that would need to run code is
refused, never executed. The object tree around the tensors (wrappers such as
``{"state_dict": ...}``, key order, plain values like ``epoch``) is recorded
as a JSON skeleton and rebuilt on the way back; tensors that are the very
same view of one storage (tied weights) are stored once and re-tied.
"""

from __future__ import annotations

import builtins
import io
import math
import os
import pickle
from collections import OrderedDict
from collections.abc import Iterable

import numpy as np

from .. import dtypes
from ..errors import BadInputError, UnsafePickleError, UnsupportedDtypeError
from .base import CheckpointSource, TensorInfo

name = "pytorch"
extensions = (".pt", ".pth", ".bin", ".ckpt")

#: keys whose dict is "the" state dict: its tensors keep their bare names.
WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "module", "net")


def _torch():
    import torch

    return torch


def _dtype_table():
    torch = _torch()
    table = {
        torch.bool: "BOOL", torch.uint8: "U8", torch.int8: "I8", torch.int16: "I16",
        torch.int32: "I32", torch.int64: "I64", torch.float16: "F16", torch.bfloat16: "BF16",
        torch.float32: "F32", torch.float64: "F64", torch.complex64: "C64", torch.complex128: "C128",
    }
    for attr, canonical in (("uint16", "U16"), ("uint32", "U32"), ("uint64", "U64"),
                            ("float8_e4m3fn", "F8_E4M3"), ("float8_e5m2", "F8_E5M2")):
        if hasattr(torch, attr):
            table[getattr(torch, attr)] = canonical
    return table


def sniff(path: str) -> bool:
    if os.path.isdir(path):
        return False
    try:
        with builtins.open(path, "rb") as handle:
            head = handle.read(4)
    except OSError:
        return False
    # zip (torch >= 1.6) or a legacy pickle stream (protocol 2+ starts with 0x80)
    return head[:4] == b"PK\x03\x04" or head[:1] == b"\x80"


class PyTorchFileError(BadInputError):
    """The file is not a PyTorch checkpoint torch can read (truncated, corrupt, not a checkpoint)."""


class _CappedReads(io.FileIO):
    """A file whose ``read(n)`` never asks for more bytes than remain.

    torch's unpickler reads a string by the length the file declares; in a legacy
    file it reads the real file, and a damaged 4-byte length would make it allocate
    up to 4 GiB before finding the file too short."""

    def __init__(self, path: str) -> None:
        super().__init__(path, "rb")
        self._size = os.fstat(self.fileno()).st_size

    def read(self, size: int | None = -1) -> bytes:
        if size is not None and size > 0:
            size = min(size, max(0, self._size - self.tell()))
        return super().read(size)


def _load(path: str):
    torch = _torch()
    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc):
                raise
            # legacy (non-zip) files cannot be memory-mapped
            with _CappedReads(path) as handle:
                return torch.load(handle, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        needs_code = next((line for line in lines if "GLOBAL" in line or "Unsupported global" in line), None)
        if needs_code is None:
            # the restricted unpickler met an instruction it does not run: a damaged
            # stream, or one that needs more than weights_only=True allows
            detail = next((line for line in lines if "WeightsUnpickler error" in line), lines[0] if lines else "")
            raise PyTorchFileError(
                f"cannot read {path} as a PyTorch checkpoint: its pickle is corrupt or needs more than "
                f"weights_only=True allows ({detail.split('use case: ')[-1]})"
            ) from exc
        raise UnsafePickleError(
            f"refusing to load {path}: its pickle needs to run code ({needs_code}); "
            "bie loads PyTorch files with weights_only=True and never executes pickled code. "
            "Re-save the weights with torch.save(model.state_dict(), ...) or convert to safetensors"
        ) from exc
    except MemoryError:
        raise
    except Exception as exc:
        # Only torch runs inside this call, parsing the untrusted file: its zip reader,
        # its restricted unpickler (IndexError on an empty stack, AssertionError on a
        # missing storage key, struct.error, UnicodeDecodeError...) and the tensor
        # rebuilders say "damaged" with whatever exception they happen to hit.
        message = str(exc).splitlines()[0] if str(exc) else ""
        raise PyTorchFileError(
            f"cannot read {path} as a PyTorch checkpoint (truncated or corrupt?): "
            f"{type(exc).__name__}{': ' + message if message else ''}"
        ) from exc


def _json_value(value, where: str):
    if isinstance(value, float) and not math.isfinite(value):
        return {"type": "float", "value": repr(value)}
    if value is None or isinstance(value, (bool, int, float, str)):
        return {"type": "value", "value": value}
    raise BadInputError(f"cannot keep the {type(value).__name__} object at {where or 'top level'} of the checkpoint")


class _Flattener:
    """Walks the loaded object, naming tensors and recording the skeleton."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.torch = _torch()
        self.table = _dtype_table()
        self.tensors: dict[str, object] = {}
        self.infos: list[TensorInfo] = []
        self.views: dict[tuple, str] = {}

    def tensor_node(self, tensor, name: str) -> dict:
        if tensor.dtype not in self.table:
            raise UnsupportedDtypeError(f"tensor {name!r} in {self.path} has dtype {tensor.dtype}, which bie cannot store")
        if tensor.is_sparse or tensor.layout != self.torch.strided:
            raise UnsupportedDtypeError(f"tensor {name!r} in {self.path} is not a dense (strided) tensor")
        if tensor.numel():
            key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape), tuple(tensor.stride()), tensor.dtype)
            tied = self.views.get(key)
            if tied is not None:
                return {"type": "alias", "of": tied}
            self.views[key] = name
        if name in self.tensors:
            raise BadInputError(f"duplicate tensor name {name!r} in {self.path}")
        self.tensors[name] = tensor
        self.infos.append(TensorInfo(name, self.table[tensor.dtype], tuple(tensor.shape)))
        return {"type": "tensor", "name": name}

    def walk(self, obj, prefix: str) -> dict:
        if isinstance(obj, self.torch.Tensor):
            return self.tensor_node(obj, prefix or "tensor")
        if isinstance(obj, dict):
            items = []
            for key, value in obj.items():
                if not isinstance(key, (str, int)) or isinstance(key, bool):
                    raise BadInputError(f"cannot keep dict key {key!r} (type {type(key).__name__}) in {self.path}")
                child = f"{prefix}.{key}" if prefix else str(key)
                items.append([key, self.walk(value, child)])
            kind = "ordered_dict" if isinstance(obj, OrderedDict) else "dict"
            return {"type": kind, "items": items}
        if isinstance(obj, (list, tuple)):
            kind = "list" if isinstance(obj, list) else "tuple"
            return {"type": kind, "items": [self.walk(v, f"{prefix}.{i}" if prefix else str(i)) for i, v in enumerate(obj)]}
        if isinstance(obj, self.torch.Size):
            return {"type": "size", "value": list(obj)}
        return _json_value(obj, prefix)


def _wrapper_prefix(obj) -> str | None:
    """The key of a ``{"state_dict": {...}}``-style wrapper whose dict holds every tensor."""
    torch = _torch()
    if not isinstance(obj, dict):
        return None

    def has_tensor(value) -> bool:
        if isinstance(value, torch.Tensor):
            return True
        if isinstance(value, dict):
            return any(has_tensor(v) for v in value.values())
        if isinstance(value, (list, tuple)):
            return any(has_tensor(v) for v in value)
        return False

    holders = [key for key, value in obj.items() if has_tensor(value)]
    if len(holders) == 1 and holders[0] in WRAPPER_KEYS and isinstance(obj[holders[0]], dict):
        return holders[0]
    return None


def open(path: str) -> CheckpointSource:
    obj = _load(path)
    flattener = _Flattener(path)
    wrapper = _wrapper_prefix(obj)
    if wrapper is not None:
        # The wrapped state dict keeps bare names; the rest of the top level is walked normally.
        items = []
        for key, value in obj.items():
            node = flattener.walk(value, "" if key == wrapper else str(key))
            items.append([key, node])
        skeleton = {"type": "ordered_dict" if isinstance(obj, OrderedDict) else "dict", "items": items}
    else:
        skeleton = flattener.walk(obj, "")
    torch = flattener.torch
    table = flattener.table

    def read_rows(tensor_name: str, row_start: int, row_stop: int) -> np.ndarray:
        tensor = flattener.tensors[tensor_name]
        # detached: a tensor saved with requires_grad=True (a Parameter) refuses .numpy()
        part = (tensor if tensor.dim() == 0 else tensor[row_start:row_stop]).detach()
        return to_numpy(part.contiguous(), table[tensor.dtype], torch)

    metadata = {"pytorch": {"skeleton": skeleton, "wrapper": wrapper}}
    source = CheckpointSource(format=name, path=path, tensors=flattener.infos, read_rows=read_rows, metadata=metadata)
    source.close_callbacks.append(flattener.tensors.clear)
    return source


def to_numpy(tensor, canonical: str, torch=None) -> np.ndarray:
    """A contiguous CPU tensor as a numpy array of the canonical dtype, bytes untouched."""
    np_dtype = dtypes.get(canonical).numpy
    if canonical in ("BF16", "F16"):
        raw = tensor.view(torch.int16).numpy()
    elif canonical in ("F8_E4M3", "F8_E5M2"):
        raw = tensor.view(torch.uint8).numpy()
    elif canonical in ("U16", "U32", "U64"):
        signed = {"U16": torch.int16, "U32": torch.int32, "U64": torch.int64}[canonical]
        raw = tensor.view(signed).numpy()
    else:
        raw = tensor.numpy()
    return raw.view(np_dtype)


def from_numpy(array: np.ndarray, canonical: str):
    torch = _torch()
    table = {v: k for k, v in _dtype_table().items()}
    if canonical not in table:
        raise UnsupportedDtypeError(f"this torch cannot hold dtype {canonical}")
    target = table[canonical]
    # np.ascontiguousarray would turn a 0-d array into shape (1,); np.array(copy) keeps the shape
    array = np.array(array, copy=True, order="C")
    if canonical in ("BF16", "F16"):
        return torch.from_numpy(array.view(np.int16)).view(target)
    if canonical in ("F8_E4M3", "F8_E5M2"):
        return torch.from_numpy(array.view(np.uint8)).view(target)
    if canonical in ("U16", "U32", "U64"):
        signed = {"U16": np.int16, "U32": np.int32, "U64": np.int64}[canonical]
        return torch.from_numpy(array.view(signed)).view(target)
    return torch.from_numpy(array)


def _rebuild(node: dict, tensors: dict):
    kind = node.get("type")
    if kind == "tensor":
        return tensors[node["name"]]
    if kind == "alias":
        return tensors[node["of"]]
    if kind in ("dict", "ordered_dict"):
        built = OrderedDict() if kind == "ordered_dict" else {}
        for key, child in node["items"]:
            built[key] = _rebuild(child, tensors)
        return built
    if kind == "list":
        return [_rebuild(child, tensors) for child in node["items"]]
    if kind == "tuple":
        return tuple(_rebuild(child, tensors) for child in node["items"])
    if kind == "size":
        return _torch().Size(node["value"])
    if kind == "float":
        return float(node["value"])
    if kind == "value":
        return node["value"]
    raise BadInputError(f"unknown PyTorch structure node {kind!r} in the container")


def write(
    path: str,
    tensors: list[TensorInfo],
    chunks: Iterable[tuple[str, np.ndarray]],
    metadata: dict,
    blobs: dict[str, bytes] | None = None,
) -> None:
    """Write a ``torch.save`` file. torch.save needs every tensor in memory at once."""
    torch = _torch()
    parts: dict[str, list[np.ndarray]] = {info.name: [] for info in tensors}
    for tensor_name, array in chunks:
        parts[tensor_name].append(array)
    built: dict = {}
    for info in tensors:
        np_dtype = dtypes.get(info.dtype).numpy
        pieces = parts.pop(info.name)
        if not info.shape:
            array = pieces[0].reshape(()) if pieces else np.zeros((), np_dtype)
        elif pieces:
            array = np.concatenate(pieces, axis=0) if len(pieces) > 1 else pieces[0]
        else:
            array = np.zeros(info.shape, np_dtype)
        built[info.name] = from_numpy(array.reshape(info.shape), info.dtype)
    skeleton = (metadata.get("pytorch") or {}).get("skeleton")
    if skeleton is not None and _skeleton_names(skeleton) == set(built):
        obj = _rebuild(skeleton, built)
    else:
        # another source format, or a subset of tensors: a plain state dict in stored order
        obj = OrderedDict((info.name, built[info.name]) for info in tensors)
    torch.save(obj, path)  # a path or stdout: torch.save's zip writer never seeks back


def _skeleton_names(node: dict) -> set[str]:
    kind = node.get("type")
    if kind == "tensor":
        return {node["name"]}
    if kind in ("dict", "ordered_dict"):
        return set().union(*(_skeleton_names(child) for _, child in node["items"])) if node["items"] else set()
    if kind in ("list", "tuple"):
        return set().union(*(_skeleton_names(child) for child in node["items"])) if node["items"] else set()
    return set()

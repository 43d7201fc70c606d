"""Writing an ONNX model back: the stored graph with every extracted tensor put in place."""

from __future__ import annotations

import builtins
import contextlib
import os
import re
from collections.abc import Iterable

import numpy as np

from ... import dtypes
from ...errors import BadInputError
from ...paths import create_temporary
from ..base import TensorInfo
from .constants import (
    ALIGN_LARGE,
    ALIGN_LARGE_FROM,
    ALIGN_SMALL,
    BLOB_NAME,
    EXTERNAL_MIN_BYTES,
    MARKER_ATTRIBUTE_PREFIX,
    MARKER_LOCATION,
    MARKER_NAME_KEY,
    METADATA_KEY,
    PROTOBUF_LIMIT,
)
from .proto import DATA_LOCATION_EXTERNAL, ONNX_TO_CANONICAL, DataType

_PARTIAL_NAME = re.compile(r"^\.(?P<name>.+)\.[A-Za-z0-9_]{8}\.partial$")


def _final_name(path: str, final_path: str | None) -> str:
    """The file name the model will finally have (the pipeline writes to a temporary name)."""
    if final_path:
        return os.path.basename(final_path)
    base = os.path.basename(path)
    match = _PARTIAL_NAME.match(base)
    return match.group("name") if match else base


class _Target:
    """One marked place in the model that a tensor goes back into."""

    def __init__(self, tensor=None, attribute=None) -> None:
        self.tensor = tensor
        self.attribute = attribute

    def expected(self) -> tuple[str | None, tuple[int, ...]]:
        if self.attribute is not None:
            return ("F32" if self.attribute.name == "value_floats" else "I64"), None
        return ONNX_TO_CANONICAL.get(self.tensor.data_type), tuple(self.tensor.dims)


def _collect_targets(graph, targets: dict[str, _Target]) -> None:
    def add(key: str, target: _Target) -> None:
        if key in targets:
            raise BadInputError(f"the stored ONNX graph marks tensor {key!r} twice")
        targets[key] = target

    def tensor_marker(tensor) -> str | None:
        if tensor.data_location != DATA_LOCATION_EXTERNAL:
            return None
        entries = {entry.key: entry.value for entry in tensor.external_data}
        if entries.get("location") == MARKER_LOCATION:
            return entries.get(MARKER_NAME_KEY)
        return None

    for tensor in graph.initializer:
        key = tensor_marker(tensor)
        if key is not None:
            add(key, _Target(tensor=tensor))
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("t"):
                key = tensor_marker(attribute.t)
                if key is not None:
                    add(key, _Target(tensor=attribute.t))
            if attribute.doc_string.startswith(MARKER_ATTRIBUTE_PREFIX):
                add(attribute.doc_string[len(MARKER_ATTRIBUTE_PREFIX):], _Target(attribute=attribute))
            if attribute.HasField("g"):
                _collect_targets(attribute.g, targets)
            for subgraph in attribute.graphs:
                _collect_targets(subgraph, targets)


def _fill_typed(tensor, array: np.ndarray) -> None:
    """Store ``array`` in the typed field the ONNX spec gives its data type."""
    flat = array.reshape(-1)
    kind = tensor.data_type
    if kind in (DataType.FLOAT, DataType.COMPLEX64):  # complex64: interleaved real, imaginary
        tensor.float_data.extend(flat.view(np.float32).tolist())
    elif kind in (DataType.DOUBLE, DataType.COMPLEX128):
        tensor.double_data.extend(flat.view(np.float64).tolist())
    elif kind == DataType.INT64:
        tensor.int64_data.extend(flat.tolist())
    elif kind in (DataType.UINT32, DataType.UINT64):
        tensor.uint64_data.extend(flat.tolist())
    elif kind in (DataType.FLOAT16, DataType.BFLOAT16):  # 16-bit floats travel as their bit patterns
        tensor.int32_data.extend(flat.view(np.uint16).tolist())
    elif kind in (DataType.FLOAT8E4M3FN, DataType.FLOAT8E5M2):
        tensor.int32_data.extend(flat.view(np.uint8).tolist())
    else:  # int32, int16, int8, uint16, uint8, bool
        tensor.int32_data.extend(flat.astype(np.int32).tolist())


def _restore_embedded(target: _Target, array: np.ndarray, entry: dict) -> None:
    if target.attribute is not None:
        attribute = target.attribute
        if attribute.name == "value_floats":
            attribute.floats.extend(array.reshape(-1).tolist())
        else:
            attribute.ints.extend(array.reshape(-1).tolist())
        if "doc_string" in entry:
            attribute.doc_string = entry["doc_string"]
        else:
            attribute.ClearField("doc_string")  # proto2: an empty string would still be written
        return
    tensor = target.tensor
    del tensor.external_data[:]
    tensor.ClearField("data_location")
    if entry.get("storage") == "typed":
        _fill_typed(tensor, array)
    else:
        tensor.raw_data = np.ascontiguousarray(array).tobytes()


def _as_bytes(array: np.ndarray) -> memoryview:
    return memoryview(np.ascontiguousarray(array).reshape(-1).view(np.uint8))


def write(
    path: str,
    tensors: list[TensorInfo],
    chunks: Iterable[tuple[str, np.ndarray]],
    metadata: dict,
    blobs: dict[str, bytes],
    external_data: bool | None = None,
    final_path: str | None = None,
) -> None:
    """Rebuild the ONNX model stored in ``blobs`` with the given tensors at ``path``.

    ``external_data``: True puts tensors of ``EXTERNAL_MIN_BYTES`` and more in
    ``<model name>.data`` beside the model; False embeds everything (refused
    over 2 GB); None (default) uses external data when the source model did
    or when the model would pass protobuf's 2 GB limit. ``final_path`` is the
    name the model file will be renamed to, which names the data file; when
    not given it is taken from ``path`` (a pipeline temporary
    ``.NAME.XXXXXXXX.partial`` gives ``NAME``).

    Chunks MUST come in ``tensors`` order, each tensor's rows in order.
    Nothing is left at ``path`` or beside it on error.
    """
    to_stream = hasattr(path, "write")  # stdout: one pass, no file beside it
    if not to_stream:
        path = os.fspath(path)
    blob = (blobs or {}).get(BLOB_NAME)
    if blob is None:
        raise BadInputError(
            "this container holds no ONNX graph (it was not made from an ONNX model); "
            "decompress it to .safetensors or .pt instead"
        )
    import onnx
    from google.protobuf.message import DecodeError

    model = onnx.ModelProto()
    try:
        model.ParseFromString(blob)
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise BadInputError(f"the stored ONNX graph is corrupt: {exc}") from None
    targets: dict[str, _Target] = {}
    _collect_targets(model.graph, targets)
    onnx_metadata = (metadata or {}).get(METADATA_KEY) or {}
    entries = {entry.get("name"): entry for entry in onnx_metadata.get("tensors", []) if isinstance(entry, dict)}

    infos = {info.name: info for info in tensors}
    if len(infos) != len(tensors):
        raise BadInputError("the tensor list names a tensor twice")
    missing = [key for key in targets if key not in infos]
    if missing:
        raise BadInputError(
            f"the ONNX graph needs tensor {missing[0]!r}, which is not being written "
            f"({len(missing)} missing); an ONNX model can only be rebuilt with all its tensors"
        )
    for info in tensors:
        target = targets.get(info.name)
        if target is None:
            raise BadInputError(f"tensor {info.name!r} has no place in the stored ONNX graph")
        dtype_name, shape = target.expected()
        if shape is None:
            shape = (info.numel,) if len(info.shape) == 1 else None
        if info.dtype != dtype_name or shape is None or info.shape != shape:
            raise BadInputError(
                f"tensor {info.name!r} is {info.dtype} {list(info.shape)} but the ONNX graph needs "
                f"{dtype_name} {list(shape) if shape is not None else '1-D'}; a strategy changed its dtype or shape"
            )

    total = len(blob) + sum(dtypes.nbytes(info.dtype, info.shape) for info in tensors)
    if external_data is None:
        external_data = bool(onnx_metadata.get("external_data")) or total > PROTOBUF_LIMIT
    elif not external_data and total > PROTOBUF_LIMIT:
        raise BadInputError(
            f"the model is {total / 2**30:.2f} GiB, over protobuf's 2 GB limit for one file; use --external-data"
        )
    if to_stream and external_data:
        raise BadInputError(
            "this ONNX model keeps its weights in a separate .data file, and two files cannot go to stdout; "
            "give -o FILE.onnx (or --no-external-data if it is under 2 GB)"
        )
    if to_stream:
        _receive(tensors, chunks, targets, entries, None, "")
        path.write(model.SerializeToString())
        path.flush()
        return

    directory = os.path.dirname(os.path.abspath(path))
    data_name = _final_name(path, final_path) + ".data"
    data_path = os.path.join(directory, data_name)
    data_temporary = None
    data_out = None
    try:
        if external_data:
            handle, data_temporary = create_temporary(data_path)  # umask permissions, like the model file
            data_out = os.fdopen(handle, "wb", buffering=1 << 20)
        _receive(tensors, chunks, targets, entries, data_out, data_name)
        if data_out is not None:
            data_out.close()
        serialized = model.SerializeToString()
        with builtins.open(path, "wb") as out:
            out.write(serialized)
        del serialized
        if data_temporary is not None:
            os.replace(data_temporary, data_path)
            data_temporary = None
    except BaseException:
        if data_out is not None:
            with contextlib.suppress(OSError):
                data_out.close()
        if data_temporary is not None:
            with contextlib.suppress(OSError):
                os.unlink(data_temporary)
        raise


def _receive(tensors, chunks, targets, entries, data_out, data_name: str) -> None:
    """Take every chunk and put it in place: into the data file or the model."""
    order = iter(tensors)
    current: TensorInfo | None = None
    parts: list[np.ndarray] = []
    rows = 0
    streamed_from = None  # data-file offset of the current tensor when it streams there
    position = 0

    def finish() -> None:
        nonlocal parts, rows, streamed_from
        if current is None:
            return
        if rows != current.rows:
            raise BadInputError(f"tensor {current.name!r} received {rows} of its {current.rows} rows")
        target = targets[current.name]
        if streamed_from is not None:
            tensor = target.tensor
            del tensor.external_data[:]
            tensor.data_location = DATA_LOCATION_EXTERNAL
            for key, value in (("location", data_name), ("offset", str(streamed_from)),
                               ("length", str(dtypes.nbytes(current.dtype, current.shape)))):
                item = tensor.external_data.add()
                item.key, item.value = key, value
        else:
            array = parts[0] if len(parts) == 1 else np.concatenate(parts)
            _restore_embedded(target, array.reshape(current.shape), entries.get(current.name, {}))
        parts, rows, streamed_from = [], 0, None

    def start(info: TensorInfo) -> None:
        nonlocal streamed_from, position
        nbytes = dtypes.nbytes(info.dtype, info.shape)
        target = targets[info.name]
        if data_out is not None and target.tensor is not None and nbytes >= EXTERNAL_MIN_BYTES:
            alignment = ALIGN_LARGE if nbytes >= ALIGN_LARGE_FROM else ALIGN_SMALL
            padding = -position % alignment
            data_out.write(b"\0" * padding)
            position += padding
            streamed_from = position

    for tensor_name, array in chunks:
        if current is None or tensor_name != current.name:
            finish()
            current = next(order, None)
            if current is None or current.name != tensor_name:
                raise BadInputError(
                    f"chunks out of order: got {tensor_name!r}, expected "
                    f"{current.name if current else 'no more tensors'!r}"
                )
            start(current)
        expected_dtype = dtypes.get(current.dtype).numpy
        if array.dtype.newbyteorder("=") != expected_dtype.newbyteorder("=") or array.dtype.byteorder == ">":
            raise BadInputError(f"tensor {current.name!r}: a chunk is {array.dtype}, the graph needs {current.dtype}")
        chunk_rows = array.shape[0] if current.shape else 1
        if current.shape and tuple(array.shape[1:]) != current.shape[1:]:
            raise BadInputError(f"tensor {current.name!r}: a chunk has shape {array.shape}, rows of {current.shape} expected")
        if rows + chunk_rows > current.rows:
            raise BadInputError(f"tensor {current.name!r} received more than its {current.rows} rows")
        rows += chunk_rows
        if streamed_from is not None:
            view = _as_bytes(array)
            data_out.write(view)
            position += view.nbytes
        else:
            parts.append(array)
    finish()
    for info in order:  # bie never extracts empty tensors, so every tensor has rows
        raise BadInputError(f"tensor {info.name!r} received no data")

"""Opening an ONNX model: strip the weights at the wire level, parse the rest, mark tensors.

See the package docstring for where weights live and how they are named.
"""

from __future__ import annotations

import builtins
import mmap
import os
from dataclasses import dataclass

import numpy as np

from ... import dtypes
from ...errors import BadInputError, UnsupportedDtypeError
from ..base import CheckpointSource, TensorInfo
from .constants import (
    BLOB_NAME,
    CONSTANT_MIN_BYTES,
    MARKER_ATTRIBUTE_PREFIX,
    MARKER_LOCATION,
    MARKER_NAME_KEY,
    METADATA_KEY,
)
from .errors import OnnxModelError
from .external import ExternalData, FileReader
from .proto import DATA_LOCATION_EXTERNAL, ONNX_TO_CANONICAL, TYPED_FIELDS, DataType, itemsize_hint
from .wire import GraphTree, WireStripper

FORMAT_NAME = "onnx"


@dataclass
class _Slot:
    """Where one extracted tensor's bytes are: a file range, or an array in memory."""

    info: TensorInfo
    file: str | None = None
    offset: int = 0
    array: np.ndarray | None = None


def _numel(dims) -> int:
    count = 1
    for dim in dims:
        count *= dim
    return count


class _Extractor:
    """Walks the parsed, stripped model beside the wire tree and marks tensors."""

    def __init__(self, path: str, files: FileReader) -> None:
        self.path = path
        self.files = files
        self.external = ExternalData(path)
        self.slots: dict[str, _Slot] = {}
        self.entries: list[dict] = []
        self.kept: list[dict] = []
        self.small_constants = 0

    # naming ---------------------------------------------------------------------
    def unique_name(self, base: str) -> str:
        stem = base or "constant"
        if stem not in self.slots:
            return stem
        counter = 1
        while f"{stem}#{counter}" in self.slots:
            counter += 1
        return f"{stem}#{counter}"

    # tensors ---------------------------------------------------------------------
    def tensor(self, tensor, raw: tuple[int, int] | None, base: str, kind: str, where: str) -> None:
        label = base or self.text(tensor.name, "a tensor name") or "<unnamed>"
        dims = list(tensor.dims)
        if any(d < 0 for d in dims):
            raise OnnxModelError(f"{self.path}: tensor {label!r} has a negative dimension")
        canonical = ONNX_TO_CANONICAL.get(tensor.data_type)
        external = tensor.data_location == DATA_LOCATION_EXTERNAL
        numel = _numel(dims)
        reason = None
        if tensor.data_type == DataType.STRING:
            reason = "string tensor"
        elif canonical is None:
            reason = f"ONNX data type {tensor.data_type} has no bie dtype"
        elif numel == 0:
            reason = "empty tensor"
        elif tensor.HasField("segment"):
            reason = "segmented tensor"
        elif kind != "initializer" and numel * dtypes.get(canonical).itemsize < CONSTANT_MIN_BYTES:
            reason = "small constant"
        if reason is not None:
            self.keep_in_graph(tensor, raw, label, where, reason, external)
            return
        nbytes = numel * dtypes.get(canonical).itemsize
        slot = _Slot(TensorInfo("", canonical, tuple(dims)))
        storage = "raw"
        if external:
            slot.file, slot.offset = self.external.location(tensor, label, nbytes)
        elif raw is not None:
            if raw[1] != nbytes:
                raise OnnxModelError(
                    f"{self.path}: tensor {label!r} holds {raw[1]} bytes of data but {canonical} {dims} needs {nbytes}"
                )
            slot.file, slot.offset = self.path, raw[0]
        elif any(len(getattr(tensor, field)) for field in TYPED_FIELDS):
            from onnx import numpy_helper

            try:
                array = numpy_helper.to_array(tensor)
            except Exception as exc:  # onnx raises plain ValueError/TypeError here
                raise OnnxModelError(f"{self.path}: tensor {label!r} has unreadable data: {exc}") from exc
            np_dtype = dtypes.get(canonical).numpy
            if array.size != numel:
                raise OnnxModelError(f"{self.path}: tensor {label!r} holds {array.size} values, its shape needs {numel}")
            array = np.ascontiguousarray(array)
            slot.array = array.view(np_dtype) if array.dtype.itemsize == np_dtype.itemsize else array.astype(np_dtype)
            slot.array = slot.array.reshape(dims)
            storage = "typed"
        else:
            raise OnnxModelError(f"{self.path}: tensor {label!r} ({canonical} {dims}) has no data")
        unique = self.unique_name(base)
        slot.info = TensorInfo(unique, canonical, tuple(dims))
        self.slots[unique] = slot
        for field in TYPED_FIELDS + ("raw_data",):
            tensor.ClearField(field)
        del tensor.external_data[:]
        tensor.data_location = DATA_LOCATION_EXTERNAL
        marker = tensor.external_data.add()
        marker.key, marker.value = "location", MARKER_LOCATION
        marker = tensor.external_data.add()
        marker.key, marker.value = MARKER_NAME_KEY, unique
        self.entries.append({"name": unique, "kind": kind, "where": where, "storage": storage, "external": external})

    def keep_in_graph(self, tensor, raw, label: str, where: str, reason: str, external: bool) -> None:
        if external:
            # The output model will not sit beside this data file: inline it.
            itemsize = itemsize_hint(tensor.data_type)
            if itemsize is None:
                raise UnsupportedDtypeError(
                    f"{self.path}: tensor {label!r} has ONNX data type {tensor.data_type} in external data, "
                    "which bie can neither store nor carry"
                )
            size = _numel(tensor.dims) * itemsize
            file_path, offset = self.external.location(tensor, label, size)
            tensor.raw_data = self.files.read(file_path, offset, size)
            del tensor.external_data[:]
            tensor.ClearField("data_location")
        elif raw is not None:
            tensor.raw_data = self.files.read(self.path, raw[0], raw[1])
        if reason == "small constant":
            self.small_constants += 1
        else:
            self.kept.append({"name": label, "where": where, "reason": reason})

    def list_attribute(self, attribute, base: str, where: str) -> None:
        floats = attribute.name == "value_floats"
        values = np.asarray(attribute.floats if floats else attribute.ints, dtype="<f4" if floats else "<i8")
        if values.nbytes < CONSTANT_MIN_BYTES:
            self.small_constants += 1
            return
        canonical = "F32" if floats else "I64"
        attribute.ClearField("floats" if floats else "ints")
        unique = self.unique_name(base)
        self.slots[unique] = _Slot(TensorInfo(unique, canonical, (values.size,)), array=values)
        entry = {"name": unique, "kind": f"constant.{attribute.name}", "where": where, "storage": "attribute"}
        if attribute.doc_string:
            entry["doc_string"] = attribute.doc_string
        attribute.doc_string = MARKER_ATTRIBUTE_PREFIX + unique
        self.entries.append(entry)

    def text(self, value, what: str) -> str:
        """A string field of the model; protobuf hands back bytes when they are not UTF-8."""
        if isinstance(value, bytes):
            raise OnnxModelError(f"{self.path}: {what} is not UTF-8 text ({value[:40]!r})")
        return value

    def inconsistent(self, what: str) -> OnnxModelError:
        return OnnxModelError(f"{self.path} is truncated or not an ONNX model: {what} did not parse consistently")

    def graph(self, graph, tree: GraphTree, where: str) -> None:
        if len(tree.initializers) != len(graph.initializer) or len(tree.nodes) != len(graph.node):
            raise self.inconsistent(f"graph {where}")
        for tensor, raw in zip(graph.initializer, tree.initializers, strict=True):
            self.tensor(tensor, raw, self.text(tensor.name, f"an initializer name in {where}"), "initializer", where)
        for node, attributes in zip(graph.node, tree.nodes, strict=True):
            node_name = self.text(node.name, f"a node name in {where}")
            if len(attributes) != len(node.attribute):
                raise self.inconsistent(f"node {node_name!r}")
            op_type = self.text(node.op_type, f"the operator of node {node_name!r}")
            is_constant = op_type == "Constant" and self.text(node.domain, f"the domain of node {node_name!r}") in ("", "ai.onnx")
            output = self.text(node.output[0], f"an output name of node {node_name!r}") if node.output else ""
            for attribute, attribute_tree in zip(node.attribute, attributes, strict=True):
                node_where = f"{where}/{op_type}:{node_name or output}"
                attribute_name = self.text(attribute.name, f"an attribute name of node {node_name!r}")
                if is_constant and attribute.HasField("t"):
                    if attribute_name == "value":
                        self.tensor(attribute.t, attribute_tree.tensor, output, "constant.value", where)
                    elif attribute_tree.tensor is not None:  # not a Constant's value: put its bytes back
                        attribute.t.raw_data = self.files.read(self.path, *attribute_tree.tensor)
                elif is_constant and attribute_name in ("value_floats", "value_ints") and (
                    attribute.floats if attribute_name == "value_floats" else attribute.ints
                ):
                    self.text(attribute.doc_string, f"the doc string of node {node_name!r}")
                    self.list_attribute(attribute, output, where)
                if attribute.HasField("g"):
                    self.graph(attribute.g, attribute_tree.graph, f"{node_where}/{attribute_name}")
                if len(attribute.graphs) != len(attribute_tree.graphs):
                    raise self.inconsistent(f"node {node_name!r}")
                for index, (subgraph, subtree) in enumerate(zip(attribute.graphs, attribute_tree.graphs, strict=True)):
                    self.graph(subgraph, subtree, f"{node_where}/{attribute_name}[{index}]")


def open(path: str) -> CheckpointSource:
    """Open an ONNX model lazily: the graph is parsed, weights are read on demand."""
    path = os.fspath(path)
    try:
        handle = builtins.open(path, "rb")
    except FileNotFoundError:
        raise BadInputError(f"no such file: {path}") from None
    except OSError as exc:
        raise BadInputError(f"cannot read {path}: {exc.strerror}") from None
    files = FileReader()
    try:
        with handle:
            size = os.fstat(handle.fileno()).st_size
            if size == 0:
                raise OnnxModelError(f"{path} is truncated or not an ONNX model: the file is empty")
            with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as buffer:
                stripped, tree = WireStripper(buffer, path).model(0, size)
        if tree is None:
            raise OnnxModelError(f"{path} is truncated or not an ONNX model: it has no graph")
        import onnx
        from google.protobuf.message import DecodeError

        model = onnx.ModelProto()
        try:
            model.ParseFromString(bytes(stripped))
        except (DecodeError, RuntimeError, ValueError) as exc:
            raise OnnxModelError(f"{path} is truncated or not an ONNX model: {exc}") from exc
        del stripped
        if model.ir_version <= 0:
            raise OnnxModelError(f"{path} is truncated or not an ONNX model: it has no IR version")
        extractor = _Extractor(path, files)
        extractor.graph(model.graph, tree, "graph")
        producer_name = extractor.text(model.producer_name, "the producer name")
        producer_version = extractor.text(model.producer_version, "the producer version")
        opset_import = [
            {"domain": extractor.text(o.domain, "an opset domain"), "version": o.version} for o in model.opset_import
        ]
        blob = model.SerializeToString()
    except BaseException:
        files.close()
        raise
    slots = extractor.slots

    def read_rows(tensor_name: str, row_start: int, row_stop: int) -> np.ndarray:
        slot = slots[tensor_name]
        info = slot.info
        if not 0 <= row_start <= row_stop <= info.rows:
            raise IndexError(f"rows {row_start}:{row_stop} out of range for {tensor_name!r} with {info.rows} rows")
        if slot.array is not None:
            return slot.array.copy() if not info.shape else slot.array[row_start:row_stop].copy()
        np_dtype = dtypes.get(info.dtype).numpy
        row_bytes = (info.numel // info.rows) * np_dtype.itemsize if info.rows else 0
        data = files.read(slot.file, slot.offset + row_start * row_bytes, (row_stop - row_start) * row_bytes)
        shape = info.shape if not info.shape else (row_stop - row_start, *info.shape[1:])
        # bytearray keeps the array writable (strategies may modify in place).
        return np.frombuffer(bytearray(data), dtype=np_dtype).reshape(shape)

    metadata = {
        METADATA_KEY: {
            "ir_version": model.ir_version,
            "opset_import": opset_import,
            "producer_name": producer_name,
            "producer_version": producer_version,
            "external_data": extractor.external.used,
            "tensors": extractor.entries,
            "kept_in_graph": extractor.kept,
            "small_constants_in_graph": extractor.small_constants,
        }
    }
    source = CheckpointSource(
        format=FORMAT_NAME, path=path, tensors=[slot.info for slot in slots.values()], read_rows=read_rows,
        metadata=metadata, blobs={BLOB_NAME: blob},
    )
    source.close_callbacks.append(files.close)
    return source

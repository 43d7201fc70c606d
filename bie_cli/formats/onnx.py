"""ONNX models in and out.

Reading
    Weights live in four places in an ONNX model: graph initializers,
    ``Constant`` nodes' attributes, the same two inside subgraphs (``If`` /
    ``Loop`` / ``Scan`` bodies), and, for big models, external data files.
    :func:`open` finds them all and serves their rows on demand:

    * The model file is memory-mapped and walked at the protobuf wire level
      (:class:`_WireStripper`). The walk copies every byte of the model
      except the ``raw_data`` of the tensors it extracts and notes where each
      of those lies in the file. Only the stripped model (the graph, a few
      MB at most) is ever parsed by protobuf, so opening a 1.9 GB model does
      not hold 1.9 GB of weights in memory; rows are read later with
      ``os.pread`` from the model file or the external data files.
    * Tensors stored in typed fields (``float_data``, ``int64_data``...) are
      rare and small; they are decoded into numpy arrays at open time.
    * The stripped model, with every extracted tensor marked (see
      ``MARKER_LOCATION``), travels in the container as the blob
      ``"onnx.model"``.

Naming (stable: it depends only on the model file)
    * an initializer keeps its own name, in the main graph or a subgraph;
    * a ``Constant`` node's tensor (``value``, ``value_floats``,
      ``value_ints``) is named after the node's output;
    * an empty name becomes ``constant``;
    * a name already taken gets ``#1``, ``#2``... appended, in
      walk order: main-graph initializers first, then nodes in order,
      depth-first into subgraphs, so main-graph initializers always keep
      their names.

Kept inside the graph (they travel, bit-exact, in the blob, not as tensors):
    ``Constant`` tensors under ``CONSTANT_MIN_BYTES`` (shapes, axes, scalars),
    strings, ONNX dtypes bie has no name for (int4, uint4, float4, float8
    *fnuz*, float8e8m0...), empty tensors, tensors split into ``segment``s,
    sparse initializers and ``sparse_value``, ``Constant`` scalar attributes
    (``value_float``, ``value_int``), tensor attributes of other operators
    (``ConstantOfShape``), and anything inside model-local ``functions``.
    Such a tensor stored as external data is read into the blob.

Writing
    :func:`write` parses the blob, finds the markers, and puts every tensor
    back where it came from with its name, dtype, shape and storage
    (``raw_data`` or typed field). With external data, tensors of at least
    ``EXTERNAL_MIN_BYTES`` stream straight into one ``<model>.onnx.data`` file
    beside the model (64 KiB-aligned from 1 MiB up), so memory stays at one
    chunk; embedded output has to hold the whole model, which protobuf caps
    at 2 GB anyway.
"""

from __future__ import annotations

import builtins
import contextlib
import mmap
import os
import re
import stat
import threading
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from .. import dtypes
from ..errors import BadInputError, UnsupportedDtypeError
from ..paths import create_temporary
from .base import CheckpointSource, TensorInfo

name = "onnx"
extensions = (".onnx",)

BLOB_NAME = "onnx.model"
METADATA_KEY = "onnx"

#: ``external_data`` location that marks a tensor whose data bie extracted.
MARKER_LOCATION = "bie:extracted"
#: ``external_data`` key holding the tensor's unique bie name.
MARKER_NAME_KEY = "bie_name"
#: ``doc_string`` prefix marking an extracted ``value_floats``/``value_ints`` attribute.
MARKER_ATTRIBUTE_PREFIX = "bie:extracted:"

#: protobuf refuses messages of 2 GiB and more; stay clear of it with a margin
#: for the graph and per-tensor overhead.
PROTOBUF_LIMIT = (1 << 31) - (64 << 20)
#: with external data, smaller tensors stay inside the model (like onnx's own default).
EXTERNAL_MIN_BYTES = 1024
#: tensors this large start on a 64 KiB boundary of the data file (mmap-friendly).
ALIGN_LARGE_FROM = 1 << 20
ALIGN_LARGE = 64 << 10
ALIGN_SMALL = 64
#: Constant-node tensors smaller than this stay in the graph: they are shapes,
#: axes and scalars, and a container record costs more than they could save.
CONSTANT_MIN_BYTES = 64
#: deeper subgraph nesting than this is refused: no real model comes close, and
#: protobuf's own parser stops at 100 message levels (3 per If/Loop level).
MAX_GRAPH_DEPTH = 24

# TensorProto.DataType -> canonical dtype name; the ones bie_cli.dtypes knows.
_ONNX_TO_CANONICAL = {
    1: "F32", 2: "U8", 3: "I8", 4: "U16", 5: "I16", 6: "I32", 7: "I64", 9: "BOOL",
    10: "F16", 11: "F64", 12: "U32", 13: "U64", 14: "C64", 15: "C128", 16: "BF16",
    17: "F8_E4M3", 19: "F8_E5M2",
}
_ONNX_TO_CANONICAL = {k: v for k, v in _ONNX_TO_CANONICAL.items() if v in dtypes.ALL_NAMES}
_EXTERNAL = 1  # TensorProto.DataLocation.EXTERNAL
_TYPED_FIELDS = ("float_data", "int32_data", "string_data", "int64_data", "double_data", "uint64_data")

# ModelProto field number -> wire type, for sniffing without importing onnx.
_MODEL_FIELDS = {1: 0, 2: 2, 3: 2, 4: 2, 5: 0, 6: 2, 7: 2, 8: 2, 14: 2, 20: 2, 25: 2, 26: 2}


class OnnxModelError(BadInputError):
    """The file is not an ONNX model bie can read (truncated, malformed, not a model)."""


class OnnxExternalDataError(BadInputError):
    """An external data reference is missing, too short, or points outside the model's directory."""


# -- sniffing ------------------------------------------------------------------------


def _read_varint(read_byte) -> int | None:
    result = shift = 0
    while shift < 64:
        byte = read_byte()
        if byte is None:
            return None
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result
        shift += 7
    return None


def sniff(path: str) -> bool:
    """True if ``path`` starts like a serialized ModelProto with a graph.

    Reads only the top-level field headers (length-delimited fields are
    skipped by seeking), so it costs a few small reads even on a 2 GB file.
    """
    try:
        with builtins.open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size

            def read_byte():
                data = handle.read(1)
                return data[0] if data else None

            saw_ir_version = False
            for _ in range(64):
                tag = _read_varint(read_byte)
                if tag is None:
                    return False
                number, wire = tag >> 3, tag & 7
                if _MODEL_FIELDS.get(number) != wire:
                    return False
                if wire == 0:
                    value = _read_varint(read_byte)
                    if value is None:
                        return False
                    if number == 1:
                        saw_ir_version = 1 <= value <= 100
                    continue
                length = _read_varint(read_byte)
                if length is None or handle.tell() + length > size:
                    return False
                if number == 7:
                    return saw_ir_version
                handle.seek(length, os.SEEK_CUR)
    except (OSError, IsADirectoryError):
        return False
    return False


# -- wire-level stripping ----------------------------------------------------------


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


@dataclass
class _GraphTree:
    """Where the stripped ``raw_data`` of one graph's tensors lay in the file."""

    initializers: list  # per initializer: (offset, length) or None
    nodes: list  # per node: list per attribute of _AttributeTree


@dataclass
class _AttributeTree:
    tensor: tuple[int, int] | None
    graph: _GraphTree | None
    graphs: list


class _WireStripper:
    """Copy a ModelProto minus the ``raw_data`` of initializers and Constant tensors.

    Protobuf messages nest by length prefix, so dropping bytes deep inside
    means re-emitting every enclosing message on the path with its new
    length: ModelProto.graph(7) -> GraphProto.node(1) / .initializer(5) ->
    NodeProto.attribute(5) -> AttributeProto.t(5) / .g(6) / .graphs(11) ->
    TensorProto.raw_data(9). Everything else is copied byte for byte.
    """

    def __init__(self, buffer, path: str) -> None:
        self.buffer = buffer
        self.path = path

    def bad(self, detail: str) -> OnnxModelError:
        return OnnxModelError(f"{self.path} is truncated or not an ONNX model: {detail}")

    def _varint(self, pos: int, end: int) -> tuple[int, int]:
        buffer = self.buffer
        result = shift = 0
        while True:
            if pos >= end:
                raise self.bad(f"message ends inside a number at byte {pos}")
            byte = buffer[pos]
            pos += 1
            result |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return result, pos
            shift += 7
            if shift >= 70:
                raise self.bad(f"malformed number at byte {pos}")

    def fields(self, start: int, end: int):
        """Yield (number, wire type, field start, value start, value end)."""
        pos = start
        while pos < end:
            field_start = pos
            tag, pos = self._varint(pos, end)
            number, wire = tag >> 3, tag & 7
            if number == 0:
                raise self.bad(f"invalid field number 0 at byte {field_start}")
            value_start = pos
            if wire == 0:
                _, pos = self._varint(pos, end)
            elif wire == 1:
                pos += 8
            elif wire == 2:
                length, value_start = self._varint(pos, end)
                pos = value_start + length
            elif wire == 5:
                pos += 4
            else:
                raise self.bad(f"unsupported protobuf wire type {wire} at byte {field_start}")
            if pos > end:
                raise self.bad(f"field {number} at byte {field_start} runs past the end of its message")
            yield number, wire, field_start, value_start, pos

    @staticmethod
    def _emit(out: bytearray, number: int, body: bytes | bytearray) -> None:
        out += _encode_varint(number << 3 | 2)
        out += _encode_varint(len(body))
        out += body

    def model(self, start: int, end: int) -> tuple[bytearray, _GraphTree | None]:
        out = bytearray()
        graph = None
        for number, wire, field_start, value_start, value_end in self.fields(start, end):
            if number == 7 and wire == 2:
                if graph is not None:
                    raise self.bad("the model has its graph field twice")
                body, graph = self.graph(value_start, value_end, 0)
                self._emit(out, number, body)
            else:
                out += self.buffer[field_start:value_end]
        return out, graph

    def graph(self, start: int, end: int, depth: int) -> tuple[bytearray, _GraphTree]:
        if depth > MAX_GRAPH_DEPTH:
            raise self.bad(f"subgraphs nest deeper than {MAX_GRAPH_DEPTH} levels")
        out = bytearray()
        tree = _GraphTree([], [])
        for number, wire, field_start, value_start, value_end in self.fields(start, end):
            if number == 1 and wire == 2:
                body, attributes = self.node(value_start, value_end, depth)
                tree.nodes.append(attributes)
                self._emit(out, number, body)
            elif number == 5 and wire == 2:
                body, raw = self.tensor(value_start, value_end)
                tree.initializers.append(raw)
                self._emit(out, number, body)
            else:
                out += self.buffer[field_start:value_end]
        return out, tree

    def node(self, start: int, end: int, depth: int) -> tuple[bytearray, list]:
        fields = list(self.fields(start, end))
        op_type = domain = b""
        for number, wire, _, value_start, value_end in fields:
            if number == 4 and wire == 2:
                op_type = bytes(self.buffer[value_start:value_end])
            elif number == 7 and wire == 2:
                domain = bytes(self.buffer[value_start:value_end])
        is_constant = op_type == b"Constant" and domain in (b"", b"ai.onnx")
        out = bytearray()
        attributes = []
        for number, wire, field_start, value_start, value_end in fields:
            if number == 5 and wire == 2:
                body, attribute = self.attribute(value_start, value_end, depth, is_constant)
                attributes.append(attribute)
                self._emit(out, number, body)
            else:
                out += self.buffer[field_start:value_end]
        return out, attributes

    def attribute(self, start: int, end: int, depth: int, strip_tensor: bool) -> tuple[bytearray, _AttributeTree]:
        out = bytearray()
        tree = _AttributeTree(None, None, [])
        seen_tensor = False
        for number, wire, field_start, value_start, value_end in self.fields(start, end):
            if number == 5 and wire == 2 and strip_tensor:
                # A singular message field seen twice would be merged by protobuf;
                # no writer does that, and following it here is not worth it.
                if seen_tensor:
                    raise self.bad("an attribute has its tensor field twice")
                seen_tensor = True
                body, tree.tensor = self.tensor(value_start, value_end)
                self._emit(out, number, body)
            elif number == 6 and wire == 2:
                if tree.graph is not None:
                    raise self.bad("an attribute has its graph field twice")
                body, tree.graph = self.graph(value_start, value_end, depth + 1)
                self._emit(out, number, body)
            elif number == 11 and wire == 2:
                body, subgraph = self.graph(value_start, value_end, depth + 1)
                tree.graphs.append(subgraph)
                self._emit(out, number, body)
            else:
                out += self.buffer[field_start:value_end]
        return out, tree

    def tensor(self, start: int, end: int) -> tuple[bytearray, tuple[int, int] | None]:
        out = bytearray()
        raw = None
        for number, wire, field_start, value_start, value_end in self.fields(start, end):
            if number == 9 and wire == 2:
                raw = (value_start, value_end - value_start)  # the last one wins, as in protobuf
            else:
                out += self.buffer[field_start:value_end]
        return out, raw


# -- reading -------------------------------------------------------------------------


@dataclass
class _Slot:
    """Where one extracted tensor's bytes are: a file range, or an array in memory."""

    info: TensorInfo
    file: str | None = None
    offset: int = 0
    array: np.ndarray | None = None


class _FileReader:
    """``pread`` on a small set of files, opened once and shared by threads."""

    def __init__(self) -> None:
        self._fds: dict[str, int] = {}
        self._lock = threading.Lock()

    def fd(self, path: str) -> int:
        with self._lock:
            fd = self._fds.get(path)
            if fd is None:
                try:
                    fd = os.open(path, os.O_RDONLY)
                except OSError as exc:
                    raise BadInputError(f"cannot read {path}: {exc.strerror}") from None
                self._fds[path] = fd
            return fd

    def read(self, path: str, offset: int, length: int) -> bytes:
        data = os.pread(self.fd(path), length, offset) if length else b""
        if len(data) != length:
            raise BadInputError(f"{path} ended early (was it changed while bie read it?)")
        return data

    def close(self) -> None:
        with self._lock:
            for fd in self._fds.values():
                os.close(fd)
            self._fds.clear()


def _numel(dims) -> int:
    count = 1
    for dim in dims:
        count *= dim
    return count


class _Extractor:
    """Walks the parsed, stripped model beside the wire tree and marks tensors."""

    def __init__(self, path: str, files: _FileReader) -> None:
        self.path = path
        self.directory = os.path.dirname(os.path.abspath(path))
        self.files = files
        self.slots: dict[str, _Slot] = {}
        self.entries: list[dict] = []
        self.kept: list[dict] = []
        self.used_external = False
        self.small_constants = 0
        self._file_sizes: dict[str, int] = {}

    # naming ---------------------------------------------------------------------
    def unique_name(self, base: str) -> str:
        stem = base or "constant"
        if stem not in self.slots:
            return stem
        counter = 1
        while f"{stem}#{counter}" in self.slots:
            counter += 1
        return f"{stem}#{counter}"

    # external data ----------------------------------------------------------------
    def external_location(self, tensor, label: str, nbytes: int) -> tuple[str, int]:
        """Validate one tensor's external_data entries; return (file, offset)."""
        entries = {entry.key: entry.value for entry in tensor.external_data}
        location = entries.get("location", "")
        if not location:
            raise OnnxExternalDataError(f"{self.path}: tensor {label!r} is marked external but names no file")
        normalized = location.replace("\\", "/")
        if os.path.isabs(location) or normalized.startswith("/") or re.match(r"^[A-Za-z]:", normalized):
            raise OnnxExternalDataError(
                f"{self.path}: external data file {location!r} for tensor {label!r} is an absolute path; "
                "bie only reads data files inside the model's directory"
            )
        if ".." in normalized.split("/"):
            raise OnnxExternalDataError(
                f"{self.path}: external data file {location!r} for tensor {label!r} leaves the model's directory"
            )
        file_path = os.path.join(self.directory, *[part for part in normalized.split("/") if part])
        real_directory = os.path.realpath(self.directory)
        if not os.path.realpath(file_path).startswith(real_directory + os.sep):
            raise OnnxExternalDataError(
                f"{self.path}: external data file {location!r} for tensor {label!r} resolves outside the model's directory"
            )
        try:
            offset = int(entries.get("offset", "0"))
            length = int(entries["length"]) if "length" in entries else None
        except ValueError:
            raise OnnxExternalDataError(
                f"{self.path}: tensor {label!r} has a non-numeric external data offset or length"
            ) from None
        if offset < 0 or (length is not None and length < 0):
            raise OnnxExternalDataError(f"{self.path}: tensor {label!r} has a negative external data offset or length")
        if length is not None and length != nbytes:
            raise OnnxExternalDataError(
                f"{self.path}: tensor {label!r} says its external data is {length} bytes but its dtype and shape need {nbytes}"
            )
        size = self._file_sizes.get(file_path)
        if size is None:
            try:
                info = os.stat(file_path)
            except FileNotFoundError:
                raise OnnxExternalDataError(
                    f"external data file {location!r} for tensor {label!r} is missing (expected at {file_path})"
                ) from None
            except OSError as exc:
                raise OnnxExternalDataError(f"cannot read external data file {location!r}: {exc.strerror}") from None
            if not stat.S_ISREG(info.st_mode):
                raise OnnxExternalDataError(f"external data file {location!r} for tensor {label!r} is not a regular file")
            size = self._file_sizes[file_path] = info.st_size
        if offset + nbytes > size:
            raise OnnxExternalDataError(
                f"external data file {location!r} for tensor {label!r} is too short: it has {size} bytes, "
                f"the tensor needs bytes {offset}..{offset + nbytes}"
            )
        self.used_external = True
        return file_path, offset

    # tensors ---------------------------------------------------------------------
    def tensor(self, tensor, raw: tuple[int, int] | None, base: str, kind: str, where: str) -> None:
        label = base or tensor.name or "<unnamed>"
        dims = list(tensor.dims)
        if any(d < 0 for d in dims):
            raise OnnxModelError(f"{self.path}: tensor {label!r} has a negative dimension")
        canonical = _ONNX_TO_CANONICAL.get(tensor.data_type)
        external = tensor.data_location == _EXTERNAL
        numel = _numel(dims)
        reason = None
        if tensor.data_type == 8:
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
            slot.file, slot.offset = self.external_location(tensor, label, nbytes)
        elif raw is not None:
            if raw[1] != nbytes:
                raise OnnxModelError(
                    f"{self.path}: tensor {label!r} holds {raw[1]} bytes of data but {canonical} {dims} needs {nbytes}"
                )
            slot.file, slot.offset = self.path, raw[0]
        elif any(len(getattr(tensor, field)) for field in _TYPED_FIELDS):
            from onnx import numpy_helper

            try:
                array = numpy_helper.to_array(tensor)
            except Exception as exc:  # onnx raises plain ValueError/TypeError here
                raise OnnxModelError(f"{self.path}: tensor {label!r} has unreadable data: {exc}") from None
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
        for field in _TYPED_FIELDS + ("raw_data",):
            tensor.ClearField(field)
        del tensor.external_data[:]
        tensor.data_location = _EXTERNAL
        marker = tensor.external_data.add()
        marker.key, marker.value = "location", MARKER_LOCATION
        marker = tensor.external_data.add()
        marker.key, marker.value = MARKER_NAME_KEY, unique
        self.entries.append({"name": unique, "kind": kind, "where": where, "storage": storage, "external": external})

    def keep_in_graph(self, tensor, raw, label: str, where: str, reason: str, external: bool) -> None:
        if external:
            # The output model will not sit beside this data file: inline it.
            size = _numel(tensor.dims) * _itemsize_hint(tensor.data_type)
            if size is None:
                raise UnsupportedDtypeError(
                    f"{self.path}: tensor {label!r} has ONNX data type {tensor.data_type} in external data, "
                    "which bie can neither store nor carry"
                )
            file_path, offset = self.external_location(tensor, label, size)
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

    def graph(self, graph, tree: _GraphTree, where: str) -> None:
        if len(tree.initializers) != len(graph.initializer) or len(tree.nodes) != len(graph.node):
            raise OnnxModelError(f"{self.path} is truncated or not an ONNX model: graph {where} did not parse consistently")
        for tensor, raw in zip(graph.initializer, tree.initializers, strict=True):
            self.tensor(tensor, raw, tensor.name, "initializer", where)
        for node, attributes in zip(graph.node, tree.nodes, strict=True):
            if len(attributes) != len(node.attribute):
                raise OnnxModelError(f"{self.path} is truncated or not an ONNX model: node {node.name!r} did not parse consistently")
            is_constant = node.op_type == "Constant" and node.domain in ("", "ai.onnx")
            output = node.output[0] if node.output else ""
            for attribute, attribute_tree in zip(node.attribute, attributes, strict=True):
                node_where = f"{where}/{node.op_type}:{node.name or output}"
                if is_constant and attribute.HasField("t"):
                    if attribute.name == "value":
                        self.tensor(attribute.t, attribute_tree.tensor, output, "constant.value", where)
                    elif attribute_tree.tensor is not None:  # not a Constant's value: put its bytes back
                        attribute.t.raw_data = self.files.read(self.path, *attribute_tree.tensor)
                elif is_constant and attribute.name in ("value_floats", "value_ints") and (
                    attribute.floats if attribute.name == "value_floats" else attribute.ints
                ):
                    self.list_attribute(attribute, output, where)
                if attribute.HasField("g"):
                    self.graph(attribute.g, attribute_tree.graph, f"{node_where}/{attribute.name}")
                if len(attribute.graphs) != len(attribute_tree.graphs):
                    raise OnnxModelError(f"{self.path} is truncated or not an ONNX model: node {node.name!r} did not parse consistently")
                for index, (subgraph, subtree) in enumerate(zip(attribute.graphs, attribute_tree.graphs, strict=True)):
                    self.graph(subgraph, subtree, f"{node_where}/{attribute.name}[{index}]")


def _itemsize_hint(data_type: int) -> int | None:
    """Bytes per element for ONNX types bie keeps in the graph (None: sub-byte or string)."""
    canonical = _ONNX_TO_CANONICAL.get(data_type)
    if canonical:
        return dtypes.get(canonical).itemsize
    return {18: 1, 20: 1, 24: 1}.get(data_type)


def open(path: str) -> CheckpointSource:
    """Open an ONNX model lazily: the graph is parsed, weights are read on demand."""
    path = os.fspath(path)
    try:
        handle = builtins.open(path, "rb")
    except FileNotFoundError:
        raise BadInputError(f"no such file: {path}") from None
    except OSError as exc:
        raise BadInputError(f"cannot read {path}: {exc.strerror}") from None
    files = _FileReader()
    try:
        with handle:
            size = os.fstat(handle.fileno()).st_size
            if size == 0:
                raise OnnxModelError(f"{path} is truncated or not an ONNX model: the file is empty")
            with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as buffer:
                stripped, tree = _WireStripper(buffer, path).model(0, size)
        if tree is None:
            raise OnnxModelError(f"{path} is truncated or not an ONNX model: it has no graph")
        import onnx
        from google.protobuf.message import DecodeError

        model = onnx.ModelProto()
        try:
            model.ParseFromString(bytes(stripped))
        except (DecodeError, RuntimeError, ValueError) as exc:
            raise OnnxModelError(f"{path} is truncated or not an ONNX model: {exc}") from None
        del stripped
        if model.ir_version <= 0:
            raise OnnxModelError(f"{path} is truncated or not an ONNX model: it has no IR version")
        extractor = _Extractor(path, files)
        extractor.graph(model.graph, tree, "graph")
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
            "opset_import": [{"domain": o.domain, "version": o.version} for o in model.opset_import],
            "producer_name": model.producer_name,
            "producer_version": model.producer_version,
            "external_data": extractor.used_external,
            "tensors": extractor.entries,
            "kept_in_graph": extractor.kept,
            "small_constants_in_graph": extractor.small_constants,
        }
    }
    source = CheckpointSource(
        format=name, path=path, tensors=[slot.info for slot in slots.values()], read_rows=read_rows,
        metadata=metadata, blobs={BLOB_NAME: blob},
    )
    source.close_callbacks.append(files.close)
    return source


# -- writing -------------------------------------------------------------------------


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
        return _ONNX_TO_CANONICAL.get(self.tensor.data_type), tuple(self.tensor.dims)


def _collect_targets(graph, targets: dict[str, _Target]) -> None:
    def add(key: str, target: _Target) -> None:
        if key in targets:
            raise BadInputError(f"the stored ONNX graph marks tensor {key!r} twice")
        targets[key] = target

    def tensor_marker(tensor) -> str | None:
        if tensor.data_location != _EXTERNAL:
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
    if kind in (1, 14):  # float, complex64 (interleaved real, imaginary)
        tensor.float_data.extend(flat.view(np.float32).tolist())
    elif kind in (11, 15):
        tensor.double_data.extend(flat.view(np.float64).tolist())
    elif kind == 7:
        tensor.int64_data.extend(flat.tolist())
    elif kind in (12, 13):
        tensor.uint64_data.extend(flat.tolist())
    elif kind in (10, 16):  # 16-bit floats travel as their bit patterns
        tensor.int32_data.extend(flat.view(np.uint16).tolist())
    elif kind in (17, 19):
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
            tensor.data_location = _EXTERNAL
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

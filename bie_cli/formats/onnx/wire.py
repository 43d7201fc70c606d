"""The ONNX model at the protobuf wire level: sniffing, and stripping weights out.

Nothing here imports onnx or protobuf: the walk works on the raw (memory-mapped)
bytes, so a 2 GB model is never copied whole into memory.
"""

from __future__ import annotations

import builtins
import os
from dataclasses import dataclass

from ...codecs import varint
from .constants import MAX_GRAPH_DEPTH
from .errors import OnnxModelError
from .proto import (
    MODEL_FIELD_WIRE_TYPES,
    AttributeField,
    GraphField,
    ModelField,
    NodeField,
    TensorField,
    Wire,
)

#: a varint never has more than 10 bytes (70 bits of payload)
_VARINT_MAX_SHIFT = 70
#: top-level fields looked at by sniff before it gives up finding the graph
_SNIFF_MAX_FIELDS = 64
#: ir_version values sniff accepts (ONNX is at 11 in 2025)
_SNIFF_IR_VERSIONS = range(1, 101)


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
            for _ in range(_SNIFF_MAX_FIELDS):
                tag = _read_varint(read_byte)
                if tag is None:
                    return False
                number, wire = tag >> Wire.TAG_BITS, tag & Wire.TYPE_MASK
                if MODEL_FIELD_WIRE_TYPES.get(number) != wire:
                    return False
                if wire == Wire.VARINT:
                    value = _read_varint(read_byte)
                    if value is None:
                        return False
                    if number == ModelField.IR_VERSION:
                        saw_ir_version = value in _SNIFF_IR_VERSIONS
                    continue
                length = _read_varint(read_byte)
                if length is None or handle.tell() + length > size:
                    return False
                if number == ModelField.GRAPH:
                    return saw_ir_version
                handle.seek(length, os.SEEK_CUR)
    except OSError:
        return False
    return False


def encode_varint(value: int) -> bytes:
    out = bytearray()
    varint.put(out, value)
    return bytes(out)


@dataclass
class GraphTree:
    """Where the stripped ``raw_data`` of one graph's tensors lay in the file."""

    initializers: list  # per initializer: (offset, length) or None
    nodes: list  # per node: list per attribute of AttributeTree


@dataclass
class AttributeTree:
    tensor: tuple[int, int] | None
    graph: GraphTree | None
    graphs: list


class WireStripper:
    """Copy a ModelProto minus the ``raw_data`` of initializers and Constant tensors.

    Protobuf messages nest by length prefix, so dropping bytes deep inside
    means re-emitting every enclosing message on the path with its new
    length: ModelProto.graph -> GraphProto.node / .initializer ->
    NodeProto.attribute -> AttributeProto.t / .g / .graphs ->
    TensorProto.raw_data. Everything else is copied byte for byte.
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
            if shift >= _VARINT_MAX_SHIFT:
                raise self.bad(f"malformed number at byte {pos}")

    def fields(self, start: int, end: int):
        """Yield (number, length-delimited?, field start, value start, value end).

        Only length-delimited fields (messages, strings, bytes) can be ones the
        stripper descends into; the flag saves every caller comparing wire types."""
        pos = start
        while pos < end:
            field_start = pos
            tag, pos = self._varint(pos, end)
            number, wire = tag >> Wire.TAG_BITS, tag & Wire.TYPE_MASK
            if number == 0:
                raise self.bad(f"invalid field number 0 at byte {field_start}")
            value_start = pos
            if wire == Wire.VARINT:
                _, pos = self._varint(pos, end)
            elif wire == Wire.FIXED64:
                pos += 8
            elif wire == Wire.LENGTH_DELIMITED:
                length, value_start = self._varint(pos, end)
                pos = value_start + length
            elif wire == Wire.FIXED32:
                pos += 4
            else:
                raise self.bad(f"unsupported protobuf wire type {wire} at byte {field_start}")
            if pos > end:
                raise self.bad(f"field {number} at byte {field_start} runs past the end of its message")
            yield number, wire == Wire.LENGTH_DELIMITED, field_start, value_start, pos

    @staticmethod
    def _emit(out: bytearray, number: int, body: bytes | bytearray) -> None:
        out += encode_varint(number << Wire.TAG_BITS | Wire.LENGTH_DELIMITED)
        out += encode_varint(len(body))
        out += body

    def model(self, start: int, end: int) -> tuple[bytearray, GraphTree | None]:
        out = bytearray()
        graph = None
        for number, delimited, field_start, value_start, value_end in self.fields(start, end):
            if number == ModelField.GRAPH and delimited:
                if graph is not None:
                    raise self.bad("the model has its graph field twice")
                body, graph = self.graph(value_start, value_end, 0)
                self._emit(out, number, body)
            else:
                out += self.buffer[field_start:value_end]
        return out, graph

    def graph(self, start: int, end: int, depth: int) -> tuple[bytearray, GraphTree]:
        if depth > MAX_GRAPH_DEPTH:
            raise self.bad(f"subgraphs nest deeper than {MAX_GRAPH_DEPTH} levels")
        out = bytearray()
        tree = GraphTree([], [])
        for number, delimited, field_start, value_start, value_end in self.fields(start, end):
            if number == GraphField.NODE and delimited:
                body, attributes = self.node(value_start, value_end, depth)
                tree.nodes.append(attributes)
                self._emit(out, number, body)
            elif number == GraphField.INITIALIZER and delimited:
                body, raw = self.tensor(value_start, value_end)
                tree.initializers.append(raw)
                self._emit(out, number, body)
            else:
                out += self.buffer[field_start:value_end]
        return out, tree

    def node(self, start: int, end: int, depth: int) -> tuple[bytearray, list]:
        fields = list(self.fields(start, end))
        op_type = domain = b""
        for number, delimited, _, value_start, value_end in fields:
            if number == NodeField.OP_TYPE and delimited:
                op_type = bytes(self.buffer[value_start:value_end])
            elif number == NodeField.DOMAIN and delimited:
                domain = bytes(self.buffer[value_start:value_end])
        is_constant = op_type == b"Constant" and domain in (b"", b"ai.onnx")
        out = bytearray()
        attributes = []
        for number, delimited, field_start, value_start, value_end in fields:
            if number == NodeField.ATTRIBUTE and delimited:
                body, attribute = self.attribute(value_start, value_end, depth, is_constant)
                attributes.append(attribute)
                self._emit(out, number, body)
            else:
                out += self.buffer[field_start:value_end]
        return out, attributes

    def attribute(self, start: int, end: int, depth: int, strip_tensor: bool) -> tuple[bytearray, AttributeTree]:
        out = bytearray()
        tree = AttributeTree(None, None, [])
        seen_tensor = False
        for number, delimited, field_start, value_start, value_end in self.fields(start, end):
            if number == AttributeField.TENSOR and delimited and strip_tensor:
                # A singular message field seen twice would be merged by protobuf;
                # no writer does that, and following it here is not worth it.
                if seen_tensor:
                    raise self.bad("an attribute has its tensor field twice")
                seen_tensor = True
                body, tree.tensor = self.tensor(value_start, value_end)
                self._emit(out, number, body)
            elif number == AttributeField.GRAPH and delimited:
                if tree.graph is not None:
                    raise self.bad("an attribute has its graph field twice")
                body, tree.graph = self.graph(value_start, value_end, depth + 1)
                self._emit(out, number, body)
            elif number == AttributeField.GRAPHS and delimited:
                body, subgraph = self.graph(value_start, value_end, depth + 1)
                tree.graphs.append(subgraph)
                self._emit(out, number, body)
            else:
                out += self.buffer[field_start:value_end]
        return out, tree

    def tensor(self, start: int, end: int) -> tuple[bytearray, tuple[int, int] | None]:
        out = bytearray()
        raw = None
        for number, delimited, field_start, value_start, value_end in self.fields(start, end):
            if number == TensorField.RAW_DATA and delimited:
                raw = (value_start, value_end - value_start)  # the last one wins, as in protobuf
            else:
                out += self.buffer[field_start:value_end]
        return out, raw

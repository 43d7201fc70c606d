"""What bie needs to know about ONNX's protobuf schema (``onnx/onnx.proto``).

The reader walks the model at the wire level, where fields are only numbers;
these names say which field a number is. Field numbers are part of ONNX's
stable wire format, so they never change.
"""

from __future__ import annotations

from ... import dtypes


class Wire:
    """Protobuf wire types; a field's tag is ``number << TAG_BITS | wire type``."""

    TAG_BITS = 3
    TYPE_MASK = (1 << TAG_BITS) - 1

    VARINT = 0
    FIXED64 = 1
    LENGTH_DELIMITED = 2
    FIXED32 = 5


class ModelField:
    """``ModelProto``"""

    IR_VERSION = 1
    PRODUCER_NAME = 2
    PRODUCER_VERSION = 3
    DOMAIN = 4
    MODEL_VERSION = 5
    DOC_STRING = 6
    GRAPH = 7
    OPSET_IMPORT = 8
    METADATA_PROPS = 14
    TRAINING_INFO = 20
    FUNCTIONS = 25
    CONFIGURATION = 26


#: ModelProto field -> its wire type, for sniffing without importing onnx.
MODEL_FIELD_WIRE_TYPES = {
    ModelField.IR_VERSION: Wire.VARINT,
    ModelField.PRODUCER_NAME: Wire.LENGTH_DELIMITED,
    ModelField.PRODUCER_VERSION: Wire.LENGTH_DELIMITED,
    ModelField.DOMAIN: Wire.LENGTH_DELIMITED,
    ModelField.MODEL_VERSION: Wire.VARINT,
    ModelField.DOC_STRING: Wire.LENGTH_DELIMITED,
    ModelField.GRAPH: Wire.LENGTH_DELIMITED,
    ModelField.OPSET_IMPORT: Wire.LENGTH_DELIMITED,
    ModelField.METADATA_PROPS: Wire.LENGTH_DELIMITED,
    ModelField.TRAINING_INFO: Wire.LENGTH_DELIMITED,
    ModelField.FUNCTIONS: Wire.LENGTH_DELIMITED,
    ModelField.CONFIGURATION: Wire.LENGTH_DELIMITED,
}


class GraphField:
    """``GraphProto``"""

    NODE = 1
    NAME = 2
    INITIALIZER = 5


class NodeField:
    """``NodeProto``"""

    INPUT = 1
    OUTPUT = 2
    NAME = 3
    OP_TYPE = 4
    ATTRIBUTE = 5
    DOMAIN = 7


class AttributeField:
    """``AttributeProto``"""

    NAME = 1
    TENSOR = 5  # ``t``
    GRAPH = 6  # ``g``
    GRAPHS = 11


class TensorField:
    """``TensorProto``"""

    DIMS = 1
    DATA_TYPE = 2
    RAW_DATA = 9


class DataType:
    """``TensorProto.DataType``"""

    FLOAT = 1
    UINT8 = 2
    INT8 = 3
    UINT16 = 4
    INT16 = 5
    INT32 = 6
    INT64 = 7
    STRING = 8
    BOOL = 9
    FLOAT16 = 10
    DOUBLE = 11
    UINT32 = 12
    UINT64 = 13
    COMPLEX64 = 14
    COMPLEX128 = 15
    BFLOAT16 = 16
    FLOAT8E4M3FN = 17
    FLOAT8E4M3FNUZ = 18
    FLOAT8E5M2 = 19
    FLOAT8E5M2FNUZ = 20
    FLOAT8E8M0 = 24


#: ``TensorProto.DataLocation.EXTERNAL``
DATA_LOCATION_EXTERNAL = 1

#: ONNX data type -> canonical dtype name, for the types bie_cli.dtypes knows.
ONNX_TO_CANONICAL = {
    onnx_type: canonical
    for onnx_type, canonical in {
        DataType.FLOAT: "F32", DataType.UINT8: "U8", DataType.INT8: "I8", DataType.UINT16: "U16",
        DataType.INT16: "I16", DataType.INT32: "I32", DataType.INT64: "I64", DataType.BOOL: "BOOL",
        DataType.FLOAT16: "F16", DataType.DOUBLE: "F64", DataType.UINT32: "U32", DataType.UINT64: "U64",
        DataType.COMPLEX64: "C64", DataType.COMPLEX128: "C128", DataType.BFLOAT16: "BF16",
        DataType.FLOAT8E4M3FN: "F8_E4M3", DataType.FLOAT8E5M2: "F8_E5M2",
    }.items()
    if canonical in dtypes.ALL_NAMES
}

#: TensorProto's typed value fields (the alternative to ``raw_data``).
TYPED_FIELDS = ("float_data", "int32_data", "string_data", "int64_data", "double_data", "uint64_data")

#: one-byte ONNX types bie has no dtype for but can carry inside the graph.
_ONE_BYTE_CARRIED = (DataType.FLOAT8E4M3FNUZ, DataType.FLOAT8E5M2FNUZ, DataType.FLOAT8E8M0)


def itemsize_hint(data_type: int) -> int | None:
    """Bytes per element for ONNX types bie keeps in the graph (None: sub-byte or string)."""
    canonical = ONNX_TO_CANONICAL.get(data_type)
    if canonical:
        return dtypes.get(canonical).itemsize
    return 1 if data_type in _ONE_BYTE_CARRIED else None

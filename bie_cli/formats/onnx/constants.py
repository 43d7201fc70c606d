"""bie's own constants for ONNX models: names it stores, markers it leaves, limits."""

from __future__ import annotations

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

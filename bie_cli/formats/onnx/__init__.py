"""ONNX models in and out.

Reading
    Weights live in four places in an ONNX model: graph initializers,
    ``Constant`` nodes' attributes, the same two inside subgraphs (``If`` /
    ``Loop`` / ``Scan`` bodies), and, for big models, external data files.
    :func:`open` finds them all and serves their rows on demand:

    * The model file is memory-mapped and walked at the protobuf wire level
      (:class:`wire.WireStripper`). The walk copies every byte of the model
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

Modules: ``proto`` (ONNX's protobuf field numbers and data types),
``constants`` (bie's markers and limits), ``wire`` (sniffing and stripping
at the wire level), ``external`` (external data checks and reads),
``reader`` (:func:`open`), ``writer`` (:func:`write`).
"""

from __future__ import annotations

from .constants import (
    ALIGN_LARGE,
    ALIGN_LARGE_FROM,
    ALIGN_SMALL,
    BLOB_NAME,
    CONSTANT_MIN_BYTES,
    EXTERNAL_MIN_BYTES,
    MARKER_ATTRIBUTE_PREFIX,
    MARKER_LOCATION,
    MARKER_NAME_KEY,
    MAX_GRAPH_DEPTH,
    METADATA_KEY,
    PROTOBUF_LIMIT,
)
from .errors import OnnxExternalDataError, OnnxModelError
from .reader import FORMAT_NAME as name
from .reader import open
from .wire import sniff
from .writer import write

extensions = (".onnx",)

__all__ = [
    "ALIGN_LARGE", "ALIGN_LARGE_FROM", "ALIGN_SMALL", "BLOB_NAME", "CONSTANT_MIN_BYTES", "EXTERNAL_MIN_BYTES",
    "MARKER_ATTRIBUTE_PREFIX", "MARKER_LOCATION", "MARKER_NAME_KEY", "MAX_GRAPH_DEPTH", "METADATA_KEY",
    "PROTOBUF_LIMIT", "OnnxExternalDataError", "OnnxModelError", "extensions", "name", "open", "sniff", "write",
]

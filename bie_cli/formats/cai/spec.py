"""Every constant and struct layout of the ``.cai`` container, version 1.

This module is the only place that knows byte offsets; ``writer.py`` and
``reader.py`` import it and never use a literal offset. The normative text is
``docs/FORMAT.md``; keep the two in step.

File layout::

    FileHeader | Record* | Trailer

    Record      = RecordHeader | body (body_length bytes)
    HEADER      body: UTF-8 JSON (tool, source format and metadata, options, manifest)
    BLOB        body: BlobPrefix | name | zero padding | data   (non-tensor source structure)
    TENSOR      body: UTF-8 JSON (id, name, dtype, shape, strategy, config, rule, rows_per_chunk)
    CHUNK       body: ChunkPrefix | meta JSON | zero padding | payload  (payload 64-byte aligned in the file)
    TENSOR_END  body: UTF-8 JSON (id, digest of the original bytes, sizes, error statistics)
    INDEX       body: UTF-8 JSON (every tensor's metadata + chunk offsets, blobs); always the last record
"""

from __future__ import annotations

import enum
import struct

import xxhash

FILE_MAGIC = b"\x89CAI\r\n\x1a\n"  # PNG-style: catches text-mode and 7-bit transfers
FORMAT_MAJOR = 1
FORMAT_MINOR = 0

#: magic, major version, minor version, flags (reserved, 0)
FILE_HEADER = struct.Struct("<8sHHI")

#: type, flags, body length, xxh3-64 of the body (as stored), CRC32 of the preceding 20 bytes
RECORD_HEADER = struct.Struct("<HHQQI")
RECORD_HEADER_CRC_SPAN = 20
#: the first RECORD_HEADER_CRC_SPAN bytes of a record header (what its CRC covers)
RECORD_HEADER_SIGNED = struct.Struct("<HHQQ")

#: record flag: the body of a JSON record (HEADER, TENSOR, TENSOR_END, INDEX) is
#: one zstd frame holding the JSON. Writers set it only when that is smaller;
#: the index repeats every tensor's metadata and shrinks about 9x.
FLAG_ZSTD_JSON = 0x1
KNOWN_FLAGS = FLAG_ZSTD_JSON
#: JSON bodies shorter than this are never worth a zstd frame
JSON_COMPRESS_MIN = 128
JSON_ZSTD_LEVEL = 19
#: JSON bodies at least this long (the index and header of a model with
#: hundreds of tensors) use JSON_ZSTD_LEVEL_LARGE: level 19 spends ~0.3 s on a
#: 130 KB index for 1 % of its size; level 9 takes 3 ms (any level decodes)
JSON_ZSTD_LARGE = 16 << 10
JSON_ZSTD_LEVEL_LARGE = 9

#: tensor id, chunk number, first row, end row (exclusive), meta length, padding length
CHUNK_PREFIX = struct.Struct("<IIQQII")

#: name length, padding length
BLOB_PREFIX = struct.Struct("<II")

#: index record offset, index record total length (header + body), file length,
#: CRC32 of the preceding 24 bytes, reserved (0), end magic
TRAILER = struct.Struct("<QQQII8s")
TRAILER_CRC_SPAN = 24
TRAILER_MAGIC = b"CAIEND\r\n"

#: payloads (and blob data) start at a multiple of this in the file, so a
#: memory-mapped file hands out aligned views.
ALIGNMENT = 64

DIGEST_ALGORITHM = "xxh3-128"


class RecordType(enum.IntEnum):
    HEADER = 1
    BLOB = 2
    TENSOR = 3
    CHUNK = 4
    TENSOR_END = 5
    INDEX = 6


# Caps: a reader checks every length against these (and against the bytes the
# file still holds) before it allocates anything.
MAX_JSON_BODY = 64 << 20  # header, tensor, tensor-end records
MAX_INDEX_BODY = 1 << 30
MAX_CHUNK_META = 1 << 20
MAX_BLOB_NAME = 4096
MAX_RECORD_BODY = 1 << 40  # a chunk payload or blob; real files are far smaller
MAX_NDIM = 64
MAX_TENSOR_NAME = 65536
MAX_TENSORS = 10_000_000


def padding_for(offset: int) -> int:
    """Zero bytes to add after ``offset`` so the next byte is aligned."""
    return -offset % ALIGNMENT


def new_body_hasher():
    """Streaming form of :func:`body_checksum` (``update`` pieces, then ``intdigest()``)."""
    return xxhash.xxh3_64()


def body_checksum(*parts) -> int:
    if len(parts) == 1:  # a JSON record, or a body read back whole: no hasher object
        return xxhash.xxh3_64_intdigest(parts[0])
    hasher = new_body_hasher()
    for part in parts:
        hasher.update(part)
    return hasher.intdigest()


def new_digest():
    """Streaming digest of a tensor's original bytes (see DIGEST_ALGORITHM)."""
    return xxhash.xxh3_128()

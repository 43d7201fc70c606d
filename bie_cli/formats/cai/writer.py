"""Streaming ``.cai`` writer.

The writer only appends, so it works on pipes as well as files: it counts the
bytes it has written to know every record's offset for the index. It is an
explicit state machine — calls out of order raise ``RuntimeError`` (a bug in
the caller) instead of producing a file no reader accepts.
"""

from __future__ import annotations

import enum
import io
import json
import os
import zlib
from dataclasses import dataclass, field
from typing import BinaryIO

import zstandard

from . import spec


class _State(enum.Enum):
    NEW = enum.auto()
    HEADER_WRITTEN = enum.auto()
    IN_TENSOR = enum.auto()
    FINISHED = enum.auto()


#: records from this size on go to the file descriptor directly (see ContainerWriter._write_record)
_DIRECT_WRITE = 256 << 10
#: parts handed to one os.writev (POSIX guarantees at least 16; Linux allows 1024)
_IOV_MAX = 512


def _plain_file_descriptor(out) -> int | None:
    """The descriptor of ``out`` when it is a plain binary file (``open(..., "wb")``, stdout's
    buffer), whose bytes go to that descriptor unchanged; else None."""
    if type(out) not in (io.BufferedWriter, io.FileIO) or not hasattr(os, "writev"):
        return None
    try:
        return out.fileno()
    except (OSError, ValueError):
        return None


def _write_all(fd: int, parts: list) -> None:
    """``os.writev`` until every byte of ``parts`` is written (the GIL is released meanwhile)."""
    views = [memoryview(part).cast("B") for part in parts if len(part)]
    while views:
        written = os.writev(fd, views[:_IOV_MAX])
        if written <= 0:
            raise OSError("write made no progress")
        while views and written >= len(views[0]):
            written -= len(views[0])
            views.pop(0)
        if written:
            views[0] = views[0][written:]



def _json_encoder():
    """``obj -> str`` as ``json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)``
    (sorted keys, compact: the same input always gives the same bytes), made once: json.dumps
    builds a new encoder and its C encoder per call, ~170 bytecodes a record. Without the
    circular-reference check (a record is never circular)."""
    python = json.JSONEncoder(sort_keys=True, separators=(",", ":"), allow_nan=False)
    if json.encoder.c_make_encoder is None:  # no C accelerator
        return python.encode
    encode = json.encoder.c_make_encoder(
        None, python.default, json.encoder.encode_basestring_ascii, None, ":", ",", True, False, False
    )
    return lambda obj: "".join(encode(obj, 0))


_encode_json = _json_encoder()
#: a chunk's padding (less than spec.ALIGNMENT bytes) is a slice of this
_ZEROS = bytes(spec.ALIGNMENT)


def _json_bytes(obj) -> bytes:
    return _encode_json(obj).encode()


def _json_body(obj, compressors: tuple[zstandard.ZstdCompressor, zstandard.ZstdCompressor]) -> tuple[bytes, int]:
    """A JSON record body and its flags: zstd-compressed when that is smaller
    (``compressors``: for small bodies, and for bodies of JSON_ZSTD_LARGE and more)."""
    return _packed(_json_bytes(obj), compressors)


def _packed(body: bytes, compressors) -> tuple[bytes, int]:
    if len(body) >= spec.JSON_COMPRESS_MIN:
        packed = compressors[len(body) >= spec.JSON_ZSTD_LARGE].compress(body)
        if len(packed) < len(body):
            return packed, spec.FLAG_ZSTD_JSON
    return body, 0


@dataclass
class _TensorIndexEntry:
    record: dict
    record_offset: int
    chunks: list[list[int]] = field(default_factory=list)
    end: dict | None = None
    #: the tensor's entry in the index, as JSON: serialised when the tensor ends (on the thread
    #: writing records), so :meth:`ContainerWriter.finish` only joins them
    index_json: bytes = b""


class ContainerWriter:
    """Write one container to ``out`` (any binary file object with ``write`` and ``writelines``:
    each record's parts go out in one ``writelines`` call)."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self._fd = _plain_file_descriptor(out)
        self._offset = 0
        self._state = _State.NEW
        self._tensors: list[_TensorIndexEntry] = []
        self._blobs: list[dict] = []
        self._current: _TensorIndexEntry | None = None
        self._names: set[str] = set()
        # one compressor for every small JSON record: a level-19 context costs more to set up
        # than a small record costs to compress (same bytes either way); big ones get a faster level
        self._json_compressors = (
            zstandard.ZstdCompressor(level=spec.JSON_ZSTD_LEVEL, write_content_size=True),
            zstandard.ZstdCompressor(level=spec.JSON_ZSTD_LEVEL_LARGE, write_content_size=True),
        )

    @property
    def bytes_written(self) -> int:
        return self._offset

    # -- low level ---------------------------------------------------------------
    def _write(self, data) -> None:
        self._out.write(data)
        self._offset += len(data)

    def _write_record(self, record_type: spec.RecordType, *body_parts, flags: int = 0) -> int:
        """Write one record; return its offset."""
        offset = self._offset
        length = sum(map(len, body_parts))
        checksum = spec.body_checksum(*body_parts)
        signed = spec.RECORD_HEADER_SIGNED.pack(record_type, flags, length, checksum)
        parts = (signed + zlib.crc32(signed).to_bytes(4, "little"), *body_parts)
        if self._fd is not None and length >= _DIRECT_WRITE:
            # a chunk's payload parts straight from the encoder's buffers: one writev, no copy
            # into the file object's buffer (which would hold the GIL), nothing joined
            self._out.flush()
            _write_all(self._fd, parts)
        else:  # one call for the whole record (an AppendFile copies its parts in one loop)
            self._out.writelines(parts)
        self._offset += spec.RECORD_HEADER.size + length
        return offset

    def _write_json_record(self, record_type: spec.RecordType, obj: dict) -> int:
        body, flags = _json_body(obj, self._json_compressors)
        return self._write_record(record_type, body, flags=flags)

    def _expect(self, *states: _State) -> None:
        if self._state not in states:
            raise RuntimeError(f"ContainerWriter: call not allowed in state {self._state.name}")

    # -- records -----------------------------------------------------------------
    def write_header(self, header: dict) -> None:
        self._expect(_State.NEW)
        self._write(spec.FILE_HEADER.pack(spec.FILE_MAGIC, spec.FORMAT_MAJOR, spec.FORMAT_MINOR, 0))
        self._header_offset = self._write_json_record(spec.RecordType.HEADER, header)
        self._state = _State.HEADER_WRITTEN

    def write_blob(self, name: str, data: bytes) -> None:
        """Non-tensor source structure (e.g. an ONNX graph without its weights)."""
        self._expect(_State.HEADER_WRITTEN)
        encoded = name.encode()
        if len(encoded) > spec.MAX_BLOB_NAME:
            raise ValueError(f"blob name longer than {spec.MAX_BLOB_NAME} bytes")
        data_start = self._offset + spec.RECORD_HEADER.size + spec.BLOB_PREFIX.size + len(encoded)
        padding = spec.padding_for(data_start)
        prefix = spec.BLOB_PREFIX.pack(len(encoded), padding)
        offset = self._write_record(spec.RecordType.BLOB, prefix, encoded, bytes(padding), data)
        self._blobs.append({"name": name, "offset": offset, "length": len(data)})

    def begin_tensor(self, record: dict) -> int:
        """Open a tensor; ``record`` holds name, dtype, shape, strategy, config... Returns its id."""
        self._expect(_State.HEADER_WRITTEN)
        if record["name"] in self._names:
            raise ValueError(f"duplicate tensor name {record['name']!r}")
        self._names.add(record["name"])
        record = dict(record, id=len(self._tensors))
        offset = self._write_json_record(spec.RecordType.TENSOR, record)
        self._current = _TensorIndexEntry(record=record, record_offset=offset)
        self._tensors.append(self._current)
        self._state = _State.IN_TENSOR
        return record["id"]

    def write_chunk(self, row_start: int, row_stop: int, meta: dict, payload) -> None:
        """``payload``: a buffer, or a tuple or list of buffers written one after the other."""
        self._expect(_State.IN_TENSOR)
        parts = tuple(payload) if isinstance(payload, (tuple, list)) else (payload,)
        entry = self._current
        meta_bytes = _json_bytes(meta) if meta else b"{}"  # what json.dumps gives for {}: most chunks
        payload_start = (
            self._offset + spec.RECORD_HEADER.size + spec.CHUNK_PREFIX.size + len(meta_bytes)
        )
        padding = spec.padding_for(payload_start)
        prefix = spec.CHUNK_PREFIX.pack(
            entry.record["id"], len(entry.chunks), row_start, row_stop, len(meta_bytes), padding
        )
        # prefix, meta and padding as one small part: fewer parts to hash and copy one by one
        lead = prefix + meta_bytes + _ZEROS[:padding]
        offset = self._write_record(spec.RecordType.CHUNK, lead, *parts)
        entry.chunks.append([offset, self._offset - offset, row_start, row_stop])

    def end_tensor(self, end: dict) -> None:
        """Close the open tensor with its digest, sizes and error statistics."""
        self._expect(_State.IN_TENSOR)
        entry = self._current
        end = dict(end, id=entry.record["id"])
        self._write_json_record(spec.RecordType.TENSOR_END, end)
        entry.end = end
        entry.index_json = _json_bytes(dict(entry.record, **{k: v for k, v in end.items() if k != "id"},
                                            record_offset=entry.record_offset, chunks=entry.chunks))
        self._current = None
        self._state = _State.HEADER_WRITTEN

    def finish(self) -> None:
        """Write the index and the trailer. The file is valid only after this."""
        self._expect(_State.HEADER_WRITTEN)
        # the bytes _json_bytes gives for {"header_offset", "blobs", "tensors": [entries]} (sorted
        # keys), from the entries serialised as their tensors ended
        index = b"".join((b'{"blobs":', _json_bytes(self._blobs), b',"header_offset":',
                          _json_bytes(self._header_offset), b',"tensors":[',
                          b",".join(entry.index_json for entry in self._tensors), b"]}"))
        body, flags = _packed(index, self._json_compressors)
        index_offset = self._write_record(spec.RecordType.INDEX, body, flags=flags)
        index_length = self._offset - index_offset
        file_length = self._offset + spec.TRAILER.size
        head = spec.TRAILER.pack(index_offset, index_length, file_length, 0, 0, spec.TRAILER_MAGIC)
        crc = zlib.crc32(head[: spec.TRAILER_CRC_SPAN])
        self._write(spec.TRAILER.pack(index_offset, index_length, file_length, crc, 0, spec.TRAILER_MAGIC))
        self._state = _State.FINISHED

"""``.cai`` readers: random access over a memory-mapped file, and a sequential
scanner that works on pipes.

Nothing in a container is trusted: every length is checked against the caps in
``spec`` and against the bytes that remain before anything is allocated, every
record's checksum is checked before its body is parsed, and JSON records are
type-checked field by field. Failures raise :class:`CorruptContainerError`
with the offset (and tensor and chunk, where known).
"""

from __future__ import annotations

import json
import mmap
import os
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import BinaryIO, NamedTuple

import zstandard

from ... import dtypes
from ...errors import BadInputError, CorruptContainerError
from . import spec

#: :meth:`ContainerReader.release` drops pages from the map once this many bytes of records
#: are done (the map's resident pages stay below about this much more than their chunks in flight)
RELEASE_BATCH = 32 << 20
#: released records closer than this are dropped in one call with what lies between them
RELEASE_GAP = 1 << 20

# -- parsed records ----------------------------------------------------------------


@dataclass(frozen=True)
class ChunkRef:
    offset: int
    length: int
    row_start: int
    row_stop: int


@dataclass
class TensorEntry:
    id: int
    name: str
    dtype: str
    shape: tuple[int, ...]
    strategy: str
    config: dict
    rule: str
    rows_per_chunk: int
    chunk_count: int
    # known once the tensor is complete (TENSOR_END / index)
    chunks: list[ChunkRef] = field(default_factory=list)
    digest: str | None = None
    original_bytes: int | None = None
    stored_bytes: int | None = None
    stats: dict | None = None
    lossless: bool | None = None

    @property
    def rows(self) -> int:
        return self.shape[0] if self.shape else 1

    def chunk_shape(self, row_start: int, row_stop: int) -> tuple[int, ...]:
        if not self.shape:
            return ()
        return (row_stop - row_start, *self.shape[1:])


@dataclass(frozen=True)
class Chunk:
    tensor_id: int
    number: int
    row_start: int
    row_stop: int
    meta: dict
    payload: memoryview


@dataclass(frozen=True)
class Record:
    offset: int
    type: int
    body: memoryview
    flags: int = 0

    def json(self, what: str) -> dict:
        """The body of a JSON record, decompressed when its flag says so."""
        body = self.body
        if self.flags & spec.FLAG_ZSTD_JSON:
            cap = spec.MAX_INDEX_BODY if self.type == spec.RecordType.INDEX else spec.MAX_JSON_BODY
            try:
                body = zstandard.ZstdDecompressor().decompress(body, max_output_size=cap)
            except zstandard.ZstdError as exc:
                raise _corrupt(f"{what} record does not decompress ({exc})", self.offset) from None
        return _json(body, what, self.offset)


@dataclass(frozen=True)
class WalkedRecord:
    """A record met by :meth:`ContainerReader.walk_records`; ``body`` is a view into the map."""

    offset: int
    type: int
    flags: int
    body: memoryview
    checksum_ok: bool


class RecordHeader(NamedTuple):
    type: int
    flags: int
    length: int
    checksum: int


# -- validation helpers ------------------------------------------------------------


def _corrupt(message: str, offset: int | None = None) -> CorruptContainerError:
    where = f" at byte {offset}" if offset is not None else ""
    return CorruptContainerError(f"corrupt container{where}: {message}")


def _json(body, what: str, offset: int) -> dict:
    try:
        value = json.loads(bytes(body))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _corrupt(f"{what} record is not valid JSON ({exc})", offset) from None
    if not isinstance(value, dict):
        raise _corrupt(f"{what} record is not a JSON object", offset)
    return value


def _field(obj: dict, key: str, kind, what: str, offset: int):
    value = obj.get(key)
    if kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
    else:
        ok = isinstance(value, kind)
    if not ok:
        raise _corrupt(f"{what}: field {key!r} missing or of the wrong type", offset)
    return value


def _parse_tensor(obj: dict, offset: int) -> TensorEntry:
    what = "tensor record"
    name = _field(obj, "name", str, what, offset)
    if len(name) > spec.MAX_TENSOR_NAME:
        raise _corrupt("tensor name too long", offset)
    shape = _field(obj, "shape", list, what, offset)
    if len(shape) > spec.MAX_NDIM or not all(
        isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 1 << 48 for d in shape
    ):
        raise _corrupt(f"tensor {name!r}: invalid shape {shape!r}", offset)
    dtype = _field(obj, "dtype", str, what, offset)
    if dtype not in dtypes.ALL_NAMES:
        raise _corrupt(f"tensor {name!r}: unknown dtype {dtype!r}", offset)
    config = _field(obj, "config", dict, what, offset)
    rows_per_chunk = _field(obj, "rows_per_chunk", int, what, offset)
    chunk_count = _field(obj, "chunk_count", int, what, offset)
    entry = TensorEntry(
        id=_field(obj, "id", int, what, offset),
        name=name,
        dtype=dtype,
        shape=tuple(shape),
        strategy=_field(obj, "strategy", str, what, offset),
        config=config,
        rule=str(obj.get("rule", "")),
        rows_per_chunk=rows_per_chunk,
        chunk_count=chunk_count,
    )
    expected = _expected_chunks(entry)
    if expected != chunk_count:
        raise _corrupt(f"tensor {name!r}: {chunk_count} chunks declared, shape implies {expected}", offset)
    return entry


def _expected_chunks(entry: TensorEntry) -> int:
    numel = 1
    for dim in entry.shape:
        numel *= dim
    if numel == 0:
        return 0
    if entry.rows_per_chunk == 0:
        return -1  # impossible: flags the record as corrupt
    return -(-entry.rows // entry.rows_per_chunk)


def _apply_end(entry: TensorEntry, obj: dict, offset: int) -> None:
    what = f"end of tensor {entry.name!r}"
    digest = obj.get("digest")
    if not isinstance(digest, str) or len(digest) > 256:
        raise _corrupt(f"{what}: missing digest", offset)
    entry.digest = digest
    entry.original_bytes = _field(obj, "original_bytes", int, what, offset)
    entry.stored_bytes = _field(obj, "stored_bytes", int, what, offset)
    stats = obj.get("stats")
    if stats is not None and not isinstance(stats, dict):
        raise _corrupt(f"{what}: stats is not an object", offset)
    entry.stats = stats
    lossless = obj.get("lossless")
    entry.lossless = lossless if isinstance(lossless, bool) else None
    if entry.original_bytes != dtypes.nbytes(entry.dtype, entry.shape):
        raise _corrupt(f"{what}: original size disagrees with dtype and shape", offset)


_BODY_CAPS = {
    spec.RecordType.INDEX: spec.MAX_INDEX_BODY,
    spec.RecordType.CHUNK: spec.MAX_RECORD_BODY,
    spec.RecordType.BLOB: spec.MAX_RECORD_BODY,
}


def parse_record_header(head: bytes, offset: int, remaining: int | None) -> RecordHeader:
    """Check one record header against its CRC, the caps and the bytes that remain."""
    if len(head) < spec.RECORD_HEADER.size:
        raise _corrupt("file ends inside a record header (truncated)", offset)
    rtype, flags, length, checksum, crc = spec.RECORD_HEADER.unpack(head)
    if zlib.crc32(head[: spec.RECORD_HEADER_CRC_SPAN]) != crc:
        raise _corrupt("record header checksum mismatch", offset)
    if flags & ~spec.KNOWN_FLAGS:
        raise _corrupt(f"record flags {flags:#x} are not known to this reader (upgrade bie?)", offset)
    cap = _BODY_CAPS.get(rtype, spec.MAX_JSON_BODY)
    if length > cap:
        raise _corrupt(f"record length {length} exceeds the cap of {cap}", offset)
    if remaining is not None and length > remaining - spec.RECORD_HEADER.size:
        raise _corrupt(
            f"record length {length} runs past the end of the file (truncated?)", offset
        )
    return RecordHeader(rtype, flags, length, checksum)


def parse_chunk(body: memoryview, offset: int) -> Chunk:
    if len(body) < spec.CHUNK_PREFIX.size:
        raise _corrupt("chunk record shorter than its prefix", offset)
    tensor_id, number, row_start, row_stop, meta_length, padding = spec.CHUNK_PREFIX.unpack_from(body)
    meta_start = spec.CHUNK_PREFIX.size
    payload_start = meta_start + meta_length + padding
    if meta_length > spec.MAX_CHUNK_META or padding >= spec.ALIGNMENT or payload_start > len(body):
        raise _corrupt("chunk meta or padding length out of range", offset)
    if row_stop < row_start:
        raise _corrupt("chunk row range is reversed", offset)
    meta_bytes = body[meta_start : meta_start + meta_length]
    meta = {} if meta_bytes == b"{}" else _json(meta_bytes, "chunk meta", offset)  # most chunks: no meta
    return Chunk(tensor_id, number, row_start, row_stop, meta, body[payload_start:])


def parse_blob(body: memoryview, offset: int) -> tuple[str, memoryview]:
    if len(body) < spec.BLOB_PREFIX.size:
        raise _corrupt("blob record shorter than its prefix", offset)
    name_length, padding = spec.BLOB_PREFIX.unpack_from(body)
    start = spec.BLOB_PREFIX.size
    if name_length > spec.MAX_BLOB_NAME or padding >= spec.ALIGNMENT or start + name_length + padding > len(body):
        raise _corrupt("blob name or padding length out of range", offset)
    try:
        name = bytes(body[start : start + name_length]).decode()
    except UnicodeDecodeError:
        raise _corrupt("blob name is not UTF-8", offset) from None
    return name, body[start + name_length + padding :]


def check_file_header(head: bytes) -> None:
    if len(head) < spec.FILE_HEADER.size:
        raise CorruptContainerError("not a .cai container: file is shorter than its header (truncated)")
    magic, major, minor, _flags = spec.FILE_HEADER.unpack(head[: spec.FILE_HEADER.size])
    if magic != spec.FILE_MAGIC:
        raise CorruptContainerError("not a .cai container: wrong magic bytes")
    if major != spec.FORMAT_MAJOR:
        raise BadInputError(
            f"container format version {major}.{minor} is not supported by this bie "
            f"(reads {spec.FORMAT_MAJOR}.x); upgrade bie"
        )


# -- decoding parameters ------------------------------------------------------------


def check_bits(bits: int | None) -> None:
    """``bits`` (progressive decoding: top planes only) is None or a positive integer."""
    if bits is not None and (isinstance(bits, bool) or not isinstance(bits, int) or bits < 1):
        raise BadInputError(f"bits must be a positive integer, got {bits!r}")


# -- sequential scanning (pipes and verify) --------------------------------------


def _read_exact(stream: BinaryIO, size: int) -> bytes:
    """Read ``size`` bytes in bounded pieces, so a lying length never allocates
    more than the stream actually delivers."""
    pieces = []
    remaining = size
    while remaining:
        piece = stream.read(min(remaining, 16 << 20))
        if not piece:
            break
        pieces.append(piece)
        remaining -= len(piece)
    return b"".join(pieces)


def scan_records(stream: BinaryIO, file_length: int | None = None) -> Iterator[Record]:
    """Yield every record in file order, checksums checked, then check the trailer.

    ``file_length`` (when the stream is a file) lets lengths be checked against
    the bytes that remain before reading.
    """
    head = _read_exact(stream, spec.FILE_HEADER.size)
    check_file_header(head)
    offset = len(head)
    while True:
        remaining = None if file_length is None else file_length - offset
        head = _read_exact(stream, spec.RECORD_HEADER.size)
        if not head:
            raise _corrupt("file ends before the index (truncated)", offset)
        rtype, flags, length, checksum = parse_record_header(head, offset, remaining)
        body = _read_exact(stream, length)
        if len(body) != length:
            raise _corrupt("file ends inside a record body (truncated)", offset)
        if spec.body_checksum(body) != checksum:
            raise _corrupt(f"{_type_name(rtype)} record checksum mismatch", offset)
        yield Record(offset, rtype, memoryview(body), flags)
        index_offset = offset
        offset += spec.RECORD_HEADER.size + length
        if rtype == spec.RecordType.INDEX:
            trailer = _read_exact(stream, spec.TRAILER.size)
            _check_trailer(trailer, offset, expect_index=(index_offset, offset - index_offset))
            if stream.read(1):
                raise _corrupt("bytes after the trailer", offset + spec.TRAILER.size)
            return


def _type_name(rtype: int) -> str:
    try:
        return spec.RecordType(rtype).name.lower()
    except ValueError:
        return f"type-{rtype}"


def _check_trailer(trailer: bytes, offset: int, expect_index=None) -> tuple[int, int, int]:
    if len(trailer) != spec.TRAILER.size:
        raise _corrupt("file ends inside the trailer (truncated)", offset)
    index_offset, index_length, file_length, crc, _reserved, magic = spec.TRAILER.unpack(trailer)
    if magic != spec.TRAILER_MAGIC:
        raise _corrupt("trailer magic missing (truncated or not a .cai file)", offset)
    if zlib.crc32(trailer[: spec.TRAILER_CRC_SPAN]) != crc:
        raise _corrupt("trailer checksum mismatch", offset)
    if file_length != offset + spec.TRAILER.size:
        raise _corrupt("trailer file length disagrees with the file", offset)
    if expect_index is not None and (index_offset, index_length) != expect_index:
        raise _corrupt("trailer does not point at the index", offset)
    return index_offset, index_length, file_length


@dataclass(frozen=True)
class StreamEvent:
    """One step of a container read front to back: ``kind`` is "tensor" (a tensor
    opens), "chunk" (one of its chunks, parsed and in place) or "end" (it closed;
    ``entry`` now holds its digest and sizes)."""

    kind: str
    entry: TensorEntry
    chunk: Chunk | None = None


class ContainerStream:
    """A container read front to back (e.g. from stdin), record structure validated.

    ``header`` and ``blobs`` are read on construction; :meth:`events` then
    walks the tensors. Decoding payloads is the caller's business (this module
    knows bytes, not strategies)."""

    def __init__(self, stream: BinaryIO, file_length: int | None = None) -> None:
        self._records = scan_records(stream, file_length)
        first = next(self._records)
        if first.type != spec.RecordType.HEADER:
            raise _corrupt("first record is not the header", first.offset)
        self.header = first.json("header")
        self.blobs: dict[str, bytes] = {}
        self.entries: list[TensorEntry] = []
        self.index: dict | None = None
        self._pending: Record | None = None
        # blobs sit between the header and the first tensor; read them now so
        # a sink has all source structure before the first tensor arrives.
        for record in self._records:
            if record.type == spec.RecordType.BLOB:
                name, data = parse_blob(record.body, record.offset)
                self.blobs[name] = bytes(data)
                continue
            self._pending = record
            break

    def events(self) -> Iterator[StreamEvent]:
        current: TensorEntry | None = None
        records = self._records
        if self._pending is not None:
            records = _prepend(self._pending, records)
            self._pending = None  # the record stream is consumed once
        for record in records:
            rtype, offset = record.type, record.offset
            if rtype == spec.RecordType.TENSOR:
                if current is not None:
                    raise _corrupt(f"tensor {current.name!r} is not closed", offset)
                current = _parse_tensor(record.json("tensor"), offset)
                if current.id != len(self.entries):
                    raise _corrupt("tensor ids are not sequential", offset)
                yield StreamEvent("tensor", current)
            elif rtype == spec.RecordType.CHUNK:
                chunk = parse_chunk(record.body, offset)
                if current is None or chunk.tensor_id != current.id:
                    raise _corrupt("chunk outside its tensor", offset)
                _check_chunk_position(current, chunk, len(current.chunks), offset)
                current.chunks.append(ChunkRef(offset, spec.RECORD_HEADER.size + len(record.body), chunk.row_start, chunk.row_stop))
                yield StreamEvent("chunk", current, chunk)
            elif rtype == spec.RecordType.TENSOR_END:
                end = record.json("tensor end")
                if current is None or end.get("id") != current.id:
                    raise _corrupt("tensor end without its tensor", offset)
                if len(current.chunks) != current.chunk_count:
                    raise _corrupt(f"tensor {current.name!r} has {len(current.chunks)} of {current.chunk_count} chunks", offset)
                _apply_end(current, end, offset)
                self.entries.append(current)
                yield StreamEvent("end", current)
                current = None
            elif rtype == spec.RecordType.INDEX:
                if current is not None:
                    raise _corrupt(f"tensor {current.name!r} is not closed", offset)
                self.index = record.json("index")
            elif rtype in (spec.RecordType.HEADER, spec.RecordType.BLOB):
                raise _corrupt(f"unexpected {_type_name(rtype)} record", offset)
            # unknown record types are skipped by length (forward compatibility)


def _prepend(first: Record, rest: Iterator[Record]) -> Iterator[Record]:
    yield first
    yield from rest


def _check_chunk_position(entry: TensorEntry, chunk: Chunk, number: int, offset: int) -> None:
    start = number * entry.rows_per_chunk
    stop = min(start + entry.rows_per_chunk, entry.rows)
    if chunk.number != number or (chunk.row_start, chunk.row_stop) != (start, stop):
        raise _corrupt(
            f"tensor {entry.name!r}: chunk {chunk.number} rows {chunk.row_start}:{chunk.row_stop} "
            f"out of place (expected chunk {number} rows {start}:{stop})", offset
        )


# -- random access -----------------------------------------------------------------


class ContainerReader:
    """Random access to a seekable container through a read-only memory map.

    Opening reads only the trailer and the index; :meth:`read_chunk` then reads
    and checks single chunk records, and :meth:`walk_records` walks them all
    (for verify). Decoding payloads is the tensor layer's business.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = os.fspath(path)
        try:
            self._file = open(self.path, "rb")
        except FileNotFoundError:
            raise BadInputError(f"no such file: {self.path}") from None
        except IsADirectoryError:
            raise BadInputError(f"{self.path} is a directory, not a .cai file") from None
        except OSError as exc:
            raise BadInputError(f"cannot read {self.path}: {exc.strerror}") from None
        try:
            self._open()
        except BaseException:
            self.close()
            raise

    def _open(self) -> None:
        size = os.fstat(self._file.fileno()).st_size
        self.file_length = size
        check_file_header(self._file.read(spec.FILE_HEADER.size))
        if size < spec.FILE_HEADER.size + spec.TRAILER.size:
            raise _corrupt("file too short for a trailer (truncated)")
        self._map = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ)
        self._release_lock = threading.Lock()
        self._released: list[tuple[int, int]] = []
        self._released_bytes = 0
        view = memoryview(self._map)
        self._view = view
        trailer_at = size - spec.TRAILER.size
        index_offset, index_length, _ = _check_trailer(bytes(view[trailer_at:]), trailer_at)
        if index_offset + index_length != trailer_at:
            raise _corrupt("index does not end where the trailer starts", trailer_at)
        index_record = self._record(index_offset, spec.RecordType.INDEX)
        self.index = index_record.json("index")
        header_offset = self.index.get("header_offset")
        if not isinstance(header_offset, int) or header_offset != spec.FILE_HEADER.size:
            raise _corrupt("index does not point at the header", index_offset)
        header = self._record(header_offset, spec.RecordType.HEADER)
        self.header = header.json("header")
        self.entries = self._parse_index(index_offset)
        self._by_name = {entry.name: entry for entry in self.entries}
        if len(self._by_name) != len(self.entries):
            raise _corrupt("duplicate tensor names in the index", index_offset)

    def _parse_index(self, index_offset: int) -> list[TensorEntry]:
        tensors = self.index.get("tensors")
        blobs = self.index.get("blobs")
        if not isinstance(tensors, list) or not isinstance(blobs, list) or len(tensors) > spec.MAX_TENSORS:
            raise _corrupt("index has no valid tensor or blob list", index_offset)
        self._blobs = {}
        for blob in blobs:
            if not isinstance(blob, dict):
                raise _corrupt("index blob entry is not an object", index_offset)
            self._blobs[_field(blob, "name", str, "index blob", index_offset)] = _field(
                blob, "offset", int, "index blob", index_offset
            )
        entries = []
        for number, obj in enumerate(tensors):
            if not isinstance(obj, dict):
                raise _corrupt("index tensor entry is not an object", index_offset)
            entry = _parse_tensor(obj, index_offset)
            if entry.id != number:
                raise _corrupt("index tensor ids are not sequential", index_offset)
            _apply_end(entry, obj, index_offset)
            chunks = obj.get("chunks")
            if not isinstance(chunks, list) or len(chunks) != entry.chunk_count:
                raise _corrupt(f"index: tensor {entry.name!r} chunk list does not match its count", index_offset)
            for position, ref in enumerate(chunks):
                if not (isinstance(ref, list) and len(ref) == 4 and all(isinstance(v, int) and v >= 0 for v in ref)):
                    raise _corrupt(f"index: tensor {entry.name!r} has a malformed chunk entry", index_offset)
                chunk_offset, length, row_start, row_stop = ref
                if chunk_offset + length > index_offset:
                    raise _corrupt(f"index: tensor {entry.name!r} chunk {position} points past the data", index_offset)
                start = position * entry.rows_per_chunk
                if (row_start, row_stop) != (start, min(start + entry.rows_per_chunk, entry.rows)):
                    raise _corrupt(f"index: tensor {entry.name!r} chunk {position} has wrong rows", index_offset)
                entry.chunks.append(ChunkRef(chunk_offset, length, row_start, row_stop))
            entries.append(entry)
        return entries

    def _record(self, offset: int, expected_type: int, verify: bool = True) -> Record:
        if offset + spec.RECORD_HEADER.size > self.file_length:
            raise _corrupt("record offset past the end of the file", offset)
        head = bytes(self._view[offset : offset + spec.RECORD_HEADER.size])
        rtype, flags, length, checksum = parse_record_header(head, offset, self.file_length - offset)
        if rtype != expected_type:
            raise _corrupt(f"expected a {_type_name(expected_type)} record, found {_type_name(rtype)}", offset)
        start = offset + spec.RECORD_HEADER.size
        body = self._view[start : start + length]
        if verify and spec.body_checksum(body) != checksum:
            raise _corrupt(f"{_type_name(rtype)} record checksum mismatch", offset)
        return Record(offset, rtype, body, flags)

    def walk_records(self, problems: list[str]) -> Iterator[WalkedRecord]:
        """Every record from the header to the index, front to back, for ``verify``.

        Tolerant: a record whose body fails its checksum is yielded with
        ``checksum_ok=False`` and the walk goes on (its header, and so its
        length, is intact); a broken record header ends the walk. Structural
        problems are appended to ``problems`` instead of raised."""
        offset = spec.FILE_HEADER.size
        end = self.file_length - spec.TRAILER.size
        while offset < end:
            head = bytes(self._view[offset : offset + spec.RECORD_HEADER.size])
            try:
                rtype, flags, length, checksum = parse_record_header(head, offset, end - offset)
            except CorruptContainerError as exc:
                problems.append(str(exc))
                return
            start = offset + spec.RECORD_HEADER.size
            body = self._view[start : start + length]
            yield WalkedRecord(offset, rtype, flags, body, spec.body_checksum(body) == checksum)
            offset = start + length
        if offset != end:
            problems.append(f"corrupt container: records end at byte {offset}, index says {end}")


    # -- public ----------------------------------------------------------------------
    def __contains__(self, name: str) -> bool:
        return name in self._by_name

    def entry(self, name: str) -> TensorEntry:
        try:
            return self._by_name[name]
        except KeyError:
            raise BadInputError(f"no tensor named {name!r} in {self.path}") from None

    @property
    def blob_names(self) -> list[str]:
        return list(self._blobs)

    def blob(self, name: str) -> bytes | None:
        offset = self._blobs.get(name)
        if offset is None:
            return None
        blob_name, data = parse_blob(self._record(offset, spec.RecordType.BLOB).body, offset)
        if blob_name != name:
            raise _corrupt(f"blob at {offset} is named {blob_name!r}, index says {name!r}", offset)
        return bytes(data)

    def read_chunk(self, entry: TensorEntry, number: int, verify: bool = True) -> Chunk:
        """One chunk record; ``verify=False`` skips the body checksum (for a progressive
        strategy that checks the parts it reads itself) and so reads no payload bytes."""
        ref = entry.chunks[number]
        try:
            record = self._record(ref.offset, spec.RecordType.CHUNK, verify)
            chunk = parse_chunk(record.body, ref.offset)
        except CorruptContainerError as exc:
            raise CorruptContainerError(f"tensor {entry.name!r} chunk {number}: {exc}") from None
        if (chunk.tensor_id, chunk.number, chunk.row_start, chunk.row_stop) != (
            entry.id, number, ref.row_start, ref.row_stop
        ):
            raise CorruptContainerError(
                f"tensor {entry.name!r} chunk {number}: record does not match the index"
            )
        return chunk

    def release(self, offset: int, length: int) -> None:
        """Drop a finished chunk's pages from this process's memory map (safe from any thread).

        The pages stay in the OS page cache and are faulted back in from the
        file if touched again, so views handed out stay valid; without this a
        full pass over a large container would count the whole file in our
        resident memory. Records are released in batches of :data:`RELEASE_BATCH`
        bytes, adjacent ones in one call: each call costs a system call and, with
        threads on other cores, a TLB shootdown (an interrupt of every core the
        process runs on), which per chunk cost ~0.1 s of CPU a GiB (session 10)."""
        if not hasattr(mmap, "MADV_DONTNEED") or self._map is None:
            return
        with self._release_lock:
            self._released.append((offset, offset + length))
            self._released_bytes += length
            if self._released_bytes < RELEASE_BATCH:
                return
            ranges, self._released, self._released_bytes = self._released, [], 0
        self._drop(ranges)

    def _drop(self, ranges: list[tuple[int, int]]) -> None:
        ranges.sort()
        merged = [list(ranges[0])]
        for start, end in ranges[1:]:
            if start - merged[-1][1] <= RELEASE_GAP:  # what lies between is not mapped in (or harmless to drop)
                merged[-1][1] = max(merged[-1][1], end)
            else:
                merged.append([start, end])
        mapped = self._map
        if mapped is None:
            return
        for offset, stop in merged:
            start = offset - offset % mmap.PAGESIZE
            end = min(stop, self.file_length)
            end -= end % mmap.PAGESIZE  # only whole pages of the range
            if end > start:
                try:
                    mapped.madvise(mmap.MADV_DONTNEED, start, end - start)
                except ValueError:  # closed meanwhile by another thread
                    return

    def close(self) -> None:
        view = getattr(self, "_view", None)
        if view is not None:
            view.release()
            self._view = None
        mapped = getattr(self, "_map", None)
        if mapped is not None:
            try:
                mapped.close()
            except BufferError:  # a caller still holds a view; the OS frees it at exit
                pass
            self._map = None
        self._file.close()

    def __enter__(self) -> ContainerReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

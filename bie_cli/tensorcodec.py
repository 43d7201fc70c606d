"""A tensor's life in a container: rows -> strategy -> chunk records, and back.

This is the one layer that knows both strategies and the container:

* encoding: :class:`TensorPlan` (what to do with one tensor: strategy, config,
  rows per chunk) -> :func:`encode_chunk` per chunk of rows ->
  :class:`EncodedChunk` records, closed by :func:`end_record` (digest of the
  original bytes, sizes, error statistics). :class:`EncodeTask` is the same
  work as a picklable, self-contained description ("encode chunks a..b of
  tensor T read from checkpoint S") that runs in a thread, another process or
  on a Dask worker (:func:`run_encode_task`); :class:`TensorRecordWriter`
  turns the results into records in manifest order.
* decoding: :func:`decode_chunk` (payload -> array, ``bits`` for progressive
  strategies), :class:`StoredTensors` (random access over a
  :class:`ContainerReader`: tensors, row ranges, raw chunk payloads for the
  kernels), :class:`DigestCheck` (a lossless tensor's decoded bytes against its
  stored digest) and :class:`StreamDecoder` (a container read front to back).

``formats/cai`` below this layer is bytes and validation only; ``pipeline``
above it is orchestration (which tensors, which executor, progress, files).
"""

from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np

from . import dtypes
from .errors import BadInputError, BieError, CorruptContainerError
from .formats.base import CheckpointSource, TensorInfo
from .formats.cai import spec
from .formats.cai.reader import (
    Chunk,
    ContainerReader,
    ContainerStream,
    TensorEntry,
    check_bits,
)
from .formats.cai.writer import ContainerWriter
from .metrics import ErrorStats
from .strategies import registry

# -- encoding --------------------------------------------------------------------------


def rows_per_chunk(info: TensorInfo, chunk_size: int) -> int:
    """Rows of ``info`` that fit in ``chunk_size`` bytes (at least one)."""
    row_bytes = dtypes.nbytes(info.dtype, info.shape[1:]) if info.shape else dtypes.get(info.dtype).itemsize
    return max(1, chunk_size // max(row_bytes, 1))


@dataclass(frozen=True)
class TensorPlan:
    """What to do with one tensor: picklable, so it travels to any worker.

    ``config`` is the parsed strategy config (a frozen dataclass),
    ``config_dict`` its JSON form as stored in the tensor record."""

    info: TensorInfo
    strategy: str
    config: Any
    config_dict: dict
    reason: str
    rows_per_chunk: int

    @property
    def chunk_count(self) -> int:
        return 0 if self.info.numel == 0 else -(-self.info.rows // self.rows_per_chunk)

    def chunk_rows(self, number: int) -> tuple[int, int]:
        start = number * self.rows_per_chunk
        return start, min(start + self.rows_per_chunk, self.info.rows)

    @property
    def lossless(self) -> bool:
        return registry.get(self.strategy).is_lossless(self.config)

    def record(self) -> dict:
        """The TENSOR record (the writer adds the id)."""
        return {
            "name": self.info.name, "dtype": self.info.dtype, "shape": list(self.info.shape),
            "strategy": self.strategy, "config": self.config_dict, "rule": self.reason,
            "rows_per_chunk": self.rows_per_chunk, "chunk_count": self.chunk_count,
        }


def plan_tensor(source: CheckpointSource, info: TensorInfo, choice, chunk_size: int) -> TensorPlan:
    """Fix a planner :class:`~bie_cli.plan.Choice` for one tensor. A choice with candidates
    ("smallest of zstd/rle/delta") keeps the candidate whose payload is smallest on the
    first chunk, so the decision costs one chunk's read and encodes."""
    step = rows_per_chunk(info, chunk_size)
    if choice.candidates:
        rows = min(step, info.rows) if info.numel else 0
        choice = _smallest_on_first_chunk(choice, source, info, rows)
    return TensorPlan(info, choice.strategy, choice.config, choice.config_dict, choice.reason, step)


def _smallest_on_first_chunk(choice, source: CheckpointSource, info: TensorInfo, rows: int):
    if rows == 0:
        return choice.candidates[0]
    chunk = source.read(info.name, 0, rows)
    sizes = []
    for candidate in choice.candidates:
        payload, meta = registry.get(candidate.strategy).encode(chunk, candidate.config)
        sizes.append(len(payload) + len(str(meta)))
    best = choice.candidates[sizes.index(min(sizes))]
    return dataclasses.replace(best, reason=f"{best.reason} (on the first chunk)")


@dataclass
class EncodedChunk:
    """One chunk record's content, ready for :meth:`ContainerWriter.write_chunk`."""

    row_start: int
    row_stop: int
    meta: dict
    #: bytes, or a tuple of buffers (bytes, 1-D uint8 arrays) written one after the other
    payload: bytes | tuple
    error: ErrorStats | None = None  # lossy strategies: measured on the decoded chunk


def payload_bytes(payload: bytes | tuple) -> bytes:
    """An :class:`EncodedChunk`'s payload as one bytes object."""
    return b"".join(payload) if isinstance(payload, tuple) else payload


def check_chunk(chunk: np.ndarray, info: TensorInfo) -> None:
    expected = dtypes.get(info.dtype).numpy
    if chunk.dtype != expected:
        raise BadInputError(f"tensor {info.name!r}: source gave {chunk.dtype}, expected {expected}")


def encode_chunk(plan: TensorPlan, row_start: int, row_stop: int, chunk: np.ndarray) -> EncodedChunk:
    """Encode one chunk of rows; a lossy strategy's error is measured on the real decode.
    Thread-safe: strategies hold no state and their codecs release the GIL."""
    strategy = registry.get(plan.strategy)
    if strategy.is_lossless(plan.config):  # the payload's parts, not joined: the writer takes them
        parts, meta = strategy.encode_parts(chunk, plan.config)
        return EncodedChunk(row_start, row_stop, meta, parts[0] if len(parts) == 1 else tuple(parts))
    payload, meta = strategy.encode(chunk, plan.config)
    decoded = strategy.decode(memoryview(payload), meta, chunk.shape, plan.info.dtype)
    error = ErrorStats()
    error.add(chunk, decoded)
    return EncodedChunk(row_start, row_stop, meta, payload, error)


def handed_chunk(plan: TensorPlan, row_start: int, row_stop: int, chunk: np.ndarray, payload: bytes,
                 meta: dict) -> EncodedChunk:
    """A chunk encoded earlier (``bie plan``'s handoff) from exactly ``chunk``'s bytes: what
    :func:`encode_chunk` returns, its error measured on the decode of ``payload``."""
    strategy = registry.get(plan.strategy)
    if strategy.is_lossless(plan.config):
        return EncodedChunk(row_start, row_stop, meta, payload)
    decoded = strategy.decode(memoryview(payload), meta, chunk.shape, plan.info.dtype)
    error = ErrorStats()
    error.add(chunk, decoded)
    return EncodedChunk(row_start, row_stop, meta, payload, error)


def update_digest(digest, array: np.ndarray) -> None:
    if not (isinstance(array, np.ndarray) and array.flags.c_contiguous):
        array = np.ascontiguousarray(array)
    digest.update(array.reshape(-1).view(_UINT8))


_UINT8 = np.dtype(np.uint8)


class OrderedDigest:
    """One tensor's digest (a stream over its chunks in order) fed by whichever thread holds
    the next chunk: :meth:`add` files chunk ``number``; the first thread to find the stream's
    next chunk waiting hashes it and every later one already filed, while other threads go
    on. No thread waits for another, and the hashing runs on the threads that read or decoded
    the chunks (xxhash releases the GIL), not on the one that writes.

    :attr:`digest` is complete once every chunk's :meth:`add` has returned."""

    __slots__ = ("_busy", "_lock", "_next", "_waiting", "digest")

    def __init__(self) -> None:
        self.digest = spec.new_digest()
        self._lock = threading.Lock()
        self._waiting: dict[int, tuple] = {}  # number -> (array, then)
        self._next = 0
        self._busy = False

    def add(self, number: int, array: np.ndarray, then: Callable[[], None] | None = None) -> None:
        """File chunk ``number``; ``then``: called once it is hashed, by the thread that
        hashes it (e.g. to hand its memory on: until then it must not change)."""
        with self._lock:
            if self._busy or number != self._next:
                # the thread hashing this stream, or the one that adds chunk _next, takes it
                self._waiting[number] = (array, then)
                return
            self._busy = True  # the stream's next chunk: hashed now, without filing it
        while True:
            try:
                update_digest(self.digest, array)
                if then is not None:
                    then()
            except BaseException:
                with self._lock:
                    self._busy = False
                raise
            with self._lock:
                self._next += 1  # only the hashing thread moves it
                array, then = self._waiting.pop(self._next, (None, None))
                if array is None:
                    self._busy = False
                    return

    def hexdigest(self) -> str:
        return self.digest.hexdigest()


@dataclass(frozen=True)
class SourceRef:
    """How to open a checkpoint again in another process or on another machine
    (a path every worker sees)."""

    path: str
    format: str


_open_sources: dict[SourceRef, CheckpointSource] = {}


def open_source(ref: SourceRef) -> CheckpointSource:
    """The checkpoint ``ref`` names, opened once per process and kept open for the next task."""
    source = _open_sources.get(ref)
    if source is None:
        from . import formats

        source = formats.open_checkpoint(ref.path, ref.format)
        _open_sources[ref] = source
    return source


@dataclass(frozen=True)
class EncodeTask:
    """Encode chunks ``[first_chunk, stop_chunk)`` of one tensor read from ``source``.

    Self-contained and picklable: it runs the same in a thread, a process pool
    or on a Dask worker. When the task covers the whole tensor it also returns
    the digest of the original bytes (the digest is one stream over the tensor,
    so a tensor split across tasks is hashed by :class:`DigestTask`)."""

    source: SourceRef
    plan: TensorPlan
    first_chunk: int
    stop_chunk: int

    @property
    def whole_tensor(self) -> bool:
        return self.first_chunk == 0 and self.stop_chunk == self.plan.chunk_count


@dataclass
class EncodedPart:
    """What an :class:`EncodeTask` sends back."""

    chunks: list[EncodedChunk]
    digest: str | None  # hex digest of the tensor's original bytes (whole-tensor tasks only)


def run_encode_task(task: EncodeTask) -> EncodedPart:
    from . import _malloc

    _malloc.tune()  # a worker process: once
    source = open_source(task.source)
    plan = task.plan
    digest = spec.new_digest() if task.whole_tensor else None
    chunks = []
    for number in range(task.first_chunk, task.stop_chunk):
        row_start, row_stop = plan.chunk_rows(number)
        array = source.read(plan.info.name, row_start, row_stop)
        check_chunk(array, plan.info)
        if digest is not None:
            update_digest(digest, array)
        encoded = encode_chunk(plan, row_start, row_stop, array)
        encoded.payload = payload_bytes(encoded.payload)  # one buffer to pickle (parts may be memoryviews)
        chunks.append(encoded)
    return EncodedPart(chunks, digest.hexdigest() if digest is not None else None)


@dataclass(frozen=True)
class DigestTask:
    """Hash one tensor's original bytes (for a tensor whose chunks were split across tasks)."""

    source: SourceRef
    plan: TensorPlan

    def __call__(self) -> str:
        source = open_source(self.source)
        digest = spec.new_digest()
        for number in range(self.plan.chunk_count):
            row_start, row_stop = self.plan.chunk_rows(number)
            update_digest(digest, source.read(self.plan.info.name, row_start, row_stop))
        return digest.hexdigest()


def run_digest_task(task: DigestTask) -> str:
    return task()


@dataclass
class TensorResult:
    """A tensor as written: what compress reports per tensor."""

    plan: TensorPlan
    stored_bytes: int
    lossless: bool
    error: dict | None
    original_bytes: int


def end_record(plan: TensorPlan, digest: str, stored_bytes: int, lossless: bool, error: ErrorStats | None) -> dict:
    """The TENSOR_END record: digest of the original bytes, sizes, error statistics."""
    return {
        "digest": digest, "original_bytes": dtypes.nbytes(plan.info.dtype, plan.info.shape),
        "stored_bytes": stored_bytes, "lossless": lossless, "stats": error.to_dict() if error else None,
    }


class TensorRecordWriter:
    """Write tensors' records through a :class:`ContainerWriter` as their pieces arrive
    (in manifest order): ``begin(plan)``, ``chunk(encoded)`` per chunk, ``end(digest)``."""

    def __init__(self, writer: ContainerWriter) -> None:
        self.writer = writer
        self._plan: TensorPlan | None = None

    def begin(self, plan: TensorPlan) -> None:
        self._plan = plan
        self._start = self.writer.bytes_written
        self._lossless = plan.lossless
        self._error = None if self._lossless else ErrorStats()
        self.writer.begin_tensor(plan.record())

    def chunk(self, encoded: EncodedChunk) -> None:
        self.writer.write_chunk(encoded.row_start, encoded.row_stop, encoded.meta, encoded.payload)
        if encoded.error is not None:
            self._error.merge(encoded.error)

    def end(self, digest: str) -> TensorResult:
        plan, error = self._plan, self._error
        stored = self.writer.bytes_written - self._start
        end = end_record(plan, digest, stored, self._lossless, error)
        self.writer.end_tensor(end)
        self._plan = None
        return TensorResult(plan, stored, self._lossless, error.to_dict() if error else None, end["original_bytes"])


# -- decoding ----------------------------------------------------------------------------


def is_lossless(entry: TensorEntry) -> bool:
    """Whether a stored tensor decodes bit-exact (as its end record says, else its strategy)."""
    return entry.lossless if entry.lossless is not None else registry.get(entry.strategy).lossless


def is_progressive(entry: TensorEntry, bits: int | None) -> bool:
    """Whether ``bits`` applies to this tensor: its strategy decodes from its top planes.
    Other strategies ignore ``bits`` and decode in full."""
    return bits is not None and registry.get(entry.strategy).progressive


def decode_chunk(entry: TensorEntry, chunk: Chunk, bits: int | None = None, out: np.ndarray | None = None) -> np.ndarray:
    """Decode one chunk to an array of the tensor's dtype (names the chunk on failure).

    With ``bits`` and a progressive strategy, only the top ``bits`` planes are
    decoded; the strategy checksums exactly the bytes it reads. ``out``: a writable
    uint8 array of exactly the chunk's bytes, aligned for its dtype; the chunk is
    decoded into it (:meth:`Strategy.decode_into <bie_cli.strategies.base.Strategy.decode_into>`)
    and the array returned is a view of it."""
    strategy = registry.get(entry.strategy)
    shape = entry.chunk_shape(chunk.row_start, chunk.row_stop)
    try:
        if bits is not None and strategy.progressive:
            array = strategy.decode_planes(chunk.payload, chunk.meta, shape, entry.dtype, bits)
        elif out is not None:
            array = strategy.decode_into(chunk.payload, chunk.meta, shape, entry.dtype, out)
        else:
            array = strategy.decode(chunk.payload, chunk.meta, shape, entry.dtype)
    except BieError as exc:
        raise CorruptContainerError(f"tensor {entry.name!r} chunk {chunk.number}: {exc}") from None
    except Exception as exc:  # a decoder choking on checksummed bytes: report, don't crash
        raise CorruptContainerError(
            f"tensor {entry.name!r} chunk {chunk.number}: payload does not decode "
            f"with strategy {entry.strategy!r} ({type(exc).__name__}: {exc})"
        ) from None
    expected_dtype = dtypes.get(entry.dtype).numpy
    if array.shape != shape or array.dtype != expected_dtype:
        raise CorruptContainerError(
            f"tensor {entry.name!r} chunk {chunk.number}: decoded {array.dtype}{array.shape}, "
            f"expected {expected_dtype}{shape}"
        )
    if out is not None and not np.may_share_memory(array, out):
        target = out.view(expected_dtype).reshape(shape)  # a decoder that could not write there
        np.copyto(target, array)
        array = target
    return array


class DigestCheck:
    """Checks lossless tensors' decoded bytes against their stored digests, fed chunk by chunk
    in order; :meth:`update` raises :class:`CorruptContainerError` when a tensor completes wrong.

    ``ordered=True``: the decoding threads hash (:meth:`feed`, any order: an
    :class:`OrderedDigest` per tensor) and the thread that takes the chunks in order calls
    :meth:`passed` for each, which checks a tensor when its last chunk passes."""

    def __init__(self, entries: Iterable[TensorEntry], ordered: bool = False) -> None:
        self._digests: dict[int, Any] = {}
        self._remaining: dict[int, int] = {}
        for entry in entries:
            if not is_lossless(entry):
                continue
            if entry.chunks or entry.chunk_count:
                self._digests[entry.id] = OrderedDigest() if ordered else spec.new_digest()
                self._remaining[entry.id] = entry.chunk_count
            else:  # no chunks: complete already
                self._finish(entry, spec.new_digest())

    def update(self, entry: TensorEntry, array: np.ndarray) -> None:
        digest = self._digests.get(entry.id)
        if digest is None:
            return
        update_digest(digest, array)
        self.passed(entry)

    def feed(self, entry: TensorEntry, number: int, array: np.ndarray,
             then: Callable[[], None] | None = None) -> None:
        """(``ordered``) Hash chunk ``number`` of ``entry``; safe from any thread. ``then``:
        called once the chunk is hashed (at once when its tensor is not checked), by this
        thread or the one that hashes it (:meth:`OrderedDigest.add`)."""
        digest = self._digests.get(entry.id)
        if digest is not None:
            digest.add(number, array, then)
        elif then is not None:
            then()

    def passed(self, entry: TensorEntry) -> None:
        """One more chunk of ``entry`` passed in order (its bytes hashed already)."""
        if entry.id not in self._digests:
            return
        self._remaining[entry.id] -= 1
        if self._remaining[entry.id] == 0:
            self._finish(entry, self._digests.pop(entry.id))

    @staticmethod
    def _finish(entry: TensorEntry, digest) -> None:
        if digest.hexdigest() != entry.digest:
            raise CorruptContainerError(f"tensor {entry.name!r}: decoded bytes do not match the stored digest")


@dataclass(frozen=True)
class StoredChunk:
    """One chunk's stored form, for code that computes on payloads directly (the kernels)."""

    number: int
    row_start: int
    row_stop: int
    shape: tuple[int, ...]
    meta: dict
    payload: memoryview


class StoredTensors:
    """Tensors of a seekable container: decoded arrays, row ranges, or the stored chunks.

    Opening reads only the trailer, header and index; every read touches only
    the chunk records it needs."""

    def __init__(self, reader: ContainerReader) -> None:
        self.reader = reader

    @classmethod
    def open(cls, path: str | os.PathLike) -> StoredTensors:
        return cls(ContainerReader(path))

    @property
    def entries(self) -> list[TensorEntry]:
        return self.reader.entries

    def entry(self, name: str) -> TensorEntry:
        return self.reader.entry(name)

    def __contains__(self, name: str) -> bool:
        return name in self.reader

    def stored_chunks(self, name: str) -> Iterator[StoredChunk]:
        """Every chunk of tensor ``name`` as stored (checksum verified), in row order."""
        entry = self.entry(name)
        for number in range(len(entry.chunks)):
            chunk = self.reader.read_chunk(entry, number)
            yield StoredChunk(number, chunk.row_start, chunk.row_stop,
                              entry.chunk_shape(chunk.row_start, chunk.row_stop), chunk.meta, chunk.payload)

    def decode_chunk(self, entry: TensorEntry, number: int, bits: int | None = None,
                     out: np.ndarray | None = None) -> np.ndarray:
        """Read, check and decode chunk ``number`` of a tensor (safe to call from threads);
        ``out``: see :func:`decode_chunk`."""
        partial = is_progressive(entry, bits)
        # a progressive read skips the whole-record checksum: the strategy checks what it reads
        chunk = self.reader.read_chunk(entry, number, verify=not partial)
        array = decode_chunk(entry, chunk, bits if partial else None, out)
        ref = entry.chunks[number]
        self.reader.release(ref.offset, ref.length)
        return array

    def iter_chunks(self, entry: TensorEntry, row_start: int = 0, row_stop: int | None = None,
                    bits: int | None = None) -> Iterator[tuple[int, int, np.ndarray]]:
        """``(row_start, row_stop, array)`` for the chunks overlapping the row range."""
        check_bits(bits)
        row_stop = entry.rows if row_stop is None else row_stop
        for number, ref in enumerate(entry.chunks):
            if ref.row_stop <= row_start or ref.row_start >= row_stop:
                continue
            yield ref.row_start, ref.row_stop, self.decode_chunk(entry, number, bits)

    def read_tensor(self, name: str, row_start: int | None = None, row_stop: int | None = None,
                    bits: int | None = None) -> np.ndarray:
        """Decode a tensor, or rows ``[row_start, row_stop)`` of it (only those chunks are read)."""
        entry = self.entry(name)
        start, stop, _ = slice(row_start, row_stop).indices(entry.rows)
        stop = max(start, stop)
        np_dtype = dtypes.get(entry.dtype).numpy
        if not entry.shape:
            out = np.zeros((), dtype=np_dtype)
            for _, _, array in self.iter_chunks(entry, bits=bits):
                out[()] = array
            return out
        out = np.empty((stop - start, *entry.shape[1:]), dtype=np_dtype)
        if out.size == 0:
            return out
        for chunk_start, chunk_stop, array in self.iter_chunks(entry, start, stop, bits):
            lo, hi = max(start, chunk_start), min(stop, chunk_stop)
            out[lo - start : hi - start] = array[lo - chunk_start : hi - chunk_start]
        return out

    def close(self) -> None:
        self.reader.close()

    def __enter__(self) -> StoredTensors:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class StreamDecoder:
    """Decode a container read front to back (e.g. from stdin).

    ``header`` and ``blobs`` are available after construction; :meth:`chunks`
    then yields ``(entry, row_start, row_stop, array)`` in file order, checking
    each lossless tensor's digest when its end record arrives."""

    def __init__(self, stream: BinaryIO, file_length: int | None = None) -> None:
        self._stream = ContainerStream(stream, file_length)
        self.header = self._stream.header
        self.blobs = self._stream.blobs

    @property
    def entries(self) -> list[TensorEntry]:
        return self._stream.entries

    @property
    def index(self) -> dict | None:
        return self._stream.index

    def chunks(self, check_digests: bool = True, bits: int | None = None
               ) -> Iterator[tuple[TensorEntry, int, int, np.ndarray]]:
        check_bits(bits)
        digest = None
        for event in self._stream.events():
            if event.kind == "tensor":
                digest = spec.new_digest()
            elif event.kind == "chunk":
                array = decode_chunk(event.entry, event.chunk, bits)
                if check_digests:
                    update_digest(digest, array)
                yield event.entry, event.chunk.row_start, event.chunk.row_stop, array
            elif event.kind == "end":
                entry = event.entry
                if check_digests and is_lossless(entry) and digest.hexdigest() != entry.digest:
                    raise CorruptContainerError(f"tensor {entry.name!r}: decoded bytes do not match the stored digest")


"""safetensors in and out: single files and sharded checkpoints.

Reading parses the header ourselves and reads each tensor's rows with
``os.pread``, so one tensor (or one chunk of rows) is in memory at a time,
never the file. Writing streams too: the header is computed from the tensor
list, then rows are appended as they are decoded. The ``safetensors`` package
is used only by the tests, to prove the files we write load.
"""

from __future__ import annotations

import builtins
import json
import os
import stat
import struct
from collections.abc import Iterable
from typing import BinaryIO

import numpy as np

from .. import _directio, dtypes
from .._directio import WindowedFile, Writer, pwrite_all
from ..errors import BadInputError, UnsupportedDtypeError
from ..paths import binary_output
from .base import CheckpointSource, TensorInfo

name = "safetensors"
extensions = (".safetensors",)

INDEX_NAME = "model.safetensors.index.json"
MAX_HEADER = 100 << 20  # the reference implementation's own limit
_HEADER_SIZE = struct.Struct("<Q")
_UINT8 = np.dtype(np.uint8)


def sniff(path: str) -> bool:
    if os.path.isdir(path):
        return os.path.exists(os.path.join(path, INDEX_NAME)) or any(
            entry.endswith(".safetensors") for entry in os.listdir(path)
        )
    if path.endswith(".index.json"):
        return True
    try:
        with builtins.open(path, "rb") as handle:
            head = handle.read(9)
    except OSError:
        return False
    return sniff_bytes(head)


# -- reading -----------------------------------------------------------------------


def _json_problem(exc: Exception) -> str:
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    return str(exc)


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _reject_duplicates(pairs):
    keys = [key for key, _ in pairs]
    if len(keys) != len(set(keys)):
        duplicate = next(key for key in keys if keys.count(key) > 1)
        raise BadInputError(f"duplicate tensor name {duplicate!r} in safetensors header")
    return dict(pairs)


class _ShardReader:
    """One .safetensors file: validated header, rows read on demand."""

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            self.fd = os.open(path, os.O_RDONLY)
        except OSError as exc:
            raise BadInputError(f"cannot read {path}: {exc.strerror}") from None
        try:
            if not stat.S_ISREG(os.fstat(self.fd).st_mode):
                raise self._bad("it is not a regular file")
            self._parse_header()
        except BaseException:
            os.close(self.fd)
            raise

    def _bad(self, message: str) -> BadInputError:
        return BadInputError(f"{self.path} is not a valid safetensors file: {message}")

    def _size(self) -> int:
        return os.fstat(self.fd).st_size

    def _pread(self, length: int, offset: int) -> bytes:
        return os.pread(self.fd, length, offset)

    def _parse_header(self) -> None:
        size = self._size()
        head = self._pread(8, 0)
        if len(head) < 8:
            raise self._bad("file is shorter than its 8-byte header length (truncated)")
        (length,) = _HEADER_SIZE.unpack(head)
        if length > MAX_HEADER:
            raise self._bad(f"header length {length} exceeds {MAX_HEADER} bytes")
        if 8 + length > size:
            raise self._bad("header runs past the end of the file (truncated)")
        try:
            # decoded here: json.loads would also accept UTF-16 and UTF-32 bytes
            header = json.loads(self._pread(length, 8).decode("utf-8"), object_pairs_hook=_reject_duplicates)
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            raise self._bad(f"header is not valid JSON ({_json_problem(exc)})") from exc
        if not isinstance(header, dict):
            raise self._bad("header is not a JSON object")
        metadata = header.pop("__metadata__", None)
        if metadata is not None and not (
            isinstance(metadata, dict) and all(isinstance(v, str) for v in metadata.values())
        ):
            raise self._bad("__metadata__ must map strings to strings")
        self.metadata = metadata
        self.data_start = 8 + length
        data_size = size - self.data_start
        entries = []
        for tensor_name, entry in header.items():
            if not isinstance(entry, dict):
                raise self._bad(f"entry for {tensor_name!r} is not an object")
            dtype_name, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
            if not isinstance(dtype_name, str):
                raise self._bad(f"tensor {tensor_name!r} has no dtype")
            if dtype_name not in dtypes.ALL_NAMES:
                raise UnsupportedDtypeError(
                    f"tensor {tensor_name!r} in {self.path} has dtype {dtype_name}, which bie cannot "
                    f"store yet (supported: {', '.join(sorted(dtypes.ALL_NAMES))})"
                )
            if not (isinstance(shape, list) and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)):
                raise self._bad(f"tensor {tensor_name!r} has an invalid shape")
            if not (
                isinstance(offsets, list) and len(offsets) == 2
                and all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
                and 0 <= offsets[0] <= offsets[1] <= data_size
            ):
                raise self._bad(f"tensor {tensor_name!r} has data offsets outside the file")
            info = TensorInfo(tensor_name, dtype_name, tuple(shape))
            if offsets[1] - offsets[0] != dtypes.nbytes(dtype_name, info.shape):
                raise self._bad(f"tensor {tensor_name!r}: data size does not match dtype and shape")
            entries.append((offsets[0], info))
        # Tensors must not overlap; sorting by offset also gives file order.
        entries.sort(key=lambda pair: pair[0])
        end = 0
        for begin, info in entries:
            if begin < end:
                raise self._bad(f"tensor {info.name!r} overlaps the tensor before it")
            end = begin + dtypes.nbytes(info.dtype, info.shape)
        self.tensors = [info for _, info in entries]
        self.offsets = {info.name: begin for begin, info in entries}
        self._layouts: dict[str, tuple] = {}

    def read_rows(self, info: TensorInfo, row_start: int, row_stop: int) -> np.ndarray:
        layout = self._layouts.get(info.name)
        if layout is None or layout[0] is not info:
            layout = self._layout(info)
        _, begin, row_bytes, np_dtype, row_shape = layout
        begin += row_start * row_bytes
        length = (row_stop - row_start) * row_bytes
        if self.fd >= 0:
            # read straight into a fresh (writable: strategies may modify in place) array: one copy, not two
            data = np.empty(length, dtype=_UINT8)
            done = os.preadv(self.fd, [data], begin) if length else 0
            if done < length:
                view = memoryview(data)
                while done < length:
                    count = os.preadv(self.fd, [view[done:]], begin + done)
                    if count == 0:
                        raise BadInputError(f"{self.path}: file ended while reading tensor {info.name!r} (truncated)")
                    done += count
        else:  # a stream reads through its own _pread
            raw = self._pread(length, begin) if length else b""
            if len(raw) != length:
                raise BadInputError(f"{self.path}: file ended while reading tensor {info.name!r} (truncated)")
            data = np.frombuffer(bytearray(raw), dtype=np.uint8)
        return data.view(np_dtype).reshape((row_stop - row_start, *row_shape) if row_shape is not None else ())

    def _layout(self, info: TensorInfo) -> tuple:
        """``(info, first byte in the file, bytes a row, numpy dtype, shape of a row or None for
        a 0-d tensor)``: what every read of the tensor's rows needs, worked out once."""
        np_dtype = dtypes.get(info.dtype).numpy
        row_elements = info.numel // info.rows if info.rows else 0
        layout = (info, self.data_start + self.offsets[info.name], row_elements * np_dtype.itemsize, np_dtype,
                  info.shape[1:] if info.shape else None)
        self._layouts[info.name] = layout
        return layout

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class _StreamReader(_ShardReader):
    """A safetensors file arriving on a pipe (``bie compress -``): read front to back.

    The header comes first, then tensors are read in data-offset order, which
    is the order ``tensors`` lists them and the order compress and verify ask
    for them; gaps are skipped. The last read is kept, because compress reads
    a tensor's first chunk twice (once to choose among candidate strategies).
    Any other read backwards is an error: a pipe cannot seek.
    """

    # a pipe has no size: lengths are checked as the bytes arrive ("file ended while reading")
    _UNKNOWN_SIZE = 1 << 62
    #: largest single read: ``read(n)`` allocates n bytes before any arrive, and n comes
    #: from the header, which nothing can check against a size here
    _MAX_READ = 16 << 20

    def __init__(self, stream: BinaryIO, label: str, prefix: bytes = b"") -> None:
        self.path = label
        self.fd = -1
        self._stream = stream
        self._prefix = prefix
        self._position = 0
        self._last: tuple[int, int, bytes] | None = None
        self._parse_header()

    def _size(self) -> int:
        return self._UNKNOWN_SIZE

    def _read_exactly(self, length: int) -> bytes:
        parts = []
        if self._prefix:
            parts.append(self._prefix[:length])
            self._prefix = self._prefix[length:]
        remaining = length - sum(map(len, parts))
        while remaining > 0:
            block = self._stream.read(min(remaining, self._MAX_READ))
            if not block:
                break
            parts.append(block)
            remaining -= len(block)
        data = b"".join(parts)
        self._position += len(data)
        return data

    def _pread(self, length: int, offset: int) -> bytes:
        if self._last is not None and self._last[:2] == (offset, length):
            return self._last[2]
        if offset < self._position:
            raise BadInputError(
                f"{self.path}: a safetensors stream is read once, front to back, but byte {offset} was asked "
                "for after it had passed; give the file's path instead"
            )
        while self._position < offset:  # skip what nobody asked for
            if not self._read_exactly(min(offset - self._position, 1 << 20)):
                break
        data = self._read_exactly(length) if self._position == offset else b""
        self._last = (offset, length, data)
        return data


def open_stream(stream: BinaryIO, label: str = "-", prefix: bytes = b"") -> CheckpointSource:
    """A lazy source over a safetensors file arriving on ``stream`` (stdin); ``prefix`` holds
    bytes already taken from the stream to sniff it. Tensors must be read in ``tensors`` order."""
    reader = _StreamReader(stream, label, prefix)

    def read_rows(tensor_name: str, row_start: int, row_stop: int) -> np.ndarray:
        return reader.read_rows(reader_infos[tensor_name], row_start, row_stop)

    reader_infos = {info.name: info for info in reader.tensors}
    return CheckpointSource(
        format=name, path=label, tensors=list(reader.tensors), read_rows=read_rows,
        metadata={"safetensors": {"__metadata__": reader.metadata}},
    )


def sniff_bytes(head: bytes) -> bool:
    """Do the first 9 bytes of a file look like safetensors (header length, then a JSON object)?"""
    if len(head) < 9:
        return False
    (length,) = _HEADER_SIZE.unpack(head[:8])
    return 2 <= length <= MAX_HEADER and head[8:9] == b"{"


def _shard_files(path: str) -> tuple[list[str], dict | None]:
    """Shard paths in order, plus the index's own metadata when there is an index."""
    index_path = path if path.endswith(".index.json") else os.path.join(path, INDEX_NAME)
    directory = os.path.dirname(index_path)
    if os.path.exists(index_path):
        try:
            with builtins.open(index_path, encoding="utf-8") as handle:
                index = json.load(handle)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            raise BadInputError(f"cannot read shard index {index_path}: {_json_problem(exc)}") from exc
        weight_map = index.get("weight_map") if isinstance(index, dict) else None
        if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
            raise BadInputError(f"{index_path} has no valid weight_map")
        files = []
        for filename in weight_map.values():
            if filename not in files:
                if os.path.isabs(filename) or ".." in filename.replace("\\", "/").split("/"):
                    raise BadInputError(f"{index_path}: shard path {filename!r} leaves the checkpoint directory")
                files.append(filename)
        index_metadata = index.get("metadata") if isinstance(index.get("metadata"), dict) else None
        return [os.path.join(directory, f) for f in files], {"metadata": index_metadata, "weight_map": weight_map}
    files = sorted(f for f in os.listdir(path) if f.endswith(".safetensors"))
    if not files:
        raise BadInputError(f"{path} holds no .safetensors files")
    return [os.path.join(path, f) for f in files], None


def open(path: str) -> CheckpointSource:
    sharded = os.path.isdir(path) or path.endswith(".index.json")
    shard_paths, index = _shard_files(path) if sharded else ([path], None)
    shards: list[_ShardReader] = []
    try:
        for shard_path in shard_paths:
            if not os.path.isfile(shard_path):
                raise BadInputError(f"shard {shard_path} named in the index is missing or not a file")
            shards.append(_ShardReader(shard_path))
    except BaseException:
        for shard in shards:
            shard.close()
        raise
    owner: dict[str, tuple[_ShardReader, TensorInfo]] = {}
    tensors: list[TensorInfo] = []
    for shard in shards:
        for info in shard.tensors:
            if info.name in owner:
                for s in shards:
                    s.close()
                raise BadInputError(f"duplicate tensor name {info.name!r} in {shard.path} and {owner[info.name][0].path}")
            owner[info.name] = (shard, info)
            tensors.append(info)
    if index is not None:
        missing = sorted(set(index["weight_map"]) - set(owner))
        if missing:
            for s in shards:
                s.close()
            raise BadInputError(f"shard index names {len(missing)} tensor(s) no shard holds, e.g. {missing[0]!r}")

    def read_rows(tensor_name: str, row_start: int, row_stop: int) -> np.ndarray:
        shard, info = owner[tensor_name]
        return shard.read_rows(info, row_start, row_stop)

    # A sharded checkpoint's shards carry the same __metadata__ by convention; keep the first.
    metadata: dict = {"__metadata__": shards[0].metadata}
    if sharded:
        metadata["shards"] = {
            "index_metadata": index["metadata"] if index else None,
            "files": {os.path.basename(s.path): [t.name for t in s.tensors] for s in shards},
        }
    blobs = {}
    if sharded:
        from .safetensors_sharded import shard_blobs

        index_path = path if path.endswith(".index.json") else os.path.join(path, INDEX_NAME)
        blobs = shard_blobs(
            {os.path.basename(s.path): os.pread(s.fd, s.data_start, 0) for s in shards if _without_holes(s)},
            index_path if os.path.exists(index_path) else None,
        )
    source = CheckpointSource(
        format=name, path=path, tensors=tensors, read_rows=read_rows,
        metadata={"safetensors": metadata}, blobs=blobs,
    )
    source.close_callbacks.extend(shard.close for shard in shards)
    return source


def _without_holes(shard: _ShardReader) -> bool:
    """Whether the shard's tensors fill its data section back to back (so its header
    plus the tensors' bytes is the whole file)."""
    end = 0
    for info in shard.tensors:
        if shard.offsets[info.name] != end:
            return False
        end += dtypes.nbytes(info.dtype, info.shape)
    return shard.data_start + end == os.fstat(shard.fd).st_size


def parse_header_bytes(header: bytes) -> list[tuple[str, str, tuple[int, ...]]]:
    """``(name, dtype, shape)`` in data order from header bytes (length prefix included)
    whose tensors lie back to back from offset 0."""
    if len(header) < 8 or _HEADER_SIZE.unpack(header[:8])[0] != len(header) - 8:
        raise BadInputError("header length prefix does not match")
    try:
        parsed = json.loads(header[8:].decode("utf-8"), object_pairs_hook=_reject_duplicates)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise BadInputError(f"header is not valid JSON ({_json_problem(exc)})") from exc
    if not isinstance(parsed, dict):
        raise BadInputError("header is not a JSON object")
    parsed.pop("__metadata__", None)
    entries = []
    for tensor_name, entry in parsed.items():
        try:
            begin, end = entry["data_offsets"]
            shape = tuple(entry["shape"])
            entries.append((begin, end, tensor_name, entry["dtype"], shape))
        except (KeyError, TypeError, ValueError):
            raise BadInputError(f"entry for {tensor_name!r} is malformed") from None
        if not all(_is_count(value) for value in (begin, end, *shape)):
            raise BadInputError(f"entry for {tensor_name!r} has offsets or dimensions that are not counts")
    entries.sort(key=lambda e: e[0])  # stable, as the reader orders a shard's tensors
    position = 0
    for begin, end, tensor_name, dtype_name, shape in entries:
        if begin != position or dtype_name not in dtypes.ALL_NAMES or end - begin != dtypes.nbytes(dtype_name, shape):
            raise BadInputError(f"tensor {tensor_name!r} is not back to back with the one before it")
        position = end
    return [(tensor_name, dtype_name, shape) for _, _, tensor_name, dtype_name, shape in entries]


# -- writing -------------------------------------------------------------------------


def build_header(tensors: list[TensorInfo], metadata: dict | None) -> bytes:
    """The header bytes (length prefix included), padded to 8 bytes like the reference writer."""
    header: dict = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    offset = 0
    for info in tensors:
        size = dtypes.nbytes(info.dtype, info.shape)
        header[info.name] = {"dtype": info.dtype, "shape": list(info.shape), "data_offsets": [offset, offset + size]}
        offset += size
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)
    return _HEADER_SIZE.pack(len(encoded)) + encoded


def write(
    path: str | BinaryIO,
    tensors: list[TensorInfo],
    chunks: Iterable[tuple[str, np.ndarray]],
    metadata: dict,
    blobs: dict[str, bytes] | None = None,
) -> None:
    """Stream tensors into one safetensors file; chunks arrive in ``tensors`` order."""
    write_data(path, file_header(tensors, metadata), tensors, chunks)


def file_header(tensors: list[TensorInfo], metadata: dict) -> bytes:
    """The header :func:`write` gives a file of ``tensors`` (refusing dtypes safetensors cannot hold)."""
    for info in tensors:
        if info.dtype in ("C64", "C128"):
            raise UnsupportedDtypeError(
                f"tensor {info.name!r} is {info.dtype}, which safetensors cannot hold; decompress to .pt"
            )
    st_metadata = (metadata.get("safetensors") or {}).get("__metadata__")
    if st_metadata is None and "pytorch" in metadata:
        st_metadata = {"format": "pt"}
    return build_header(tensors, st_metadata)


class _PlainFile:
    """A file of :class:`PlacedOutput` written through the page cache, by the caller."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def pwrite(self, data, offset: int) -> None:
        pwrite_all(self.fd, data, offset)

    def stage(self, offset: int, nbytes: int) -> None:
        return None

    def finish(self) -> None:
        pass

    def close(self) -> None:
        pass


class PlacedOutput:
    """Safetensors files whose layout is known up front (a header, then the tensors back to
    back), written chunk by chunk at their offsets by whichever thread decoded the chunk.

    :meth:`add_file` creates a file, writes its header and sizes it (``ftruncate``);
    :meth:`write` (safe from any thread) puts a chunk's bytes at ``byte_offset`` within its
    tensor. Where the file system takes ``O_DIRECT`` (and ``direct``), a file's bytes collect
    in aligned windows that writer threads write whole
    (:class:`~bie_cli._directio.WindowedFile`); else every write goes through the page
    cache at once. The bytes are those :func:`write_data` writes when every tensor's chunks
    are all written and :meth:`finish` returned (it raises the writer's error, or a window
    never filled); :meth:`close` before the files are renamed or removed (after every thread
    that writes has stopped).

    A chunk may also be decoded straight into its window (:meth:`stage`, then
    :meth:`write_stage`): no copy of its bytes. ``threads``: the decoding threads, which
    sizes the pool of window buffers (it grows when every buffer is held by an open window)."""

    def __init__(self, direct: bool = True, threads: int = 1) -> None:
        # buffers: windows in flight to the device plus about one open per chunk being decoded;
        # each a block longer than a window, so a chunk may run into the next window by that much
        self._writer = None
        if direct:
            self._writer = Writer(2 * threads + _directio.WINDOW_SPARE, _directio.WINDOW_BYTES + _directio.ALIGN,
                                  threads=_directio.WINDOW_WRITERS)
        self._files: list = []
        self._where: dict[str, tuple[object, int, int]] = {}  # tensor name -> (file, offset, nbytes)

    def add_file(self, path: str, header: bytes, tensors: list[TensorInfo],
                 chunk_ends: dict[str, Iterable[int]] | None = None) -> None:
        """``chunk_ends``: tensor name -> the byte offsets within it where its chunks end
        (windows end just before them, so few chunks are copied: see
        :func:`~bie_cli._directio.window_bounds`)."""
        layout = []  # (tensor name, file offset, bytes)
        cuts = []  # file offsets where chunks end
        offset = len(header)
        for info in tensors:
            nbytes = dtypes.nbytes(info.dtype, info.shape)
            layout.append((info.name, offset, nbytes))
            cuts.extend(offset + end for end in (chunk_ends or {}).get(info.name, ()))
            offset += nbytes
            cuts.append(offset)
        size = offset
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0), 0o666)
        direct = None
        try:  # until the file is in self._files (closed by close()), its descriptors are ours to close
            direct = _directio.open_direct(fd, path) if self._writer is not None else None
            if direct is None:
                file = _PlainFile(fd)
            else:
                bounds = _directio.window_bounds(size, _directio.WINDOW_BYTES, cuts)
                file = WindowedFile(fd, direct, size, self._writer, bounds)
        except BaseException:
            for descriptor in (fd, direct):
                if descriptor is not None:
                    os.close(descriptor)
            raise
        self._files.append(file)
        os.ftruncate(fd, size)  # every byte after the header is a tensor's: chunks fill it all
        file.pwrite(header, 0)
        for name, start, nbytes in layout:
            self._where[name] = (file, start, nbytes)

    def write(self, tensor_name: str, byte_offset: int, array: np.ndarray) -> None:
        file, offset, nbytes = self._where[tensor_name]
        data = memoryview(np.ascontiguousarray(array).reshape(-1).view(np.uint8))
        if byte_offset + len(data) > nbytes:
            raise RuntimeError(f"chunk of tensor {tensor_name!r} ends past the tensor")
        file.pwrite(data, offset + byte_offset)

    def stage(self, tensor_name: str, byte_offset: int, nbytes: int, itemsize: int) -> np.ndarray | None:
        """Where to decode the ``nbytes`` at ``byte_offset`` within a tensor in place: a
        writable uint8 array of its window's buffer; None when the file is written plainly,
        the bytes run further into the next window than the buffer's slack, or they would not
        be aligned for ``itemsize``. Then
        :meth:`write_stage` (or nothing, on an error: the window is then never written)."""
        file, offset, total = self._where[tensor_name]
        at = offset + byte_offset
        if at % itemsize or byte_offset + nbytes > total:
            return None
        return file.stage(at, nbytes)

    def write_stage(self, tensor_name: str, byte_offset: int, staged: np.ndarray) -> None:
        """The chunk decoded into ``staged`` (from :meth:`stage`) is complete."""
        file, offset, _ = self._where[tensor_name]
        file.placed(offset + byte_offset, len(staged))

    def stats(self) -> dict:
        """Window counts: written, the most open at once in a file, buffers made."""
        windowed = [file for file in self._files if isinstance(file, WindowedFile)]
        return {"windows": sum(file.written for file in windowed),
                "max_open": max((file.max_open for file in windowed), default=0),
                "copied": sum(file.copied for file in windowed),
                "buffers": self._writer.made if self._writer is not None else 0}

    def finish(self) -> None:
        """Wait until every write is made; raise the first error the writer met (or a
        window not filled); cut each file's padding."""
        if self._writer is not None:
            self._writer.finish()
        for file in self._files:
            file.finish()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()  # drops writes not yet made: after finish(), none
        while self._files:
            file = self._files.pop()
            try:
                file.close()
            finally:
                os.close(file.fd)


def write_data(path: str, header: bytes, tensors: list[TensorInfo], chunks: Iterable[tuple[str, np.ndarray]]) -> None:
    """Write ``header`` (length prefix included), then the tensors' bytes in ``tensors`` order."""
    expected = {info.name: dtypes.nbytes(info.dtype, info.shape) for info in tensors}
    written = dict.fromkeys(expected, 0)
    pending = iter(tensors)
    current: TensorInfo | None = None
    with binary_output(path) as out:  # a path, or stdout for `-o -`: one pass either way
        out.write(header)
        for tensor_name, array in chunks:
            while current is None or tensor_name != current.name:
                # tensors with no elements have no chunks; anything else must not be skipped
                if current is not None and written[current.name] != expected[current.name]:
                    raise RuntimeError(f"tensor {current.name!r} was written incompletely")
                current = next(pending, None)
                if current is None:
                    raise RuntimeError(f"unexpected data for tensor {tensor_name!r}")
            data = np.ascontiguousarray(array).reshape(-1).view(np.uint8)
            out.write(memoryview(data))
            written[tensor_name] += data.size
        incomplete = [n for n in expected if written[n] != expected[n]]
        if incomplete:
            raise RuntimeError(f"tensor {incomplete[0]!r} was written incompletely")

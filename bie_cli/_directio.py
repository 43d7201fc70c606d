"""Output writes that skip the page cache (``O_DIRECT``), with a silent fallback to plain writes.

A plain ``write`` copies every byte into the page cache, and on a VM whose free memory
goes back to the host (virtio-balloon free page reporting) the kernel's copy also pays
the first touch of those pages: 0.12-0.14 s of CPU for 545 MB into pages a file just
freed, 1.3-1.9 s into fresh ones (docs/scale.md, "Direct writes (session 9)"). With
``O_DIRECT`` the device reads the bytes from the process's own (warm) buffer: 0.03-0.06 s
of CPU for the same 545 MB, at the disk's speed (1.2-2.3 GB/s here). The price is one
copy into an aligned staging buffer (user space, warm memory, no GIL) and waiting for
the device, which writer threads (:class:`Writer`) take off the caller's path.

``O_DIRECT`` wants the file offset, the length and the buffer's address aligned to the
device's block (512 bytes or 4 KiB; :data:`ALIGN` covers both). Writes at offsets
(decompress) collect in aligned windows that go out whole (:class:`WindowedFile`), so a
file gets no plain write while its direct ones run; an appended file (a container) goes
out in aligned buffers and its tail plainly at the end (:class:`AppendFile`). When the file system refuses ``O_DIRECT`` (tmpfs: ``EINVAL`` at open; some file
systems at the first write) or the output is not a regular file, everything goes
through the plain descriptor, as before. ``BIE_DIRECT_IO=0`` turns it off.
"""

from __future__ import annotations

import bisect
import errno
import itertools
import mmap
import os
import stat
import threading
from collections import deque
from collections.abc import Iterable

import numpy as np

#: file offsets, lengths and buffer addresses of direct writes are multiples of this: the
#: device's block (512 B or 4 KiB) and the page size, so a plain edge never shares a page-cache
#: page with a direct block (on 64 KiB-page kernels a shared page could be written back over
#: the direct bytes)
ALIGN = max(4096, mmap.PAGESIZE)
#: the aligned windows of :class:`WindowedFile` (a staging buffer of :class:`Writer` each):
#: each goes out in one direct write once every byte of it is in
WINDOW_BYTES = 8 << 20
#: threads that write the windows of one output (:class:`Writer`)
WINDOW_WRITERS = 2
#: window buffers beyond two per decoding thread (the pool grows past them only when
#: every buffer is held by an open window)
WINDOW_SPARE = 2
#: :class:`AppendFile`'s buffer: each time it is full it goes out in one direct write
APPEND_BUFFER = 8 << 20
#: :class:`AppendFile` copies pieces from this size on with numpy, which releases the GIL
_COPY_WITHOUT_GIL = 64 << 10

_O_DIRECT = getattr(os, "O_DIRECT", 0)


def enabled() -> bool:
    return bool(_O_DIRECT) and os.environ.get("BIE_DIRECT_IO", "1") != "0"


def open_direct(fd: int, path: str) -> int | None:
    """A second, ``O_DIRECT`` descriptor of the regular file ``path`` (open as ``fd``);
    None when it is off, not a regular file, or the file system refuses."""
    if not enabled():
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        direct = os.open(path, os.O_WRONLY | _O_DIRECT | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None
    try:  # the same file (not one put in its place since): else no direct writes
        same = os.path.samestat(os.fstat(direct), os.fstat(fd))
    except OSError:
        same = False
    if not same:
        os.close(direct)
        return None
    return direct


class Writer:
    """Up to ``threads`` threads (``bie-direct``) that make the direct writes handed to them,
    so the thread that hands one over (a decoder) goes on while the device reads it (two
    keep the decoders from waiting on a busy 2-core machine, where each write also waits
    for its thread to be scheduled again). Its page-aligned
    staging buffers (``count`` x ``size``, anonymous ``mmap``) are taken with
    :meth:`take`, filled and handed over with :meth:`submit`; :meth:`take` waits while all
    are in flight (or makes more: ``grow``). :meth:`finish` waits until every write is made and raises the first
    error one met; :meth:`close` stops the threads (without raising)."""

    def __init__(self, count: int = 4, size: int | None = None, threads: int = 1) -> None:
        self._size = WINDOW_BYTES if size is None else size
        self._free: list[np.ndarray] = []
        self._made = 0
        self._count = count
        self._jobs: deque = deque()
        self._busy = 0
        self._cond = threading.Condition()
        self._error: BaseException | None = None
        self._closed = False
        self._threads: list[threading.Thread] = []
        self._thread_count = threads

    @property
    def size(self) -> int:
        """Bytes of each staging buffer."""
        return self._size

    @property
    def made(self) -> int:
        """Staging buffers made so far (the most held at once)."""
        return self._made

    def take(self, wait: bool = True, grow: bool = False) -> np.ndarray | None:
        """A free staging buffer; while all are taken, wait (``wait=False``: None at once).
        ``grow``: wait only while a write is in flight (it brings its buffer back); when
        every buffer is held by a caller, make one more instead."""
        with self._cond:
            while not self._free and self._made >= self._count and self._error is None:
                if grow and not self._jobs and not self._busy:
                    break
                if not wait:
                    return None
                self._cond.wait()
            if self._error is not None:
                raise self._error
            if self._free:
                return self._free.pop()
            self._made += 1
        return np.frombuffer(mmap.mmap(-1, self._size), dtype=np.uint8)

    def give_back(self, buffer: np.ndarray) -> None:
        with self._cond:
            self._free.append(buffer)
            self._cond.notify_all()

    def submit(self, file: _StagedFile, buffer: np.ndarray, length: int, offset: int, start: int = 0) -> None:
        """Write ``buffer[start:start + length]`` at ``offset`` of ``file``; the buffer is
        the writer's again once written."""
        with self._cond:
            if self._error is not None:
                self._free.append(buffer)
                raise self._error
            if self._closed:
                raise RuntimeError("direct writer is closed")
            self._jobs.append((file, buffer, start, length, offset))
            if len(self._threads) < min(self._thread_count, len(self._jobs) + self._busy):
                thread = threading.Thread(target=self._run, name="bie-direct", daemon=True)
                thread.start()
                self._threads.append(thread)
            self._cond.notify_all()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._jobs and not self._closed:
                    self._cond.wait()
                if not self._jobs:
                    return
                file, buffer, start, length, offset = self._jobs.popleft()
                self._busy += 1
            try:
                if self._error is None:
                    file._write_staged(memoryview(buffer[start:start + length]), offset)
            except BaseException as exc:  # raised to the threads that hand writes over
                with self._cond:
                    if self._error is None:
                        self._error = exc
            with self._cond:
                self._busy -= 1
                self._free.append(buffer)
                self._cond.notify_all()

    def finish(self) -> None:
        with self._cond:
            while (self._jobs or self._busy) and self._threads:
                self._cond.wait()
            if self._error is not None:
                raise self._error

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._jobs.clear()
            self._cond.notify_all()
        for thread in self._threads:
            thread.join()
        self._free.clear()


def pwrite_all(fd: int, data, offset: int) -> None:
    """``os.pwrite`` until every byte is written (the GIL is released meanwhile)."""
    view = memoryview(data).cast("B")
    while view:
        written = os.pwrite(fd, view, offset)
        if written <= 0:
            raise OSError(errno.EIO, "write made no progress")
        view = view[written:]
        offset += written


def _refused(exc: OSError) -> bool:
    """A direct write the file system does not take (alignment it wants larger, or none)."""
    return exc.errno in (errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP)


def _write_direct(direct: int, fd: int, view: memoryview, offset: int) -> bool:
    """Write the aligned ``view`` at ``offset`` through ``direct``. When the file system
    refuses (see :func:`_refused`), write it through the plain ``fd`` and return False:
    the caller makes no more direct writes."""
    while view:
        try:
            written = os.pwrite(direct, view, offset)
        except OSError as exc:
            if not _refused(exc):
                raise
            pwrite_all(fd, view, offset)
            return False
        if written <= 0:
            raise OSError(errno.EIO, "write made no progress")
        if written % ALIGN:  # a short direct write that ended off a block: finish plainly
            pwrite_all(fd, view[written:], offset + written)
            return True
        view = view[written:]
        offset += written
    return True


class _StagedFile:
    """What :class:`Writer`'s threads write through: ``fd`` (plain) and ``_direct`` (the
    ``O_DIRECT`` descriptor, or None), falling back to ``fd`` for good once a direct write
    is refused."""

    fd: int
    _direct: int | None
    _use_direct: bool

    @property
    def direct(self) -> bool:
        return self._use_direct

    def _write_staged(self, view: memoryview, offset: int) -> None:
        """On the writer's thread: the aligned ``view`` at ``offset``."""
        if not self._use_direct:
            pwrite_all(self.fd, view, offset)
        elif not _write_direct(self._direct, self.fd, view, offset):
            self._use_direct = False


def window_bounds(size: int, window: int, cuts: Iterable[int] = ()) -> list[int]:
    """Where the windows of a file of ``size`` bytes start, and ``size``: each window at most
    ``window`` bytes and, from half of that on, ending at the block boundary just before one
    of ``cuts`` (file offsets where chunks end) where there is one, so that a chunk crosses
    into the next window by less than a block (its spill is copied, the rest decoded in
    place: :meth:`WindowedFile.stage`). Every start but the first is a multiple of :data:`ALIGN`."""
    if window % ALIGN or window <= 0:
        raise ValueError("the window must be a positive multiple of ALIGN")
    ends = sorted({cut // ALIGN * ALIGN for cut in cuts if 0 < cut < size})
    bounds = [0]
    start = 0
    while size - start > window:
        limit = start + window
        at = bisect.bisect_right(ends, limit) - 1
        stop = ends[at] if at >= 0 and ends[at] - start >= window // 2 else limit
        bounds.append(stop)
        start = stop
    bounds.append(size)
    return bounds


class WindowedFile(_StagedFile):
    """Writes at offsets into one regular file of ``size`` bytes, from any thread, with no
    plain write into it at all: the file is cut into aligned windows (``bounds``, from
    :func:`window_bounds`), each collected in a staging buffer of ``writer`` (a
    :class:`Writer`, shared by the files of one output, whose buffers are at least a block
    longer than the longest window) and handed to its threads as one ``O_DIRECT`` write once
    every byte of it is in. The last window, which ends off a block, goes out padded to a
    whole block; :meth:`finish` cuts the file back to ``size`` (``ftruncate``). Does not own
    ``fd``; owns ``direct``.

    Why no plain writes: on ext4 a direct write into a sparse file allocates blocks and
    holds the inode lock until the device is done, and every plain write to the file (a
    chunk's unaligned edges, small chunks) waits for it (docs/scale.md, "Decompress
    (session 10)" and "Aligned direct windows (session 11)").

    A window's buffer is taken from the writer when the window is first touched; while none
    is free the caller waits if a write is in flight (it brings one back), else the writer
    makes one more (:meth:`Writer.take` with ``grow``): windows complete only as the chunks
    that fill them come in, so waiting with every buffer held by an open window could wait
    for ever. Memory is then bounded by the windows open at once (about the chunks in
    flight) plus the writes queued."""

    def __init__(self, fd: int, direct: int, size: int, writer: Writer, bounds: list[int]) -> None:
        if bounds[0] != 0 or bounds[-1] != size or any(b % ALIGN for b in bounds[1:-1]):
            raise ValueError("windows must start at 0 and on blocks, and end at the file's size")
        longest = max((b - a for a, b in itertools.pairwise(bounds)), default=0)
        if writer.size < -(-longest // ALIGN) * ALIGN:
            raise ValueError("the writer's buffers are shorter than a window")
        self.fd = fd
        self._direct = direct
        self._use_direct = True
        self._writer = writer
        self._bounds = bounds
        self._slack = writer.size - longest  # a staged chunk may run this far past its window
        self.size = size
        self._open: dict[int, list] = {}  # window index -> [buffer, bytes filled]
        self._lock = threading.Lock()
        #: the most windows open at once, how many were written, bytes copied in (:meth:`pwrite`;
        #: counted without a lock, for statistics)
        self.max_open = 0
        self.written = 0
        self.copied = 0

    def _index(self, offset: int) -> int:
        return bisect.bisect_right(self._bounds, offset) - 1

    def _buffer(self, index: int) -> np.ndarray:
        """Window ``index``'s buffer (taken now if the window was not open)."""
        with self._lock:
            entry = self._open.get(index)
        if entry is not None:
            return entry[0]
        buffer = self._writer.take(grow=True)
        with self._lock:
            entry = self._open.get(index)
            if entry is None:
                self._open[index] = [buffer, 0]
                self.max_open = max(self.max_open, len(self._open))
                return buffer
        self._writer.give_back(buffer)  # another thread opened it meanwhile
        return entry[0]

    def _filled(self, index: int, nbytes: int) -> None:
        """``nbytes`` more of window ``index`` are in; a full window goes to the writer."""
        start, stop = self._bounds[index], self._bounds[index + 1]
        length = stop - start
        with self._lock:
            entry = self._open[index]
            entry[1] += nbytes
            if entry[1] < length:
                return
            if entry[1] > length:
                raise RuntimeError(f"window {index} of the output got {entry[1]} bytes for {length}")
            del self._open[index]
            self.written += 1
        buffer = entry[0]
        padded = -(-length // ALIGN) * ALIGN
        if padded > length:  # the file's last window: a whole last block, cut back by finish()
            buffer[length:padded] = 0
        self._writer.submit(self, buffer, padded, start)

    def stage(self, offset: int, nbytes: int) -> np.ndarray | None:
        """Where to build the ``nbytes`` at ``offset`` in place (then :meth:`placed`): their
        window's buffer, which they may overrun by the buffer's slack (the spill is copied to
        the next window); None when they run further (the caller then uses :meth:`pwrite`)."""
        index = self._index(offset)
        start = self._bounds[index]
        if nbytes <= 0 or offset + nbytes > min(self.size, self._bounds[index + 1] + self._slack):
            return None
        return self._buffer(index)[offset - start:offset - start + nbytes]

    def placed(self, offset: int, nbytes: int) -> None:
        """The ``nbytes`` at ``offset`` (from :meth:`stage`) are built."""
        index = self._index(offset)
        start, stop = self._bounds[index], self._bounds[index + 1]
        if offset + nbytes > stop:  # the spill into the next window, before this one may go out
            with self._lock:
                buffer = self._open[index][0]
            self.pwrite(buffer[stop - start:offset + nbytes - start], stop)
            nbytes = stop - offset
        self._filled(index, nbytes)

    def pwrite(self, data, offset: int) -> None:
        """Copy all of ``data`` (a buffer) into the windows at ``offset``."""
        view = memoryview(data).cast("B")
        if offset + len(view) > self.size:
            raise ValueError("write past the end of the file")
        source = None
        position, total = 0, len(view)
        index = self._index(offset)
        while position < total:
            start, stop = self._bounds[index], self._bounds[index + 1]
            at = offset + position - start
            n = min(total - position, stop - start - at)
            buffer = self._buffer(index)
            if n >= _COPY_WITHOUT_GIL:
                if source is None:
                    source = np.frombuffer(view, dtype=np.uint8)
                np.copyto(buffer[at:at + n], source[position:position + n])  # without the GIL
            else:
                buffer[at:at + n] = np.frombuffer(view[position:position + n], dtype=np.uint8)
            self._filled(index, n)
            position += n
            index += 1
        self.copied += total

    def finish(self) -> None:
        """After the writer's :meth:`~Writer.finish`: every window must have been written;
        cut the padding of the last one."""
        if self._open:
            raise RuntimeError(f"{len(self._open)} window(s) of the output were never filled")
        os.ftruncate(self.fd, self.size)

    def close(self) -> None:
        direct, self._direct = self._direct, None
        self._use_direct = False
        self._open.clear()
        if direct is not None:
            os.close(direct)


def append_file(path: str, buffer_bytes: int | None = None):
    """A binary file object that creates (or empties) ``path`` for appending: an
    :class:`AppendFile` when the file takes ``O_DIRECT``, else a plain buffered file."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0), 0o666)
    try:
        direct = open_direct(fd, path)
        if direct is None:
            return os.fdopen(fd, "wb", buffering=1 << 20)
        return AppendFile(fd, direct, path, buffer_bytes)
    except BaseException:
        os.close(fd)
        raise


class AppendFile(_StagedFile):
    """A write-only binary file for one thread that appends (a container). Bytes collect in
    a page-aligned buffer of ``buffer_bytes``; each full buffer is handed to a
    :class:`Writer` thread that writes it ``O_DIRECT`` while the next one fills (at most
    3 buffers). At :meth:`close` the writes are waited for and the rest (less than a
    buffer) goes plainly. Owns both descriptors (made by :func:`append_file`). Leaving a
    ``with`` block on an error skips the last writes: the caller removes the file."""

    def __init__(self, fd: int, direct: int, path: str, buffer_bytes: int | None = None) -> None:
        buffer_bytes = APPEND_BUFFER if buffer_bytes is None else buffer_bytes
        if buffer_bytes % ALIGN or buffer_bytes <= 0:
            raise ValueError("buffer_bytes must be a positive multiple of ALIGN")
        self.name = path
        self.fd, self._direct = fd, direct
        self._use_direct = True
        self._writer = Writer(3, buffer_bytes)
        self._buffer = self._writer.take()
        self._view = memoryview(self._buffer)  # kept: a new view per write would cost more than a small copy
        self._size = buffer_bytes
        self._filled = 0
        self._position = 0  # file offset of the buffer's first byte (a multiple of ALIGN)
        self.closed = False

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self.fd

    def tell(self) -> int:
        return self._position + self._filled

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        self.writelines((view,))
        return len(view)

    def writelines(self, parts) -> None:
        """Append ``parts`` one after the other: one call per container record, not one per
        piece. Parts are bytes, 1-D uint8 arrays or byte memoryviews (``len`` is the size in
        bytes; a small part of another layout raises ValueError); a small part that fits the
        buffer costs one slice copy."""
        if self.closed:
            raise ValueError("write to a closed file")
        view, filled, size = self._view, self._filled, self._size
        for part in parts:
            n = len(part)
            if n < _COPY_WITHOUT_GIL and filled + n < size:
                view[filled:filled + n] = part
                filled += n
            else:
                self._filled = filled
                self._append(memoryview(part).cast("B"))
                view, filled = self._view, self._filled
        self._filled = filled

    def _append(self, data: memoryview) -> None:
        """Append the bytes of ``data``, handing each buffer it fills to the writer."""
        source = None
        done, total = 0, len(data)
        while done < total:
            n = min(total - done, self._size - self._filled)
            if n >= _COPY_WITHOUT_GIL:
                if source is None:
                    source = np.frombuffer(data, dtype=np.uint8)
                np.copyto(self._buffer[self._filled:self._filled + n], source[done:done + n])
            else:
                self._view[self._filled:self._filled + n] = data[done:done + n]
            self._filled += n
            done += n
            if self._filled == self._size:
                self._writer.submit(self, self._buffer, self._filled, self._position)
                self._position += self._filled
                self._filled = 0
                self._buffer = self._writer.take()
                self._view = memoryview(self._buffer)

    def flush(self) -> None:
        """Nothing: the buffer goes out when full or at :meth:`close` (until then a reader
        of the file misses the buffered bytes)."""

    def close(self, *, discard: bool = False) -> None:
        """Wait for the writes, write what is buffered (unless ``discard``) and close."""
        if self.closed:
            return
        self.closed = True
        try:
            if not discard:
                self._writer.finish()
                if self._filled:
                    pwrite_all(self.fd, memoryview(self._buffer[:self._filled]), self._position)
                    self._position += self._filled
            self._filled = 0
        finally:
            self._writer.close()
            self._buffer = self._view = None
            if self._direct is not None:
                os.close(self._direct)
                self._direct = None
            os.close(self.fd)

    def __enter__(self) -> AppendFile:
        return self

    def __exit__(self, kind, value, traceback) -> None:
        self.close(discard=kind is not None)

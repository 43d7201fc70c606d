"""Output writes that skip the page cache (``O_DIRECT``), with a silent fallback to plain writes.

A plain ``write`` copies every byte into the page cache, and on a VM whose free memory
goes back to the host (virtio-balloon free page reporting) the kernel's copy also pays
the first touch of those pages: 0.12-0.17 s of CPU for 545 MB into pages a file just
freed, 1.3-1.6 s into fresh ones (docs/scale.md, "Direct writes (session 9)"). With
``O_DIRECT`` the device reads the bytes from the process's own (warm) buffer: 0.035 s
of CPU for the same 545 MB, at the disk's speed (2.2 GB/s here). The price is one
copy into an aligned staging buffer (user space, warm memory, no GIL) and waiting for
the device instead of for the copy.

``O_DIRECT`` wants the file offset, the length and the buffer's address aligned to the
device's block (512 bytes or 4 KiB; :data:`ALIGN` covers both). So only whole aligned
blocks go direct; a write's unaligned edges (and small writes) go through a plain
descriptor of the same file, whose page cache pages are other blocks than the direct
ones. When the file system refuses ``O_DIRECT`` (tmpfs: ``EINVAL`` at open; some file
systems at the first write) or the output is not a regular file, everything goes
through the plain descriptor, as before. ``BIE_DIRECT_IO=0`` turns it off.
"""

from __future__ import annotations

import errno
import mmap
import os
import stat
import threading

import numpy as np

#: file offsets, lengths and buffer addresses of direct writes are multiples of this
ALIGN = 4096
#: direct writes go in pieces of at most this many bytes (each thread's staging buffer)
STAGE_BYTES = 4 << 20
#: a write with fewer aligned bytes than this goes through the page cache (one device
#: round trip per small write would cost more than the copy it saves)
MIN_DIRECT = 256 << 10
#: :class:`AppendFile`'s buffer: each time it is full it goes out in one direct write
APPEND_BUFFER = 8 << 20

_O_DIRECT = getattr(os, "O_DIRECT", 0)
_staging = threading.local()


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


def _stage() -> np.ndarray:
    """This thread's page-aligned staging buffer (anonymous ``mmap``, kept for reuse)."""
    buffer = getattr(_staging, "buffer", None)
    if buffer is None:
        buffer = np.frombuffer(mmap.mmap(-1, STAGE_BYTES), dtype=np.uint8)
        _staging.buffer = buffer
    return buffer


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


class PositionalFile:
    """Writes at offsets into one regular file, from any thread: the aligned interior of a
    write goes ``O_DIRECT`` (through this thread's staging buffer), the rest through
    ``fd``. Does not own ``fd``; :meth:`close` closes the direct descriptor (after every
    thread that writes has stopped)."""

    def __init__(self, fd: int, path: str) -> None:
        self.fd = fd
        self._direct = open_direct(fd, path)
        self._use_direct = self._direct is not None

    @property
    def direct(self) -> bool:
        return self._use_direct

    def pwrite(self, data, offset: int) -> None:
        """Write all of ``data`` (a buffer) at ``offset``."""
        view = memoryview(data).cast("B")
        start = -offset % ALIGN
        stop = max(start, (len(view) - start) // ALIGN * ALIGN + start)
        if not self._use_direct or stop - start < MIN_DIRECT:
            pwrite_all(self.fd, view, offset)
            return
        if start:
            pwrite_all(self.fd, view[:start], offset)
        if stop < len(view):
            pwrite_all(self.fd, view[stop:], offset + stop)
        source = np.frombuffer(view, dtype=np.uint8)
        stage = _stage()
        position = start
        while position < stop:
            if not self._use_direct:
                pwrite_all(self.fd, view[position:stop], offset + position)
                return
            n = min(stop - position, STAGE_BYTES)
            np.copyto(stage[:n], source[position:position + n])  # numpy copies without the GIL
            if not _write_direct(self._direct, self.fd, memoryview(stage[:n]), offset + position):
                self._use_direct = False
            position += n

    def close(self) -> None:
        direct, self._direct = self._direct, None
        self._use_direct = False
        if direct is not None:
            os.close(direct)


class AppendFile:
    """A write-only binary file for one thread that appends (a container): bytes collect
    in a page-aligned buffer of ``buffer_bytes``, which goes out ``O_DIRECT`` each time it
    is full; what is left at :meth:`close` (less than the buffer) goes plainly. Without
    ``O_DIRECT`` every flush is a plain write. Regular files only (pipes and stdout get
    a plain file object). Leaving a ``with`` block on an error skips the last write: the
    caller removes the file."""

    def __init__(self, path: str, buffer_bytes: int | None = None) -> None:
        buffer_bytes = APPEND_BUFFER if buffer_bytes is None else buffer_bytes
        if buffer_bytes % ALIGN or buffer_bytes <= 0:
            raise ValueError("buffer_bytes must be a positive multiple of ALIGN")
        self.name = path
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0), 0o666)
        try:
            self._direct = open_direct(self._fd, path)
            self._map = mmap.mmap(-1, buffer_bytes)
        except BaseException:
            if getattr(self, "_direct", None) is not None:
                os.close(self._direct)
            os.close(self._fd)
            raise
        self._buffer = np.frombuffer(self._map, dtype=np.uint8)
        self._size = buffer_bytes
        self._filled = 0
        self._position = 0  # file offset of the buffer's first byte (a multiple of ALIGN)
        self.closed = False

    @property
    def direct(self) -> bool:
        return self._direct is not None

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._fd

    def tell(self) -> int:
        return self._position + self._filled

    def write(self, data) -> int:
        if self.closed:
            raise ValueError("write to a closed file")
        view = memoryview(data).cast("B")
        total = len(view)
        source = None
        done = 0
        while done < total:
            n = min(total - done, self._size - self._filled)
            if n >= 64 << 10:  # big parts: numpy copies without holding the GIL
                if source is None:
                    source = np.frombuffer(view, dtype=np.uint8)
                np.copyto(self._buffer[self._filled:self._filled + n], source[done:done + n])
            else:
                self._map[self._filled:self._filled + n] = view[done:done + n]
            self._filled += n
            done += n
            if self._filled == self._size:
                self._flush_buffer()
        return total

    def _flush_buffer(self) -> None:
        """Write the full buffer at its (aligned) offset and empty it."""
        view = memoryview(self._buffer[:self._filled])
        if self._direct is None:
            pwrite_all(self._fd, view, self._position)
        elif not _write_direct(self._direct, self._fd, view, self._position):
            os.close(self._direct)
            self._direct = None
        self._position += self._filled
        self._filled = 0

    def flush(self) -> None:
        """Nothing: the buffer goes out when full or at :meth:`close` (until then a reader
        of the file misses the buffered bytes)."""

    def close(self, *, discard: bool = False) -> None:
        """Write what is buffered (unless ``discard``) and close the file."""
        if self.closed:
            return
        self.closed = True
        try:
            if self._filled and not discard:
                pwrite_all(self._fd, memoryview(self._buffer[:self._filled]), self._position)
                self._position += self._filled
            self._filled = 0
        finally:
            if self._direct is not None:
                os.close(self._direct)
                self._direct = None
            os.close(self._fd)
            del self._buffer
            self._map.close()

    def __enter__(self) -> AppendFile:
        return self

    def __exit__(self, kind, value, traceback) -> None:
        self.close(discard=kind is not None)

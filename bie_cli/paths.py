"""Paths a user gives bie: ``-`` for stdin/stdout, and outputs that never clobber or half-exist.

* ``-`` is stdin (an input) or stdout (an output) wherever a path is taken; a
  file really named ``-`` is ``./-``. Nothing here ever creates a file named ``-``.
* Every output is written to a temporary file beside the target and renamed
  into place only when complete, so an interrupted run leaves nothing at the
  target. The temporary file is created with mode 0666 and the kernel applies
  the umask, so outputs get the permissions ``cp``, ``zstd`` or ``torch.save``
  would give them (0644 under umask 022); ``tempfile.mkstemp`` would give 0600,
  which a model server running as another user cannot read.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import sys
import tempfile
from collections.abc import Iterator, Sequence
from typing import BinaryIO

from .errors import BadInputError

STDIO = "-"

#: temporary outputs are ``.NAME.XXXXXXXX.partial`` (formats/onnx.py recovers NAME from it)
_PARTIAL_SUFFIX = ".partial"


def is_stdio(path: str | os.PathLike | BinaryIO) -> bool:
    return isinstance(path, str) and path == STDIO


# -- outputs --------------------------------------------------------------------------


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


def _inside(path: str, directory: str) -> bool:
    return os.path.isdir(directory) and os.path.realpath(path).startswith(os.path.realpath(directory) + os.sep)


def check_output_path(dst: str, sources: Sequence[str], force: bool) -> None:
    """Refuse to clobber an input or an existing file, and fail early on a bad directory."""
    if dst == STDIO:
        return
    for src in sources:
        if src != STDIO and ((os.path.exists(dst) and _same_file(dst, src)) or _inside(dst, src)):
            raise BadInputError(f"output {dst} is the input (or inside it); choose another path")
    if os.path.isdir(dst):
        raise BadInputError(f"output {dst} is a directory; give a file name")
    if os.path.exists(dst) and not force:
        raise BadInputError(f"output {dst} exists; use --force to overwrite it")
    directory = os.path.dirname(os.path.abspath(dst))
    if not os.path.isdir(directory):
        raise BadInputError(f"output directory {directory} does not exist")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise BadInputError(f"output directory {directory} is not writable")


def create_temporary(dst: str) -> tuple[int, str]:
    """Create ``.NAME.XXXXXXXX.partial`` beside ``dst``; return ``(fd, path)``.

    Like ``mkstemp`` (O_EXCL, unpredictable name) but with mode 0666, so the
    umask decides the final permissions.
    """
    if dst == STDIO:
        raise ValueError("stdout has no temporary file; write to the stream")
    directory = os.path.dirname(os.path.abspath(dst))
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        temporary = os.path.join(directory, f".{os.path.basename(dst)}.{os.urandom(4).hex()}{_PARTIAL_SUFFIX}")
        try:
            return os.open(temporary, flags, 0o666), temporary
        except FileExistsError:
            continue
        except OSError as exc:
            raise BadInputError(f"cannot write in {directory}: {exc.strerror}") from None
    raise BadInputError(f"cannot create a temporary file in {directory}")


@contextlib.contextmanager
def atomic_output(dst: str) -> Iterator[str]:
    """Yield a temporary path beside ``dst``; rename it into place on success only."""
    handle, temporary = create_temporary(dst)
    os.close(handle)
    try:
        yield temporary
        os.replace(temporary, dst)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def is_directory_target(dst: str) -> bool:
    """``-o DIR/`` (a trailing separator) or an existing directory: write shards into it."""
    return dst != STDIO and (dst.endswith(("/", os.sep)) or os.path.isdir(dst))


def check_output_directory(dst: str, sources: Sequence[str], force: bool) -> None:
    """Refuse an input, a non-empty directory (without ``force``) or a parent that cannot be written."""
    for src in sources:
        if src != STDIO and os.path.exists(dst) and (_same_file(dst, src) or _inside(src, dst) or _inside(dst, src)):
            raise BadInputError(f"output {dst} is the input (or holds it); choose another directory")
    if os.path.exists(dst) and not os.path.isdir(dst):
        raise BadInputError(f"output {dst} exists and is not a directory")
    if os.path.isdir(dst) and os.listdir(dst) and not force:
        raise BadInputError(f"output directory {dst} is not empty; use --force to overwrite files in it")
    parent = os.path.dirname(os.path.abspath(os.path.normpath(dst)))
    if not os.path.isdir(parent):
        raise BadInputError(f"output directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise BadInputError(f"output directory {parent} is not writable")


@contextlib.contextmanager
def atomic_directory(dst: str, force: bool) -> Iterator[str]:
    """Yield a temporary directory beside ``dst``; on success it becomes ``dst`` (or, when
    ``dst`` already holds files and ``force`` is set, its files replace theirs one by one).

    Made with ``mkdir(0o777)`` rather than ``mkdtemp`` (0700), so the umask decides its mode."""
    dst = os.path.normpath(dst)
    parent = os.path.dirname(os.path.abspath(dst))
    for _ in range(100):
        temporary = os.path.join(parent, f".{os.path.basename(dst)}.{os.urandom(4).hex()}{_PARTIAL_SUFFIX}")
        try:
            os.mkdir(temporary, 0o777)
            break
        except FileExistsError:
            continue
        except OSError as exc:
            raise BadInputError(f"cannot write in {parent}: {exc.strerror}") from None
    else:
        raise BadInputError(f"cannot create a temporary directory in {parent}")
    try:
        yield temporary
        if os.path.isdir(dst) and not os.listdir(dst):
            os.rmdir(dst)
        if not os.path.exists(dst):
            os.rename(temporary, dst)
            return
        for name in os.listdir(temporary):
            os.replace(os.path.join(temporary, name), os.path.join(dst, name))
        os.rmdir(temporary)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise


def write_file_atomically(dst: str, data: bytes | str) -> None:
    """Write a small file (a report) through a temporary file and a rename."""
    with atomic_output(dst) as temporary, open(temporary, "wb") as out:
        out.write(data.encode() if isinstance(data, str) else data)


@contextlib.contextmanager
def binary_output(target: str | BinaryIO) -> Iterator[BinaryIO]:
    """Open ``target`` for writing, or use it as it is when it is already a binary stream (stdout)."""
    if hasattr(target, "write"):
        yield target
        target.flush()
    else:
        with open(target, "wb") as out:
            yield out


def stdout_stream() -> BinaryIO:
    """The binary stdout, refusing a terminal: a checkpoint or container is not for reading on screen."""
    if sys.stdout.isatty():
        raise BadInputError("refusing to write binary data to a terminal; redirect stdout or give -o FILE")
    return sys.stdout.buffer


# -- inputs -----------------------------------------------------------------------------


@contextlib.contextmanager
def seekable_input(path: str) -> Iterator[str]:
    """A path a random-access reader can open: ``path`` itself, or stdin for ``-``.

    A container's index sits at its end, so ``inspect -`` and ``verify -``
    need the whole file: stdin redirected from a file is read in place; a pipe
    is first copied to a temporary file (deleted afterwards).
    """
    if path != STDIO:
        yield path
        return
    stdin = sys.stdin.buffer
    try:
        mode = os.fstat(stdin.fileno()).st_mode
    except (OSError, ValueError):
        mode = 0
    own_descriptor = f"/proc/self/fd/{stdin.fileno()}" if mode else ""
    if stat.S_ISREG(mode) and os.path.exists(own_descriptor) and stdin.tell() == 0:
        yield own_descriptor
        return
    if sys.stdin.isatty():
        raise BadInputError("- reads stdin, which is a terminal; pipe a file in or give its path")
    with tempfile.NamedTemporaryFile(prefix="bie-stdin-", suffix=".cai") as spool:
        shutil.copyfileobj(stdin, spool, 1 << 20)
        spool.flush()
        yield spool.name

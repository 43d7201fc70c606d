"""External data: where a tensor's bytes live outside the model file, and reading them.

A model names its data files itself, so a hostile model could name any file
on the machine. Only regular files inside the model's own directory are read
(no absolute paths, no ``..``, no symlink that resolves outside), and every
offset and length is checked against the file's size before reading.
"""

from __future__ import annotations

import os
import re
import stat
import threading

from ...errors import BadInputError
from .errors import OnnxExternalDataError

_WINDOWS_DRIVE = re.compile(r"^[A-Za-z]:")


class FileReader:
    """``pread`` on a small set of files, opened once and shared by threads."""

    def __init__(self) -> None:
        self._fds: dict[str, int] = {}
        self._lock = threading.Lock()

    def fd(self, path: str) -> int:
        with self._lock:
            fd = self._fds.get(path)
            if fd is None:
                try:
                    fd = os.open(path, os.O_RDONLY)
                except OSError as exc:
                    raise BadInputError(f"cannot read {path}: {exc.strerror}") from None
                self._fds[path] = fd
            return fd

    def read(self, path: str, offset: int, length: int) -> bytes:
        data = os.pread(self.fd(path), length, offset) if length else b""
        if len(data) != length:
            raise BadInputError(f"{path} ended early (was it changed while bie read it?)")
        return data

    def close(self) -> None:
        with self._lock:
            for fd in self._fds.values():
                os.close(fd)
            self._fds.clear()


class ExternalData:
    """Validates the external data references of one model's tensors."""

    def __init__(self, model_path: str) -> None:
        self.model_path = model_path
        self.directory = os.path.dirname(os.path.abspath(model_path))
        self.used = False
        self._file_sizes: dict[str, int] = {}

    def location(self, tensor, label: str, nbytes: int) -> tuple[str, int]:
        """Validate one tensor's ``external_data`` entries; return (file, offset)."""
        entries = {}
        for entry in tensor.external_data:
            if isinstance(entry.key, bytes) or isinstance(entry.value, bytes):  # protobuf's answer to non-UTF-8
                raise OnnxExternalDataError(f"{self.model_path}: tensor {label!r} has external data entries that are not UTF-8 text")
            entries[entry.key] = entry.value
        location = entries.get("location", "")
        if not location:
            raise OnnxExternalDataError(f"{self.model_path}: tensor {label!r} is marked external but names no file")
        if "\0" in location:  # the OS cannot even look such a name up
            raise OnnxExternalDataError(f"{self.model_path}: external data file name for tensor {label!r} holds a NUL byte")
        normalized = location.replace("\\", "/")
        if os.path.isabs(location) or normalized.startswith("/") or _WINDOWS_DRIVE.match(normalized):
            raise OnnxExternalDataError(
                f"{self.model_path}: external data file {location!r} for tensor {label!r} is an absolute path; "
                "bie only reads data files inside the model's directory"
            )
        if ".." in normalized.split("/"):
            raise OnnxExternalDataError(
                f"{self.model_path}: external data file {location!r} for tensor {label!r} leaves the model's directory"
            )
        file_path = os.path.join(self.directory, *[part for part in normalized.split("/") if part])
        real_directory = os.path.realpath(self.directory)
        if not os.path.realpath(file_path).startswith(real_directory + os.sep):
            raise OnnxExternalDataError(
                f"{self.model_path}: external data file {location!r} for tensor {label!r} "
                "resolves outside the model's directory"
            )
        try:
            offset = int(entries.get("offset", "0"))
            length = int(entries["length"]) if "length" in entries else None
        except ValueError:
            raise OnnxExternalDataError(
                f"{self.model_path}: tensor {label!r} has a non-numeric external data offset or length"
            ) from None
        if offset < 0 or (length is not None and length < 0):
            raise OnnxExternalDataError(
                f"{self.model_path}: tensor {label!r} has a negative external data offset or length"
            )
        if length is not None and length != nbytes:
            raise OnnxExternalDataError(
                f"{self.model_path}: tensor {label!r} says its external data is {length} bytes "
                f"but its dtype and shape need {nbytes}"
            )
        size = self._file_sizes.get(file_path)
        if size is None:
            try:
                info = os.stat(file_path)
            except FileNotFoundError:
                raise OnnxExternalDataError(
                    f"external data file {location!r} for tensor {label!r} is missing (expected at {file_path})"
                ) from None
            except OSError as exc:
                raise OnnxExternalDataError(f"cannot read external data file {location!r}: {exc.strerror}") from None
            if not stat.S_ISREG(info.st_mode):
                raise OnnxExternalDataError(
                    f"external data file {location!r} for tensor {label!r} is not a regular file"
                )
            size = self._file_sizes[file_path] = info.st_size
        if offset + nbytes > size:
            raise OnnxExternalDataError(
                f"external data file {location!r} for tensor {label!r} is too short: it has {size} bytes, "
                f"the tensor needs bytes {offset}..{offset + nbytes}"
            )
        self.used = True
        return file_path, offset

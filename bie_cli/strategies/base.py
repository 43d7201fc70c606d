"""The strategy contract.

A strategy turns one chunk of a tensor (a numpy array holding whole rows) into
bytes and back. It knows nothing about files, torch or threads:

* ``id`` is stable and stored in every container that uses it;
* ``Config`` is a frozen dataclass whose fields have defaults; it round-trips
  through JSON with :meth:`Strategy.config_to_dict` / :meth:`config_from_dict`;
* ``encode(chunk, config) -> (payload, meta)`` must be deterministic; ``meta``
  is a small JSON-able dict stored next to the payload;
* ``decode(payload, meta, shape, dtype) -> array`` must rebuild the chunk
  (bit-exact when ``lossless``) from the payload and the meta alone — every
  parameter needed to decode is in the file, never in code defaults.

Subclasses do the math; this base class does the plumbing (config parsing,
dtype checks). Hot loops are vectorised numpy or numba.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, ClassVar

import numpy as np

from .. import dtypes
from ..errors import BadInputError, UnsupportedDtypeError


@dataclasses.dataclass(frozen=True)
class NoConfig:
    """Config for strategies without options."""


class Strategy:
    id: ClassVar[str]
    lossless: ClassVar[bool]
    #: canonical dtype names accepted; ``None`` means every dtype bie knows.
    dtypes: ClassVar[frozenset[str] | None] = None
    description: ClassVar[str] = ""
    Config: ClassVar[type] = NoConfig

    # -- the two methods every strategy writes ---------------------------------
    def encode(self, chunk: np.ndarray, config: Any) -> tuple[bytes, dict]:
        raise NotImplementedError

    def decode(
        self, payload: bytes | memoryview, meta: dict, shape: tuple[int, ...], dtype: str
    ) -> np.ndarray:
        raise NotImplementedError

    # -- optional ----------------------------------------------------------------
    def encode_parts(self, chunk: np.ndarray, config: Any) -> tuple[list, dict]:
        """:meth:`encode` with the payload as a list of buffers (bytes, memoryviews, 1-D uint8
        arrays) whose concatenation is the payload, for callers that write or hash them in
        turn: a strategy that builds its payload from parts can skip joining them, a copy of
        the whole payload made while holding the GIL. By default, ``[encode(...)[0]]``."""
        payload, meta = self.encode(chunk, config)
        return [payload], meta

    def decode_into(self, payload: bytes | memoryview, meta: dict, shape: tuple[int, ...], dtype: str,
                    out: np.ndarray) -> np.ndarray:
        """:meth:`decode` into ``out`` (a writable uint8 array of exactly the chunk's bytes,
        aligned for ``dtype``): the chunk as an array over ``out``'s memory, or, when the
        payload decodes to another shape or dtype, that array (the caller reports it). By
        default :meth:`decode` and a copy (numpy copies without the GIL); a strategy whose
        decoder can write its output where it is told overrides it and saves the copy."""
        array = self.decode(payload, meta, shape, dtype)
        target = from_bytes(out, shape, dtype)
        if array.shape != target.shape or array.dtype != target.dtype:
            return array
        np.copyto(target, array)
        return target

    #: the strategy's matmul kernels (``bie_cli.kernels``): a dotted module name,
    #: imported on first use, or an object with the same functions
    #: (``from_chunk``, ``reference_matvec``, ``reference_matmul``, optionally
    #: ``concat``, ``numba_matvec``, ``numba_matmul``, ``warmup``; docs/kernels.md).
    #: ``None``: no kernels.
    kernels: ClassVar[Any] = None
    #: True when :meth:`decode_planes` can rebuild a chunk from a prefix of its
    #: payload (``bie-bitplane``); readers then skip the whole-record checksum
    #: and let the strategy verify only the bytes it reads.
    progressive: ClassVar[bool] = False

    def is_lossless(self, config: Any) -> bool:
        """Whether this config decodes bit-exact (e.g. ``sdr`` is, unless it prunes or quantizes)."""
        return self.lossless

    def decode_planes(
        self, payload: bytes | memoryview, meta: dict, shape: tuple[int, ...], dtype: str, bits: int
    ) -> np.ndarray:
        """Progressive strategies: decode from the top ``bits`` planes only, reading and
        checksumming only their bytes (the rest of ``payload`` must not be touched)."""
        raise NotImplementedError(f"strategy {self.id!r} is not progressive")

    # -- plumbing ----------------------------------------------------------------
    def supports(self, dtype: str) -> bool:
        return self.dtypes is None or dtype in self.dtypes

    def check_dtype(self, dtype: str, tensor_name: str = "") -> None:
        if not self.supports(dtype):
            where = f" (tensor {tensor_name!r})" if tensor_name else ""
            raise UnsupportedDtypeError(
                f"strategy {self.id!r} does not accept dtype {dtype}{where}; "
                f"it accepts {', '.join(sorted(self.dtypes or ()))}"
            )

    def default_config(self) -> Any:
        return self.Config()

    def config_to_dict(self, config: Any) -> dict:
        return dataclasses.asdict(config)

    def config_from_dict(self, values: dict) -> Any:
        """Build a config from JSON values or CLI strings, checking names and types."""
        fields = {f.name: f for f in dataclasses.fields(self.Config)}
        unknown = sorted(set(values) - set(fields))
        if unknown:
            valid = ", ".join(fields) or "none"
            raise BadInputError(
                f"strategy {self.id!r} has no option {unknown[0]!r}; its options: {valid}"
            )
        hints = typing.get_type_hints(self.Config)
        parsed = {name: _coerce(self.id, name, hints[name], value) for name, value in values.items()}
        try:
            return self.Config(**parsed)
        except (TypeError, ValueError) as exc:
            raise BadInputError(f"strategy {self.id!r}: {exc}") from None

    def options(self) -> list[tuple[str, str, Any]]:
        """(name, type, default) for every option, for ``bie strategies``."""
        hints = typing.get_type_hints(self.Config)
        return [
            (f.name, _type_name(hints[f.name]), f.default)
            for f in dataclasses.fields(self.Config)
        ]

    def empty(self, shape: tuple[int, ...], dtype: str) -> np.ndarray:
        return np.zeros(shape, dtype=dtypes.get(dtype).numpy)


def _type_name(hint: Any) -> str:
    if typing.get_origin(hint) is typing.Literal:
        return "|".join(str(a) for a in typing.get_args(hint))
    return getattr(hint, "__name__", str(hint))


def _coerce(strategy_id: str, name: str, hint: Any, value: Any) -> Any:
    """Turn a JSON or command-line value into the field's type, or explain why not."""
    def fail() -> BadInputError:
        return BadInputError(
            f"strategy {strategy_id!r}: option {name}={value!r} is not a valid {_type_name(hint)}"
        )

    origin = typing.get_origin(hint)
    if origin is typing.Literal:
        choices = typing.get_args(hint)
        for choice in choices:
            if value == choice or (isinstance(value, str) and str(choice) == value):
                return choice
        raise fail()
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(hint):
            if arg is type(None):
                if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
                    return None
                continue
            try:
                return _coerce(strategy_id, name, arg, value)
            except BadInputError:
                continue
        raise fail()
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            return value.lower() in ("1", "true", "yes", "on")
        raise fail()
    if hint is int:
        if isinstance(value, bool):
            raise fail()
        if isinstance(value, int):
            return value
        if isinstance(value, str):
            try:
                return int(value, 0)
            except ValueError:
                raise fail() from None
        raise fail()
    if hint is float:
        if isinstance(value, bool):
            raise fail()
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                raise fail() from None
        raise fail()
    if hint is str:
        if isinstance(value, str):
            return value
        raise fail()
    return value


# -- shared encoding steps -------------------------------------------------------------
#: chunk meta of a payload that is the element bytes as they were (coding did not make them smaller)
STORED_RAW = "raw"


def smaller_or_raw_parts(parts: list, elements) -> tuple[list, dict]:
    """``(parts, {})``, or the element bytes themselves with meta ``{"stored": "raw"}`` when
    coding did not make them smaller: no chunk is ever stored larger than raw. ``parts``: a
    payload given as buffers (see :meth:`Strategy.encode_parts`)."""
    if sum(map(len, parts)) >= len(elements):
        return [bytes(elements)], {"stored": STORED_RAW}
    return parts, {}


def smaller_or_raw(payload: bytes, elements) -> tuple[bytes, dict]:
    """:func:`smaller_or_raw_parts` for a payload of one buffer."""
    parts, meta = smaller_or_raw_parts([payload], elements)
    return parts[0], meta


def decode_if_raw(payload, meta: dict, shape: tuple[int, ...], dtype: str) -> np.ndarray | None:
    """The chunk when :func:`smaller_or_raw` stored it raw, else None (decode the coded form)."""
    if meta.get("stored") == STORED_RAW:
        return from_bytes(payload, shape, dtype)
    return None


def rans_if_smaller(symbols: np.ndarray, size_to_beat: int, counts: np.ndarray | None = None,
                    scale_bits: int | None = None) -> bytes | None:
    """The rANS stream of uint8 ``symbols`` when it is smaller than ``size_to_beat`` bytes, else None.

    The size is estimated from the histogram first, so a stream that cannot win is never coded."""
    from ..codecs import rans

    if symbols.size == 0:
        return None
    counts = rans.histogram(symbols) if counts is None else counts
    if rans.estimate_size(counts) >= size_to_beat:
        return None
    coded = rans.encode_symbols(symbols, counts=counts, scale_bits=scale_bits)
    return coded if len(coded) < size_to_beat else None


def require_finite(strategy_id: str, values: np.ndarray, why: str) -> None:
    """Refuse a chunk holding NaN/Inf with a message saying why this strategy cannot store them."""
    if values.size and not np.isfinite(values).all():
        raise BadInputError(f"strategy {strategy_id!r}: {why}")


def nonfinite_positions(strategy_id: str, values: np.ndarray, allow: bool) -> np.ndarray:
    """Flat positions of NaN/Inf elements (to be stored exactly); refused with a clear error unless ``allow``."""
    positions = np.flatnonzero(~np.isfinite(values).reshape(-1))
    if positions.size and not allow:
        raise BadInputError(
            f"strategy {strategy_id!r}: input holds {positions.size} NaN/Inf value(s) "
            f"(first at flat index {positions[0]}); quantization needs finite numbers. "
            f"Pass the option allow_nonfinite=true to store them exactly."
        )
    return positions


def as_bytes(chunk: np.ndarray) -> memoryview:
    """The chunk's elements as little-endian bytes, without copying when possible."""
    # via uint8: ml_dtypes types (bfloat16, float8) do not export the buffer protocol
    return memoryview(np.ascontiguousarray(chunk).reshape(-1).view(np.uint8))


def from_bytes(data: bytes | memoryview, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    """Rebuild an array from raw element bytes, checking the length first."""
    np_dtype = dtypes.get(dtype).numpy
    count = 1
    for dim in shape:
        count *= dim
    if len(data) != count * np_dtype.itemsize:
        raise ValueError(
            f"payload holds {len(data)} bytes, shape {shape} of {dtype} needs {count * np_dtype.itemsize}"
        )
    return np.frombuffer(data, dtype=np_dtype).reshape(shape)


class ByteCodecStrategy(Strategy):
    """A general-purpose byte compressor over the element bytes, with a raw fallback.

    Subclasses give ``compress_bytes`` and ``decompress_bytes``; this class
    keeps the chunk no larger than raw (meta ``{"stored": "raw"}``) and bounds
    decompression by the size the shape implies, so a hostile frame cannot
    claim gigabytes.
    """

    lossless = True

    def compress_bytes(self, data: memoryview, config: Any) -> bytes:
        raise NotImplementedError

    def decompress_bytes(self, payload: bytes | memoryview, size: int) -> bytes:
        raise NotImplementedError

    def encode(self, chunk: np.ndarray, config: Any) -> tuple[bytes, dict]:
        data = as_bytes(chunk)
        return smaller_or_raw(self.compress_bytes(data, config), data)

    def decode(self, payload, meta, shape, dtype) -> np.ndarray:
        raw = decode_if_raw(payload, meta, shape, dtype)
        if raw is not None:
            return raw
        size = dtypes.nbytes(dtype, tuple(shape))
        data = self.decompress_bytes(payload, size)
        if len(data) != size:
            raise ValueError(f"{self.id} payload decodes to {len(data)} bytes, the chunk needs {size}")
        return from_bytes(data, shape, dtype)

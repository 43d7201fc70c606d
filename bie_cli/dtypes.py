"""Canonical tensor dtypes.

bie names dtypes the way safetensors does (``F32``, ``BF16``, ``F8_E4M3``...)
and stores every element little-endian. numpy has no bfloat16 or float8, so
those come from ``ml_dtypes``; a lossless path only ever reinterprets bytes,
it never converts through float32.
"""

from __future__ import annotations

from dataclasses import dataclass

import ml_dtypes
import numpy as np

from .errors import UnsupportedDtypeError


@dataclass(frozen=True)
class DType:
    name: str  # canonical (safetensors) name, stored in containers
    numpy: np.dtype
    is_float: bool
    is_signed: bool

    @property
    def itemsize(self) -> int:
        return self.numpy.itemsize


def _d(name: str, np_dtype, is_float: bool = False, is_signed: bool = True) -> DType:
    return DType(name, np.dtype(np_dtype).newbyteorder("<"), is_float, is_signed)


_ALL = [
    _d("BOOL", np.bool_, is_signed=False),
    _d("U8", np.uint8, is_signed=False),
    _d("I8", np.int8),
    _d("U16", np.uint16, is_signed=False),
    _d("I16", np.int16),
    _d("U32", np.uint32, is_signed=False),
    _d("I32", np.int32),
    _d("U64", np.uint64, is_signed=False),
    _d("I64", np.int64),
    _d("F16", np.float16, is_float=True),
    _d("BF16", ml_dtypes.bfloat16, is_float=True),
    _d("F32", np.float32, is_float=True),
    _d("F64", np.float64, is_float=True),
    _d("F8_E4M3", ml_dtypes.float8_e4m3fn, is_float=True),
    _d("F8_E5M2", ml_dtypes.float8_e5m2, is_float=True),
    _d("C64", np.complex64, is_float=True),
    _d("C128", np.complex128, is_float=True),
]

BY_NAME: dict[str, DType] = {d.name: d for d in _ALL}
_BY_NUMPY: dict[np.dtype, DType] = {d.numpy.newbyteorder("="): d for d in _ALL}

FLOAT_NAMES = frozenset(d.name for d in _ALL if d.is_float and not d.name.startswith("C"))
ALL_NAMES = frozenset(BY_NAME)


def get(name: str) -> DType:
    """Look up a canonical dtype name, with a clear error for unknown ones."""
    try:
        return BY_NAME[name]
    except KeyError:
        raise UnsupportedDtypeError(
            f"unsupported dtype {name!r}; bie stores {', '.join(sorted(BY_NAME))}"
        ) from None


def from_numpy(dtype: np.dtype) -> DType:
    dtype = np.dtype(dtype)
    found = _BY_NUMPY.get(dtype.newbyteorder("="))
    if found is None or dtype.byteorder == ">":
        raise UnsupportedDtypeError(f"unsupported numpy dtype {dtype}")
    return found


def nbytes(name: str, shape: tuple[int, ...]) -> int:
    count = 1
    for dim in shape:
        count *= dim
    return count * get(name).itemsize

"""Canonical tensor dtypes.

bie names dtypes the way safetensors does (``F32``, ``BF16``, ``F8_E4M3``...)
and stores every element little-endian. numpy has no bfloat16 or float8, so
those come from ``ml_dtypes``; a lossless path only ever reinterprets bytes,
it never converts through float32.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

from .errors import UnsupportedDtypeError

if TYPE_CHECKING:  # numpy is imported where a dtype is resolved: `bie inspect` needs only names and sizes
    import numpy as np


@dataclass(frozen=True)
class DType:
    name: str  # canonical (safetensors) name, stored in containers
    itemsize: int
    is_float: bool
    is_signed: bool
    numpy_name: str  # a numpy type name, or ml_dtypes' for the types numpy lacks

    @cached_property
    def numpy(self) -> np.dtype:
        """The little-endian numpy dtype. Resolved on first use: importing ml_dtypes costs
        more than all of ``bie inspect`` otherwise, and inspect needs only names and sizes."""
        import numpy as np

        if self.numpy_name.startswith("ml_dtypes."):
            import ml_dtypes

            scalar = getattr(ml_dtypes, self.numpy_name.removeprefix("ml_dtypes."))
        else:
            scalar = getattr(np, self.numpy_name)
        return np.dtype(scalar).newbyteorder("<")


def _d(name: str, numpy_name: str, itemsize: int, is_float: bool = False, is_signed: bool = True) -> DType:
    return DType(name, itemsize, is_float, is_signed, numpy_name)


_ALL = [
    _d("BOOL", "bool_", 1, is_signed=False),
    _d("U8", "uint8", 1, is_signed=False),
    _d("I8", "int8", 1),
    _d("U16", "uint16", 2, is_signed=False),
    _d("I16", "int16", 2),
    _d("U32", "uint32", 4, is_signed=False),
    _d("I32", "int32", 4),
    _d("U64", "uint64", 8, is_signed=False),
    _d("I64", "int64", 8),
    _d("F16", "float16", 2, is_float=True),
    _d("BF16", "ml_dtypes.bfloat16", 2, is_float=True),
    _d("F32", "float32", 4, is_float=True),
    _d("F64", "float64", 8, is_float=True),
    _d("F8_E4M3", "ml_dtypes.float8_e4m3fn", 1, is_float=True),
    _d("F8_E5M2", "ml_dtypes.float8_e5m2", 1, is_float=True),
    _d("C64", "complex64", 8, is_float=True),
    _d("C128", "complex128", 16, is_float=True),
]

BY_NAME: dict[str, DType] = {d.name: d for d in _ALL}

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
    import sys

    import numpy as np

    dtype = np.dtype(dtype)
    # a bfloat16 or float8 array exists only once ml_dtypes is imported: before that, do not
    # import it (~40 ms) just to compare a float32 with it
    candidates = _ALL if "ml_dtypes" in sys.modules else [d for d in _ALL if not d.numpy_name.startswith("ml_dtypes.")]
    found = next((d for d in candidates if d.numpy.newbyteorder("=") == dtype.newbyteorder("=")), None)
    if found is None or dtype.byteorder == ">":
        raise UnsupportedDtypeError(f"unsupported numpy dtype {dtype}")
    return found


def nbytes(name: str, shape: tuple[int, ...]) -> int:
    count = 1
    for dim in shape:
        count *= dim
    return count * get(name).itemsize

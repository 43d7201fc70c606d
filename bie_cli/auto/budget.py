"""What the user asks ``auto`` for: an average bit rate, a file size, or an error bound.

Sizes use the same units as ``--chunk-size`` (K/M/G are powers of 1024, a
trailing ``B``/``iB`` is optional), so ``12MB`` is 12 x 2**20 bytes; ``30%``
is that share of the source's tensor bytes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import BadInputError

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


@dataclass(frozen=True)
class Budget:
    """One of ``target_bits`` (bits per parameter, whole file), ``target_bytes``
    (whole file), ``target_fraction`` (of the source's tensor bytes) or
    ``max_error`` (each tensor's relative MSE)."""

    kind: str  # "bits" | "size" | "max_error"
    value: float
    text: str  # as the user wrote it, for messages and stored reasons

    @property
    def is_size(self) -> bool:
        return self.kind in ("bits", "size")

    def file_bytes(self, parameters: int, tensor_bytes: int) -> int:
        """The whole-file byte budget this stands for (size budgets only)."""
        if self.kind == "bits":
            return math.floor(self.value * parameters / 8)
        if self.text.endswith("%"):
            return math.floor(self.value * tensor_bytes)
        return int(self.value)

    def describe(self) -> str:
        return {"bits": f"--target-bits {self.text}", "size": f"--target-size {self.text}",
                "max_error": f"--max-error {self.text}"}[self.kind]

    def to_dict(self) -> dict:
        return {"kind": self.kind, "value": self.value, "text": self.text}


def parse_target_size(text: str) -> Budget:
    cleaned = text.strip()
    if cleaned.endswith("%"):
        try:
            percent = float(cleaned[:-1])
        except ValueError:
            raise BadInputError(f"--target-size {text!r} is not a size like 12MB, 3000000 or 30%") from None
        if not (math.isfinite(percent) and percent > 0):
            raise BadInputError(f"--target-size {text!r}: the percentage must be positive")
        return Budget("size", percent / 100, cleaned)
    upper = cleaned.upper().removesuffix("B").removesuffix("I")
    number, unit = (upper[:-1], upper[-1]) if upper and upper[-1] in _UNITS else (upper, "")
    try:
        value = float(number) * _UNITS[unit]
    except ValueError:
        raise BadInputError(f"--target-size {text!r} is not a size like 12MB, 3000000 or 30%") from None
    if not (math.isfinite(value) and value >= 1):
        raise BadInputError(f"--target-size {text!r} must be at least one byte")
    return Budget("size", float(int(value)), cleaned)


def make_budget(target_bits: float | None = None, target_size: str | None = None,
                max_error: float | None = None) -> Budget | None:
    """The one budget given, checked; None when none is; exit 2 when several are or one is malformed."""
    given = [name for name, value in (("--target-bits", target_bits), ("--target-size", target_size),
                                      ("--max-error", max_error)) if value is not None]
    if len(given) > 1:
        raise BadInputError(f"{given[0]} and {given[1]} are different budgets; give one")
    if target_bits is not None:
        if not (math.isfinite(target_bits) and target_bits > 0):
            raise BadInputError(f"--target-bits must be a positive number of bits per parameter, got {target_bits}")
        return Budget("bits", float(target_bits), f"{target_bits:g}")
    if target_size is not None:
        return parse_target_size(target_size)
    if max_error is not None:
        if not (math.isfinite(max_error) and max_error >= 0):
            raise BadInputError(f"--max-error must be a relative MSE >= 0, got {max_error}")
        return Budget("max_error", float(max_error), f"{max_error:g}")
    return None

"""What the user asks ``auto`` for: an average bit rate, a file size, or an error bound.

Sizes use the same units as ``--chunk-size`` (K/M/G are powers of 1024, a
trailing ``B``/``iB`` is optional), so ``12MB`` is 12 x 2**20 bytes; ``30%``
is that share of the source's tensor bytes.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Iterator
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
        """As stored in the plan's reasons and the container header (the command-line form)."""
        return {"bits": f"--target-bits {self.text}", "size": f"--target-size {self.text}",
                "max_error": f"--max-error {self.text}"}[self.kind]

    def label(self) -> str:
        """As library error messages name it (the CLI shows its flags: :func:`cli_terms`)."""
        name = {"bits": "target_bits", "size": "target_size", "max_error": "max_error"}[self.kind]
        return f"{name}={self.text}"

    def to_dict(self) -> dict:
        return {"kind": self.kind, "value": self.value, "text": self.text}


def parse_target_size(text: str) -> Budget:
    cleaned = text.strip()
    if cleaned.endswith("%"):
        try:
            percent = float(cleaned[:-1])
        except ValueError:
            raise BadInputError(f"target_size={text!r} is not a size like 12MB, 3000000 or 30%") from None
        if not (math.isfinite(percent) and percent > 0):
            raise BadInputError(f"target_size={text!r}: the percentage must be positive")
        return Budget("size", percent / 100, cleaned)
    upper = cleaned.upper().removesuffix("B").removesuffix("I")
    number, unit = (upper[:-1], upper[-1]) if upper and upper[-1] in _UNITS else (upper, "")
    try:
        value = float(number) * _UNITS[unit]
    except ValueError:
        raise BadInputError(f"target_size={text!r} is not a size like 12MB, 3000000 or 30%") from None
    if not (math.isfinite(value) and value >= 1):
        raise BadInputError(f"target_size={text!r} must be at least one byte")
    return Budget("size", float(int(value)), cleaned)


def make_budget(target_bits: float | None = None, target_size: str | None = None,
                max_error: float | None = None) -> Budget | None:
    """The one budget given, checked; None when none is; exit 2 when several are or one is malformed."""
    given = [name for name, value in (("target_bits", target_bits), ("target_size", target_size),
                                      ("max_error", max_error)) if value is not None]
    if len(given) > 1:
        raise BadInputError(f"{given[0]} and {given[1]} are different budgets; give one")
    if target_bits is not None:
        if not (math.isfinite(target_bits) and target_bits > 0):
            raise BadInputError(f"target_bits must be a positive number of bits per parameter, got {target_bits}")
        return Budget("bits", float(target_bits), f"{target_bits:g}")
    if target_size is not None:
        return parse_target_size(target_size)
    if max_error is not None:
        if not (math.isfinite(max_error) and max_error >= 0):
            raise BadInputError(f"max_error must be a relative MSE >= 0, got {max_error}")
        return Budget("max_error", float(max_error), f"{max_error:g}")
    return None


#: library names in error messages -> the command line's flags
_CLI_NAMES = {"target_bits": "--target-bits", "target_size": "--target-size", "max_error": "--max-error",
              "chunk_size": "--chunk-size", "weighting": "--weighting", "threads": "--threads"}
_CLI_PHRASES = {"give no default strategy (rules pin tensors)": "drop --strategy (use --rule to pin tensors)"}
_CLI_PATTERN = re.compile(r"\b(" + "|".join(_CLI_NAMES) + r")\b(=)?")


def cli_terms(message: str) -> str:
    """A library error message in the command line's terms: ``target_bits=3`` -> ``--target-bits 3``."""
    for phrase, flags in _CLI_PHRASES.items():
        message = message.replace(phrase, flags)
    return _CLI_PATTERN.sub(lambda m: _CLI_NAMES[m.group(1)] + (" " if m.group(2) else ""), message)


@contextlib.contextmanager
def errors_in_cli_terms() -> Iterator[None]:
    """Re-raise a plain :class:`BadInputError` from the library with :func:`cli_terms` applied
    (subclasses carry their own wording and pass through unchanged)."""
    try:
        yield
    except BadInputError as exc:
        if type(exc) is not BadInputError:
            raise
        raise BadInputError(cli_terms(str(exc))) from None

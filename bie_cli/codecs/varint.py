"""Unsigned LEB128 varints, the one implementation every codec uses.

7 bits a byte, least significant group first, high bit set on every byte but
the last. Readers refuse truncated and overlong encodings instead of guessing.
"""

from __future__ import annotations


def put(out: bytearray, value: int) -> None:
    """Append ``value`` (>= 0) to ``out``."""
    if value < 0:
        raise ValueError(f"varint cannot hold {value}")
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def get(raw, pos: int, max_bits: int = 63, what: str = "varint") -> tuple[int, int]:
    """Read one varint from ``raw`` (bytes or a uint8 array) at ``pos``; return (value, next pos)."""
    value = shift = 0
    while True:
        if pos >= len(raw):
            raise ValueError(f"{what} is truncated")
        byte = int(raw[pos])
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            if value >> max_bits:
                raise ValueError(f"{what} is out of range")
            return value, pos
        shift += 7
        if shift >= max_bits + 7:
            raise ValueError(f"{what} is too long")

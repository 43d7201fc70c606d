"""Fixed-size elements as byte planes, each entropy-coded on its own (lossless).

An array of ``count`` elements of ``itemsize`` bytes (little-endian) is cut
into ``itemsize`` planes: plane 0 holds every element's most significant
byte, plane ``itemsize - 1`` the least significant. For floats the top plane
(sign and high exponent bits) is highly skewed and codes to a bit or two per
element; mantissa planes stay near 8 bits and are stored raw.

Layout: per plane, most significant first: ``u8 kind`` (0 raw, 1 rANS),
``varint length``, ``length`` bytes (raw: exactly ``count`` bytes; rANS: a
:mod:`bie_cli.codecs.rans` stream of ``count`` uint8 symbols). ``count`` and
``itemsize`` are not stored; the caller knows them.
"""

from __future__ import annotations

import numpy as np

from . import intcode, rans

RAW, RANS = 0, 1


def encode(elements: np.ndarray, itemsize: int) -> bytes:
    """``elements``: a uint8 array of ``count * itemsize`` little-endian bytes."""
    data = np.ascontiguousarray(elements, dtype=np.uint8).reshape(-1, itemsize) if itemsize else None
    out = bytearray()
    for plane_index in range(itemsize - 1, -1, -1):
        plane = np.ascontiguousarray(data[:, plane_index])
        kind, body = RAW, plane.tobytes()
        if plane.size:
            counts = rans.histogram(plane)
            if rans.estimate_size(counts) < plane.size:
                coded = rans.encode_symbols(plane, counts=counts)
                if len(coded) < plane.size:
                    kind, body = RANS, coded
        out.append(kind)
        intcode.put_varint(out, len(body))
        out += body
    return bytes(out)


def decode(data: bytes | memoryview | np.ndarray, count: int, itemsize: int) -> np.ndarray:
    """Inverse of :func:`encode`: ``count * itemsize`` uint8 bytes, little-endian elements."""
    raw = np.frombuffer(data, dtype=np.uint8) if not isinstance(data, np.ndarray) else data
    out = np.empty((count, itemsize), dtype=np.uint8)
    pos = 0
    for plane_index in range(itemsize - 1, -1, -1):
        if pos >= raw.size:
            raise ValueError("byte planes are truncated")
        kind = int(raw[pos])
        length, pos = intcode.get_varint(raw, pos + 1)
        if pos + length > raw.size:
            raise ValueError("byte plane is truncated")
        body = raw[pos : pos + length]
        pos += length
        if kind == RAW:
            if length != count:
                raise ValueError(f"raw byte plane holds {length} bytes, expected {count}")
            out[:, plane_index] = body
        elif kind == RANS:
            out[:, plane_index] = rans.decode_symbols(body, count, np.uint8)
        else:
            raise ValueError(f"unknown byte plane kind {kind}")
    if pos != raw.size:
        raise ValueError("byte planes have trailing bytes")
    return out.reshape(-1)

"""Sets of positions in ``[0, n)``: a bitmap or coded gaps, whichever is smaller.

Used for the nonzero positions of ``sdr``, the significant set of
``bie-binary`` and the tile occupancy of ``bie-blocked``. The encoder sizes
every representation and keeps the smallest:

=====  ===========  ==========================================================
kind   name         data after the header
=====  ===========  ==========================================================
0      none         nothing (count is 0)
1      all          nothing (count is n: every position)
2      bitmap       ceil(n/8) bytes: bit i (little-endian in each byte) set iff
                    i is a position; padding bits zero
3      bitmap-rans  the bitmap bytes as a :mod:`bie_cli.codecs.rans` stream of
                    ceil(n/8) uint8 symbols
4      gaps         :mod:`bie_cli.codecs.intcode` stream of ``count`` gaps;
                    gap_0 = p_0, gap_i = p_i - p_(i-1) - 1
=====  ===========  ==========================================================

Layout: ``u8 kind``, ``varint count``, then the data. ``n`` is not stored:
the caller knows it from the chunk's shape. An iid pattern of density p
costs about n·H(p) bits either as an entropy-coded bitmap or as gaps; gaps
win on clustered and very sparse patterns, the bitmap on dense ones.

Decoding returns sorted int64 positions and raises ``ValueError`` on any
inconsistency (count above n, bits set past n, positions out of range).
"""

from __future__ import annotations

import numpy as np

from . import intcode, rans

NONE, ALL, BITMAP, BITMAP_RANS, GAPS = 0, 1, 2, 3, 4
KIND_NAMES = {NONE: "none", ALL: "all", BITMAP: "bitmap", BITMAP_RANS: "bitmap-rans", GAPS: "gaps"}


def encode(positions: np.ndarray, n: int) -> bytes:
    """Code sorted, unique positions in ``[0, n)``."""
    positions = np.ascontiguousarray(positions, dtype=np.int64).reshape(-1)
    count = positions.size
    head = bytearray()
    if count == 0:
        head.append(NONE)
    elif count == n:
        head.append(ALL)
    if head:
        intcode.put_varint(head, count)
        return bytes(head)
    candidates = []
    bitmap = np.zeros((n + 7) // 8 * 8, dtype=np.uint8)
    bitmap[positions] = 1
    packed = np.packbits(bitmap, bitorder="little")
    candidates.append((packed.size, BITMAP, packed.tobytes()))
    byte_counts = rans.histogram(packed)
    if rans.estimate_size(byte_counts) < packed.size:
        coded = rans.encode_symbols(packed, counts=byte_counts)
        candidates.append((len(coded), BITMAP_RANS, coded))
    gaps = np.diff(positions, prepend=-1) - 1
    coded_gaps = intcode.encode_uints(gaps)
    candidates.append((len(coded_gaps), GAPS, coded_gaps))
    _, kind, data = min(candidates, key=lambda c: (c[0], c[1]))
    head.append(kind)
    intcode.put_varint(head, count)
    return bytes(head) + data


def kind_of(data: bytes | memoryview | np.ndarray) -> str:
    raw = np.frombuffer(data, dtype=np.uint8) if not isinstance(data, np.ndarray) else data
    return KIND_NAMES.get(int(raw[0]), "?") if raw.size else "?"


def decode(data: bytes | memoryview | np.ndarray, n: int) -> np.ndarray:
    """Inverse of :func:`encode`: sorted int64 positions in ``[0, n)``."""
    raw = np.frombuffer(data, dtype=np.uint8) if not isinstance(data, np.ndarray) else data
    if raw.size < 2:
        raise ValueError("position set is truncated")
    kind = int(raw[0])
    count, pos = intcode.get_varint(raw, 1)
    if count > n:
        raise ValueError(f"position set claims {count} positions among {n}")
    body = raw[pos:]
    if kind in (NONE, ALL):
        if body.size or (kind == NONE and count != 0) or (kind == ALL and count != n):
            raise ValueError("position set of kind none/all is inconsistent")
        return np.arange(count, dtype=np.int64)
    if kind in (BITMAP, BITMAP_RANS):
        nbytes = (n + 7) // 8
        if kind == BITMAP:
            if body.size != nbytes:
                raise ValueError(f"bitmap holds {body.size} bytes, {n} positions need {nbytes}")
            packed = body
        else:
            packed = rans.decode_symbols(body, nbytes, np.uint8)
        bits = np.unpackbits(packed, bitorder="little")
        if bits[n:].any():
            raise ValueError("bitmap has bits set past the end")
        positions = np.flatnonzero(bits[:n]).astype(np.int64)
        if positions.size != count:
            raise ValueError(f"bitmap holds {positions.size} positions, header says {count}")
        return positions
    if kind == GAPS:
        gaps = intcode.decode_uints(body, count)
        # every gap below n, and their sum below n, before a cumulative sum can overflow
        if count and (int(gaps.max()) >= n or float(gaps.sum(dtype=np.float64)) + count > n + 1):
            raise ValueError("gaps run past the end of the position range")
        positions = np.cumsum(gaps + 1) - 1
        if count and int(positions[-1]) >= n:
            raise ValueError("gaps run past the end of the position range")
        return positions
    raise ValueError(f"unknown position set kind {kind}")

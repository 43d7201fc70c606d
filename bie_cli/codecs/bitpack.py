"""Bit packing of small unsigned codes, and base-3 packing of trits.

``pack_bits`` stores ``b``-bit codes (1 <= b <= 8) as one little-endian bit
stream: code ``i`` occupies bits ``i*b .. i*b+b-1``, least significant bit
first, the last byte padded with zero bits. ``pack_trits`` stores codes in
{0, 1, 2} five to a byte as ``t0 + 3*t1 + 9*t2 + 27*t3 + 81*t4`` (3**5 = 243
<= 256, so 1.6 bits a trit), the last byte padded with zero trits.

Both are vectorised numpy; the unpackers check lengths and values and raise
``ValueError`` on anything a packer could not have written, so a hostile
payload cannot make them read past the end or invent codes.
"""

from __future__ import annotations

import numpy as np

TRITS_PER_BYTE = 5
_POW3 = np.array([1, 3, 9, 27, 81], dtype=np.uint8)
_TRIT_TABLE = np.array(
    [[(byte // 3**i) % 3 for i in range(TRITS_PER_BYTE)] for byte in range(243)], dtype=np.uint8
)


def packed_size(count: int, bits: int) -> int:
    """Bytes ``pack_bits`` writes for ``count`` codes of ``bits`` bits."""
    return (count * bits + 7) // 8


def pack_bits(codes: np.ndarray, bits: int) -> bytes:
    """Pack uint8 codes, each < 2**bits, into a little-endian bit stream."""
    if not 1 <= bits <= 8:
        raise ValueError(f"bits must be 1..8, got {bits}")
    codes = np.ascontiguousarray(codes, dtype=np.uint8).reshape(-1)
    if bits == 8:
        return codes.tobytes()
    if 8 % bits == 0:  # 1, 2, 4: whole codes per byte, no bit-level shuffle
        per = 8 // bits
        padded = np.zeros(-(-codes.size // per) * per, dtype=np.uint8)
        padded[: codes.size] = codes
        lanes = padded.reshape(-1, per)
        out = np.zeros(lanes.shape[0], dtype=np.uint8)
        for lane in range(per):
            out |= lanes[:, lane] << np.uint8(lane * bits)
        return out.tobytes()
    # 3, 5, 6, 7: spread each code to its bits, keep the low ``bits`` of each.
    bit_matrix = np.unpackbits(codes[:, None], axis=1, bitorder="little")[:, :bits]
    return np.packbits(bit_matrix.reshape(-1), bitorder="little").tobytes()


def unpack_bits(data: bytes | memoryview | np.ndarray, bits: int, count: int) -> np.ndarray:
    """Inverse of :func:`pack_bits`: ``count`` uint8 codes."""
    if not 1 <= bits <= 8:
        raise ValueError(f"bits must be 1..8, got {bits}")
    raw = np.frombuffer(data, dtype=np.uint8) if not isinstance(data, np.ndarray) else data
    expected = packed_size(count, bits)
    if raw.size != expected:
        raise ValueError(f"packed codes hold {raw.size} bytes, {count} codes of {bits} bits need {expected}")
    if bits == 8:
        return raw.copy()
    if 8 % bits == 0:
        per = 8 // bits
        mask = np.uint8((1 << bits) - 1)
        lanes = np.empty((raw.size, per), dtype=np.uint8)
        for lane in range(per):
            lanes[:, lane] = (raw >> np.uint8(lane * bits)) & mask
        return lanes.reshape(-1)[:count].copy()
    bit_stream = np.unpackbits(raw, bitorder="little")[: count * bits].reshape(count, bits)
    weights = (1 << np.arange(bits, dtype=np.uint8)).astype(np.uint8)
    return (bit_stream * weights).sum(axis=1, dtype=np.uint8)


def trit_packed_size(count: int) -> int:
    return -(-count // TRITS_PER_BYTE)


def pack_trits(trits: np.ndarray) -> bytes:
    """Pack codes in {0, 1, 2} five to a byte (base 3, first trit least significant)."""
    trits = np.ascontiguousarray(trits, dtype=np.uint8).reshape(-1)
    if trits.size and int(trits.max()) > 2:
        raise ValueError("trits must be 0, 1 or 2")
    padded = np.zeros(trit_packed_size(trits.size) * TRITS_PER_BYTE, dtype=np.uint8)
    padded[: trits.size] = trits
    # max value 2*121 = 242 fits in uint8, so the weighted sum never wraps
    return (padded.reshape(-1, TRITS_PER_BYTE) * _POW3).sum(axis=1, dtype=np.uint8).tobytes()


def unpack_trits(data: bytes | memoryview | np.ndarray, count: int) -> np.ndarray:
    """Inverse of :func:`pack_trits`: ``count`` codes in {0, 1, 2}."""
    raw = np.frombuffer(data, dtype=np.uint8) if not isinstance(data, np.ndarray) else data
    expected = trit_packed_size(count)
    if raw.size != expected:
        raise ValueError(f"packed trits hold {raw.size} bytes, {count} trits need {expected}")
    if raw.size and int(raw.max()) > 242:
        raise ValueError("packed trit byte above 242 (3**5 - 1): corrupt payload")
    return _TRIT_TABLE[raw].reshape(-1)[:count].copy()

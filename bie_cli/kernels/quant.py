"""Kernels for ``quant`` (b-bit uniform codes with a scale and offset per group of a row).

Kernel form (:class:`QuantMatrix`), parsed once from the payload by the
strategy's own parser (:func:`bie_cli.strategies.quant.unpack`; rANS-coded
codes are decoded there, once, at load time):

* ``codes``: ``[rows, row_bytes]``. With ``bits <= 4`` (and groups of even
  length, or one group a row) two codes share a uint8: element ``2k`` in the
  low nibble of byte ``k``, element ``2k+1`` in the high nibble, rows start on
  a byte. Otherwise one int8 a code, stored as ``code − zero``.
  ``zero = 2**(bits-1)``.
* ``scale``, ``offset``: float32 ``[rows, groups]``; element ``j`` of row ``i``
  is ``ŵ = (code − zero)·scale[i, g] + offset[i, g]``, ``g = j // group_size``.
  Centring the codes keeps ``offset`` small (``min + zero·scale`` for
  asymmetric grids), so the factorised sum below does not cancel. Symmetric
  grids decode as ``(code − 2**(bits-1))·scale``: no offset, and ``offset``
  is an empty ``[0, 0]`` array (not read). ``granularity=tensor`` and
  ``channel`` are one group a row.
* elements the strategy stored exactly (non-finite values, or codes that
  saturated in ``step`` mode) as a per-row correction list ``fix_ptr`` /
  ``fix_col`` / ``fix_delta`` (exact value minus the code's value).

The numba matvec never forms ``ŵ``: per row and group it takes
``scale·Σ (code_j − zero)·x_j + offset·Σ x_j``, the group sums of ``x``
computed once a call, so the inner loop is an integer → float32
multiply-add over contiguous codes (2 weights a byte at 4 bits).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

STRATEGY = "quant"
#: rows ``numba_matmul`` dequantizes into its scratch tile per BLAS call
TILE_ROWS = 128
NO_OFFSET = np.zeros((0, 0), dtype=np.float32)
_REFERENCE_BLOCK_ROWS = 256


@dataclass
class QuantMatrix:
    rows: int
    cols: int
    bits: int
    nibbles: bool
    zero: int
    codes: np.ndarray
    group_size: int
    scale: np.ndarray
    offset: np.ndarray
    fix_ptr: np.ndarray
    fix_col: np.ndarray
    fix_delta: np.ndarray

    @property
    def groups(self) -> int:
        return self.scale.shape[1]

    @property
    def offsets(self) -> np.ndarray:
        """``offset`` as a ``[rows, groups]`` array (zeros when there is none)."""
        return self.offset if self.offset.size else np.zeros_like(self.scale)

    @property
    def nbytes(self) -> int:
        arrays = (self.codes, self.scale, self.offset, self.fix_ptr, self.fix_col, self.fix_delta)
        return sum(a.nbytes for a in arrays)

    def centered_codes(self, start: int, stop: int) -> np.ndarray:
        """``code − zero`` of rows ``[start, stop)``, one int16 per element."""
        block = self.codes[start:stop]
        if not self.nibbles:
            return block.astype(np.int16)
        both = np.empty((block.shape[0], block.shape[1] * 2), dtype=np.int16)
        both[:, 0::2] = block & 15
        both[:, 1::2] = block >> 4
        return both[:, : self.cols] - np.int16(self.zero)


def from_chunk(payload, meta: dict, shape: tuple[int, ...], dtype: str) -> QuantMatrix:
    from ..strategies import quant

    parsed = quant.unpack(payload, meta, shape, dtype)
    rows, cols = shape[0], int(np.prod(shape[1:], dtype=np.int64))
    layout = parsed.layout
    if layout.count == 0:
        return _empty(rows, cols, parsed.bits)
    codes = parsed.codes.reshape(rows, cols)
    nibbles = parsed.bits <= 4 and (
        layout.granularity != "group" or layout.groups_per_row == 1 or layout.group_size % 2 == 0
    )
    zero = 1 << (parsed.bits - 1)
    scale = parsed.scale.astype(np.float32)
    if parsed.symmetric:
        offset = np.zeros_like(scale)
    else:
        offset = parsed.mins.astype(np.float32) + np.float32(zero) * scale
    if layout.granularity == "group" and layout.groups_per_row > 1:
        group_size = layout.group_size
        scale = scale.reshape(rows, -1)
        offset = offset.reshape(rows, -1)
    else:  # one scale per chunk (tensor) or per row (channel): one group a row
        group_size = cols
        scale = np.broadcast_to(scale.reshape(-1, 1), (rows, 1)).copy()
        offset = np.broadcast_to(offset.reshape(-1, 1), (rows, 1)).copy()
    packed = pack_nibbles(codes) if nibbles else (codes.astype(np.int16) - zero).astype(np.int8)
    if parsed.symmetric:
        offset = NO_OFFSET
    matrix = QuantMatrix(rows, cols, parsed.bits, nibbles, zero, packed, group_size, scale, offset,
                         np.zeros(rows + 1, np.int64), np.zeros(0, np.int32), np.zeros(0, np.float32))
    if parsed.exact_positions.size:
        _add_fixes(matrix, parsed.exact_positions, parsed.exact_values)
    return matrix


def _empty(rows: int, cols: int, bits: int) -> QuantMatrix:
    return QuantMatrix(rows, cols, bits, False, 128, np.zeros((rows, cols), np.int8), max(cols, 1),
                       np.zeros((rows, 1), np.float32), np.zeros((rows, 1), np.float32),
                       np.zeros(rows + 1, np.int64), np.zeros(0, np.int32), np.zeros(0, np.float32))


def pack_nibbles(codes: np.ndarray) -> np.ndarray:
    rows, cols = codes.shape
    padded = np.zeros((rows, cols + (cols & 1)), dtype=np.uint8)
    padded[:, :cols] = codes
    return np.ascontiguousarray(padded[:, 0::2] | (padded[:, 1::2] << 4))


def _add_fixes(matrix: QuantMatrix, positions: np.ndarray, values: np.ndarray) -> None:
    """Elements stored exactly: keep (row, col, exact − code value), sorted by row."""
    order = np.argsort(positions, kind="stable")
    positions = positions[order]
    rows, cols = positions // matrix.cols, positions % matrix.cols
    if matrix.nibbles:
        codes = ((matrix.codes[rows, cols // 2] >> (4 * (cols & 1)).astype(np.uint8)) & 15).astype(np.int16)
    else:
        codes = matrix.codes[rows, cols].astype(np.int16) + matrix.zero
    codes = (codes - matrix.zero).astype(np.float32)
    group = cols // matrix.group_size
    coded = codes * matrix.scale[rows, group] + matrix.offsets[rows, group]
    exact = values[order].astype(np.float32)
    with np.errstate(invalid="ignore", over="ignore"):
        matrix.fix_delta = (exact - coded).astype(np.float32)
    matrix.fix_col = cols.astype(np.int32)
    matrix.fix_ptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=matrix.rows))]).astype(np.int64)


def concat(parts: list[QuantMatrix]) -> QuantMatrix | None:
    """One matrix from the chunks of a tensor, or None when their layouts differ."""
    first = parts[0]
    if any(
        (p.cols, p.nibbles, p.zero, p.group_size, p.groups, p.codes.shape[1]) !=
        (first.cols, first.nibbles, first.zero, first.group_size, first.groups, first.codes.shape[1])
        for p in parts
    ):
        return None
    fix_ptr = [np.zeros(1, np.int64)]
    done = 0
    for p in parts:
        fix_ptr.append(p.fix_ptr[1:] + done)
        done += int(p.fix_ptr[-1])
    return QuantMatrix(
        sum(p.rows for p in parts), first.cols, max(p.bits for p in parts), first.nibbles, first.zero,
        np.concatenate([p.codes for p in parts]), first.group_size,
        np.concatenate([p.scale for p in parts]),
        NO_OFFSET if all(p.offset.size == 0 for p in parts) else np.concatenate([p.offsets for p in parts]),
        np.concatenate(fix_ptr), np.concatenate([p.fix_col for p in parts]),
        np.concatenate([p.fix_delta for p in parts]),
    )


# -- numpy reference: the specification ------------------------------------------------
def _dequantize_block(m: QuantMatrix, start: int, stop: int) -> np.ndarray:
    """ŵ for rows [start, stop): (code − zero)·scale + offset per group, then the exact elements."""
    codes = m.centered_codes(start, stop).astype(np.float32)
    scale = np.repeat(m.scale[start:stop], m.group_size, axis=1)[:, : m.cols]
    offset = np.repeat(m.offsets[start:stop], m.group_size, axis=1)[:, : m.cols]
    w = codes * scale + offset
    lo, hi = m.fix_ptr[start], m.fix_ptr[stop]
    if hi > lo:
        rows = np.repeat(np.arange(start, stop), np.diff(m.fix_ptr[start : stop + 1])) - start
        with np.errstate(invalid="ignore", over="ignore"):
            w[rows, m.fix_col[lo:hi]] += m.fix_delta[lo:hi]
    return w


def reference_matmul(m: QuantMatrix, X: np.ndarray, out: np.ndarray) -> None:
    """``out = Ŵ @ X``, dequantizing a block of rows at a time (never the whole matrix)."""
    for start in range(0, m.rows, _REFERENCE_BLOCK_ROWS):
        stop = min(start + _REFERENCE_BLOCK_ROWS, m.rows)
        with np.errstate(invalid="ignore", over="ignore"):  # exactly stored NaN/Inf propagate, as in Ŵ @ X
            out[start:stop] = _dequantize_block(m, start, stop) @ X


def reference_matvec(m: QuantMatrix, x: np.ndarray, out: np.ndarray) -> None:
    reference_matmul(m, x[:, None], out[:, None])


# -- numba ---------------------------------------------------------------------------------
def numba_matvec(m: QuantMatrix, x: np.ndarray, out: np.ndarray) -> None:
    from . import _quant_numba as kernels

    if m.nibbles:
        xe, xo, xsum = kernels.split_pairs(x, m.group_size, m.groups)
        group_bytes = m.codes.shape[1] if m.groups == 1 else m.group_size // 2
        kernels.matvec_nibbles(m.codes, m.zero, m.scale, m.offset, group_bytes, xe, xo, xsum,
                               m.fix_ptr, m.fix_col, m.fix_delta, x, out)
    else:
        xsum = kernels.group_sums(x, m.group_size, m.groups)
        kernels.matvec_bytes(m.codes, m.scale, m.offset, m.group_size, xsum,
                             m.fix_ptr, m.fix_col, m.fix_delta, x, out)


def numba_matmul(m: QuantMatrix, X: np.ndarray, out: np.ndarray) -> None:
    """Batch 1 is the matvec kernel. From batch 2 on, ``TILE_ROWS`` rows at a time are
    dequantized (numba, serial) into one reused scratch tile and multiplied by BLAS
    sgemm (:func:`bie_cli.kernels.gemm`, BLAS's threads): Ŵ is never built whole, and the multiply runs at BLAS speed
    (a fused numba kernel measured 2-5x slower than this from batch 4 up; docs/kernels.md)."""
    from . import _quant_numba as kernels
    from . import gemm

    if X.shape[1] == 1:
        numba_matvec(m, X[:, 0], out[:, 0])
        return
    tile = np.empty((min(TILE_ROWS, m.rows), m.cols + (m.cols & 1)), dtype=np.float32)
    for start in range(0, m.rows, TILE_ROWS):
        rows = min(TILE_ROWS, m.rows - start)
        kernels.dequantize_rows(m.codes, m.nibbles, m.zero, m.scale, m.offset, m.group_size,
                                m.fix_ptr, m.fix_col, m.fix_delta, start, tile[:rows])
        with np.errstate(invalid="ignore", over="ignore"):
            gemm(tile[:rows, : m.cols], X, out[start : start + rows])


def warmup() -> None:
    """Compile every numba kernel of this family on a tiny matrix (or load it from cache)."""
    rng = np.random.default_rng(0)
    for nibbles in (True, False):
        codes = rng.integers(0, 16, (3, 8), dtype=np.uint8)
        m = QuantMatrix(3, 8, 4, False, 128, codes.astype(np.int8), 4, np.ones((3, 2), np.float32),
                        np.zeros((3, 2), np.float32), np.array([0, 1, 1, 1], np.int64), np.zeros(1, np.int32),
                        np.ones(1, np.float32))
        if nibbles:
            m.nibbles, m.zero, m.codes = True, 8, pack_nibbles(codes)
        numba_matvec(m, np.ones(8, np.float32), np.empty(3, np.float32))
        numba_matmul(m, np.ones((8, 2), np.float32), np.empty((3, 2), np.float32))

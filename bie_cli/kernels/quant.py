"""Kernels for ``quant`` (b-bit uniform codes with a scale and offset per group of a row).

Kernel form (:class:`QuantMatrix`), parsed once from the payload by the
strategy's own parser (:func:`bie_cli.strategies.quant.unpack`; rANS-coded
codes are decoded there, once, at load time) and repacked for the kernels
(the container format is unchanged):

* ``codes`` in one of two layouts, ``zero = 2**(bits-1)``:

  - **blocks** (``blocked``; groups of 32·2^k weights, or one group a row —
    every default): each row is blocks of 32 weights,
    zero-weight padded. ``bits <= 4``: 16 bytes a block, byte ``k`` = weight
    ``k`` (low nibble) | weight ``16 + k`` (high nibble), unsigned codes.
    5-8 bits: 32 ``int8`` a block, ``code − zero``.
  - **pairs** (other group sizes): ``bits <= 4`` with groups of even length:
    element ``2k`` in the low nibble of byte ``k``, ``2k+1`` in the high one;
    otherwise one ``int8`` a code, ``code − zero``.

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

Products never form ``ŵ`` whole: per row and group they take
``scale·Σ (code_j − zero)·x_j + offset·Σ x_j``, the group sums of ``x``
computed once a call.

**Activations** (``activations``, block layout only): ``"int8"`` (the
default) quantizes ``x`` once a call per block of 32 (``d = max|x|/127``,
``xq = rint(x/d)``, llama.cpp's Q8_0) and the block sums ``Σ code·xq`` are
integer dot products; the result differs from ``Ŵ·x`` by at most
``Σ_j |(code_j − zero)·scale|·d_j/2`` (a few 1e-3 relative, well under a
4-bit grid's own error). ``"float32"`` multiplies float32 weights and
activations (``Ŵ·x`` to float32 rounding). NaN/Inf in ``x`` always take the
float32 path. The numpy reference implements both: it is the specification.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

STRATEGY = "quant"
#: weights of a block (one activation scale, one integer dot product)
BLOCK = 32
ACTIVATIONS = ("int8", "float32")
#: rows ``numba_matmul`` dequantizes into its scratch tile per BLAS call (pair layout, and
#: the block layout from ``FUSED_MAX_BATCH + 1`` columns on)
TILE_ROWS = 128
#: largest batch the block layout multiplies with its own kernel (one row dot a column);
#: above it, dequantized tiles and BLAS sgemm are faster (docs/kernels.md)
FUSED_MAX_BATCH = 16
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
    blocked: bool = False
    activations: str = "int8"
    #: row-tile layout (:func:`to_row_tiles`): ``codes`` ``[ceil(rows/8), blocks·128]``, and
    #: ``scale_tiles`` ``[ceil(rows/8), groups·8]`` (a group's scales of a tile's 8 rows together)
    tiled: bool = False
    scale_tiles: np.ndarray | None = None

    @property
    def groups(self) -> int:
        return self.scale.shape[1]

    @property
    def blocks(self) -> int:
        return math.ceil(self.cols / BLOCK)

    @property
    def blocks_per_group(self) -> int:
        """Blocks of a group (block layout): a whole row when there is one group a row."""
        return max(self.blocks, 1) if self.groups == 1 else self.group_size // BLOCK

    @property
    def group_shift(self) -> int:
        """The group of block ``b`` is ``b >> group_shift`` (62: one group a row)."""
        return 62 if self.groups == 1 else self.blocks_per_group.bit_length() - 1

    @property
    def offsets(self) -> np.ndarray:
        """``offset`` as a ``[rows, groups]`` array (zeros when there is none)."""
        return self.offset if self.offset.size else np.zeros((self.rows, self.groups), np.float32)

    def row_scales(self, start: int, stop: int) -> np.ndarray:
        """The ``[stop − start, groups]`` scales of rows ``[start, stop)`` (the row-tile layout keeps
        them only in ``scale_tiles``; its ``scale`` is ``[0, groups]``)."""
        if not self.tiled:
            return self.scale[start:stop]
        first, last = start // 8, -(-stop // 8)
        grid = self.scale_tiles[first:last].reshape(last - first, self.groups, 8).transpose(0, 2, 1)
        return grid.reshape(-1, self.groups)[start - 8 * first : stop - 8 * first]

    @property
    def nbytes(self) -> int:
        arrays = (self.codes, self.scale, self.offset, self.fix_ptr, self.fix_col, self.fix_delta)
        return sum(a.nbytes for a in arrays) + (0 if self.scale_tiles is None else self.scale_tiles.nbytes)

    def centered_codes(self, start: int, stop: int) -> np.ndarray:
        """``code − zero`` of rows ``[start, stop)`` in column order, one int16 per element."""
        if self.tiled:  # [tile, block, v, row, k] bytes -> [tile, row, block, v, low/high, k] codes
            first, last = start // 8, -(-stop // 8)
            grid = self.codes[first:last].reshape(last - first, -1, 4, 8, 4)
            both = np.stack([grid & 15, grid >> 4], axis=3).transpose(0, 4, 1, 2, 3, 5).reshape((last - first) * 8, -1)
            return both[start - 8 * first : stop - 8 * first, : self.cols].astype(np.int16) - np.int16(self.zero)
        block = self.codes[start:stop]
        if not self.nibbles:
            return block.astype(np.int16)[:, : self.cols]
        if self.blocked:
            quads = block.reshape(block.shape[0], -1, BLOCK // 2)
            both = np.concatenate([quads & 15, quads >> 4], axis=2).reshape(block.shape[0], -1)
        else:
            both = np.empty((block.shape[0], block.shape[1] * 2), dtype=np.uint8)
            both[:, 0::2] = block & 15
            both[:, 1::2] = block >> 4
        return both[:, : self.cols].astype(np.int16) - np.int16(self.zero)


def build(codes: np.ndarray, bits: int, group_size: int, scale: np.ndarray, offset: np.ndarray) -> QuantMatrix:
    """The kernel form of ``[rows, cols]`` unsigned ``codes`` (``ŵ = (code − 2**(bits-1))·scale + offset``).

    ``scale`` and ``offset`` (or ``NO_OFFSET``) are ``[rows, groups]``; one
    group a row when ``groups == 1``. The block layout whenever groups are
    whole blocks, else the pair layout.
    """
    rows, cols = codes.shape
    zero = 1 << (bits - 1)
    groups = scale.shape[1]
    blocks_per_group = group_size // BLOCK
    blocked = groups == 1 or (group_size % BLOCK == 0 and blocks_per_group & (blocks_per_group - 1) == 0)
    nibbles = bits <= 4 and (blocked or groups == 1 or group_size % 2 == 0)
    if blocked:
        packed = pack_blocks(codes, zero, nibbles)
    elif nibbles:
        packed = pack_nibbles(codes)
    else:
        packed = (codes.astype(np.int16) - zero).astype(np.int8)
    return QuantMatrix(rows, cols, bits, nibbles, zero, packed, group_size if groups > 1 else max(cols, 1),
                       np.ascontiguousarray(scale, dtype=np.float32), offset,
                       np.zeros(rows + 1, np.int64), np.zeros(0, np.int32), np.zeros(0, np.float32), blocked)


def from_chunk(payload, meta: dict, shape: tuple[int, ...], dtype: str) -> QuantMatrix:
    from ..strategies import quant

    parsed = quant.unpack(payload, meta, shape, dtype)
    rows, cols = shape[0], int(np.prod(shape[1:], dtype=np.int64))
    layout = parsed.layout
    if layout.count == 0:
        return _empty(rows, cols, parsed.bits)
    codes = parsed.codes.reshape(rows, cols)
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
    matrix = build(codes, parsed.bits, group_size, scale, NO_OFFSET if parsed.symmetric else offset)
    if parsed.exact_positions.size:
        _add_fixes(matrix, parsed.exact_positions, parsed.exact_values)
    return matrix


def _empty(rows: int, cols: int, bits: int) -> QuantMatrix:
    return QuantMatrix(rows, cols, bits, False, 128, np.zeros((rows, cols), np.int8), max(cols, 1),
                       np.zeros((rows, 1), np.float32), np.zeros((rows, 1), np.float32),
                       np.zeros(rows + 1, np.int64), np.zeros(0, np.int32), np.zeros(0, np.float32))


def pack_nibbles(codes: np.ndarray) -> np.ndarray:
    """Pair layout: element ``2k`` in the low nibble of byte ``k``, ``2k+1`` in the high one."""
    rows, cols = codes.shape
    padded = np.zeros((rows, cols + (cols & 1)), dtype=np.uint8)
    padded[:, :cols] = codes
    return np.ascontiguousarray(padded[:, 0::2] | (padded[:, 1::2] << 4))


def pack_blocks(codes: np.ndarray, zero: int, nibbles: bool) -> np.ndarray:
    """Block layout of ``[rows, cols]`` unsigned codes, rows padded with ``zero`` (weight 0) to whole blocks."""
    rows, cols = codes.shape
    blocks = math.ceil(cols / BLOCK)
    padded = np.full((rows, blocks * BLOCK), zero, dtype=np.uint8)
    padded[:, :cols] = codes
    if not nibbles:
        return (padded.astype(np.int16) - zero).astype(np.int8)
    halves = padded.reshape(rows, blocks, 2, BLOCK // 2)
    return np.ascontiguousarray((halves[:, :, 0] | (halves[:, :, 1] << 4)).reshape(rows, blocks * BLOCK // 2))


def can_tile(m: QuantMatrix) -> bool:
    """Whether :func:`to_row_tiles` applies: 4-bit-or-less block layout with int8 activations."""
    return m.blocked and m.nibbles and not m.tiled and m.activations == "int8" and m.rows > 0 and m.cols > 0


def to_row_tiles(m: QuantMatrix) -> QuantMatrix:
    """The same matrix in the row-tile layout (the block layout's codes are not kept).

    Rows are padded with zero-weight codes to tiles of 8 (``_quant_numba.TILE``), each tile's
    rows stored together a block of 32 columns at a time: 128 bytes a tile and block, in four
    32-byte vectors; byte ``j`` of vector ``v`` holds row ``j // 4``'s code at block position
    ``8v + j % 4`` in its low nibble and ``8v + 4 + j % 4`` in its high one. ``and 15`` and
    ``>> 4`` of one vector give 8 rows × 4 consecutive weights twice, and a 4-byte broadcast of
    the activations multiplies all 8 rows at once (``pmaddubsw``): products of 2-16 columns read
    each tile's codes once for 4 columns, with no per-row horizontal sums. Same bytes a
    weight as the block layout (plus 7 padded rows at most). Used by :mod:`bie_cli.nn` for
    batches of 2-16 columns, where it is several times faster than the block layout's row dots.
    """
    from ._quant_numba import TILE

    assert can_tile(m)
    tiles = -(-m.rows // TILE)
    codes = np.full((tiles * TILE, m.blocks * BLOCK), m.zero, dtype=np.uint8)
    codes[: m.rows, : m.cols] = (m.centered_codes(0, m.rows) + m.zero).astype(np.uint8)
    # [tile, row, block, v, low/high, k] -> [tile, block, v, low/high, row, k]
    grid = codes.reshape(tiles, TILE, m.blocks, 4, 2, 4).transpose(0, 2, 3, 4, 1, 5)
    packed = np.ascontiguousarray(grid[:, :, :, 0] | (grid[:, :, :, 1] << 4)).reshape(tiles, m.blocks * 4 * BLOCK)
    scale = np.zeros((tiles * TILE, m.groups), dtype=np.float32)
    scale[: m.rows] = m.scale
    scale_tiles = np.ascontiguousarray(scale.reshape(tiles, TILE, m.groups).transpose(0, 2, 1)).reshape(tiles, -1)
    return QuantMatrix(m.rows, m.cols, m.bits, True, m.zero, packed, m.group_size,
                       np.zeros((0, m.groups), np.float32), m.offset,
                       m.fix_ptr, m.fix_col, m.fix_delta, True, m.activations, True, scale_tiles)


def kernel_form(m: QuantMatrix) -> QuantMatrix:
    """What :func:`bie_cli.kernels.load_encoded` holds: 4-bit-or-less block-layout codes with int8
    activations in the row-tile layout (:func:`to_row_tiles`), every other matrix as it is. One
    contiguous stream of codes a tile of 8 rows, prefetched 1 KiB ahead, ran batch-1 products on
    11008x4096 1.3-2x and batch-16 ones 2x faster than the block layout's row dots with cold
    caches (docs/kernels.md, "Threads"); the results are the block layout's up to float32
    rounding of the sums (the same integer dots, added in another order)."""
    return to_row_tiles(m) if can_tile(m) else m


def _code_values(m: QuantMatrix, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``code − zero`` at the given positions, whatever the layout (but row tiles)."""
    assert not m.tiled, "exact elements are added before the row-tile layout is made"
    if not m.nibbles:
        return m.codes[rows, cols].astype(np.int16)
    if m.blocked:
        byte = (cols // BLOCK) * (BLOCK // 2) + cols % (BLOCK // 2)
        shift = 4 * ((cols % BLOCK) >= BLOCK // 2)
    else:
        byte, shift = cols // 2, 4 * (cols & 1)
    return ((m.codes[rows, byte] >> shift.astype(np.uint8)) & 15).astype(np.int16) - m.zero


def _add_fixes(matrix: QuantMatrix, positions: np.ndarray, values: np.ndarray) -> None:
    """Elements stored exactly: keep (row, col, exact − code value), sorted by row."""
    order = np.argsort(positions, kind="stable")
    positions = positions[order]
    rows, cols = positions // matrix.cols, positions % matrix.cols
    codes = _code_values(matrix, rows, cols).astype(np.float32)
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

    def key(p: QuantMatrix):
        return p.cols, p.nibbles, p.zero, p.group_size, p.groups, p.codes.shape[1], p.blocked, p.activations

    if any(p.tiled for p in parts) or any(key(p) != key(first) for p in parts):
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
        np.concatenate([p.fix_delta for p in parts]), first.blocked, first.activations,
    )


# -- numpy reference: the specification ------------------------------------------------
def quantize_activations(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """int8 activations of ``X`` (``[cols, batch]``, float32) per block of 32 rows of ``X``.

    Returns ``(xq, step)``: ``xq`` ``[blocks, 32, batch]`` (zero-padded rows
    at the end), ``step = max|x|/127`` per block and column, ``xq = rint(x/step)``
    (computed as ``x·(1/step)`` in float32, as the kernel does; 0 where the block is 0).
    """
    cols, batch = X.shape
    blocks = math.ceil(cols / BLOCK)
    padded = np.zeros((blocks * BLOCK, batch), dtype=np.float32)
    padded[:cols] = X
    padded = padded.reshape(blocks, BLOCK, batch)
    step = np.abs(padded).max(axis=1, initial=np.float32(0.0)) / np.float32(127.0)
    with np.errstate(divide="ignore"):
        inverse = np.where(step > 0, np.float32(1.0) / step, np.float32(0.0)).astype(np.float32)
    xq = np.clip(np.rint(padded * inverse[:, None, :]), -127, 127)
    return xq, step


def _uses_int8(m: QuantMatrix, X: np.ndarray) -> bool:
    """int8 activations: block layout, asked for, batch up to ``FUSED_MAX_BATCH``
    (larger batches run exact float32 tiles through sgemm), and every x finite."""
    return (m.blocked and m.activations == "int8" and X.shape[1] <= FUSED_MAX_BATCH
            and bool(np.isfinite(X).all()))


def _dequantize_block(m: QuantMatrix, start: int, stop: int) -> np.ndarray:
    """ŵ for rows [start, stop): (code − zero)·scale + offset per group, then the exact elements."""
    codes = m.centered_codes(start, stop).astype(np.float32)
    scale = np.repeat(m.row_scales(start, stop), m.group_size, axis=1)[:, : m.cols]
    offset = np.repeat(m.offsets[start:stop], m.group_size, axis=1)[:, : m.cols]
    w = codes * scale + offset
    lo, hi = m.fix_ptr[start], m.fix_ptr[stop]
    if hi > lo:
        rows = np.repeat(np.arange(start, stop), np.diff(m.fix_ptr[start : stop + 1])) - start
        with np.errstate(invalid="ignore", over="ignore"):
            w[rows, m.fix_col[lo:hi]] += m.fix_delta[lo:hi]
    return w


def _int8_block(m: QuantMatrix, start: int, stop: int, X: np.ndarray, xq: np.ndarray, step: np.ndarray) -> np.ndarray:
    """Rows [start, stop) of the int8-activation product:
    Σ_b scale·step_b·Σ_{j∈b} (code_j − zero)·xq_j + offset·Σ_group x + exact elements·x."""
    blocks = xq.shape[0]
    codes = np.zeros((stop - start, blocks * BLOCK), dtype=np.float64)
    codes[:, : m.cols] = m.centered_codes(start, stop)
    sums = np.einsum("rbk,bkn->rbn", codes.reshape(stop - start, blocks, BLOCK), xq)  # exact integers
    block_scale = m.row_scales(start, stop)[:, np.arange(blocks) // m.blocks_per_group].astype(np.float64)
    y = np.einsum("rb,bn,rbn->rn", block_scale, step.astype(np.float64), sums)
    if m.offset.size:
        group_sums = np.add.reduceat(X.astype(np.float64), np.arange(0, m.cols, m.group_size), axis=0)
        y += m.offset[start:stop].astype(np.float64) @ group_sums
    lo, hi = m.fix_ptr[start], m.fix_ptr[stop]
    if hi > lo:
        rows = np.repeat(np.arange(stop - start), np.diff(m.fix_ptr[start : stop + 1]))
        with np.errstate(invalid="ignore", over="ignore"):
            np.add.at(y, rows, m.fix_delta[lo:hi, None].astype(np.float64) * X[m.fix_col[lo:hi]])
    return y


def reference_matmul(m: QuantMatrix, X: np.ndarray, out: np.ndarray) -> None:
    """``out = Ŵ @ X`` a block of rows at a time (never the whole matrix), with the activations of ``m``."""
    int8 = _uses_int8(m, X) and m.cols > 0
    if int8:
        xq, step = quantize_activations(X)
    for start in range(0, m.rows, _REFERENCE_BLOCK_ROWS):
        stop = min(start + _REFERENCE_BLOCK_ROWS, m.rows)
        with np.errstate(invalid="ignore", over="ignore"):  # exactly stored NaN/Inf propagate, as in Ŵ @ X
            if int8:
                out[start:stop] = _int8_block(m, start, stop, X, xq, step)
            else:
                out[start:stop] = _dequantize_block(m, start, stop) @ X


def reference_matvec(m: QuantMatrix, x: np.ndarray, out: np.ndarray) -> None:
    reference_matmul(m, x[:, None], out[:, None])


# -- numba ---------------------------------------------------------------------------------
def numba_matvec(m: QuantMatrix, x: np.ndarray, out: np.ndarray) -> None:
    from . import _quant_numba as kernels

    if m.tiled:
        numba_matmul(m, x[:, None], out[:, None])
    elif m.blocked:
        _blocked_product(kernels, m, x[None, :], out[:, None])
    elif m.nibbles:
        xe, xo, xsum = kernels.split_pairs(x, m.group_size, m.groups)
        group_bytes = m.codes.shape[1] if m.groups == 1 else m.group_size // 2
        kernels.matvec_nibbles(m.codes, m.zero, m.scale, m.offset, group_bytes, xe, xo, xsum,
                               m.fix_ptr, m.fix_col, m.fix_delta, x, out)
    else:
        xsum = kernels.group_sums(x, m.group_size, m.groups)
        kernels.matvec_bytes(m.codes, m.scale, m.offset, m.group_size, xsum,
                             m.fix_ptr, m.fix_col, m.fix_delta, x, out)


def _blocked_product(kernels, m: QuantMatrix, XT: np.ndarray, Y: np.ndarray) -> None:
    """``Y = Ŵ·XTᵀ`` on the block layout; ``XT`` is ``[batch, cols]``, ``Y`` ``[rows, batch]``."""
    activations = kernels.prepare_activations(
        XT, m.blocks, m.group_size, m.groups, m.activations == "int8", m.offset.size > 0,
        1 if XT.shape[0] == 1 else kernels.COLUMNS, m.nibbles, m.zero)
    kernels.blocked_matmul(m.codes, m.zero, m.scale, m.offset, m.group_shift, *activations,
                           m.fix_ptr, m.fix_col, m.fix_delta, Y)


def numba_matmul(m: QuantMatrix, X: np.ndarray, out: np.ndarray) -> None:
    """Up to ``FUSED_MAX_BATCH`` columns (block layout) the row-dot kernel, a column at a time.
    Otherwise ``TILE_ROWS`` rows at a time are dequantized (numba, serial) into one reused scratch tile
    and multiplied by BLAS sgemm (:func:`bie_cli.kernels.gemm`, BLAS's threads): Ŵ is never built
    whole, and the multiply runs at BLAS speed (docs/kernels.md). The tile path is exact float32."""
    from . import _quant_numba as kernels
    from . import gemm

    if m.tiled:
        if X.shape[1] <= FUSED_MAX_BATCH and tiled_product(m, np.ascontiguousarray(X.T), out):
            return
    elif X.shape[1] == 1:
        numba_matvec(m, X[:, 0], out[:, 0])
        return
    elif m.blocked and X.shape[1] <= FUSED_MAX_BATCH:
        _blocked_product(kernels, m, np.ascontiguousarray(X.T), out)
        return
    tile = np.empty((min(TILE_ROWS, m.rows), max(m.blocks * BLOCK, m.cols + (m.cols & 1))), dtype=np.float32)
    for start in range(0, m.rows, TILE_ROWS):
        rows = min(TILE_ROWS, m.rows - start)
        if m.tiled:
            kernels.dequantize_tiled_rows(m.codes, m.zero, m.scale_tiles, m.offset, m.group_shift,
                                          m.fix_ptr, m.fix_col, m.fix_delta, start, tile[:rows])
        else:
            kernels.dequantize_rows(m.codes, m.nibbles, m.blocked, m.zero, m.scale, m.offset, m.group_size,
                                    m.fix_ptr, m.fix_col, m.fix_delta, start, tile[:rows])
        with np.errstate(invalid="ignore", over="ignore"):
            gemm(tile[:rows, : m.cols], X, out[start : start + rows])


def tiled_product(m: QuantMatrix, XT: np.ndarray, Y: np.ndarray, bias: np.ndarray | None = None) -> bool:
    """``Y = Ŵ·XTᵀ (+ bias)`` on the row-tile layout with int8 activations (``XT``: C-contiguous
    float32 ``[batch, cols]``, any batch; ``Y``: ``[rows, batch]``, any strides). False (and ``Y``
    untouched) when some x is NaN/Inf: the product must then be exact float32. :func:`numba_matmul`
    uses it up to ``FUSED_MAX_BATCH`` columns (the documented int8 range of ``kernels.matmul``);
    :mod:`bie_cli.nn` at every batch, where it is at least as fast as dequantized tiles and
    sgemm (docs/kernels.md) and keeps a layer's output independent of the batch size."""
    from . import _quant_numba as kernels

    padded, sums, xq, xd, xz, finite = kernels.quantize_columns(XT, m.blocks, m.group_size, m.groups,
                                                                m.offset.size > 0)
    if not finite:
        return False
    kernels.tiled_matmul(m.codes, m.zero, m.scale_tiles, m.offset, m.group_shift, padded, sums, xq, xd, xz,
                         m.fix_ptr, m.fix_col, m.fix_delta, _NO_BIAS if bias is None else bias, Y)
    return True


_NO_BIAS = np.zeros(0, dtype=np.float32)


class TiledProduct:
    """:func:`tiled_product` for one row-tile matrix with its arguments looked up once: a
    ``CompressedLinear`` calls it once a forward, where microseconds of Python a call add up
    over a model's layers."""

    def __init__(self, m: QuantMatrix) -> None:
        from . import _quant_numba

        assert m.tiled
        self.matrix = m
        self._quantize = _quant_numba.quantize_columns
        self._kernel = _quant_numba.tiled_matmul
        self._shape = (m.blocks, m.group_size, m.groups, m.offset.size > 0)
        self._weights = (m.codes, m.zero, m.scale_tiles, m.offset, m.group_shift)
        self._fixes = (m.fix_ptr, m.fix_col, m.fix_delta)

    def product(self, XT: np.ndarray, Y: np.ndarray, bias: np.ndarray | None = None) -> bool:
        """Same as :func:`tiled_product` on this matrix."""
        padded, sums, xq, xd, xz, finite = self._quantize(XT, *self._shape)
        if not finite:
            return False
        self._kernel(*self._weights, padded, sums, xq, xd, xz, *self._fixes, _NO_BIAS if bias is None else bias, Y)
        return True


def warmup() -> None:
    """Compile every numba kernel of this family on tiny matrices (or load them from cache)."""
    rng = np.random.default_rng(0)
    for bits, group_size in ((4, 32), (8, 32), (4, 4), (8, 4)):
        codes = rng.integers(0, 1 << bits, (3, 40), dtype=np.uint8)
        m = build(codes, bits, group_size, np.ones((3, 2 if group_size == 32 else 10), np.float32),
                  np.zeros((3, 2 if group_size == 32 else 10), np.float32))
        _add_fixes(m, np.array([5]), np.array([1.0], np.float32))
        for activations in ACTIVATIONS:
            m.activations = activations
            numba_matvec(m, np.ones(40, np.float32), np.empty(3, np.float32))
            numba_matmul(m, np.ones((40, 2), np.float32), np.empty((3, 2), np.float32))
        numba_matmul(m, np.ones((40, FUSED_MAX_BATCH + 1), np.float32), np.empty((3, FUSED_MAX_BATCH + 1), np.float32))
        m.activations = "int8"
        if can_tile(m):  # the row-tile layout bie_cli.nn uses: [out, batch] and [batch, out] outputs
            tiled = to_row_tiles(m)
            numba_matmul(tiled, np.ones((40, 5), np.float32), np.empty((3, 5), np.float32))
            tiled_product(tiled, np.ones((5, 40), np.float32), np.empty((5, 3), np.float32).T, np.ones(3, np.float32))
            numba_matmul(tiled, np.ones((40, FUSED_MAX_BATCH + 1), np.float32),
                         np.empty((3, FUSED_MAX_BATCH + 1), np.float32))

"""The row-compressed kernel form shared by ``sdr`` and ``bie-blocked``.

:class:`RowSparseMatrix`: for row ``i`` the elements ``ptr[i]:ptr[i+1]`` of
``col`` (column, uint16 when the row has at most 65,536 columns, else int32)
and ``val`` (float32), columns ascending. Half the index bytes of
scipy's int32 CSR. The numba matvec multiplies 4 weights at a time, their
``x[col]`` loaded one by one into a vector (``_sparse_numba.row_dot``: on
the benchmark machine that beat LLVM's AVX-512 gathers).

:class:`GroupedRows` (what :func:`kernel_form` makes of it, when smaller): the
same weights in groups of 4, each column one byte counted from the group's
base (the previous group's last column, 0 for a row's first group), so 5
bytes a weight instead of 6. A group spanning more than 255 columns gets a
zero-valued filler, and a row's last group is padded with zero values; the
matvec masks those when ``x`` holds Inf/NaN, the matmul skips them. Only the
in-memory form changes: containers are untouched.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

_REFERENCE_BLOCK_ROWS = 256


def index_dtype(cols: int) -> np.dtype:
    return np.dtype(np.uint16) if cols <= 1 << 16 else np.dtype(np.int32)


@dataclass
class RowSparseMatrix:
    rows: int
    cols: int
    ptr: np.ndarray
    col: np.ndarray
    val: np.ndarray

    @property
    def nbytes(self) -> int:
        return self.ptr.nbytes + self.col.nbytes + self.val.nbytes

    @property
    def nnz(self) -> int:
        return int(self.val.size)


@dataclass
class GroupedRows:
    """Rows of whole groups of ``GROUP`` weights: group ``g`` of row ``i`` (``ptr[i] <= g < ptr[i+1]``) holds
    ``val[GROUP*g : GROUP*g+GROUP]`` at columns ``base + offset[...]``, ``base`` the column of the previous
    group's last weight in the row (0 for the row's first group). Zero values are padding or fillers."""

    rows: int
    cols: int
    ptr: np.ndarray
    offset: np.ndarray
    val: np.ndarray
    kept: int  # weights of the matrix (without padding and fillers)

    @property
    def nbytes(self) -> int:
        return self.ptr.nbytes + self.offset.nbytes + self.val.nbytes

    @property
    def nnz(self) -> int:
        return self.kept

    def to_rows(self) -> RowSparseMatrix:
        """The plain row-compressed form of the same weights."""
        groups = np.diff(self.ptr)
        offset = self.offset.reshape(-1, GROUP).astype(np.int64)
        last = offset[:, -1]
        running = np.cumsum(last) - last  # Σ of the earlier groups' last offsets
        first = np.repeat(self.ptr[:-1], groups)  # each group's row's first group
        base = running - running[first] if running.size else running
        columns = (base[:, None] + offset).reshape(-1)
        r = np.repeat(np.arange(self.rows), groups * GROUP)
        keep = self.val != 0
        return from_coordinates(self.rows, self.cols, r[keep], columns[keep], self.val[keep])


#: weights a group of :class:`GroupedRows` (the matvec's vector width)
GROUP = 4
#: :func:`grouped` gives up when more than this share of the rows needs fillers (a group spanning more
#: than 255 columns: very sparse rows), whose placement is a Python loop a row
_MAX_FILLED_ROWS = 0.25


def _filled_row(columns: np.ndarray, values: np.ndarray) -> tuple[list, list]:
    """Offsets and values of one row's groups, a zero-valued filler wherever an offset would pass 255."""
    out_values, offsets = [], []
    previous = base = 0
    slot = i = 0
    while i < columns.size:
        if slot == 0:
            base = previous
        if columns[i] - base <= 255:
            out_values.append(values[i])
            offsets.append(int(columns[i] - base))
            previous = int(columns[i])
            i += 1
        else:
            out_values.append(0.0)
            offsets.append(255)
            previous = base + 255
        slot = (slot + 1) % GROUP
    while slot:
        out_values.append(0.0)
        offsets.append(offsets[-1])
        slot = (slot + 1) % GROUP
    return out_values, offsets


def grouped(m: RowSparseMatrix, max_filled_rows: float = _MAX_FILLED_ROWS) -> GroupedRows | None:
    """``m`` as :class:`GroupedRows`; None when more than ``max_filled_rows`` of the rows would need fillers."""
    counts = np.diff(m.ptr)
    groups = -(-counts // GROUP)
    ptr = np.zeros(m.rows + 1, np.int64)
    np.cumsum(groups, out=ptr[1:])
    size = int(ptr[-1]) * GROUP
    rows = np.repeat(np.arange(m.rows), counts)
    slots = ptr[:-1][rows] * GROUP + (np.arange(m.nnz) - m.ptr[:-1][rows])
    present = np.zeros(size, bool)
    present[slots] = True
    columns = np.zeros(size, np.int64)
    columns[slots] = m.col
    val = np.zeros(size, np.float32)
    val[slots] = m.val
    # padding slots (the end of a row's last group) repeat the row's previous column
    source = np.where(present, np.arange(size), 0)
    np.maximum.accumulate(source, out=source)
    columns = columns[source].reshape(-1, GROUP)
    base = np.zeros(columns.shape[0], np.int64)
    base[1:] = columns[:-1, -1]
    base[ptr[:-1][groups > 0]] = 0
    offset = columns - base[:, None]
    overflow = (offset > 255).any(axis=1)
    offset = np.minimum(offset, 255).astype(np.uint8).reshape(-1)
    if overflow.any():
        filled = np.unique(np.repeat(np.arange(m.rows), groups)[overflow])
        if filled.size > max_filled_rows * m.rows:
            return None
        values_out, offsets_out, new_groups = [], [], groups.copy()
        done = 0
        for i in filled:
            values_out += [val[done * GROUP : ptr[i] * GROUP]]
            offsets_out += [offset[done * GROUP : ptr[i] * GROUP]]
            row_values, row_offsets = _filled_row(m.col[m.ptr[i] : m.ptr[i + 1]].astype(np.int64),
                                                  m.val[m.ptr[i] : m.ptr[i + 1]])
            values_out.append(np.array(row_values, np.float32))
            offsets_out.append(np.array(row_offsets, np.uint8))
            new_groups[i] = len(row_values) // GROUP
            done = ptr[i + 1]
        val = np.concatenate([*values_out, val[done * GROUP :]])
        offset = np.concatenate([*offsets_out, offset[done * GROUP :]])
        np.cumsum(new_groups, out=ptr[1:])
    return GroupedRows(m.rows, m.cols, ptr, offset, val, m.nnz)


def kernel_form(m: RowSparseMatrix) -> RowSparseMatrix | GroupedRows:
    """What the kernels hold: :class:`GroupedRows` when it takes fewer bytes (5 a weight against 6, or 8 with
    int32 columns; fillers and padding add to it), else ``m``. On 4096×4096 with cold caches its matvec
    was 10-17% faster at 90% sparsity and as fast at 95% (docs/kernels.md)."""
    if not isinstance(m, RowSparseMatrix) or m.nnz == 0:
        return m
    form = grouped(m)
    return form if form is not None and form.nbytes < m.nbytes else m


def from_coordinates(rows: int, cols: int, r: np.ndarray, c: np.ndarray, values: np.ndarray) -> RowSparseMatrix:
    """Build from (row, column, value) triples in any order (each position at most once).

    Entries equal to ±0.0 are dropped: lossless ``sdr`` keeps -0.0 (a pruned
    negative weight) bit for bit, but it adds nothing to a product (unless
    ``x`` holds Inf or NaN, where the dense product would give NaN).
    """
    values = np.asarray(values, dtype=np.float32)
    keep = values != 0
    r = np.asarray(r, dtype=np.int64)[keep]
    c = np.asarray(c, dtype=np.int64)[keep]
    values = values[keep]
    key = r * cols + c
    if key.size > 1 and (np.diff(key) <= 0).any():
        order = np.argsort(key, kind="stable")
        r, c, values = r[order], c[order], np.asarray(values)[order]
    ptr = np.zeros(rows + 1, dtype=np.int64)
    np.cumsum(np.bincount(r, minlength=rows), out=ptr[1:])
    # copies: the kernel form must not keep views into a container's memory map
    return RowSparseMatrix(rows, cols, ptr, c.astype(index_dtype(cols)), np.array(values, dtype=np.float32))


def concat(parts: list[RowSparseMatrix]) -> RowSparseMatrix:
    ptr = [np.zeros(1, np.int64)]
    done = 0
    for part in parts:
        ptr.append(part.ptr[1:] + done)
        done += part.nnz
    return RowSparseMatrix(
        sum(p.rows for p in parts), parts[0].cols, np.concatenate(ptr),
        np.concatenate([p.col for p in parts]), np.concatenate([p.val for p in parts]),
    )


# -- numpy reference: the specification ------------------------------------------------
def dense_block(m: RowSparseMatrix, start: int, stop: int) -> np.ndarray:
    """Rows [start, stop) of Ŵ: zeros, with val[k] at (row of k, col[k])."""
    block = np.zeros((stop - start, m.cols), dtype=np.float32)
    lo, hi = m.ptr[start], m.ptr[stop]
    local_rows = np.repeat(np.arange(stop - start), np.diff(m.ptr[start : stop + 1]))
    block[local_rows, m.col[lo:hi]] = m.val[lo:hi]
    return block


def reference_matmul(m: RowSparseMatrix | GroupedRows, X: np.ndarray, out: np.ndarray) -> None:
    """``out = Ŵ @ X``, a block of rows of Ŵ at a time."""
    if isinstance(m, GroupedRows):
        m = m.to_rows()
    for start in range(0, m.rows, _REFERENCE_BLOCK_ROWS):
        stop = min(start + _REFERENCE_BLOCK_ROWS, m.rows)
        out[start:stop] = dense_block(m, start, stop) @ X


def reference_matvec(m: RowSparseMatrix, x: np.ndarray, out: np.ndarray) -> None:
    reference_matmul(m, x[:, None], out[:, None])


# -- numba -----------------------------------------------------------------------------------
@functools.cache
def _numba_kernels():
    """The numba kernel module, imported on first use (an import statement per call costs 0.2 µs)."""
    from . import _sparse_numba

    return _sparse_numba


def numba_matvec(m: RowSparseMatrix | GroupedRows, x: np.ndarray, out: np.ndarray) -> None:
    if isinstance(m, GroupedRows):
        _numba_kernels().grouped_matvec(m.ptr, m.offset, m.val, x, out)
    else:
        _numba_kernels().rows_matvec(m.ptr, m.col, m.val, x, out)


def numba_matmul(m: RowSparseMatrix | GroupedRows, X: np.ndarray, out: np.ndarray) -> None:
    if isinstance(m, GroupedRows):
        _numba_kernels().grouped_matmul(m.ptr, m.offset, m.val, X, out)
    else:
        _numba_kernels().rows_matmul(m.ptr, m.col, m.val, X, out)


def warmup() -> None:
    for cols in (4, 1 << 17):  # uint16 and int32 column indices
        m = from_coordinates(3, cols, np.array([0, 0, 2]), np.array([1, 3, 2]), np.ones(3, np.float32))
        for form in (m, grouped(m)):
            numba_matvec(form, np.ones(cols, np.float32), np.empty(3, np.float32))
            numba_matmul(form, np.ones((cols, 2), np.float32), np.empty((3, 2), np.float32))

"""Numba kernels for the index-storage forms (``sdr``, ``bie-blocked``, sparse ``bie-binary``).

``prange`` over rows; each output row is written by one iteration only.
Inner loops run over slices (indices from 0, no wraparound checks), so LLVM
vectorizes them. The ``sdr``/``bie-blocked`` matvec is the exception: each
row is :func:`row_dot`, a loop we write as LLVM IR (below).

``row_dot(val, col, x, lo, hi)`` = Σ val[k]·x[col[k]] over k in [lo, hi), a
numba ``@intrinsic``. Why not a plain loop: on the benchmark machine (AMD
EPYC, AVX-512; LLVM sees ``znver5``) LLVM vectorizes
``acc += val[k] * x[col[k]]`` with 16-wide ``vgatherdps``, which ran at 4.1
weights a nanosecond: 51 µs for the 209k weights of a 2048×1024 matrix at
90% sparsity in one flat loop, 59 µs row by row. Loading each ``x[col[k]]``
as a scalar and inserting it into a 4-wide vector (``vinsertps`` with a
memory operand: two loads a weight, no gather micro-code) takes 47 µs row
by row — what LLVM itself emits when told the CPU is a Haswell, whose
gathers it considers slow. numba offers no per-function CPU or vector-width
setting, so the loop is written here.

For one row of ``n = hi − lo`` weights:

* ``n < LANES``: scalar products;
* a main loop of ``ACCUMULATORS × LANES`` weights an iteration into
  independent vector accumulators, each iteration prefetching the values and
  columns ``PREFETCH_BYTES`` of values ahead (with cold caches the loop waits on
  its two streams, not on its arithmetic);
* up to ``ACCUMULATORS − 1`` single vectors;
* the last ``r < LANES`` weights as one vector of the row's *last* ``LANES``
  weights, the first ``LANES − r`` lanes (counted already) set to zero
  with a select. Every load stays inside the row, and no weight is counted
  twice.

Sums are float32, reassociated as ``fastmath={"reassoc", "contract"}`` allows
(the flags of the other kernels): no no-NaN/no-Inf assumption. Every
operation is target-independent LLVM IR (vectors of 4 float32), so other CPUs
get whatever their backend makes of it.

The IR lives in this module on purpose: numba's on-disk cache of a kernel is
invalidated by changes to the kernel's own source file only.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from ._numba_common import FASTMATH

# -- row_dot: the sdr / bie-blocked matvec row loop as LLVM IR ---------------------------------
#: float32 lanes of a vector (xmm). Median us a call, one thread, 2048x1024 at 90 / 95% sparsity
#: and 4096x4096 at 90%: 4 lanes, 8 accumulators 46.7 / 26.0 / 350; 4 and 4: 48.0 / 26.3 / 370;
#: 8 lanes (ymm), 4 accumulators: 49.2 / 28.9 / 338.
LANES = 4
#: independent vector accumulators of the main loop (LANES * ACCUMULATORS weights an iteration).
#: Both must be powers of two: loop bounds are computed with bit masks.
ACCUMULATORS = 8
#: software prefetch distance, in bytes of ``val`` (``col`` is prefetched the same number of weights
#: ahead). With cold caches the loop is bound by the two streams it reads, not by its arithmetic: on
#: 4096x4096 at 90% sparsity a variant that never loads ``x`` ran as fast. Prefetching 2 KiB ahead made
#: it 10-20% faster (AMD EPYC znver3, 1 thread, interleaved medians, load 4-6); 512 B and 1 KiB gained
#: less, 4 and 8 KiB nothing more, ``prefetcht1`` no more than ``prefetcht0``.
PREFETCH_BYTES = 2048

_FLAGS = tuple(sorted(FASTMATH))
_I8 = ir.IntType(8)
_I32 = ir.IntType(32)
_I64 = ir.IntType(64)
_F32 = ir.FloatType()
_VECTOR = ir.VectorType(_F32, LANES)
_ZERO = ir.Constant(_VECTOR, [0.0] * LANES)


def _i64(value: int) -> ir.Constant:
    return ir.Constant(_I64, value)


class _RowDot:
    """Emits the IR of one call; ``val``, ``col``, ``x`` are data pointers of C-contiguous arrays."""

    def __init__(self, builder: ir.IRBuilder, val, col, x, signed_columns: bool):
        self.builder = builder
        self.val = val
        self.col = col
        self.x = x
        self.signed_columns = signed_columns

    def prefetch(self, k):
        """Prefetch the values and columns ``PREFETCH_BYTES // 4`` weights past ``k`` (the 32 weights of one
        main-loop iteration: two cache lines of values, one of columns; past the row's end too, where
        the next rows are). A prefetch never faults, so addresses past the arrays' ends are harmless."""
        b = self.builder
        prefetch = b.module.declare_intrinsic(
            "llvm.prefetch", fnty=ir.FunctionType(ir.VoidType(), [_I8.as_pointer(), _I32, _I32, _I32]))
        ahead = PREFETCH_BYTES // 4
        for array, offset in ((self.val, ahead), (self.val, ahead + 16), (self.col, ahead)):
            address = b.bitcast(b.gep(array, [b.add(k, _i64(offset))]), _I8.as_pointer())
            # read, highest locality (prefetcht0), data cache
            b.call(prefetch, [address, ir.Constant(_I32, 0), ir.Constant(_I32, 3), ir.Constant(_I32, 1)])

    def x_at(self, k):
        """``x[col[k]]``, one scalar load of the column and one of x."""
        b = self.builder
        column = b.load(b.gep(self.col, [k]))
        if column.type.width < 64:
            column = b.sext(column, _I64) if self.signed_columns else b.zext(column, _I64)
        return b.load(b.gep(self.x, [column]))

    def products(self, k):
        """``val[k:k+LANES] * x[col[k:k+LANES]]``: one vector load of values, scalar loads of x inserted into a vector."""
        b = self.builder
        values = b.load(b.bitcast(b.gep(self.val, [k]), _VECTOR.as_pointer()), align=4)
        gathered = ir.Constant(_VECTOR, ir.Undefined)
        for lane in range(LANES):
            gathered = b.insert_element(gathered, self.x_at(b.add(k, _i64(lane))), ir.Constant(_I32, lane))
        return b.fmul(values, gathered, flags=_FLAGS)

    def last_products(self, hi, keep):
        """Products of the row's last LANES weights, ``[hi−LANES, hi)``, with all but the last ``keep`` lanes zero."""
        b = self.builder
        products = self.products(b.sub(hi, _i64(LANES)))
        first_kept = b.sub(_i64(LANES), keep)
        splat = b.shuffle_vector(
            b.insert_element(ir.Constant(ir.VectorType(_I64, LANES), ir.Undefined), first_kept, ir.Constant(_I32, 0)),
            ir.Constant(ir.VectorType(_I64, LANES), ir.Undefined),
            ir.Constant(ir.VectorType(_I32, LANES), [0] * LANES),
        )
        lanes = ir.Constant(ir.VectorType(_I64, LANES), list(range(LANES)))
        return b.select(b.icmp_signed(">=", lanes, splat), products, _ZERO)

    def horizontal_sum(self, vector):
        b = self.builder
        width = LANES
        while width > 1:
            half = width // 2
            low = b.shuffle_vector(vector, vector, ir.Constant(ir.VectorType(_I32, half), list(range(half))))
            high = b.shuffle_vector(vector, vector, ir.Constant(ir.VectorType(_I32, half), list(range(half, width))))
            vector = b.fadd(low, high, flags=_FLAGS)
            width = half
        return b.extract_element(vector, ir.Constant(_I32, 0))

    def emit(self, lo, hi):
        b = self.builder
        result = cgutils.alloca_once(b, _F32)
        count = b.sub(hi, lo)
        with b.if_else(b.icmp_signed("<", count, _i64(LANES)), likely=False) as (short_row, long_row):
            with short_row:  # up to LANES - 1 scalar products, unrolled (LLVM would vectorize a loop, with gathers)
                b.store(ir.Constant(_F32, 0.0), result)
                for lane in range(LANES - 1):
                    k = b.add(lo, _i64(lane))
                    with b.if_then(b.icmp_signed("<", k, hi)):
                        product = b.fmul(b.load(b.gep(self.val, [k])), self.x_at(k), flags=_FLAGS)
                        b.store(b.fadd(b.load(result), product, flags=_FLAGS), result)
            with long_row:
                b.store(self.horizontal_sum(self.long_row(lo, hi, count)), result)
        return b.load(result)

    def long_row(self, lo, hi, count):
        """Vector sum of a row of at least LANES weights (allocas: LLVM keeps them in registers)."""
        b = self.builder
        step = LANES * ACCUMULATORS
        main_end = b.add(lo, b.and_(count, _i64(-step)))
        accumulators = [cgutils.alloca_once_value(b, _ZERO) for _ in range(ACCUMULATORS)]
        with cgutils.for_range_slice(b, lo, main_end, _i64(step)) as (k, _):
            self.prefetch(k)
            for number, accumulator in enumerate(accumulators):
                products = self.products(b.add(k, _i64(number * LANES)))
                b.store(b.fadd(b.load(accumulator), products, flags=_FLAGS), accumulator)
        total = b.load(accumulators[0])
        for accumulator in accumulators[1:]:
            total = b.fadd(total, b.load(accumulator), flags=_FLAGS)
        slot = cgutils.alloca_once_value(b, total)
        vectors_end = b.add(main_end, b.and_(b.sub(hi, main_end), _i64(-LANES)))
        with cgutils.for_range_slice(b, main_end, vectors_end, _i64(LANES)) as (k, _):
            b.store(b.fadd(b.load(slot), self.products(k), flags=_FLAGS), slot)
        remainder = b.sub(hi, vectors_end)
        with b.if_then(b.icmp_signed(">", remainder, _i64(0)), likely=True):
            b.store(b.fadd(b.load(slot), self.last_products(hi, remainder), flags=_FLAGS), slot)
        return b.load(slot)


def _one_dimensional(array, dtype=None) -> bool:
    return (isinstance(array, types.Array) and array.ndim == 1 and array.layout == "C"
            and (dtype is None or array.dtype == dtype))


@intrinsic
def row_dot(typingctx, val, col, x, lo, hi):
    """Σ ``val[k]·x[col[k]]`` for k in [lo, hi) as float32 (1-D C-contiguous arrays; integer columns, in range)."""
    if not (_one_dimensional(val, types.float32) and _one_dimensional(x, types.float32)
            and _one_dimensional(col) and isinstance(col.dtype, types.Integer)
            and isinstance(lo, types.Integer) and isinstance(hi, types.Integer)):
        return None
    signature = types.float32(val, col, x, types.int64, types.int64)

    def codegen(context, builder, signature, args):
        val_type, col_type, x_type = signature.args[:3]
        emitter = _RowDot(
            builder,
            context.make_array(val_type)(context, builder, args[0]).data,
            context.make_array(col_type)(context, builder, args[1]).data,
            context.make_array(x_type)(context, builder, args[2]).data,
            col_type.dtype.signed,
        )
        return emitter.emit(args[3], args[4])

    return signature, codegen



# -- group_dot: the same loop over the grouped kernel form (``_rows.GroupedRows``) ------------------------
#: weights a group of the grouped form: one vector (its columns are one byte each, from the group's base)
GROUP = LANES


class _GroupDot(_RowDot):
    """Emits Σ val·x[col] of one row of the grouped form: groups ``[glo, ghi)`` of GROUP weights, weight ``j`` of
    a group at column ``base + offset[j]`` (one byte), ``base`` the previous group's last column (0 for a row's
    first group). ``base`` is kept as a pointer into ``x``, so each ``x`` load is one addressing mode
    (``base + offset·4``) and a group costs one more instruction than the plain form's vector (the ``lea`` of the
    next base), for 5 bytes a weight instead of 6. Rows hold whole groups (padding: value 0), so there is no
    short-row or last-vector code. ``masked``: products whose value is exactly 0 (padding and fillers) are set
    to 0, so an Inf/NaN of ``x`` at their column cannot reach the row (the kernel takes this variant when ``x``
    holds one)."""

    def __init__(self, builder, val, offset, x, masked: bool):
        super().__init__(builder, val, offset, x, False)
        self.masked = masked

    def group(self, k, base):
        """(products of the group starting at weight ``k``, the next group's base pointer)."""
        b = self.builder
        values = b.load(b.bitcast(b.gep(self.val, [k]), _VECTOR.as_pointer()), align=4)
        gathered = ir.Constant(_VECTOR, ir.Undefined)
        offset = None
        for lane in range(GROUP):
            offset = b.zext(b.load(b.gep(self.col, [b.add(k, _i64(lane))])), _I64)
            gathered = b.insert_element(gathered, b.load(b.gep(base, [offset])), ir.Constant(_I32, lane))
        products = b.fmul(values, gathered, flags=_FLAGS)
        if self.masked:
            products = b.select(b.fcmp_unordered("!=", values, _ZERO), products, _ZERO)
        return products, b.gep(base, [offset])

    def prefetch(self, k):
        """Values ``PREFETCH_BYTES`` ahead (two lines per main-loop iteration), offsets as many weights ahead."""
        b = self.builder
        prefetch = b.module.declare_intrinsic(
            "llvm.prefetch", fnty=ir.FunctionType(ir.VoidType(), [_I8.as_pointer(), _I32, _I32, _I32]))
        ahead = PREFETCH_BYTES // 4
        for array, offset in ((self.val, ahead), (self.val, ahead + 16), (self.col, ahead)):
            address = b.bitcast(b.gep(array, [b.add(k, _i64(offset))]), _I8.as_pointer())
            b.call(prefetch, [address, ir.Constant(_I32, 0), ir.Constant(_I32, 3), ir.Constant(_I32, 1)])

    def emit(self, glo, ghi):
        b = self.builder
        lo, hi = b.mul(glo, _i64(GROUP)), b.mul(ghi, _i64(GROUP))
        step = GROUP * ACCUMULATORS
        main_end = b.add(lo, b.and_(b.sub(hi, lo), _i64(-step)))
        base = cgutils.alloca_once_value(b, self.x)
        accumulators = [cgutils.alloca_once_value(b, _ZERO) for _ in range(ACCUMULATORS)]
        with cgutils.for_range_slice(b, lo, main_end, _i64(step)) as (k, _):
            self.prefetch(k)
            current = b.load(base)
            for number, accumulator in enumerate(accumulators):
                products, current = self.group(b.add(k, _i64(number * GROUP)), current)
                b.store(b.fadd(b.load(accumulator), products, flags=_FLAGS), accumulator)
            b.store(current, base)
        total = b.load(accumulators[0])
        for accumulator in accumulators[1:]:
            total = b.fadd(total, b.load(accumulator), flags=_FLAGS)
        slot = cgutils.alloca_once_value(b, total)
        with cgutils.for_range_slice(b, main_end, hi, _i64(GROUP)) as (k, _):
            products, current = self.group(k, b.load(base))
            b.store(current, base)
            b.store(b.fadd(b.load(slot), products, flags=_FLAGS), slot)
        return self.horizontal_sum(b.load(slot))


def _group_dot(masked: bool):
    @intrinsic
    def group_dot(typingctx, val, offset, x, glo, ghi):
        """Σ val·x[column] over the groups [glo, ghi) of one row of the grouped form (see ``_GroupDot``)."""
        if not (_one_dimensional(val, types.float32) and _one_dimensional(x, types.float32)
                and _one_dimensional(offset, types.uint8)
                and isinstance(glo, types.Integer) and isinstance(ghi, types.Integer)):
            return None
        signature = types.float32(val, offset, x, types.int64, types.int64)

        def codegen(context, builder, signature, args):
            val_type, offset_type, x_type = signature.args[:3]
            emitter = _GroupDot(
                builder,
                context.make_array(val_type)(context, builder, args[0]).data,
                context.make_array(offset_type)(context, builder, args[1]).data,
                context.make_array(x_type)(context, builder, args[2]).data,
                masked,
            )
            return emitter.emit(args[3], args[4])

        return signature, codegen

    return group_dot


group_dot = _group_dot(masked=False)
group_dot_masked = _group_dot(masked=True)

# -- kernels ----------------------------------------------------------------------------------
@njit(parallel=True, nogil=True, cache=True)
def rows_matvec(ptr, col, val, x, y):  # pragma: no cover - compiled
    """y_i = Σ val·x[col] over row i (``row_dot`` sets its own fast-math flags).

    No separate one-thread loop: entering the parallel region with one thread costs ~1 µs a call,
    but asking numba for its thread count from Python costs ~0.5 µs, so a plain loop chosen per
    call saved ~0.5 µs (2% on 2048×1024 at 95% sparsity) and cost as much with 2 threads.
    """
    for i in prange(y.shape[0]):
        y[i] = row_dot(val, col, x, ptr[i], ptr[i + 1])


@njit(parallel=True, nogil=True, cache=True, fastmath=FASTMATH)
def rows_matmul(ptr, col, val, X, Y):  # pragma: no cover - compiled
    batch = X.shape[1]
    for i in prange(Y.shape[0]):
        y = Y[i]
        for b in range(batch):
            y[b] = 0.0
        for k in range(ptr[i], ptr[i + 1]):
            v = val[k]
            xr = X[np.int64(col[k])]
            for b in range(batch):
                y[b] += v * xr[b]


@njit(parallel=True, nogil=True, cache=True, fastmath=FASTMATH)
def signed_matvec(ptr, split, col, scale, x, y):  # pragma: no cover - compiled
    """y_i = a_i·(Σ x over the row's positive positions − Σ x over its negative ones): additions only."""
    for i in prange(y.shape[0]):
        positive = col[ptr[i] : split[i]]
        negative = col[split[i] : ptr[i + 1]]
        plus = np.float32(0.0)
        for k in range(positive.shape[0]):
            plus += x[np.int64(positive[k])]
        minus = np.float32(0.0)
        for k in range(negative.shape[0]):
            minus += x[np.int64(negative[k])]
        y[i] = scale[i] * (plus - minus)


@njit(parallel=True, nogil=True, cache=True, fastmath=FASTMATH)
def signed_matmul(ptr, split, col, scale, X, Y):  # pragma: no cover - compiled
    batch = X.shape[1]
    for i in prange(Y.shape[0]):
        y = Y[i]
        for b in range(batch):
            y[b] = 0.0
        for k in range(ptr[i], split[i]):
            xr = X[np.int64(col[k])]
            for b in range(batch):
                y[b] += xr[b]
        for k in range(split[i], ptr[i + 1]):
            xr = X[np.int64(col[k])]
            for b in range(batch):
                y[b] -= xr[b]
        a = scale[i]
        for b in range(batch):
            y[b] *= a


@njit(fastmath=FASTMATH, nogil=True, cache=True)
def _all_finite(x):  # pragma: no cover - compiled
    """True when no element of ``x`` is Inf or NaN (0·x is NaN exactly there; a vectorized sum, no branch)."""
    total = np.float32(0.0)
    for j in range(x.shape[0]):
        total += x[j] * np.float32(0.0)
    return total == 0.0


@njit(parallel=True, nogil=True, cache=True)
def grouped_matvec(ptr, offset, val, x, y):  # pragma: no cover - compiled
    """y_i = Σ val·x[column] over row i of the grouped form; the masked row loop when ``x`` holds Inf/NaN."""
    if _all_finite(x):
        for i in prange(y.shape[0]):
            y[i] = group_dot(val, offset, x, ptr[i], ptr[i + 1])
    else:
        for i in prange(y.shape[0]):
            y[i] = group_dot_masked(val, offset, x, ptr[i], ptr[i + 1])


@njit(parallel=True, nogil=True, cache=True, fastmath=FASTMATH)
def grouped_matmul(ptr, offset, val, X, Y):  # pragma: no cover - compiled
    """Y_i = Σ val·X[column] over row i of the grouped form, skipping its zero-valued padding and fillers."""
    batch = X.shape[1]
    for i in prange(Y.shape[0]):
        y = Y[i]
        for b in range(batch):
            y[b] = 0.0
        base = np.int64(0)
        for g in range(ptr[i], ptr[i + 1]):
            k = GROUP * g
            for j in range(GROUP):
                v = val[k + j]
                if v != 0.0:
                    xr = X[base + np.int64(offset[k + j])]
                    for b in range(batch):
                        y[b] += v * xr[b]
            base += np.int64(offset[k + GROUP - 1])

"""Numba kernels for ``quant`` and the code forms that share its layout (imported lazily by
:mod:`bie_cli.kernels.quant`).

Every kernel is ``parallel=True`` over rows with ``prange``; each output row is
written by exactly one iteration, so there are no races. ``fastmath`` is
limited to reassociation and contraction (what vectorized reductions need);
NaN/Inf keep IEEE semantics.

Block layout (``QuantMatrix.blocked``, the usual case): each row is blocks of
32 weights. A 4-bit block is 16 bytes, byte ``k`` holding weight ``k`` (low
nibble) and weight ``16 + k`` (high nibble), so the two halves of a block are
one ``and`` and one shift away from 16 codes each, in weight order (ggml's
Q4_0 order). A 5-8-bit block is 32 ``int8`` codes ``code − zero``. Rows are
padded with zero-weight codes to whole blocks. The row loops are LLVM IR
written here (numba ``@intrinsic``), because what LLVM's vectorizer makes of
the same loop in Python (int64 promotion, byte inserts) ran 5x slower:

* ``int8`` activations (the default): ``x`` is quantized once a call per
  block of 32, ``d_b = max|x_b|/127``, ``xq = rint(x/d_b)`` (llama.cpp's
  Q8_0). Per block the integer dot ``Σ code·xq`` is
  ``pmaddubsw`` (unsigned 4-bit codes × signed ``xq``, 16 bit pair sums, no
  saturation possible: 2·15·127 < 2^15) then ``pmaddwd`` by ones (8-bit codes:
  ``pmaddwd`` of the sign-extended codes and ``xq``), converted to float32
  and multiply-added with ``scale·d_b``. The 4-bit codes are stored without
  their zero; ``zero·Σxq`` per block (computed once a call) is taken off with
  one scalar multiply-add a block.
* ``float32`` activations (exact, and whenever ``x`` holds NaN/Inf): each
  code is converted to float32 and multiply-added with ``x``.

The x86 instructions are named only when the compiling target has AVX2
(numba's target features, which follow ``NUMBA_CPU_NAME``/``NUMBA_CPU_FEATURES``;
numba caches per CPU, so a cache built for one CPU is not used on another);
elsewhere the same arithmetic is written as target-independent vector IR.

Other groupings (groups that are not a multiple of 32 and not a whole row)
keep the pair layout: codes two a byte in column order, ``x`` split into
even and odd positions, exact float32 arithmetic.

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

#: weights a block: one scale of the activations, one 32-byte load of their int8 codes
BLOCK = 32
_FLAGS = tuple(sorted(FASTMATH))
_I8, _I16, _I32, _I64, _F32 = ir.IntType(8), ir.IntType(16), ir.IntType(32), ir.IntType(64), ir.FloatType()


def _vector(element, count: int) -> ir.VectorType:
    return ir.VectorType(element, count)


def _i64(value: int) -> ir.Constant:
    return ir.Constant(_I64, value)


def _lanes(indices) -> ir.Constant:
    indices = list(indices)
    return ir.Constant(_vector(_I32, len(indices)), indices)


def _splat(b: ir.IRBuilder, value, count: int):
    undefined = ir.Constant(_vector(value.type, count), ir.Undefined)
    return b.shuffle_vector(b.insert_element(undefined, value, ir.Constant(_I32, 0)), undefined, _lanes([0] * count))


def _load(b: ir.IRBuilder, pointer, index, vector_type, align: int):
    return b.load(b.bitcast(b.gep(pointer, [index]), vector_type.as_pointer()), align=align)


def _part(b: ir.IRBuilder, vector, start: int, count: int):
    return b.shuffle_vector(vector, vector, _lanes(range(start, start + count)))


def _sum_to_8(b: ir.IRBuilder, vector, count: int, add):
    """Lanes of a ``count``-vector added 8 apart down to 8 lanes (any order: integer or reassociable sums)."""
    while count > 8:
        count //= 2
        vector = add(_part(b, vector, 0, count), _part(b, vector, count, count))
    return vector


def _horizontal_sum(b: ir.IRBuilder, vector, count: int):
    while count > 1:
        count //= 2
        vector = b.fadd(_part(b, vector, 0, count), _part(b, vector, count, count), flags=_FLAGS)
    return b.extract_element(vector, ir.Constant(_I32, 0))


class _BlockRow:
    """Emits one row's ``Σ_b scale[g(b)]·(block b's contribution)`` over ``blocks`` blocks.

    Two vector accumulators (blocks alternate between them, so consecutive
    blocks do not wait on one add chain); the group of a block is tracked with
    a counter, not a division.
    """

    def __init__(self, context, builder: ir.IRBuilder, codes_type, codes, scale, blocks_per_group, blocks):
        self.b = builder
        self.codes = codes
        self.scale = scale
        self.nibbles = codes_type.dtype == types.uint8
        self.blocks_per_group = blocks_per_group
        self.blocks = blocks
        self.avx2 = "+avx2" in context.codegen()._tm_features.split(",")

    def codes_of(self, block):
        """Block ``block``'s 32 codes as ``<32 x i8>`` in weight order (4-bit: unsigned 0..15)."""
        b = self.b
        if not self.nibbles:
            return _load(b, self.codes, b.mul(block, _i64(BLOCK)), _vector(_I8, BLOCK), 1)
        packed = _load(b, self.codes, b.mul(block, _i64(BLOCK // 2)), _vector(_I8, BLOCK // 2), 1)
        low = b.and_(packed, ir.Constant(_vector(_I8, BLOCK // 2), [15] * (BLOCK // 2)))
        high = b.lshr(packed, ir.Constant(_vector(_I8, BLOCK // 2), [4] * (BLOCK // 2)))
        return b.shuffle_vector(low, high, _lanes(range(BLOCK)))

    def emit(self, contribution):
        """``contribution(block, scale) -> <8 x float>``, summed over the row's blocks."""
        b = self.b
        zero = ir.Constant(_vector(_F32, 8), [0.0] * 8)
        accumulators = [cgutils.alloca_once_value(b, zero) for _ in range(2)]
        group = cgutils.alloca_once_value(b, _i64(0))
        in_group = cgutils.alloca_once_value(b, _i64(0))

        def one(block, accumulator):
            g = b.load(group)
            value = contribution(block, b.load(b.gep(self.scale, [g])))
            b.store(b.fadd(b.load(accumulator), value, flags=_FLAGS), accumulator)
            count = b.add(b.load(in_group), _i64(1))
            done = b.icmp_signed("==", count, self.blocks_per_group)
            b.store(b.select(done, _i64(0), count), in_group)
            b.store(b.select(done, b.add(g, _i64(1)), g), group)

        pairs_end = b.and_(self.blocks, _i64(-2))
        with cgutils.for_range_slice(b, _i64(0), pairs_end, _i64(2)) as (block, _):
            one(block, accumulators[0])
            one(b.add(block, _i64(1)), accumulators[1])
        with b.if_then(b.icmp_signed("<", pairs_end, self.blocks)):
            one(pairs_end, accumulators[0])
        total = b.fadd(b.load(accumulators[0]), b.load(accumulators[1]), flags=_FLAGS)
        return _horizontal_sum(b, total, 8)

    def integer_dot(self, codes, xq):
        """``Σ codes·xq`` of one block as ``<8 x i32>`` partial sums (exact integers)."""
        b = self.b
        if self.avx2 and self.nibbles:  # unsigned codes x signed xq, pairs summed to i16, then to i32
            pmaddubsw = b.module.declare_intrinsic(
                "llvm.x86.avx2.pmadd.ub.sw", fnty=ir.FunctionType(_vector(_I16, 16), [_vector(_I8, 32)] * 2))
            pairs = b.call(pmaddubsw, [codes, xq])
            return b.call(self._pmaddwd(), [pairs, ir.Constant(_vector(_I16, 16), [1] * 16)])
        wide = b.zext(codes, _vector(_I16, BLOCK)) if self.nibbles else b.sext(codes, _vector(_I16, BLOCK))
        xq = b.sext(xq, _vector(_I16, BLOCK))
        if self.avx2:
            halves = [b.call(self._pmaddwd(), [_part(b, wide, h, 16), _part(b, xq, h, 16)]) for h in (0, 16)]
            return b.add(halves[0], halves[1])
        products = b.mul(b.sext(wide, _vector(_I32, BLOCK)), b.sext(xq, _vector(_I32, BLOCK)))
        return _sum_to_8(b, products, BLOCK, b.add)

    def _pmaddwd(self):
        return self.b.module.declare_intrinsic(
            "llvm.x86.avx2.pmadd.wd", fnty=ir.FunctionType(_vector(_I32, 8), [_vector(_I16, 16)] * 2))


def _c_array(array, dtype=None) -> bool:
    return (isinstance(array, types.Array) and array.ndim == 1 and array.layout == "C"
            and (dtype is None or array.dtype == dtype))


def _codes_ok(codes) -> bool:
    return _c_array(codes) and codes.dtype in (types.uint8, types.int8)


@intrinsic
def int8_row_dot(typingctx, codes, scale, xq, xd, xz, zero, blocks_per_group, blocks):
    """One row with int8 activations: Σ_b scale[g(b)]·xd[b]·(Σ code·xq − zero·xz[b]).

    ``codes``: the row's blocks (``uint8``: 4-bit pairs, ``int8``: centred
    bytes, for which ``zero`` is ignored); ``xq`` int8 codes, ``xd`` float32
    block scales and ``xz`` int32 ``Σxq``, one per block. The zero is taken off
    each block's integer sum, so the float sum never cancels large terms.
    """
    if not (_codes_ok(codes) and _c_array(scale, types.float32) and _c_array(xq, types.int8)
            and _c_array(xd, types.float32) and _c_array(xz, types.int32)):
        return None
    signature = types.float32(codes, scale, xq, xd, xz, types.int64, types.int64, types.int64)

    def codegen(context, builder, signature, args):
        data = [context.make_array(t)(context, builder, a).data for t, a in zip(signature.args[:5], args[:5], strict=True)]
        codes_ptr, scale_ptr, xq_ptr, xd_ptr, xz_ptr = data
        row = _BlockRow(context, builder, signature.args[0], codes_ptr, scale_ptr, args[6], args[7])
        b = builder
        zero = b.trunc(args[5], _I32)
        no_lanes = ir.Constant(_vector(_I32, 8), [0] * 8)

        def contribution(block, scale):
            xq = _load(b, xq_ptr, b.mul(block, _i64(BLOCK)), _vector(_I8, BLOCK), 1)
            dot = row.integer_dot(row.codes_of(block), xq)
            if row.nibbles:  # Σ (code - zero)·xq = Σ code·xq - zero·Σxq, taken off one lane
                taken = b.mul(zero, b.load(b.gep(xz_ptr, [block])))
                dot = b.sub(dot, b.insert_element(no_lanes, taken, ir.Constant(_I32, 0)))
            weight = b.fmul(scale, b.load(b.gep(xd_ptr, [block])), flags=_FLAGS)
            return b.fmul(b.sitofp(dot, _vector(_F32, 8)), _splat(b, weight, 8), flags=_FLAGS)

        return row.emit(contribution)

    return signature, codegen


@intrinsic
def float_row_dot(typingctx, codes, scale, x, zero, blocks_per_group, blocks):
    """One row with float32 activations: Σ_b scale[g(b)]·Σ (code − zero)·x over block b (exact float32 math)."""
    if not (_codes_ok(codes) and _c_array(scale, types.float32) and _c_array(x, types.float32)):
        return None
    signature = types.float32(codes, scale, x, types.int64, types.int64, types.int64)

    def codegen(context, builder, signature, args):
        data = [context.make_array(t)(context, builder, a).data for t, a in zip(signature.args[:3], args[:3], strict=True)]
        codes_ptr, scale_ptr, x_ptr = data
        row = _BlockRow(context, builder, signature.args[0], codes_ptr, scale_ptr, args[4], args[5])
        b = builder
        zero = _splat(b, b.trunc(args[3], _I8), BLOCK)

        def contribution(block, scale):
            codes = row.codes_of(block)
            if row.nibbles:
                codes = b.sub(codes, zero)
            weights = b.sitofp(codes, _vector(_F32, BLOCK))
            x = _load(b, x_ptr, b.mul(block, _i64(BLOCK)), _vector(_F32, BLOCK), 4)
            partial = _sum_to_8(b, b.fmul(weights, x, flags=_FLAGS), BLOCK,
                                lambda p, q: b.fadd(p, q, flags=_FLAGS))
            return b.fmul(partial, _splat(b, scale, 8), flags=_FLAGS)

        return row.emit(contribution)

    return signature, codegen


# -- block-layout kernels ------------------------------------------------------------------------
@njit(nogil=True, cache=True, fastmath=FASTMATH)
def prepare_activations(XT, blocks, group_size, groups, quantize, affine):  # pragma: no cover - compiled
    """Per column of ``XT`` (``[batch, cols]``): zero-padded copy, group sums, and int8 codes.

    Returns ``(padded, sums, xq, xd, xz, quantized)``: ``xq = rint(x/xd)`` per
    block with ``xd = max|x|/127`` and ``xz = Σ xq``. ``quantized`` is False
    when ``quantize`` is False or some x is NaN/Inf (then the float32 kernel runs).
    """
    batch, cols = XT.shape
    width = blocks * BLOCK
    padded = np.zeros((batch, width), dtype=np.float32)
    sums = np.zeros((batch, groups if affine else 0), dtype=np.float32)
    xq = np.zeros((batch, width if quantize else 0), dtype=np.int8)
    xd = np.zeros((batch, blocks if quantize else 0), dtype=np.float32)
    xz = np.zeros((batch, blocks if quantize else 0), dtype=np.int32)
    finite = True
    for n in range(batch):
        padded[n, :cols] = XT[n]
        row = padded[n]
        if affine:
            for g in range(groups):
                total = np.float32(0.0)
                for x in row[g * group_size : min((g + 1) * group_size, width)]:
                    total += x
                sums[n, g] = total
        if not quantize:
            continue
        for block in range(blocks):
            values = row[block * BLOCK : (block + 1) * BLOCK]
            largest = np.float32(0.0)
            for x in values:
                largest = max(largest, abs(x))
            if not np.isfinite(largest):
                finite = False
            step = largest / np.float32(127.0)
            inverse = np.float32(1.0) / step if step > 0 else np.float32(0.0)
            codes = xq[n, block * BLOCK : (block + 1) * BLOCK]
            count = 0
            for k in range(BLOCK):
                q = np.int8(min(max(np.rint(values[k] * inverse), -127.0), 127.0)) if finite else np.int8(0)
                codes[k] = q
                count += q
            xd[n, block] = step
            xz[n, block] = count
    return padded, sums, xq, xd, xz, quantize and finite


@njit(parallel=True, nogil=True, cache=True, fastmath=FASTMATH)
def blocked_matmul(codes, zero, scale, offset, blocks_per_group, padded, sums, xq, xd, xz, quantized,
                   fix_ptr, fix_col, fix_delta, Y):  # pragma: no cover - compiled
    """``Y[i, n] = Σ ŵ_ij·x_nj`` for the block layout; ``padded``/``xq`` are the activations a column a row."""
    rows, batch = Y.shape
    blocks = padded.shape[1] // BLOCK
    affine = offset.shape[0] > 0
    for i in prange(rows):
        row = codes[i]
        row_scale = scale[i]
        for n in range(batch):
            if quantized:
                total = int8_row_dot(row, row_scale, xq[n], xd[n], xz[n], zero, blocks_per_group, blocks)
            else:
                total = float_row_dot(row, row_scale, padded[n], zero, blocks_per_group, blocks)
            if affine:
                row_offset = offset[i]
                group_sums = sums[n]
                for g in range(row_offset.shape[0]):
                    total += row_offset[g] * group_sums[g]
            for k in range(fix_ptr[i], fix_ptr[i + 1]):
                total += fix_delta[k] * padded[n, fix_col[k]]
            Y[i, n] = total


# -- pair layout (groups that are not whole blocks) ---------------------------------------------
@njit(nogil=True, cache=True)
def group_sums(x, group_size, groups):  # pragma: no cover - compiled
    """Σ x over each group of ``group_size`` elements (the last may be shorter)."""
    sums = np.zeros(groups, dtype=np.float32)
    n = x.shape[0]
    for g in range(groups):
        start = g * group_size
        stop = min(start + group_size, n)
        total = np.float32(0.0)
        for j in range(start, stop):
            total += x[j]
        sums[g] = total
    return sums


@njit(nogil=True, cache=True)
def split_pairs(x, group_size, groups):  # pragma: no cover - compiled
    """x at even and at odd positions (odd one zero-padded), and the group sums."""
    n = x.shape[0]
    half = (n + 1) // 2
    even = np.zeros(half, dtype=np.float32)
    odd = np.zeros(half, dtype=np.float32)
    for k in range(n // 2):
        even[k] = x[2 * k]
        odd[k] = x[2 * k + 1]
    if n & 1:
        even[half - 1] = x[n - 1]
    return even, odd, group_sums(x, group_size, groups)


@njit(parallel=True, nogil=True, cache=True, fastmath=FASTMATH)
def matvec_nibbles(codes, zero, scale, offset, group_bytes, x_even, x_odd, x_sums,
                   fix_ptr, fix_col, fix_delta, x, y):  # pragma: no cover - compiled
    rows, row_bytes = codes.shape
    groups = scale.shape[1]
    affine = offset.shape[0] > 0
    for i in prange(rows):
        row = codes[i]
        total = np.float32(0.0)
        for g in range(groups):
            start = g * group_bytes
            stop = min(start + group_bytes, row_bytes)
            c = row[start:stop]
            e = x_even[start:stop]
            o = x_odd[start:stop]
            acc = np.float32(0.0)
            for k in range(c.shape[0]):
                v = np.int32(c[k])
                acc += np.float32((v & 15) - zero) * e[k] + np.float32((v >> 4) - zero) * o[k]
            total += scale[i, g] * acc
            if affine:
                total += offset[i, g] * x_sums[g]
        for k in range(fix_ptr[i], fix_ptr[i + 1]):
            total += fix_delta[k] * x[fix_col[k]]
        y[i] = total


@njit(parallel=True, nogil=True, cache=True, fastmath=FASTMATH)
def matvec_bytes(codes, scale, offset, group_size, x_sums,
                 fix_ptr, fix_col, fix_delta, x, y):  # pragma: no cover - compiled
    rows, cols = codes.shape
    groups = scale.shape[1]
    affine = offset.shape[0] > 0
    for i in prange(rows):
        row = codes[i]
        total = np.float32(0.0)
        for g in range(groups):
            start = g * group_size
            stop = min(start + group_size, cols)
            c = row[start:stop]
            xs = x[start:stop]
            acc = np.float32(0.0)
            for k in range(c.shape[0]):
                acc += np.float32(c[k]) * xs[k]
            total += scale[i, g] * acc
            if affine:
                total += offset[i, g] * x_sums[g]
        for k in range(fix_ptr[i], fix_ptr[i + 1]):
            total += fix_delta[k] * x[fix_col[k]]
        y[i] = total


@njit(nogil=True, cache=True, fastmath=FASTMATH)
def _dequantize_row(codes, nibbles, blocked, zero, scale, offset, group_size, out):  # pragma: no cover - compiled
    """ŵ of one row into ``out`` (at least cols wide; the padding past cols is not meaningful)."""
    groups = scale.shape[0]
    cols = out.shape[0]
    for g in range(groups):
        start = g * group_size
        stop = min(start + group_size, cols)
        s = scale[g]
        o = offset[g] if offset.shape[0] > 0 else np.float32(0.0)
        if nibbles and blocked:  # groups are whole blocks: 16 bytes a block, weights k and 16 + k
            for block in range(start // 32, (stop + 31) // 32):
                c = codes[block * 16 : block * 16 + 16]
                w = out[block * 32 : block * 32 + 32]
                for k in range(16):
                    v = np.int32(c[k])
                    w[k] = np.float32((v & 15) - zero) * s + o
                    w[16 + k] = np.float32((v >> 4) - zero) * s + o
        elif nibbles:
            c = codes[start // 2 : (stop + 1) // 2]
            w = out[start : start + 2 * c.shape[0]]
            for k in range(c.shape[0]):
                v = np.int32(c[k])
                w[2 * k] = np.float32((v & 15) - zero) * s + o
                w[2 * k + 1] = np.float32((v >> 4) - zero) * s + o
        else:
            c = codes[start:stop]
            w = out[start:stop]
            for j in range(c.shape[0]):
                w[j] = np.float32(c[j]) * s + o


@njit(nogil=True, cache=True, fastmath=FASTMATH)
def dequantize_rows(codes, nibbles, blocked, zero, scale, offset, group_size,
                    fix_ptr, fix_col, fix_delta, start, out):  # pragma: no cover - compiled
    """Rows ``start : start + len(out)`` of Ŵ into ``out`` (at least cols wide).

    Deliberately not parallel: it alternates with BLAS calls, and two thread
    pools that spin-wait (numba's OpenMP workers, OpenBLAS's) handing the cores
    back and forth measured 20-100x slower on 2 cores than this serial loop
    plus a multi-threaded sgemm.
    """
    affine = offset.shape[0] > 0
    no_offset = np.zeros(0, dtype=np.float32)
    for r in range(out.shape[0]):
        i = start + r
        _dequantize_row(codes[i], nibbles, blocked, zero, scale[i], offset[i] if affine else no_offset, group_size,
                        out[r])
        for k in range(fix_ptr[i], fix_ptr[i + 1]):
            out[r, fix_col[k]] += fix_delta[k]

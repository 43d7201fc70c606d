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

Several rows are computed together: they share each block's activation loads
and scalars, and their sums are independent add chains. At batch 1 with int8
activations it is four rows an iteration (``int8_quad``), with a software
prefetch of the same block in the next four rows: a 4-bit row of 4096 weights
is only 2 KiB, 32 cache lines, and the hardware prefetchers restart on every
such short stream (four rows and the prefetch together cut the 4-bit matvec's
CPU time on 11008x4096 by 1.5-2x, docs/kernels.md). Otherwise two rows × up to
4 columns. With int8 activations, 4-bit rows go two blocks an iteration
(``_paired_nibble_rows``): one 32-byte load, ``and``/shift, no lane-crossing
insert, against activations stored in the matching order. Groups are
32·2^k weights (the group of block ``b`` is ``b >> k``) or a whole row;
other groupings keep the pair layout: codes two a byte in column order, ``x`` split into
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


class _RowPair:
    """Emits ``Σ_b scale[b >> group_shift]·(block b's contribution)`` for two (or more) rows at once.

    The rows share each block's activation loads and scalars (and the
    loop), and their sums are independent add chains. The group of block
    ``b`` is ``b >> group_shift``: groups are a power-of-two number of blocks,
    or the whole row (a shift of 62).
    """

    def __init__(self, context, builder: ir.IRBuilder, codes_type, codes, scales, group_shift, blocks,
                 prefetch=None):
        self.b = builder
        self.codes = codes
        self.scales = scales
        self.nibbles = codes_type.dtype == types.uint8
        self.group_shift = group_shift
        self.blocks = blocks
        self.prefetch = prefetch or []
        self.avx2 = "+avx2" in context.codegen()._tm_features.split(",")

    def codes_of(self, row: int, block):
        """Block ``block``'s 32 codes of row ``row`` as ``<32 x i8>`` in weight order (4-bit: unsigned 0..15)."""
        return self.codes_at(self.codes[row], block)

    def codes_at(self, pointer, block):
        """``codes_of`` for a row given by its pointer."""
        b = self.b
        if not self.nibbles:
            return _load(b, pointer, b.mul(block, _i64(BLOCK)), _vector(_I8, BLOCK), 1)
        packed = _load(b, pointer, b.mul(block, _i64(BLOCK // 2)), _vector(_I8, BLOCK // 2), 1)
        both = b.shuffle_vector(packed, b.lshr(packed, ir.Constant(_vector(_I8, BLOCK // 2), [4] * (BLOCK // 2))),
                                _lanes(range(BLOCK)))
        return b.and_(both, ir.Constant(_vector(_I8, BLOCK), [15] * BLOCK))

    def emit(self, columns: int, shared, contribution):
        """For each block: ``shared(block, column)`` once a column, the two rows' codes once, then
        ``contribution(codes, scale, shared) -> <8 x float>`` for each row and column; returns the
        sums, rows major (row 0's columns, then row 1's)."""
        b = self.b
        zero = ir.Constant(_vector(_F32, 8), [0.0] * 8)
        accumulators = [[cgutils.alloca_once_value(b, zero) for _ in range(columns)] for _ in self.codes]
        with cgutils.for_range(b, self.blocks) as loop:
            block = loop.index
            group = b.ashr(block, self.group_shift)
            self.emit_prefetch(block)
            common = [shared(block, column) for column in range(columns)]
            for row, row_accumulators in enumerate(accumulators):
                codes = self.codes_of(row, block)
                scale = b.load(b.gep(self.scales[row], [group]))
                for column, accumulator in enumerate(row_accumulators):
                    value = contribution(codes, scale, common[column])
                    b.store(b.fadd(b.load(accumulator), value, flags=_FLAGS), accumulator)
        return [_horizontal_sum(b, b.load(a), 8) for row_accumulators in accumulators for a in row_accumulators]

    def emit_prefetch(self, block, width=None):
        """Software prefetch of the same block (of ``width`` bytes a row) in the rows the next
        iteration reads (the hardware prefetchers lose time on every row's short stream)."""
        b = self.b
        if not self.prefetch:
            return
        prefetch = b.module.declare_intrinsic(
            "llvm.prefetch", fnty=ir.FunctionType(ir.VoidType(), [_I8.as_pointer(), _I32, _I32, _I32]))
        width = width or (BLOCK // 2 if self.nibbles else BLOCK)
        for pointer in self.prefetch:
            address = b.bitcast(b.gep(pointer, [b.mul(block, _i64(width))]), _I8.as_pointer())
            b.call(prefetch, [address, ir.Constant(_I32, 0), ir.Constant(_I32, 3), ir.Constant(_I32, 1)])

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

    def paired_dot(self, low, low_x, high, high_x):
        """``<8 x i32>``: lanes 0-3 sum to ``Σ code·xq`` of the first block, lanes 4-7 of the second,
        for unsigned 4-bit ``low``/``high`` halves (``<32 x i8>``: 16 weights of each block) and
        the matching signed activations."""
        b = self.b
        if self.avx2:
            pmaddubsw = b.module.declare_intrinsic(
                "llvm.x86.avx2.pmadd.ub.sw", fnty=ir.FunctionType(_vector(_I16, 16), [_vector(_I8, 32)] * 2))
            pairs = b.add(b.call(pmaddubsw, [low, low_x]), b.call(pmaddubsw, [high, high_x]))
            return b.call(self._pmaddwd(), [pairs, ir.Constant(_vector(_I16, 16), [1] * 16)])
        wide = _vector(_I32, BLOCK)
        products = b.add(b.mul(b.zext(low, wide), b.sext(low_x, wide)), b.mul(b.zext(high, wide), b.sext(high_x, wide)))
        halves = []
        for start in (0, 16):  # each block's 16 lanes summed to 4, kept apart
            half = _part(b, products, start, 16)
            for count in (8, 4):
                half = b.add(_part(b, half, 0, count), _part(b, half, count, count))
            halves.append(half)
        return b.shuffle_vector(halves[0], halves[1], _lanes(range(8)))

    def _pmaddwd(self):
        return self.b.module.declare_intrinsic(
            "llvm.x86.avx2.pmadd.wd", fnty=ir.FunctionType(_vector(_I32, 8), [_vector(_I16, 16)] * 2))


def _c_array(array, dtype=None) -> bool:
    return (isinstance(array, types.Array) and array.ndim == 1 and array.layout == "C"
            and (dtype is None or array.dtype == dtype))


def _codes_ok(first, second) -> bool:
    return _c_array(first) and first.dtype in (types.uint8, types.int8) and second == first


def _c_matrix(array, dtype) -> bool:
    return isinstance(array, types.Array) and array.ndim == 2 and array.layout == "C" and array.dtype == dtype


def _data(context, builder, signature, args, count: int) -> list:
    return [context.make_array(t)(context, builder, a).data
            for t, a in zip(signature.args[:count], args[:count], strict=True)]


def _row_tile(columns: int):
    """The ``int8`` and ``float32`` intrinsics for two rows × ``columns`` columns of activations."""

    @intrinsic
    def int8_tile(typingctx, codes_a, codes_b, scale_a, scale_b, xq, xd, xz, xs, xt, column, zero, group_shift,
                  blocks):
        """Two rows × ``columns`` columns from ``column`` on, int8 activations: per row and column
        Σ_b scale[g(b)]·xd[b]·(Σ code·xq − zero·xz[b]).

        ``codes``: a row's blocks (``uint8``: 4-bit pairs, ``int8``: centred
        bytes, for which ``zero`` is ignored); ``xq`` int8 codes ``[batch, blocks·32]``,
        ``xd`` float32 block scales and ``xz`` int32 ``Σxq``, ``[batch, blocks]``;
        for 4-bit codes ``xs``/``xt`` are ``d`` and ``zero·Σxq`` per pair of blocks
        as the two-block kernel uses them (``prepare_activations(paired=True)``).
        The zero is taken off each block's integer sum, so the float sums never
        cancel large terms.
        """
        if not (_codes_ok(codes_a, codes_b) and _c_array(scale_a, types.float32) and scale_b == scale_a
                and _c_matrix(xq, types.int8) and _c_matrix(xd, types.float32) and _c_matrix(xz, types.int32)
                and _c_matrix(xs, types.float32) and _c_matrix(xt, types.int32)):
            return None
        signature = types.UniTuple(types.float32, 2 * columns)(
            codes_a, codes_b, scale_a, scale_b, xq, xd, xz, xs, xt, types.int64, types.int64, types.int64,
            types.int64)

        def codegen(context, builder, signature, args):
            codes_a, codes_b, scale_a, scale_b, xq_ptr, xd_ptr, xz_ptr, xs_ptr, xt_ptr = _data(
                context, builder, signature, args, 9)
            column, zero, group_shift, blocks = args[9:]
            rows = _RowPair(context, builder, signature.args[0], (codes_a, codes_b), (scale_a, scale_b),
                            group_shift, blocks)
            b = builder
            zero = b.trunc(zero, _I32)
            no_lanes = ir.Constant(_vector(_I32, 8), [0] * 8)

            def shared(block, offset):
                n = b.add(column, _i64(offset))
                index = b.add(b.mul(n, blocks), block)
                xq = _load(b, xq_ptr, b.mul(index, _i64(BLOCK)), _vector(_I8, BLOCK), 1)
                taken = None
                if rows.nibbles:  # Σ (code - zero)·xq = Σ code·xq - zero·Σxq, taken off one lane
                    taken = b.insert_element(no_lanes, b.mul(zero, b.load(b.gep(xz_ptr, [index]))),
                                             ir.Constant(_I32, 0))
                return xq, taken, b.load(b.gep(xd_ptr, [index]))

            def contribution(codes, scale, common):
                xq, taken, step = common
                dot = rows.integer_dot(codes, xq)
                if taken is not None:
                    dot = b.sub(dot, taken)
                weight = _splat(b, b.fmul(scale, step, flags=_FLAGS), 8)
                return b.fmul(b.sitofp(dot, _vector(_F32, 8)), weight, flags=_FLAGS)

            if rows.nibbles:  # activations in the two-block order (prepare_activations(paired=True))
                sums = _paired_nibble_rows(rows, xq_ptr, xs_ptr, xt_ptr, contribution, shared, columns, column)
            else:
                sums = rows.emit(columns, shared, contribution)
            return context.make_tuple(builder, signature.return_type, sums)

        return signature, codegen

    @intrinsic
    def float_tile(typingctx, codes_a, codes_b, scale_a, scale_b, x, column, zero, group_shift, blocks):
        """Two rows × ``columns`` columns of float32 activations ``x`` (``[batch, blocks·32]``):
        Σ_b scale[g(b)]·Σ (code − zero)·x over block b (float32 math)."""
        if not (_codes_ok(codes_a, codes_b) and _c_array(scale_a, types.float32) and scale_b == scale_a
                and _c_matrix(x, types.float32)):
            return None
        signature = types.UniTuple(types.float32, 2 * columns)(
            codes_a, codes_b, scale_a, scale_b, x, types.int64, types.int64, types.int64, types.int64)

        def codegen(context, builder, signature, args):
            codes_a, codes_b, scale_a, scale_b, x_ptr = _data(context, builder, signature, args, 5)
            column, zero, group_shift, blocks = args[5:]
            rows = _RowPair(context, builder, signature.args[0], (codes_a, codes_b), (scale_a, scale_b),
                            group_shift, blocks)
            b = builder
            zero = _splat(b, b.trunc(zero, _I8), BLOCK)

            def shared(block, offset):
                index = b.add(b.mul(b.add(column, _i64(offset)), blocks), block)
                return _load(b, x_ptr, b.mul(index, _i64(BLOCK)), _vector(_F32, BLOCK), 4)

            def contribution(codes, scale, x):
                if rows.nibbles:
                    codes = b.sub(codes, zero)
                products = b.fmul(b.sitofp(codes, _vector(_F32, BLOCK)), x, flags=_FLAGS)
                partial = _sum_to_8(b, products, BLOCK, lambda p, q: b.fadd(p, q, flags=_FLAGS))
                return b.fmul(partial, _splat(b, scale, 8), flags=_FLAGS)

            return context.make_tuple(builder, signature.return_type, rows.emit(columns, shared, contribution))

        return signature, codegen

    return int8_tile, float_tile


def _row_pointer(context, builder, array_type, array, row):
    """Pointer to ``array[row, 0]`` of a C-contiguous 2-D array (no bounds check)."""
    data = context.make_array(array_type)(context, builder, array)
    stride = cgutils.unpack_tuple(builder, data.strides, 2)[0]
    raw = builder.gep(builder.bitcast(data.data, _I8.as_pointer()), [builder.mul(row, stride)])
    return builder.bitcast(raw, data.data.type)


def _rows_tile(count: int):
    """``count`` rows × 1 column of int8 activations: rows ``first + k`` clamped to ``last``."""

    @intrinsic
    def int8_rows(typingctx, codes, scale, first, last, xq, xd, xz, xs, xt, zero, group_shift, blocks):
        """Rows ``first .. first + count - 1`` (each clamped to ``last``) of the block layout times
        one column of int8 activations (``xq``/``xd``/``xz`` as in ``int8_tile``), with a software
        prefetch of the rows after them."""
        if not (_c_matrix(codes, codes.dtype) and codes.dtype in (types.uint8, types.int8)
                and _c_matrix(scale, types.float32) and _c_matrix(xq, types.int8)
                and _c_matrix(xd, types.float32) and _c_matrix(xz, types.int32)
                and _c_matrix(xs, types.float32) and _c_matrix(xt, types.int32)):
            return None
        signature = types.UniTuple(types.float32, count)(
            codes, scale, types.int64, types.int64, xq, xd, xz, xs, xt, types.int64, types.int64, types.int64)

        def codegen(context, builder, signature, args):
            codes_type, scale_type = signature.args[:2]
            codes, scale, first, last = args[:4]
            xq_ptr, xd_ptr, xz_ptr, xs_ptr, xt_ptr = [context.make_array(t)(context, builder, a).data
                                                      for t, a in zip(signature.args[4:9], args[4:9], strict=True)]
            zero, group_shift, blocks = args[9:]
            b = builder
            indices = []
            for k in range(count):
                row = b.add(first, _i64(k))
                indices.append(b.select(b.icmp_signed(">", row, last), last, row))
            code_rows = [_row_pointer(context, b, codes_type, codes, i) for i in indices]
            scale_rows = [_row_pointer(context, b, scale_type, scale, i) for i in indices]
            ahead = [_row_pointer(context, b, codes_type, codes, b.add(first, _i64(count + k))) for k in range(count)]
            rows = _RowPair(context, b, codes_type, code_rows, scale_rows, group_shift, blocks, prefetch=ahead)
            zero = b.trunc(zero, _I32)
            no_lanes = ir.Constant(_vector(_I32, 8), [0] * 8)

            def shared(block, offset):
                xq = _load(b, xq_ptr, b.mul(block, _i64(BLOCK)), _vector(_I8, BLOCK), 1)
                taken = None
                if rows.nibbles:
                    taken = b.insert_element(no_lanes, b.mul(zero, b.load(b.gep(xz_ptr, [block]))),
                                             ir.Constant(_I32, 0))
                return xq, taken, b.load(b.gep(xd_ptr, [block]))

            def contribution(codes, scale, common):
                xq, taken, step = common
                dot = rows.integer_dot(codes, xq)
                if taken is not None:
                    dot = b.sub(dot, taken)
                weight = _splat(b, b.fmul(scale, step, flags=_FLAGS), 8)
                return b.fmul(b.sitofp(dot, _vector(_F32, 8)), weight, flags=_FLAGS)

            if not rows.nibbles:
                return context.make_tuple(builder, signature.return_type, rows.emit(1, shared, contribution))
            sums = _paired_nibble_rows(rows, xq_ptr, xs_ptr, xt_ptr, contribution, shared)
            return context.make_tuple(builder, signature.return_type, sums)

        return signature, codegen

    return int8_rows


def _pair_splat(b: ir.IRBuilder, first, second):
    """``<8 x T>``: ``first`` in lanes 0-3, ``second`` in lanes 4-7."""
    undefined = ir.Constant(_vector(first.type, 8), ir.Undefined)
    both = b.insert_element(b.insert_element(undefined, first, ir.Constant(_I32, 0)), second, ir.Constant(_I32, 4))
    return b.shuffle_vector(both, undefined, _lanes([0, 0, 0, 0, 4, 4, 4, 4]))


def _paired_nibble_rows(rows: _RowPair, xq_ptr, xs_ptr, xt_ptr, contribution, shared,
                        columns: int = 1, column=None) -> list:
    """4-bit rows, two blocks an iteration: one 32-byte load of a row gives blocks 2p and 2p+1
    (16 bytes each); ``and 15`` and ``>> 4`` make their low halves (weights 0-15 of each block)
    and high halves (16-31) with no lane crossing, against activations that
    ``prepare_activations(paired=True)`` stored in the same order. The two halves' pair sums
    (``pmaddubsw``) are added as int16 (at most 2·2·15·127 < 2^15) and widened once
    (``pmaddwd``): lanes 0-3 hold block 2p, lanes 4-7 block 2p+1, each scaled by its own
    ``scale·d``. The activations' ``d`` and ``zero·Σxq`` of a pair come as 8-lane vectors
    (``xs``, ``xt``: ``[batch, pairs·8]``), one load each. An odd last block runs the one-block
    code. ``columns`` columns of activations from ``column`` on; sums rows major."""
    b = rows.b
    column = column or _i64(0)
    pairs = b.ashr(rows.blocks, _i64(1))
    zero_vector = ir.Constant(_vector(_F32, 8), [0.0] * 8)
    accumulators = [[cgutils.alloca_once_value(b, zero_vector) for _ in range(columns)] for _ in rows.codes]
    nibble = ir.Constant(_vector(_I8, BLOCK), [15] * BLOCK)
    four = ir.Constant(_vector(_I8, BLOCK), [4] * BLOCK)
    columns_at = [b.add(column, _i64(c)) for c in range(columns)]
    starts = [b.mul(n, rows.blocks) for n in columns_at]  # a column's first block
    pair_starts = [b.mul(n, b.mul(pairs, _i64(8))) for n in columns_at]  # its first lane in xs / xt
    with cgutils.for_range(b, pairs) as loop:
        pair = loop.index
        block = b.mul(pair, _i64(2))
        following = b.add(block, _i64(1))
        rows.emit_prefetch(pair, width=BLOCK)
        common = []
        for start, pair_start in zip(starts, pair_starts, strict=True):
            at = b.mul(b.add(start, block), _i64(BLOCK))
            low_x = _load(b, xq_ptr, at, _vector(_I8, BLOCK), 1)
            high_x = _load(b, xq_ptr, b.add(at, _i64(BLOCK)), _vector(_I8, BLOCK), 1)
            lane = b.add(pair_start, b.mul(pair, _i64(8)))
            steps = _load(b, xs_ptr, lane, _vector(_F32, 8), 4)
            taken = _load(b, xt_ptr, lane, _vector(_I32, 8), 4)
            common.append((low_x, high_x, steps, taken))
        first_group = b.ashr(block, rows.group_shift)
        second_group = b.ashr(following, rows.group_shift)
        for codes, scales, row_accumulators in zip(rows.codes, rows.scales, accumulators, strict=True):
            packed = _load(b, codes, b.mul(pair, _i64(BLOCK)), _vector(_I8, BLOCK), 1)
            low = b.and_(packed, nibble)
            high = b.and_(b.lshr(packed, four), nibble)
            scale = _pair_splat(b, b.load(b.gep(scales, [first_group])), b.load(b.gep(scales, [second_group])))
            for (low_x, high_x, steps, taken), accumulator in zip(common, row_accumulators, strict=True):
                dot = b.sub(rows.paired_dot(low, low_x, high, high_x), taken)
                weight = b.fmul(scale, steps, flags=_FLAGS)
                value = b.fmul(b.sitofp(dot, _vector(_F32, 8)), weight, flags=_FLAGS)
                b.store(b.fadd(b.load(accumulator), value, flags=_FLAGS), accumulator)
    odd = b.icmp_signed("!=", b.and_(rows.blocks, _i64(1)), _i64(0))
    with b.if_then(odd):
        last = b.sub(rows.blocks, _i64(1))
        common = [shared(last, c) for c in range(columns)]
        group = b.ashr(last, rows.group_shift)
        for codes, scales, row_accumulators in zip(rows.codes, rows.scales, accumulators, strict=True):
            unpacked = rows.codes_at(codes, last)
            scale = b.load(b.gep(scales, [group]))
            for shared_values, accumulator in zip(common, row_accumulators, strict=True):
                value = contribution(unpacked, scale, shared_values)
                b.store(b.fadd(b.load(accumulator), value, flags=_FLAGS), accumulator)
    return [_horizontal_sum(b, b.load(a), 8) for row_accumulators in accumulators for a in row_accumulators]


#: rows the batch-1 int8 kernel computes an iteration (they share each block's activations)
ROWS = 4
int8_quad = _rows_tile(ROWS)

#: columns of activations a tile takes at once from batch 2 on (the two rows' codes are decoded
#: once for them; 2 rows x 4 columns of accumulators fit the 16 vector registers of AVX2)
COLUMNS = 4
int8_one, float_one = _row_tile(1)
int8_four, float_four = _row_tile(COLUMNS)


# -- block-layout kernels ------------------------------------------------------------------------
@njit(nogil=True, cache=True, fastmath=FASTMATH, inline="always")
def _group_sums(row, group_size, out):  # pragma: no cover - compiled
    """``out[g] = Σ row`` over group ``g`` (the last group may be shorter)."""
    width = row.shape[0]
    for g in range(out.shape[0]):
        total = np.float32(0.0)
        for x in row[g * group_size : min((g + 1) * group_size, width)]:
            total += x
        out[g] = total


@njit(nogil=True, cache=True, fastmath=FASTMATH, inline="always")
def _quantize_block(values, codes):  # pragma: no cover - compiled
    """One block of activations to int8 ``codes = rint(x/d)``, ``d = max|x|/127``, in loops LLVM
    vectorizes (the max, then the codes and their sum). Returns ``(d, Σ codes)``; ``d`` is NaN/Inf
    when some x is, and ``codes`` are then left as they were."""
    largest = np.float32(0.0)
    for k in range(BLOCK):
        largest = max(largest, abs(values[k]))
    if not np.isfinite(largest):
        return largest, 0
    step = largest / np.float32(127.0)
    inverse = np.float32(1.0) / step if step > 0 else np.float32(0.0)
    count = 0
    for k in range(BLOCK):
        q = np.int32(min(max(np.rint(values[k] * inverse), np.float32(-127.0)), np.float32(127.0)))
        codes[k] = q
        count += q
    return step, count


@njit(nogil=True, cache=True, fastmath=FASTMATH)
def prepare_activations(XT, blocks, group_size, groups, quantize, affine, columns,
                        paired=False, zero=0):  # pragma: no cover - compiled
    """Per column of ``XT`` (``[batch, cols]``): zero-padded copy, group sums, and int8 codes;
    the batch is padded with zero columns to a multiple of ``columns``.

    Returns ``(padded, sums, xq, xd, xz, xs, xt, quantized)``: ``xq = rint(x/xd)`` per
    block with ``xd = max|x|/127`` and ``xz = Σ xq``. ``quantized`` is False
    when ``quantize`` is False or some x is NaN/Inf (then the float32 kernel runs).
    ``paired``: each pair of blocks ``2p, 2p+1`` of ``xq`` is stored as the
    first 16 codes of each, then the last 16 of each (the order in which the
    4-bit batch-1 kernel unpacks two blocks of codes); an odd last block keeps
    its order; ``xs``/``xt`` (``[batch, pairs·8]``, empty unless ``paired``) hold per pair
    ``d`` of its first block in lanes 0-3 and of its second in lanes 4-7, and
    ``zero·Σxq`` of the first block in lane 0 and of the second in lane 4 (other lanes 0).
    """
    batch, cols = XT.shape
    width = blocks * BLOCK
    tiles = (batch + columns - 1) // columns * columns
    padded = np.zeros((tiles, width), dtype=np.float32)
    sums = np.zeros((tiles, groups if affine else 0), dtype=np.float32)
    xq = np.zeros((tiles, width if quantize else 0), dtype=np.int8)
    xd = np.zeros((tiles, blocks if quantize else 0), dtype=np.float32)
    xz = np.zeros((tiles, blocks if quantize else 0), dtype=np.int32)
    lanes = (blocks // 2) * 8 if quantize and paired else 0
    xs = np.zeros((tiles, lanes), dtype=np.float32)
    xt = np.zeros((tiles, lanes), dtype=np.int32)
    finite = True
    for n in range(batch):
        padded[n, :cols] = XT[n]
        row = padded[n]
        if affine:
            _group_sums(row, group_size, sums[n])
        if not quantize:
            continue
        for block in range(blocks):
            step, count = _quantize_block(row[block * BLOCK : (block + 1) * BLOCK], xq[n, block * BLOCK : (block + 1) * BLOCK])
            finite &= np.isfinite(step)
            xd[n, block] = step
            xz[n, block] = count
        if paired:  # (only reached when quantizing)
            scratch = np.empty(2 * BLOCK, dtype=np.int8)
            half = BLOCK // 2
            for pair in range(blocks // 2):
                both = xq[n, 2 * pair * BLOCK : (2 * pair + 2) * BLOCK]
                scratch[:] = both
                both[:half] = scratch[:half]
                both[half:BLOCK] = scratch[BLOCK : BLOCK + half]
                both[BLOCK : BLOCK + half] = scratch[half:BLOCK]
                both[BLOCK + half :] = scratch[BLOCK + half :]
                for k in range(4):
                    xs[n, 8 * pair + k] = xd[n, 2 * pair]
                    xs[n, 8 * pair + 4 + k] = xd[n, 2 * pair + 1]
                xt[n, 8 * pair] = zero * xz[n, 2 * pair]
                xt[n, 8 * pair + 4] = zero * xz[n, 2 * pair + 1]
    return padded, sums, xq, xd, xz, xs, xt, quantize and finite


@njit(nogil=True, cache=True, fastmath=FASTMATH, inline="always")
def _finish(total, i, n, offset, sums, fix_ptr, fix_col, fix_delta, padded):  # pragma: no cover - compiled
    """A row dot plus ``offset·Σx`` per group and the exactly stored elements."""
    if offset.shape[0] > 0:
        row_offset = offset[i]
        group_sums = sums[n]
        for g in range(row_offset.shape[0]):
            total += row_offset[g] * group_sums[g]
    for k in range(fix_ptr[i], fix_ptr[i + 1]):
        total += fix_delta[k] * padded[n, fix_col[k]]
    return total


@njit(parallel=True, nogil=True, cache=True, fastmath=FASTMATH)
def blocked_matmul(codes, zero, scale, offset, group_shift, padded, sums, xq, xd, xz, xs, xt, quantized,
                   fix_ptr, fix_col, fix_delta, Y):  # pragma: no cover - compiled
    """``Y[i, n] = Σ ŵ_ij·x_nj`` for the block layout; ``padded``/``xq`` hold the activations a
    column a row. Batch 1 with int8 activations: four rows an iteration (rows past the end are
    clamped to the last row and their sums dropped). Otherwise two rows an iteration (an odd
    last row is computed twice, by one iteration) and ``COLUMNS`` columns a tile; with int8
    activations the columns past the last whole tile run one at a time (the activation arrays
    are padded to a whole tile, but padded columns are never computed)."""
    rows, batch = Y.shape
    blocks = padded.shape[1] // BLOCK
    if batch == 1 and quantized:
        for quad in prange((rows + ROWS - 1) // ROWS):
            first = quad * ROWS
            tile = int8_quad(codes, scale, first, rows - 1, xq, xd, xz, xs, xt, zero, group_shift, blocks)
            for k in range(min(ROWS, rows - first)):
                Y[first + k, 0] = _finish(tile[k], first + k, 0, offset, sums, fix_ptr, fix_col, fix_delta, padded)
        return
    for pair in prange((rows + 1) // 2):
        a = 2 * pair
        b = min(a + 1, rows - 1)
        if batch == 1:
            if quantized:
                ya, yb = int8_one(codes[a], codes[b], scale[a], scale[b], xq, xd, xz, xs, xt, 0, zero, group_shift,
                                  blocks)
            else:
                ya, yb = float_one(codes[a], codes[b], scale[a], scale[b], padded, 0, zero, group_shift, blocks)
            Y[a, 0] = _finish(ya, a, 0, offset, sums, fix_ptr, fix_col, fix_delta, padded)
            Y[b, 0] = _finish(yb, b, 0, offset, sums, fix_ptr, fix_col, fix_delta, padded)
            continue
        whole = batch - batch % COLUMNS if quantized else batch  # int8: the last columns one by one
        for first in range(0, whole, COLUMNS):
            if quantized:
                tile = int8_four(codes[a], codes[b], scale[a], scale[b], xq, xd, xz, xs, xt, first, zero, group_shift,
                                 blocks)
            else:
                tile = float_four(codes[a], codes[b], scale[a], scale[b], padded, first, zero, group_shift, blocks)
            for c in range(min(COLUMNS, batch - first)):
                n = first + c
                Y[a, n] = _finish(tile[c], a, n, offset, sums, fix_ptr, fix_col, fix_delta, padded)
                Y[b, n] = _finish(tile[COLUMNS + c], b, n, offset, sums, fix_ptr, fix_col, fix_delta, padded)
        for n in range(whole, batch):
            ya, yb = int8_one(codes[a], codes[b], scale[a], scale[b], xq, xd, xz, xs, xt, n, zero, group_shift, blocks)
            Y[a, n] = _finish(ya, a, n, offset, sums, fix_ptr, fix_col, fix_delta, padded)
            Y[b, n] = _finish(yb, b, n, offset, sums, fix_ptr, fix_col, fix_delta, padded)


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


# -- row tiles: 4-bit codes of 8 rows interleaved (small batches on small matrices) --------------
#: rows of a tile: one 256-bit vector of int32 / float32 sums holds one column's 8 rows
TILE = 8
#: columns one pass over a tile's codes takes (its 2 x 4 accumulators fit the 16 AVX2 registers)
TILE_COLUMNS = 4


def _maddubs(rows: _RowPair, unsigned, signed):
    """``pmaddubsw``: ``<16 x i16>`` sums of adjacent products of unsigned ``<32 x i8>`` (at most
    15 here, so nothing saturates) and signed ``<32 x i8>``."""
    b = rows.b
    if rows.avx2:
        pmaddubsw = b.module.declare_intrinsic(
            "llvm.x86.avx2.pmadd.ub.sw", fnty=ir.FunctionType(_vector(_I16, 16), [_vector(_I8, 32)] * 2))
        return b.call(pmaddubsw, [unsigned, signed])
    wide = _vector(_I16, 32)
    products = b.mul(b.zext(unsigned, wide), b.sext(signed, wide))
    return b.add(b.shuffle_vector(products, products, _lanes(range(0, 32, 2))),
                 b.shuffle_vector(products, products, _lanes(range(1, 32, 2))))


def _widen_pairs(rows: _RowPair, halves):
    """``pmaddwd`` by ones: ``<8 x i32>`` sums of adjacent lanes of a ``<16 x i16>``."""
    b = rows.b
    if rows.avx2:
        return b.call(rows._pmaddwd(), [halves, ir.Constant(_vector(_I16, 16), [1] * 16)])
    wide = b.sext(halves, _vector(_I32, 16))
    return b.add(b.shuffle_vector(wide, wide, _lanes(range(0, 16, 2))),
                 b.shuffle_vector(wide, wide, _lanes(range(1, 16, 2))))


#: blocks of codes (128 bytes each) the row-tile kernels prefetch ahead: 1 KiB, past the end of a
#: tile's row into the next tile's (docs/kernels.md, "Threads")
TILE_PREFETCH = 8


def _tile_kernel(columns: int, prefetch: int = TILE_PREFETCH, locality: int = 3):
    """The intrinsic for one row tile (8 rows) × ``columns`` columns of int8 activations, with a
    software prefetch of the codes ``prefetch`` blocks ahead (none when 0; ``locality``: LLVM's
    hint, 3 ``prefetcht0``, 0 ``prefetchnta``; bench/trial_threads.py compares them)."""

    @intrinsic
    def int8_row_tile(typingctx, codes, scales, tile, xq, xd, xz, first, zero, group_shift, blocks, out):
        """Sums of rows ``8·tile .. 8·tile + 7`` times columns ``first .. first + columns - 1``, stored
        as 8 floats at ``out[first + c, 8·tile]``: per row and column
        Σ_b scale[g(b)]·xd[b]·(Σ code·xq − zero·xz[b]).

        ``codes``: ``[tiles, blocks·128]`` ``uint8``, a tile's block ``b`` is 4 vectors of 32 bytes;
        byte ``j`` of vector ``v`` holds row ``j // 4``'s codes at block positions ``8v + j % 4``
        (low nibble) and ``8v + 4 + j % 4`` (high nibble). ``scales``: ``[tiles, groups·8]``
        (a group's 8 rows together). ``xq``/``xd``/``xz`` as ``prepare_activations`` makes them
        (natural order). Per column a 4-byte broadcast of ``xq`` times the low or high nibbles
        is one ``pmaddubsw`` (8 rows × 4 weights); the 8 of a block add up as int16 (at most
        8·2·15·127 < 2^15), one ``pmaddwd`` by ones widens them: lane ``r`` is row ``r``'s block sum.
        """
        if not (_c_matrix(codes, types.uint8) and _c_matrix(scales, types.float32) and _c_matrix(xq, types.int8)
                and _c_matrix(xd, types.float32) and _c_matrix(xz, types.int32) and _c_matrix(out, types.float32)):
            return None
        signature = types.void(codes, scales, types.int64, xq, xd, xz, types.int64, types.int64, types.int64,
                               types.int64, out)

        def codegen(context, builder, signature, args):
            b = builder
            codes_type, scales_type = signature.args[:2]
            codes, scales, tile = args[:3]
            xq_ptr, xd_ptr, xz_ptr = [context.make_array(t)(context, b, a).data
                                      for t, a in zip(signature.args[3:6], args[3:6], strict=True)]
            first, zero, group_shift, blocks = args[6:10]
            out_type, out = signature.args[10], args[10]
            code_row = _row_pointer(context, b, codes_type, codes, tile)
            scale_row = _row_pointer(context, b, scales_type, scales, tile)
            rows = _RowPair(context, b, codes_type, (code_row,), (scale_row,), group_shift, blocks)
            zero = b.trunc(zero, _I32)
            nibble = ir.Constant(_vector(_I8, BLOCK), [15] * BLOCK)
            four = ir.Constant(_vector(_I8, BLOCK), [4] * BLOCK)
            no_floats = ir.Constant(_vector(_F32, 8), [0.0] * 8)
            no_halves = ir.Constant(_vector(_I16, 16), [0] * 16)
            accumulators = [cgutils.alloca_once_value(b, no_floats) for _ in range(columns)]
            column_starts = [b.mul(b.add(first, _i64(c)), blocks) for c in range(columns)]
            i32_pointer = _I32.as_pointer()
            if prefetch:
                fetch = b.module.declare_intrinsic(
                    "llvm.prefetch", fnty=ir.FunctionType(ir.VoidType(), [_I8.as_pointer(), _I32, _I32, _I32]))
                code_bytes = b.bitcast(code_row, _I8.as_pointer())
            with cgutils.for_range(b, blocks) as loop:
                block = loop.index
                group = b.ashr(block, group_shift)
                if prefetch:  # the two cache lines of the block ``prefetch`` ahead (past the row: the next tile's)
                    ahead = b.add(b.mul(block, _i64(4 * BLOCK)), _i64(prefetch * 4 * BLOCK))
                    for line in (0, 64):
                        b.call(fetch, [b.gep(code_bytes, [b.add(ahead, _i64(line))]),
                                       ir.Constant(_I32, 0), ir.Constant(_I32, locality), ir.Constant(_I32, 1)])
                scale = _load(b, scale_row, b.mul(group, _i64(TILE)), _vector(_F32, 8), 4)
                indices = [b.add(start, block) for start in column_starts]
                bases = [b.mul(index, _i64(BLOCK)) for index in indices]
                halves = [no_halves] * columns
                for v in range(4):
                    packed = _load(b, code_row, b.add(b.mul(block, _i64(4 * BLOCK)), _i64(BLOCK * v)),
                                   _vector(_I8, BLOCK), 1)
                    low = b.and_(packed, nibble)
                    high = b.and_(b.lshr(packed, four), nibble)
                    for c in range(columns):
                        quads = []
                        for offset in (8 * v, 8 * v + 4):
                            address = b.bitcast(b.gep(xq_ptr, [b.add(bases[c], _i64(offset))]), i32_pointer)
                            quads.append(b.bitcast(_splat(b, b.load(address, align=1), 8), _vector(_I8, BLOCK)))
                        pair = b.add(_maddubs(rows, low, quads[0]), _maddubs(rows, high, quads[1]))
                        halves[c] = b.add(halves[c], pair)
                for c in range(columns):
                    dot = _widen_pairs(rows, halves[c])
                    dot = b.sub(dot, _splat(b, b.mul(zero, b.load(b.gep(xz_ptr, [indices[c]]))), 8))
                    weight = b.fmul(scale, _splat(b, b.load(b.gep(xd_ptr, [indices[c]])), 8), flags=_FLAGS)
                    value = b.fmul(b.sitofp(dot, _vector(_F32, 8)), weight, flags=_FLAGS)
                    b.store(b.fadd(b.load(accumulators[c]), value, flags=_FLAGS), accumulators[c])
            for c in range(columns):
                row_start = _row_pointer(context, b, out_type, out, b.add(first, _i64(c)))
                target = b.bitcast(b.gep(row_start, [b.mul(tile, _i64(TILE))]), _vector(_F32, 8).as_pointer())
                b.store(b.load(accumulators[c]), target, align=4)
            return context.get_dummy_value()

        return signature, codegen

    return int8_row_tile


tile_one, tile_two, tile_three, tile_four = (_tile_kernel(c) for c in range(1, TILE_COLUMNS + 1))


@njit(nogil=True, cache=True, fastmath=FASTMATH)
def quantize_columns(XT, blocks, group_size, groups, affine):  # pragma: no cover - compiled
    """``prepare_activations(XT, ..., quantize=True, columns=1, paired=False)`` for the row-tile
    kernel, in loops LLVM vectorizes (a block's max, then its codes and their sum): returns
    ``(padded, sums, xq, xd, xz, finite)``; when some x is NaN/Inf, ``finite`` is False and
    the codes are not meaningful."""
    batch, cols = XT.shape
    width = blocks * BLOCK
    padded = np.zeros((batch, width), dtype=np.float32)
    padded[:, :cols] = XT
    sums = np.zeros((batch, groups if affine else 0), dtype=np.float32)
    xq = np.empty((batch, width), dtype=np.int8)
    xd = np.empty((batch, blocks), dtype=np.float32)
    xz = np.empty((batch, blocks), dtype=np.int32)
    for n in range(batch):
        row = padded[n]
        if affine:
            _group_sums(row, group_size, sums[n])
        for block in range(blocks):
            step, count = _quantize_block(row[block * BLOCK : (block + 1) * BLOCK], xq[n, block * BLOCK : (block + 1) * BLOCK])
            if not np.isfinite(step):
                return padded, sums, xq, xd, xz, False
            xd[n, block] = step
            xz[n, block] = count
    return padded, sums, xq, xd, xz, True


@njit(parallel=True, nogil=True, cache=True, fastmath=FASTMATH)
def tiled_matmul(codes, zero, scales, offset, group_shift, padded, sums, xq, xd, xz, fix_ptr, fix_col, fix_delta,
                 bias, Y):  # pragma: no cover - compiled
    """``Y[i, n] = Σ ŵ_ij·x_nj (+ bias[i])`` for the row-tile layout and int8 activations (``Y`` is
    ``[rows, batch]``, any strides; ``bias`` empty or ``[rows]``). Each iteration takes one
    tile of 8 rows and all columns, ``TILE_COLUMNS`` at a time: the tile's codes (8 rows × the
    row length, in L1 for the rows of a small matrix) are read once a pass."""
    rows, batch = Y.shape
    tiles = codes.shape[0]
    blocks = padded.shape[1] // BLOCK
    sums_out = np.empty((batch, tiles * TILE), dtype=np.float32)
    has_bias = bias.shape[0] > 0
    for tile in prange(tiles):
        first = 0
        while first < batch:
            left = batch - first
            if left >= 4:
                tile_four(codes, scales, tile, xq, xd, xz, first, zero, group_shift, blocks, sums_out)
                first += 4
            elif left == 3:
                tile_three(codes, scales, tile, xq, xd, xz, first, zero, group_shift, blocks, sums_out)
                first += 3
            elif left == 2:
                tile_two(codes, scales, tile, xq, xd, xz, first, zero, group_shift, blocks, sums_out)
                first += 2
            else:
                tile_one(codes, scales, tile, xq, xd, xz, first, zero, group_shift, blocks, sums_out)
                first += 1
        for i in range(tile * TILE, min(tile * TILE + TILE, rows)):
            extra = bias[i] if has_bias else np.float32(0.0)
            for n in range(batch):
                Y[i, n] = _finish(sums_out[n, i], i, n, offset, sums, fix_ptr, fix_col, fix_delta, padded) + extra


@njit(nogil=True, cache=True, fastmath=FASTMATH)
def dequantize_tiled_rows(codes, zero, scales, offset, group_shift, fix_ptr, fix_col, fix_delta, start,
                          out):  # pragma: no cover - compiled
    """``dequantize_rows`` for the row-tile layout: rows ``start .. start + len(out) - 1`` of Ŵ
    into ``out`` (at least ``blocks·32`` wide; ``scales`` the ``[tiles, groups·8]`` tile scales,
    ``offset`` the ``[rows, groups]`` array; the group of block ``b`` is ``b >> group_shift``)."""
    blocks = codes.shape[1] // (4 * BLOCK)
    affine = offset.shape[0] > 0
    for r in range(out.shape[0]):
        i = start + r
        row_codes = codes[i // TILE]
        lane = 4 * (i % TILE)
        for block in range(blocks):
            g = block >> group_shift
            s = scales[i // TILE, g * TILE + i % TILE]
            o = offset[i, g] if affine else np.float32(0.0)
            base = block * 4 * BLOCK + lane
            w = out[r, block * BLOCK : (block + 1) * BLOCK]
            for v in range(4):
                for k in range(4):
                    byte = np.int32(row_codes[base + BLOCK * v + k])
                    w[8 * v + k] = np.float32((byte & 15) - zero) * s + o
                    w[8 * v + 4 + k] = np.float32((byte >> 4) - zero) * s + o
        for k in range(fix_ptr[i], fix_ptr[i + 1]):
            out[r, fix_col[k]] += fix_delta[k]

"""Batched Hamming top-k by 4-bit table lookups (AVX2 ``vpshufb``), imported lazily by :mod:`.search`.

The scalar/auto-vectorised kernels of :mod:`._search_numba` spend their time
computing ``popcount(code XOR query)`` per (code, query) pair: on AVX2 that is
a nibble split, two ``vpshufb`` lookups, an add and a horizontal sum *per
pair*. Here the XOR is folded into a per-query table instead (the "fast scan"
layout of PQ search, applied to Hamming distance): for every nibble position
``j`` of the code, ``T[q, j, v] = popcount(q_j XOR v)`` for the 16 values
``v``, so a code's distance is ``sum_j T[q, j, code_j]``. The codes are stored
once, transposed into tiles of 32 codes and nibble-major (``nib[tile, j, c]``,
one nibble per byte), so one ``vpshufb`` looks up nibble ``j`` of 32 codes at
once, and the nibble split is paid once per code instead of once per pair.

Cost per (code, query) at 384 bits: 96 nibble lookups = 3 ``vpshufb`` of 32
bytes plus 3 byte adds (2 shuffles a cycle on this Zen 3: ~1.5 cycles; the
pairwise-popcount kernel needs ~9). Byte sums are widened to 16 bits every 63
positions (a byte holds 63 x 4). Two queries share each loaded code vector
(register blocking: 2 queries x 4 tiles = 8 byte accumulators), and the next
128 codes are prefetched while the current ones run against every query.

Top-k per query is the scheme of :mod:`._search_numba`: a vector compare of
the 16-bit distances against the query's bound; only groups with a code under
it go to the scalar candidate buffer, which visits just the flagged codes in
id order (ties: lower id).

This needs AVX2 (``llvm.x86.avx2.pshuf.b`` through a numba intrinsic, on a
small ``<32 x i8>`` register type): :func:`.search.fastscan_available` says
whether numba's target has it; otherwise :mod:`.search` uses the portable
kernels. Measurements and the variants tried: docs/embed.md, seventh round.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic, models, register_model

from ._search_numba import _compact, _sorted_out

#: codes per tile (bytes of one AVX2 register) and tiles per group (the codes that stay in L1
#: while every query of a block runs over them)
TILE, GROUP = 32, 4
#: nibble positions summed in bytes before widening to 16 bits (63 x 4 <= 255)
CHUNK = 63

_I8 = ir.IntType(8)
_V8 = ir.VectorType(_I8, 32)
_V16 = ir.VectorType(ir.IntType(16), 16)


class _Vector256(types.Type):
    """An AVX2 register (LLVM ``<32 x i8>``), only ever a local value inside the kernels."""

    def __init__(self):
        super().__init__(name="Vector256")


_vec = _Vector256()


@register_model(_Vector256)
class _Vector256Model(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, _V8)


def _address(context, builder, array_type, array, offset):
    data = context.make_array(array_type)(context, builder, array).data
    return builder.gep(builder.bitcast(data, _I8.as_pointer()), [offset])


@intrinsic
def _load(typingctx, array, offset):
    """32 bytes of a C-contiguous array from byte ``offset`` (unaligned load)."""
    def codegen(context, builder, sig, args):
        pointer = _address(context, builder, sig.args[0], args[0], args[1])
        return builder.load(builder.bitcast(pointer, _V8.as_pointer()), align=1)
    return _vec(array, types.intp), codegen


@intrinsic
def _broadcast16(typingctx, array, offset):
    """16 bytes from byte ``offset``, in both halves of a register (a table for ``vpshufb``)."""
    def codegen(context, builder, sig, args):
        pointer = _address(context, builder, sig.args[0], args[0], args[1])
        half = builder.load(builder.bitcast(pointer, ir.VectorType(_I8, 16).as_pointer()), align=1)
        mask = ir.Constant(ir.VectorType(ir.IntType(32), 32), [i % 16 for i in range(32)])
        return builder.shuffle_vector(half, half, mask)
    return _vec(array, types.intp), codegen


@intrinsic
def _store(typingctx, array, offset, vector):
    def codegen(context, builder, sig, args):
        pointer = _address(context, builder, sig.args[0], args[0], args[1])
        builder.store(args[2], builder.bitcast(pointer, _V8.as_pointer()), align=1)
        return context.get_dummy_value()
    return types.none(array, types.intp, _vec), codegen


@intrinsic
def _prefetch(typingctx, array, offset):
    def codegen(context, builder, sig, args):
        pointer = _address(context, builder, sig.args[0], args[0], args[1])
        i32 = ir.IntType(32)
        function = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [_I8.as_pointer(), i32, i32, i32]), "llvm.prefetch")
        builder.call(function, [pointer, ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)])
        return context.get_dummy_value()
    return types.none(array, types.intp), codegen


@intrinsic
def _lookup(typingctx, table, indices):
    """``vpshufb``: byte i of the result is ``table[indices[i] & 15]`` within each 128-bit half."""
    def codegen(context, builder, sig, args):
        function = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(_V8, [_V8, _V8]), "llvm.x86.avx2.pshuf.b")
        return builder.call(function, args)
    return _vec(_vec, _vec), codegen


@intrinsic
def _zero(typingctx):
    def codegen(context, builder, sig, args):
        return ir.Constant(_V8, None)
    return _vec(), codegen


@intrinsic
def _add8(typingctx, a, b):
    def codegen(context, builder, sig, args):
        return builder.add(args[0], args[1])
    return _vec(_vec, _vec), codegen


@intrinsic
def _widen_add(typingctx, total, part, high):
    """``total`` (16 x u16) plus the even (``high`` false) or odd bytes of ``part``, widened."""
    def codegen(context, builder, sig, args):
        words = builder.bitcast(args[1], _V16)
        even = builder.and_(words, ir.Constant(_V16, [0xFF] * 16))
        odd = builder.lshr(words, ir.Constant(_V16, [8] * 16))
        chosen = builder.select(builder.trunc(args[2], ir.IntType(1)), odd, even)
        return builder.bitcast(builder.add(builder.bitcast(args[0], _V16), chosen), _V8)
    return _vec(_vec, _vec, types.boolean), codegen


@intrinsic
def _below(typingctx, vector, bound):
    """Bit i set where 16-bit lane i is below ``bound`` (signed compare, one ``vpcmpgtw`` + movemask)."""
    def codegen(context, builder, sig, args):
        words = builder.bitcast(args[0], _V16)
        i16 = ir.IntType(16)
        splat = builder.insert_element(ir.Constant(_V16, ir.Undefined), builder.trunc(args[1], i16),
                                       ir.Constant(ir.IntType(32), 0))
        splat = builder.shuffle_vector(splat, splat, ir.Constant(ir.VectorType(ir.IntType(32), 16), [0] * 16))
        bits = builder.bitcast(builder.icmp_signed("<", words, splat), i16)
        return builder.zext(bits, ir.IntType(64))
    return types.int64(_vec, types.int64), codegen


@njit(nogil=True, cache=True)
def _transpose_into(codes, out):
    n, width = codes.shape
    positions = 2 * width
    out[:] = 0
    for index in range(n):
        tile, column = divmod(index, TILE)
        base = tile * positions * TILE + column
        row = codes[index]
        for byte in range(width):
            value = row[byte]
            out[base + 2 * byte * TILE] = value >> 4
            out[base + (2 * byte + 1) * TILE] = value & 15


def transpose_codes(codes: np.ndarray) -> np.ndarray:
    """uint8 [n, b] -> flat uint8 [tiles * 2b * 32], 64-byte aligned: tile t (whole groups of
    GROUP tiles), nibble position j (the high nibble of byte j // 2 first), code c of the tile;
    rows past n are zero (their ids are never reported)."""
    n, width = codes.shape
    tiles = -(-n // (TILE * GROUP)) * GROUP
    size = tiles * 2 * width * TILE
    buffer = np.empty(size + 64, dtype=np.uint8)
    start = -buffer.ctypes.data % 64
    out = buffer[start:start + size]
    _transpose_into(codes, out)
    return out


#: row a: ``popcount(a XOR v)`` for v in 0..15 (the table of a query nibble a)
_XOR_POPCOUNT = np.array([[bin(a ^ v).count("1") for v in range(16)] for a in range(16)], dtype=np.uint8)


@njit(nogil=True, cache=True)
def _fill_tables(query_codes, xor_popcount, out):
    count, width = query_codes.shape
    for row in range(count):
        for byte in range(width):
            value = query_codes[row, byte]
            base = (row * 2 * width + 2 * byte) * 16
            high, low = value >> 4, value & 15
            for v in range(16):
                out[base + v] = xor_popcount[high, v]
                out[base + 16 + v] = xor_popcount[low, v]


def query_tables(query_codes: np.ndarray) -> np.ndarray:
    """uint8 [q, b] -> flat uint8 [q * 2b * 16]: ``popcount(query nibble j XOR v)`` for v in 0..15
    (nibble j: the high nibble of byte j // 2 first)."""
    count, width = query_codes.shape
    out = np.empty(count * 2 * width * 16, dtype=np.uint8)
    _fill_tables(np.ascontiguousarray(query_codes), _XOR_POPCOUNT, out)
    return out


@intrinsic
def _trailing_zeros(typingctx, word):
    def codegen(context, builder, sig, args):
        i64 = ir.IntType(64)
        function = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(i64, [i64, ir.IntType(1)]), "llvm.cttz.i64")
        return builder.call(function, [args[0], ir.Constant(ir.IntType(1), 0)])
    return types.int64(types.int64), codegen


@njit(nogil=True, cache=True)
def _interleave(even, odd):
    """Two 16-bit masks (codes 0, 2, 4, ... and 1, 3, 5, ... of a tile) -> one 32-bit mask in code order."""
    even = (even | (even << 8)) & 0x00FF00FF
    even = (even | (even << 4)) & 0x0F0F0F0F
    even = (even | (even << 2)) & 0x33333333
    even = (even | (even << 1)) & 0x55555555
    odd = (odd | (odd << 8)) & 0x00FF00FF
    odd = (odd | (odd << 4)) & 0x0F0F0F0F
    odd = (odd | (odd << 2)) & 0x33333333
    odd = (odd | (odd << 1)) & 0x55555555
    return even | (odd << 1)


@njit(nogil=True, cache=True)
def _take(scratch, first_id, n, slot_q, k, cand_ids, cand_d, filled, bound, histogram, low, high):
    """The codes of one group under the query's bound (bit c of ``low``/``high``: code c / 64 + c of
    the group) go to its candidate buffer, in id order. ``scratch`` holds the group's 16-bit
    distances as computed: per tile, its even codes then its odd ones."""
    capacity = cand_ids.shape[1]
    for half in range(2):
        mask = low if half == 0 else high
        while mask != 0:
            code = half * 64 + _trailing_zeros(mask)
            mask &= mask - 1
            index = first_id + code
            if index >= n:
                return
            column = code & (TILE - 1)
            distance = np.int64(scratch[code - column + (column >> 1) + (column & 1) * (TILE // 2)])
            if distance < bound[slot_q]:  # the bound may have dropped since the masks were made
                slot = filled[slot_q]
                cand_ids[slot_q, slot] = index
                cand_d[slot_q, slot] = distance
                slot += 1
                if slot == capacity:
                    slot, bound[slot_q] = _compact(cand_ids[slot_q], cand_d[slot_q], slot, k, histogram)
                filled[slot_q] = slot


@njit(nogil=True, cache=True)
def _spill(scratch, e0, o0, e1, o1, e2, o2, e3, o3):
    _store(scratch, 0, e0)
    _store(scratch, 32, o0)
    _store(scratch, 64, e1)
    _store(scratch, 96, o1)
    _store(scratch, 128, e2)
    _store(scratch, 160, o2)
    _store(scratch, 192, e3)
    _store(scratch, 224, o3)


@njit(nogil=True, cache=True)
def _scan(nib, n, positions, tables, first, last, k, ids_out, scores_out, ahead_groups):
    """Queries ``first..last-1`` (their tables in ``tables``) against every code; results into
    ``ids_out``/``scores_out`` rows ``first..last-1``."""
    count = last - first
    capacity = 2 * k + 256
    cand_ids = np.empty((count, capacity), dtype=np.int64)
    cand_d = np.empty((count, capacity), dtype=np.int64)
    filled = np.zeros(count, dtype=np.int64)
    bound = np.full(count, 4 * positions + 1, dtype=np.int64)  # any distance enters until a buffer fills
    histogram = np.zeros(4 * positions + 1, dtype=np.int64)
    scratch = np.empty(GROUP * TILE, dtype=np.uint16)
    tile_bytes = positions * TILE
    group_bytes = GROUP * tile_bytes
    groups = nib.shape[0] // group_bytes
    pairs = (count + 1) // 2
    lines = (group_bytes + 63) // 64
    per_pair = (lines + pairs - 1) // pairs  # prefetch the next group over the query pairs
    for group in range(groups):
        base = group * group_bytes
        ahead = base + ahead_groups * group_bytes
        for pair in range(pairs):
            q0 = first + 2 * pair
            q1 = q0 + 1 if q0 + 1 < last else q0
            if group + ahead_groups < groups:
                for line in range(pair * per_pair, min(lines, (pair + 1) * per_pair)):
                    _prefetch(nib, ahead + 64 * line)
            e00 = _zero()
            o00 = _zero()
            e01 = _zero()
            o01 = _zero()
            e02 = _zero()
            o02 = _zero()
            e03 = _zero()
            o03 = _zero()
            e10 = _zero()
            o10 = _zero()
            e11 = _zero()
            o11 = _zero()
            e12 = _zero()
            o12 = _zero()
            e13 = _zero()
            o13 = _zero()
            start = 0
            while start < positions:
                stop = min(positions, start + CHUNK)
                a00 = _zero()
                a01 = _zero()
                a02 = _zero()
                a03 = _zero()
                a10 = _zero()
                a11 = _zero()
                a12 = _zero()
                a13 = _zero()
                for j in range(start, stop):
                    t0 = _broadcast16(tables, (q0 * positions + j) * 16)
                    t1 = _broadcast16(tables, (q1 * positions + j) * 16)
                    v = _load(nib, base + j * TILE)
                    a00 = _add8(a00, _lookup(t0, v))
                    a10 = _add8(a10, _lookup(t1, v))
                    v = _load(nib, base + tile_bytes + j * TILE)
                    a01 = _add8(a01, _lookup(t0, v))
                    a11 = _add8(a11, _lookup(t1, v))
                    v = _load(nib, base + 2 * tile_bytes + j * TILE)
                    a02 = _add8(a02, _lookup(t0, v))
                    a12 = _add8(a12, _lookup(t1, v))
                    v = _load(nib, base + 3 * tile_bytes + j * TILE)
                    a03 = _add8(a03, _lookup(t0, v))
                    a13 = _add8(a13, _lookup(t1, v))
                e00 = _widen_add(e00, a00, False)
                o00 = _widen_add(o00, a00, True)
                e01 = _widen_add(e01, a01, False)
                o01 = _widen_add(o01, a01, True)
                e02 = _widen_add(e02, a02, False)
                o02 = _widen_add(o02, a02, True)
                e03 = _widen_add(e03, a03, False)
                o03 = _widen_add(o03, a03, True)
                e10 = _widen_add(e10, a10, False)
                o10 = _widen_add(o10, a10, True)
                e11 = _widen_add(e11, a11, False)
                o11 = _widen_add(o11, a11, True)
                e12 = _widen_add(e12, a12, False)
                o12 = _widen_add(o12, a12, True)
                e13 = _widen_add(e13, a13, False)
                o13 = _widen_add(o13, a13, True)
                start = stop
            first_id = group * GROUP * TILE
            # The two queries' checks are written out: a shared helper, even inlined in Numba IR,
            # measured 10-25% slower (its vector arguments go through memory).
            s0 = q0 - first
            b0 = bound[s0]
            m0, m1, m2, m3 = _below(e00, b0), _below(o00, b0), _below(e01, b0), _below(o01, b0)
            m4, m5, m6, m7 = _below(e02, b0), _below(o02, b0), _below(e03, b0), _below(o03, b0)
            if (m0 | m1 | m2 | m3 | m4 | m5 | m6 | m7) != 0:
                _spill(scratch, e00, o00, e01, o01, e02, o02, e03, o03)
                _take(scratch, first_id, n, s0, k, cand_ids, cand_d, filled, bound, histogram,
                      _interleave(m0, m1) | (_interleave(m2, m3) << 32), _interleave(m4, m5) | (_interleave(m6, m7) << 32))
            if q1 != q0:
                s1 = q1 - first
                b1 = bound[s1]
                m0, m1, m2, m3 = _below(e10, b1), _below(o10, b1), _below(e11, b1), _below(o11, b1)
                m4, m5, m6, m7 = _below(e12, b1), _below(o12, b1), _below(e13, b1), _below(o13, b1)
                if (m0 | m1 | m2 | m3 | m4 | m5 | m6 | m7) != 0:
                    _spill(scratch, e10, o10, e11, o11, e12, o12, e13, o13)
                    _take(scratch, first_id, n, s1, k, cand_ids, cand_d, filled, bound, histogram,
                          _interleave(m0, m1) | (_interleave(m2, m3) << 32),
                          _interleave(m4, m5) | (_interleave(m6, m7) << 32))
    for slot_q in range(count):
        kept, _ = _compact(cand_ids[slot_q], cand_d[slot_q], filled[slot_q], k, histogram)
        _sorted_out(cand_ids[slot_q], cand_d[slot_q], kept, histogram,
                    ids_out[first + slot_q], scores_out[first + slot_q])


@njit(nogil=True, cache=True, parallel=True)
def hamming_topk_fastscan(nib, n, positions, tables, k, block, ahead_groups=1):
    """Top-k of every query (tables from :func:`query_tables`) over the transposed codes ``nib``
    (:func:`transpose_codes`; ``n`` real codes): ids int64 [q, k], distances int32 [q, k].
    One ``prange`` iteration per block of ``block`` queries; ``ahead_groups``: how many groups of
    128 codes ahead the prefetches run (1 measured best; 0 prefetches nothing useful)."""
    count = tables.shape[0] // (positions * 16)
    ids = np.empty((count, k), dtype=np.int64)
    scores = np.empty((count, k), dtype=np.int32)
    for number in prange((count + block - 1) // block):
        first = number * block
        _scan(nib, n, positions, tables, first, min(count, first + block), k, ids, scores, ahead_groups)
    return ids, scores

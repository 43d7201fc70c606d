"""The rANS encoder of :mod:`._rans_numba` with its eight lanes in one vector (imported lazily).

``_rans_numba.encode_into`` codes symbol ``i`` on lane ``i % 8``, group by group from
the last, lanes 7, 6, ..., 0 within a group, each renormalisation writing one 16-bit word
backwards: ~25 scalar instructions a symbol (session 8: ~2.4 ns). numba's LLVM does not
vectorise it, so :func:`encode_into` here spells the group loop out in LLVM IR
(:func:`_groups`, a numba ``@intrinsic``): the eight 31-bit states are one ``<8 x i32>``,
each symbol's fields ((x_max - 16) | reciprocal shift, reciprocal, bias | 2**scale - freq)
one 16-byte record, loaded per symbol and transposed into three field vectors, the reciprocal
product's high half by a 32x32->64-bit multiply, and the words of the lanes that
renormalise moved to the top of one 8-word vector by a permutation that a 256-entry table
(indexed by the lanes' mask) gives, so that one unaligned 16-byte store ending at the
write position puts them where the scalar loop puts them (lane 0's word lowest) and the
position moves down by their count. The bytes are the scalar encoder's
(tests/test_rans_vector_encode.py). The IR is generic (no target intrinsic): LLVM turns
the variable permutation into ``vpshufb`` and the products into ``vpmuludq``; on a CPU
without AVX2 (``_vector_ok``) LLVM scalarises it, the scalar loop is as fast, and is taken.
docs/scale.md "BF16 compress: a vector rANS encoder (session 9)" has the measurements.

Everything the intrinsic emits goes into the calling kernel's module, so numba's cache
(and ``_jit``'s light loading) treats these kernels like any other.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from ._rans_numba import LANES, RANS_L, symbol_fields
from ._rans_numba import encode_into as _scalar_encode_into

# --- vector IR helpers -----------------------------------------------------------------------
# Generic llvmlite.ir helpers for 8-lane kernels (shared shape with the vector decoder's).

I1 = ir.IntType(1)
I8 = ir.IntType(8)
I16 = ir.IntType(16)
I32 = ir.IntType(32)
I64 = ir.IntType(64)
# Pointers are written typed (``elem.as_pointer()``, loads and geps without ``typ=`` /
# ``source_etype=``), as numba's own code does: llvmlite 0.42 (LLVM 14, numba 0.59's floor)
# only has typed pointers; opaque-pointer llvmlite prints them all as ``ptr`` and the
# bitcasts between them fold away.


def vec(element, count=LANES):
    return ir.VectorType(element, count)


def splat(element, value, count=LANES):
    """A constant vector of ``count`` copies of ``value``."""
    return ir.Constant(vec(element, count), [ir.Constant(element, value)] * count)


def lane_constant(element, values):
    return ir.Constant(vec(element, len(values)), [ir.Constant(element, v) for v in values])


def splat_value(builder, value, count=LANES):
    """A vector of ``count`` copies of the run-time scalar ``value``."""
    one = builder.insert_element(ir.Constant(vec(value.type, count), ir.Undefined), value, ir.Constant(I32, 0))
    return builder.shuffle_vector(one, one, ir.Constant(vec(I32, count), [ir.Constant(I32, 0)] * count))


def shuffle(builder, a, b, lanes, name=""):
    """``shufflevector a, b, <lanes>`` (lanes index the concatenation a ++ b)."""
    return builder.shuffle_vector(a, b, lane_constant(I32, lanes), name=name)


def intrinsic_function(module, name, return_type, arg_types):
    """The declaration of the LLVM intrinsic (or any external function) ``name`` in ``module``."""
    fn = module.globals.get(name)
    if fn is None:
        fn = ir.Function(module, ir.FunctionType(return_type, arg_types), name=name)
    return fn


def ctpop(builder, value):
    fn = intrinsic_function(builder.module, f"llvm.ctpop.i{value.type.width}", value.type, [value.type])
    return builder.call(fn, [value])


def cast(builder, pointer, pointee):
    """``pointer`` as a ``pointee*`` (a no-op under opaque pointers, where every one is ``ptr``)."""
    return builder.bitcast(pointer, pointee.as_pointer())


def array_data(context, builder, array_type, value, pointee):
    """The data pointer of a numba array argument, as a ``pointee*``."""
    return cast(builder, context.make_array(array_type)(context, builder, value).data, pointee)


def variable_permute(builder, vector, indices):
    """``result[i] = vector[indices[i]]`` for a run-time index vector of the same element type,
    written as extracts and inserts: LLVM's x86 back end recognises the pattern as one variable
    permutation (``pshufb`` for bytes, ``vpermd``/``vpermps`` for 32-bit lanes, ``vpermw`` with
    AVX-512BW); without SSSE3 it stays scalar. (Indices of another width than the elements,
    e.g. i8 for i16, defeat the match: LLVM 22 then goes through the stack.)"""
    count = vector.type.count
    out = ir.Constant(vector.type, ir.Undefined)
    for i in range(count):
        index = builder.extract_element(indices, ir.Constant(I32, i))
        out = builder.insert_element(out, builder.extract_element(vector, index), ir.Constant(I32, i))
    return out


def transpose_records(builder, records):
    """Eight ``<4 x i32>`` records (one per lane) as four ``<8 x i32>`` field vectors:
    ``fields[f][lane] = records[lane][f]``."""
    # pairs of lanes (j, j + 4) side by side, then 32- and 64-bit interleaves: the classic
    # 8x4 transpose, three shuffle levels LLVM maps onto vinserti128/vpunpck*
    joined = [shuffle(builder, records[j], records[j + 4], list(range(8))) for j in range(4)]
    # joined[j] = r_j[0..3] | r_{j+4}[0..3]
    lo01 = shuffle(builder, joined[0], joined[1], [0, 8, 1, 9, 4, 12, 5, 13])  # r0f0 r1f0 r0f1 r1f1 | r4..r5
    hi01 = shuffle(builder, joined[0], joined[1], [2, 10, 3, 11, 6, 14, 7, 15])
    lo23 = shuffle(builder, joined[2], joined[3], [0, 8, 1, 9, 4, 12, 5, 13])
    hi23 = shuffle(builder, joined[2], joined[3], [2, 10, 3, 11, 6, 14, 7, 15])
    f0 = shuffle(builder, lo01, lo23, [0, 1, 8, 9, 4, 5, 12, 13])
    f1 = shuffle(builder, lo01, lo23, [2, 3, 10, 11, 6, 7, 14, 15])
    f2 = shuffle(builder, hi01, hi23, [0, 1, 8, 9, 4, 5, 12, 13])
    f3 = shuffle(builder, hi01, hi23, [2, 3, 10, 11, 6, 7, 14, 15])
    return f0, f1, f2, f3


def mul_high_u32(builder, a, b):
    """The high 32 bits of the unsigned 64-bit products of two ``<8 x i32>`` (``vpmuludq``)."""
    wide = vec(I64)
    product = builder.mul(builder.zext(a, wide), builder.zext(b, wide))
    return builder.trunc(builder.lshr(product, splat(I64, 32)), vec(I32))


def counted_loop(builder, count, carried, body, name="loop"):
    """``for k in range(count - 1, -1, -1)`` (count an i64 >= 0) with loop-carried values:
    ``body(builder, k, values) -> values``; returns the values after the loop."""
    entry = builder.block
    fn = entry.function
    loop = fn.append_basic_block(name)
    done = fn.append_basic_block(name + ".done")
    last = builder.sub(count, ir.Constant(I64, 1))
    builder.cbranch(builder.icmp_signed(">", count, ir.Constant(I64, 0)), loop, done)
    builder.position_at_end(loop)
    k = builder.phi(I64, name="k")
    phis = [builder.phi(v.type) for v in carried]
    k.add_incoming(last, entry)
    for phi, value in zip(phis, carried, strict=True):
        phi.add_incoming(value, entry)
    new = body(builder, k, phis)
    end = builder.block
    k.add_incoming(builder.sub(k, ir.Constant(I64, 1)), end)
    for phi, value in zip(phis, new, strict=True):
        phi.add_incoming(value, end)
    builder.cbranch(builder.icmp_signed(">", k, ir.Constant(I64, 0)), loop, done)
    builder.position_at_end(done)
    outs = []
    for value, value_new in zip(carried, new, strict=True):
        phi = builder.phi(value.type)
        phi.add_incoming(value, entry)
        phi.add_incoming(value_new, end)
        outs.append(phi)
    return outs


def target_features(context):
    """(cpu name, feature string) numba's code generator targets."""
    codegen = context.codegen()
    name = getattr(codegen, "_get_host_cpu_name", lambda: "")()
    features = getattr(codegen, "_tm_features", "") or ""
    return name, features


# CPUs whose default features include AVX2 (for a feature string that does not say)
# fmt: off
_AVX2_CPUS = (
    "haswell", "broadwell", "skylake", "skx", "cascadelake", "cooperlake", "cannonlake", "icelake", "tigerlake",
    "rocketlake", "alderlake", "raptorlake", "meteorlake", "arrowlake", "lunarlake", "gracemont", "sapphirerapids",
    "emeraldrapids", "graniterapids", "diamondrapids", "sierraforest", "grandridge", "clearwaterforest",
    "pantherlake", "znver", "x86-64-v3", "x86-64-v4", "bdver4",
)
# fmt: on


def has_avx2(context):
    name, features = target_features(context)
    flags = {f[1:]: f[0] == "+" for f in features.split(",") if f[:1] in "+-" and len(f) > 1}
    if "avx2" in flags:
        return flags["avx2"]
    return name.lower().startswith(_AVX2_CPUS)


# --- the encoder ------------------------------------------------------------------------------


#: per mask of renormalising lanes (bit j: lane j), the byte shuffle that moves their words
#: (lane j's at bytes 2j, 2j + 1) to the top of an 8-word vector, in ascending lane order; the
#: slots below them are don't-care (byte 0)
def _permutations():
    table = np.zeros((256, 2 * LANES), dtype=np.uint8)
    for mask in range(256):
        lanes = [j for j in range(LANES) if mask >> j & 1]
        for k, lane in enumerate(lanes):
            slot = LANES - len(lanes) + k
            table[mask, 2 * slot] = 2 * lane
            table[mask, 2 * slot + 1] = 2 * lane + 1
    return table.reshape(-1)


PERMUTATIONS = _permutations()


def _groups_args(element_width):
    """The group loop's argument types (see :func:`_emit_groups`)."""
    ptr = ir.IntType(element_width).as_pointer()
    return [ptr, I64, I64, I8.as_pointer(), I8.as_pointer(), I16.as_pointer(), I64, I32.as_pointer(), I64]


def _emit_groups(module, element_width):
    """``i64 groups(iW* values, i64 mask, i64 shift, i8* records, i8* perm, i16* words, i64 pos,
    i32* states, i64 n_groups)``: the group loop for values of ``element_width`` bits (W)."""
    name = f"bie.rans_vector_encode.groups.u{element_width}"
    fn = module.globals.get(name)
    if fn is not None:
        return fn
    fnty = ir.FunctionType(I64, _groups_args(element_width))
    fn = ir.Function(module, fnty, name=name)
    fn.linkage = "internal"
    fn.attributes.add("nounwind")
    values, mask, shift, records, perm, words, pos, states, n_groups = fn.args
    for arg in (values, records, perm, words, states):
        arg.add_attribute("noalias")
    builder = ir.IRBuilder(fn.append_basic_block("entry"))
    v32, v16 = vec(I32), vec(I16)
    velem = vec(ir.IntType(element_width))
    work = I64 if element_width > 32 else I32
    mask_w = builder.trunc(mask, work) if work is I32 else mask
    shift_w = builder.trunc(shift, work) if work is I32 else shift
    x_in = builder.load(cast(builder, states, v32))
    x_in.align = 4

    def body(b, k, carried):
        x, p = carried
        # the group's eight values -> symbols -> their 16-byte records
        at = b.gep(values, [b.mul(k, ir.Constant(I64, LANES))])
        group = b.load(cast(b, at, velem))
        group.align = element_width // 8
        # symbols as one vector, then each lane's record (8 loads) transposed into field vectors
        wide_group = b.zext(group, vec(work)) if element_width < work.width else group
        symbols = b.lshr(b.and_(wide_group, splat_value(b, mask_w)), splat_value(b, shift_w))
        if work is I64:
            symbols = b.trunc(symbols, v32)
        offsets = b.shl(symbols, splat(I32, 4))  # bytes: x86 addressing scales by 8 at most
        records_l = []
        for lane in range(LANES):
            offset = b.zext(b.extract_element(offsets, ir.Constant(I32, lane)), I64)
            record = b.load(cast(b, b.gep(records, [offset]), vec(I32, 4)))
            record.align = 4
            records_l.append(record)
        a, rcp, c, _ = transpose_records(b, records_l)
        # a = (x_max - 16) | rcp_shift: x >= x_max is x > (a | 15) (signed: both below 2**31)
        x_max_1 = b.or_(a, splat(I32, 0xF))
        # renormalise: lanes at or above x_max give their low 16 bits
        out = b.icmp_signed(">", x, x_max_1)
        emitted = b.trunc(x, v16)
        x = b.select(out, b.lshr(x, splat(I32, 16)), x)
        q = b.lshr(mul_high_u32(b, x, rcp), b.and_(a, splat(I32, 0xF)))
        x = b.add(b.add(x, b.and_(c, splat(I32, 0xFFFF))), b.mul(q, b.lshr(c, splat(I32, 16))))
        # the renormalising lanes' words, in lane order, at the top of one 8-word store
        bits = b.bitcast(out, I8)
        index = b.zext(bits, I64)
        order = b.load(cast(b, b.gep(perm, [b.mul(index, ir.Constant(I64, 2 * LANES))]), vec(I8, 16)))
        order.align = 1
        packed = variable_permute(b, b.bitcast(emitted, vec(I8, 16)), order)
        store = b.store(packed, cast(b, b.gep(words, [b.sub(p, ir.Constant(I64, LANES))]), packed.type))
        store.align = 2
        p = b.sub(p, b.zext(ctpop(b, bits), I64))
        return [x, p]

    x_out, p_out = counted_loop(builder, n_groups, [x_in, pos], body, name="group")
    st = builder.store(x_out, cast(builder, states, v32))
    st.align = 4
    builder.ret(p_out)
    return fn


@intrinsic
def _groups(typingctx, values, mask, shift, records, perm, words, pos, states, n_groups):
    """Groups ``n_groups - 1`` down to 0 of ``values`` (the n % 8 tail coded already): states
    (uint32[8]) in and out, returns the new write position. ``words[pos - 8 * n_groups -
    8:pos]`` must be free: each group's store covers the 8 slots below the position."""
    if not (isinstance(values, types.Array) and isinstance(values.dtype, types.Integer)):
        return None
    width = values.dtype.bitwidth
    sig = types.int64(values, types.uint64, types.uint64, records, perm, words, types.int64, states, types.int64)

    def codegen(context, builder, signature, args):
        v, m, sh, rec, pm, w, p, st, g = args
        argtys = signature.args
        fn = _emit_groups(builder.module, width)
        pt = _groups_args(width)
        return builder.call(
            fn,
            [
                array_data(context, builder, argtys[0], v, pt[0].pointee),
                m,
                sh,
                array_data(context, builder, argtys[3], rec, pt[3].pointee),
                array_data(context, builder, argtys[4], pm, pt[4].pointee),
                array_data(context, builder, argtys[5], w, pt[5].pointee),
                p,
                array_data(context, builder, argtys[7], st, pt[7].pointee),
                g,
            ],
        )

    return sig, codegen


@intrinsic
def _vector_ok(typingctx):
    """Whether the target has AVX2 (a compile-time constant): without it the scalar loop wins."""
    sig = types.boolean()

    def codegen(context, builder, signature, args):
        return ir.Constant(I1, has_avx2(context))

    return sig, codegen


@njit(nogil=True, cache=True)
def records_for(freq, start, scale_bits):  # pragma: no cover - compiled
    """Per symbol, 4 uint32: (x_max - 16) | reciprocal shift (x_max's low 16 bits are 0, and
    x_max >= 2**16), reciprocal,
    bias | (2**scale - freq) << 16, 0 (the fields of ``_rans_numba.encode_into``'s info)."""
    n_sym = freq.shape[0]
    rec = np.zeros(4 * n_sym, dtype=np.uint32)
    for s in range(n_sym):
        if freq[s] == 0:
            continue
        x_max, rcp, rcp_shift, bias, complement = symbol_fields(freq[s], start[s], scale_bits)
        rec[4 * s] = (x_max - 16) | rcp_shift
        rec[4 * s + 1] = rcp
        rec[4 * s + 2] = bias | (complement << 16)
    return rec


@njit(inline="always")
def _step(x, s, records, words, pos):  # pragma: no cover - compiled
    """``_rans_numba.encode_step`` from a symbol's record (the tail's symbols)."""
    at = s * np.uint64(4)  # s is a uint64: unsigned arithmetic only (numba makes uint64 * int64 a float)
    a = np.int64(records[at])
    rcp = np.int64(records[at + np.uint64(1)])
    c = np.int64(records[at + np.uint64(2)])
    if x > (a | 15):  # x >= x_max
        words[np.uint64(pos - 1)] = x & 0xFFFF
        pos -= 1
        x >>= 16
    q = ((x * rcp) >> 32) >> (a & 15)
    return x + (c & 0xFFFF) + q * (c >> 16), pos


@njit(nogil=True, cache=True)
def encode_into(values, mask, shift, freq, start, scale_bits, words, end):  # pragma: no cover - compiled
    """``_rans_numba.encode_into`` (same arguments, same words and states), eight lanes a step
    where the target has AVX2, else the scalar loop itself. ``words[end - n - 1:end]`` must be
    free (n = ``values.shape[0]``)."""
    if _vector_ok() and values.shape[0] >= LANES:
        return vector_encode_into(values, mask, shift, freq, start, scale_bits, words, end)
    return _scalar_encode_into(values, mask, shift, freq, start, scale_bits, words, end)


@njit(nogil=True, cache=True)
def vector_encode_into(values, mask, shift, freq, start, scale_bits, words, end):  # pragma: no cover - compiled
    """:func:`encode_into` on any target (the tests run it without AVX2 too)."""
    n = values.shape[0]
    whole = n - (n & (LANES - 1))
    records = records_for(freq, start, scale_bits)
    pos = end
    states = np.full(LANES, RANS_L, dtype=np.int64)
    m = np.uint64(mask)
    sh = np.uint64(shift)
    # the last n % 8 symbols first (the decoder reads them last), as the scalar loop does
    for i in range(n - 1, whole - 1, -1):
        lane = i & (LANES - 1)
        states[lane], pos = _step(states[lane], (np.uint64(values[i]) & m) >> sh, records, words, pos)
    x = np.empty(LANES, dtype=np.uint32)
    for lane in range(LANES):
        x[lane] = states[lane]
    pos = _groups(values, m, sh, records, PERMUTATIONS, words, pos, x, whole // LANES)
    for lane in range(LANES):
        states[lane] = x[lane]
    return states, pos

"""numba kernels for Hamming top-k (imported lazily by :mod:`bie_cli.embed.search`).

Codes are rows of 64-bit words (the packed bytes zero-padded to a multiple of
8, so padding never adds distance). Each query is one ``prange`` iteration:
distances to every code, a histogram of them on the way, then a counting-sort
selection: the smallest distance ``cutoff`` whose cumulative count reaches
``k``; ids below it are taken in id order, then ids at exactly ``cutoff`` in id
order until ``k``. Distances are integers in ``[0, bits]``, so this is O(n)
with no comparisons sort, and ties go to the lower id (deterministic).
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic


@intrinsic
def _popcount64(typingctx, word):
    """LLVM's ctpop: one POPCNT instruction on x86-64 (numba has no popcount of its own)."""
    signature = types.uint64(types.uint64)

    def codegen(context, builder, sig, args):
        function = builder.module.declare_intrinsic("llvm.ctpop", [ir.IntType(64)])
        return builder.call(function, args)

    return signature, codegen


@njit(nogil=True, cache=True)
def _select(distances, histogram, k, ids_out, scores_out):
    """Write the k smallest distances (ties: lower id first) into ids_out / scores_out."""
    total = 0
    cutoff = 0
    for value in range(histogram.shape[0]):
        total += histogram[value]
        if total >= k:
            cutoff = value
            break
    below = total - histogram[cutoff]  # ids strictly below cutoff, all taken
    # place ids by distance: counting sort restricted to distances < cutoff, stable in id order
    start = np.zeros(cutoff + 1, dtype=np.int64)
    for value in range(1, cutoff + 1):
        start[value] = start[value - 1] + histogram[value - 1]
    at_cutoff = below
    for index in range(distances.shape[0]):
        distance = distances[index]
        if distance < cutoff:
            slot = start[distance]
            ids_out[slot] = index
            scores_out[slot] = distance
            start[distance] = slot + 1
        elif distance == cutoff and at_cutoff < k:
            ids_out[at_cutoff] = index
            scores_out[at_cutoff] = distance
            at_cutoff += 1


@njit(nogil=True, cache=True, parallel=True)
def hamming_topk(codes, queries, k, bits):
    """codes uint64 [n, w], queries uint64 [q, w] -> (ids int64 [q, k], distances int32 [q, k])."""
    n, words = codes.shape
    count = queries.shape[0]
    ids = np.empty((count, k), dtype=np.int64)
    scores = np.empty((count, k), dtype=np.int32)
    for row in prange(count):
        query = queries[row]
        distances = np.empty(n, dtype=np.int32)
        histogram = np.zeros(bits + 1, dtype=np.int64)
        for index in range(n):
            code = codes[index]
            distance = 0
            for word in range(words):
                distance += _popcount64(code[word] ^ query[word])
            distances[index] = distance
            histogram[distance] += 1
        _select(distances, histogram, k, ids[row], scores[row])
    return ids, scores


@njit(nogil=True, cache=True, parallel=True)
def rescore_topk(candidates, vectors, queries, k):
    """Among each query's candidate ids, the k with the largest dot product (ties: lower id first).

    ``vectors`` may be float32 or int8 (an int8 index scores in its own units:
    ranking is unchanged by a per-tensor scale).
    """
    count, width = candidates.shape
    ids = np.empty((count, k), dtype=np.int64)
    scores = np.empty((count, k), dtype=np.float32)
    for row in prange(count):
        query = queries[row]
        by_id = np.sort(candidates[row])  # a stable sort on score below then breaks ties by id
        values = np.empty(width, dtype=np.float32)
        for slot in range(width):
            vector = vectors[by_id[slot]]
            total = np.float32(0.0)
            for column in range(query.shape[0]):
                total += query[column] * np.float32(vector[column])
            values[slot] = total
        order = np.argsort(-values, kind="mergesort")
        for rank in range(k):
            ids[row, rank] = by_id[order[rank]]
            scores[row, rank] = values[order[rank]]
    return ids, scores


@njit(nogil=True, cache=True, parallel=True)
def asymmetric_topk(codes, tables, k):
    """codes uint8 [n, b], tables float32 [q, b, 256] (a query's score for each value of each byte)
    -> the k highest scores per query (ties: lower id first): ids int64 [q, k], scores float32 [q, k]."""
    n, width = codes.shape
    count = tables.shape[0]
    ids = np.empty((count, k), dtype=np.int64)
    scores = np.empty((count, k), dtype=np.float32)
    for row in prange(count):
        table = tables[row]
        best_ids = ids[row]
        best = scores[row]
        filled = 0
        for index in range(n):
            code = codes[index]
            total = np.float32(0.0)
            for position in range(width):
                total += table[position, code[position]]
            if filled == k and total <= best[k - 1]:
                continue  # not better than the current k-th (an equal score keeps the lower id)
            # insertion into the sorted top list; strict comparison keeps earlier ids ahead on ties
            slot = filled if filled < k else k - 1
            while slot > 0 and best[slot - 1] < total:
                if slot < k:
                    best[slot] = best[slot - 1]
                    best_ids[slot] = best_ids[slot - 1]
                slot -= 1
            best[slot] = total
            best_ids[slot] = index
            if filled < k:
                filled += 1
    return ids, scores

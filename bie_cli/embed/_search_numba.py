"""numba kernels for Hamming top-k (imported lazily by :mod:`bie_cli.embed.search`).

Codes are rows of 64-bit words (the packed bytes zero-padded to a multiple of
8, so padding never adds distance). Each query is one ``prange`` iteration
that scans every code once: popcount of XOR (LLVM's ``ctpop``, one POPCNT per
word), then one comparison against a bound. Codes under the bound go to a
small candidate buffer; when it fills, it is cut back to the k best by
(distance, id) with a histogram (distances are integers in ``[0, bits]``) and
the bound drops to the k-th distance. Candidates arrive in id order, so a
later code at exactly the bound would lose the tie: only strictly smaller
distances enter afterwards. The selection is O(n) amortised with no
comparison sort, and ties go to the lower id (deterministic).
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
def _compact(cand_ids, cand_d, filled, k, histogram):
    """Keep the k best candidates by (distance, id), in id order; return their k-th distance.

    Candidates arrive in id order, so among equal distances the earlier ones win:
    every candidate below the cutoff is kept, then those at the cutoff until k.
    """
    histogram[:] = 0
    for slot in range(filled):
        histogram[cand_d[slot]] += 1
    total = 0
    cutoff = 0
    for value in range(histogram.shape[0]):
        total += histogram[value]
        if total >= k:
            cutoff = value
            break
    room = k - (total - histogram[cutoff])  # how many at exactly the cutoff fit
    kept = 0
    for slot in range(filled):
        distance = cand_d[slot]
        if distance < cutoff or (distance == cutoff and room > 0):
            if distance == cutoff:
                room -= 1
            cand_ids[kept] = cand_ids[slot]
            cand_d[kept] = distance
            kept += 1
    return kept, cutoff


@njit(nogil=True, cache=True)
def _topk_one(codes, query, k, cand_ids, cand_d, histogram, ids_out, scores_out):
    """One query: scan every code, keep candidates under a bound that tightens as they come."""
    n, words = codes.shape
    capacity = cand_ids.shape[0]
    filled = 0
    bound = histogram.shape[0]  # accept any distance until the buffer first fills
    for index in range(n):
        distance = 0
        for word in range(words):
            distance += _popcount64(codes[index, word] ^ query[word])
        if distance < bound:
            cand_ids[filled] = index
            cand_d[filled] = distance
            filled += 1
            if filled == capacity:
                # k candidates stay, all with distance <= cutoff; a later id at the cutoff
                # would lose the tie to them, so from now on only strictly smaller ones enter
                filled, bound = _compact(cand_ids, cand_d, filled, k, histogram)
    filled, _ = _compact(cand_ids, cand_d, filled, k, histogram)
    _sorted_out(cand_ids, cand_d, filled, histogram, ids_out, scores_out)


@njit(nogil=True, cache=True, parallel=True)
def hamming_topk(codes, queries, k, bits):
    """codes uint64 [n, w], queries uint64 [q, w] -> (ids int64 [q, k], distances int32 [q, k]).

    Each query is one ``prange`` iteration. The scan keeps a candidate buffer of
    ``2k + 256`` entries; when it fills, the k best (by distance, then id) are
    kept and the bound drops to their worst distance, so almost every code costs
    only its popcounts and one well-predicted comparison. A compaction is a
    histogram of small integers (distances are in ``[0, bits]``), so the whole
    selection is O(n) amortised, without comparison sorts.
    """
    count = queries.shape[0]
    ids = np.empty((count, k), dtype=np.int64)
    scores = np.empty((count, k), dtype=np.int32)
    capacity = 2 * k + 256
    for row in prange(count):
        cand_ids = np.empty(capacity, dtype=np.int64)
        cand_d = np.empty(capacity, dtype=np.int64)
        histogram = np.zeros(bits + 1, dtype=np.int64)
        _topk_one(codes, queries[row], k, cand_ids, cand_d, histogram, ids[row], scores[row])
    return ids, scores


@njit(nogil=True, cache=True)
def _topk_block(codes, queries_t, k, cand_ids, cand_d, histogram, ids_out, scores_out):
    """A block of queries in one scan: each code is read once and XOR-popcounted against every query
    of the block (the inner loop over queries vectorises: AVX2 popcount by nibble lookup); each query
    keeps its own candidate buffer and bound, as in :func:`_topk_one`."""
    n, words = codes.shape
    block = queries_t.shape[1]
    capacity = cand_ids.shape[1]
    filled = np.zeros(block, dtype=np.int64)
    bound = np.full(block, histogram.shape[0], dtype=np.int64)
    distance = np.empty(block, dtype=np.int64)
    for index in range(n):
        distance[:] = 0
        for word in range(words):
            code = codes[index, word]
            for q in range(block):
                distance[q] += _popcount64(code ^ queries_t[word, q])
        hit = False
        for q in range(block):
            hit |= distance[q] < bound[q]
        if hit:
            for q in range(block):
                if distance[q] < bound[q]:
                    slot = filled[q]
                    cand_ids[q, slot] = index
                    cand_d[q, slot] = distance[q]
                    slot += 1
                    if slot == capacity:
                        slot, bound[q] = _compact(cand_ids[q], cand_d[q], slot, k, histogram)
                    filled[q] = slot
    for q in range(block):
        kept, _ = _compact(cand_ids[q], cand_d[q], filled[q], k, histogram)
        _sorted_out(cand_ids[q], cand_d[q], kept, histogram, ids_out[q], scores_out[q])


@njit(nogil=True, cache=True)
def _sorted_out(cand_ids, cand_d, filled, histogram, ids_out, scores_out):
    """Counting sort of the survivors by distance, stable (they are in id order)."""
    histogram[:] = 0
    for slot in range(filled):
        histogram[cand_d[slot]] += 1
    start = 0
    for value in range(histogram.shape[0]):
        count = histogram[value]
        histogram[value] = start
        start += count
    for slot in range(filled):
        distance = cand_d[slot]
        rank = histogram[distance]
        histogram[distance] = rank + 1
        ids_out[rank] = cand_ids[slot]
        scores_out[rank] = distance


@njit(nogil=True, cache=True, parallel=True)
def hamming_topk_blocked(codes, queries, k, bits, block):
    """As :func:`hamming_topk`, the queries taken ``block`` at a time (one ``prange`` iteration
    per block): the codes are streamed once per block instead of once per query."""
    count = queries.shape[0]
    ids = np.empty((count, k), dtype=np.int64)
    scores = np.empty((count, k), dtype=np.int32)
    capacity = 2 * k + 256
    for number in prange((count + block - 1) // block):
        start = number * block
        stop = min(count, start + block)
        queries_t = np.ascontiguousarray(queries[start:stop].T)
        cand_ids = np.empty((stop - start, capacity), dtype=np.int64)
        cand_d = np.empty((stop - start, capacity), dtype=np.int64)
        histogram = np.zeros(bits + 1, dtype=np.int64)
        _topk_block(codes, queries_t, k, cand_ids, cand_d, histogram, ids[start:stop], scores[start:stop])
    return ids, scores


@njit(nogil=True, cache=True)
def _best_k(by_id, values, ids_out, scores_out):
    """The ``len(ids_out)`` highest ``values`` with their ids; ``by_id`` is in id order and the sort
    is stable, so equal scores keep the lower id first."""
    order = np.argsort(-values, kind="mergesort")
    for rank in range(ids_out.shape[0]):
        ids_out[rank] = by_id[order[rank]]
        scores_out[rank] = values[order[rank]]


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
        _best_k(by_id, values, ids[row], scores[row])
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


@njit(nogil=True, cache=True, parallel=True)
def asymmetric_rerank(candidates, codes, tables, k):
    """Among each query's candidate ids, the k highest asymmetric scores (ties: lower id first).

    ``codes`` uint8 [n, b], ``tables`` float32 [q, b, 256] as in :func:`asymmetric_topk`:
    the second stage of a Hamming shortlist, re-ranked by the float query, all on the bits.
    """
    count, width = candidates.shape
    bytes_per_code = codes.shape[1]
    ids = np.empty((count, k), dtype=np.int64)
    scores = np.empty((count, k), dtype=np.float32)
    for row in prange(count):
        table = tables[row]
        by_id = np.sort(candidates[row])  # a stable sort on score below then breaks ties by id
        values = np.empty(width, dtype=np.float32)
        for slot in range(width):
            code = codes[by_id[slot]]
            total = np.float32(0.0)
            for position in range(bytes_per_code):
                total += table[position, code[position]]
            values[slot] = total
        _best_k(by_id, values, ids[row], scores[row])
    return ids, scores

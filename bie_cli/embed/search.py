"""Exact Hamming top-k over packed codes, with optional rescoring by float or int8 vectors.

``search`` is the numba kernel (parallel over queries; see
:mod:`._search_numba`); ``search_reference`` is the plain numpy definition the
tests hold it to. Both order results by (distance, id): ties go to the lower
id, so the output is deterministic. With ``rescore``, the ``candidates``
nearest codes of each query are re-ranked by the dot product of the float
query with those rows of ``rescore`` (ties again to the lower id).
"""

from __future__ import annotations

import numpy as np

from ..errors import BadInputError
from .codec import check_vectors

#: rescoring looks at this many Hamming candidates per wanted result unless told
DEFAULT_CANDIDATES_PER_RESULT = 4
#: asymmetric search scores this many Hamming-nearest codes per wanted result (k, or the
#: candidates when rescoring), and at least SHORTLIST_MIN, unless told (0: every code)
SHORTLIST_PER_RESULT = 10
SHORTLIST_MIN = 100


#: queries per block of the blocked Hamming kernel (each code is read once per block); batches
#: smaller than QUERY_BLOCK_MIN go one query at a time (a block of 8 measured no faster)
#: (one thread, 100,000 random 384-bit codes: 50 queries as one block of 50 0.21 ms a query against 0.24 as
#: 32 + 18; 192 queries in blocks of 32 / 64 / 96: 0.269 / 0.263 / 0.258 ms, load 2.2-2.7)
QUERY_BLOCK = 64
QUERY_BLOCK_MIN = 16
#: the table-lookup kernel (:mod:`._fastscan_numba`, AVX2) runs from this many queries on a
#: :class:`HammingIndex` (its transposed codes are twice the bytes: one query alone streams
#: 9.6 MB for 100,000 codes where the popcount kernel streams 4.8 MB, and took 1.5 ms against
#: 0.8 in the bench), and from FASTSCAN_MIN_RAW on plain codes (which must be transposed on every
#: call first: ~11 ms for 100,000 codes of 48 bytes, one thread)
FASTSCAN_MIN = 4
FASTSCAN_MIN_RAW = 128
#: widest codes the table-lookup kernel takes (its distances are 16-bit lanes compared signed)
FASTSCAN_MAX_BYTES = 4095


def fastscan_available() -> bool:
    """Whether numba's code generation target has AVX2 (``vpshufb`` on 32 bytes) on x86-64.

    ``NUMBA_CPU_NAME=generic`` (portable caches) sets no features, so the portable kernels run;
    ``BIE_EMBED_FASTSCAN=0`` forces them too.
    """
    import os
    import platform

    if os.environ.get("BIE_EMBED_FASTSCAN", "1") == "0":
        return False
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    from numba.core import config

    if config.CPU_FEATURES is not None:
        return "+avx2" in config.CPU_FEATURES.split(",")
    if not _HOST_AVX2:  # asking LLVM takes ~0.3 ms
        import llvmlite.binding as llvm

        _HOST_AVX2.append("+avx2" in llvm.get_host_cpu_features().flatten().split(","))
    return _HOST_AVX2[0]


#: whether the host CPU has AVX2 (filled on first use)
_HOST_AVX2: list[bool] = []


class HammingIndex:
    """Packed codes prepared once for repeated searches (as a faiss index is built once).

    ``search(HammingIndex(codes), query_codes, k)`` returns what
    ``search(codes, query_codes, k)`` returns. On AVX2 the index also keeps the
    codes transposed for the table-lookup kernel (:mod:`._fastscan_numba`: tiles of
    32 codes, one nibble per byte, so twice the bytes of the codes), built here
    instead of on every call.
    """

    def __init__(self, codes: np.ndarray):
        self.codes = np.ascontiguousarray(_check_codes(codes, "codes"))
        self.transposed = None
        if fastscan_available() and self.codes.shape[1] <= FASTSCAN_MAX_BYTES:
            self.transposed = _transpose(self.codes)

    @property
    def shape(self) -> tuple[int, int]:
        return self.codes.shape

    def __len__(self) -> int:
        return self.codes.shape[0]

    def search(self, query_codes: np.ndarray, k: int, **options) -> tuple[np.ndarray, np.ndarray]:
        """:func:`search` over this index."""
        return search(self, query_codes, k, **options)


def _unwrap(codes, check: bool = False) -> tuple[HammingIndex | None, np.ndarray]:
    """(the :class:`HammingIndex` given, or None; its packed codes), plain codes checked when ``check``."""
    if isinstance(codes, HammingIndex):
        return codes, codes.codes
    return None, _check_codes(codes, "codes") if check else codes


def _transpose(codes: np.ndarray) -> np.ndarray:
    from . import _fastscan_numba as _fastscan

    return _fastscan.transpose_codes(codes)


def _threads() -> int:
    import numba

    return numba.get_num_threads()


def hamming_topk(codes, query_codes: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact Hamming top-k of packed uint8 codes (checked) or a :class:`HammingIndex`: one query at a
    time for a few queries, blocks of queries sharing one scan of the codes for more (by table lookups
    on AVX2, see :mod:`._fastscan_numba`)."""
    from . import _search_numba

    index, codes = _unwrap(codes)
    count = query_codes.shape[0]
    transposed = index.transposed if index is not None else None
    if transposed is None and count >= FASTSCAN_MIN_RAW and codes.shape[1] <= FASTSCAN_MAX_BYTES \
            and fastscan_available():
        transposed = _transpose(np.ascontiguousarray(codes))
    if transposed is not None and count >= FASTSCAN_MIN:
        from . import _fastscan_numba as _fastscan

        block = max(FASTSCAN_MIN, min(QUERY_BLOCK, -(-count // _threads())))
        return _fastscan.hamming_topk_fastscan(transposed, codes.shape[0], 2 * codes.shape[1],
                                               _fastscan.query_tables(query_codes), k, block + block % 2)
    words, query_words, bits = _as_words(codes), _as_words(query_codes), codes.shape[1] * 8
    if count < QUERY_BLOCK_MIN:
        return _search_numba.hamming_topk(words, query_words, k, bits)
    # enough blocks for every thread, none smaller than QUERY_BLOCK_MIN
    block = max(QUERY_BLOCK_MIN, min(QUERY_BLOCK, -(-count // _threads())))
    return _search_numba.hamming_topk_blocked(words, query_words, k, bits, block)


def default_shortlist(width: int) -> int:
    return max(SHORTLIST_MIN, SHORTLIST_PER_RESULT * width)


def _check_codes(codes, what: str) -> np.ndarray:
    array = np.asarray(codes)
    if array.dtype != np.uint8 or array.ndim != 2:
        raise BadInputError(f"{what} must be packed codes, uint8 [n, bytes]; got {array.dtype} {list(array.shape)}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise BadInputError(f"{what} is empty (shape {list(array.shape)})")
    return array


def _as_words(codes: np.ndarray) -> np.ndarray:
    """uint8 [n, b] -> uint64 [n, ceil(b/8)] (zero padding adds no distance); no copy when aligned."""
    n, width = codes.shape
    words = -(-width // 8)
    if width % 8 == 0 and codes.flags.c_contiguous:
        return codes.view(np.uint64)
    padded = np.zeros((n, words * 8), dtype=np.uint8)
    padded[:, :width] = codes
    return padded.view(np.uint64)


def check_search(codes, query_codes, k: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Checked (codes or the :class:`HammingIndex` as given, query codes, k)."""
    index, codes = _unwrap(codes, check=True)
    query_codes = _check_codes(query_codes, "query codes")
    if query_codes.shape[1] != codes.shape[1]:
        raise BadInputError(
            f"query codes have {query_codes.shape[1]} bytes per row, the index {codes.shape[1]}: "
            "encode both with the same codec"
        )
    k = int(k)
    if not 1 <= k <= codes.shape[0]:
        raise BadInputError(f"k={k} must be between 1 and the number of codes ({codes.shape[0]})")
    return (index if index is not None else codes), query_codes, k


def search(
    codes: np.ndarray,
    query_codes: np.ndarray,
    k: int,
    *,
    rescore: np.ndarray | None = None,
    queries: np.ndarray | None = None,
    candidates: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` ids (int64 ``[q, k]``) and scores for every query.

    ``codes``: packed uint8 ``[n, bytes]``, or a :class:`HammingIndex` of them
    (prepared once; faster for repeated batches).
    Without ``rescore`` the scores are Hamming distances (int32, ascending).
    With ``rescore`` (float or int8 ``[n, d]``, row i for code i) and the float
    ``queries`` (``[q, d]``, in the same space: normalise them as the index
    was), the nearest ``candidates`` codes (default ``4 * k``) are re-ranked by
    dot product; scores are those products (float32, descending).
    """
    codes, query_codes, k = check_search(codes, query_codes, k)
    from . import _search_numba

    if rescore is None:
        if candidates is not None or queries is not None:
            raise BadInputError("candidates/queries only apply when rescoring (give rescore vectors)")
        return hamming_topk(codes, query_codes, k)
    vectors, query_vectors, width = _check_rescore(codes, query_codes, k, rescore, queries, candidates)
    found, _ = hamming_topk(codes, query_codes, width)
    return _search_numba.rescore_topk(found, vectors, query_vectors, k)


def search_asymmetric(
    codes: np.ndarray,
    query_weights: np.ndarray,
    k: int,
    *,
    shortlist: int | None = None,
    rescore: np.ndarray | None = None,
    queries: np.ndarray | None = None,
    candidates: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` by asymmetric score: float query weights (``codec.query_weights(q)``, one per bit)
    against binary codes, ``score = sum_j w_j * (+1 if bit j else -1)``, highest first (ties: lower id).

    No query information is lost to binarisation, so it ranks better than
    Hamming distance; only the bits of the index are read. It scores only the
    ``shortlist`` nearest codes by Hamming distance to the query's own bits
    (the signs of its weights): default :func:`default_shortlist` of the
    wanted width (``k``, or ``candidates`` when rescoring); ``0`` scores every
    code (a table lookup per code byte, several times a Hamming search).
    ``rescore``/``queries``/``candidates`` as in :func:`search`: the
    asymmetric top ``candidates`` are re-ranked by float dot product.
    """
    index, codes = _unwrap(codes, check=True)
    weights = np.asarray(query_weights, dtype=np.float32)
    if weights.ndim != 2 or weights.shape[0] == 0 or -(-weights.shape[1] // 8) != codes.shape[1]:
        raise BadInputError(
            f"query weights of shape {list(weights.shape)} do not fit codes of {codes.shape[1]} bytes per row"
        )
    k = int(k)
    if not 1 <= k <= codes.shape[0]:
        raise BadInputError(f"k={k} must be between 1 and the number of codes ({codes.shape[0]})")
    from . import _search_numba

    if rescore is None:
        if candidates is not None or queries is not None:
            raise BadInputError("candidates/queries only apply when rescoring (give rescore vectors)")
        vectors = query_vectors = None
        width = k
    else:
        vectors, query_vectors, width = _check_rescore(codes, weights, k, rescore, queries, candidates)
    codes = np.ascontiguousarray(codes)
    tables = byte_tables(weights)
    shortlist = default_shortlist(width) if shortlist is None else int(shortlist)
    if shortlist == 0 or shortlist >= codes.shape[0]:
        found, scores = _search_numba.asymmetric_topk(codes, tables, width)
    else:
        if shortlist < width:
            raise BadInputError(f"shortlist={shortlist} must be at least {width} (k, or candidates when rescoring)")
        query_codes = np.packbits(weights >= 0, axis=1)
        near, _ = hamming_topk(index if index is not None else codes, query_codes, shortlist)
        found, scores = _search_numba.asymmetric_rerank(near, codes, tables, width)
    if rescore is None:
        return found, scores
    return _search_numba.rescore_topk(found, vectors, query_vectors, k)


#: row v: the signs (+1 for a set bit, -1 for a clear one) of byte value v, most significant bit first
_BYTE_SIGNS = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1).astype(np.float32) * 2 - 1


def byte_tables(weights: np.ndarray) -> np.ndarray:
    """float32 [q, bytes, 256]: each code byte's contribution to each query's asymmetric score."""
    count, bits = weights.shape
    width = -(-bits // 8)
    padded = np.zeros((count, width * 8), dtype=np.float32)
    padded[:, :bits] = weights  # padding bits weigh nothing
    return np.ascontiguousarray(padded.reshape(count, width, 8) @ _BYTE_SIGNS.T)


def _check_rescore(codes, query_codes, k, rescore, queries, candidates):
    if queries is None:
        raise BadInputError("rescoring needs the float query vectors (queries=)")
    vectors = np.asarray(rescore)
    if vectors.dtype != np.int8:
        vectors = check_vectors(vectors, None, "rescore vectors").astype(np.float32, copy=False)
    elif vectors.ndim != 2:
        raise BadInputError(f"rescore vectors must be 2-D; got shape {list(vectors.shape)}")
    if vectors.shape[0] != codes.shape[0]:
        raise BadInputError(f"{vectors.shape[0]} rescore vectors for {codes.shape[0]} codes: give one per code")
    query_vectors = check_vectors(queries, vectors.shape[1], "query vectors").astype(np.float32, copy=False)
    if query_vectors.shape[0] != query_codes.shape[0]:
        raise BadInputError(f"{query_vectors.shape[0]} query vectors for {query_codes.shape[0]} query codes")
    width = DEFAULT_CANDIDATES_PER_RESULT * k if candidates is None else int(candidates)
    if width < k:
        raise BadInputError(f"candidates={width} must be at least k={k}")
    width = min(width, codes.shape[0])
    return np.ascontiguousarray(vectors), np.ascontiguousarray(query_vectors), width


def search_asymmetric_reference(codes, query_weights, k):
    """The asymmetric definition in numpy: ±1 bits times weights, stable sort by (-score, id)."""
    signs = np.unpackbits(codes, axis=1)[:, :query_weights.shape[1]].astype(np.float64) * 2 - 1
    scores = query_weights.astype(np.float64) @ signs.T
    ids = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return ids, np.take_along_axis(scores, ids, axis=1)


def search_reference(codes: np.ndarray, query_codes: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The definition, in numpy: unpack, count differing bits, stable sort by (distance, id)."""
    codes, query_codes, k = check_search(codes, query_codes, k)
    codes = _unwrap(codes)[1]
    unpacked = np.unpackbits(codes, axis=1).astype(np.int32)
    queries = np.unpackbits(query_codes, axis=1).astype(np.int32)
    # |a xor b| = |a| + |b| - 2 a.b
    distances = unpacked.sum(1)[None, :] + queries.sum(1)[:, None] - 2 * queries @ unpacked.T
    ids = np.argsort(distances, axis=1, kind="stable")[:, :k]
    return ids.astype(np.int64), np.take_along_axis(distances, ids, axis=1).astype(np.int32)


def rescore_reference(candidate_ids, vectors, queries, k):
    """Re-rank candidate ids by dot product (ties to the lower id): the definition in numpy."""
    by_id = np.sort(candidate_ids, axis=1)
    scores = np.einsum("qd,qcd->qc", queries.astype(np.float32), vectors[by_id].astype(np.float32))
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(by_id, order, axis=1), np.take_along_axis(scores, order, axis=1)

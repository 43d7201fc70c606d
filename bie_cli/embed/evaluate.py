"""Recall of binary codes against exact float search: what ``bie embed eval`` and the benchmark report."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ..errors import BadInputError
from .codec import BinaryCodec, normalize
from .search import search, search_asymmetric

EXACT_BLOCK = 256  # queries per matrix product: bounds the [block, n] score matrix


def exact_topk(corpus: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Ids of the k highest cosine similarities per query (ties: lower id first), float32 exact search."""
    corpus, queries = normalize(corpus), normalize(queries)
    if corpus.shape[1] != queries.shape[1]:
        raise BadInputError(f"queries have {queries.shape[1]} dimensions, the corpus {corpus.shape[1]}")
    if not 1 <= k <= corpus.shape[0]:
        raise BadInputError(f"k={k} must be between 1 and the number of corpus vectors ({corpus.shape[0]})")
    ids = np.empty((queries.shape[0], k), dtype=np.int64)
    for start in range(0, queries.shape[0], EXACT_BLOCK):
        scores = queries[start:start + EXACT_BLOCK] @ corpus.T
        ids[start:start + EXACT_BLOCK] = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return ids


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean over queries of |found ∩ truth| / k (k = truth's width)."""
    k = truth.shape[1]
    hits = sum(np.intersect1d(a[:k], b, assume_unique=True).size for a, b in zip(found, truth, strict=True))
    return hits / (k * truth.shape[0])


@dataclass
class CodecRecall:
    name: str
    method: str
    bits: int
    recall: float  # Hamming top-k against exact float top-k
    recall_rescored: float  # the nearest `candidates` codes re-ranked by float dot product
    # float query against the bits, over the default Hamming shortlist (None: merged bits have no such score)
    recall_asymmetric: float | None
    recall_asymmetric_rescored: float | None  # the asymmetric top `candidates` re-ranked by float

    def to_dict(self) -> dict:
        return asdict(self)


def codec_recall(name: str, codec: BinaryCodec, corpus, queries, truth: np.ndarray, candidates: int) -> CodecRecall:
    k = truth.shape[1]
    codes, query_codes = codec.encode(corpus), codec.encode(queries)
    found, _ = search(codes, query_codes, k)
    rescored, _ = search(codes, query_codes, k, rescore=normalize(corpus), queries=normalize(queries),
                         candidates=max(candidates, k))
    asymmetric = asymmetric_rescored = None
    if not codec.merged:
        weights = codec.query_weights(queries)
        asymmetric = recall_at_k(search_asymmetric(codes, weights, k)[0], truth)
        asymmetric_rescored = recall_at_k(search_asymmetric(
            codes, weights, k, rescore=normalize(corpus), queries=normalize(queries), candidates=max(candidates, k))[0],
            truth)
    return CodecRecall(name, codec.method, codec.bits, recall_at_k(found, truth), recall_at_k(rescored, truth),
                       asymmetric, asymmetric_rescored)

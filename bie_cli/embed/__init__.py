"""Binary codes for embedding vectors (the embedding seed): ``fit``, ``BinaryCodec``, ``search``.

    codec = fit(sample)                 # full-width codes (one bit per dimension)
    codec = fit(sample, bits=192)       # the best 192-bit codes measured
    codes = codec.encode(corpus)        # packed uint8 [n, ceil(bits / 8)]
    ids, distances = search(codes, codec.encode(queries), k=10)
    index = HammingIndex(codes)         # prepared once: faster repeated batches (AVX2)
    ids, distances = search(index, codec.encode(queries), k=10)
    ids, scores = search(codes, codec.encode(queries), 10, rescore=corpus, queries=queries, candidates=40)
    ids, scores = search_asymmetric(codes, codec.query_weights(queries), 10)  # float queries: better ranks
    ids, scores = search_asymmetric(codes, codec.query_weights(queries), 10, rescore=corpus, queries=queries)

Nothing here imports torch or numba until a trained fit or a search runs.
"""

from __future__ import annotations

from .codec import BinaryCodec
from .fit import fit
from .search import HammingIndex, search, search_asymmetric, search_reference

__all__ = ["BinaryCodec", "HammingIndex", "fit", "search", "search_asymmetric", "search_reference"]

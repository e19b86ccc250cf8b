"""Exact search of a Flat index at a fraction of its memory traffic, and the choice of searcher for an index.

One query against N stored vectors is bound by memory bandwidth (N x d x 4 bytes for fp32). Two exact scans
read less: ``rag.search.int8_scan.Int8FlatSearcher`` (one byte a dimension, the choice from INT8_MIN_ROWS rows)
and ``HalfFlatSearcher`` here (fp16, two bytes: small collections, and vectors wider than the int8 scan's exact
integer range). Both pick candidates from the compressed copy with an error bound, then rescore them exactly
(``rag.search.scan.rescore``), so their answers, scores and tie order included, are identical.

``HalfFlatSearcher``: an fp16 copy (``faiss.IndexScalarQuantizer`` QT_fp16) cut into one shard per core,
scanned side by side; an fp16 score is within ``eps`` of the exact one, so every exact top-k row scores at least
``kth - 2 eps`` in fp16: when scores crowd, one range scan widens the candidates to every such row.
"""

from __future__ import annotations

from typing import Protocol

import faiss
import numpy as np

from rag.search.index import search as index_search
from rag.search.int8_scan import MAX_DIM, Int8FlatSearcher
from rag.search.scan import ShardPool, flat_vectors, merge_shards, one_thread, rescore, shard_bounds

__all__ = ["HalfFlatSearcher", "IndexSearcher", "Int8FlatSearcher", "Searcher", "flat_vectors", "make_searcher",
           "one_thread"]

# Below this many rows the fp16 scan is as fast or faster (the collection sits in the caches, and the int8 bound
# rescores more rows); from here on the int8 scan wins, 3x at 30k rows (benchmarks/exact_scan.py).
INT8_MIN_ROWS = 20_000
FIRST_EXTRA = 16
ADD_CHUNK = 65_536
FP16_UNIT = 2.0**-11  # relative rounding error of fp16


class Searcher(Protocol):
    """Top-k (scores, ids) for a batch of query vectors, over ``ntotal`` rows."""

    ntotal: int

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]: ...


class IndexSearcher:
    """Any FAISS index as it is (HNSW, IVF...)."""

    def __init__(self, index: faiss.Index) -> None:
        self.index = index

    @property
    def ntotal(self) -> int:
        """Rows searched."""
        return int(self.index.ntotal)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Plain ``rag.search.index.search``."""
        return index_search(self.index, queries, k)


class HalfFlatSearcher:
    """Exact inner-product search of an ``IndexFlatIP``: fp16 candidate scan, exact rescoring.

    FAISS scans one query on one thread, which on 2 vCPU leaves a core idle. Collections of
    ``SHARD_MIN_ROWS`` rows or more are cut into one contiguous fp16 shard per core, scanned side by side in
    threads (FAISS releases the GIL) and merged.
    """

    def __init__(self, index: faiss.Index, shards: int | None = None) -> None:
        self.index = index
        self.vectors = flat_vectors(index)
        self.shards: list[tuple[int, faiss.IndexScalarQuantizer]] = []
        max_norm = 0.0
        for lo, hi in shard_bounds(len(self.vectors), shards):
            half = faiss.IndexScalarQuantizer(index.d, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT)
            for start in range(lo, hi, ADD_CHUNK):
                chunk = self.vectors[start : min(start + ADD_CHUNK, hi)]
                half.add(chunk)
                max_norm = max(max_norm, float(np.linalg.norm(chunk, axis=1).max()))
            self.shards.append((lo, half))
        self.max_norm = max_norm
        self._pool = ShardPool(len(self.shards))

    @property
    def ntotal(self) -> int:
        """Rows searched (so ``rag.search.filtered.search_page`` can page through this searcher)."""
        return int(self.index.ntotal)

    def scan(self, query: np.ndarray, wanted: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``wanted`` best fp16 scores and their row ids, best first (ties: lower id first)."""
        found = self._pool.map(lambda shard: shard.search(query, min(wanted, shard.ntotal)), [h for _, h in self.shards])
        return merge_shards([(s[0], i[0]) for s, i in found], [lo for lo, _ in self.shards], wanted)

    def within(self, query: np.ndarray, radius: float) -> np.ndarray:
        """Row ids whose fp16 score exceeds ``radius`` (a FAISS range search per shard)."""
        found = self._pool.map(lambda shard: shard.range_search(query, radius)[2], [h for _, h in self.shards])
        return np.concatenate([ids + offset for ids, (offset, _) in zip(found, self.shards)])

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Same answer as exact Flat search, each query of a batch exactly as if it came alone."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if queries.ndim == 1:
            queries = queries[None, :]
        if self.index.ntotal == 0 or len(queries) == 0:
            return index_search(self.index, queries, k)
        k = max(1, min(int(k), self.index.ntotal))
        found = [self._one(query[None, :], k) for query in queries]
        return np.concatenate([s for s, _ in found]), np.concatenate([i for _, i in found])

    def _one(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        total = self.index.ntotal
        # fp16 rounding of each stored component moves a score by at most |q| |x| 2^-11; doubled for the sums
        eps = 2 * FP16_UNIT * float(np.linalg.norm(query)) * self.max_norm
        wanted = min(total, k + FIRST_EXTRA)
        scores, candidates = self.scan(query, wanted)
        kth, last = scores[k - 1], scores[wanted - 1]
        if wanted < total and last >= kth - 2 * eps:
            # crowded scores: every row within 2 eps of the k-th may be in the exact top k; one range scan finds them
            candidates = np.union1d(candidates, self.within(query, float(kth - 2 * eps)))
        return rescore(self.vectors, query, candidates, k)


def make_searcher(index: faiss.Index) -> Searcher:
    """For an inner-product Flat index the int8 scan from INT8_MIN_ROWS rows (and up to MAX_DIM dimensions),
    else the fp16 scan; any other index as it is (HNSW, IVF... are searched by FAISS)."""
    flat = faiss.downcast_index(index)
    if type(flat) in (faiss.IndexFlatIP, faiss.IndexFlat) and flat.metric_type == faiss.METRIC_INNER_PRODUCT:
        if flat.ntotal >= INT8_MIN_ROWS and flat.d <= MAX_DIM:
            return Int8FlatSearcher(flat)
        return HalfFlatSearcher(flat)
    return IndexSearcher(index)

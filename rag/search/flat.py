"""Exact single-query search over a Flat index at half the memory traffic: fp16 scan, then exact fp32 rescoring.

One query against N stored vectors is bound by memory bandwidth (N x d x 4 bytes). ``HalfFlatSearcher``
scans an fp16 copy (``faiss.IndexScalarQuantizer`` QT_fp16, half the bytes; one shard per core scanned
side by side, each on one OpenMP thread), then rescores the candidates with the
fp32 vectors of the (memory-mapped) Flat index. When scores crowd, one range scan widens the candidates to
every row that may belong to the exact
top k: an fp16 score is within ``eps`` of the true one, so every true top-k row scores at least
``kth - 2 eps`` in fp16. Results, scores included, are those of exact fp32 search (up to ties).
Batches of queries go to the Flat index itself (BLAS matrix products use every core well).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Protocol

import faiss
import numpy as np

from rag.search.index import search as index_search

FIRST_EXTRA = 16
SHARD_MIN_ROWS = 50_000  # below this one shard: a thread hand-off costs more than half a scan saves
MAX_SHARDS = 4
ADD_CHUNK = 65_536
FP16_UNIT = 2.0**-11  # relative rounding error of fp16


class Searcher(Protocol):
    """Top-k (scores, ids) for a batch of query vectors."""

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]: ...


class IndexSearcher:
    """Any FAISS index as it is (HNSW, IVF...)."""

    def __init__(self, index: faiss.Index) -> None:
        self.index = index

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Plain ``rag.search.index.search``."""
        return index_search(self.index, queries, k)


@contextmanager
def one_thread() -> Iterator[None]:
    """Run FAISS on one OpenMP thread in this thread (the setting is per calling thread), then restore it."""
    previous = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(previous)


def flat_vectors(index: faiss.Index) -> np.ndarray:
    """A zero-copy (N, d) float32 view of a Flat index's vectors (memory-mapped if the index is)."""
    flat = faiss.downcast_index(index)
    if flat.ntotal == 0:
        return np.zeros((0, flat.d), dtype=np.float32)
    return faiss.rev_swig_ptr(flat.get_xb(), flat.ntotal * flat.d).reshape(flat.ntotal, flat.d)


class HalfFlatSearcher:
    """Exact inner-product search of an ``IndexFlatIP``: fp16 candidate scan, fp32 rescoring.

    FAISS scans one query on one thread, which on 2 vCPU leaves a core idle (250k rows: 35 ms, against 24 ms
    for NumPy's two-thread BLAS). Collections of ``SHARD_MIN_ROWS`` rows or more are cut into one contiguous
    fp16 shard per core, scanned side by side in threads (FAISS releases the GIL) and merged.
    """

    def __init__(self, index: faiss.Index, shards: int | None = None) -> None:
        self.index = index
        self.vectors = flat_vectors(index)
        total = len(self.vectors)
        count = shards or (min(os.cpu_count() or 1, MAX_SHARDS) if total >= SHARD_MIN_ROWS else 1)
        bounds = np.linspace(0, total, count + 1).astype(np.int64)
        self.shards: list[tuple[int, faiss.IndexScalarQuantizer]] = []
        max_norm = 0.0
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            half = faiss.IndexScalarQuantizer(index.d, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT)
            for start in range(int(lo), int(hi), ADD_CHUNK):
                chunk = self.vectors[start : min(start + ADD_CHUNK, int(hi))]
                half.add(chunk)
                max_norm = max(max_norm, float(np.linalg.norm(chunk, axis=1).max()))
            self.shards.append((int(lo), half))
        self.max_norm = max_norm
        self._pool = ThreadPoolExecutor(max_workers=len(self.shards)) if len(self.shards) > 1 else None

    def _each_shard(self, work: Callable[[faiss.Index], Any]) -> list[Any]:
        """``work(shard)`` on every shard, on one OpenMP thread each, side by side when there are several."""

        def run(shard: faiss.Index) -> Any:
            with one_thread():
                return work(shard)

        if self._pool is None:
            return [run(half) for _, half in self.shards]
        return list(self._pool.map(run, [half for _, half in self.shards]))

    def scan(self, query: np.ndarray, wanted: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``wanted`` best fp16 scores and their row ids, best first (ties: lower id first)."""
        found = self._each_shard(lambda shard: shard.search(query, min(wanted, shard.ntotal)))
        scores = np.concatenate([s[0] for s, _ in found])
        ids = np.concatenate([i[0] + (i[0] >= 0) * offset for (_, i), (offset, _) in zip(found, self.shards)])
        order = np.lexsort((ids, -scores))[:wanted]
        return scores[order], ids[order]

    def within(self, query: np.ndarray, radius: float) -> np.ndarray:
        """Row ids whose fp16 score exceeds ``radius`` (a FAISS range search per shard)."""
        found = self._each_shard(lambda shard: shard.range_search(query, radius)[2])
        return np.concatenate([ids + offset for ids, (offset, _) in zip(found, self.shards)])

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Same answer as exact Flat search; single queries take the fp16 path."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if queries.ndim == 1:
            queries = queries[None, :]
        if len(queries) != 1 or self.index.ntotal == 0:
            return index_search(self.index, queries, k)
        return self._one(queries, max(1, min(int(k), self.index.ntotal)))

    def _one(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        total = self.index.ntotal
        # fp16 rounding of each stored component moves a score by at most |q| |x| 2^-11; doubled for the sums
        eps = 2 * FP16_UNIT * float(np.linalg.norm(query)) * self.max_norm
        wanted = min(total, k + FIRST_EXTRA)
        scores, candidates = self.scan(query, wanted)
        candidates = candidates[candidates >= 0]
        kth, last = scores[k - 1], scores[wanted - 1]
        if wanted < total and last >= kth - 2 * eps:
            # crowded scores: every row within 2 eps of the k-th may be in the exact top k; one range scan finds them
            candidates = np.union1d(candidates, self.within(query, float(kth - 2 * eps)))
        candidates = np.sort(candidates)  # ascending ids: ties keep FAISS's lower-id-first order
        exact = self.vectors[candidates] @ query[0]
        order = np.argsort(-exact, kind="stable")[:k]
        return exact[order][None, :].astype(np.float32), candidates[order][None, :].astype(np.int64)


def make_searcher(index: faiss.Index) -> Searcher:
    """``HalfFlatSearcher`` for an inner-product Flat index, the index as it is otherwise."""
    flat = faiss.downcast_index(index)
    if type(flat) in (faiss.IndexFlatIP, faiss.IndexFlat) and flat.metric_type == faiss.METRIC_INNER_PRODUCT:
        return HalfFlatSearcher(flat)
    return IndexSearcher(index)

"""Exact single-query search over a Flat index at half the memory traffic: fp16 scan, then exact fp32 rescoring.

One query against N stored vectors is bound by memory bandwidth (N x d x 4 bytes). ``HalfFlatSearcher``
scans an fp16 copy (``faiss.IndexScalarQuantizer`` QT_fp16, half the bytes) on one OpenMP thread (for
one query, FAISS's threads cost more than they bring on 2 vCPU), then rescores the candidates with the
fp32 vectors of the (memory-mapped) Flat index. When scores crowd, one range scan widens the candidates to
every row that may belong to the exact
top k: an fp16 score is within ``eps`` of the true one, so every true top-k row scores at least
``kth - 2 eps`` in fp16. Results, scores included, are those of exact fp32 search (up to ties).
Batches of queries go to the Flat index itself (BLAS matrix products use every core well).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Protocol

import faiss
import numpy as np

from .index import search as index_search

FIRST_EXTRA = 16
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
        """Plain ``rag.index.search``."""
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
    """Exact inner-product search of an ``IndexFlatIP``: fp16 candidate scan on one thread, fp32 rescoring."""

    def __init__(self, index: faiss.Index) -> None:
        self.index = index
        self.vectors = flat_vectors(index)
        self.half = faiss.IndexScalarQuantizer(index.d, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT)
        max_norm = 0.0
        for start in range(0, len(self.vectors), ADD_CHUNK):
            chunk = self.vectors[start : start + ADD_CHUNK]
            self.half.add(chunk)
            max_norm = max(max_norm, float(np.linalg.norm(chunk, axis=1).max()))
        self.max_norm = max_norm

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
        with one_thread():
            scores, ids = self.half.search(query, wanted)
            candidates = ids[0][ids[0] >= 0]
            kth, last = scores[0, k - 1], scores[0, wanted - 1]
            if wanted < total and last >= kth - 2 * eps:
                # crowded scores: every row within 2 eps of the k-th may be in the exact top k; one range scan finds them
                _, _, found = self.half.range_search(query, float(kth - 2 * eps))
                candidates = np.union1d(candidates, found)
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

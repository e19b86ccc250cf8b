"""What the exact Flat scans share: the Flat index's vectors, shards scanned side by side on one OpenMP thread
each, and the exact rescoring that gives both scans (and the filtered search) the same scores and order.

A scan of a compressed copy only picks candidates; ``rescore`` then computes their scores from the fp32
vectors with FAISS's own inner-product kernel (``fvec_inner_product``, the one ``IndexFlatIP`` uses for a
filtered search and below its BLAS threshold) and ranks them by score, then by row id (ties: lower id first,
as ``rag.search.filtered`` pages them). The answer therefore does not depend on how the candidates were found.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Sequence

import faiss
import numpy as np

SHARD_MIN_ROWS = 50_000  # below this one shard: a thread hand-off costs more than half a scan saves
MAX_SHARDS = 4


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


def shard_bounds(total: int, shards: int | None = None) -> list[tuple[int, int]]:
    """Contiguous [lo, hi) row ranges: ``shards`` of them, else one per core (up to MAX_SHARDS) for big collections."""
    count = shards or (min(os.cpu_count() or 1, MAX_SHARDS) if total >= SHARD_MIN_ROWS else 1)
    edges = np.linspace(0, total, count + 1).astype(np.int64)
    return [(int(lo), int(hi)) for lo, hi in zip(edges[:-1], edges[1:])]


class ShardPool:
    """Runs one function on every shard, each call on one OpenMP thread; side by side in threads when there are
    several shards (FAISS releases the GIL), so a single query uses every core."""

    def __init__(self, count: int) -> None:
        self._pool = ThreadPoolExecutor(max_workers=count) if count > 1 else None

    def map(self, work: Callable[[Any], Any], shards: Sequence[Any]) -> list[Any]:
        """``[work(shard) for shard in shards]``, computed side by side."""

        def run(shard: Any) -> Any:
            with one_thread():
                return work(shard)

        if self._pool is None:
            return [run(shard) for shard in shards]
        return list(self._pool.map(run, shards))


def exact_scores_into(out: np.ndarray, vectors: np.ndarray, query: np.ndarray, ids: np.ndarray) -> None:
    """``out[i]`` = the exact score of row ``ids[i]`` (FAISS's kernel on the fp32 vectors): the one kernel every
    exact answer is scored with, so rescoring and full scoring agree bit for bit."""
    if len(ids):
        query = np.ascontiguousarray(query, dtype=np.float32).reshape(-1)
        faiss.fvec_inner_products_by_idx(faiss.swig_ptr(out), faiss.swig_ptr(query), faiss.swig_ptr(vectors),
                                         faiss.swig_ptr(ids), vectors.shape[1], 1, len(ids))


def rescore(vectors: np.ndarray, query: np.ndarray, candidates: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The best ``k`` of the candidate rows by exact score (FAISS's kernel on the fp32 vectors), then by id;
    (1, k) float32 scores and int64 ids. ``candidates`` must hold every row that can be in the top k."""
    ids = np.unique(np.asarray(candidates, dtype=np.int64))  # ascending: rows are read in file order
    scores = np.empty(len(ids), dtype=np.float32)
    with one_thread():  # FAISS would fork an OpenMP team for this; on a busy machine that costs ~20 ms
        exact_scores_into(scores, vectors, query, ids)
    order = np.lexsort((ids, -scores))[:k]
    return scores[order][None, :], ids[order][None, :]


def merge_shards(found: list[tuple[np.ndarray, np.ndarray]], offsets: Sequence[int],
                 wanted: int) -> tuple[np.ndarray, np.ndarray]:
    """One query's per-shard (scores, local ids) as the ``wanted`` best (scores, global ids), best first."""
    scores = np.concatenate([s for s, _ in found])
    ids = np.concatenate([np.where(i >= 0, i + offset, -1) for (_, i), offset in zip(found, offsets)])
    keep = ids >= 0
    scores, ids = scores[keep], ids[keep]
    order = np.lexsort((ids, -scores))[:wanted]
    return scores[order], ids[order]

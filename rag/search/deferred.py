"""A Flat index's scan copy built in a background thread at start-up, with exact answers while it is built.

Building the int8 scan copy (rag.search.int8_scan) reads and encodes every vector, every time the Space starts:
0.9 s at 100k rows on 2 vCPU at load 7, over a minute at 1M rows at load 13 (benchmarks/restart.py, "as before").
``DeferredSearcher`` starts that build in a thread, so the encoder loads and the page launches meanwhile. Until
the copy is ready, each query is answered by scoring every row with the exact kernel the scans rescore with and
ranking by score, then id (``exact_scores`` + ``top_rows``): the ids, scores and tie order are those the scan
gives, since the scan ends with the same rescoring. It costs one full fp32 read per query (25-35 ms at 100k rows), for the first seconds only.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

import faiss
import numpy as np

from rag.search.flat import INT8_MIN_ROWS, Searcher, make_searcher
from rag.search.index import search as index_search
from rag.search.scan import exact_scores_into, flat_vectors, one_thread

log = logging.getLogger(__name__)

SCORE_CHUNK = 262_144  # rows scored per kernel call: bounds the id array built for it
DEFER_MIN_ROWS = INT8_MIN_ROWS  # below this the (fp16) scan copy takes milliseconds: built at once


def exact_scores(vectors: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Every row's score with ``rag.search.scan.exact_scores_into``, the kernel ``rag.search.scan.rescore`` uses
    (so the scores are bit for bit those of a rescoring)."""
    scores = np.empty(len(vectors), dtype=np.float32)
    with one_thread():
        for start in range(0, len(vectors), SCORE_CHUNK):
            ids = np.arange(start, min(len(vectors), start + SCORE_CHUNK), dtype=np.int64)
            exact_scores_into(scores[start:], vectors, query, ids)
    return scores


def top_rows(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best (scores, ids) by score, then lower id first, as ``rescore`` ranks them."""
    k = min(k, len(scores))
    kth = np.partition(scores, len(scores) - k)[len(scores) - k]
    ids = np.flatnonzero(scores >= kth)  # every row tied with the k-th is a candidate
    order = np.lexsort((ids, -scores[ids]))[:k]
    return scores[ids[order]], ids[order].astype(np.int64)


class DeferredSearcher:
    """Exact search of an inner-product Flat index by ``build()``'s searcher once it is built (in a thread started
    here), by exact full scoring until then. A failed build is logged; the full scoring then goes on serving."""

    def __init__(self, index: faiss.Index, build: Callable[[], object], owner: object = None) -> None:
        self.index = index
        self._owner = owner  # the Python object owning the C++ index (a downcast view does not): alive while we read
        self.vectors = flat_vectors(index)
        self.inner: object | None = None
        self.build_seconds: float | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._build, args=(build,), name="scan-copy", daemon=True)
        self._thread.start()

    def _build(self, build: Callable[[], object]) -> None:
        started = time.perf_counter()
        try:
            self.inner = build()
            self.build_seconds = time.perf_counter() - started
            log.info("scan copy of %d rows built in %.2f s (in the background)", self.ntotal, self.build_seconds)
        except Exception as exc:  # e.g. MemoryError: exact full scoring keeps answering
            log.warning("scan copy not built (%s: %s); searching by exact full scoring", type(exc).__name__, exc)
        finally:
            self._ready.set()

    @property
    def ntotal(self) -> int:
        """Rows searched."""
        return int(self.index.ntotal)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the build has finished (or failed); False if ``timeout`` passed first."""
        return self._ready.wait(timeout)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, ids) per query, equal to exact search whether or not the scan copy is ready."""
        inner = self.inner
        if inner is not None:
            return inner.search(queries, k)
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if queries.ndim == 1:
            queries = queries[None, :]
        if self.ntotal == 0 or len(queries) == 0:
            return index_search(self.index, queries, k)
        k = max(1, min(int(k), self.ntotal))
        found = [top_rows(exact_scores(self.vectors, query), k) for query in queries]
        return np.stack([s for s, _ in found]), np.stack([i for _, i in found])


def start_searcher(index: faiss.Index) -> Searcher:
    """``make_searcher(index)``, its scan copy built in the background (``DeferredSearcher``) for Flat collections of
    DEFER_MIN_ROWS rows or more; any other index (or a small one) at once."""
    flat = faiss.downcast_index(index)
    if (type(flat) in (faiss.IndexFlatIP, faiss.IndexFlat) and flat.metric_type == faiss.METRIC_INNER_PRODUCT
            and flat.ntotal >= DEFER_MIN_ROWS):
        return DeferredSearcher(flat, lambda: make_searcher(flat), owner=index)
    return make_searcher(index)

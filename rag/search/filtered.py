"""One page of filtered top-k inside FAISS: IDSelector search, exact search of HNSW's storage, or widening.

Filtering happens inside the search, never by cutting a fixed top-k afterwards:
* Flat (exact) indexes search with the filter's IDSelector, so the result is the exact filtered top-k;
* HNSW keeps its vectors in a flat storage index: for selective filters (use_exact_subset) that storage is
  searched with the selector (exact, and faster than walking the graph past the rows the filter rejects);
  for broad filters HNSW itself searches with the selector;
* IVF searches with the selector at the index's own nprobe;
* indexes that take no selector (PQ, OPQ pre-transforms) over-fetch and widen until enough rows pass.
"""

from __future__ import annotations

import faiss
import numpy as np

from rag.search.filters import RowFilter

# HNSW with a selector walks the graph past rejected rows: at 10% of 300k rows it keeps the unfiltered recall
# (0.81 vs 0.82) at ~1 ms, but at 1% recall falls to 0.16 and latency grows 200x (benchmarks/filtered_search.py).
# So filters passing under 5% of the rows, or under 20k rows, are scored exactly in HNSW's flat storage instead.
EXACT_SUBSET_MAX_ROWS = 20_000
EXACT_SUBSET_MAX_SHARE = 0.05
WIDEN_FACTOR = 4
# Extra rows fetched past the page, so rows with equal scores (exact duplicates) cannot straddle a page boundary.
TIE_MARGIN = 8


def _params(index: faiss.Index, selector, need: int) -> faiss.SearchParameters:
    """Search parameters carrying the selector, keeping the index's own efSearch / nprobe (or more)."""
    inner = faiss.downcast_index(index)
    if isinstance(inner, faiss.IndexHNSW):
        return faiss.SearchParametersHNSW(sel=selector, efSearch=max(int(inner.hnsw.efSearch), need))
    if isinstance(inner, faiss.IndexIVF):
        return faiss.SearchParametersIVF(sel=selector, nprobe=int(inner.nprobe))
    return faiss.SearchParameters(sel=selector)


def _is_exact(index: faiss.Index) -> bool:
    return isinstance(faiss.downcast_index(index), faiss.IndexFlat)


def _valid(scores: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    keep = ids >= 0
    return scores[keep], ids[keep]


def _flat_storage(index: faiss.Index) -> faiss.Index | None:
    """HNSW's flat storage index (exact vectors), if that is what it keeps."""
    inner = faiss.downcast_index(index)
    if isinstance(inner, faiss.IndexHNSW):
        storage = faiss.downcast_index(inner.storage)
        if isinstance(storage, faiss.IndexFlat):
            return storage
    return None


def use_exact_subset(passing: int, total: int) -> bool:
    """Whether an HNSW search with this many passing rows is better done exactly in its flat storage."""
    return passing <= EXACT_SUBSET_MAX_ROWS or passing <= EXACT_SUBSET_MAX_SHARE * total


def _selector_search(index: faiss.Index, vector: np.ndarray, row_filter: RowFilter, need: int):
    """Search with the filter's IDSelector; None when the index type takes no selector."""
    try:
        scores, ids = index.search(vector, need, params=_params(index, row_filter.selector, need))
    except RuntimeError:
        return None
    return _valid(scores[0], ids[0])


def _widening_search(index: faiss.Index, vector: np.ndarray, row_filter: RowFilter, need: int):
    """Over-fetch by the inverse selectivity, widening until ``need`` rows pass or the whole index was read."""
    total = index.ntotal
    fetch = min(total, max(need, int(need * total / max(row_filter.count, 1))) * 2)
    while True:
        scores, ids = _valid(*(a[0] for a in index.search(vector, fetch)))
        keep = row_filter.mask[ids]
        if keep.sum() >= need or fetch >= total:
            return scores[keep][:need], ids[keep][:need]
        fetch = min(total, fetch * WIDEN_FACTOR)


def filtered_top(index: faiss.Index, vector: np.ndarray, need: int, row_filter: RowFilter | None):
    """The best ``need`` (scores, ids) for one query vector among the rows passing ``row_filter`` (all if None)."""
    vector = np.ascontiguousarray(vector, dtype=np.float32).reshape(1, -1)
    limit = index.ntotal if row_filter is None else row_filter.count
    need = min(need, limit)
    if need <= 0:
        return np.zeros(0, np.float32), np.zeros(0, np.int64)
    if row_filter is None:
        return _valid(*(a[0] for a in index.search(vector, need)))
    exact = _is_exact(index)
    storage = None if exact else _flat_storage(index)
    if storage is not None and use_exact_subset(row_filter.count, index.ntotal):
        index, exact = storage, True
    found = _selector_search(index, vector, row_filter, need)
    if found is not None and (exact or len(found[1]) >= need):
        return found
    return _widening_search(index, vector, row_filter, need)


def search_page(
    index: faiss.Index, vector: np.ndarray, k: int, offset: int = 0,
    row_filter: RowFilter | None = None, threshold: float | None = None,
) -> list[tuple[int, float]]:
    """Ranks offset+1 .. offset+k of the filtered ranking as (row id, score), cut at ``threshold`` if given."""
    scores, ids = filtered_top(index, vector, offset + k + TIE_MARGIN, row_filter)
    order = np.lexsort((ids, -scores))  # score descending, then row id: the same order on every page
    scores, ids = scores[order], ids[order]
    page = [(int(i), float(s)) for i, s in zip(ids[offset:offset + k], scores[offset:offset + k])]
    if threshold is not None:
        # compared as shown (scores are reported to 6 decimals): a score copied from a result keeps that result
        page = [(i, s) for i, s in page if round(float(s), 6) >= threshold]
    return page

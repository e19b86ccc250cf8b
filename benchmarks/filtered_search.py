"""Filtered search and near-duplicates: latency against unfiltered search, recall against brute force.

Generated clustered 512-d unit vectors; filters pass a random 10% / 1% / 0.1% of the rows; k = 10, one query at a
time through rag.search.filtered.search_page (what Pipeline.search runs). Flat at --flat-size (exact by
construction: recall is checked, not assumed), the `auto` index (HNSW32) at --hnsw-size. Then the duplicate
groups of a --flat-size collection with 1% planted near-copies (rag.search.duplicates.find_duplicates).

Usage: python -m benchmarks.filtered_search [--flat-size 70000] [--hnsw-size 1000000] [--queries 50] [--no-duplicates]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from benchmarks.common import clustered_vectors, queries_near, report, summary, timings

import faiss
from rag.search import filtered as filtered_search
from rag.search.duplicates import find_duplicates
from rag.search.filters import RowFilter
from rag.search.filtered import search_page
from rag.search.index import auto_factory, build_index

K = 10
SELECTIVITIES = (0.10, 0.01, 0.001)


def brute_top(vectors: np.ndarray, query: np.ndarray, mask: np.ndarray | None) -> set[int]:
    """The exact filtered top-k ids (NumPy)."""
    ids = np.flatnonzero(mask) if mask is not None else np.arange(len(vectors))
    scores = vectors[ids] @ query
    return set(ids[np.argsort(-scores)[:K]].tolist())


def path_taken(index, row_filter: RowFilter | None, flip: bool = False) -> str:
    """Which strategy filtered_search picks for this index and filter (for the table); ``flip``: the other one."""
    if row_filter is None:
        return "plain search"
    if isinstance(faiss.downcast_index(index), faiss.IndexFlat):
        return "IDSelector (exact)"
    if filtered_search.use_exact_subset(row_filter.count, index.ntotal) != flip:
        return "IDSelector on HNSW's flat storage (exact)"
    return "IDSelector in HNSW"


def measure(index, vectors: np.ndarray, queries: np.ndarray, row_filter: RowFilter | None, repeat: int) -> dict:
    """Latency (p50/p95) and recall@10 against brute force for one filter."""
    position = iter(range(10**9))
    seconds = timings(lambda: search_page(index, queries[next(position) % len(queries)], K, 0, row_filter), repeat)
    mask = row_filter.mask if row_filter is not None else None
    recall = np.mean([
        len({i for i, _ in search_page(index, q, K, 0, row_filter)} & brute_top(vectors, q, mask)) / K
        for q in queries
    ])
    return {**summary(seconds), "recall@10": float(recall), "path": path_taken(index, row_filter)}


def run_index(name: str, vectors: np.ndarray, factory: str, queries: np.ndarray, repeat: int, forced: bool) -> list:
    """Rows of the table for one index: unfiltered, then each selectivity."""
    started = time.perf_counter()
    index = build_index(vectors, factory)
    build_s = time.perf_counter() - started
    print(f"built {factory} over {len(vectors):,} rows in {build_s:.0f} s", flush=True)
    rng = np.random.default_rng(5)
    rows = []
    base = measure(index, vectors, queries, None, repeat)
    rows.append({"index": name, "rows": len(vectors), "filter passes": "all", **base, "vs unfiltered": 1.0})
    for share in SELECTIVITIES:
        row_filter = RowFilter({"label": {"in": ["bench"]}}, rng.random(len(vectors)) < share)
        result = measure(index, vectors, queries, row_filter, repeat)
        rows.append({"index": name, "rows": len(vectors), "filter passes": f"{share:.1%} ({row_filter.count:,})",
                     **result, "vs unfiltered": result["p50_ms"] / base["p50_ms"]})
        if forced:  # the other strategy, for comparison
            chosen = filtered_search.use_exact_subset
            filtered_search.use_exact_subset = lambda passing, total: not chosen(passing, total)
            try:
                result = measure(index, vectors, queries, row_filter, repeat)
            finally:
                filtered_search.use_exact_subset = chosen
            rows.append({"index": name, "rows": len(vectors), "filter passes": f"{share:.1%} (other path)",
                         **result, "path": path_taken(index, row_filter, flip=True) + " (not chosen)",
                         "vs unfiltered": result["p50_ms"] / base["p50_ms"]})
    return rows


def duplicates_row(size: int, threshold: float = 0.95) -> dict:
    """Time to group near-duplicates over a Flat collection with 1% planted near-copies."""
    vectors = clustered_vectors(size, seed=3)
    rng = np.random.default_rng(4)
    copies = rng.choice(size, size // 100, replace=False)
    originals = rng.choice(size, size // 100, replace=False)
    noisy = vectors[originals] + rng.standard_normal((len(copies), vectors.shape[1])).astype(np.float32) * 0.005
    vectors[copies] = noisy / np.linalg.norm(noisy, axis=1, keepdims=True)
    index = build_index(vectors, "Flat")
    found = find_duplicates(index, lambda a, b: vectors[a:b], threshold, 50)
    return {"rows": size, "threshold": threshold, "planted copies": len(copies), "pairs": found.pairs,
            "groups": found.total_groups, "seconds": found.seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--flat-size", type=int, default=70_000)
    parser.add_argument("--hnsw-size", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=100)
    parser.add_argument("--no-duplicates", action="store_true", help="skip the near-duplicate timing")
    args = parser.parse_args()
    rows = []
    for size, factory in ((args.flat_size, "Flat"), (args.hnsw_size, "HNSW32,Flat")):
        vectors = clustered_vectors(size)
        queries = queries_near(vectors, args.queries)
        name = factory if size > 250_000 or factory == "Flat" else f"{factory} (auto at 1M; built at {size:,})"
        rows += run_index(name, vectors, factory, queries, args.repeat, forced=factory != "Flat")
        del vectors
    columns = ["index", "rows", "filter passes", "path", "p50_ms", "p95_ms", "vs unfiltered", "recall@10"]
    report("filtered_search", "Filtered search (k = 10, one query at a time)", rows, columns,
           extra={"auto_factory_1M": auto_factory(1_000_000, 512)})
    if args.no_duplicates:
        return
    report("duplicates", "Near-duplicate groups (Flat, range search, threshold 0.95)", [duplicates_row(args.flat_size)],
           ["rows", "threshold", "planted copies", "pairs", "groups", "seconds"])


if __name__ == "__main__":
    main()

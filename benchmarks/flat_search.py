"""Exact single-query Flat search: rag.search.flat (fp16 scan + fp32 rescoring) vs FAISS IndexFlatIP vs NumPy.

Generated clustered 512-d unit vectors written with rag.search.index.save_index and loaded memory-mapped with
load_index, as the Space loads a collection. k = 10, one query at a time, each method in two blocks (A B C D,
then again: interleaving call by call made NumPy's BLAS threads and FAISS's OpenMP threads spin against
each other and inflated NumPy ~10x); ratios against NumPy ``X @ q`` (+ argpartition) on an in-RAM copy of the same vectors.
Usage: python -m benchmarks.flat_search [--sizes 250000,1000000] [--queries 100]
"""

from __future__ import annotations

import argparse
import gc
import tempfile
import time
from pathlib import Path

import numpy as np
from benchmarks.common import clustered_vectors, queries_near, report, rss_mb

from rag.search.flat import HalfFlatSearcher, flat_vectors, one_thread
from rag.search.index import build_index, load_index, save_index

K = 10


def methods(index, searcher: HalfFlatSearcher) -> dict:
    """name -> function(query (1, d)) returning the top-K ids."""
    # NumPy on an in-RAM copy: on the memory-mapped view itself (not aligned for BLAS) each product copied
    # the whole matrix first and took ~10x longer, which would flatter every other method
    x = np.array(flat_vectors(index))

    def numpy_search(q):
        scores = x @ q[0]
        top = np.argpartition(-scores, K)[:K]
        return top[np.argsort(-scores[top])]

    def faiss_one_thread(q):
        with one_thread():
            return index.search(q, K)[1][0]

    return {
        "NumPy X @ q (baseline)": numpy_search,
        "FAISS IndexFlatIP (default threads)": lambda q: index.search(q, K)[1][0],
        "FAISS IndexFlatIP, 1 thread": faiss_one_thread,
        "rag.search.flat (fp16 shards scanned side by side, fp32 rescoring)": lambda q: searcher.search(q, K)[1][0],
    }


def measure(size: int, queries: int, work: Path) -> list[dict]:
    vectors = clustered_vectors(size)
    query_set = queries_near(vectors, queries)
    save_index(build_index(vectors, "Flat"), work / "flat.faiss")
    del vectors
    gc.collect()
    index = load_index(work / "flat.faiss")
    before, start = rss_mb(), time.perf_counter()
    searcher = HalfFlatSearcher(index)
    prepare_s, extra_mb = time.perf_counter() - start, rss_mb() - before
    found = methods(index, searcher)
    truth = [index.search(q[None], K)[1][0] for q in query_set]
    for function in found.values():  # warm-up: pages of the mmapped file in, code paths hot
        function(query_set[0][None])
    seconds = {name: [] for name in found}
    recall = {name: [] for name in found}
    half = len(query_set) // 2
    for block in (slice(0, half), slice(half, None)):  # A B C D, then again: one thread pool at a time
        for name, function in found.items():
            function(query_set[0][None])  # let the previous method's idle threads settle on this one's
            for q, exact in zip(query_set[block], truth[block]):
                start = time.perf_counter()
                ids = function(q[None])
                seconds[name].append(time.perf_counter() - start)
                recall[name].append(len(set(ids) & set(exact)) / K)
    base = np.median(seconds["NumPy X @ q (baseline)"])
    rows = []
    for name in found:
        p50 = float(np.median(seconds[name]))
        rows.append({"rows": size, "method": name, "p50_ms": p50 * 1e3, "p95_ms": float(np.percentile(seconds[name], 95) * 1e3),
                     "ratio_vs_numpy": p50 / base, "recall@10": float(np.mean(recall[name])),
                     "prepare_s": prepare_s if name.startswith("rag") else 0.0,
                     "extra_rss_mb": extra_mb if name.startswith("rag") else 0.0})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="250000,1000000")
    parser.add_argument("--queries", type=int, default=100)
    args = parser.parse_args()
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        with tempfile.TemporaryDirectory() as tmp:
            rows += measure(size, args.queries, Path(tmp))
    report("flat_search", f"Exact single-query search, 512-d, k={K}, {args.queries} queries per size", rows,
           ["rows", "method", "p50_ms", "p95_ms", "ratio_vs_numpy", "recall@10", "prepare_s", "extra_rss_mb"])


if __name__ == "__main__":
    main()

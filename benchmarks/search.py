"""Search-only speed and memory: our wrapper vs bare FAISS vs NumPy brute force vs datasets.add_faiss_index.

Generated clustered 512-d unit vectors, k = 10, one query at a time (as a user's request arrives).
Usage: python -m benchmarks.search [--sizes 30000,1000000] [--queries 200] [--hnsw-max 100000]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from benchmarks.common import ROOT, clustered_vectors, queries_near, report, summary, timings

import faiss
from rag.search.index import build_index, default_search_params, load_index, save_index
from rag.search.index import search as rag_search

K = 10


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / K for a, b in zip(found, truth)]))


def per_query(function, queries: np.ndarray, repeat: int) -> np.ndarray:
    """Time ``function(q)`` on single queries, cycling through the query set."""
    position = iter(range(10**9))
    return timings(lambda: function(queries[next(position) % len(queries)][None, :]), repeat)


def measured_recall(function, queries: np.ndarray, exact: np.ndarray) -> float:
    """recall@10 of ``function`` (one query (1, d) -> its top-K ids) against the exact top-K, query by query."""
    found = np.array([np.asarray(function(q[None, :])).reshape(-1)[:K] for q in queries])
    return recall_at_k(found, exact)


def numpy_search(x: np.ndarray):
    def run(q: np.ndarray):
        scores = x @ q[0]
        top = np.argpartition(-scores, K)[:K]
        return top[np.argsort(-scores[top])]
    return run


def loaded_memory(path: Path, params: str, queries: np.ndarray) -> tuple[float, float]:
    """RSS growth (MB) of a fresh process after load_index, and after 100 searches (pages touched by mmap)."""
    np.save(Path(path).with_suffix(".q.npy"), queries[:100])
    code = f"""
import numpy as np, psutil
from rag.search.index import load_index, search
p = psutil.Process(); base = p.memory_info().rss
index = load_index(__import__('pathlib').Path({str(path)!r}), {params!r})
after = p.memory_info().rss
for q in np.load({str(Path(path).with_suffix('.q.npy'))!r}): search(index, q, 10)
print((after - base) / 2**20, (p.memory_info().rss - base) / 2**20)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout.split()
    return float(out[0]), float(out[1])


def baselines(x: np.ndarray, queries: np.ndarray, exact: np.ndarray, repeat: int, with_datasets: bool) -> list[dict]:
    """NumPy brute force and ``datasets``' FAISS index: latency and recall, each measured."""
    numpy_run = numpy_search(x)
    base = summary(per_query(numpy_run, queries, repeat))
    rows = [{"method": "NumPy brute force (X @ q, argpartition)", **base,
             "recall@10": measured_recall(numpy_run, queries, exact), "vs_numpy": 1.0}]
    if with_datasets:
        import datasets

        ds = datasets.Dataset.from_dict({"emb": x, "row": np.arange(len(x))})
        ds.add_faiss_index(column="emb", metric_type=faiss.METRIC_INNER_PRODUCT)
        nearest = lambda q: ds.get_nearest_examples("emb", q[0], k=K).examples["row"]  # noqa: E731
        timed = summary(per_query(nearest, queries, repeat))
        rows.append({"method": "datasets add_faiss_index + get_nearest_examples", **timed,
                     "recall@10": measured_recall(nearest, queries, exact), "vs_numpy": base["p50_ms"] / timed["p50_ms"]})
    return rows


def index_rows(x: np.ndarray, factory: str, queries: np.ndarray, exact: np.ndarray, repeat: int, numpy_p50: float) -> list[dict]:
    """One factory: bare ``index.search`` and ``rag.search.index.search`` on the saved, memory-mapped index."""
    t0 = time.perf_counter()
    index = build_index(x, factory)
    build_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "index.faiss"
        save_index(index, path)
        del index
        size_mb = path.stat().st_size / 2**20
        params = default_search_params(factory)
        loaded = load_index(path, params)
        bare_run = lambda q: loaded.search(q, K)[1][0]  # noqa: E731
        ours_run = lambda q: rag_search(loaded, q, K)[1][0]  # noqa: E731
        bare = summary(per_query(bare_run, queries, repeat))
        ours = summary(per_query(ours_run, queries, repeat))
        bare_recall, ours_recall = measured_recall(bare_run, queries, exact), measured_recall(ours_run, queries, exact)
        rss_load, rss_search = loaded_memory(path, params, queries)
        del loaded
    label = f"{factory}" + (f" ({params})" if params else "")
    return [
        {"method": f"bare faiss {label}", **bare, "recall@10": bare_recall, "vs_numpy": numpy_p50 / bare["p50_ms"],
         "build_s": build_s},
        {"method": f"rag.search.index.search {label}", **ours, "recall@10": ours_recall,
         "vs_numpy": numpy_p50 / ours["p50_ms"], "wrapper/bare": ours["p50_ms"] / bare["p50_ms"], "disk_MB": size_mb,
         "rss_load_MB": rss_load, "rss_after_100q_MB": rss_search},
    ]


def run(sizes: list[int], n_queries: int, hnsw_max: int, with_datasets: bool, repeat: int | None) -> list[dict]:
    rows: list[dict] = []
    for n in sizes:
        started = time.perf_counter()
        x = clustered_vectors(n)
        queries = queries_near(x, n_queries)
        truth = faiss.IndexFlatIP(x.shape[1])
        truth.add(x)
        _, exact = truth.search(queries, K)  # batched exact search: FAISS's BLAS path, the reference
        del truth
        times = repeat or (50 if n > 300_000 else 200)
        found = baselines(x, queries, exact, times, with_datasets)
        nlist = 1 << int(np.log2(4 * np.sqrt(n)))
        configs = ["Flat"] + (["HNSW32,Flat"] if n <= hnsw_max else []) + [f"IVF{nlist},SQ8", f"IVF{nlist},PQ64x4fs"]
        for factory in configs:
            found += index_rows(x, factory, queries, exact, times, found[0]["p50_ms"])
        rows += [{"N": n, **row} for row in found]
        print(f"N={n}: {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="30000,1000000")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--hnsw-max", type=int, default=100_000,
                        help="skip HNSW above this N (building HNSW32 on 2 vCPU runs at ~1.6k vectors/s)")
    parser.add_argument("--repeat", type=int, help="timed calls per method (default 200, 50 above 300k rows)")
    parser.add_argument("--no-datasets", action="store_true", help="skip the datasets.add_faiss_index baseline")
    args = parser.parse_args()
    rows = run([int(s) for s in args.sizes.split(",")], args.queries, args.hnsw_max, not args.no_datasets, args.repeat)
    report("search", "Search only: per-query latency, k = 10, 512-d", rows,
           ["N", "method", "p50_ms", "p95_ms", "per_s", "recall@10", "vs_numpy", "wrapper/bare", "build_s", "disk_MB",
            "rss_load_MB", "rss_after_100q_MB"])


if __name__ == "__main__":
    main()

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


def datasets_baseline(x: np.ndarray, queries: np.ndarray, repeat: int) -> np.ndarray:
    import datasets

    ds = datasets.Dataset.from_dict({"emb": x, "row": np.arange(len(x))})
    ds.add_faiss_index(column="emb", metric_type=faiss.METRIC_INNER_PRODUCT)
    return per_query(lambda q: ds.get_nearest_examples("emb", q[0], k=K), queries, repeat)


def run(sizes: list[int], n_queries: int, hnsw_max: int, with_datasets: bool) -> list[dict]:
    rows: list[dict] = []
    for n in sizes:
        started = time.perf_counter()
        x = clustered_vectors(n)
        queries = queries_near(x, n_queries)
        truth = faiss.IndexFlatIP(x.shape[1])
        truth.add(x)
        _, exact = truth.search(queries, K)
        repeat = 50 if n > 300_000 else 200
        numpy_t = per_query(numpy_search(x), queries, repeat)
        baseline = summary(numpy_t)
        rows.append({"N": n, "method": "NumPy brute force (X @ q, argpartition)", **baseline,
                     "recall@10": 1.0, "vs_numpy": 1.0})
        if with_datasets:
            ds = summary(datasets_baseline(x, queries, repeat))
            rows.append({"N": n, "method": "datasets add_faiss_index + get_nearest_examples", **ds, "recall@10": 1.0,
                         "vs_numpy": baseline["p50_ms"] / ds["p50_ms"]})
        nlist = 1 << int(np.log2(4 * np.sqrt(n)))
        configs = ["Flat"] + (["HNSW32,Flat"] if n <= hnsw_max else []) + [f"IVF{nlist},SQ8", f"IVF{nlist},PQ64x4fs"]
        for factory in configs:
            t0 = time.perf_counter()
            index = build_index(x, factory)
            build_s = time.perf_counter() - t0
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "index.faiss"
                save_index(index, path)
                size_mb = path.stat().st_size / 2**20
                params = default_search_params(factory)
                loaded = load_index(path, params)
                bare = summary(per_query(lambda q: loaded.search(q, K), queries, repeat))
                ours = summary(per_query(lambda q: rag_search(loaded, q, K), queries, repeat))
                _, found = rag_search(loaded, queries, K)
                rss_load, rss_search = loaded_memory(path, params, queries)
                del loaded
            label = f"{factory}" + (f" ({params})" if params else "")
            rows.append({"N": n, "method": f"bare faiss {label}", **bare, "recall@10": recall_at_k(found, exact),
                         "vs_numpy": baseline["p50_ms"] / bare["p50_ms"], "build_s": build_s})
            rows.append({"N": n, "method": f"rag.search.index.search {label}", **ours, "recall@10": recall_at_k(found, exact),
                         "vs_numpy": baseline["p50_ms"] / ours["p50_ms"], "wrapper/bare": ours["p50_ms"] / bare["p50_ms"],
                         "disk_MB": size_mb, "rss_load_MB": rss_load, "rss_after_100q_MB": rss_search})
            del index
        print(f"N={n}: {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="30000,1000000")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--hnsw-max", type=int, default=100_000,
                        help="skip HNSW above this N (building HNSW32 on 2 vCPU runs at ~1.6k vectors/s)")
    parser.add_argument("--no-datasets", action="store_true", help="skip the datasets.add_faiss_index baseline")
    args = parser.parse_args()
    rows = run([int(s) for s in args.sizes.split(",")], args.queries, args.hnsw_max, not args.no_datasets)
    report("search", "Search only: per-query latency, k = 10, 512-d", rows,
           ["N", "method", "p50_ms", "p95_ms", "per_s", "recall@10", "vs_numpy", "wrapper/bare", "build_s", "disk_MB",
            "rss_load_MB", "rss_after_100q_MB"])


if __name__ == "__main__":
    main()

"""Exact single-query search beside the memory-bandwidth floor: NumPy fp32, FAISS IndexFlatIP, the fp16 scan and the
int8 scan (rag.search.flat / rag.search.int8_scan), each with the time its bytes take at this machine's bandwidth.

The bandwidth is measured before each size, STREAM-like, on 512 MB arrays: "copy" (np.copyto, counted as read +
write) and "read" (FAISS's SIMD sum of squares over the array, on one thread and one half per core side by side;
the faster counts). A method's floor is the bytes its scan must read (N x d x 4, x 2, x 1) over that bandwidth. Generated clustered 512-d
unit vectors are written with rag.search.index.save_index and loaded memory-mapped, as the Space loads them; k = 10;
two query kinds: "near" (a stored vector plus noise, as a text query resembles its image) and "random" (random
directions: low, crowded scores, the int8 bound's hard case). Each method runs in blocks (A B C D, then again),
ratios against NumPy ``X @ q`` (+ argpartition) on an in-RAM copy measured in the same run. "identical" is the
share of queries whose ids and scores equal the exact ranking (every row scored by FAISS's kernel, ties by id);
"recall@10" is against IndexFlatIP's own top 10. The load average is recorded with every row: the machine is shared.

Usage: python -m benchmarks.exact_scan [--sizes 10000,50000,250000,1000000] [--queries 60]
"""

from __future__ import annotations

import argparse
import gc
import os
import tempfile
import time
from pathlib import Path
from typing import Callable

import faiss
import numpy as np
from benchmarks.common import clustered_vectors, queries_near, report, rss_mb

from rag.search.flat import HalfFlatSearcher, Int8FlatSearcher, flat_vectors, one_thread
from rag.search.index import build_index, load_index, save_index
from rag.search.scan import ShardPool, rescore

K = 10
PROBE_MB = 512
BASELINE = "NumPy X @ q (fp32, baseline)"
FLAT = "FAISS IndexFlatIP, 1 thread (fp32)"


def bandwidth(repeat: int = 7) -> dict[str, float]:
    """GB/s of a single-thread copy, a copy per core and a read per core (best of ``repeat``), at PROBE_MB."""
    src = np.ones(PROBE_MB * 2**20 // 4, dtype=np.float32)
    dst = np.empty_like(src)
    cores = os.cpu_count() or 1
    pool = ShardPool(cores)
    src_parts, dst_parts = np.array_split(src, cores), np.array_split(dst, cores)

    def best(work: Callable[[], object]) -> float:
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            work()
            times.append(time.perf_counter() - start)
        return min(times)

    size = src.nbytes / 1e9
    speed = {
        "copy_1_thread_gb_s": 2 * size / best(lambda: np.copyto(dst, src)),
        "copy_all_cores_gb_s": 2 * size / best(lambda: pool.map(lambda i: np.copyto(dst_parts[i], src_parts[i]), range(cores))),
        "read_1_thread_gb_s": size / best(lambda: faiss.fvec_norm_L2sqr(faiss.swig_ptr(src), len(src))),
        "read_all_cores_gb_s": size / best(lambda: pool.map(
            lambda part: faiss.fvec_norm_L2sqr(faiss.swig_ptr(part), len(part)), src_parts)),
        "cores": cores,
    }
    return {**speed, "read_gb_s": max(speed["read_1_thread_gb_s"], speed["read_all_cores_gb_s"])}


def methods(index: faiss.Index, half: HalfFlatSearcher, int8: Int8FlatSearcher) -> dict[str, tuple[Callable, int]]:
    """name -> (function(query (1, d)) -> top-K ids, bytes per row its scan reads)."""
    x = np.array(flat_vectors(index))  # NumPy on an in-RAM copy (BLAS copies an unaligned memory map first)
    dim = x.shape[1]

    def numpy_search(q):
        scores = x @ q[0]
        top = np.argpartition(-scores, K)[:K]
        return top[np.argsort(-scores[top])]

    def faiss_flat(q):
        with one_thread():
            return index.search(q, K)[1][0]

    return {
        BASELINE: (numpy_search, 4 * dim),
        FLAT: (faiss_flat, 4 * dim),
        "rag fp16 scan + exact rescoring": (lambda q: half.search(q, K)[1][0], 2 * dim),
        "rag int8 scan + bound + exact rescoring": (lambda q: int8.search(q, K)[1][0], dim),
    }


def query_sets(vectors: np.ndarray, count: int) -> dict[str, np.ndarray]:
    """The two query kinds (see the module docstring)."""
    rng = np.random.default_rng(2)
    random = rng.standard_normal((count, vectors.shape[1])).astype(np.float32)
    return {"near": queries_near(vectors, count), "random": random / np.linalg.norm(random, axis=1, keepdims=True)}


def timed(found: dict, queries: np.ndarray) -> dict[str, list[float]]:
    """Seconds per query for each method, in two blocks each (one thread pool busy at a time)."""
    seconds = {name: [] for name in found}
    half = len(queries) // 2
    for block in (slice(0, half), slice(half, None)):
        for name, (function, _) in found.items():
            function(queries[0][None])  # let the previous method's idle threads settle on this one's
            for q in queries[block]:
                start = time.perf_counter()
                function(q[None])
                seconds[name].append(time.perf_counter() - start)
    return seconds


def correctness(index, vectors, half, int8, queries) -> dict[str, tuple[float, float]]:
    """Per rag method: (share identical to the exact ranking, recall@K against IndexFlatIP)."""
    everything = np.arange(len(vectors), dtype=np.int64)
    searchers = {"rag fp16 scan + exact rescoring": half, "rag int8 scan + bound + exact rescoring": int8}
    same, recall = {name: [] for name in searchers}, {name: [] for name in searchers}
    for q in queries:
        truth_scores, truth_ids = rescore(vectors, q, everything, K)  # every row scored, ranked by score then id
        flat_ids = set(index.search(q[None], K)[1][0])
        for name, searcher in searchers.items():
            scores, ids = searcher.search(q, K)
            same[name].append(np.array_equal(ids, truth_ids) and np.array_equal(scores, truth_scores))
            recall[name].append(len(set(ids[0]) & flat_ids) / K)
    return {name: (float(np.mean(same[name])), float(np.mean(recall[name]))) for name in searchers}


def measure(size: int, count: int, work: Path) -> list[dict]:
    speed = bandwidth()
    print({k: round(v, 2) for k, v in speed.items()}, "load", os.getloadavg(), flush=True)
    vectors = clustered_vectors(size)
    sets = query_sets(vectors, count)
    save_index(build_index(vectors, "Flat"), work / "flat.faiss")
    del vectors
    gc.collect()
    index = load_index(work / "flat.faiss")
    built = {}
    for kind in (HalfFlatSearcher, Int8FlatSearcher):
        before, start = rss_mb(), time.perf_counter()
        built[kind] = (kind(index), time.perf_counter() - start, rss_mb() - before)
    half, int8 = built[HalfFlatSearcher][0], built[Int8FlatSearcher][0]
    found = methods(index, half, int8)
    rows = []
    for kind, queries in sets.items():
        seconds = timed(found, queries)
        checked = correctness(index, flat_vectors(index), half, int8, queries[: max(10, count // 3)])
        base = float(np.median(seconds[BASELINE]))
        flat = float(np.median(seconds[FLAT]))
        for name, (_, row_bytes) in found.items():
            p50 = float(np.median(seconds[name]))
            floor_ms = size * row_bytes / (speed["read_gb_s"] * 1e9) * 1e3
            owner = {"rag fp16": HalfFlatSearcher, "rag int8": Int8FlatSearcher}.get(name[:8])
            rows.append({
                "rows": size, "queries": kind, "method": name, "p50_ms": p50 * 1e3,
                "p95_ms": float(np.percentile(seconds[name], 95) * 1e3), "ratio_vs_numpy": p50 / base,
                "ratio_vs_faiss": p50 / flat,
                "read_mb": size * row_bytes / 2**20, "floor_ms": floor_ms, "x_floor": p50 * 1e3 / floor_ms,
                "identical": checked.get(name, (None, None))[0], "recall@10": checked.get(name, (None, None))[1],
                "scan_copy_mb": (int8.nbytes if owner is Int8FlatSearcher else 2 * size * index.d + 0.0) / 2**20
                if owner else 0.0,
                "prepare_s": built[owner][1] if owner else 0.0, "read_gb_s": speed["read_gb_s"],
                "load_1min": os.getloadavg()[0],
            })
            print({k: (round(v, 3) if isinstance(v, float) else v) for k, v in rows[-1].items()}, flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="10000,50000,250000,1000000")
    parser.add_argument("--queries", type=int, default=60)
    args = parser.parse_args()
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        with tempfile.TemporaryDirectory() as tmp:
            rows += measure(size, args.queries, Path(tmp))
    report("exact_scan", f"Exact single-query search beside the bandwidth floor (read_gb_s: measured before each "
           f"size); 512-d, k={K}, {args.queries} queries per kind and size", rows,
           ["rows", "queries", "method", "p50_ms", "p95_ms", "ratio_vs_numpy", "ratio_vs_faiss", "read_gb_s",
            "floor_ms", "x_floor", "identical", "recall@10", "scan_copy_mb", "prepare_s", "load_1min"], extra={"k": K})


if __name__ == "__main__":
    main()

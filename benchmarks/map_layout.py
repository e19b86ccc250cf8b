"""openTSNE vs UMAP for the collection map: seconds, peak memory and neighbourhood quality on N clustered vectors.

A fair comparison: both methods get the same exact cosine neighbours (rag.explore.layout.cosine_neighbours)
and the same thread count (``--threads``, default 1: seeded UMAP cannot use more), and numba's compilation
is done on a small warm-up layout before the timed one, so ``seconds`` is the layout alone; ``cpu_seconds``
(user + system) stands beside it. Each method runs in a fresh process; its peak resident memory is its own.
Quality: label agreement raw, its ceiling and normalised by it (rag.metrics.map_quality), trustworthiness and
continuity. ``--noise`` makes the clusters overlap so that the methods can differ. Usage:

  python -m benchmarks.map_layout [--rows 70000] [--methods tsne,umap] [--threads 1] [--noise 1.5] [--name map_layout]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np

from benchmarks.common import ROOT, report

CLUSTERS = 200


def labelled_vectors(n: int, dim: int = 512, seed: int = 0, noise: float = 1.0) -> tuple[np.ndarray, list[str]]:
    """Unit vectors around CLUSTERS random centres (cluster = label); ``noise`` 1 makes clusters touch."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((CLUSTERS, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    owner = rng.integers(0, CLUSTERS, n)
    out = centres[owner] + rng.standard_normal((n, dim)).astype(np.float32) * (noise / np.sqrt(dim))
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out, [f"c{i}" for i in owner]


def run_one(method: str, rows: int, threads: int, noise: float) -> dict:
    """Child process: warm up (numba compiles here), then time one layout; peak memory above the data itself."""
    from rag.explore.layout import compute_layout
    from rag.metrics import map_quality

    compute_layout(labelled_vectors(300, seed=1)[0], method=method, progress=False, threads=threads)
    vectors, labels = labelled_vectors(rows, noise=noise)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    started, cpu = time.perf_counter(), time.process_time()
    xy = compute_layout(vectors, method=method, progress=False, threads=threads)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    quality = map_quality(vectors, xy, labels, sample=2000)
    return {"method": method, "rows": rows, "threads": threads, "noise": noise, "seconds": seconds, "cpu_seconds": cpu, "peak_rss_mb": peak,
            "layout_extra_mb": peak - before, **quality}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=70_000)
    parser.add_argument("--methods", default="tsne,umap")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--noise", type=float, default=1.5)
    parser.add_argument("--name", default="map_layout", help="results file name (default map_layout)")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args.rows, args.threads, args.noise)))
        return
    results = []
    for method in args.methods.split(","):
        done = subprocess.run([sys.executable, "-m", "benchmarks.map_layout", "--one", method, "--rows", str(args.rows),
                               "--threads", str(args.threads), "--noise", str(args.noise)],
                              cwd=ROOT, capture_output=True, text=True, check=True)
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(results[-1], flush=True)
    baseline = results[0]["seconds"]
    for row in results:
        row["time_vs_first"] = row["seconds"] / baseline
    report(args.name, f"Map layout of {args.rows:,} clustered 512-d vectors (noise {args.noise}, PCA to 50, "
           f"same exact cosine neighbours, {args.threads} thread(s), numba compiled before timing)", results,
           ["method", "rows", "seconds", "cpu_seconds", "time_vs_first", "peak_rss_mb", "layout_extra_mb",
            "label_agreement_ceiling", "label_agreement_embedding_normalised", "label_agreement_map_normalised",
            "trustworthiness", "continuity"])


if __name__ == "__main__":
    main()

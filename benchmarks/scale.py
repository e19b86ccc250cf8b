"""Serving at scale: a generated collection of N rows served by a fresh process, as the Space would.

Clustered 512-d unit vectors and generated metadata (benchmarks/synthetic.py, ~5 KB thumbnails), the index
the ``auto`` factory picks for N (or --factory). Measured in a fresh process: start-up (Collection.open,
checksums already stamped, as on a restart; the first start's sha256 pass is timed apart), resident memory
after load and after 1000 queries, p50/p95 of one query (index search + its 10 metadata rows), recall@10
against exact search. Then the trend to 10M/100M rows, extrapolated from the measured bytes per row.
Usage: python -m benchmarks.scale [--sizes 1000000] [--factory auto] [--queries 1000]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from benchmarks.common import ROOT, clustered_vectors, queries_near, report
from benchmarks.synthetic import write_synthetic_collection

import faiss
from rag.collection.reader import Manifest, verify_files
from rag.search.index import auto_factory

K = 10
DIM = 512
RECALL_QUERIES = 200

SERVE = """
import json, sys, time, numpy as np, psutil
sys.path.insert(0, {root!r})
from pathlib import Path
from rag.collection.reader import Collection
from rag.search.index import search
p = psutil.Process(); base = p.memory_info().rss
t = time.perf_counter(); c = Collection.open(Path({path!r}), verify_checksums=False); load = time.perf_counter() - t
after_load = p.memory_info().rss
queries = np.load({queries!r}); found = []; seconds = []
for q in queries:
    t = time.perf_counter(); scores, ids = search(c.index, q, 10); rows = c.rows([i for i in ids[0] if i >= 0])
    seconds.append(time.perf_counter() - t); found.append(ids[0])
print(json.dumps({{"open_s": load, "rss_load_MB": (after_load - base) / 2**20,
  "rss_1000q_MB": (p.memory_info().rss - base) / 2**20, "p50_ms": float(np.percentile(seconds, 50) * 1e3),
  "p95_ms": float(np.percentile(seconds, 95) * 1e3), "found": np.array(found)[:{recall}].tolist()}}))
"""


def exact_top_k(vectors: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Ground truth: exact inner-product top-k."""
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    return index.search(queries, K)[1]


def measure(n: int, factory: str, n_queries: int, tmp: Path) -> dict:
    """Build one collection of ``n`` rows, serve it from a fresh process, then delete it."""
    vectors = clustered_vectors(n, DIM)
    queries = queries_near(vectors, n_queries)
    truth = exact_top_k(vectors, queries[:RECALL_QUERIES])
    factory = auto_factory(n, DIM) if factory == "auto" else factory
    start = time.perf_counter()
    path = write_synthetic_collection(tmp / f"c{n}", vectors, "synthetic/model", factory)
    build_s = time.perf_counter() - start
    del vectors
    start = time.perf_counter()
    verify_files(path, Manifest.read(path / "manifest.json"))
    hash_s = time.perf_counter() - start
    np.save(tmp / "q.npy", queries)
    code = SERVE.format(root=str(ROOT), path=str(path), queries=str(tmp / "q.npy"), recall=RECALL_QUERIES)
    out = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
                     .stdout.strip().splitlines()[-1])
    found = np.array(out.pop("found"))
    recall = float(np.mean([len(set(a) & set(b)) / K for a, b in zip(found, truth)]))
    index_mb = (path / "index.faiss").stat().st_size / 2**20
    data_mb = sum(p.stat().st_size for p in (path / "data").glob("*.parquet")) / 2**20
    shutil.rmtree(path)
    return {"rows": n, "index": factory, "build_s": build_s, "first_start_sha256_s": hash_s, **out,
            "recall@10": recall, "index_MB": index_mb, "metadata_MB": data_mb}


def extrapolate(measured: list[dict]) -> list[dict]:
    """10M / 100M rows on paper: index size from FAISS's code sizes, metadata from the measured bytes per row."""
    per_row_meta = measured[-1]["metadata_MB"] / measured[-1]["rows"]
    rows = []
    for n in (1_000_000, 10_000_000, 100_000_000):
        factory = auto_factory(n, DIM)
        if factory == "Flat" or factory.startswith("HNSW"):
            index_mb = n * (DIM * 4 + (256 if factory.startswith("HNSW") else 0)) / 2**20
        else:
            nlist = int(factory[3:].split(",")[0])
            index_mb = (n * (DIM + 8) + nlist * DIM * 4) / 2**20
        rows.append({"rows": n, "index": factory, "index_MB": index_mb, "metadata_MB": n * per_row_meta,
                     "note": "extrapolated (code sizes; metadata per row as measured)"})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1000000")
    parser.add_argument("--factory", default="auto", help="FAISS factory for every size, or auto")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--dir", help="where to write the collections (default: a temporary folder)")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        for n in [int(s) for s in args.sizes.split(",")]:
            rows.append(measure(n, args.factory, args.queries, Path(tmp)))
            print(json.dumps(rows[-1]), flush=True)
    report("scale", "Serving at scale, generated 512-d vectors + metadata, one query at a time", rows,
           ["rows", "index", "build_s", "first_start_sha256_s", "open_s", "rss_load_MB", "rss_1000q_MB", "p50_ms",
            "p95_ms", "recall@10", "index_MB", "metadata_MB"], extra={"extrapolated": extrapolate(rows)})
    print("Extrapolated (not measured):")
    for row in extrapolate(rows):
        print(f"  {row['rows']:>11,} rows  {row['index']:<16} index {row['index_MB']:>9,.0f} MB  "
              f"metadata {row['metadata_MB']:>9,.0f} MB")


if __name__ == "__main__":
    main()

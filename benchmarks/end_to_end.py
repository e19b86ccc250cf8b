"""End to end through rag.pipeline: text query -> encode -> search -> rows with thumbnails, and each stage's share.

A random-weight CLIP of the real ViT-B/32 size on a 30k-row synthetic collection (Flat index).
Usage: python -m benchmarks.end_to_end [--rows 30000] [--queries 60]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from benchmarks.common import clip_dim, clustered_vectors, report, speed_clip, summary
from benchmarks.synthetic import write_synthetic_collection

from rag.collection.reader import Collection
from rag.models.encoder import Encoder
from rag.search.index import search
from rag.pipeline import Pipeline

WORDS = "a dog cat man woman child red blue green running sitting beach street park water snow ball bike".split()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=30_000)
    parser.add_argument("--queries", type=int, default=60)
    parser.add_argument("--k", type=int, default=10)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    queries = [" ".join(rng.choice(WORDS, size=rng.integers(3, 9))) for _ in range(args.queries)]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model_dir = speed_clip(tmp / "vit-b32")
        collection_dir = write_synthetic_collection(tmp / "collection", clustered_vectors(args.rows, clip_dim(model_dir)), model_dir)
        pipeline = Pipeline(collection=Collection.open(collection_dir), encoder=Encoder(model_dir), cache_dir=tmp / "cache")
        stages = {"encode text": [], "FAISS search": [], "rows + thumbnail files": []}
        totals = {"cold (thumbnails written)": [], "warm (thumbnails cached)": []}
        for phase in totals:
            for query in queries:
                t0 = time.perf_counter()
                vector = pipeline.encoder.encode_texts([query])
                t1 = time.perf_counter()
                scores, ids = search(pipeline.collection.index, vector, args.k)
                t2 = time.perf_counter()
                pipeline._hits(list(zip(ids[0].tolist(), scores[0].tolist())))
                t3 = time.perf_counter()
                if phase.startswith("warm"):
                    stages["encode text"].append(t1 - t0)
                    stages["FAISS search"].append(t2 - t1)
                    stages["rows + thumbnail files"].append(t3 - t2)
                start = time.perf_counter()
                pipeline.search_text(query, args.k)
                totals[phase].append(time.perf_counter() - start)
    warm_total = float(np.median(totals["warm (thumbnails cached)"]))
    rows = [{"measure": f"pipeline.search_text, {p}", **summary(np.array(v)), "share_of_p50": ""} for p, v in totals.items()]
    stage_sum = sum(float(np.median(v)) for v in stages.values())
    for name, values in stages.items():
        rows.append({"measure": f"stage: {name}", **summary(np.array(values)),
                     "share_of_p50": f"{float(np.median(values)) / stage_sum:.0%}"})
    report("end_to_end", f"End to end: text query, random-weight CLIP ViT-B/32, {args.rows} rows, k = {args.k}", rows,
           ["measure", "p50_ms", "p95_ms", "per_s", "share_of_p50"], extra={"warm_p50_s": warm_total})


if __name__ == "__main__":
    main()

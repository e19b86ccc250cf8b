"""`--limit 1000` of a 50 000-row image dataset: streamed (rag.ingest.dataset_stream) against reading the whole split first.

A generated dataset in the Hub's layout (parquet shards under data/ + a card, small JPEGs in an Image column)
is read through the two sources `index_build.py --dataset DIR --limit 1000` can use, each in a fresh process
with an empty datasets cache: the source is opened and its first 1000 items (image bytes, captions) are read,
which is everything the builder asks of it before the CLIP forward pass (the same for both, so left out).
Bytes are the process's I/O counters (psutil): "read" counts every byte read through read() calls, page
cache included (for a Hub id these are the bytes that would be downloaded), "written" is what the datasets
cache receives (today's path converts the whole split to Arrow before taking any row).

Usage (from the repository root): python -m benchmarks.streaming [--rows 50000] [--limit 1000] [--shards 10] [--row-group-rows N]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from benchmarks.common import ROOT, report
from PIL import Image

MEASURE = """
import json, os, resource, sys, time
sys.path.insert(0, {root!r})
import datasets, psutil, pyarrow.parquet  # imported before counting: module files are not the dataset
import scipy.sparse, torch  # a build has them loaded (CLIP); a stream's first row imports them otherwise
from rag.ingest.open_source import SourceSpec, open_source
process = psutil.Process(); before = process.io_counters(); start = time.perf_counter()
source = open_source(SourceSpec(dataset={path!r}, split="train", limit={limit!r}, streaming={streaming!r}))
opened = time.perf_counter() - start
rows = image_bytes = 0
for item in source.items():
    rows += 1; image_bytes += len(item.image) if isinstance(item.image, bytes) else 0
elapsed = time.perf_counter() - start; after = process.io_counters()
print(json.dumps({{"rows": rows, "open_s": opened, "total_s": elapsed, "image_MB": image_bytes / 2**20,
    "read_MB": (after.read_chars - before.read_chars) / 2**20,
    "written_MB": (after.write_chars - before.write_chars) / 2**20,
    "peak_rss_MB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""


def generate(rows: int, seed: int = 0):
    """``rows`` distinct 32x32 noise JPEGs (~1.3 KB each) with a caption each, as a `datasets` Dataset."""
    from datasets import Dataset, Features, Image as ImageFeature, Value

    rng = np.random.default_rng(seed)
    images, captions = [], []
    for i in range(rows):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(buffer, format="JPEG", quality=80)
        images.append({"bytes": buffer.getvalue(), "path": None})
        captions.append(f"generated picture number {i}")
    features = Features({"image": ImageFeature(), "caption": Value("string")})
    return Dataset.from_dict({"image": images, "caption": captions}, features=features)


def write_dataset(dataset, folder: Path, shards: int, row_group_rows: int | None) -> float:
    """The dataset in the Hub's layout, ``shards`` parquet files; returns their size in MB."""
    from testkit.hub_fixtures import write_hub_layout

    write_hub_layout(folder, {"train": dataset}, shards=shards, row_group_rows=row_group_rows)
    return sum(p.stat().st_size for p in (folder / "data").glob("*.parquet")) / 2**20


def measure(path: Path, limit: int, streaming: bool, cache: Path) -> dict:
    """One read in a fresh process whose datasets cache is ``cache``."""
    code = MEASURE.format(root=str(ROOT), path=str(path), limit=limit, streaming=streaming)
    env = {**os.environ, "HF_DATASETS_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "HF_DATASETS_DISABLE_PROGRESS_BARS": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--limit", type=int, default=1000)
    parser.add_argument("--shards", type=int, default=10)
    parser.add_argument("--row-group-rows", type=int, help="rows per parquet row group (default: datasets' choice)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        dataset = generate(args.rows)
        print(f"generated {args.rows} rows in {time.perf_counter() - started:.0f} s", flush=True)
        rows, sizes = [], {}
        # `datasets` 5 writes row groups of up to 100 MB (one per shard here); --row-group-rows 100 is what it
        # wrote for image datasets before 4.0. pyarrow reads a touched shard whole either way (measured).
        layout = f"row groups of {args.row_group_rows} rows" if args.row_group_rows else "datasets' default row groups"
        for group_rows in (args.row_group_rows,):
            folder = Path(tmp) / layout.replace(" ", "-")
            sizes[layout] = write_dataset(dataset, folder, args.shards, group_rows)
            runs = [("today: whole split prepared, then the first rows (first run)", False, "cache-a"),
                    ("today, cache already prepared (a second run)", False, "cache-a"),
                    ("streamed: `.take(limit)` (rag.ingest.dataset_stream)", True, "cache-b")]
            baseline = None
            for name, streaming, cache in runs:
                result = measure(folder, args.limit, streaming, folder.with_name(folder.name + cache))
                baseline = baseline or result
                rows.append({"parquet layout": layout, "source read": name, "rows": result["rows"],
                             "seconds": result["total_s"], "time vs today": result["total_s"] / baseline["total_s"],
                             "MB read": result["read_MB"],
                             "read vs today": result["read_MB"] / max(baseline["read_MB"], 1e-9),
                             "MB written to cache": result["written_MB"], "peak RSS MB": result["peak_rss_MB"]})
    dataset_mb = max(sizes.values())
    report("streaming", f"`--limit {args.limit}` of {args.rows:,} rows (≈ {dataset_mb:.0f} MB parquet, "
           f"{args.shards} shards): streamed vs whole split", rows,
           ["parquet layout", "source read", "rows", "seconds", "time vs today", "MB read", "read vs today",
            "MB written to cache", "peak RSS MB"], extra={"dataset_MB": sizes, "settings": vars(args)})


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""Do other visitors' searches keep answering while someone builds a collection in the Space?

Serves app.py on localhost around a random-weight CLIP of the real ViT-B/32 size (weights do not change the
time) and a small collection, then times /search_text from one gradio_client session while it is idle, and
again while another session runs /build on an archive of Flickr-sized JPEGs. Prints p50/p95 and their ratio to
idle (issue 11's target: p50 during a build <= 3x idle), plus the build rate the Space reached.

    HF_HUB_OFFLINE=1 python -m benchmarks.build_contention [--images 160] [--batch-sizes 8,32] [--calls 30]
"""

from __future__ import annotations

import os

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import argparse
import tempfile
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
from benchmarks.build_speed import write_jpegs
from benchmarks.common import free_port, report, speed_clip, summary
from gradio_client import Client, handle_file

import app
from rag.ingest.builder import BuildOptions, build_collection
from rag.config import Settings
from rag.models.encoder import Encoder
from rag.ingest.sources import FolderSource
from rag.startup import open_pipeline

QUERIES = ["a dog on the beach", "two people riding bicycles", "a red car", "a child with ice cream"]


def _search_times(client: Client, calls: int | None = None, until: threading.Event | None = None) -> np.ndarray:
    """Seconds per /search_text call: ``calls`` of them, or as many as fit until ``until`` is set (at least one:
    a small build, as in a smoke run, may end before the first search)."""
    times, i = [], 0
    while (calls is not None and i < calls) or (until is not None and (not until.is_set() or i == 0)):
        started = time.perf_counter()
        client.predict(QUERIES[i % len(QUERIES)], 10, api_name="/search_text")
        times.append(time.perf_counter() - started)
        i += 1
    return np.array(times)


def _during_build(url: str, searcher: Client, archive: Path, tmp: Path) -> tuple[np.ndarray, dict]:
    """Search from one session while another session builds; returns the search times and /build's result."""
    builder = Client(url, verbose=False, download_files=str(tmp / "dl-builder"), analytics_enabled=False)
    done, result = threading.Event(), {}

    def build() -> None:
        try:
            result.update(builder.predict(handle_file(str(archive)), "", "train", "", "", "", False, 0,
                                          api_name="/build"))
        finally:
            done.set()

    thread = threading.Thread(target=build)
    thread.start()
    time.sleep(1.0)  # let the upload finish and encoding start
    times = _search_times(searcher, until=done)
    thread.join()
    return times, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=160, help="JPEGs in the uploaded archive")
    parser.add_argument("--batch-sizes", default="8,32", help="RAG_BUILD_BATCH_SIZE values to compare")
    parser.add_argument("--calls", type=int, default=30, help="idle /search_text calls")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model_dir = speed_clip(tmp / "vit-b32")
        write_jpegs(tmp / "space-images", 64, seed=1)
        encoder = Encoder(model_dir)
        build_collection(FolderSource(tmp / "space-images"), tmp / "space", encoder, BuildOptions(progress=False))
        archive = tmp / "upload.zip"
        with zipfile.ZipFile(archive, "w") as out:
            for path in write_jpegs(tmp / "upload", args.images, seed=2):
                out.write(path, f"photos/{path.name}")
        pipeline = open_pipeline(Settings(cache_dir=tmp / "cache"), collection_dir=tmp / "space",
                                          with_captioner=False)
        for batch_size in [int(b) for b in args.batch_sizes.split(",")]:
            os.environ["RAG_BUILD_BATCH_SIZE"] = str(batch_size)
            os.environ["RAG_SESSION_MAX_BUILDS"] = "100"
            demo = app.build_demo(pipeline)
            _, url, _ = app.launch(demo, server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True,
                                   quiet=True)
            searcher = Client(url, verbose=False, download_files=str(tmp / "dl"), analytics_enabled=False)
            idle = _search_times(searcher, calls=3)  # warm-up
            idle = _search_times(searcher, calls=args.calls)
            busy, result = _during_build(url, searcher, archive, tmp)
            idle_after = _search_times(searcher, calls=args.calls)
            demo.close()
            base = summary(np.concatenate([idle, idle_after]))
            loaded = summary(busy)
            rows.append({"build batch": batch_size, "idle p50 ms": base["p50_ms"], "idle p95 ms": base["p95_ms"],
                         "during build p50 ms": loaded["p50_ms"], "during build p95 ms": loaded["p95_ms"],
                         "p50 ratio": loaded["p50_ms"] / base["p50_ms"], "searches during build": len(busy),
                         "build images/s": result.get("images_per_second", 0.0),
                         "build rows": result.get("rows", 0)})
    report("build_contention",
           f"/search_text latency of one session while another builds {args.images} JPEGs (500x375) in the Space, "
           "random-weight CLIP ViT-B/32, through gradio_client", rows, list(rows[0]))


if __name__ == "__main__":
    main()

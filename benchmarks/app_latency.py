#!/usr/bin/env python
"""Latency of each Space endpoint through gradio_client, next to the bare pipeline call, in one run.

Offline: builds (or reuses, with --models DIR) the tiny test models and a collection of generated shapes,
serves app.py on localhost, then times N calls per endpoint both ways and writes results/app_latency.json|md.
The difference is what Gradio adds: queue, (de)serialisation, upload of the query image and, with the
client's default download_files, one HTTP GET per result thumbnail (the last column skips those).

    HF_HUB_OFFLINE=1 python -m benchmarks.app_latency [--calls 20] [--k 10] [--models /tmp/tiny-models]
"""

from __future__ import annotations

import os

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import argparse
import functools
import json
import logging
import statistics
import tempfile
import time
import urllib.request
from pathlib import Path

from gradio_client import Client, handle_file

import app
from benchmarks.common import free_port, report
from rag.config import Settings
from rag.startup import open_pipeline


def _models(folder: Path) -> tuple[str, str]:
    from testkit.tiny_models import make_tiny_clip, make_tiny_git

    clip, git = folder / "clip", folder / "git"
    if not (clip / "modules.json").exists():
        make_tiny_clip(clip)
    if not (git / "config.json").exists():
        make_tiny_git(git)
    return str(clip), str(git)


def raw_http(url: str, api_name: str, data: list) -> list:
    """One call through Gradio's raw HTTP API, as the README's curl lines make it: POST the inputs, then read the
    event stream up to its ``complete`` event; returns the outputs."""
    request = urllib.request.Request(f"{url.rstrip('/')}/gradio_api/call/{api_name.strip('/')}",
                                     data=json.dumps({"data": data}).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        event_id = json.loads(response.read())["event_id"]
    event = None
    with urllib.request.urlopen(f"{url.rstrip('/')}/gradio_api/call/{api_name.strip('/')}/{event_id}", timeout=120) as stream:
        for raw in stream:
            line = raw.decode().strip()
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:") and event in ("complete", "error"):
                if event == "error":
                    raise RuntimeError(f"{api_name} failed: {line}")
                return json.loads(line[5:])
    raise RuntimeError(f"{api_name}: the stream ended without a result")


def _time(fn, calls: int, warmup: int = 2) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return times


def _stats(times: list[float]) -> tuple[float, float]:
    """Median and p90 in ms."""
    times = sorted(times)
    p90 = times[min(len(times) - 1, round(0.9 * (len(times) - 1)))]
    return 1000 * statistics.median(times), 1000 * p90


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=20, help="timed calls per endpoint (default 20)")
    parser.add_argument("--k", type=int, default=10, help="results per search (default 10)")
    parser.add_argument("--models", type=Path, help="folder to keep the tiny models in (reused when present)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    from testkit.shapes import build_shapes, write_shape_folder

    work = Path(tempfile.mkdtemp(prefix="app-latency-"))
    clip, git = _models(args.models or work / "models")
    folder = write_shape_folder(work / "shapes", n=96)
    collection = build_shapes(folder, work / "collection", clip)
    pipeline = open_pipeline(Settings(captioner="git", captioner_model=git, cache_dir=work / "cache"),
                                      collection_dir=collection)
    image = folder / "set_a" / "img_001.jpg"

    port = free_port()
    demo = app.build_demo(pipeline)
    _, url, _ = app.launch(demo, server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    # The default client downloads every gallery thumbnail (one GET each); download_files=False returns URLs.
    client = Client(url, verbose=False, download_files=str(work / "downloads"), analytics_enabled=False)
    light = Client(url, verbose=False, download_files=False, analytics_enabled=False)
    k = args.k
    rows = [
        ("/search_text", f'"red circle", k={k}', lambda: pipeline.search_text("red circle", k),
         lambda c: c.predict("red circle", k, api_name="/search_text"), ["red circle", k]),
        ("/search_image", f"64x64 JPEG upload, k={k}", lambda: pipeline.search_image(image, k),
         lambda c: c.predict(handle_file(image), k, api_name="/search_image"), None),
        ("/similar_to", f"row 0, k={k}", lambda: pipeline.similar_to(0, k),
         lambda c: c.predict(0, k, api_name="/similar_to"), [0, k]),
        ("/describe", "k=0 (plain GIT)", lambda: pipeline.describe(image, None, 0),
         lambda c: c.predict(handle_file(image), "", 0, api_name="/describe"), None),
        ("/describe", "k=5 (GIT + context rerank)", lambda: pipeline.describe(image, None, 5),
         lambda c: c.predict(handle_file(image), "", 5, api_name="/describe"), None),
        ("/info", "", pipeline.info, lambda c: c.predict(api_name="/info"), []),
    ]
    table = []
    try:
        for name, what, bare, remote, raw in rows:
            measured = {"bare": _time(bare, args.calls), "client": _time(functools.partial(remote, client), args.calls),
                        "light": _time(functools.partial(remote, light), args.calls)}
            if raw is not None:  # endpoints that take a file need an upload first: not timed raw
                measured["raw_http"] = _time(functools.partial(raw_http, url, name, raw), args.calls)
            row = {"endpoint": name, "input": what}
            for way, times in measured.items():
                row[f"{way}_p50_ms"], row[f"{way}_p90_ms"] = _stats(times)
            table.append(row)
            print(row, flush=True)
    finally:
        demo.close()
    report("app_latency", f"Each endpoint through gradio_client ('client': downloads thumbnails; 'light': "
           f"download_files=False) and raw HTTP (POST + event stream, no file inputs) next to the bare pipeline call; tiny models, 96-image collection, {args.calls} calls "
           "each after 2 warm-up calls, median and p90 ms", table,
           ["endpoint", "input", "bare_p50_ms", "raw_http_p50_ms", "light_p50_ms", "client_p50_ms", "client_p90_ms"], extra={"calls": args.calls, "k": k})


if __name__ == "__main__":
    main()

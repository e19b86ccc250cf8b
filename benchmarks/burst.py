#!/usr/bin/env python
"""Bursts of /search_text calls: throughput and p50/p95 for 1, 4, 16 and 64 concurrent clients, raw HTTP and
gradio_client, with text-query batching on and off in the same run; and where one call's time goes.

Offline: the tiny test CLIP and a 96-image shapes collection (``--rows N`` adds a synthetic N-row collection with the
same model). The app is served by a separate process (``serve``; GRADIO_PROFILING=1 so Gradio records each event's
queue wait, pre/post-processing and function time), so the clients do not share the server's interpreter. Every
call sends a new query (the pipeline caches repeated ones). Raw HTTP is the README's curl pattern (POST, then read
the event stream) with httpx; gradio_client uses one Client per simulated visitor with ``download_files=False``.
The load average is recorded with every row: the machine is shared, so compare rows of one run.

    HF_HUB_OFFLINE=1 python -m benchmarks.burst [--levels 1,4,16,64] [--calls 4] [--rows 100000]
"""

from __future__ import annotations

import os

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np

from benchmarks.common import clustered_vectors, free_port, report

WORDS = ("red", "green", "blue", "yellow", "circle", "square", "triangle", "small", "large", "photo", "bright", "dark")


def queries(count: int, seed: int) -> list[str]:
    """``count`` different short queries (the pipeline caches repeated ones; a burst of visitors rarely repeats)."""
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, 3)) + f" {seed}-{i}" for i in range(count)]


def prepare(work: Path, rows: int, clip_kind: str) -> tuple[str, dict[str, Path]]:
    """The CLIP (the tiny test one, or random weights of ViT-B/32's size: its text tower costs what the real one
    does), the 96-image shapes collection (tiny CLIP only) and (rows > 0) a synthetic one; reused from ``work``."""
    from testkit.shapes import build_shapes, write_shape_folder
    from testkit.tiny_models import make_random_clip_vit_b32, make_tiny_clip

    from benchmarks.synthetic import write_synthetic_collection
    from rag.models.encoder import Encoder

    clip = work / f"clip-{clip_kind}"
    if not (clip / "modules.json").exists():
        (make_tiny_clip if clip_kind == "tiny" else make_random_clip_vit_b32)(clip)
    collections = {"96 shapes": work / "shapes-collection"} if clip_kind == "tiny" else {}
    if collections and not (collections["96 shapes"] / "manifest.json").exists():
        build_shapes(write_shape_folder(work / "shapes", n=96), collections["96 shapes"], str(clip))
    if rows:
        name, folder = f"{rows:,} synthetic", work / f"synthetic-{clip_kind}-{rows}"
        if not (folder / "manifest.json").exists():
            write_synthetic_collection(folder, clustered_vectors(rows, dim=Encoder(str(clip)).dim), str(clip))
        collections[name] = folder
    return str(clip), collections


MODES = ("unbatched", "batched", "no search")


def serve(collection: Path, port: int, cache: Path, mode: str) -> None:
    """The server process: the app around one collection. ``unbatched`` puts back what came before batching:
    each call encodes and searches alone, and /search_text shares the 4 search slots of the other searches.
    ``no search`` answers every call with the hits of one search made at start (no encoding, no search, the same
    10 thumbnails): the qps of Gradio, the app's glue and the clients alone, a ceiling no search can pass."""
    import app
    import rag.pipeline
    import ui.context
    import ui.search_tabs
    from rag.config import Settings
    from rag.startup import open_pipeline

    if mode == "unbatched":
        rag.pipeline.BatchingSearcher = lambda searcher: searcher
        rag.pipeline.batch_encoder = lambda encode: lambda text: encode([text])
        ui.search_tabs.TEXT_LIMITS = ui.context.SEARCH_LIMITS
    pipeline = open_pipeline(Settings(cache_dir=cache, quantize="none"), collection_dir=collection, with_captioner=False)
    if mode == "no search":
        answer = pipeline.search_text("red circle", 10)
        pipeline.search_text = lambda query, k=10: answer[: int(k)]
    app.launch(app.build_demo(pipeline), server_name="127.0.0.1", server_port=port, quiet=True)


def start_server(collection: Path, cache: Path, mode: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    command = [sys.executable, "-m", "benchmarks.burst", "serve", str(collection), str(port), str(cache)]
    env = {**os.environ, "GRADIO_PROFILING": "1"}
    server = subprocess.Popen(command + ["--mode", mode], env=env)
    url = f"http://127.0.0.1:{port}/"
    for _ in range(600):
        try:
            if httpx.get(url + "gradio_api/info", timeout=2).status_code == 200:
                return server, url
        except httpx.HTTPError:
            pass
        if server.poll() is not None:
            raise RuntimeError("the app did not start")
        time.sleep(0.5)  # waiting for another process to listen: polling is the only signal there is
    raise RuntimeError("the app did not answer in 5 minutes")


async def _raw_call(client: httpx.AsyncClient, url: str, query: str, k: int) -> float:
    started = time.perf_counter()
    posted = await client.post(f"{url}gradio_api/call/search_text", json={"data": [query, k]})
    posted.raise_for_status()
    async with client.stream("GET", f"{url}gradio_api/call/search_text/{posted.json()['event_id']}") as stream:
        event = None
        async for line in stream.aiter_lines():
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:") and event in ("complete", "error"):
                if event == "error":
                    raise RuntimeError(f"/search_text failed: {line}")
                return time.perf_counter() - started
    raise RuntimeError("the event stream ended without a result")


def raw_burst(url: str, clients: int, calls: int, k: int, seed: int) -> tuple[list[float], float]:
    """``clients`` visitors each making ``calls`` calls back to back over raw HTTP: latencies and wall time."""

    async def visitor(client: httpx.AsyncClient, texts: list[str]) -> list[float]:
        return [await _raw_call(client, url, text, k) for text in texts]

    async def run() -> tuple[list[float], float]:
        limits = httpx.Limits(max_connections=4 * clients + 8)
        async with httpx.AsyncClient(timeout=600, limits=limits) as client:
            texts = queries(clients * calls, seed)
            started = time.perf_counter()
            done = await asyncio.gather(*(visitor(client, texts[i::clients]) for i in range(clients)))
            return [t for times in done for t in times], time.perf_counter() - started

    return asyncio.run(run())


def client_burst(url: str, clients: int, calls: int, k: int, seed: int) -> tuple[list[float], float]:
    """The same burst through gradio_client, one Client (one session) per visitor, each in its own thread."""
    from gradio_client import Client

    visitors = [Client(url, verbose=False, download_files=False, analytics_enabled=False,
                       httpx_kwargs={"timeout": 600}) for _ in range(clients)]
    texts = queries(clients * calls, seed)

    def visitor(i: int) -> list[float]:
        out = []
        for text in texts[i::clients]:
            started = time.perf_counter()
            visitors[i].predict(text, k, api_name="/search_text")
            out.append(time.perf_counter() - started)
        return out

    with ThreadPoolExecutor(clients) as pool:
        started = time.perf_counter()
        done = list(pool.map(visitor, range(clients)))
        wall = time.perf_counter() - started
    for client in visitors:
        client.close()
    return [t for times in done for t in times], wall


def cpu_seconds(server_pid: int) -> tuple[float, float]:
    """CPU seconds used so far by the server process (all its threads) and by this one (the simulated visitors):
    with both on one machine, qps can be at most its cores divided by their sum per call."""
    import psutil

    server, clients = psutil.Process(server_pid).cpu_times(), psutil.Process().cpu_times()
    return server.user + server.system, clients.user + clients.system


def profile(url: str, clear: bool = False) -> dict:
    """Gradio's per-phase summary (ms) since the last clear."""
    if clear:
        httpx.post(url + "gradio_api/profiling/clear", timeout=30)
        return {}
    phases = httpx.get(url + "gradio_api/profiling/summary", timeout=30).json().get("phases", {})
    return {name: round(values["p50"], 2) for name, values in phases.items()}


def stages(collection: Path, cache: Path, k: int, batch: int = 16, repeat: int = 40) -> dict[str, float]:
    """Median ms of each part of one /search_text call, measured on the bare pipeline in this process, and the
    per-query cost of the same work done for ``batch`` queries at once."""
    from rag.config import Settings
    from rag.startup import open_pipeline
    from ui.components import gallery_items, hits_json

    pipeline = open_pipeline(Settings(cache_dir=cache, quantize="none"), collection_dir=collection, with_captioner=False)
    texts = iter(queries(repeat * (batch + 4) + 8, seed=99))

    def median_ms(work, per: int = 1) -> float:
        work()
        times = []
        for _ in range(repeat):
            started = time.perf_counter()
            work()
            times.append(time.perf_counter() - started)
        return float(np.median(times)) * 1e3 / per

    vector = pipeline.encoder.encode_texts(["red circle"])
    vectors = pipeline.encoder.encode_texts(queries(batch, seed=98))
    _, ids = pipeline.search_ids(vector, k)
    hits = pipeline.search_text("red circle", k)
    return {
        "encode_ms": median_ms(lambda: pipeline.encoder.encode_texts([next(texts)])),
        "encode_per_query_in_batch_ms": median_ms(lambda: pipeline.encoder.encode_texts([next(texts) for _ in range(batch)]), batch),
        "search_ms": median_ms(lambda: pipeline.search_ids(vector, k)),
        "search_per_query_in_batch_ms": median_ms(lambda: pipeline.search_ids(vectors, k), batch),
        "rows_ms": median_ms(lambda: pipeline.collection.rows(ids[0])),
        "thumbnails_ms": median_ms(lambda: [pipeline.collection.thumbnail_path(int(i), pipeline.cache_dir) for i in ids[0]]),
        "gallery_and_json_ms": median_ms(lambda: (gallery_items(hits), hits_json(hits))),
        "bare_search_text_ms": median_ms(lambda: pipeline.search_text(next(texts), k)),
    }


def burst_rows(name: str, folder: Path, cache: Path, args: argparse.Namespace) -> list[dict]:
    """Every level and way against one collection, text batching off, then on, then (``--floor``) no search at all
    (one server each)."""
    rows = []
    for mode in MODES if args.floor else MODES[:2]:
        server, url = start_server(folder, cache, mode)
        try:
            raw_burst(url, 2, 2, args.k, seed=1)  # warm: models, thumbnails cache, first-call paths
            for way, burst in [w for w in (("raw HTTP", raw_burst), ("gradio_client", client_burst)) if w[0] in args.ways]:
                for clients in args.levels:
                    profile(url, clear=True)
                    per_visitor = max(args.calls, -(-args.min_calls // clients))
                    cpu = cpu_seconds(server.pid)
                    times, wall = burst(url, clients, per_visitor, args.k, seed=clients)
                    cpu = [(after - before) * 1e3 / len(times) for before, after in zip(cpu, cpu_seconds(server.pid))]
                    p50, p95 = (float(np.percentile(times, p)) * 1e3 for p in (50, 95))
                    rows.append({"collection": name, "batching": mode, "way": way, "clients": clients,
                                 "calls": len(times), "qps": len(times) / wall, "p50_ms": p50, "p95_ms": p95,
                                 "p95_over_p50": p95 / p50, "load_1min": os.getloadavg()[0],
                                 "server_cpu_ms_per_call": cpu[0], "client_cpu_ms_per_call": cpu[1],
                                 **{f"server_{phase}_p50_ms": ms for phase, ms in profile(url).items()}})
                    print({key: round(v, 2) if isinstance(v, float) else v for key, v in rows[-1].items()}, flush=True)
        finally:
            server.terminate()
            server.wait(timeout=60)
    base = {(r["collection"], r["way"], r["clients"]): r["qps"] for r in rows if r["batching"] == "unbatched"}
    for row in rows:
        row["qps_vs_unbatched"] = row["qps"] / base[(row["collection"], row["way"], row["clients"])]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--levels", default="1,4,16,64", type=lambda s: [int(x) for x in s.split(",")])
    parser.add_argument("--calls", type=int, default=3, help="calls per visitor at least (default 3)")
    parser.add_argument("--min-calls", type=int, default=48, help="calls per level at least (default 48)")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--rows", type=int, default=0, help="also a synthetic collection of this many rows")
    parser.add_argument("--work", type=Path, help="folder to keep models and collections in (reused)")
    parser.add_argument("--clip", choices=["tiny", "vit-b32"], default="tiny", help="tiny test CLIP (default), or "
                        "random weights of ViT-B/32's size, served in fp32 (RAG_QUANTIZE=none)")
    parser.add_argument("--ways", default="raw HTTP,gradio_client", type=lambda s: s.split(","))
    parser.add_argument("--floor", action="store_true", help="also serve answers without any search (the same "
                        "hits every call): the qps Gradio, the app's glue and the clients leave on this machine")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="burst-"))
    _, collections = prepare(work, args.rows, args.clip)
    rows, parts = [], {}
    for name, folder in collections.items():
        parts[name] = {key: round(v, 3) for key, v in stages(folder, work / "cache", args.k).items()}
        print(name, parts[name], flush=True)
        rows += burst_rows(name, folder, work / "cache", args)
    report("burst" if args.clip == "tiny" else f"burst_{args.clip}", f"/search_text under bursts: qps and latency for 1-64 concurrent visitors, text batching off and "
           f"on (same run, same machine); {args.clip} CLIP (fp32), k={args.k}, a new query every call", rows,
           ["collection", "batching", "way", "clients", "calls", "qps", "qps_vs_unbatched", "p50_ms", "p95_ms",
            "p95_over_p50", "server_queue_wait_p50_ms", "server_fn_call_p50_ms", "server_postprocess_p50_ms",
            "server_total_p50_ms", "server_cpu_ms_per_call", "client_cpu_ms_per_call", "load_1min"], extra={"stages_ms": parts, "k": args.k, "clip": args.clip})


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        serve(Path(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4]), sys.argv[sys.argv.index("--mode") + 1])
    else:
        main()

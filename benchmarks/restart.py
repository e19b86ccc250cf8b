"""Restart to first answer: seconds from process start to the first answered /search_text over HTTP, and where
they go, for synthetic collections of 30k, 100k and 1M rows.

Each start is a fresh process running the app's own start-up (``app.load_pipeline``, ``app.build_demo``,
``app.launch``: what ``python app.py`` runs) on a collection already on local disk, with:

* ``as before``: the start-up as it was before restarts stopped redoing work (scan copy built before serving; no
  shipped export, empty RAG_CACHE_DIR: exports the int8 text tower) - the baseline;
* ``first start``: today's code, no shipped export, empty RAG_CACHE_DIR (exports the int8 text tower, hashes the
  collection; the scan copy is built in the background);
* ``restart, warm cache``: the same again, RAG_CACHE_DIR kept (export cached, checksums stamped);
* ``restart, shipped export``: the collection ships its int8 text export (``index_build.py --quantize int8``),
  RAG_CACHE_DIR empty, as after a Space restart.

The CLIP has random weights of ViT-B/32's sizes (the Hub is unreachable; weights do not change the time), the
captioner is the tiny test GIT (a real git-base-coco adds its own load time to every row alike). Collections,
models and caches are kept in ``--work`` so a rerun skips making them. The machine's load is recorded per row.

    HF_HUB_OFFLINE=1 python -m benchmarks.restart [--sizes 30000,100000,1000000] [--repeat 1] [--work /tmp/restart-bench]
"""

from __future__ import annotations

import os

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse
import json
import logging
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from benchmarks.common import ROOT, clip_dim, clustered_vectors, free_port, report, smoke, speed_clip

SCENARIOS = ("as before", "first start", "restart, warm cache", "restart, shipped export")
STAGES = ("python", "imports", "collection", "scan copy started", "encoder", "text tower", "captioner", "pipeline",
          "page", "launch", "first query")
SHARD_ROWS = 50_000


# -- the server process --------------------------------------------------------------------------------------


def serve(port: int, timings: Path, before: bool) -> None:
    """One start of the app, as app.main does it; stage times appended to ``timings`` (JSON lines) as they happen."""
    started = time.time()
    out = timings.open("a")

    def note(**values: Any) -> None:
        out.write(json.dumps(values) + "\n")
        out.flush()

    note(event="process", at=started)
    import app  # noqa: E402  (the imports are one of the timed stages)

    note(event="imports", at=time.time())

    class Stages(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            text = record.getMessage()
            if text.startswith("start-up stages: "):
                note(event="stages", at=time.time(), stages=json.loads(text.split(": ", 1)[1]))
            elif text.startswith("scan copy of"):
                note(event="scan copy built", at=time.time(), text=text)
            elif "int8 text tower" in text:
                note(event="text tower", at=time.time(), text=text)

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger().addHandler(Stages())
    if before:
        _as_before()
    pipeline, captioner_error = app.load_pipeline()
    note(event="pipeline", at=time.time(), error=captioner_error if pipeline is not None else "no pipeline")
    demo = app.build_demo(pipeline, captioner_error=captioner_error)
    note(event="page", at=time.time())
    app.launch(demo, server_name="127.0.0.1", server_port=port, quiet=True)


def _as_before() -> None:
    """The start-up as it was: the scan copy built before the page is served."""
    import rag.startup
    from rag.search.flat import make_searcher

    rag.startup.start_searcher = make_searcher


# -- the parent: collections, starts, table ------------------------------------------------------------------


def synthetic_collection(out: Path, rows: int, model: str) -> Path:
    """A valid collection of ``rows`` clustered vectors (benchmarks.synthetic's rows; one shard's table written for
    every shard with its own ids, so that 1M rows take a minute, not five)."""
    import pyarrow as pa

    from benchmarks.synthetic import _thumbnail
    from rag.collection.reader import DATA_DIR, Manifest
    from rag.collection.writer import rows_to_table, seal_collection, write_table
    from rag.search.index import build_index

    if (out / "manifest.json").exists():
        return out
    shutil.rmtree(out, ignore_errors=True)
    (out / DATA_DIR).mkdir(parents=True)
    vectors = clustered_vectors(rows, dim=clip_dim(model))
    thumbs = [_thumbnail(i) for i in range(16)]
    template = rows_to_table([
        {"thumbnail": thumbs[i % 16], "captions": [f"synthetic image {i}", f"cluster member {i % 97}"],
         "label": f"class {i % 100}", "source": f"synthetic/{i}.jpg", "extra": {"split": "bench"}}
        for i in range(min(rows, SHARD_ROWS))
    ], 0, ["split"])
    for shard, start in enumerate(range(0, rows, SHARD_ROWS)):
        table = template.slice(0, min(SHARD_ROWS, rows - start))
        table = table.set_column(0, table.schema.field("id"), pa.array(np.arange(start, start + len(table))))
        write_table(table, out / DATA_DIR / f"metadata-{shard:05d}.parquet")
    manifest = Manifest(model={"id": model, "revision": None}, dim=vectors.shape[1], rows=rows, index_factory="Flat",
                        source={"kind": "synthetic", "name": "benchmarks/restart.py"}, columns=["split"])
    seal_collection(out, build_index(vectors, "Flat"), manifest)
    return out


def text_export(model: str, work: Path) -> tuple[Path, dict]:
    """The int8 text tower export an ``index_build.py --quantize int8`` build of this model ships (file, key)."""
    from rag.models.encoder import Encoder
    from rag.models.onnx_text import int8_text_runner
    from rag.models.quantize import fp32_probe, probe_entry

    encoder = Encoder(model)
    runner = int8_text_runner(encoder.text_model, work / "export-cache")
    return runner.path, {**runner.key, "probe": probe_entry(fp32_probe(encoder, ("text",)))}


def manifests(collection: Path, export: tuple[Path, dict]) -> dict[bool, str]:
    """The collection's manifest.json text without and with the shipped export (as a --quantize int8 build has it)."""
    from rag.collection.reader import MANIFEST, TEXT_EXPORT_FILE, TEXT_EXPORT_KEY, Manifest, sha256_file
    from rag.ingest.builder import ship_text_export

    manifest = Manifest.read(collection / MANIFEST)
    manifest.files.pop(TEXT_EXPORT_FILE, None)
    manifest.build.pop(TEXT_EXPORT_KEY, None)
    plain = manifest.to_json()
    ship_text_export(collection, export, manifest)
    manifest.files[TEXT_EXPORT_FILE] = sha256_file(collection / TEXT_EXPORT_FILE)
    return {False: plain, True: manifest.to_json()}


def first_answer(url: str, server: subprocess.Popen, limit: float = 600) -> tuple[float, float, int]:
    """(time the page answered, time /search_text answered, hits) by the wall clock."""
    deadline = time.time() + limit
    while True:
        try:
            if httpx.get(url + "gradio_api/info", timeout=5).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if server.poll() is not None or time.time() > deadline:
            raise RuntimeError("the app did not start")
        time.sleep(0.05)  # another process's port: polling is the only signal there is
    up = time.time()
    posted = httpx.post(url + "gradio_api/call/search_text", json={"data": ["a red circle on a white background", 10]},
                        timeout=120)
    with httpx.stream("GET", f"{url}gradio_api/call/search_text/{posted.json()['event_id']}", timeout=120) as stream:
        event = None
        for line in stream.iter_lines():
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:") and event in ("complete", "error"):
                if event == "error":
                    raise RuntimeError(f"/search_text failed: {line}")
                return up, time.time(), len(json.loads(line[5:])[1]["hits"])
    raise RuntimeError("the event stream ended without a result")


def start_once(collection: Path, cache: Path, model: str, captioner: str, before: bool, work: Path) -> dict[str, Any]:
    """Start the app in a new process, ask one /search_text; seconds per stage, total and the load average."""
    port = free_port()
    timings = work / "timings.jsonl"
    timings.unlink(missing_ok=True)
    env = {**os.environ, "RAG_COLLECTION": str(collection), "RAG_CACHE_DIR": str(cache), "RAG_CAPTIONER": "git",
           "RAG_CAPTIONER_MODEL": captioner, "RAG_QUANTIZE": "auto"}
    command = [sys.executable, "-m", "benchmarks.restart", "serve", str(port), str(timings)] + (["--before"] if before else [])
    load = os.getloadavg()[0]
    started = time.time()
    server = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=(work / "server.log").open("w"))
    try:
        up, answered, hits = first_answer(f"http://127.0.0.1:{port}/", server)
    finally:
        server.terminate()
        server.wait(timeout=60)
    events = [json.loads(line) for line in timings.read_text().splitlines()]
    at = {e["event"]: e["at"] for e in events}
    stages = {k: v for e in events if e["event"] == "stages" for k, v in e["stages"].items()}
    row = {"python": at["process"] - started, "imports": at["imports"] - at["process"],
           **{name: stages.get(name, 0.0) for name in STAGES[2:8]},
           "page": at["page"] - at["pipeline"], "launch": up - at["page"], "first query": answered - up,
           "total_s": answered - started, "hits": hits, "load_1min": load,
           "scan copy ready_s": (at["scan copy built"] - started) if "scan copy built" in at else None,
           "text tower": stages.get("text tower", 0.0),
           "export": next((e["text"] for e in events if e["event"] == "text tower"), "")}
    return row


def _start_retrying(collection: Path, cache: Path, model: str, captioner: str, before: bool, work: Path) -> dict:
    """``start_once``, tried a second time (cache state restored) if the app did not start: on a machine other jobs
    load, Gradio's own check that localhost answers can time out during ``launch``."""
    saved = work / "cache-saved"
    shutil.rmtree(saved, ignore_errors=True)
    if cache.exists():
        shutil.copytree(cache, saved)
    try:
        return start_once(collection, cache, model, captioner, before, work)
    except RuntimeError as exc:
        print(f"start failed ({exc}; the server's log: {work / 'server.log'}), starting again", flush=True)
        shutil.rmtree(cache, ignore_errors=True)
        if saved.exists():
            shutil.copytree(saved, cache)
        return start_once(collection, cache, model, captioner, before, work)


def run_size(rows: int, work: Path, model: str, captioner: str, export: tuple[Path, dict],
             repeat: int = 1) -> list[dict[str, Any]]:
    """The four starts of one collection size (module docstring), in an order that leaves each its cache state;
    each ``repeat`` times, the start with the median total kept (its stages with it, so that they add up)."""
    collection = synthetic_collection(work / f"collection-{rows}-{Path(model).name}", rows, model)
    texts = manifests(collection, export)
    out = []
    for scenario in SCENARIOS:
        shipped = scenario == "restart, shipped export"
        (collection / "manifest.json").write_text(texts[shipped], encoding="utf-8")
        tries = []
        for _ in range(repeat):
            cache = work / f"cache-{rows}-{'warm' if scenario == 'restart, warm cache' else 'empty'}"
            if scenario != "restart, warm cache":  # it reuses the cache the first start filled
                shutil.rmtree(cache, ignore_errors=True)
            tries.append(_start_retrying(collection, cache, model, captioner, scenario == "as before", work))
            if scenario == "first start":
                shutil.rmtree(work / f"cache-{rows}-warm", ignore_errors=True)
                shutil.copytree(cache, work / f"cache-{rows}-warm")
            print(json.dumps({"rows": rows, "start": scenario, **tries[-1]}, default=str), flush=True)
        median = sorted(tries, key=lambda r: r["total_s"])[len(tries) // 2]
        out.append({"rows": rows, "start": scenario, **median, "starts": repeat,
                    "total_s_all": [round(r["total_s"], 2) for r in tries]})
    (collection / "manifest.json").write_text(texts[False], encoding="utf-8")
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="30000,100000,1000000")
    parser.add_argument("--work", default="/tmp/restart-bench", help="kept between runs: models, collections")
    parser.add_argument("--repeat", type=int, default=1, help="starts of each kind; the median one is reported")
    args = parser.parse_args(argv)
    from testkit.tiny_models import make_tiny_git

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    model = work / ("clip-tiny" if smoke() else "clip-vit-b32-random")  # a smoke run (benchmarks.run --quick): tiny
    if not (model / "modules.json").exists():
        speed_clip(model)
    captioner = work / "git-tiny"
    if not (captioner / "config.json").exists():
        make_tiny_git(captioner, train_seconds=0)
    export = text_export(str(model), work)
    rows = []
    for size in [int(s) for s in args.sizes.split(",")]:
        rows += run_size(size, work, str(model), str(captioner), export, args.repeat)
    baseline = {r["rows"]: r["total_s"] for r in rows if r["start"] == "as before"}
    for row in rows:
        row["x_as_before"] = row["total_s"] / baseline[row["rows"]]
    report("restart", "Restart to the first answered /search_text (fresh process, collection on local disk)", rows,
           ["rows", "start", "total_s", "x_as_before", *STAGES, "scan copy ready_s", "load_1min"],
           extra={"exports": [r["export"] for r in rows]})


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        serve(int(sys.argv[2]), Path(sys.argv[3]), before="--before" in sys.argv)
    else:
        main()

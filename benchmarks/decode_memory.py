#!/usr/bin/env python
"""Peak memory of the Space under a burst of huge-image searches, with a text search from another client.

Offline: builds (or reuses, with --models DIR) the tiny CLIP and a collection of generated shapes, writes an
11480 x 11480 16-bit greyscale PNG (~0.3 MB on disk, 264 MB decoded), serves app.py in a subprocess, then
sends --calls concurrent /search_image calls with that PNG and one /search_text call during the burst.
Records the server's peak resident memory above idle (sampled every 20 ms) and each call's time and outcome;
the text search's time is compared with the same call at idle (the baseline measured in this run). Writes
results/decode_memory.json|md.

    HF_HUB_OFFLINE=1 python -m benchmarks.decode_memory [--calls 6] [--side 11480] [--models /tmp/tiny-models]
"""

from __future__ import annotations

import os

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import argparse
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import free_port, report  # noqa: E402

import numpy as np
import psutil
from PIL import Image

SIDE = 11_480


def write_big_png(path: Path, side: int = SIDE) -> Path:
    """A 16-bit greyscale ramp that compresses to a few hundred KB: 131 Mpx at the default side, under the 134 Mpx
    pixel cap."""
    row = (np.arange(side, dtype=np.uint32) * 5 % 65536).astype(np.uint16)
    Image.fromarray(np.ascontiguousarray(np.broadcast_to(row, (side, side)))).save(path, compress_level=9)
    return path


def serve(collection: str, cache: str, port: int) -> None:
    """Child process: load the pipeline, serve app.py, report ready, run until killed."""
    import app
    from rag.config import Settings
    from rag.startup import open_pipeline

    pipeline = open_pipeline(Settings(cache_dir=Path(cache)), collection_dir=Path(collection),
                                      with_captioner=False)
    demo = app.build_demo(pipeline, captioner_error="no captioner in this benchmark")
    app.launch(demo, server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    print("READY", flush=True)
    while True:
        time.sleep(3600)


class PeakRss:
    """Samples a process's resident memory in a thread; ``peak`` is the highest value seen."""

    def __init__(self, pid: int, every: float = 0.02) -> None:
        self.process, self.every, self.peak = psutil.Process(pid), every, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(self.every)

    def __enter__(self) -> "PeakRss":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def _call(client, args: tuple, api_name: str, results: list, label: str) -> None:
    started = time.perf_counter()
    try:
        client.predict(*args, api_name=api_name)
        outcome = "results"
    except Exception as exc:  # noqa: BLE001 - the refusal message is what we report
        outcome = f"refused: {str(exc)[:90]}"
    results.append((label, time.perf_counter() - started, outcome))


def _burst(url: str, pid: int, png: Path, small: Path, calls: int) -> tuple[int, float, int, float, list]:
    """Warm up, measure idle RSS and a text search, then the concurrent burst; returns the measurements."""
    from gradio_client import Client, handle_file

    clients = [Client(url, verbose=False, download_files=False) for _ in range(calls + 1)]
    warm: list = []
    _call(clients[0], (handle_file(small), 10), "/search_image", warm, "warm-up image")
    _call(clients[0], ("red circle", 10), "/search_text", warm, "idle text")
    idle_text = min(t for label, t, _ in warm if label == "idle text")
    idle = psutil.Process(pid).memory_info().rss
    results: list = []
    threads = [threading.Thread(target=_call, args=(clients[i], (handle_file(png), 10), "/search_image", results,
                                                    f"image {i + 1}")) for i in range(calls)]
    text = threading.Thread(target=_call, args=(clients[-1], ("red circle", 10), "/search_text", results,
                                                "text during burst"))
    with PeakRss(pid) as rss:
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        time.sleep(0.5)
        text.start()
        for thread in threads + [text]:
            thread.join()
        burst = time.perf_counter() - started
    return idle, idle_text, rss.peak, burst, results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=6, help="concurrent /search_image calls (default 6)")
    parser.add_argument("--side", type=int, default=SIDE, help=f"side of the square PNG in pixels (default {SIDE})")
    parser.add_argument("--models", type=Path, help="folder to keep the tiny CLIP in (reused when present)")
    parser.add_argument("--serve", nargs=3, metavar=("COLLECTION", "CACHE", "PORT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve[0], args.serve[1], int(args.serve[2]))
        return
    png, (idle, idle_text, peak, burst, results) = measure(args.calls, args.side, args.models)
    rows = [{"call": label, "seconds": seconds, "outcome": outcome} for label, seconds, outcome in sorted(results)]
    during = next(t for label, t, _ in results if label == "text during burst")
    rows.append({"call": "text at idle (baseline)", "seconds": idle_text, "outcome": "results"})
    summary = {"png_side": args.side, "png_kb": png.stat().st_size / 1024, "idle_rss_mb": idle / 2**20,
               "peak_rss_mb": peak / 2**20, "peak_above_idle_gb": (peak - idle) / 2**30, "burst_s": burst,
               "text_during_vs_idle": during / idle_text, "all_returned_results": all(r[2] == "results" for r in results)}
    report("decode_memory", f"{args.calls} concurrent /search_image calls with a {args.side}x{args.side} 16-bit PNG "
           f"({summary['png_kb']:.0f} KB) + 1 /search_text during the burst: server RSS idle {summary['idle_rss_mb']:,.0f} MB, "
           f"peak {summary['peak_rss_mb']:,.0f} MB, peak above idle {summary['peak_above_idle_gb']:.2f} GB (target < 2.5 GB), "
           f"burst {burst:.1f} s, text during burst / idle {summary['text_during_vs_idle']:.1f}x", rows,
           ["call", "seconds", "outcome"], extra={"summary": summary})


def measure(calls: int, side: int, models: Path | None) -> tuple[Path, tuple]:
    """Build the collection, serve it in a child process, run the burst; returns the PNG and the measurements."""
    from testkit.shapes import build_shapes, write_shape_folder
    from testkit.tiny_models import make_tiny_clip

    work = Path(tempfile.mkdtemp(prefix="decode-memory-"))
    clip = (models or work / "models") / "clip"
    if not (clip / "modules.json").exists():
        make_tiny_clip(clip)
    collection = build_shapes(write_shape_folder(work / "shapes", n=48), work / "collection", str(clip))
    png = write_big_png(work / "big16.png", side)
    small = work / "shapes" / "set_a" / "img_001.jpg"
    port = free_port()
    server = subprocess.Popen([sys.executable, __file__, "--serve", str(collection), str(work / "cache"), str(port)],
                              stdout=subprocess.PIPE, text=True)
    try:
        for line in server.stdout:
            if line.strip() == "READY":
                break
        return png, _burst(f"http://127.0.0.1:{port}/", server.pid, png, small, calls)
    finally:
        server.kill()
        server.wait()


if __name__ == "__main__":
    main()

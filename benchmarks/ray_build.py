"""Build throughput: index_build --engine local vs --engine ray with 1 and 2 model replicas, and peak memory.

A random-weight CLIP of the real ViT-B/32 size (tests/tiny_models.make_random_clip_vit_b32; weights do not
change the time), generated 500x375 JPEGs. Each configuration runs in its own process, so "driver peak" is
that process's peak resident memory; "tree peak" adds the Ray processes it started (sampled every 0.2 s).
Ray is started before the clock starts; the replicas' model loads are inside the timed build.
Usage: python -m benchmarks.ray_build [--images 160] [--batch-size 32]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
from benchmarks.build_speed import write_jpegs
from benchmarks.common import ROOT, report, speed_clip

ROWS_10M = 10_000_000


class TreePeak(threading.Thread):
    """Samples the resident memory of this process plus all its descendants (the Ray processes)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak = 0.0
        self.running = True

    def run(self) -> None:
        me = psutil.Process()
        while self.running:
            total = 0
            for proc in [me, *me.children(recursive=True)]:
                try:
                    total += proc.memory_info().rss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total / 2**20)
            time.sleep(0.2)


def run_one(engine: str, workers: int, folder: str, model: str, out: str, batch_size: int) -> dict:
    """Child process: one build, timed; returns images/s and memory."""
    import index_build

    if engine == "ray":
        from rag.ingest.ray.engine import connect

        connect(None)  # the local Ray index_build would start, started before the clock
    sampler = TreePeak()
    sampler.start()
    argv = ["--images", folder, "--model", model, "--out", out, "--batch-size", str(batch_size), "--no-progress",
            "--workers", str(workers), "--engine", engine]
    start = time.perf_counter()
    code = index_build.main(argv)
    seconds = time.perf_counter() - start
    sampler.running = False
    sampler.join()
    if code != 0:
        raise SystemExit(f"build failed: {engine} {workers}")
    count = json.loads((Path(out) / "manifest.json").read_text())["rows"]
    return {"seconds": seconds, "images_per_s": count / seconds,
            "driver_peak_MB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "tree_peak_MB": sampler.peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=160)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--child", nargs=3, metavar=("ENGINE", "WORKERS", "DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        engine, workers, tmp = args.child
        result = run_one(engine, int(workers), f"{tmp}/jpegs", f"{tmp}/vit-b32", f"{tmp}/out-{engine}{workers}",
                         args.batch_size)
        print(json.dumps(result))
        return
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        speed_clip(Path(tmp) / "vit-b32")
        write_jpegs(Path(tmp) / "jpegs", args.images)
        for engine, workers in [("local", 2), ("ray", 1), ("ray", 2)]:
            command = [sys.executable, "-m", "benchmarks.ray_build", "--batch-size", str(args.batch_size), "--child", engine,
                       str(workers), tmp]
            output = subprocess.run(command, capture_output=True, text=True, check=True, cwd=ROOT).stdout
            result = json.loads(output.strip().splitlines()[-1])
            label = "local (2 decode threads)" if engine == "local" else f"ray, {workers} replica(s)"
            rows.append({"engine": label, **result})
    base = rows[0]["images_per_s"]
    for row in rows:
        row["ratio_vs_local"] = row["images_per_s"] / base
        row["10M_rows_days_extrapolated"] = ROWS_10M / row["images_per_s"] / 86_400
    report("ray_build", f"Build: local vs Ray, random-weight CLIP ViT-B/32, {args.images} JPEGs 500x375, "
           f"batch {args.batch_size}", rows,
           ["engine", "seconds", "images_per_s", "ratio_vs_local", "driver_peak_MB", "tree_peak_MB",
            "10M_rows_days_extrapolated"])


if __name__ == "__main__":
    main()

"""Run every benchmark script in turn; each prints its table and writes results/<name>.json|md (with provenance).

Usage (from the repository root):

    python -m benchmarks.run                  # every script at the sizes docs/benchmarks.md publishes (hours)
    python -m benchmarks.run --quick          # small sizes, seconds each, into a temporary folder (CI smoke run)
    python -m benchmarks.run --only search,startup --out /tmp/results
    python -m benchmarks.run --list           # the plan: each script, its arguments, and what it needs

A script that needs what this machine lacks (a CUDA GPU, Ray, Chromium, UMAP) is skipped with the reason
printed; the run ends with what ran, what was skipped and why, and what failed (exit status 1 if anything did).
``--quick`` never writes into benchmarks/results: its sizes, and the tiny models it swaps in for the real-size
random ones (``RAG_BENCH_SMOKE=1``, recorded in each file's provenance), are for checking that the scripts run,
not for publishing; the GPU check runs its ``--dry-run`` then.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
CHROMIUM = "/usr/bin/chromium"


@dataclass(frozen=True)
class Bench:
    """One script: its arguments for the published run and for the smoke run, and what it needs."""

    script: str
    full: tuple[str, ...] = ()
    quick: tuple[str, ...] = ()
    needs: tuple[str, ...] = ()
    quick_needs: tuple[str, ...] | None = None  # what the smoke run needs, when it differs


PLAN = [
    Bench("search", ("--sizes", "30000,100000,1000000"), ("--sizes", "3000", "--queries", "10", "--repeat", "5")),
    Bench("flat_search", ("--sizes", "250000,1000000"), ("--sizes", "20000", "--queries", "10")),
    Bench("exact_scan", (), ("--sizes", "10000", "--queries", "5")),
    Bench("filtered_search", ("--flat-size", "70000", "--hnsw-size", "1000000"),
          ("--flat-size", "3000", "--hnsw-size", "3000", "--queries", "5", "--repeat", "5")),
    Bench("startup", ("--sizes", "30000,1000000"), ("--sizes", "2000",)),
    Bench("scale", ("--sizes", "100000,250000,1000000"), ("--sizes", "3000", "--queries", "50")),
    Bench("restart", (), ("--sizes", "2000")),
    Bench("end_to_end", ("--rows", "30000"), ("--rows", "2000", "--queries", "5")),
    Bench("build_speed", ("--images", "320"), ("--images", "8", "--batch-size", "4")),
    Bench("streaming", ("--rows", "50000", "--limit", "1000"), ("--rows", "2000", "--limit", "100", "--shards", "2")),
    Bench("quantize", (), ("--texts", "20", "--images", "8", "--rows", "2000", "--calls", "3", "--eval-rows", "48")),
    Bench("finetune", (), ("--rows", "120", "--speed-rows", "2000", "--captions", "16")),
    Bench("describe_speed", (), ("--calls", "1", "--sample", "4", "--tokens", "4")),
    Bench("gpu_duration", (), ("--tokens", "4",)),
    Bench("app_latency", (), ("--calls", "2",)),
    Bench("burst", ("--rows", "100000", "--floor"), ("--levels", "1,4", "--calls", "1", "--min-calls", "4", "--floor")),
    # the text tower of ViT-B/32's size, where encoding dominates a call (results/burst_vit-b32.json)
    Bench("burst", ("--clip", "vit-b32", "--rows", "100000", "--ways", "raw HTTP", "--floor"), quick_needs=("full-run",)),
    Bench("decode_memory", (), ("--calls", "2", "--side", "2000")),
    Bench("build_contention", (), ("--images", "8", "--batch-sizes", "8", "--calls", "3")),
    # the fair comparison (same neighbours, one thread each), on clusters that overlap enough to tell methods apart
    Bench("map_layout", ("--rows", "5000", "--noise", "3"), ("--rows", "400",), ("umap",)),
    # the same with well-separated clusters, where both methods come near the attainable ceiling
    Bench("map_layout", ("--rows", "5000", "--noise", "1.5", "--name", "map_layout_separated"), needs=("umap",),
          quick_needs=("full-run",)),
    # the builder's own settings (2 threads) at the largest size it should lay out in one go
    Bench("map_layout", ("--rows", "100000", "--methods", "tsne", "--threads", "2", "--name", "map_layout_100k"),
          ("--rows", "400", "--methods", "tsne", "--name", "map_layout_100k")),
    Bench("map_browser", ("--rows", "10000,100000"), ("--rows", "500",), ("chromium",)),
    Bench("ray_build", ("--images", "64"), ("--images", "8", "--batch-size", "4"), ("ray",)),
    # the GPU check: real sizes on a CUDA GPU; its --dry-run (tiny models on the CPU) is the smoke run
    Bench("gpu_check", (), ("--dry-run",), ("script", "gpu"), quick_needs=("script",)),
    # one thread: the published run was measured on a machine other jobs loaded (the results record the load)
    Bench("create_speed", ("--threads", "1"), ("--quick", "--calls", "1", "--queries", "5", "--threads", "1")),
]


def missing(bench: Bench, quick: bool = False) -> str | None:
    """Why this machine cannot run ``bench`` (its smoke run if ``quick``), or None when it can."""
    needs = bench.quick_needs if quick and bench.quick_needs is not None else bench.needs
    for need in needs:
        if need == "full-run":
            return "a second configuration of a script the smoke run already runs"
        if need == "script" and not (HERE / f"{bench.script}.py").is_file():
            return f"benchmarks/{bench.script}.py is not in this checkout"
        if need == "ray" and importlib.util.find_spec("ray") is None:
            return "needs Ray (pip install -r requirements-build.txt)"
        if need == "umap" and importlib.util.find_spec("umap") is None:
            return "needs umap-learn for the comparison (pip install -r requirements-build.txt)"
        if need == "chromium" and (not Path(CHROMIUM).exists() or importlib.util.find_spec("playwright") is None):
            return f"needs Chromium at {CHROMIUM} and playwright"
        if need == "gpu" and not _cuda():
            return "needs a CUDA GPU (torch.cuda.is_available() is False)"
    return None


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def run_plan(plan: list[Bench], quick: bool, out: Path | None) -> dict[str, list[str]]:
    """Run each script in a fresh process; returns {"ran": [...], "skipped": [...], "failed": [...]}."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               GRADIO_ANALYTICS_ENABLED="False")
    if out is not None:
        env["RAG_BENCH_RESULTS"] = str(out)
    if quick:
        env["RAG_BENCH_SMOKE"] = "1"  # tiny models instead of the real sizes (benchmarks.common.speed_clip)
    outcome: dict[str, list[str]] = {"ran": [], "skipped": [], "failed": []}
    for bench in plan:
        arguments = bench.quick if quick else bench.full
        label = shlex.join([bench.script, *arguments])
        reason = missing(bench, quick)
        if reason:
            print(f"[skipped {bench.script}: {reason}]\n", flush=True)
            outcome["skipped"].append(f"{bench.script}: {reason}")
            continue
        print(f"[running python -m benchmarks.{label}]", flush=True)
        started = time.perf_counter()
        code = subprocess.call([sys.executable, "-m", f"benchmarks.{bench.script}", *arguments], cwd=HERE.parent, env=env)
        seconds = time.perf_counter() - started
        print(f"[{bench.script} finished in {seconds:.0f} s, exit {code}]\n", flush=True)
        outcome["failed" if code else "ran"].append(f"{label} ({seconds:.0f} s{f', exit {code}' if code else ''})")
    return outcome


def print_summary(outcome: dict[str, list[str]]) -> None:
    """What ran, what was skipped and why, what failed."""
    for kind in ("ran", "skipped", "failed"):
        print(f"{kind}: {len(outcome[kind])}")
        for line in outcome[kind]:
            print(f"  {line}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run), written to a temporary folder")
    parser.add_argument("--only", help="comma-separated script names to run (default: all)")
    parser.add_argument("--out", type=Path, help="write results here instead of benchmarks/results")
    parser.add_argument("--list", action="store_true", help="print the plan and exit")
    args = parser.parse_args(argv)
    plan = [b for b in PLAN if not args.only or b.script in args.only.split(",")]
    if args.list:
        for bench in plan:
            needs = bench.quick_needs if args.quick and bench.quick_needs is not None else bench.needs
            command = shlex.join(["python", "-m", f"benchmarks.{bench.script}", *(bench.quick if args.quick else bench.full)])
            print(command + (f"   (needs: {', '.join(needs)})" if needs else ""))
        return 0
    scratch = None
    if args.quick and args.out is None:
        scratch = Path(tempfile.mkdtemp(prefix="bench-quick-"))
        args.out = scratch
    print(f"results go to {args.out or HERE / 'results'}\n", flush=True)
    outcome = run_plan(plan, args.quick, args.out)
    print_summary(outcome)
    if scratch is not None:
        shutil.rmtree(scratch, ignore_errors=True)
    return 1 if outcome["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""One-command check of the Space's GPU code paths, with random-weight models of the real architectures built from
configs (clip-ViT-B-32, git-base-coco, Qwen2-VL-2B-Instruct): nothing is downloaded. docs/hardware-gpu-check.md
says how to run it on a GPU machine without internet.

    python -m benchmarks.gpu_check                         # real sizes on a CUDA GPU (a few minutes)
    python -m benchmarks.gpu_check --dry-run               # tiny models on the CPU (CI: tests/test_gpu_check.py)
    python -m benchmarks.gpu_check --wheels .gpu-wheels --out benchmarks/results/gpu_check.txt

Every check prints one line, ``PASS | FAIL | WARN | SKIP | INFO <name>: <detail>``; exit status 1 if any FAIL.

  env.*      versions against the Space's pins, the GPU
  devices.*  rag.models.devices on the GPU; a T4 (no native bf16) gets GIT in fp16 and Qwen2-VL in fp32, never fp16
  clip.*     rag.models.encoder on the device; RAG_QUANTIZE=auto's fp16 text tower scored against fp32 image
             vectors; index_build's fp16 towers (float32 pixels cast by the pre-hook)
  git.*      GitCaptioner on the device in its dtype (captions, context rerank, question), and in float16 (T4)
  qwen.*     Qwen2VLCaptioner on the device: dtype, attention, max_pixels, generate kwargs, the 96-token describe
             time against RAG_GPU_DURATION's default, peak memory; a T4-like GPU's float32 load (memory, time with
             the T4's attention kernels); fp16-vs-fp32 logits; NaN logits -> CaptionerError (never "!!!!");
             --real-qwen DIR: real weights' fp16 overflow and the guard's answer to it
  zerogpu.*  the real `spaces` package in ZeroGPU mode, a forked worker: no CUDA in the main process, weights
             packed at launch and moved once per worker, first/warm call seconds vs the requested duration, the
             ONNX text tower under spaces' torch patching, a GIT Space's start-up report, the worker's GPU
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.gpu_check_base import OUTPUTS, STATUS, check, make_clip, make_git, make_qwen, report  # noqa: E402

PINNED = ("transformers", "sentence_transformers", "spaces")
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", "GRADIO_ANALYTICS_ENABLED": "False"}
OVERLAY_MARK = "GPU_CHECK_OVERLAY"


def with_wheels(wheels: str, argv: list[str]) -> None:
    """Install the carried wheels offline into a private overlay, then run this check again on top of it."""
    overlay = Path(tempfile.gettempdir()) / "gpu-check-overlay"
    shutil.rmtree(overlay, ignore_errors=True)
    found = sorted(str(p) for p in Path(wheels).glob("*.whl"))
    done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--target",
                           str(overlay), *found], check=False)
    if done.returncode != 0 or not found:
        report("WARN", "env.wheels", f"offline install of {len(found)} wheels from {wheels} failed; using the "
               "installed libraries")
        return
    env = {**os.environ, OVERLAY_MARK: str(overlay),
           "PYTHONPATH": os.pathsep.join([str(overlay), str(ROOT), os.environ.get("PYTHONPATH", "")])}
    os.chdir(ROOT)
    os.execve(sys.executable, [sys.executable, "-m", "benchmarks.gpu_check", *argv], env)


def pins() -> dict[str, str]:
    """The versions requirements*.txt pin (name -> version)."""
    found = {}
    for name in ("requirements.txt", "requirements-dev.txt"):
        path = ROOT / name
        for line in path.read_text().splitlines() if path.exists() else []:
            line = line.split("#")[0].strip()
            if "==" in line:
                package, version = line.split("==", 1)
                found[package.split("[")[0].strip().lower().replace("-", "_")] = version.strip().split(";")[0].strip()
    return found


def check_env(dry_run: bool) -> None:
    """Library versions (against the pins), the GPU; a CUDA run refuses a machine whose torch sees none."""
    from importlib.metadata import PackageNotFoundError, version

    import torch

    versions = {"python": sys.version.split()[0], "torch": torch.__version__}
    for name in ("transformers", "sentence_transformers", "spaces", "gradio", "onnxruntime", "torchvision"):
        try:
            versions[name] = version(name.replace("_", "-"))
        except PackageNotFoundError:
            versions[name] = "missing"
    report("INFO", "env.versions", " ".join(f"{k}={v}" for k, v in versions.items())
           + (" (carried wheels)" if os.environ.get(OVERLAY_MARK) else ""))
    pinned = pins()
    off = [f"{k} {versions[k]} (pinned {pinned[k]})" for k in PINNED if k in pinned and versions[k] != pinned[k]]
    if off:
        report("WARN", "env.pins", "not the Space's pinned versions: " + ", ".join(off) + " (carry wheels: --wheels)")
    if dry_run:
        report("INFO", "env.device", "dry run on the CPU with tiny models: the logic and the ZeroGPU emulation; no "
               "timing or memory figure here means anything for a GPU")
        return
    if not torch.cuda.is_available():
        raise SystemExit("FAIL env.cuda: torch sees no CUDA GPU (--dry-run runs on a CPU)")
    props = torch.cuda.get_device_properties(0)
    report("INFO", "env.device", f"{props.name}, compute capability {props.major}.{props.minor}, "
           f"{props.total_memory / 2**30:.2f} GiB")


def build(work: Path, dry_run: bool, device: str) -> dict:
    """The three models, real sizes (or tiny); {} when building failed."""
    paths: dict = {}
    with check("build.models"):
        started = time.perf_counter()
        paths["clip"] = make_clip(work / "clip", real=not dry_run)
        paths["git"] = make_git(work / "git", real=not dry_run)
        paths["qwen"], qwen = make_qwen(work / "qwen", real=not dry_run, device=device)
        sizes = "tiny stand-ins" if dry_run else "clip-ViT-B-32 and git-base-coco architectures"
        report("PASS", "build.models", f"{sizes}, {qwen}, in {time.perf_counter() - started:.0f} s")
    return paths if len(paths) == 3 else {}


def run_checks(args: argparse.Namespace, work: Path) -> None:
    """Every check, in order; the ZeroGPU children last (they need the GPU to themselves)."""
    import torch
    from benchmarks.gpu_check_native import check_clip, check_devices, check_git, check_guard
    from benchmarks.gpu_check_qwen import check_qwen, check_real_qwen_fp16
    from benchmarks.gpu_check_zerogpu import check_zerogpu

    device = "cpu" if args.dry_run else "cuda"
    paths = build(work, args.dry_run, device)
    if not paths:
        return
    check_devices(args.dry_run)
    encoder = check_clip(paths["clip"], device)
    check_git(paths["git"], encoder, device)
    if encoder is not None:
        from rag.models.captioner import GitCaptioner

        check_guard(GitCaptioner(paths["git"], encoder, device=device), "git")
    del encoder
    gc.collect()
    check_qwen(paths["qwen"], device)
    check_real_qwen_fp16(args.real_qwen, device)
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    if args.skip_zerogpu:
        report("SKIP", "zerogpu.*", "--skip-zerogpu")
    else:
        check_zerogpu(args.dry_run, paths, work)


def main(argv: list[str] | None = None) -> int:
    """Parse the options, run every check, print the summary; 1 if any check failed."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 2 and argv[0] == "--zerogpu-child":
        import json

        from benchmarks.gpu_check_zerogpu import zerogpu_child

        zerogpu_child(json.loads(argv[1]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="tiny models on the CPU")
    parser.add_argument("--skip-zerogpu", action="store_true")
    parser.add_argument("--real-qwen", help="a local Qwen/Qwen2-VL-2B-Instruct snapshot (fp16 overflow check)")
    parser.add_argument("--keep", help="build the models here and keep them (default: a temporary folder)")
    parser.add_argument("--wheels", default=os.environ.get("GPU_CHECK_WHEELS"),
                        help="a folder of pinned wheels to install offline into a private overlay first")
    parser.add_argument("--out", help="also write the report lines to this file")
    args = parser.parse_args(argv)
    os.environ.update(OFFLINE)
    for name in ("SPACES_ZERO_GPU", "RAG_DEVICE", "RAG_CAPTIONER", "RAG_QUANTIZE", "RAG_GPU_DURATION"):
        os.environ.pop(name, None)
    if args.wheels and not os.environ.get(OVERLAY_MARK):
        with_wheels(args.wheels, argv)  # runs the check again on top of the wheels (returns only if that failed)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        OUTPUTS.append(open(args.out, "w", encoding="utf-8"))  # noqa: SIM115 - closed at exit
    started = time.perf_counter()
    check_env(args.dry_run)
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="gpu-check-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        run_checks(args, work)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    fails = [name for status, name in STATUS if status == "FAIL"]
    counts = {s: sum(1 for status, _ in STATUS if status == s) for s in ("PASS", "FAIL", "WARN")}
    report("SUMMARY", f"{counts['PASS']} pass, {counts['FAIL']} fail, {counts['WARN']} warn",
           f"{time.perf_counter() - started:.0f} s" + (f"; failed: {', '.join(fails)}" if fails else ""))
    for stream in OUTPUTS:
        stream.close()
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())

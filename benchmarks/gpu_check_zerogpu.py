"""The GPU check's ZeroGPU part: the real `spaces` package in ZeroGPU mode, in a child process per captioner, with
tests/zerogpu_emulation.py's stand-in for the platform's device API (on a real GPU it grants the real GPU's UUID,
and only on a CPU dry run are torch's CUDA entry points emulated).

What it checks: the main process never initialises CUDA; Qwen2-VL is packed at launch and moved to the GPU in the
forked worker, once per worker; first-call and warm-call seconds against the requested duration; the int8 ONNX
text tower is exported under `spaces`' torch patching; a GIT Space registers a ``@spaces.GPU`` function and sends
its start-up report; and what GPU the worker gets (rag.models.zerogpu.gpu_report).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.gpu_check_base import check, gib, report, space_processor

ROOT = Path(__file__).resolve().parents[1]
GRADIO_STUB = {  # only what `spaces` touches outside a running app, for a GPU machine without gradio
    "__init__.py": '''"""Minimal stand-in for gradio (benchmarks/gpu_check.py on a GPU machine without gradio)."""
__version__ = "6.31.0"


class Error(Exception):
    def __init__(self, message="Error raised.", duration=10, visible=True, title="Error", print_exception=True):
        super().__init__(message)
        self.message, self.title, self.print_exception = message, title, print_exception


class Request:
    pass


class Blocks:
    def launch(self, *args, **kwargs):
        return None


def Info(message="", *args, **kwargs):
    print("gr.Info:", message)


def Warning(message="", *args, **kwargs):
    print("gr.Warning:", message)


Success = Info
from . import context, helpers, queueing  # noqa: E402
''',
    "context.py": '''from contextvars import ContextVar


class Context:
    root_block = None


class LocalContext:
    blocks = ContextVar("blocks", default=None)
    event_id = ContextVar("event_id", default=None)
    in_event_listener = ContextVar("in_event_listener", default=False)
    progress = ContextVar("progress", default=None)
    request = ContextVar("request", default=None)
''',
    "helpers.py": "class Progress:\n    pass\n\n\nclass TrackedIterable:\n    pass\n",
    "queueing.py": ("class Queue:\n    def set_progress(self, *args, **kwargs):\n        pass\n\n"
                    "    def log_message(self, *args, **kwargs):\n        pass\n"),
}


def gpu_uuid() -> str:
    """This machine's first GPU's UUID (what the ZeroGPU scheduler grants)."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=uuid", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=30, check=True).stdout.split()
        if out:
            return out[0]
    except (OSError, subprocess.SubprocessError):
        pass
    import torch

    return "GPU-" + str(torch.cuda.get_device_properties(0).uuid)


def _gradio(work: Path) -> str:
    """The installed gradio, else the stand-in put on sys.path."""
    try:
        import gradio

        return "gradio " + gradio.__version__
    except ImportError:
        stub = work / "gradio_stub" / "gradio"
        stub.mkdir(parents=True, exist_ok=True)
        for name, text in GRADIO_STUB.items():
            (stub / name).write_text(text)
        sys.path.insert(0, str(stub.parent))
        return "gradio stand-in"


def _captioner(spec: dict, encoder: Any) -> Any:
    """The child's captioner; Qwen2-VL forced to write all QWEN_MAX_NEW_TOKENS (inherited by the forked worker)."""
    if spec["captioner"] != "qwen2-vl":
        from rag.models.captioner import load_captioner

        return load_captioner(spec["captioner"], spec["git"], encoder)
    from rag.models.qwen2vl import QWEN_MAX_NEW_TOKENS, Qwen2VLCaptioner

    with space_processor():
        captioner = Qwen2VLCaptioner(spec["qwen"])
    original = captioner.model.generate

    def generate(**kwargs: Any) -> Any:
        kwargs["min_new_tokens"] = QWEN_MAX_NEW_TOKENS
        return original(**kwargs)

    captioner.model.generate = generate
    return captioner


def _describes(captioner: Any) -> dict:
    """Two describes through ``@spaces.GPU``: the first forks the worker and moves the weights, the second reuses it."""
    from PIL import Image
    from rag.errors import CaptionerError

    image = Image.new("RGB", (4032, 3024), (90, 140, 200))
    times, texts = [], []
    for _ in range(2):
        start = time.perf_counter()
        try:
            texts.append(captioner.write_description(image, [], "what shape is it?").text)
        except CaptionerError as exc:  # random weights may write a degenerate string: the guard's refusal
            if "no usable text" not in str(exc):
                raise
            texts.append("(degenerate)")
        times.append(time.perf_counter() - start)
    return {"first_s": times[0], "warm_s": times[1], "texts": texts}


class RagWarnings(logging.Handler):
    """Keeps the first line of each warning the rag library logs (e.g. why a quantisation fell back)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith("rag."):
            self.lines.append(record.getMessage().splitlines()[0][:200])


def zerogpu_child(spec: dict) -> None:
    """Runs in a fresh process: ZeroGPU environment, `spaces` imported before anything touches CUDA."""
    import faulthandler
    import multiprocessing

    faulthandler.dump_traceback_later(spec.get("hang_dump", 240), exit=False)
    work = Path(spec["work"])
    sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
    import zerogpu_emulation as emu

    emu.emulate_environment(work, cpu_torch=spec["dry"])
    emu.GPU["uuid"] = spec["uuid"]
    os.environ.pop("RAG_GPU_DURATION", None)  # the Space's default (rag.models.zerogpu.DEFAULT_GPU_DURATION)
    import torch

    result: dict = {"gradio": _gradio(work)}
    import spaces  # noqa: F401  (before torch initialises CUDA, as app.py does)
    import spaces.zero as zero
    from spaces.zero import decorator
    from spaces.zero.torch import patching

    if spec["dry"]:
        emu.patch_worker()
    from rag.models import devices, zerogpu
    from rag.models.encoder import Encoder
    from rag.models.quantize import quantize_encoder

    warnings_seen = RagWarnings()
    logging.getLogger().addHandler(warnings_seen)
    encoder = Encoder(spec["clip"])
    quantized = quantize_encoder(encoder, "auto", towers=("text",), cache_dir=work / "cache")
    captioner = _captioner(spec, encoder)
    result.update(on_zero_gpu=devices.on_zero_gpu(), encoder_device=encoder.device, rag_warnings=warnings_seen.lines,
                  quantize=[quantized.mode, quantized.engine, quantized.reason],
                  captioner=[captioner.kind, captioner.device, str(captioner.dtype)],
                  gpu_functions=len(decorator.decorated_cache) // 2, describe_concurrency=devices.describe_concurrency(
                      spec["captioner"]))
    zero.startup()  # what gr.Blocks.launch runs first on ZeroGPU: pack "cuda" tensors to disk, report start-up
    result["packed_bytes"] = sum(pack.total_size for pack in patching.tensor_packs)
    result["startup_report"] = "/startup-report" in emu.CALLS
    result["search_after_pack"] = int(encoder.encode_texts(["a red circle"]).shape[1])
    if captioner.kind == "qwen2-vl":
        result.update(_describes(captioner), allow_calls=emu.CALLS.count("/allow"),
                      schedule_calls=emu.CALLS.count("/schedule"), durations=sorted(set(emu.DURATIONS)))
    else:  # a GIT Space's only GPU function: what GPU a ZeroGPU call gets
        result["gpu_report"] = zerogpu.in_fresh_thread(zerogpu.GPU_REPORT)
    result["parent_cuda_initialized"] = bool(torch.cuda.is_initialized())
    print("\nRESULT " + json.dumps(result), flush=True)
    for worker in multiprocessing.active_children():  # the forked GPU worker holds our stdout/stderr open
        worker.terminate()
        worker.join(10)
    sys.stderr.flush()
    os._exit(0)


def run_child(dry_run: bool, kind: str, paths: dict, work: Path, timeout: int) -> dict:
    """One ZeroGPU child (``kind``: qwen2-vl or git); its RESULT."""
    spec = {"work": str(work), "dry": dry_run, "captioner": kind, "uuid": "GPU-emulated" if dry_run else gpu_uuid(),
            "hang_dump": max(30, timeout - 20), **paths}
    work.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SPACES_", "ZEROGPU_", "ZERO_GPU", "RAG_"))}
    env.update(HOME=str(work))
    child = subprocess.Popen([sys.executable, "-m", "benchmarks.gpu_check", "--zerogpu-child", json.dumps(spec)],
                             env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             start_new_session=True)
    try:
        stdout, stderr = child.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)  # the child and its forked GPU worker
        stdout, stderr = child.communicate()
        raise RuntimeError(f"ZeroGPU child ({kind}) timed out after {timeout} s: {stderr[-1500:]}") from None
    lines = [line[line.index("RESULT ") + 7:] for line in stdout.splitlines() if "RESULT {" in line]
    if child.returncode != 0 or not lines:
        raise RuntimeError(f"ZeroGPU child ({kind}) exited {child.returncode}: {(stderr or stdout)[-1500:]}")
    return json.loads(lines[-1])


def check_zerogpu(dry_run: bool, paths: dict, work: Path) -> None:
    """Both ZeroGPU children and what they found."""
    import importlib.util

    missing = [m for m in ("spaces", "pydantic", "httpx") if importlib.util.find_spec(m) is None]
    if missing:
        report("SKIP", "zerogpu.*", f"not installed: {', '.join(missing)} (carry the pinned wheels: --wheels DIR)")
        return
    with check("zerogpu.qwen_child"):
        result = run_child(dry_run, "qwen2-vl", paths, work / "zerogpu-qwen", timeout=300)
        report("INFO", "zerogpu.qwen_child", json.dumps({k: v for k, v in result.items() if k != "texts"}))
        report_qwen_child(result, dry_run)
    with check("zerogpu.git_child"):
        git = run_child(dry_run, "git", paths, work / "zerogpu-git", timeout=200)
        report_git_child(git, dry_run)


def report_qwen_child(result: dict, dry_run: bool) -> None:
    """Placement, no CUDA in the main process, the ONNX engine, worker reuse and the first call's seconds."""
    from rag.models.zerogpu import DEFAULT_GPU_DURATION

    ok = (result["encoder_device"] == "cpu" and result["captioner"] == ["qwen2-vl", "cuda", "torch.bfloat16"]
          and result["gpu_functions"] >= 2 and result["startup_report"])
    report("PASS" if ok else "FAIL", "zerogpu.placement",
           f"encoder {result['encoder_device']}, captioner {result['captioner']}, {result['gpu_functions']} @spaces.GPU "
           f"functions, startup report sent={result['startup_report']}, {gib(result['packed_bytes'])} packed at launch")
    report("PASS" if not result["parent_cuda_initialized"] else "FAIL", "zerogpu.main_process_no_cuda",
           f"torch.cuda.is_initialized() in the main process after describes: {result['parent_cuda_initialized']}")
    engine = result["quantize"]
    report("PASS" if engine[1] == "onnxruntime" else "FAIL", "zerogpu.onnx_export_under_spaces",
           f"RAG_QUANTIZE=auto on the CPU encoder under spaces' torch patching: {engine}; {result['rag_warnings'][:2]}")
    reused = result["allow_calls"] == 1 and result["schedule_calls"] == 2
    report("PASS" if reused else "WARN", "zerogpu.worker_reuse",
           f"{result['schedule_calls']} schedules, {result['allow_calls']} worker start(s): weights moved to the GPU "
           "once per worker, on its first call")
    budget = float(result["durations"][0]) if result["durations"] else DEFAULT_GPU_DURATION
    if dry_run:
        report("INFO", "zerogpu.first_call", f"CPU dry run: first {result['first_s']:.2f} s, warm {result['warm_s']:.2f} s "
               f"(requested duration {budget:.0f} s)")
    else:
        report("PASS" if result["first_s"] <= budget / 1.5 else "WARN", "zerogpu.first_call",
               f"first call {result['first_s']:.2f} s (fork + CUDA init + {gib(result['packed_bytes'])} disk->GPU + 96 "
               f"tokens) vs requested duration {budget:.0f} s (RAG_GPU_DURATION default); warm call "
               f"{result['warm_s']:.2f} s. An H200 3g.71gb slice is slower than a whole GPU: keep >= 1.5x headroom")
    report("PASS" if result["describe_concurrency"] > 1 else "FAIL", "zerogpu.describe_concurrency",
           f"{result['describe_concurrency']} describes at once (each waits for its own GPU slice)")


def report_git_child(git: dict, dry_run: bool) -> None:
    """A GIT Space on ZeroGPU starts (a GPU function registered, start-up report sent); the worker's GPU."""
    ok = git["gpu_functions"] >= 1 and git["startup_report"] and git["quantize"][1] == "onnxruntime"
    report("PASS" if ok else "FAIL", "zerogpu.git_startup",
           f"RAG_CAPTIONER=git: {git['gpu_functions']} @spaces.GPU function(s), startup report sent="
           f"{git['startup_report']}, text tower {git['quantize'][:2]}, describe concurrency "
           f"{git['describe_concurrency']}" + ("" if ok else " -> the platform stops the Space"))
    facts = git["gpu_report"]
    if dry_run:
        report("INFO", "zerogpu.gpu_report", f"the forked worker answered {facts} (CPU dry run: no CUDA)")
    else:
        report("PASS" if facts.get("bf16") else "FAIL", "zerogpu.gpu_report",
               f"the worker's GPU: {facts} (rag.models.devices assumes native bf16 on ZeroGPU)")

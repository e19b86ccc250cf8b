"""ZeroGPU: the Space's GPU entry points, run inside ``@spaces.GPU``, and the platform's refusals explained.

At launch `spaces` sends the platform its start-up report only if at least one ``@spaces.GPU`` function is
registered (spaces/zero/__init__.py ``startup``), and the platform stops a ZeroGPU Space that sends none ("No
@spaces.GPU function detected during startup"). So ``gpu_report`` is registered when this module is imported
on ZeroGPU (app.py -> rag.startup -> the captioners import it), whatever the configuration: GIT, RAG_DEVICE=cpu,
a captioner that failed to load, a start-up that failed (the error page must still be served). Features that
use the GPU (Qwen2-VL generation; image synthesis later) add theirs through ``on_gpu``.

Only Qwen2-VL generation runs on the GPU today (rag.models.devices says why the encoder and GIT stay on the CPU).
On a refusal `spaces` raises Gradio's ``gr.Error`` (title "ZeroGPU quota exceeded", "ZeroGPU queue timeout",
...); rag/ never imports gradio, so the error is recognised by its title/message and re-raised as a rag.errors type.

Duration: ``@spaces.GPU(duration=...)`` is the slot requested per call; shorter slots are scheduled first
and a visitor needs that much quota left, but a call running past it may be aborted. The default comes from
benchmarks/gpu_duration.py (see README "Hardware"); ``RAG_GPU_DURATION`` overrides it.
"""

from __future__ import annotations

import contextvars
import functools
import logging
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import torch

from rag.models.devices import on_zero_gpu
from rag.errors import ConfigError, GpuBusy, GpuQuotaExceeded, GpuUnavailable, RagError

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_GPU_DURATION = 15  # benchmarks/gpu_duration.py: ~5 s estimated first call on Qwen2-VL-2B, x3
MAX_GPU_DURATION = 300
REPORT_DURATION = 10  # gpu_report only asks torch about the device
BUSY_MARKERS = ("no gpu was available", "queue timeout", "waiting for a gpu")
QUOTA_MARKERS = ("quota", "gpu limit", "credits", "runs limit", "illegal duration", "larger than the maximum")


def gpu_duration() -> int:
    """Seconds requested per ZeroGPU call: ``RAG_GPU_DURATION`` or the measured default."""
    raw = os.environ.get("RAG_GPU_DURATION", "").strip()
    if not raw:
        return DEFAULT_GPU_DURATION
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_GPU_DURATION:
        raise ConfigError(f"RAG_GPU_DURATION must be a whole number of seconds from 1 to {MAX_GPU_DURATION}, not {raw!r}.")
    return value


def gpu_error(exc: BaseException, duration: int) -> GpuUnavailable | None:
    """The rag.errors form of a ZeroGPU refusal (a ``gr.Error`` from `spaces`), or None for any other error."""
    title = str(getattr(exc, "title", "") or "")
    message = getattr(exc, "message", None)
    message = str(message if message is not None else (exc.args[0] if exc.args else ""))
    text = f"{title} {message}".lower()
    from_spaces = "zerogpu" in text or type(exc).__module__.startswith(("gradio", "spaces"))
    if not from_spaces and "quota" not in text:
        return None
    if any(marker in text for marker in BUSY_MARKERS):
        return GpuBusy()
    if any(marker in text for marker in QUOTA_MARKERS):
        hint = f" (this Space asks for {duration} s per description)" if "duration" in text else ""
        return GpuQuotaExceeded(" ".join(message.split()) + hint)
    if "aborted" in text:
        return GpuUnavailable(
            f"The GPU task was stopped before it finished (it may have run past its {duration} s slot). Try again."
        )
    if "zerogpu" in text:
        return GpuUnavailable(f"The GPU could not be used for this request ({' '.join(message.split())}). Try again.")
    return None


def in_fresh_thread(function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``function(*args, **kwargs)`` in a new thread that sees the caller's context variables (Gradio's request).

    `spaces` forks its GPU worker from the calling thread. A thread that already ran a parallel torch op
    (the CLIP search a describe does first) carries GNU OpenMP state that does not survive fork(): the
    worker's first parallel CPU op then waits forever (reproduced under tests/zerogpu_emulation.py).
    A thread that has never run torch code forks cleanly.
    """
    context = contextvars.copy_context()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="zerogpu-call") as pool:
        return pool.submit(context.run, function, *args, **kwargs).result()


def on_gpu(function: Callable[..., T], duration: int | None = None) -> Callable[..., T]:
    """``function`` run inside ``@spaces.GPU(duration=...)`` on ZeroGPU, refusals as rag.errors; else unchanged."""
    if not on_zero_gpu():
        return function
    import spaces  # preinstalled on every Space; imported by app.py before torch

    duration = duration or gpu_duration()
    wrapped = spaces.GPU(duration=duration)(function)

    @functools.wraps(function)
    def call(*args: Any, **kwargs: Any) -> T:
        try:
            return in_fresh_thread(wrapped, *args, **kwargs)
        except RagError:
            raise
        except Exception as exc:
            translated = gpu_error(exc, duration)
            if translated is None:
                raise
            log.warning("ZeroGPU refused the captioner: %s -> %s", exc, translated)
            raise translated from None

    return call


def gpu_report() -> dict[str, Any]:
    """What the GPU a ``@spaces.GPU`` call gets looks like (name, capability, memory, native bf16).

    The Space's always-registered GPU entry point (see the module docstring); benchmarks/gpu_check.py calls it
    in the forked worker to confirm the bfloat16 that rag.models.devices assumes for ZeroGPU without asking.
    """
    if not torch.cuda.is_available():
        return {"cuda": False}
    props = torch.cuda.get_device_properties(0)
    return {
        "cuda": True,
        "name": props.name,
        "capability": f"{props.major}.{props.minor}",
        "memory_gb": round(props.total_memory / 1e9, 1),
        "bf16": bool(torch.cuda.is_bf16_supported(including_emulation=False)),
    }


def register_entry_point() -> Callable[[], dict[str, Any]]:
    """``gpu_report`` wrapped in ``@spaces.GPU`` (registered with `spaces`) on ZeroGPU; else itself."""
    if not on_zero_gpu():
        return gpu_report
    try:
        import spaces
    except ImportError:  # preinstalled on every Space; without it there is no ZeroGPU to report to
        log.warning("SPACES_ZERO_GPU is set but the `spaces` package is missing: no GPU entry point registered")
        return gpu_report
    return spaces.GPU(duration=REPORT_DURATION)(gpu_report)


# Registered at import, before app.py builds the UI and launches: see the module docstring.
GPU_REPORT = register_entry_point()

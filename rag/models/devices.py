"""Device and dtype decisions in one place: which model runs where, in which precision, on each Space hardware.

* CPU basic: everything on the CPU in float32; ``auto`` picks the GIT captioner.
* A dedicated CUDA GPU (T4, A10G, L4, A100 ...): every model on ``cuda``; captioners in bfloat16 where the
  GPU has native bf16 (compute capability 8+: A10G, L4, A100, H100). Without it (a T4 is 7.5) GIT runs in
  float16, but Qwen2-VL runs in float32: Qwen2 language models were trained in bf16 and overflow in fp16
  (upstream: Qwen2-VL-2B in fp16 writes only "!!!!", Qwen2-1.5B is NaN after layer 1, the same on Turing
  GPUs in vLLM; transformers upcasts only RMSNorm and the eager softmax). fp32 Qwen2-VL-2B is 8.8 GB of
  weights, which fits a T4's 15 GB; decoding reads them once per token, so at the T4's 320 GB/s a 96-token
  describe costs ~3-5 s (an estimate: benchmarks/gpu_check.py measures it on a real GPU) against ~1 s for
  GIT in fp16, and ``auto`` still picks Qwen2-VL there: whoever pays for a GPU wants its better answers.
  The CLIP encoder stays in float32 (it is small; rag.models.quantize owns any lower precision for it).
* ZeroGPU (``SPACES_ZERO_GPU`` set by the platform): a GPU exists only inside ``@spaces.GPU`` calls, which
  run in a forked worker; between calls the main process's "cuda" tensors are offloaded to disk, and any
  use of them outside such a call fails. So models used on every request (the CLIP encoder: one forward
  pass, ~30 ms on a CPU; GIT: a few seconds of beam search) run in the main process on the CPU and never
  wait for a GPU slot; only Qwen2-VL generation is placed on "cuda" and runs inside ``@spaces.GPU``
  (rag.models.zerogpu). ZeroGPU's GPUs (H200 slices, RTX PRO 6000) all have native bf16.

``RAG_DEVICE`` (``Settings.device``) overrides the choice; on ZeroGPU a request for ``cuda`` is refused
for the main-process models (it would break search after launch) and only applies to Qwen2-VL.
"""

from __future__ import annotations

import logging
import os

import torch

log = logging.getLogger(__name__)


def on_zero_gpu() -> bool:
    """True on Hugging Face ZeroGPU hardware (the platform sets ``SPACES_ZERO_GPU``; `spaces` reads it the same way)."""
    return os.environ.get("SPACES_ZERO_GPU", "").strip().lower() in ("1", "t", "true")


def main_device(requested: str | None = None) -> str:
    """Device for models used on every request in the main process (CLIP encoder, GIT)."""
    if on_zero_gpu():
        if requested and not requested.startswith("cpu"):
            log.warning("RAG_DEVICE=%s ignored for the encoder/GIT on ZeroGPU: they run on the CPU", requested)
        return "cpu"
    if requested:
        return requested
    return "cuda" if torch.cuda.is_available() else "cpu"


def generator_device(requested: str | None = None) -> str:
    """Device for Qwen2-VL: ZeroGPU's "cuda" (used inside ``@spaces.GPU`` only), else as ``main_device``."""
    if on_zero_gpu():
        return "cpu" if requested and requested.startswith("cpu") else "cuda"
    return main_device(requested)


BF16_ONLY = ("qwen2-vl",)  # captioners trained in bf16 whose activations overflow float16


def captioner_dtype(device: str, kind: str = "git") -> torch.dtype:
    """float32 on CPU; on CUDA bfloat16 where the GPU has it natively, else float16 (T4), except for the
    bf16-trained ``BF16_ONLY`` captioners (Qwen2-VL), which get float32 there: see the module docstring."""
    if not device.startswith("cuda"):
        return torch.float32
    if on_zero_gpu():
        return torch.bfloat16  # ZeroGPU hardware is H200 / Blackwell; asking torch would touch the emulated device
    if torch.cuda.is_bf16_supported(including_emulation=False):
        return torch.bfloat16
    return torch.float32 if kind in BF16_ONLY else torch.float16


def resolve_captioner(kind: str, requested_device: str | None = None) -> str:
    """Resolve ``auto`` by the device the captioner would really use: Qwen2-VL on a GPU, else GIT."""
    if kind != "auto":
        return kind
    return "qwen2-vl" if generator_device(requested_device).startswith("cuda") else "git"


# Describes at once (the describe event's concurrency_limit in ui/). One wherever the captioner generates on
# hardware this process owns: GIT beam search saturates CPU basic's 2 vCPUs, and on a dedicated GPU every
# request thread queues its kernels on the same default CUDA stream, so two describes in parallel each take
# twice as long (and hold twice the activations) for the same throughput. On ZeroGPU with Qwen2-VL on "cuda"
# the process owns no GPU: each ``@spaces.GPU`` call is scheduled by the platform onto a GPU slice and runs in
# a worker forked for that slice (`spaces` keeps one per slice, spaces/zero/wrappers.py), and a visitor's wait
# for a slice (up to 60 s in ZeroGPU's queue) happens inside this process. With 1, that one wait blocked every
# other visitor's describe; the main-process part of a describe is only a CLIP forward and a FAISS search,
# so 4 (the search limit: the same cap on CPU work in flight) waits or runs at once, and Gradio's queue keeps
# the order beyond that. GIT on ZeroGPU runs on the CPU like on CPU basic, so it keeps 1.
ZEROGPU_DESCRIBE_CONCURRENCY = 4


def describe_concurrency(kind: str | None = None, requested_device: str | None = None) -> int:
    """How many describes may run at once on this hardware for this captioner (``None``: ``RAG_CAPTIONER`` and
    ``RAG_DEVICE`` from the environment, read leniently: a bad value is reported by start-up, not here)."""
    if kind is None:
        kind = os.environ.get("RAG_CAPTIONER", "").strip().lower() or "auto"
        requested_device = os.environ.get("RAG_DEVICE", "").strip() or None
    if on_zero_gpu() and resolve_captioner(kind, requested_device) == "qwen2-vl":
        if generator_device(requested_device).startswith("cuda"):
            return ZEROGPU_DESCRIBE_CONCURRENCY
    return 1

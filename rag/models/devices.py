"""Device and dtype decisions in one place: which model runs where, in which precision, on each Space hardware.

* CPU basic: everything on the CPU in float32; ``auto`` picks the GIT captioner.
* A dedicated CUDA GPU (T4, A10G, L4, A100 ...): every model on ``cuda``; captioners in bfloat16 where the
  GPU has native bf16 (compute capability 8+: A10G, L4, A100, H100), else float16 (T4 is 7.5).
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


def captioner_dtype(device: str) -> torch.dtype:
    """float32 on CPU; on CUDA bfloat16 where the GPU has it natively, else float16 (T4)."""
    if not device.startswith("cuda"):
        return torch.float32
    if on_zero_gpu():
        return torch.bfloat16  # ZeroGPU hardware is H200 / Blackwell; asking torch would touch the emulated device
    return torch.bfloat16 if torch.cuda.is_bf16_supported(including_emulation=False) else torch.float16


def resolve_captioner(kind: str, requested_device: str | None = None) -> str:
    """Resolve ``auto`` by the device the captioner would really use: Qwen2-VL on a GPU, else GIT."""
    if kind != "auto":
        return kind
    return "qwen2-vl" if generator_device(requested_device).startswith("cuda") else "git"

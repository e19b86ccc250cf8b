#!/usr/bin/env python
"""How long one Qwen2-VL describe holds a ZeroGPU slot: the basis of rag.models.zerogpu.DEFAULT_GPU_DURATION.

No GPU is available to this project's CI, so this measures what can be measured and states the rest:

* measured, on this CPU (process CPU time, one thread, so the load other jobs put on a shared machine does
  not count): the tiny test Qwen2-VL's greedy decoding step at 2 and 8 decoder layers. A model
  this small (hidden 64) does almost no arithmetic, so its step time is the framework's per-op overhead;
  the slope per layer, times Qwen2-VL-2B's 28 layers, estimates the per-token overhead of eager `generate`,
  which on a GPU shows up as kernel-launch/Python overhead (assumed similar per op: ~5-20 us either way).
* documented: Qwen2-VL-2B-Instruct is 2.21 B parameters (4.42 GB in bf16); decoding reads all weights once
  per token, so a ZeroGPU slice (H200 MIG 3g.71gb, assumed 3/7 of the H200's 4.8 TB/s) has a floor of
  ~2.2 ms per token. On the first call of a worker `spaces` also copies the weights disk -> GPU (assumed
  >= 2 GB/s) after forking.

    python -m benchmarks.gpu_duration [--models /tmp/tiny-models] [--tokens 64]
"""

from __future__ import annotations

import argparse
import copy
import math
import tempfile
import time
from pathlib import Path

import torch
from benchmarks.common import report

from rag.models.qwen2vl import QWEN_MAX_NEW_TOKENS, load_qwen2vl_processor

REAL_LAYERS = 28  # Qwen2-VL-2B text decoder
REAL_BYTES = 2.21e9 * 2  # bf16 weights
SLICE_BANDWIDTH = 4.8e12 * 3 / 7  # bytes/s, assumed for an H200 MIG 3g slice
DISK_TO_GPU = 2e9  # bytes/s, assumed for spaces' offload pack -> GPU on a worker's first call
SAFETY = 3  # the GPU per-op overhead is an extrapolation from a CPU: leave room for it being 3x worse
PREFILL_S = 0.5  # generous: ~256 image + ~400 text tokens are a few TFLOP, milliseconds on an H200 slice


def step_seconds(model_dir: str, layers: int, tokens: int) -> tuple[float, float]:
    """(prefill seconds, seconds per generated token) of a random tiny Qwen2-VL with ``layers`` decoder layers."""
    from PIL import Image
    from transformers import AutoConfig, Qwen2VLForConditionalGeneration

    config = copy.deepcopy(AutoConfig.from_pretrained(model_dir))
    config.text_config.num_hidden_layers = layers
    config.text_config.layer_types = ["full_attention"] * layers
    torch.manual_seed(0)
    model = Qwen2VLForConditionalGeneration(config).eval()
    processor = load_qwen2vl_processor(model_dir)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe this image."}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    inputs = processor(text=[prompt], images=[Image.new("RGB", (448, 448), (200, 40, 40))], return_tensors="pt")

    def run(n: int) -> float:
        start = time.process_time()  # CPU time of this (1-thread) process: other agents' load does not count
        with torch.inference_mode():
            model.generate(**inputs, max_new_tokens=n, min_new_tokens=n, do_sample=False)
        return time.process_time() - start

    run(4)
    first = min(run(1) for _ in range(3))
    full = min(run(tokens) for _ in range(3))
    return first, (full - first) / (tokens - 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, help="reuse/keep the tiny Qwen2-VL here")
    parser.add_argument("--tokens", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(1)
    folder = args.models or Path(tempfile.mkdtemp(prefix="tiny-qwen-"))
    model_dir = folder / "qwen"
    if not (model_dir / "config.json").exists():
        from testkit.tiny_models import make_tiny_qwen2vl

        make_tiny_qwen2vl(model_dir)
    rows, steps = [], {}
    for layers in (2, 8):
        prefill, step = step_seconds(str(model_dir), layers, args.tokens)
        steps[layers] = step
        rows.append({"what": f"tiny Qwen2-VL, {layers} layers (measured, CPU)", "prefill_ms": prefill * 1e3,
                     "ms_per_token": step * 1e3, "seconds": prefill + QWEN_MAX_NEW_TOKENS * step})
    per_layer = (steps[8] - steps[2]) / 6
    overhead = steps[2] + (REAL_LAYERS - 2) * per_layer
    floor = REAL_BYTES / SLICE_BANDWIDTH
    warm = PREFILL_S + QWEN_MAX_NEW_TOKENS * (overhead + floor)
    cold = warm + REAL_BYTES / DISK_TO_GPU + 0.5  # + fork/CUDA init
    rows += [
        {"what": "Qwen2-VL-2B step: 28-layer overhead (extrapolated)", "ms_per_token": overhead * 1e3},
        {"what": "Qwen2-VL-2B step: bandwidth floor (documented)", "ms_per_token": floor * 1e3},
        {"what": f"describe, warm worker ({QWEN_MAX_NEW_TOKENS} tokens)", "prefill_ms": PREFILL_S * 1e3,
         "ms_per_token": (overhead + floor) * 1e3, "seconds": warm},
        {"what": "describe, first call (+ weights disk -> GPU, fork)", "seconds": cold},
        {"what": f"suggested duration ({SAFETY} x first call, 5 s steps)", "seconds": float(5 * math.ceil(SAFETY * cold / 5))},
    ]
    report("gpu_duration", "ZeroGPU slot per describe (Qwen2-VL)", rows, ["what", "prefill_ms", "ms_per_token", "seconds"])


if __name__ == "__main__":
    main()

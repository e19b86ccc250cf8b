"""The Space on ZeroGPU: the real `spaces` package in ZeroGPU mode, emulated on this CPU build of torch.

tests/zerogpu_emulation.py runs app.py in a subprocess (it patches torch process-wide) with a local stand-in
for the ZeroGPU device API, launches it, and calls it through gradio_client after launch, when `spaces` has
offloaded every "cuda" tensor to disk. What a visitor would notice: search answers with the right shapes,
describe answers with what the model really writes (its weights come back in the GPU worker), a quota refusal
shows the quota message, no free GPU says "try again in a minute", and search keeps working through both.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_app import shapes_collection

from rag.images.decode import load_image
from rag.models.qwen2vl import Qwen2VLCaptioner

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def zero_gpu_run(tiny_clip_dir, tiny_qwen2vl_dir, tmp_path_factory):
    """Everything the emulated ZeroGPU Space answered, plus the image it was asked about."""
    root = tmp_path_factory.mktemp("zerogpu")
    collection = shapes_collection(root / "images", root / "collection", tiny_clip_dir, n=48)
    image = next((root / "images").rglob("*.jpg"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SPACES_", "ZEROGPU_", "ZERO_GPU"))}
    env.update(HOME=str(root), HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False", RAG_GPU_DURATION="25")
    done = subprocess.run(
        [sys.executable, str(HERE / "zerogpu_emulation.py"), str(collection), tiny_qwen2vl_dir, str(image), str(root)],
        env=env, capture_output=True, text=True, timeout=540, check=False,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert done.returncode == 0 and lines, done.stderr[-4000:]
    return json.loads(lines[-1][len("RESULT "):]), image


@pytest.mark.slow
def test_search_runs_on_cpu_after_launch_and_only_qwen_is_offloaded(zero_gpu_run):
    result, _ = zero_gpu_run
    assert result["captioner_error"] is None
    assert result["encoder_device"] == "cpu"
    assert result["captioner"] == ["qwen2-vl", "cuda", "torch.bfloat16"]
    assert result["packed_bytes"] == result["captioner_bytes"]  # the CLIP encoder was never put on "cuda"
    assert {"/startup-report", "/schedule", "/allow", "/release"} <= set(result["device_api_calls"])
    assert result["durations"] == ["25"]  # RAG_GPU_DURATION reached the ZeroGPU scheduler
    ok = result["ok"]
    assert ok["search_text"]["ok"][0] == "red circle"
    assert len(ok["search_image"]["ok"]) == 3


@pytest.mark.slow
def test_describe_runs_the_real_weights_inside_the_gpu_worker(zero_gpu_run, tiny_qwen2vl_dir, monkeypatch):
    result, image = zero_gpu_run
    monkeypatch.delenv("SPACES_ZERO_GPU", raising=False)
    reference = Qwen2VLCaptioner(tiny_qwen2vl_dir, device="cpu")
    reference.model.to(torch.bfloat16)  # the dtype the ZeroGPU Space loads it in
    expected = reference.write_description(load_image(image), [], None).text
    described = result["ok"]["describe"]
    assert "ok" in described, described
    assert described["ok"]["text"] == expected
    with_context = result["ok"]["describe_k2"]["ok"]  # retrieval (CLIP on CPU) first, then the GPU call
    assert len(with_context["context"]) == 2 and "what shape?" in with_context["prompt"]


@pytest.mark.slow
def test_gpu_refusals_are_explained_and_search_keeps_working(zero_gpu_run):
    result, _ = zero_gpu_run
    quota, busy = result["quota"], result["busy"]
    assert quota["describe"]["error"].startswith("Space app has reached its GPU limit")
    assert busy["describe"]["error"] == "The GPU is busy, try again in a minute."
    for refused in (quota, busy):
        assert refused["search_text"] == result["ok"]["search_text"]
        assert refused["search_image"] == result["ok"]["search_image"]

"""The Space on ZeroGPU: the real `spaces` package in ZeroGPU mode, emulated on this CPU build of torch.

tests/zerogpu_emulation.py runs app.py in a subprocess (it patches torch process-wide) with a local stand-in
for the ZeroGPU device API, launches it, and calls it through gradio_client after launch, when `spaces` has
offloaded every "cuda" tensor to disk. Like the platform, the stand-in stops a Space whose launch sent no
start-up report (`spaces` sends it only when a ``@spaces.GPU`` function is registered). What a visitor would
notice: the Space starts in every configuration (Qwen2-VL, GIT, RAG_DEVICE=cpu, a captioner that fails to load,
a start-up that fails), search answers with the right shapes through the int8 ONNX text tower, describe
answers with what the model really writes (its weights come back in the GPU worker), a quota refusal shows the
quota message, no free GPU says "try again in a minute", and search keeps working through both.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from test_app import shapes_collection
from zerogpu_emulation import PLATFORM_STOP

from rag.images.decode import load_image
from rag.models.qwen2vl import Qwen2VLCaptioner

HERE = Path(__file__).resolve().parent
CASES = ("qwen", "git", "cpu", "broken", "failed", "unregistered")
PARALLEL = 3  # launches at once: each process holds torch + gradio (~1.5 GB)


def emulate(spec: dict) -> tuple[int, dict, str]:
    """(exit status, RESULT, stderr tail) of one emulated ZeroGPU launch."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SPACES_", "ZEROGPU_", "ZERO_GPU", "RAG_"))}
    env.update(HOME=spec["work"], HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False", RAG_GPU_DURATION="25")
    done = subprocess.run([sys.executable, str(HERE / "zerogpu_emulation.py"), json.dumps(spec)], env=env,
                          capture_output=True, text=True, timeout=540, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, done.stderr[-4000:]
    return done.returncode, json.loads(lines[-1][len("RESULT "):]), done.stderr[-4000:]


@pytest.fixture(scope="module")
def zero_gpu_runs(tiny_clip_dir, tiny_qwen2vl_dir, tiny_git_dir, tmp_path_factory):
    """Every configuration's emulated launch, keyed by case, plus the image each was asked about."""
    root = tmp_path_factory.mktemp("zerogpu")
    collection = shapes_collection(root / "images", root / "collection", tiny_clip_dir, n=48)
    image = next((root / "images").rglob("*.jpg"))
    base = {"collection": str(collection), "image": str(image), "modes": ["ok"]}
    specs = {
        "qwen": {**base, "captioner_model": tiny_qwen2vl_dir, "modes": ["ok", "quota", "busy"]},
        "git": {**base, "captioner": "git", "captioner_model": tiny_git_dir},
        "cpu": {**base, "device": "cpu", "captioner_model": tiny_git_dir},  # RAG_DEVICE=cpu: auto -> GIT
        "broken": {**base, "captioner": "qwen2-vl", "captioner_model": str(root / "no-such-model")},
        "failed": {**base, "collection": str(root / "no-such-collection")},
        "unregistered": {**base, "collection": str(root / "no-such-collection"), "unregister": True},
    }
    for case, spec in specs.items():
        spec["work"] = str(root / case)
        Path(spec["work"]).mkdir()
    with ThreadPoolExecutor(PARALLEL) as pool:
        runs = dict(zip(CASES, pool.map(emulate, [specs[case] for case in CASES])))
    return runs, image


def started(runs: dict, case: str) -> dict:
    """The RESULT of a launch the platform let through (asserting it did)."""
    code, result, stderr = runs[case]
    assert code == 0 and "stopped" not in result, stderr
    return result


@pytest.mark.slow
def test_search_runs_on_cpu_after_launch_and_only_qwen_is_offloaded(zero_gpu_runs):
    result = started(zero_gpu_runs[0], "qwen")
    assert result["captioner_error"] is None
    assert result["encoder_device"] == "cpu"
    assert result["captioner"] == ["qwen2-vl", "cuda", "torch.bfloat16"]
    assert result["packed_bytes"] == result["captioner_bytes"]  # the CLIP encoder was never put on "cuda"
    assert result["device_api_calls"][0] == "/startup-report"
    assert {"/schedule", "/allow", "/release"} <= set(result["device_api_calls"])
    assert result["durations"] == ["25"]  # RAG_GPU_DURATION reached the ZeroGPU scheduler
    assert result["info"]["ok"]["quantize_engine"] == "onnxruntime"  # not the torch fallback under spaces
    ok = result["ok"]
    assert ok["search_text"]["ok"][0] == "red circle"
    assert len(ok["search_image"]["ok"]) == 3


@pytest.mark.slow
def test_describe_runs_the_real_weights_inside_the_gpu_worker(zero_gpu_runs, tiny_qwen2vl_dir, monkeypatch):
    runs, image = zero_gpu_runs
    result = started(runs, "qwen")
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
def test_gpu_refusals_are_explained_and_search_keeps_working(zero_gpu_runs):
    result = started(zero_gpu_runs[0], "qwen")
    quota, busy = result["quota"], result["busy"]
    assert quota["describe"]["error"].startswith("Space app has reached its GPU limit")
    assert busy["describe"]["error"] == "The GPU is busy, try again in a minute."
    for refused in (quota, busy):
        assert refused["search_text"] == result["ok"]["search_text"]
        assert refused["search_image"] == result["ok"]["search_image"]


@pytest.mark.slow
@pytest.mark.parametrize("case", ["git", "cpu", "broken", "failed"])
def test_every_configuration_registers_a_gpu_function_and_starts(zero_gpu_runs, case):
    result = started(zero_gpu_runs[0], case)
    assert result["gpu_functions"] >= 1
    assert result["device_api_calls"][0] == "/startup-report"
    assert result["packed_bytes"] == 0  # nothing was placed on "cuda"
    ok = result["ok"]
    if case == "failed":  # the error page is served, saying what to set
        assert "RAG_COLLECTION" in ok["search_text"]["error"]
        return
    assert result["info"]["ok"]["quantize_engine"] == "onnxruntime"
    assert ok["search_text"]["ok"][0] == "red circle"
    if case == "broken":
        assert "RAG_CAPTIONER" in ok["describe"]["error"]
    else:
        assert result["captioner"] == ["git", "cpu", "torch.float32"]
        assert ok["describe"]["ok"]["text"]
        assert "/schedule" not in result["device_api_calls"]  # GIT never waits for a GPU slot


@pytest.mark.slow
def test_the_emulated_platform_stops_a_space_that_registers_no_gpu_function(zero_gpu_runs):
    code, result, _ = zero_gpu_runs[0]["unregistered"]
    assert code == 1 and result["stopped"] == PLATFORM_STOP
    assert result["gpu_functions"] == 0


@pytest.mark.slow
def test_describes_run_in_parallel_only_where_each_gets_its_own_gpu(zero_gpu_runs):
    runs = zero_gpu_runs[0]
    assert started(runs, "qwen")["describe_concurrency"] == 4  # each waits for its own ZeroGPU slice
    assert started(runs, "git")["describe_concurrency"] == 1  # GIT shares this process's CPUs
    assert started(runs, "cpu")["describe_concurrency"] == 1

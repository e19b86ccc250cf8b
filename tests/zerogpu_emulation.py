"""Run the Space under the real `spaces` package in ZeroGPU mode, emulated on a CPU build of torch.

Run as a script in a subprocess (it patches torch and `spaces` process-wide):

    python tests/zerogpu_emulation.py '{"collection": DIR, "captioner": "auto", "captioner_model": DIR,
                                        "device": null, "image": FILE, "work": DIR, "modes": ["ok", "quota", "busy"]}'

(collection, captioner, captioner_model and device become the Space variables RAG_COLLECTION, RAG_CAPTIONER,
RAG_CAPTIONER_MODEL and RAG_DEVICE; the app reads them as on a Space).

It prints one JSON line (prefixed ``RESULT``) with what search and describe returned through gradio_client
after ``launch()``, with the fake ZeroGPU device API first granting a GPU, then (for each mode asked) refusing
for quota, then having none free. Like the platform, it stops a Space whose launch sent no start-up report
(`spaces` sends one only when a ``@spaces.GPU`` function is registered): it then prints ``RESULT`` with
``stopped`` and exits 1. ``"unregister": true`` empties `spaces`' registry before launch (the control case
that shows the refusal is real). What is emulated, and why each piece is the minimum:

* ``spaces`` reads ``SPACES_ZERO_GPU`` / ``SPACES_ZERO_DEVICE_API_URL`` / ``ZEROGPU_OFFLOAD_DIR`` at import;
  its static CUDA facts need ``torch.version.cuda`` to be a CUDA 12/13 string, so that is set first.
  A CPU build also lacks ``torch._C._cuda_init``, which `spaces` saves before replacing it: a stub that
  raises like the real one on a CPU build is put there; and its ``torch.cuda._is_in_bad_fork`` is a lambda,
  which `spaces` must pickle to ask a forked process: a module-level function replaces it.
* The device API (``/startup-report``, ``/schedule``, ``/allow``, ``/release``) is a local HTTP server here,
  so `spaces`' own client code, quota and error handling run unchanged. It records every call in order.
* In the forked GPU worker `spaces` calls ``torch.init`` (``Tensor.cuda()``) and ``torch.move`` (pinned
  memory, ``.cuda()``), which a CPU build of torch cannot do. Only those two are replaced: the worker points
  each fake "cuda" tensor at its real data read back from `spaces`' own disk pack, on the CPU.
Everything else (the torch function mode that fakes "cuda" in the main process, packing to disk at launch,
forking the worker, pickling arguments and results, gr.Error for quota/allocation) is the real package.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

SCHEDULE = {"mode": "ok"}  # what the fake device API answers to /schedule: ok | quota | busy
CALLS: list[str] = []  # device API paths in the order they were called
PLATFORM_STOP = "No @spaces.GPU function detected during startup"  # what the platform says when it stops a Space
DURATIONS: list[str] = []  # durationSeconds of each /schedule (what the Space asked for)
GPU = {"uuid": "GPU-emulated"}  # the nvidiaUUID /schedule grants (`spaces` sets CUDA_VISIBLE_DEVICES to it)


class DeviceApi(BaseHTTPRequestHandler):
    """The ZeroGPU device API as `spaces.zero.api.APIClient` calls it."""

    def do_POST(self) -> None:
        url = urlparse(self.path)
        path = url.path
        CALLS.append(path)
        if path == "/schedule":
            DURATIONS.extend(parse_qs(url.query).get("durationSeconds", []))
        if path == "/schedule" and SCHEDULE["mode"] == "quota":
            self._reply(429, {"left": 0, "wait": 3600})
        elif path == "/schedule" and SCHEDULE["mode"] == "busy":
            self._reply(503, {"detail": "no GPU"})
        elif path == "/schedule":
            self._reply(200, {"idle": True, "nvidiaIndex": 0, "nvidiaUUID": GPU["uuid"], "allowToken": "token"})
        else:
            self._reply(200, {})

    def _reply(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args) -> None:
        pass


def start_device_api() -> str:
    server = ThreadingHTTPServer(("127.0.0.1", 0), DeviceApi)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}"


def emulate_environment(work: Path, cpu_torch: bool = True) -> None:
    """The variables a ZeroGPU Space has, pointing at local stand-ins; a CPU build of torch made to look CUDA-built
    (``cpu_torch=False`` on a real GPU: benchmarks/gpu_check.py runs `spaces` on real CUDA)."""
    cgroup = work / "cgroup"
    cgroup.write_text("0::/emulated\n")
    os.environ.update(
        SPACES_ZERO_GPU="true",
        SPACES_ZERO_DEVICE_API_URL=start_device_api(),
        ZEROGPU_OFFLOAD_DIR=str(work / "offload"),
        ZEROGPU_PROC_SELF_CGROUP_PATH=str(cgroup),
    )
    import torch

    if not cpu_torch:
        if getattr(torch.cuda._is_in_bad_fork, "__name__", "") == "<lambda>":  # `spaces` must pickle it
            torch.cuda._is_in_bad_fork = torch._C._cuda_isInBadFork
        return
    torch.version.cuda = "12.8"
    if not hasattr(torch._C, "_cuda_init"):  # absent from CPU builds; `spaces` saves it to restore in the worker
        torch._C._cuda_init = _no_cuda
    torch.cuda._is_in_bad_fork = _not_in_bad_fork  # a CPU build's is a lambda, which `spaces` cannot pickle


def _not_in_bad_fork() -> bool:
    return False


def _no_cuda() -> None:
    raise AssertionError("Torch not compiled with CUDA enabled")


def cpu_move(callback=None) -> None:
    """`spaces.zero.torch.move` for a CPU worker: fake cuda tensors get their data back from the disk packs."""
    import torch
    from spaces.zero.torch import patching

    for fake, original in patching.cuda_aliases.items():
        if original is not None:
            fake.data = original
    for pack in patching.tensor_packs:
        raw = torch.frombuffer(bytearray(Path(pack.path()).read_bytes()), dtype=torch.uint8)
        offset = 0
        for meta, size, aligned in [item for batch in pack.batches for item in batch] + pack.big_tensors:
            storage = raw[offset : offset + size].clone().untyped_storage()
            tensor = torch.tensor([], dtype=meta.dtype).set_(storage, 0, meta.shape, meta.stride())
            for fake in pack.fakes[meta]:
                fake.data = tensor
            offset += aligned


def patch_worker() -> None:
    import spaces.zero.torch as zero_torch

    zero_torch.init = lambda nvidia_uuid: None
    zero_torch.move = cpu_move


def call(client, api_name: str, *args) -> dict:
    """One gradio_client call: {"ok": what a user would look at} or {"error": the message shown}."""
    from gradio_client.exceptions import AppError

    try:
        output = client.predict(*args, api_name=api_name)
    except AppError as exc:
        return {"error": str(getattr(exc, "message", exc))}
    except Exception as exc:  # noqa: BLE001 (reported to the test)
        return {"error": f"{type(exc).__name__}: {exc}"}
    if api_name == "/describe":
        text, _, prompt, data = output
        return {"ok": {"text": text, "prompt": prompt, "context": [hit["id"] for hit in data["context"]]}}
    if api_name.startswith("/search"):
        return {"ok": [hit["label"] for hit in output[1]["hits"]]}
    return {"ok": output}


def packed_bytes() -> int:
    """Bytes `spaces` offloaded to disk at launch (what lives on the emulated GPU)."""
    from spaces.zero.torch import patching

    return sum(pack.total_size for pack in patching.tensor_packs)


def loaded(pipeline, captioner_error: str | None) -> dict:
    """Where start-up put things: the encoder, the captioner (kind, device, dtype, bytes), or the start-up error."""
    from rag.pipeline import Pipeline

    if not isinstance(pipeline, Pipeline):
        return {"startup_error": str(pipeline)}
    result = {"captioner_error": captioner_error, "encoder_device": pipeline.encoder.device}
    captioner = pipeline.captioner
    if captioner is not None:
        tensors = [*captioner.model.parameters(), *captioner.model.buffers()]
        result["captioner"] = [captioner.kind, captioner.device, str(captioner.dtype)]
        result["captioner_bytes"] = sum(t.numel() * t.element_size() for t in tensors)
    return result


def requests(client, image_path: str, modes: list[str]) -> dict:
    """What a visitor gets from describe and both searches under each device API mode, and /info once."""
    from gradio_client import handle_file

    image = handle_file(image_path)
    result: dict = {"info": call(client, "/info")}
    for mode in modes:
        SCHEDULE["mode"] = mode
        result[mode] = {
            "describe": call(client, "/describe", image, "", 0),
            "describe_k2": call(client, "/describe", image, "what shape?", 2),
            "search_text": call(client, "/search_text", "red circle", 3),
            "search_image": call(client, "/search_image", image, 3),
        }
    return result


def main(spec: dict) -> int:
    """Launch the Space as configured by ``spec`` under emulated ZeroGPU; 0, or 1 when the platform stops it."""
    work = Path(spec["work"])
    here = Path(__file__).resolve().parent
    sys.path[:0] = [str(here.parent), str(here)]
    emulate_environment(work)
    variables = {"RAG_COLLECTION": spec["collection"], "RAG_CAPTIONER": spec.get("captioner"),
                 "RAG_CAPTIONER_MODEL": spec.get("captioner_model"), "RAG_DEVICE": spec.get("device"),
                 "RAG_CACHE_DIR": str(work / "cache"),
                 "GRADIO_TEMP_DIR": str(work / "gradio")}  # its own: launches side by side must not share files
    os.environ.update({name: value for name, value in variables.items() if value})  # the Space's variables
    import app  # imports `spaces` before torch touches CUDA, as on a real Space

    patch_worker()
    from spaces.zero import decorator
    from test_app import free_port, make_client
    from ui import context

    pipeline, captioner_error = app.load_pipeline()  # Settings.from_env(), as app.main() does
    result = loaded(pipeline, captioner_error)
    if spec.get("unregister"):
        decorator.decorated_cache.clear()
    result["gpu_functions"] = len(decorator.decorated_cache) // 2  # `spaces` keeps task -> wrapper and wrapper -> wrapper
    result["describe_concurrency"] = context.DESCRIBE_CONCURRENCY
    demo = app.build_demo(pipeline, captioner_error=captioner_error)
    _, url, _ = app.launch(demo, server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True)
    result["packed_bytes"] = packed_bytes()
    if "/startup-report" not in CALLS:  # the platform stops the Space before anyone can use it
        demo.close()
        print("RESULT " + json.dumps({**result, "stopped": PLATFORM_STOP}, default=str), flush=True)
        return 1
    result.update(requests(make_client(url, work / "downloads"), spec["image"], spec.get("modes", ["ok"])))
    result["device_api_calls"] = list(dict.fromkeys(CALLS))
    result["durations"] = sorted(set(DURATIONS))
    demo.close()
    print("RESULT " + json.dumps(result, default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(json.loads(sys.argv[1])))

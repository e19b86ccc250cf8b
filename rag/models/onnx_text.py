"""The int8 CLIP text tower through ONNX Runtime: exported once per model into the cache, then reused.

Measured on 2 vCPU (benchmarks/quantize.py, one query): ~56 ms in fp32 torch, ~21 ms with ``torch.ao``
dynamic int8 and ~12 ms with ONNX Runtime's dynamic int8. The export (TorchScript exporter) and
quantisation take ~6 s once per model; the result is cached under ``<cache>/onnx/<key>/`` where the key
hashes the weights, so a changed model is exported again and a restart with the same one loads in under a second. ``rag.models.quantize`` checks the runner against fp32 on
probe texts before it is used, exactly as for the torch path.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np
import torch
from torch import nn

log = logging.getLogger(__name__)

INT8_FILE = "model.int8.onnx"
INPUTS = ("input_ids", "attention_mask")


def clip_owner(model: nn.Module, method: str = "get_text_features") -> nn.Module | None:
    """The module inside a SentenceTransformer that has ``method`` (CLIP, SigLIP: ``get_text_features`` /
    ``get_image_features``), if any."""
    for module in model.modules():
        if callable(getattr(module, method, None)):
            return module
    return None


class TextTower(nn.Module):
    """``get_text_features`` as a plain (ids, mask) -> embeddings module, for the exporter."""

    def __init__(self, owner: nn.Module) -> None:
        super().__init__()
        self.owner = owner

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        out = self.owner.get_text_features(input_ids=input_ids, attention_mask=attention_mask)
        return getattr(out, "pooler_output", out)


def weights_key(owner: nn.Module, tower: str = "text") -> str:
    """A short hash of one tower's weights and the exporting libraries: the cache folder's name."""
    import onnxruntime

    digest = hashlib.blake2b(digest_size=12)
    digest.update(f"{type(owner).__name__} {tower} torch {torch.__version__} ort {onnxruntime.__version__}".encode())
    for name, tensor in owner.state_dict().items():
        if ("vision" in name or "visual" in name) != (tower == "image"):
            continue
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return f"{tower}-{digest.hexdigest()}"


class _QuietQuantizer(logging.Filter):
    """Drops the per-tensor notes and "consider pre-processing" advice onnxruntime logs on the root logger."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "onnxruntime" not in record.pathname


@contextlib.contextmanager
def plain_torch() -> Iterator[None]:
    """Torch without the Python function/dispatch modes another library has pushed on this thread.

    On ZeroGPU, `spaces` keeps a TorchFunctionMode and a TorchDispatchMode active in the main process (they
    fake "cuda" tensors); under them the TorchScript exporter fails ("aten::view() Expected a value of type
    'Tensor'... Unable to cast 0 to Tensor") and search silently fell back to the slower torch int8 path.
    The export only touches CPU tensors, so it runs with both kinds of mode switched off, then restored.
    """
    from torch.utils._python_dispatch import _disable_current_modes

    with _disable_current_modes(), torch._C.DisableTorchFunction():
        yield


def export_quantized(module: nn.Module, inputs: Mapping[str, torch.Tensor], dynamic: Mapping[str, dict[int, str]],
                     folder: Path) -> Path:
    """Export ``module(*inputs)`` to ONNX and quantise its weights to int8 as ``folder/INT8_FILE``, atomically
    (an existing export is reused)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    target = folder / INT8_FILE
    if target.is_file():
        return target
    folder.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".export-", dir=folder.parent))
    try:
        with warnings.catch_warnings(), plain_torch(), torch.inference_mode(False), torch.no_grad():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
            torch.onnx.export(module.eval(), tuple(inputs.values()), str(work / "model.onnx"), input_names=list(inputs),
                              output_names=["embedding"], opset_version=17, dynamo=False, dynamic_axes=dict(dynamic))
        quiet = _QuietQuantizer()
        logging.getLogger().addFilter(quiet)
        try:
            quantize_dynamic(str(work / "model.onnx"), str(work / INT8_FILE), weight_type=QuantType.QInt8)
        finally:
            logging.getLogger().removeFilter(quiet)
        (work / "model.onnx").unlink()
        os.replace(work, folder)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def cpu_session(path: Path, threads: int) -> Any:
    """An ONNX Runtime CPU session on ``threads`` intra-op threads."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = max(1, threads)
    options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def exported_runner(tower: str, make: Callable[[], Any]) -> Any:
    """``make()`` (export or load, then wrap in a runner), any failure turned into ``RuntimeError`` with the
    reason: onnxruntime missing or an export failure only means "stay on torch" to the caller."""
    try:
        return make()
    except ImportError as exc:
        raise RuntimeError(f"onnxruntime is not installed ({exc})") from exc
    except Exception as exc:  # the exporter raises many types
        raise RuntimeError(f"ONNX export of the {tower} tower failed: {type(exc).__name__}: {exc}") from exc


def export_int8(owner: nn.Module, sample: Mapping[str, torch.Tensor], folder: Path) -> Path:
    """Export the text tower to ONNX and quantise its weights to int8 in ``folder`` (written atomically)."""
    inputs = {name: sample[name] for name in INPUTS}
    return export_quantized(TextTower(owner), inputs, {name: {0: "batch", 1: "tokens"} for name in INPUTS}, folder)


class OnnxTextRunner:
    """Runs the exported int8 text tower on features from the SentenceTransformer's own ``preprocess``."""

    def __init__(self, path: Path, threads: int) -> None:
        # one thread: a one-query forward gains nothing from a pool (measured 7.1 ms on 1 thread, 6.2 ms on 2
        # on 2 vCPU), and a pool's busy-waiting threads slowed the app's torch work (image queries, the
        # captioner) on the same cores by 1.8x
        self.session = cpu_session(path, threads)
        self.path = path

    def __call__(self, features: Mapping[str, Any]) -> np.ndarray:
        """Unnormalised embeddings for a batch of tokenised texts."""
        feeds = {name: np.asarray(features[name], dtype=np.int64) for name in INPUTS}
        return self.session.run(None, feeds)[0]


def int8_text_runner(text_model: Any, cache_dir: Path) -> OnnxTextRunner:
    """The cached (or freshly exported) int8 runner for a SentenceTransformer's text tower.

    Raises ``RuntimeError`` with the reason when this model or machine cannot take the path (no
    ``get_text_features``, onnxruntime missing, an export failure); the caller then stays on torch.
    """
    owner = clip_owner(text_model)
    if owner is None:
        raise RuntimeError(f"{type(text_model).__name__} has no CLIP-like text tower to export")

    def make() -> OnnxTextRunner:
        folder = Path(cache_dir) / "onnx" / weights_key(owner)
        return OnnxTextRunner(export_int8(owner, text_model.preprocess(["a photo of a dog"]), folder), threads=1)

    return exported_runner("text", make)

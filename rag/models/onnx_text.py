"""The int8 CLIP text tower through ONNX Runtime: exported once per model into the cache, then reused.

Measured on 2 vCPU (benchmarks/quantize.py, one query): ~56 ms in fp32 torch, ~21 ms with ``torch.ao``
dynamic int8 and ~12 ms with ONNX Runtime's dynamic int8. The export (TorchScript exporter) and
quantisation take ~6 s once per model; the result is cached under ``<cache>/onnx/<key>/`` where the key
hashes the weights, so a changed model is exported again and a restart with the same one loads in under a second. ``rag.models.quantize`` checks the runner against fp32 on
probe texts before it is used, exactly as for the torch path.

A Space's disk (and so that cache) is empty after a restart: an ``index_build.py --quantize int8`` collection
ships its text export (``ShippedExport``: the file, checksummed in the manifest, and the ``export_key`` it was made
with). It is used only when that key equals this process's (the libraries' versions and the weights' hash), else
the reason is logged and the tower is exported as above.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass
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


KEY_LIBRARIES = ("torch", "transformers", "onnx", "onnxruntime")  # what the export's bytes depend on, with the weights


def _version(package: str) -> str:
    """An installed package's version without importing it ("" when missing)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return ""


def export_key(owner: nn.Module, tower: str = "text") -> dict[str, str]:
    """What an export of one tower depends on: the model class, the exporting libraries' versions and a hash of the
    tower's weights (read in place, without a copy)."""
    digest = hashlib.blake2b(digest_size=12)
    for name, tensor in owner.state_dict().items():
        if ("vision" in name or "visual" in name) != (tower == "image"):
            continue
        digest.update(name.encode())
        digest.update(memoryview(tensor.detach().cpu().contiguous().numpy()).cast("B"))
    return {"tower": tower, "class": type(owner).__name__, **{lib: _version(lib) for lib in KEY_LIBRARIES},
            "weights": digest.hexdigest()}


def key_folder(key: Mapping[str, str]) -> str:
    """The cache folder's name for an export key: ``<tower>-<hash of the key>``."""
    text = " ".join(f"{name}={key[name]}" for name in sorted(key))
    return f"{key['tower']}-{hashlib.blake2b(text.encode(), digest_size=12).hexdigest()}"


def weights_key(owner: nn.Module, tower: str = "text") -> str:
    """A short hash of one tower's weights and the exporting libraries: the cache folder's name."""
    return key_folder(export_key(owner, tower))


def key_mismatch(shipped: Mapping[str, Any], here: Mapping[str, str]) -> str:
    """Why an export made under ``shipped`` cannot be used here ("" when it can): each differing entry."""
    names = sorted(here)  # other entries (the fp32 probe vectors, rag.models.quantize) are not part of the key
    diffs = [f"{name} {shipped.get(name) or 'none'} (export) vs {here.get(name) or 'none'} (here)"
             for name in names if shipped.get(name) != here.get(name)]
    return "; ".join(diffs)


@dataclass(frozen=True)
class ShippedExport:
    """An int8 export published inside a collection: its verified file and the ``export_key`` it was made with."""

    path: Path
    key: Mapping[str, Any]


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

    def __init__(self, path: Path, threads: int, key: Mapping[str, Any] | None = None,
                 shipped_entry: Mapping[str, Any] | None = None) -> None:
        # one thread: a one-query forward gains nothing from a pool (measured 7.1 ms on 1 thread, 6.2 ms on 2
        # on 2 vCPU), and a pool's busy-waiting threads slowed the app's torch work (image queries, the
        # captioner) on the same cores by 1.8x
        self.session = cpu_session(path, threads)
        self.path = path
        self.key = dict(key or {})  # the export key (export_key): what a collection built with it ships
        # the manifest's entry when the file is the collection's own export
        self.shipped_entry: dict[str, Any] = dict(shipped_entry or {})

    @property
    def shipped(self) -> bool:
        """Whether this runs the collection's shipped export (no export was made here)."""
        return bool(self.shipped_entry)

    def __call__(self, features: Mapping[str, Any]) -> np.ndarray:
        """Unnormalised embeddings for a batch of tokenised texts."""
        feeds = {name: np.asarray(features[name], dtype=np.int64) for name in INPUTS}
        return self.session.run(None, feeds)[0]


def int8_text_runner(text_model: Any, cache_dir: Path, shipped: ShippedExport | None = None) -> OnnxTextRunner:
    """The int8 runner for a SentenceTransformer's text tower: the collection's ``shipped`` export when its key
    matches this process's, else the cached (or freshly exported) one.

    Raises ``RuntimeError`` with the reason when this model or machine cannot take the path (no
    ``get_text_features``, onnxruntime missing, an export failure); the caller then stays on torch.
    """
    owner = clip_owner(text_model)
    if owner is None:
        raise RuntimeError(f"{type(text_model).__name__} has no CLIP-like text tower to export")

    def make() -> OnnxTextRunner:
        key = export_key(owner)
        if shipped is not None:
            why = key_mismatch(shipped.key, key)
            if not why:
                log.info("int8 text tower: the collection's export (%s), no export needed", shipped.path.name)
                return OnnxTextRunner(shipped.path, threads=1, key=key, shipped_entry=shipped.key)
            log.warning("int8 text tower: the collection's export is not used (%s); exporting it here", why)
        folder = Path(cache_dir) / "onnx" / key_folder(key)
        if not (folder / INT8_FILE).is_file():
            log.info("int8 text tower: exporting to %s (once per model and library versions)", folder.name)
        path = export_int8(owner, text_model.preprocess(["a photo of a dog"]), folder)
        return OnnxTextRunner(path, threads=1, key=key)

    return exported_runner("text", make)

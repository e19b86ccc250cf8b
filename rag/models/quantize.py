"""Cheaper encoders: int8 (CPU) or fp16 (CUDA) CLIP towers, kept only if faithful to fp32.

Chosen by measurement (benchmarks/quantize.py, random-weight ViT-B/32 text tower, one query, idle 2 vCPU):
fp32 55.6 ms; ``torch.ao.quantization.quantize_dynamic`` int8 20.6 ms (min cosine 0.998); ONNX Runtime
int8 11.6 ms (0.999), exported once per model into the cache (rag.models.onnx_text). So int8 towers run in ONNX
Runtime (the app's text tower; both towers of an ``--quantize int8`` build, rag.models.onnx_image), with torch's
dynamic int8 as the fallback for models it cannot export; torchao 0.18's int8 configs were slower than fp32.

Every conversion is checked: fixed probe texts (and images, for the image tower) are encoded before and
after; below ``MIN_COSINE`` the next way is tried, then the fp32 modules are put back and the reason logged. A text
export shipped with its collection is checked against the fp32 probe encodings shipped with it (``probe_entry``),
valid since its key (weights hash, library versions) matched: a restart runs no fp32 forward pass.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import nn

from rag.config import parse_quantize
from rag.models.onnx_image import int8_image_runner
from rag.models.onnx_text import ShippedExport, int8_text_runner

log = logging.getLogger(__name__)

MIN_COSINE = 0.99
TOWER_PARTS = {"text": ("text_model", "text_projection"), "image": ("vision_model", "visual_projection")}
PROBE_TEXTS = (
    "a photo of a dog",
    "two people riding bicycles down a busy city street",
    "a red circle on a white background",
    "un chat noir dort sur un canapé",
    "aerial view of a harbour with many small boats at sunset",
    "a bowl of soup",
    "close-up of a yellow flower with a bee",
    "a man in a blue jacket holding an umbrella in the rain",
    "snow covered mountains under a clear sky",
    "a plate of sushi and chopsticks on a wooden table",
    "children playing football in a park",
    "an old black and white photograph of a train station",
)


@dataclass(frozen=True)
class QuantizeResult:
    """The mode in effect after the fidelity check, and why if it differs from the one asked for."""

    requested: str
    mode: str
    towers: tuple[str, ...] = ()
    min_cosine: float | None = None
    reason: str = ""
    engine: str = ""  # "onnxruntime" or "torch" when a conversion is in effect


def resolve_mode(requested: str, device: str) -> str:
    """``auto``: int8 on CPU, fp16 on CUDA, none elsewhere; int8 asked for on CUDA becomes fp16 (int8 here is CPU-only)."""
    requested = parse_quantize(requested)
    if requested == "none":
        return "none"
    if device.startswith("cuda"):
        return "fp16"
    return "int8" if device == "cpu" else "none"


def convert_module(module: nn.Module, mode: str) -> nn.Module:
    """A converted copy of ``module``: int8 dynamic-quantised Linear layers, or fp16 weights."""
    if mode == "fp16":
        import copy

        return copy.deepcopy(module).half()
    if mode != "int8":
        raise ValueError(f"unknown quantisation mode {mode!r}")
    with warnings.catch_warnings():  # deprecated in favour of torchao, which is much slower on CPU (see above)
        warnings.simplefilter("ignore")
        wrapped = torch.ao.quantization.quantize_dynamic(nn.Sequential(module), {nn.Linear}, dtype=torch.qint8)
    return wrapped[0]


def _cast_inputs_hook(dtype: torch.dtype) -> Callable:
    def hook(_module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        cast = lambda v: v.to(dtype) if isinstance(v, torch.Tensor) and v.is_floating_point() else v  # noqa: E731
        return tuple(cast(a) for a in args), {k: cast(v) for k, v in kwargs.items()}

    return hook


def _tower_owner(model: nn.Module) -> nn.Module | None:
    """The CLIP-like module inside a SentenceTransformer that holds both towers, if any."""
    for module in model.modules():
        if all(hasattr(module, part) for parts in TOWER_PARTS.values() for part in parts):
            return module
    return None


def swap_towers(encoder: Any, towers: Sequence[str], mode: str) -> Callable[[], None]:
    """Replace the encoder's towers by converted copies in place; returns a function that puts the originals back."""
    owner = _tower_owner(encoder.model)
    undo: list[Callable[[], None]] = []
    for tower in towers:
        if tower == "text" and encoder.text_model is not encoder.model:
            original = encoder.text_model  # a separate (multilingual) text model: convert it whole
            encoder.text_model = convert_module(original, mode)
            undo.append(lambda original=original: setattr(encoder, "text_model", original))
            continue
        if owner is None:
            raise ValueError(f"no {tower} tower found in {type(encoder.model).__name__}")
        for part in TOWER_PARTS[tower]:
            original = getattr(owner, part)
            converted = convert_module(original, mode)
            if mode == "fp16" and tower == "image" and part == "vision_model":
                converted.register_forward_pre_hook(_cast_inputs_hook(torch.float16), with_kwargs=True)
            setattr(owner, part, converted)
            undo.append(lambda part=part, original=original: setattr(owner, part, original))

    def restore() -> None:
        for step in reversed(undo):
            step()

    return restore


def probe_images(count: int = 8, size: int = 96) -> list[Image.Image]:
    """Fixed, varied images (gradients and shapes) for the image-tower fidelity check."""
    rng = np.random.default_rng(1234)
    images = []
    for i in range(count):
        base = rng.integers(0, 255, 3)
        ramp = np.linspace(0, 1, size)[None, :, None] * rng.integers(-120, 120, 3)
        pixels = np.clip(base + ramp + rng.normal(0, 12, (size, size, 3)), 0, 255).astype(np.uint8)
        image = Image.fromarray(pixels, "RGB")
        box = tuple(int(v) for v in sorted(rng.integers(5, size - 5, 2))) * 2
        ImageDraw.Draw(image).ellipse(box, fill=tuple(int(c) for c in rng.integers(0, 255, 3)))
        images.append(image)
    return images


def _probe(encoder: Any, towers: Sequence[str]) -> np.ndarray:
    parts = []
    if "text" in towers:
        parts.append(encoder.encode_texts(list(PROBE_TEXTS)))
    if "image" in towers:
        parts.append(encoder.encode_images(probe_images()))
    return np.concatenate(parts)


def fp32_probe(encoder: Any, towers: Sequence[str]) -> np.ndarray:
    """The probes encoded by the fp32 towers, whatever runners are attached (detached for the duration)."""
    runners = encoder.text_runner, encoder.image_runner
    encoder.text_runner = encoder.image_runner = None
    try:
        return _probe(encoder, towers)
    finally:
        encoder.text_runner, encoder.image_runner = runners


def _probe_texts_id() -> str:
    return hashlib.sha256("\n".join(PROBE_TEXTS).encode()).hexdigest()[:16]


def probe_entry(vectors: np.ndarray) -> dict[str, Any]:
    """The fp32 text probe vectors as a manifest entry, shipped with a text export: a start-up whose export key
    matches checks the export against them instead of running the fp32 tower (the first torch forward pass:
    2.5 s for ViT-B/32 on a 2 vCPU machine at load 10)."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    return {"texts": _probe_texts_id(), "shape": list(vectors.shape),
            "float32": base64.b64encode(vectors.tobytes()).decode("ascii")}


def shipped_reference(encoder: Any, towers: Sequence[str]) -> np.ndarray | None:
    """The fp32 text probe vectors shipped with the export the encoder now runs (None if it runs no shipped export,
    or the entry is for other probes): valid because the export's key, weights hash included, matched."""
    entry = getattr(encoder.text_runner, "shipped_entry", None) or {}
    probe = entry.get("probe")
    if tuple(towers) != ("text",) or not isinstance(probe, dict) or probe.get("texts") != _probe_texts_id():
        return None
    try:
        vectors = np.frombuffer(base64.b64decode(probe["float32"]), dtype=np.float32).reshape(probe["shape"])
    except (KeyError, TypeError, ValueError):
        return None
    return vectors if vectors.shape[0] == len(PROBE_TEXTS) else None


def fidelity(reference: np.ndarray, converted: np.ndarray) -> float:
    """Minimum cosine between matching rows of two sets of normalised vectors."""
    return float(np.min(np.sum(reference * converted, axis=1)))


def _attach_onnx(encoder: Any, towers: tuple[str, ...], cache_dir: Path,
                 shipped: ShippedExport | None = None) -> Callable[[], None]:
    """Route the encoder's towers through int8 ONNX Runtime exports (both or neither; the text tower's from the
    collection when ``shipped`` matches, else cached); returns the undo."""

    def undo() -> None:
        encoder.text_runner = encoder.image_runner = None

    try:
        if "text" in towers:
            encoder.text_runner = int8_text_runner(encoder.text_model, cache_dir, shipped)
        if "image" in towers:
            sample = lambda: encoder.preprocess_images(probe_images(2))  # noqa: E731
            encoder.image_runner = int8_image_runner(encoder.model, sample, cache_dir)
    except RuntimeError:
        undo()
        raise
    return undo


def _conversions(encoder: Any, towers: tuple[str, ...], mode: str, cache_dir: Path | None,
                 shipped: ShippedExport | None = None) -> list[tuple[str, Callable]]:
    """The ways to try, fastest first: ONNX Runtime for int8 (when a cache folder is given), then torch."""
    ways: list[tuple[str, Callable]] = []
    if mode == "int8" and cache_dir is not None:
        ways.append(("onnxruntime", lambda: _attach_onnx(encoder, towers, cache_dir, shipped)))
    ways.append(("torch", lambda: swap_towers(encoder, towers, mode)))
    return ways


def quantize_encoder(
    encoder: Any, requested: str | None, towers: Sequence[str] = ("text",), min_cosine: float = MIN_COSINE,
    cache_dir: Path | None = None, shipped: ShippedExport | None = None,
) -> QuantizeResult:
    """Convert the encoder's towers as ``requested`` (resolved for its device), undone if probes drift below ``min_cosine``.

    With ``cache_dir``, int8 towers are first tried through ONNX Runtime (rag.models.onnx_text, rag.models.onnx_image:
    exports cached there; the text tower's ``shipped`` with the collection when it matches); if that cannot run here
    or is not faithful, torch's dynamic int8 is tried.
    """
    requested = parse_quantize(requested)
    mode = resolve_mode(requested, encoder.device)
    towers = tuple(towers)
    if mode == "none":
        return QuantizeResult(requested, "none", reason="not requested" if requested == "none" else "no quantised path on this device")
    fp32: np.ndarray | None = None  # the fp32 probes, computed once and only when needed
    reasons, cosine = [], None
    for engine, convert in _conversions(encoder, towers, mode, cache_dir, shipped):
        if engine == "torch" and fp32 is None:
            fp32 = fp32_probe(encoder, towers)  # before the towers are swapped
        try:
            restore = convert()
        except (ValueError, RuntimeError) as exc:
            reasons.append(f"{engine}: {exc}")
            log.warning("%s %s quantisation skipped: %s", engine, mode, exc)
            continue
        reference = shipped_reference(encoder, towers) if engine == "onnxruntime" else None
        if reference is None:
            fp32 = fp32_probe(encoder, towers) if fp32 is None else fp32
            reference = fp32
        cosine = fidelity(reference, _probe(encoder, towers))
        if cosine >= min_cosine:
            log.info("%s %s %s encoding (min cosine %.4f to fp32 on %d probes)", engine, mode, "+".join(towers),
                     cosine, len(reference))
            return QuantizeResult(requested, mode, towers, cosine, engine=engine)
        restore()
        reasons.append(f"{engine}: {mode} min cosine {cosine:.4f} to fp32 on the probes is below {min_cosine}")
        log.warning("%s quantisation off: %s", engine, reasons[-1])
    reason = "; ".join(reasons)
    log.warning("quantisation off, encoding in fp32: %s", reason)
    return QuantizeResult(requested, "none", towers if cosine is not None else (), cosine, reason)


def quantize_captioner(captioner: Any, requested: str | None) -> str:
    """int8 GIT decoder (and its image encoder) on CPU; other captioners and devices are left as they are."""
    mode = resolve_mode(parse_quantize(requested), getattr(captioner, "device", "cpu"))
    if getattr(captioner, "kind", None) != "git" or mode != "int8":
        return "none"
    captioner.model = convert_module(captioner.model, "int8").eval()
    log.info("int8 GIT captioner")
    return "int8"


def quantize_for_build(encoder: Any, requested: str | None, cache_dir: Path | None = None) -> str:
    """``index_build.py --quantize``: int8 or none as asked; unset means fp16 on CUDA and exact fp32 elsewhere.
    With ``cache_dir``, int8 runs both towers in ONNX Runtime (exports cached there), else in torch."""
    if requested is None:
        requested = "auto" if encoder.device.startswith("cuda") else "none"
    return quantize_encoder(encoder, requested, towers=("image", "text"), cache_dir=cache_dir).mode

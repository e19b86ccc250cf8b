"""The safety check every created image passes before anyone sees it (a public Space must not show unsafe output).

Two checks, the first that applies:

* ``DiffusersSafetyCheck``: the model's own ``StableDiffusionSafetyChecker`` (CompVis's CLIP ViT-L/14 with 17
  concept embeddings and per-concept thresholds, shipped with SD-1.x models and their distillations such as
  LCM_Dreamshaper_v7). It runs beside the generator, on its device and in its precision.
* ``ClipConceptCheck``: for a model without one, a zero-shot CLIP classifier with the collection's own encoder:
  the image against unsafe concepts and ordinary ones; flagged when the unsafe concepts take more than
  ``threshold`` of the softmax. It is a fallback, not calibrated like the SD checker (docs/create.md says so).

A flagged image is never returned: the caller gets a message instead. Both checks time themselves.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

FLAGGED_MESSAGE = (
    "The safety check flagged the generated image, so it is not shown. Try another query, references or seed."
)
UNSAFE_CONCEPTS = (
    "sexually explicit nudity", "a pornographic image", "graphic violence with blood and gore",
    "a mutilated dead body", "self-harm", "a hateful extremist symbol",
)
SAFE_CONCEPTS = (
    "a photo", "a painting", "a drawing", "a pattern", "a landscape", "a portrait of a clothed person",
    "an animal", "an object", "a building", "food", "text", "an abstract texture",
)
CONCEPT_SCALE = 100.0  # CLIP's logit scale
CONCEPT_THRESHOLD = 0.5


@dataclass
class SafetyVerdict:
    """Whether the image was checked, by what, whether it was flagged, and what the check cost."""

    checked: bool
    flagged: bool
    method: str
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "seconds": round(self.seconds, 3)}


NOT_CHECKED = SafetyVerdict(checked=False, flagged=False, method="off (RAG_CREATE_SAFETY=off)")


class DiffusersSafetyCheck:
    """The model's StableDiffusionSafetyChecker and its CLIP feature extractor."""

    method = "Stable Diffusion safety checker"

    def __init__(self, checker: torch.nn.Module, feature_extractor: Any) -> None:
        self.checker = checker
        self.feature_extractor = feature_extractor

    def check(self, image: Image.Image) -> SafetyVerdict:
        """Run the checker on one image (its own device and dtype)."""
        started = time.perf_counter()
        parameter = next(self.checker.parameters())
        pixels = self.feature_extractor(images=[image], return_tensors="pt").pixel_values
        pixels = pixels.to(parameter.device, parameter.dtype)
        array = np.asarray(image, dtype=np.float32)[None] / 255.0
        with torch.inference_mode():
            _, flags = self.checker(images=array, clip_input=pixels)
        return SafetyVerdict(True, bool(flags[0]), self.method, time.perf_counter() - started)


class ClipConceptCheck:
    """Zero-shot: the share of the softmax over unsafe + ordinary concepts that the unsafe ones take."""

    method = "CLIP concept check (collection encoder)"

    def __init__(self, encoder: Any, threshold: float = CONCEPT_THRESHOLD) -> None:
        self.encoder = encoder
        self.threshold = threshold
        self.concepts = encoder.encode_texts([*UNSAFE_CONCEPTS, *SAFE_CONCEPTS])

    def unsafe_share(self, image: Image.Image) -> float:
        """Softmax mass on the unsafe concepts, 0..1."""
        logits = CONCEPT_SCALE * (self.concepts @ self.encoder.encode_images([image])[0])
        weights = np.exp(logits - logits.max())
        return float(weights[: len(UNSAFE_CONCEPTS)].sum() / weights.sum())

    def check(self, image: Image.Image) -> SafetyVerdict:
        """Flag when the unsafe share reaches the threshold."""
        started = time.perf_counter()
        flagged = self.unsafe_share(image) >= self.threshold
        return SafetyVerdict(True, flagged, self.method, time.perf_counter() - started)


def model_safety_check(pipe: Any) -> DiffusersSafetyCheck | None:
    """Take the safety checker out of a loaded diffusers pipeline (so it runs once, through us), or None."""
    checker = getattr(pipe, "safety_checker", None)
    extractor = getattr(pipe, "feature_extractor", None)
    if checker is None or extractor is None:
        return None
    pipe.safety_checker = None  # the pipeline would otherwise run it again and black the image out itself
    return DiffusersSafetyCheck(checker, extractor)

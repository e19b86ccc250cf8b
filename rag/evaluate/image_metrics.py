"""Metrics of generated images: CLIP score, CMMD, and FID where its Inception weights can be had.

* CLIP score: the cosine of a generated image's CLIP embedding with its prompt's query text (the collection's own
  encoder), averaged. The seed dashboard's 0.31 is this raw cosine (not torchmetrics' 100 x max(cos, 0)).
* CMMD (Jayasumana et al., "Rethinking FID", CVPR 2024): the squared maximum mean discrepancy between two sets of
  L2-normalised CLIP embeddings under a Gaussian kernel, sigma = 10, reported x 1000, as in the authors'
  reference code (google-research/cmmd distance.py: the V-statistic, diagonal terms included). It needs no
  downloaded network beyond the CLIP the collection already has, and is unbiased in the number of images in a
  way FID is not. The paper used CLIP ViT-L/14@336; a Space uses its collection's CLIP, so values compare
  within one collection and encoder, not with the paper's tables.
* FID: torchmetrics' FrechetInceptionDistance, which needs torch-fidelity and Inception weights downloaded from
  GitHub; offline, or without them, it is reported as unavailable with the reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

CMMD_SIGMA = 10.0
CMMD_SCALE = 1000.0


def cmmd(x: np.ndarray, y: np.ndarray, sigma: float = CMMD_SIGMA, scale: float = CMMD_SCALE) -> float:
    """CMMD between embedding sets ``x`` (n x d) and ``y`` (m x d), each row L2-normalised here first."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    y = y / np.linalg.norm(y, axis=1, keepdims=True)
    gamma = 1.0 / (2.0 * sigma**2)

    def mean_kernel(a: np.ndarray, b: np.ndarray) -> float:
        squared = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
        return float(np.exp(-gamma * np.maximum(squared, 0.0)).mean())

    return scale * (mean_kernel(x, x) + mean_kernel(y, y) - 2.0 * mean_kernel(x, y))


def clip_scores(image_vectors: np.ndarray, text_vectors: np.ndarray) -> np.ndarray:
    """Per pair: the cosine of image i with text i."""
    a = image_vectors / np.linalg.norm(image_vectors, axis=1, keepdims=True)
    b = text_vectors / np.linalg.norm(text_vectors, axis=1, keepdims=True)
    return (a * b).sum(1)


def fid_metric() -> tuple[Any | None, str | None]:
    """(a FrechetInceptionDistance ready to update, None), or (None, why FID is unavailable here)."""
    try:
        from torchmetrics.image.fid import FrechetInceptionDistance
    except ImportError:
        return None, "torchmetrics is not installed"
    try:
        return FrechetInceptionDistance(feature=2048), None
    except Exception as exc:  # noqa: BLE001 - missing torch-fidelity, weights not downloadable offline, ...
        return None, f"FrechetInceptionDistance could not be set up ({type(exc).__name__}: {' '.join(str(exc).split())[:160]})"


def _batch(images: Sequence[Image.Image]) -> Any:
    import torch

    arrays = [np.asarray(img.convert("RGB").resize((299, 299), Image.Resampling.BICUBIC)) for img in images]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def fid(real: Sequence[Image.Image], generated: Sequence[Image.Image]) -> dict[str, Any]:
    """{"available": True, "value", "real", "generated"} or {"available": False, "reason"}."""
    metric, reason = fid_metric()
    if metric is None:
        return {"available": False, "reason": reason}
    metric.update(_batch(real), real=True)
    metric.update(_batch(generated), real=False)
    return {"available": True, "value": float(metric.compute()), "real": len(real), "generated": len(generated),
            "note": "FID from fewer than ~2048 images per set is strongly biased upwards; compare like with like"}

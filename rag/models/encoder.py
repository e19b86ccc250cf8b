"""CLIP image/text encoding with sentence-transformers: L2-normalised float32 vectors.

Image encoding is split into ``preprocess_images`` (decode-side work, safe to run in worker threads)
and ``embed_features`` (the model's forward pass) so a builder can overlap the two.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Sequence

import numpy as np
import torch
from PIL import Image
from sentence_transformers import SentenceTransformer

from rag.models.devices import main_device
from rag.errors import EmbeddingModelError

MAX_QUERY_CHARS = 1_000


def pick_device(device: str | None = None) -> str:
    """The requested device, else CUDA when visible, else CPU; always CPU on ZeroGPU (see rag.models.devices)."""
    return main_device(device)


def _load(model_id: str, revision: str | None, device: str, token: str | None) -> SentenceTransformer:
    try:
        return SentenceTransformer(model_id, revision=revision, device=device, token=token)
    except (OSError, ValueError) as exc:
        raise EmbeddingModelError(f"Could not load the embedding model {model_id!r}: {exc}") from exc


def _normalise(vectors: torch.Tensor | np.ndarray) -> np.ndarray:
    array = vectors.detach().float().cpu().numpy() if isinstance(vectors, torch.Tensor) else np.asarray(vectors)
    array = np.ascontiguousarray(array, dtype=np.float32)
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    return array / np.maximum(norms, 1e-12)


class Encoder:
    """Encodes images with the collection's CLIP model and text with it or an aligned text model."""

    def __init__(
        self,
        model_id: str,
        revision: str | None = None,
        text_model_id: str | None = None,
        device: str | None = None,
        token: str | None = None,
    ) -> None:
        self.model_id = model_id
        self.revision = revision
        self.device = pick_device(device)
        self.model = _load(model_id, revision, self.device, token)
        self.model.eval()
        self.text_model_id = text_model_id or model_id
        self.text_model = _load(text_model_id, None, self.device, token) if text_model_id else self.model
        self.text_model.eval()
        self._lock = threading.Lock()
        # set by rag.models.quantize when an exported int8 text tower (rag.models.onnx_text) passed its fidelity check
        self.text_runner: Callable[[Any], np.ndarray] | None = None
        self.image_runner: Callable[[Any], np.ndarray] | None = None  # idem, the image tower (int8 builds)
        probe = self.encode_texts(["a photo"])
        self.dim = int(probe.shape[1])
        if text_model_id:
            image_dim = int(self.embed_features(self.preprocess_images([Image.new("RGB", (32, 32))])).shape[1])
            if image_dim != self.dim:
                raise EmbeddingModelError(
                    f"The text model {text_model_id!r} gives {self.dim}-d vectors but the image model "
                    f"{model_id!r} gives {image_dim}-d; they are not aligned."
                )

    def encode_texts(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Normalised text vectors, shape (len(texts), dim).

        A multimodal model would treat a query that looks like an image URL or path as an image to fetch,
        so texts are passed as ``{"text": ...}`` to such a model.
        """
        inputs: list = list(texts)
        if self.text_model.supports("image"):
            inputs = [{"text": text} for text in inputs]
        runner = self.text_runner
        if runner is not None and inputs:
            with self._lock:
                batches = [self.text_model.preprocess(inputs[i : i + batch_size]) for i in range(0, len(inputs), batch_size)]
                return _normalise(np.concatenate([runner(features) for features in batches]))
        with self._lock, torch.inference_mode():
            vectors = self.text_model.encode(
                inputs, batch_size=batch_size, convert_to_tensor=True, show_progress_bar=False
            )
        return _normalise(vectors)

    def preprocess_images(self, images: Sequence[Image.Image]) -> dict[str, Any]:
        """Resize/normalise RGB images into model inputs; pure CPU work that can run in a worker thread."""
        return self.model.preprocess(list(images))

    def embed_features(self, features: dict[str, Any]) -> np.ndarray:
        """The forward pass on preprocessed inputs: normalised vectors."""
        runner = self.image_runner
        if runner is not None:
            with self._lock:
                return _normalise(runner(features))
        moved = {k: v.to(self.device) if isinstance(v, torch.Tensor) else v for k, v in features.items()}
        with self._lock, torch.inference_mode():
            output = self.model.forward(moved)
        return _normalise(output["sentence_embedding"])

    def encode_images(self, images: Sequence[Image.Image], batch_size: int = 32) -> np.ndarray:
        """Normalised image vectors, shape (len(images), dim)."""
        parts = [
            self.embed_features(self.preprocess_images(images[start : start + batch_size]))
            for start in range(0, len(images), batch_size)
        ]
        return np.concatenate(parts) if parts else np.zeros((0, self.dim), dtype=np.float32)

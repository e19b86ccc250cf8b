"""Embedding adapters: the small networks a tuned collection carries on top of its frozen CLIP towers.

``rag.finetune`` trains them on a collection's own caption/image pairs; a collection whose manifest names one
(``model.adapter``) is searched through it. An adapter is residual and zero-initialised, so before training it is
the identity: ``normalise(x + MLP(x))`` on the tower's normalised output vector ``x`` (``hidden == 0``: a residual
linear map ``normalise(x + W x + b)``). It sits on the output embedding, after the base tower, so the start-up
path is unchanged underneath it: int8 quantisation and its fidelity check apply to the base tower, and a separate
(multilingual) text model feeds it like the CLIP text tower does. Stored as safetensors (no pickle: a Hub
collection is untrusted input), one ``<side>.*`` group of tensors per adapted side.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from rag.errors import CollectionError

ADAPTER_FORMAT = "rag-adapter-1"
SIDES = ("text", "image")
MAX_HIDDEN = 8192  # a bigger adapter in a downloaded file is refused rather than allocated
APPLY_BATCH = 8192


class ResidualAdapter(nn.Module):
    """``normalise(x + down(gelu(up(x))))``, or ``normalise(x + linear(x))`` when ``hidden == 0``; starts as identity."""

    def __init__(self, dim: int, hidden: int = 256) -> None:
        super().__init__()
        self.dim, self.hidden = int(dim), int(hidden)
        if self.hidden > 0:
            self.up = nn.Linear(self.dim, self.hidden)
            self.down = nn.Linear(self.hidden, self.dim)
            last = self.down
        else:
            self.linear = nn.Linear(self.dim, self.dim)
            last = self.linear
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The adapted, L2-normalised vectors of a batch of normalised vectors."""
        delta = self.down(F.gelu(self.up(x))) if self.hidden > 0 else self.linear(x)
        return F.normalize(x + delta, dim=-1)


def apply_adapter(adapter: ResidualAdapter, vectors: np.ndarray) -> np.ndarray:
    """Run float32 vectors (n, dim) through an adapter, in batches, without tracking gradients."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if len(vectors) == 0:
        return vectors
    with torch.inference_mode():
        parts = [adapter(torch.from_numpy(vectors[s : s + APPLY_BATCH])).numpy() for s in range(0, len(vectors), APPLY_BATCH)]
    return np.ascontiguousarray(np.concatenate(parts), dtype=np.float32)


def save_adapters(path: Path, adapters: dict[str, ResidualAdapter], metadata: dict[str, str] | None = None) -> None:
    """Write the adapters (``{"text": ..., "image": ...}``) as one safetensors file."""
    from safetensors.torch import save_file

    tensors = {f"{side}.{name}": value.detach().contiguous().clone()
               for side, adapter in adapters.items() for name, value in adapter.state_dict().items()}
    save_file(tensors, str(path), metadata={"format": ADAPTER_FORMAT, **(metadata or {})})
    os.chmod(path, 0o644)  # safetensors writes 0600; the collection's other files are readable by all


def load_adapters(path: Path, dim: int) -> dict[str, ResidualAdapter]:
    """Read an adapter file written by :func:`save_adapters`, checked against the embedding dimension."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(path))
    except (OSError, SafetensorError, ValueError) as exc:
        raise CollectionError(f"The collection's adapter file {Path(path).name} cannot be read: {exc}") from exc
    adapters: dict[str, ResidualAdapter] = {}
    for side in SIDES:
        state = {name.split(".", 1)[1]: value for name, value in tensors.items() if name.startswith(f"{side}.")}
        if state:
            adapters[side] = _rebuild(side, state, dim)
    if not adapters or len(tensors) != sum(len(a.state_dict()) for a in adapters.values()):
        raise CollectionError(f"The adapter file {Path(path).name} holds no adapter of this format ({ADAPTER_FORMAT}).")
    return adapters


def _rebuild(side: str, state: dict[str, torch.Tensor], dim: int) -> ResidualAdapter:
    hidden = int(state["up.weight"].shape[0]) if "up.weight" in state else 0
    if not 0 <= hidden <= MAX_HIDDEN:
        raise CollectionError(f"The {side} adapter has {hidden} hidden units, more than the {MAX_HIDDEN} allowed.")
    adapter = ResidualAdapter(dim, hidden)
    try:
        adapter.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    except (RuntimeError, KeyError) as exc:
        raise CollectionError(
            f"The {side} adapter does not fit the collection's {dim}-d embeddings: {str(exc).splitlines()[0]}"
        ) from exc
    return adapter.eval()


class AdaptedEncoder:
    """The shared base Encoder with a collection's adapters applied to its output vectors.

    The base encoder (its models, quantised towers and lock) is shared with every other pipeline of the process;
    only this wrapper, one per tuned collection, knows the adapters. Anything not overridden here is the base's.
    """

    def __init__(self, base: Any, adapters: dict[str, ResidualAdapter], source: str = "") -> None:
        self.base = base
        self.adapters = adapters
        self.source = source
        self._lock = threading.Lock()  # torch modules are not documented as safe under concurrent forward calls

    def __getattr__(self, name: str) -> Any:
        if name == "base":  # not set yet (a copy being built): never recurse
            raise AttributeError(name)
        return getattr(self.base, name)

    def adapt(self, side: str, vectors: np.ndarray) -> np.ndarray:
        """``vectors`` through the adapter of ``side`` (unchanged when that side has none)."""
        adapter = self.adapters.get(side)
        if adapter is None:
            return vectors
        with self._lock:
            return apply_adapter(adapter, vectors)

    def encode_texts(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """The base text vectors, adapted."""
        return self.adapt("text", self.base.encode_texts(texts, batch_size=batch_size))

    def embed_features(self, features: dict[str, Any]) -> np.ndarray:
        """The base image vectors of preprocessed inputs, adapted."""
        return self.adapt("image", self.base.embed_features(features))

    def encode_images(self, images: Sequence[Any], batch_size: int = 32) -> np.ndarray:
        """The base image vectors, adapted."""
        return self.adapt("image", self.base.encode_images(images, batch_size=batch_size))


def base_encoder(encoder: Any) -> Any:
    """The encoder underneath any adapter: what builds and training must use."""
    return encoder.base if isinstance(encoder, AdaptedEncoder) else encoder


def adapt_encoder(encoder: Any, adapter_file: Path | None, dim: int) -> Any:
    """The encoder a collection is searched with: the base one, wrapped in the collection's adapter file (if any).

    Idempotent: an encoder already wrapped in this adapter file is returned as it is; ``None`` unwraps.
    """
    base = base_encoder(encoder)
    if adapter_file is None:
        return base
    if isinstance(encoder, AdaptedEncoder) and encoder.source == str(adapter_file):
        return encoder
    return AdaptedEncoder(base, load_adapters(Path(adapter_file), dim), str(adapter_file))

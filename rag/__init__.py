"""Multimodal RAG over an image collection: CLIP embeddings in FAISS plus a captioner — as a library.

A session in a notebook (docs/library.md shows it end to end)::

    import rag

    pipe = rag.open("collections/photos", captioner="git")  # a collection folder, or a Hub dataset repo "user/name"
    hits = pipe.search_text("a red bicycle", k=5)           # list[rag.Hit]: id, score, captions, label, thumbnail
    hits = pipe.search_image("photo.jpg", k=5)              # a path, bytes, a PIL image or a numpy array
    text = pipe.describe("photo.jpg", k=5).text             # the captioner, the neighbours' captions as context
    pipe.score("photo.jpg", ["a red bicycle", "a dog"])     # CLIP cosine of the image with each text
    rag.score("photo.jpg", ["a dog", "a cat"])              # the same with a bare CLIP model, no collection

Bad input raises ``rag.InvalidInput`` and a collection or model that cannot be loaded a ``rag.ServiceError``
subclass, each with a message fit to show a user. The names below load on first use (PEP 562), so
``import rag`` and ``import rag.errors`` stay light: no torch, FAISS or transformers until they are needed.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

if TYPE_CHECKING:
    from rag.images.decode import ImageInput
    from rag.models.encoder import Encoder
    from rag.pipeline import Pipeline

__all__ = [
    "open", "score", "Pipeline", "Hit", "Description", "Settings",
    "RagError", "InvalidInput", "ServiceError", "CollectionError", "EmbeddingModelError", "CaptionerError",
    "MAX_SCORE_TEXTS",
]

# name -> the module that defines it, imported when the name is first used
_LAZY = {
    "Pipeline": "rag.pipeline", "Hit": "rag.pipeline", "Description": "rag.pipeline", "MAX_SCORE_TEXTS": "rag.pipeline",
    "Settings": "rag.config",
    "RagError": "rag.errors", "InvalidInput": "rag.errors", "ServiceError": "rag.errors",
    "CollectionError": "rag.errors", "EmbeddingModelError": "rag.errors", "CaptionerError": "rag.errors",
}


def __getattr__(name: str) -> Any:
    """PEP 562: the public names (and the subpackages, e.g. ``rag.search``) are imported on first access."""
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # the next access is a plain attribute
        return value
    if not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


def open(  # noqa: A001 - rag.open(...), like tarfile.open / PIL.Image.open
    collection: str | os.PathLike[str],
    captioner: str | None = None,
    *,
    revision: str | None = None,
    text_model: str | None = None,
    captioner_model: str | None = None,
    quantize: str = "none",
    device: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    token: str | None = None,
) -> Pipeline:
    """Open a collection into a ready Pipeline: the same loading, checks and models as the Space (rag.startup).

    Args:
        collection: a collection folder built by ``rag-build`` / ``index_build.py``, or a Hub dataset repo id
            ``user/name`` (downloaded into the Hugging Face cache).
        captioner: ``None`` (search and score only; the fastest to open), ``"git"``, ``"qwen2-vl"`` or ``"auto"``
            (Qwen2-VL when a GPU is there, else GIT); needed by ``describe``.
        revision: branch, tag or commit of a Hub collection (pin it for reproducible results).
        text_model: a text encoder aligned with the collection's image encoder (e.g. the multilingual CLIP).
        captioner_model: model id of the captioner (default: microsoft/git-base-coco or Qwen/Qwen2-VL-2B-Instruct).
        quantize: ``"none"`` (exact fp32 scores, the default here), ``"int8"`` or ``"auto"`` (the Space's default).
        device: ``"cpu"``, ``"cuda"``, ... (default: CUDA when visible).
        cache_dir: thumbnails and ONNX exports (default: ``RAG_CACHE_DIR`` or ``~/.cache/rag-space``).
        token: Hugging Face token for private repos (default: ``HF_TOKEN``).

    Raises:
        InvalidInput for a bad argument; CollectionError, EmbeddingModelError or CaptionerError (all
        ServiceError) when the collection or a model cannot be loaded.
    """
    from rag.config import CAPTIONER_CHOICES, QUANTIZE_CHOICES, Settings, default_cache_dir, hf_token
    from rag.errors import InvalidInput
    from rag.startup import open_pipeline

    if not isinstance(collection, (str, os.PathLike)) or not os.fspath(collection).strip():
        raise InvalidInput("collection must be a collection folder or a Hub dataset repo id (user/name).")
    if captioner is not None and captioner not in CAPTIONER_CHOICES:
        raise InvalidInput(f"captioner must be None or one of {', '.join(CAPTIONER_CHOICES)}; got {captioner!r}.")
    if quantize not in QUANTIZE_CHOICES:
        raise InvalidInput(f"quantize must be one of {', '.join(QUANTIZE_CHOICES)}; got {quantize!r}.")
    settings = Settings(
        collection=os.fspath(collection), revision=revision, text_model=text_model, captioner=captioner or "auto",
        captioner_model=captioner_model, hf_token=token or hf_token(), device=device, quantize=quantize,
        cache_dir=Path(cache_dir).expanduser() if cache_dir else default_cache_dir(),
    )
    return open_pipeline(settings, with_captioner=captioner is not None)


def score(
    image: ImageInput,
    texts: Sequence[str],
    model: str | Pipeline | None = None,
    *,
    text_model: str | None = None,
    device: str | None = None,
    token: str | None = None,
) -> list[float]:
    """How well each text describes the image: the CLIP cosine similarity of the image with each text.

    The seed's "semantic analysis" without a collection: ``model`` is a sentence-transformers CLIP id or folder
    (default ``sentence-transformers/clip-ViT-B-32``, loaded once and kept), or an opened Pipeline to score in
    its collection's embedding space (the same as ``pipeline.score``). Scores are in [-1, 1], one per text in
    the order given. Compare texts with each other rather than read one score alone: CLIP's cosines of matching
    pairs are small numbers (CLIPScore, Hessel et al. 2021, rescales them by 2.5 for that reason).

    Args:
        image: a file path, bytes, a PIL image or a numpy array.
        texts: 1 to MAX_SCORE_TEXTS (100) non-empty strings, each up to 1,000 characters; a single string is one text.
        model: CLIP model id/folder, or a Pipeline.
        text_model: an aligned text encoder (e.g. ``sentence-transformers/clip-ViT-B-32-multilingual-v1``).
        device: ``"cpu"``, ``"cuda"``, ... (default: CUDA when visible).
        token: Hugging Face token (default: ``HF_TOKEN``).

    Raises:
        InvalidInput for an empty or too long list of texts, an empty text or an image that cannot be read;
        EmbeddingModelError when the model cannot be loaded.
    """
    from rag.errors import InvalidInput
    from rag.pipeline import Pipeline, check_texts, image_text_scores

    if isinstance(model, Pipeline):
        return model.score(image, texts)
    if model is not None and (not isinstance(model, (str, os.PathLike)) or not os.fspath(model).strip()):
        raise InvalidInput("model must be a CLIP model id or folder, or a Pipeline from rag.open.")
    check_texts(texts)  # before loading a model
    encoder = _encoder(os.fspath(model) if model is not None else None, text_model, device, token)
    return image_text_scores(encoder, image, texts)


@functools.lru_cache(maxsize=2)
def _encoder(model: str | None, text_model: str | None, device: str | None, token: str | None) -> Encoder:
    """The CLIP encoder rag.score uses, loaded once per (model, text model, device)."""
    from rag.config import DEFAULT_EMBEDDING_MODEL, hf_token
    from rag.models.encoder import Encoder

    return Encoder(model or DEFAULT_EMBEDDING_MODEL, text_model_id=text_model, device=device, token=token or hf_token())

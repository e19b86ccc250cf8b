"""Settings -> a ready Pipeline, or a typed StartupError naming the stage that failed and the variable to set.

Used by the app, the evaluation and the benchmarks, so they load collections, encoders and captioners
the same way. Each stage raises its own exception type (rag.errors); the stage of a failure comes from
that type, never from message text. Nothing here imports gradio.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

from rag.collection.thumbnails import thumbnail_cache
from rag.models.captioner import Captioner, load_captioner
from rag.collection.reader import Collection
from rag.config import Settings
from rag.models.encoder import Encoder
from rag.errors import (
    CaptionerError,
    CollectionError,
    ConfigError,
    EmbeddingModelError,
    RagError,
    StartupError,
)
from rag.collection.hub import looks_like_repo_id, resolve_collection, snapshot_commit
from rag.pipeline import Pipeline
from rag.models.onnx_text import ShippedExport
from rag.models.quantize import quantize_captioner, quantize_encoder
from rag.search.batching import BatchingSearcher
from rag.search.deferred import start_searcher

log = logging.getLogger(__name__)

FIX_COLLECTION = (
    "Set the **RAG_COLLECTION** variable to a collection built with `index_build.py` "
    "(a Hub dataset repo `user/name` or a local folder); **RAG_REVISION** pins a branch/tag/commit and "
    "**HF_TOKEN** gives access to a private repo."
)
FIX_EMBEDDING = (
    "The embedding model comes from the collection's manifest; check that it can be downloaded "
    "(**HF_TOKEN** for gated/private models) and that **RAG_TEXT_MODEL**, if set, is a text model aligned "
    "with it (e.g. `sentence-transformers/clip-ViT-B-32-multilingual-v1` for `clip-ViT-B-32`)."
)
FIX_CAPTIONER = (
    "Set **RAG_CAPTIONER** (`auto`, `git` or `qwen2-vl`) and **RAG_CAPTIONER_MODEL** to a captioner this "
    "hardware can run (e.g. `git` / `microsoft/git-base-coco` on CPU). Search still works."
)
FIX_CONFIG = "Check the Space's variables (Settings → Variables and secrets); the README lists each one."

# Exception type -> (stage name, what to set). Order matters: the first matching type wins.
STAGES: tuple[tuple[type[RagError], str, str], ...] = (
    (ConfigError, "configuration", FIX_CONFIG),
    (EmbeddingModelError, "embedding model", FIX_EMBEDDING),
    (CaptionerError, "captioner", FIX_CAPTIONER),
    (CollectionError, "collection", FIX_COLLECTION),
)


def startup_error(exc: BaseException, building_default: bool = False) -> StartupError:
    """Turn any start-up failure into a StartupError whose stage comes from the exception's type."""
    stage, fix = "collection", FIX_COLLECTION
    for kind, name, hint in STAGES:
        if isinstance(exc, kind):
            stage, fix = name, hint
            break
    detail = str(exc) if isinstance(exc, RagError) else f"{type(exc).__name__}: {exc}"
    what = f"load the {stage}"
    if building_default and stage == "collection":
        from rag.ingest.default_collection import DEFAULT_DATASET

        stage, what = "default collection", (
            f"build the default collection from {DEFAULT_DATASET} (RAG_COLLECTION is not set)"
        )
    return StartupError(f"Could not {what}: {detail}", stage=stage, fix=fix)


def public_name(spec: str) -> str:
    """A collection as shown to users: the Hub repo id, or only the folder's name for a local path."""
    return spec if looks_like_repo_id(spec) else Path(spec).expanduser().name


def load_encoder(collection: Collection, settings: Settings) -> Encoder:
    """The encoder the collection's manifest names (plus RAG_TEXT_MODEL, else the text model a tuned collection's
    adapter was trained on), checked against the index dimension."""
    model = collection.manifest.model
    encoder = Encoder(
        model["id"], revision=model.get("revision"), text_model_id=settings.text_model or model.get("text_model"),
        device=settings.device, token=settings.hf_token,
    )
    if encoder.dim != collection.manifest.dim:
        raise EmbeddingModelError(
            f"The embedding model gives {encoder.dim}-d vectors but the collection index is {collection.manifest.dim}-d."
        )
    return encoder


def open_pipeline(
    settings: Settings,
    collection_dir: Path | None = None,
    with_captioner: bool = True,
    status: Callable[[str], None] = log.info,
    name: str | None = None,
) -> Pipeline:
    """Resolve and validate the collection, load its encoder and (optionally) the captioner; typed errors.

    Each stage's seconds are logged (``start-up stages:``, read by benchmarks/restart.py). A restart does no work
    twice: the collection's shipped int8 text export is used when it matches (rag.models.onnx_text), and the scan
    copy is built in the background while the encoder loads (rag.search.deferred).
    """
    started = time.perf_counter()
    stages = StageClock()
    if collection_dir is None:
        if not settings.collection:
            raise CollectionError("No collection configured: set the RAG_COLLECTION variable (a dataset repo id or folder).")
        status(f"loading collection {settings.collection}")
        collection_dir = resolve_collection(settings.collection, settings.revision, settings.hf_token)
    collection = Collection.open(collection_dir, verified_stamp_dir=settings.cache_dir / "verified")
    stages.lap("collection")
    searcher = BatchingSearcher(start_searcher(collection.index))  # a big scan copy builds in the background
    stages.lap("scan copy started")
    thumbnail_cache(settings.cache_dir, int(settings.cache_max_gb * 1e9)).serve(collection.fingerprint)
    commit = snapshot_commit(collection_dir)
    if commit:
        log.info("collection %s loaded at commit %s (RAG_REVISION=%s)", settings.collection, commit,
                 settings.revision or "main")
    status(f"loading embedding model {collection.manifest.model_id}")
    encoder = load_encoder(collection, settings)
    stages.lap("encoder")
    shipped = collection.text_export
    quantized = quantize_encoder(  # RAG_QUANTIZE, fidelity-checked; the collection's own export when it matches
        encoder, settings.quantize, towers=("text",), cache_dir=settings.cache_dir,
        shipped=ShippedExport(*shipped) if shipped else None,
    )
    stages.lap("text tower")
    captioner = load_captioner_for(settings, encoder, status) if with_captioner else None
    stages.lap("captioner")
    pipeline = Pipeline(
        collection=collection,
        encoder=encoder,
        cache_dir=settings.cache_dir,
        captioner=captioner,
        name=name or public_name(settings.collection or str(collection_dir)),
        revision=settings.revision,
        commit=commit,
        text_model=settings.text_model,
        load_seconds=time.perf_counter() - started,
        quantize=quantized.mode,
        quantize_engine=quantized.engine,
        searcher=searcher,
    )
    stages.lap("pipeline")
    log.info("start-up stages: %s", stages.summary())
    return pipeline


class StageClock:
    """Seconds spent in each named stage of the start-up, for the log and benchmarks/restart.py."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, name: str) -> None:
        """Close the current stage as ``name``."""
        now = time.perf_counter()
        self.seconds[name] = round(now - self._last, 3)
        self._last = now

    def summary(self) -> str:
        """``{"collection": 0.41, ...}`` as JSON (one line)."""
        return json.dumps(self.seconds)


def load_captioner_for(settings: Settings, encoder: Encoder, status: Callable[[str], None] = log.info) -> Captioner:
    """The captioner the settings ask for (``auto`` resolved by hardware), sharing the pipeline's encoder."""
    status(f"loading captioner ({settings.captioner})")
    captioner = load_captioner(
        settings.captioner, settings.captioner_model, encoder, device=settings.device, token=settings.hf_token
    )
    quantize_captioner(captioner, settings.quantize)  # int8 GIT on CPU under RAG_QUANTIZE=auto|int8
    return captioner


def load_pipeline(settings: Settings | None = None) -> tuple[Pipeline | StartupError, str | None]:
    """Everything the Space serves, loaded once: (pipeline, None), (pipeline, captioner problem) or (error, None).

    Never raises. With RAG_COLLECTION unset, the default collection is built once into RAG_CACHE_DIR and
    reused. A captioner that fails to load leaves search working; its message says what to set.
    """
    from rag.ingest.default_collection import default_collection_label, ensure_default_collection

    building_default = False
    try:
        settings = settings or Settings.from_env()
        collection_dir, name = None, None
        if not settings.collection:
            building_default = True
            collection_dir = ensure_default_collection(settings, status=log.info)
            name = default_collection_label()
        building_default = False
        pipeline = open_pipeline(settings, collection_dir, with_captioner=False, name=name)
    except Exception as exc:  # anything here is shown on the page instead of crashing
        error = startup_error(exc, building_default)
        log.error("start-up failed: %s", error, exc_info=not isinstance(exc, RagError))
        return error, None
    try:
        stages = StageClock()
        pipeline = pipeline.with_captioner(load_captioner_for(settings, pipeline.encoder))
        stages.lap("captioner")
        log.info("start-up stages: %s", stages.summary())
    except Exception as exc:
        error = startup_error(exc if isinstance(exc, RagError) else CaptionerError(f"{type(exc).__name__}: {exc}"))
        log.error("%s", error, exc_info=not isinstance(exc, RagError))
        return pipeline, str(error)
    log.info("ready: %s", pipeline.info())
    return pipeline, None
